//! Files through the gateway. An upload is cut into chunks as it streams
//! in; each chunk goes to the shard of its SHA-256 and is claimed there for
//! the upload; once every chunk is durable, the manifest commits on the
//! shard of the file key and the file appears. Downloads read the manifest
//! under a read lease and stream chunks in order with a bounded prefetch.
//!
//! * [`chunker`] — fixed or content-defined (FastCDC) chunking of a stream.
//! * [`upload`] — the upload pipeline: chunk, hash, store, commit or release.
//! * [`download`] — manifests, byte ranges, the chunk prefetch, read leases.
//! * [`manage`] — stat, list, delete, copy.
//! * [`sweep`] — collection of garbage and of abandoned uploads' chunks.
//! * [`verify`] — the operator's check of every chunk and manifest.

pub mod chunker;
pub mod download;
pub mod manage;
pub mod sweep;
pub mod upload;
pub mod verify;

use std::time::Duration;

use omnishard_common::placement::chunk_key;
use omnishard_proto::v1::{
    FileChunk, FileInfo, FileManifest, ShardManifestGetRequest, ShardUploadControlRequest, UploadAction,
};

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::kv::show;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Bytes of an upload id.
pub const UPLOAD_ID_LEN: usize = 16;

/// Most metadata entries of a file, and their total size in bytes.
pub const MAX_METADATA_ENTRIES: usize = 64;
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// The public description of a stored version.
pub fn file_info(key: Vec<u8>, manifest: FileManifest, with_chunks: bool) -> FileInfo {
    FileInfo {
        key,
        size: manifest.size,
        sha256: manifest.sha256,
        content_type: manifest.content_type,
        metadata: manifest.metadata,
        chunk_count: manifest.chunks.len() as u64,
        version: manifest.version,
        created_ms: manifest.created_ms,
        chunks: if with_chunks { manifest.chunks } else { Vec::<FileChunk>::new() },
    }
}

/// `NOT_FOUND` for a file key.
pub fn not_found(key: &[u8]) -> Error {
    Error::NotFound { what: format!("file {:?}", show(key)) }
}

impl Cluster {
    /// One of the `files.max_transfers` transfer slots, held while it runs.
    pub(crate) fn transfer_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        self.transfers.clone().try_acquire_owned().map_err(|_| {
            Error::Exhausted(format!("{} transfers are running (files.max_transfers)", self.files.max_transfers))
        })
    }

    /// Index of the shard holding chunk `hash` of `ns`.
    pub(crate) fn chunk_shard(&self, ns: &str, hash: &[u8]) -> usize {
        self.ring.owner_index(ns, &chunk_key(hash))
    }

    /// The current manifest of a file and, with a non-zero `lease`, the id of
    /// a read lease on it.
    pub(crate) async fn manifest(&self, ns: &str, key: &[u8], lease: Duration) -> Result<Option<(FileManifest, u64)>> {
        let shard = self.ring.owner_index(ns, key);
        let req = ShardManifestGetRequest {
            epoch: self.epoch(),
            namespace: ns.to_string(),
            key: key.to_vec(),
            lease_ms: lease.as_millis() as u64,
        };
        let found = self
            .with_read_retries(|| {
                self.shards[shard].call(|c| {
                    let req = req.clone();
                    async move { c.manifest_get(req).await }
                })
            })
            .await?;
        Ok(found.manifest.filter(|_| found.found).map(|m| (m, found.lease_id)))
    }

    /// Sends an upload-control action to each of `shards`; the first error wins.
    pub(crate) async fn control_upload(
        &self,
        shards: impl IntoIterator<Item = usize>,
        upload_id: &[u8],
        action: UploadAction,
        deadline_ms: u64,
    ) -> Result<u64> {
        let calls = shards.into_iter().map(|shard| {
            let req = ShardUploadControlRequest { upload_id: upload_id.to_vec(), action: action as i32, deadline_ms };
            self.shards[shard].call(move |c| {
                let req = req.clone();
                async move { c.upload_control(req).await }
            })
        });
        let mut deleted = 0;
        for result in futures::future::join_all(calls).await {
            deleted += result?.chunks_deleted;
        }
        Ok(deleted)
    }

    /// Releases an upload's claims on `shards`, logging (not returning)
    /// failures: the sweeper finishes what this could not.
    pub(crate) async fn release_upload(&self, shards: impl IntoIterator<Item = usize>, upload_id: &[u8]) {
        if let Err(e) = self.control_upload(shards, upload_id, UploadAction::Release, 0).await {
            tracing::warn!(upload = %hex::encode(upload_id), error = %e, "release failed; the sweeper will retry");
        }
    }
}

/// Chunks per transfer batch span.
const CHUNKS_PER_BATCH: u32 = 16;

/// The spans of a transfer's chunks, one per batch of [`CHUNKS_PER_BATCH`]:
/// each chunk's shard call is traced inside its batch, so a large file's
/// waterfall shows batches with their chunk and byte counts.
pub(crate) struct ChunkBatch {
    name: &'static str,
    span: Option<tracing::Span>,
    number: u32,
    chunks: u32,
    bytes: u64,
}

impl ChunkBatch {
    /// Batches whose spans are called `name`.
    pub(crate) fn new(name: &'static str) -> ChunkBatch {
        ChunkBatch { name, span: None, number: 0, chunks: 0, bytes: 0 }
    }

    /// The current batch's span, opening the next batch when none is open.
    pub(crate) fn span(&mut self) -> tracing::Span {
        let (number, name) = (self.number, self.name);
        self.span
            .get_or_insert_with(
                || tracing::info_span!(target: "omnishard::files", "batch", otel.name = name, batch = number),
            )
            .clone()
    }

    /// Counts a fetched chunk; a full batch ends its span.
    pub(crate) fn add(&mut self, bytes: usize) {
        self.chunks += 1;
        self.bytes += bytes as u64;
        if self.chunks >= CHUNKS_PER_BATCH {
            self.close();
        }
    }

    fn close(&mut self) {
        if let Some(span) = self.span.take() {
            span.set_attribute("chunks", i64::from(self.chunks));
            span.set_attribute("bytes", self.bytes.min(i64::MAX as u64) as i64);
        }
        self.number += 1;
        self.chunks = 0;
        self.bytes = 0;
    }
}

impl Drop for ChunkBatch {
    fn drop(&mut self) {
        self.close();
    }
}
