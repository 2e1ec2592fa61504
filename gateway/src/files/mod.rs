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

use std::future::Future;
use std::time::Duration;

use omnishard_common::placement::chunk_key;
use omnishard_proto::v1::{
    FileChunk, FileInfo, FileManifest, ShardManifestGetRequest, ShardUploadControlRequest, UploadAction,
};

use crate::cluster::Cluster;
use crate::config::FileSettings;
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

/// How long a transfer may still wait for its client, so a client that stalls
/// or trickles cannot hold a transfer slot: each wait lasts at most
/// `files.idle_timeout`, and all waits together at most the longer of
/// `idle_timeout` and the time `files.min_rate` allows for the bytes moved so
/// far. Only time spent waiting for the client counts: a transfer slowed by
/// its shards is not the client's fault.
pub(crate) struct Pace {
    idle: Duration,
    /// Bytes per second, at least 1 (validated).
    min_rate: u64,
    waited: Duration,
    bytes: u64,
}

impl Pace {
    pub(crate) fn new(files: &FileSettings) -> Pace {
        Pace { idle: files.idle_timeout, min_rate: files.min_rate.as_u64().max(1), waited: Duration::ZERO, bytes: 0 }
    }

    /// The longest the next wait may last, and the setting that bounds it.
    fn next_limit(&self) -> (Duration, &'static str) {
        let earned = Duration::try_from_secs_f64(self.bytes as f64 / self.min_rate as f64).unwrap_or(Duration::MAX);
        let left = self.idle.max(earned).saturating_sub(self.waited);
        if left < self.idle {
            (left, "files.min_rate")
        } else {
            (self.idle, "files.idle_timeout")
        }
    }

    /// Waits for `client` — its next message, or room to send it one — for
    /// at most the time left. `who` starts the error message and says what
    /// the client failed to do (e.g. `"data: the client sent"`).
    pub(crate) async fn wait<T>(&mut self, who: &str, client: impl Future<Output = T>) -> Result<T> {
        let (limit, setting) = self.next_limit();
        let start = tokio::time::Instant::now();
        // `timeout` polls `client` before its timer, so a message that is
        // already there is taken even when no time is left.
        let outcome = tokio::time::timeout(limit, client).await;
        self.waited += start.elapsed();
        outcome.map_err(|_| self.too_slow(who, setting))
    }

    /// Counts bytes the client sent or took.
    pub(crate) fn moved(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }

    fn too_slow(&self, who: &str, setting: &str) -> Error {
        Error::Deadline(if setting == "files.idle_timeout" {
            format!("{who} no message within {:?} ({setting})", self.idle)
        } else {
            format!(
                "{who} {} bytes in {:.1}s of waiting for it, below the minimum of {}/s ({setting})",
                self.bytes,
                self.waited.as_secs_f64(),
                bytesize::ByteSize::b(self.min_rate)
            )
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pace(idle_ms: u64, rate: u64) -> Pace {
        let files = FileSettings {
            idle_timeout: Duration::from_millis(idle_ms),
            min_rate: bytesize::ByteSize::b(rate),
            ..FileSettings::default()
        };
        Pace::new(&files)
    }

    #[test]
    fn test_pace_allows_idle_timeout_per_wait_until_the_grace_is_spent() {
        let mut p = pace(1_000, 1_000);
        assert_eq!(p.next_limit(), (Duration::from_millis(1_000), "files.idle_timeout"));
        p.waited = Duration::from_millis(600);
        assert_eq!(p.next_limit(), (Duration::from_millis(400), "files.min_rate"));
        p.waited = Duration::from_millis(1_500);
        assert_eq!(p.next_limit(), (Duration::ZERO, "files.min_rate"));
    }

    #[test]
    fn test_pace_earns_waiting_time_at_the_minimum_rate() {
        let mut p = pace(1_000, 1_000);
        p.moved(10_000); // 10 s worth at 1000 B/s
        p.waited = Duration::from_secs(8);
        assert_eq!(p.next_limit(), (Duration::from_millis(1_000), "files.idle_timeout"));
        p.waited = Duration::from_millis(9_500);
        assert_eq!(p.next_limit(), (Duration::from_millis(500), "files.min_rate"));
    }

    #[test]
    fn test_pace_errors_name_their_setting() {
        let p = pace(1_000, 1_000);
        let err = p.too_slow("data: the client sent", "files.idle_timeout");
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
        assert!(err.to_string().contains("no message within 1s (files.idle_timeout)"), "{err}");
        let err = p.too_slow("data: the client sent", "files.min_rate");
        assert!(err.to_string().contains("(files.min_rate)"), "{err}");
    }

    #[test]
    fn test_client_timeouts_parse_and_zero_is_refused() {
        let base = "epoch = 1\n[[shards]]\nid = \"a\"\naddr = \"127.0.0.1:1\"\n[files]\n";
        let config = crate::config::GatewayConfig::from_toml(&format!(
            "{base}header_timeout = \"2s\"\nidle_timeout = \"500ms\"\nmin_rate = \"1MiB\"\n"
        ))
        .unwrap();
        assert_eq!(config.files.header_timeout, Duration::from_secs(2));
        assert_eq!(config.files.idle_timeout, Duration::from_millis(500));
        assert_eq!(config.files.min_rate, bytesize::ByteSize::mib(1));
        for (setting, value) in [("header_timeout", "\"0s\""), ("idle_timeout", "\"0s\""), ("min_rate", "\"0B\"")] {
            let err = crate::config::GatewayConfig::from_toml(&format!("{base}{setting} = {value}\n")).unwrap_err();
            assert!(err.to_string().starts_with(&format!("files.{setting}:")), "{err}");
        }
    }

    #[tokio::test]
    async fn test_pace_takes_a_ready_message_with_no_time_left() {
        let mut p = pace(1_000, 1_000);
        p.waited = Duration::from_secs(5);
        assert_eq!(p.wait("data: the client sent", async { 7 }).await.unwrap(), 7);
        let err = p.wait("data: the client sent", futures::future::pending::<()>()).await.unwrap_err();
        assert!(err.to_string().contains("files.min_rate"), "{err}");
    }
}
