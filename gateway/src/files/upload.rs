//! The upload pipeline: stream in, cut and hash chunks off the reactor, store
//! them with at most `files.window` chunk calls in flight, then make them
//! durable and commit the manifest. Any failure before the commit releases
//! the upload's claims, so nothing of it stays visible or stored.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use omnishard_common::digest::sha256;
use omnishard_common::namespace;
use omnishard_proto::v1::{
    ChunkData, FileChunk, FileInfo, FileManifest, ShardChunkPutRequest, ShardChunkPutResponse,
    ShardManifestCommitRequest, UploadAction, UploadHeader, UploadTicket,
};
use ring::digest::{Context, SHA256};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::chunker::Chunker;
use super::{file_info, ChunkBatch, Pace, MAX_METADATA_BYTES, MAX_METADATA_ENTRIES, UPLOAD_ID_LEN};
use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::kv::now_ms;

/// Longest a manifest commit may take to land; past it the shard refuses it,
/// so an upload whose commit answer was lost knows its fate by then.
const COMMIT_WINDOW: Duration = Duration::from_secs(10);

/// What an upload reports.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub file: FileInfo,
    pub chunks_stored: u64,
    pub chunks_deduplicated: u64,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    omnishard_common::Error::invalid(field, reason).into()
}

/// Checks an upload header against the limits; returns the namespace.
pub fn check_header(cluster: &Cluster, header: &UploadHeader) -> Result<String> {
    let ns = namespace::resolve(&header.namespace)?.to_string();
    cluster.limits.check_key(&header.key)?;
    let max = cluster.files.max_file_size.as_u64();
    if let Some(size) = header.size.filter(|s| *s > max) {
        return Err(invalid("size", format!("is {size} bytes; the limit is {max} (files.max_file_size)")));
    }
    if !header.sha256.is_empty() && header.sha256.len() != 32 {
        return Err(invalid("sha256", format!("is {} bytes; a SHA-256 is 32", header.sha256.len())));
    }
    if header.content_type.len() > 256 {
        return Err(invalid("content_type", format!("is {} bytes; the limit is 256", header.content_type.len())));
    }
    let meta_bytes: usize = header.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    if header.metadata.len() > MAX_METADATA_ENTRIES || meta_bytes > MAX_METADATA_BYTES {
        return Err(invalid(
            "metadata",
            format!(
                "has {} entries of {meta_bytes} bytes; the limits are {MAX_METADATA_ENTRIES} entries and {MAX_METADATA_BYTES} bytes",
                header.metadata.len()
            ),
        ));
    }
    Ok(ns)
}

/// One upload in progress.
struct Upload<'a> {
    cluster: &'a Arc<Cluster>,
    ns: String,
    header: UploadHeader,
    id: Vec<u8>,
    deadline_ms: u64,
    compress: bool,
    bulk: bool,
    /// Shards holding claims of this upload.
    touched: BTreeSet<usize>,
    chunks: Vec<FileChunk>,
    size: u64,
    stored: u64,
    deduplicated: u64,
    in_flight: FuturesUnordered<futures::future::BoxFuture<'a, Result<ShardChunkPutResponse>>>,
    /// Committed or released: nothing left for [`Drop`] to clean up.
    settled: bool,
    /// Traces the chunk calls in batches.
    batch: ChunkBatch,
}

impl Drop for Upload<'_> {
    /// A client that goes away cancels the upload's future at any await;
    /// the release then happens here, in the background. Chunk calls that
    /// were cancelled may still land on their shards after a first release,
    /// so it runs twice; anything later still is the sweeper's.
    fn drop(&mut self) {
        if self.settled || self.touched.is_empty() {
            return;
        }
        let (cluster, touched, id) = (self.cluster.clone(), std::mem::take(&mut self.touched), self.id.clone());
        tokio::spawn(async move {
            for pause in [Duration::from_millis(200), Duration::from_secs(3)] {
                tokio::time::sleep(pause).await;
                cluster.release_upload(touched.iter().copied(), &id).await;
            }
        });
    }
}

impl Cluster {
    /// Stores a file from `data`. The file becomes visible only when the
    /// manifest commits; a failure anywhere before releases what was stored.
    /// `data` must keep pace (`files.idle_timeout`, `files.min_rate`) or the
    /// upload ends with DEADLINE_EXCEEDED. The transfer slot is taken here,
    /// so the caller must not wait for the header while holding one.
    pub async fn upload(
        self: &Arc<Self>,
        header: UploadHeader,
        data: impl Stream<Item = Result<Bytes>> + Unpin + Send,
    ) -> Result<Uploaded> {
        let ns = check_header(self, &header)?;
        let _permit = self.transfer_permit()?;
        let id: [u8; UPLOAD_ID_LEN] = rand::random();
        let bulk = header.size.unwrap_or(0) > self.files.bulk_threshold.as_u64();
        let mut upload = Upload {
            cluster: self,
            compress: header.compress.unwrap_or(self.files.compress),
            ns,
            header,
            id: id.to_vec(),
            deadline_ms: now_ms() + self.files.upload_lease.as_millis() as u64,
            bulk,
            touched: BTreeSet::new(),
            chunks: Vec::new(),
            size: 0,
            stored: 0,
            deduplicated: 0,
            in_flight: FuturesUnordered::new(),
            settled: false,
            batch: ChunkBatch::new("files.upload_batch"),
        };
        match upload.run(data).await {
            Ok(sha256) => upload.commit(sha256).await,
            Err(e) => {
                upload.abort().await;
                Err(e)
            }
        }
    }
}

impl<'a> Upload<'a> {
    /// Streams every chunk to its shard; returns the whole file's SHA-256.
    async fn run(&mut self, mut data: impl Stream<Item = Result<Bytes>> + Unpin + Send) -> Result<Vec<u8>> {
        let max = self.cluster.files.max_file_size.as_u64();
        let mut chunker = Chunker::new(&self.cluster.files);
        let hasher = WholeFileHash::start();
        let mut pace = Pace::new(&self.cluster.files);
        while let Some(message) = pace.wait("data: the client sent", data.next()).await? {
            let message = message?;
            pace.moved(message.len());
            self.size += message.len() as u64;
            if self.size > max {
                return Err(invalid("data", format!("exceeds {max} bytes (files.max_file_size)")));
            }
            if let Some(declared) = self.header.size.filter(|d| self.size > *d) {
                return Err(invalid("data", format!("exceeds the declared size of {declared} bytes")));
            }
            self.bulk |= self.size > self.cluster.files.bulk_threshold.as_u64();
            let ready;
            hasher.update(message.clone()).await?;
            (chunker, ready) = cut_and_hash(chunker, message, false).await?;
            for chunk in ready {
                self.send(chunk).await?;
            }
        }
        let (_, ready) = cut_and_hash(chunker, Bytes::new(), true).await?;
        for chunk in ready {
            self.send(chunk).await?;
        }
        while let Some(done) = self.in_flight.next().await {
            self.count(done?);
        }
        let sha256 = hasher.finish().await?;
        if let Some(declared) = self.header.size.filter(|d| *d != self.size) {
            return Err(invalid("size", format!("declared {declared} bytes but the stream carried {}", self.size)));
        }
        if !self.header.sha256.is_empty() && self.header.sha256 != sha256 {
            return Err(invalid(
                "sha256",
                format!(
                    "declared {} but the data hashes to {}",
                    hex::encode(&self.header.sha256),
                    hex::encode(&sha256)
                ),
            ));
        }
        Ok(sha256)
    }

    /// Sends one chunk, waiting first while `files.window` calls are in flight.
    async fn send(&mut self, Cut { sha256: hash, crc32, data }: Cut) -> Result<()> {
        while self.in_flight.len() >= self.cluster.files.window {
            if let Some(done) = self.in_flight.next().await {
                self.count(done?);
            }
        }
        self.keep_lease().await?;
        let shard = self.cluster.chunk_shard(&self.ns, &hash);
        self.touched.insert(shard);
        self.chunks.push(FileChunk { sha256: hash.to_vec(), size: data.len() as u64 });
        let req = ShardChunkPutRequest {
            epoch: self.cluster.epoch(),
            namespace: self.ns.clone(),
            upload: Some(self.ticket()),
            compress: self.compress,
            bulk: self.bulk,
            chunks: vec![ChunkData { sha256: hash.to_vec(), data, crc32 }],
        };
        let handle = &self.cluster.shards[shard];
        let span = self.batch.span();
        self.batch.add(req.chunks.iter().map(|c| c.data.len()).sum());
        let call = handle.call(move |c| {
            let req = req.clone();
            async move { c.chunk_put(req).await }
        });
        self.in_flight.push(Box::pin(call.instrument(span)));
        Ok(())
    }

    fn count(&mut self, done: ShardChunkPutResponse) {
        self.stored += done.stored;
        self.deduplicated += done.deduplicated;
    }

    fn ticket(&self) -> UploadTicket {
        UploadTicket { id: self.id.clone(), key: self.header.key.clone(), deadline_ms: self.deadline_ms }
    }

    /// Pushes the lease deadline out once half of it has passed.
    async fn keep_lease(&mut self) -> Result<()> {
        let lease = self.cluster.files.upload_lease.as_millis() as u64;
        let now = now_ms();
        if now + lease / 2 < self.deadline_ms {
            return Ok(());
        }
        let deadline = now + lease;
        self.cluster.control_upload(self.touched.iter().copied(), &self.id, UploadAction::Renew, deadline).await?;
        self.deadline_ms = deadline;
        Ok(())
    }

    /// Makes the chunks durable, commits the manifest, seals the claims.
    async fn commit(mut self, sha256: Vec<u8>) -> Result<Uploaded> {
        let prepared = async {
            self.cluster.control_upload(self.touched.iter().copied(), &self.id, UploadAction::Durable, 0).await?;
            self.keep_lease().await
        };
        if let Err(e) = prepared.await {
            self.abort().await;
            return Err(e);
        }
        let manifest = FileManifest {
            upload_id: self.id.clone(),
            size: self.size,
            sha256,
            content_type: std::mem::take(&mut self.header.content_type),
            metadata: std::mem::take(&mut self.header.metadata),
            created_ms: now_ms(),
            chunks: std::mem::take(&mut self.chunks),
            version: 0,
        };
        let key = self.header.key.clone();
        let touched: Vec<usize> = self.touched.iter().copied().collect();
        // From here on the outcome belongs to the commit, which runs as a
        // task of its own: a client that goes away now cannot cancel it
        // halfway (and Drop must not release what may commit).
        self.settled = true;
        let (cluster, ns, deadline) = (self.cluster.clone(), self.ns.clone(), self.deadline_ms);
        let (commit_key, commit_manifest) = (key.clone(), manifest.clone());
        let version = tokio::spawn(
            async move { cluster.commit_and_seal(&ns, &commit_key, commit_manifest, deadline, touched).await }
                .instrument(tracing::Span::current()),
        )
        .await
        .map_err(|e| Error::Exhausted(format!("the commit task failed: {e}")))??;
        Ok(Uploaded {
            file: file_info(key, FileManifest { version, ..manifest }, false),
            chunks_stored: self.stored,
            chunks_deduplicated: self.deduplicated,
        })
    }

    /// Releases everything this upload stored.
    async fn abort(&mut self) {
        // Calls still in flight could claim after the release: wait for them.
        while self.in_flight.next().await.is_some() {}
        self.cluster.release_upload(self.touched.iter().copied(), &self.id).await;
        self.settled = true;
    }
}

/// A chunk cut from the stream, with its address and its checksum.
struct Cut {
    sha256: [u8; 32],
    crc32: u32,
    data: Bytes,
}

/// Cuts `message` into chunks and hashes them, off the reactor.
async fn cut_and_hash(mut chunker: Chunker, message: Bytes, last: bool) -> Result<(Chunker, Vec<Cut>)> {
    tokio::task::spawn_blocking(move || {
        let mut ready = chunker.push(&message);
        if last {
            ready.extend(chunker.finish());
        }
        let hashed =
            ready.into_iter().map(|c| Cut { sha256: sha256(&c), crc32: crc32fast::hash(&c), data: c }).collect();
        (chunker, hashed)
    })
    .await
    .map_err(|e| Error::Exhausted(format!("chunking task failed: {e}")))
}

/// The SHA-256 of the whole upload, computed on a thread of its own while
/// the chunks are cut and hashed on another: hashing is most of an upload's
/// CPU time, and the two hashes do not depend on each other.
struct WholeFileHash {
    tx: mpsc::Sender<Bytes>,
    done: tokio::task::JoinHandle<Vec<u8>>,
}

impl WholeFileHash {
    /// Messages queued for hashing; bounds the memory a slow hash can hold.
    const QUEUE: usize = 4;

    fn start() -> WholeFileHash {
        let (tx, mut rx) = mpsc::channel::<Bytes>(Self::QUEUE);
        let done = tokio::task::spawn_blocking(move || {
            let mut context = Context::new(&SHA256);
            while let Some(message) = rx.blocking_recv() {
                context.update(&message);
            }
            context.finish().as_ref().to_vec()
        });
        WholeFileHash { tx, done }
    }

    async fn update(&self, message: Bytes) -> Result<()> {
        self.tx.send(message).await.map_err(|_| Error::Exhausted("the file hashing task stopped".into()))
    }

    async fn finish(self) -> Result<Vec<u8>> {
        drop(self.tx);
        self.done.await.map_err(|e| Error::Exhausted(format!("the file hashing task failed: {e}")))
    }
}

impl Cluster {
    /// Commits a new version's manifest and seals its claims on `touched`.
    /// If the commit fails, the claims are released — but only once the
    /// commit can no longer land: its answer may be what was lost, so it is
    /// given a short deadline, and after that the manifest itself says
    /// whether it landed.
    pub(crate) async fn commit_and_seal(
        self: &Arc<Self>,
        ns: &str,
        key: &[u8],
        manifest: FileManifest,
        lease_deadline_ms: u64,
        touched: Vec<usize>,
    ) -> Result<u64> {
        let id = manifest.upload_id.clone();
        let commit_deadline = lease_deadline_ms.min(now_ms() + COMMIT_WINDOW.as_millis() as u64);
        match self.commit_manifest(ns, key, manifest, commit_deadline).await {
            Ok(version) => {
                self.seal(touched, &id).await;
                Ok(version)
            }
            Err(e) => {
                let (cluster, ns, key) = (self.clone(), ns.to_string(), key.to_vec());
                tokio::spawn(async move {
                    let wait = commit_deadline.saturating_sub(now_ms()) + 1_000;
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    match cluster.manifest(&ns, &key, Duration::ZERO).await {
                        Ok(Some((m, _))) if m.upload_id == id => cluster.seal(touched, &id).await,
                        Ok(_) => cluster.release_upload(touched, &id).await,
                        // Unknown: the sweeper asks again once the lease ran out.
                        Err(e) => tracing::warn!(error = %e, "cannot tell whether a failed commit landed"),
                    }
                });
                Err(e)
            }
        }
    }

    /// Commits a manifest on the shard of its key; returns its version.
    pub(crate) async fn commit_manifest(
        self: &Arc<Self>,
        ns: &str,
        key: &[u8],
        manifest: FileManifest,
        deadline_ms: u64,
    ) -> Result<u64> {
        let shard = self.ring.owner_index(ns, key);
        let req = ShardManifestCommitRequest {
            epoch: self.epoch(),
            namespace: ns.to_string(),
            key: key.to_vec(),
            manifest: Some(manifest),
            deadline_ms,
        };
        let done = self.shards[shard]
            .call(|c| {
                let req = req.clone();
                async move { c.manifest_commit(req).await }
            })
            .await?;
        if !done.replaced.is_empty() {
            // The replaced version is garbage; collect it soon rather than at the next sweep.
            let cluster = self.clone();
            tokio::spawn(async move { cluster.collect_garbage(shard).await });
        }
        Ok(done.version)
    }

    /// Seals an upload's claims after its commit. A failed seal only leaves
    /// a lease record that the sweeper seals later, so it is logged, not returned.
    pub(crate) async fn seal(&self, shards: impl IntoIterator<Item = usize>, upload_id: &[u8]) {
        if let Err(e) = self.control_upload(shards, upload_id, UploadAction::Seal, 0).await {
            tracing::warn!(upload = %hex::encode(upload_id), error = %e, "seal failed; the sweeper will retry");
        }
    }
}
