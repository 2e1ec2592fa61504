//! `admin verify-files`: every shard re-reads and hashes each stored chunk,
//! and every manifest's chunks are checked to exist where the ring puts them.
//! Pages keep memory bounded however much is stored.

use std::collections::BTreeMap;

use omnishard_proto::v1::{
    MissingChunk, ShardChunkVerifyRequest, ShardChunksPresentRequest, ShardManifestListRequest, VerifyFilesResponse,
};

use crate::cluster::Cluster;
use crate::error::Result;

/// (file key, chunk hash) pairs to look for, by (namespace, chunk shard).
type Wanted = BTreeMap<(String, usize), Vec<(Vec<u8>, Vec<u8>)>>;

/// Chunks hashed per shard call; manifests read per shard call.
const PAGE: u32 = 256;

impl Cluster {
    /// Checks every chunk and every manifest; reports what is wrong.
    pub async fn verify_files(&self) -> Result<VerifyFilesResponse> {
        let mut report = VerifyFilesResponse::default();
        for shard in 0..self.shards.len() {
            self.verify_chunks_of(shard, &mut report).await?;
            self.verify_manifests_of(shard, &mut report).await?;
        }
        Ok(report)
    }

    async fn verify_chunks_of(&self, shard: usize, report: &mut VerifyFilesResponse) -> Result<()> {
        let client = &self.shards[shard].client;
        let mut start_after = Vec::new();
        loop {
            let page = client.clone().chunk_verify(ShardChunkVerifyRequest { start_after, limit: PAGE }).await?;
            report.chunks += page.chunks;
            report.bytes += page.bytes;
            report.unreferenced += page.unreferenced;
            report.corrupt.extend(page.corrupt);
            if page.next.is_empty() {
                return Ok(());
            }
            start_after = page.next;
        }
    }

    async fn verify_manifests_of(&self, shard: usize, report: &mut VerifyFilesResponse) -> Result<()> {
        let client = &self.shards[shard].client;
        let mut start_after = Vec::new();
        loop {
            let req = ShardManifestListRequest {
                start_after: start_after.clone(),
                limit: PAGE,
                all_namespaces: true,
                ..Default::default()
            };
            let page = client.clone().manifest_list(req).await?;
            let mut wanted = Wanted::new();
            for stored in &page.manifests {
                report.files += 1;
                for chunk in stored.manifest.iter().flat_map(|m| &m.chunks) {
                    let holder = self.chunk_shard(&stored.namespace, &chunk.sha256);
                    wanted
                        .entry((stored.namespace.clone(), holder))
                        .or_default()
                        .push((stored.key.clone(), chunk.sha256.clone()));
                }
            }
            for ((namespace, holder), chunks) in wanted {
                for batch in chunks.chunks(self.limits.max_batch_ops.max(1)) {
                    let req = ShardChunksPresentRequest {
                        namespace: namespace.clone(),
                        hashes: batch.iter().map(|(_, h)| h.clone()).collect(),
                    };
                    let missing = self.shards[holder].client.clone().chunks_present(req).await?.missing;
                    for (key, hash) in batch.iter().filter(|(_, h)| missing.contains(h)) {
                        report.missing.push(MissingChunk {
                            namespace: namespace.clone(),
                            key: key.clone(),
                            sha256: hash.clone(),
                        });
                    }
                }
            }
            match page.manifests.last() {
                Some(last) if page.more => start_after = position(&last.namespace, &last.key),
                _ => return Ok(()),
            }
        }
    }
}

/// The stored position of a manifest, as `all_namespaces` listings page by.
fn position(namespace: &str, key: &[u8]) -> Vec<u8> {
    let mut out = namespace.as_bytes().to_vec();
    out.push(0);
    out.extend_from_slice(key);
    out
}
