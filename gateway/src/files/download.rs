//! Downloads: the manifest under a read lease, the byte range, and a task
//! that fetches the range's chunks in order with `files.window` of them in
//! flight, sending at most 1 MiB per message. A client that goes away stops
//! the task at its next send, and so does one that stops taking messages
//! (`files.idle_timeout`, `files.min_rate`); the lease and the transfer slot
//! then end.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use omnishard_common::namespace;
use omnishard_proto::v1::{FileInfo, ShardChunkGetRequest, ShardReadLeaseRequest};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::{file_info, not_found, ChunkBatch, Pace};
use crate::cluster::Cluster;
use crate::error::{Error, Result};

/// Largest data message of a download.
pub const MESSAGE_BYTES: usize = 1 << 20;

/// A download in progress: the file's info, then its bytes in order. An
/// error ends the stream.
pub struct Download {
    pub info: FileInfo,
    pub data: mpsc::Receiver<Result<Bytes>>,
    /// Why the download stopped early when its client did not keep up; it
    /// cannot travel in `data`, which is full then. Read it once `data`
    /// ends, so a client that resumes reading sees an error, not a short file.
    pub stopped: oneshot::Receiver<Error>,
}

/// The start of the error of a download whose client stopped taking messages.
const STALLED: &str = "download: the client took";

/// The part of one chunk a range needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    hash: Vec<u8>,
    skip: usize,
    take: usize,
}

/// Where `offset..offset+length` (length 0 = to the end) falls in chunks of `sizes`.
fn plan(sizes: &[(Vec<u8>, u64)], file_size: u64, offset: u64, length: u64) -> Result<Vec<Piece>> {
    if offset > file_size || (offset == file_size && file_size > 0) {
        return Err(Error::OutOfRange(format!("offset: {offset} is past the end of the {file_size}-byte file")));
    }
    let end = if length == 0 { file_size } else { offset.saturating_add(length).min(file_size) };
    let mut pieces = Vec::new();
    let mut start = 0u64;
    for (hash, size) in sizes {
        let stop = start + size;
        if stop > offset && start < end {
            let skip = offset.saturating_sub(start);
            let take = end.min(stop) - start - skip;
            pieces.push(Piece { hash: hash.clone(), skip: skip as usize, take: take as usize });
        }
        if stop >= end {
            break;
        }
        start = stop;
    }
    Ok(pieces)
}

impl Cluster {
    /// Starts streaming `key` from `offset` for `length` bytes (0 = to the end).
    pub async fn download(self: &Arc<Self>, ns: &str, key: Vec<u8>, offset: u64, length: u64) -> Result<Download> {
        let ns = namespace::resolve(ns)?.to_string();
        self.limits.check_key(&key)?;
        let permit = self.transfer_permit()?;
        let lease = self.files.read_lease;
        let (manifest, lease_id) = self.manifest(&ns, &key, lease).await?.ok_or_else(|| not_found(&key))?;
        let sizes: Vec<(Vec<u8>, u64)> = manifest.chunks.iter().map(|c| (c.sha256.clone(), c.size)).collect();
        let lease_shard = self.ring.owner_index(&ns, &key);
        let upload_id = manifest.upload_id.clone();
        let pieces = match plan(&sizes, manifest.size, offset, length) {
            Ok(pieces) => pieces,
            Err(e) => {
                self.end_read_lease(lease_shard, upload_id, lease_id);
                return Err(e);
            }
        };
        let info = file_info(key, manifest, false);
        let (tx, data) = mpsc::channel(2);
        let (stop, stopped) = oneshot::channel();
        let cluster = self.clone();
        let request_span = tracing::Span::current();
        tokio::spawn(
            async move {
                let renewer = tokio::spawn(cluster.clone().renew_read_lease(lease_shard, upload_id.clone(), lease_id));
                if let Err(e) = cluster.stream_pieces(&ns, pieces, &tx).await {
                    tracing::debug!(error = %e, "download stopped before its end");
                    let _ = stop.send(e);
                }
                // After `stop`: the reader looks at `stopped` when `data` ends.
                drop(tx);
                renewer.abort();
                cluster.end_read_lease(lease_shard, upload_id, lease_id);
                drop(permit);
            }
            .instrument(request_span),
        );
        Ok(Download { info, data, stopped })
    }

    /// Fetches `pieces` in order, prefetching, and sends their bytes to `tx`.
    /// Fails when the client does not keep pace with the messages.
    async fn stream_pieces(
        self: &Arc<Self>,
        ns: &str,
        pieces: Vec<Piece>,
        tx: &mpsc::Sender<Result<Bytes>>,
    ) -> Result<()> {
        let fetches = futures::stream::iter(pieces).map(|piece| async move {
            let data = self.fetch_chunk(ns, &piece.hash).await?;
            if data.len() < piece.skip + piece.take {
                return Err(Error::Shard {
                    shard_id: String::new(),
                    code: tonic::Code::DataLoss,
                    message: format!(
                        "chunk {} is {} bytes, shorter than its manifest says",
                        hex::encode(&piece.hash),
                        data.len()
                    ),
                });
            }
            Ok(data.slice(piece.skip..piece.skip + piece.take))
        });
        let mut fetches = fetches.buffered(self.files.window);
        let mut batch = ChunkBatch::new("files.download_batch");
        let mut pace = Pace::new(&self.files);
        while let Some(fetched) = fetches.next().instrument(batch.span()).await {
            match fetched {
                Ok(mut bytes) => {
                    batch.add(bytes.len());
                    while !bytes.is_empty() {
                        let message = bytes.split_to(bytes.len().min(MESSAGE_BYTES));
                        let len = message.len();
                        if pace.wait(STALLED, tx.send(Ok(message))).await?.is_err() {
                            return Ok(()); // the client went away
                        }
                        pace.moved(len);
                    }
                }
                Err(e) => {
                    // Sent in the stream when the client is reading; otherwise it
                    // goes through `stop`, so the stream can never end as if whole.
                    return match pace.wait(STALLED, tx.send(Err(e.clone()))).await {
                        Ok(_) => Ok(()),
                        Err(_) => Err(e),
                    };
                }
            }
        }
        Ok(())
    }

    /// One chunk's bytes, verified by its shard.
    async fn fetch_chunk(&self, ns: &str, hash: &[u8]) -> Result<Bytes> {
        let shard = self.chunk_shard(ns, hash);
        let req = ShardChunkGetRequest { epoch: self.epoch(), namespace: ns.to_string(), sha256: hash.to_vec() };
        let got = self
            .with_read_retries(|| {
                self.shards[shard].call(|c| {
                    let req = req.clone();
                    async move { c.chunk_get(req).await }
                })
            })
            .await?;
        Ok(got.data)
    }

    /// Renews a read lease every third of its length until aborted.
    async fn renew_read_lease(self: Arc<Self>, shard: usize, upload_id: Vec<u8>, lease_id: u64) {
        let lease = self.files.read_lease;
        loop {
            tokio::time::sleep(lease / 3).await;
            let req =
                ShardReadLeaseRequest { upload_id: upload_id.clone(), lease_id, lease_ms: lease.as_millis() as u64 };
            if let Err(e) = self.shards[shard].client.clone().read_lease(req).await {
                tracing::warn!(error = %e, "cannot renew a read lease");
            }
        }
    }

    /// Ends a read lease in the background (it would run out anyway).
    pub(crate) fn end_read_lease(self: &Arc<Self>, shard: usize, upload_id: Vec<u8>, lease_id: u64) {
        if lease_id == 0 {
            return;
        }
        let client = self.shards[shard].client.clone();
        tokio::spawn(async move {
            let req = ShardReadLeaseRequest { upload_id, lease_id, lease_ms: 0 };
            let _ = tokio::time::timeout(Duration::from_secs(5), client.read_lease(req)).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(list: &[u64]) -> Vec<(Vec<u8>, u64)> {
        list.iter().enumerate().map(|(i, s)| (vec![i as u8], *s)).collect()
    }

    fn pieces(list: &[u64], offset: u64, length: u64) -> Vec<(u8, usize, usize)> {
        let total = list.iter().sum();
        plan(&sizes(list), total, offset, length).unwrap().into_iter().map(|p| (p.hash[0], p.skip, p.take)).collect()
    }

    #[test]
    fn test_ranges_at_chunk_boundaries() {
        assert_eq!(pieces(&[10, 10, 10], 0, 0), vec![(0, 0, 10), (1, 0, 10), (2, 0, 10)]);
        assert_eq!(pieces(&[10, 10, 10], 10, 10), vec![(1, 0, 10)]);
        assert_eq!(pieces(&[10, 10, 10], 9, 2), vec![(0, 9, 1), (1, 0, 1)]);
        assert_eq!(pieces(&[10, 10, 10], 29, 0), vec![(2, 9, 1)]);
        assert_eq!(pieces(&[10, 10, 10], 5, 1000), vec![(0, 5, 5), (1, 0, 10), (2, 0, 10)]);
        assert_eq!(pieces(&[], 0, 0), vec![]);
    }

    #[test]
    fn test_range_outside_the_file_is_out_of_range() {
        for (offset, total) in [(30, 30), (31, 30), (1, 0)] {
            let err = plan(&sizes(&[total]), total, offset, 0).unwrap_err();
            assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
            assert!(err.to_string().starts_with("offset:"), "{err}");
        }
    }
}
