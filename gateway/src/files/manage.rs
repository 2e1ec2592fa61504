//! Stat, list, delete and server-side copy.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use omnishard_common::namespace;
use omnishard_proto::v1::{
    FileInfo, FileManifest, ShardChunkClaimRequest, ShardManifestDeleteRequest, ShardManifestListRequest, UploadTicket,
};

use super::{file_info, not_found, UPLOAD_ID_LEN};
use crate::cluster::Cluster;
use crate::error::Result;
use crate::kv::{decode_cursor, encode_cursor, now_ms};

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct FilePage {
    pub files: Vec<FileInfo>,
    pub next_cursor: Vec<u8>,
}

impl Cluster {
    /// The current version of a file.
    pub async fn stat_file(&self, ns: &str, key: Vec<u8>, with_chunks: bool) -> Result<FileInfo> {
        let ns = namespace::resolve(ns)?;
        self.limits.check_key(&key)?;
        let (manifest, _) = self.manifest(ns, &key, Duration::ZERO).await?.ok_or_else(|| not_found(&key))?;
        Ok(file_info(key, manifest, with_chunks))
    }

    /// Files whose key starts with `prefix`, merged across shards in key order.
    pub async fn list_files(&self, ns: &str, prefix: Vec<u8>, cursor: &[u8], limit: u32) -> Result<FilePage> {
        let ns = namespace::resolve(ns)?;
        let limit = self.limits.scan_page(limit)?;
        self.limits.check_key_len("prefix", prefix.len())?;
        let start_after = decode_cursor(cursor)?;
        let req = ShardManifestListRequest {
            namespace: ns.to_string(),
            prefix,
            start_after,
            limit: limit as u32,
            omit_chunks: true,
            all_namespaces: false,
        };
        let calls = self.shards.iter().map(|shard| {
            let req = req.clone();
            self.with_read_retries(move || {
                let req = req.clone();
                shard.call(move |c| {
                    let req = req.clone();
                    async move { c.manifest_list(req).await }
                })
            })
        });
        let mut merged = BTreeMap::new();
        let mut more = false;
        for page in futures::future::join_all(calls).await {
            let page = page?;
            more |= page.more;
            for m in page.manifests {
                merged.insert(m.key.clone(), m);
            }
        }
        more |= merged.len() > limit;
        let files: Vec<FileInfo> =
            merged.into_values().take(limit).map(|m| file_info(m.key, m.manifest.unwrap_or_default(), false)).collect();
        let next_cursor = match files.last() {
            Some(last) if more => encode_cursor(&last.key),
            _ => Vec::new(),
        };
        Ok(FilePage { files, next_cursor })
    }

    /// Deletes a file; its chunks are collected once no reader holds them.
    pub async fn delete_file(self: &Arc<Self>, ns: &str, key: Vec<u8>) -> Result<bool> {
        let ns = namespace::resolve(ns)?;
        self.limits.check_key(&key)?;
        let shard = self.ring.owner_index(ns, &key);
        let req = ShardManifestDeleteRequest { epoch: self.epoch(), namespace: ns.to_string(), key };
        let done = self.shards[shard]
            .call(|c| {
                let req = req.clone();
                async move { c.manifest_delete(req).await }
            })
            .await?;
        if done.deleted {
            let cluster = self.clone();
            tokio::spawn(async move { cluster.collect_garbage(shard).await });
        }
        Ok(done.deleted)
    }

    /// Copies `source` to `destination` without moving data: the new
    /// version claims the source's chunks for itself, then commits.
    pub async fn copy_file(self: &Arc<Self>, ns: &str, source: Vec<u8>, destination: Vec<u8>) -> Result<FileInfo> {
        let ns = namespace::resolve(ns)?.to_string();
        self.limits.check_key(&source)?;
        self.limits.check_key(&destination)?;
        let lease = self.files.read_lease;
        let (manifest, lease_id) = self.manifest(&ns, &source, lease).await?.ok_or_else(|| not_found(&source))?;
        let id: [u8; UPLOAD_ID_LEN] = rand::random();
        let deadline_ms = now_ms() + self.files.upload_lease.as_millis() as u64;
        let ticket = UploadTicket { id: id.to_vec(), key: destination.clone(), deadline_ms };
        let mut by_shard: BTreeMap<usize, BTreeSet<Vec<u8>>> = BTreeMap::new();
        for chunk in &manifest.chunks {
            by_shard.entry(self.chunk_shard(&ns, &chunk.sha256)).or_default().insert(chunk.sha256.clone());
        }
        let touched: Vec<usize> = by_shard.keys().copied().collect();
        let claimed = self.claim_chunks(&ns, &ticket, by_shard).await;
        self.end_read_lease(self.ring.owner_index(&ns, &source), manifest.upload_id.clone(), lease_id);
        if let Err(e) = claimed {
            self.release_upload(touched, &id).await;
            return Err(e);
        }
        let copy = FileManifest { upload_id: id.to_vec(), created_ms: now_ms(), version: 0, ..manifest };
        let version = self.commit_and_seal(&ns, &destination, copy.clone(), deadline_ms, touched).await?;
        Ok(file_info(destination, FileManifest { version, ..copy }, false))
    }

    /// Claims already stored chunks, in batches of at most `max_batch_ops` per call.
    async fn claim_chunks(
        &self,
        ns: &str,
        ticket: &UploadTicket,
        by_shard: BTreeMap<usize, BTreeSet<Vec<u8>>>,
    ) -> Result<()> {
        let mut calls = Vec::new();
        for (shard, hashes) in by_shard {
            let hashes: Vec<Vec<u8>> = hashes.into_iter().collect();
            for batch in hashes.chunks(self.limits.max_batch_ops.max(1)) {
                let req = ShardChunkClaimRequest {
                    epoch: self.epoch(),
                    namespace: ns.to_string(),
                    upload: Some(ticket.clone()),
                    hashes: batch.to_vec(),
                };
                calls.push(self.shards[shard].call(move |c| {
                    let req = req.clone();
                    async move { c.chunk_claim(req).await }
                }));
            }
        }
        for result in futures::future::join_all(calls).await {
            result?;
        }
        Ok(())
    }
}
