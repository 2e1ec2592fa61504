//! Collection. Every gateway runs a sweeper (`files.sweep_interval`) that asks
//! each shard for
//! * uploads whose lease ran out: if the file's manifest names the upload,
//!   it committed and only its seal was lost (seal it); otherwise it never
//!   will commit — the shard refuses commits after the lease — so its
//!   claims are released and chunks nothing else claims are deleted;
//! * garbage (replaced or deleted versions) that no reader holds: its claims
//!   are released on every shard holding its chunks, then the record goes.
//!
//! Every step is idempotent, so gateways sweeping at once, or a sweep cut
//! short by a crash, do no harm.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use omnishard_proto::v1::{ShardFilesPendingRequest, ShardGarbageForgetRequest, UploadAction};

use crate::cluster::Cluster;
use crate::error::Result;

/// Uploads and garbage records handled per shard and pass.
const PASS_LIMIT: u32 = 1_000;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub sealed: u64,
    pub released: u64,
    pub collected: u64,
    pub chunks_deleted: u64,
}

impl Swept {
    fn add(&mut self, other: Swept) {
        self.sealed += other.sealed;
        self.released += other.released;
        self.collected += other.collected;
        self.chunks_deleted += other.chunks_deleted;
    }
}

impl Cluster {
    /// One pass over every shard; the first error is returned after all tried.
    pub async fn sweep_files(self: &Arc<Self>) -> Result<Swept> {
        let mut total = Swept::default();
        let mut first_error = None;
        for shard in 0..self.shards.len() {
            match self.sweep_shard(shard).await {
                Ok(swept) => total.add(swept),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(total), Err)
    }

    /// Collects what one shard has pending now (after a delete or overwrite).
    pub(crate) async fn collect_garbage(self: &Arc<Self>, shard: usize) {
        if let Err(e) = self.sweep_shard(shard).await {
            tracing::debug!(error = %e, "garbage collection deferred to the sweeper");
        }
    }

    async fn sweep_shard(&self, shard: usize) -> Result<Swept> {
        let handle = &self.shards[shard];
        let pending = handle.client.clone().files_pending(ShardFilesPendingRequest { limit: PASS_LIMIT }).await?;
        let mut swept = Swept::default();
        for upload in pending.expired {
            let live = self.manifest(&upload.namespace, &upload.key, Duration::ZERO).await?;
            if live.is_some_and(|(m, _)| m.upload_id == upload.upload_id) {
                self.control_upload([shard], &upload.upload_id, UploadAction::Seal, 0).await?;
                swept.sealed += 1;
            } else {
                swept.chunks_deleted +=
                    self.control_upload([shard], &upload.upload_id, UploadAction::Release, 0).await?;
                swept.released += 1;
            }
        }
        for garbage in pending.garbage {
            let Some(manifest) = garbage.manifest else { continue };
            let holders: BTreeSet<usize> =
                manifest.chunks.iter().map(|c| self.chunk_shard(&garbage.namespace, &c.sha256)).collect();
            swept.chunks_deleted += self.control_upload(holders, &manifest.upload_id, UploadAction::Release, 0).await?;
            let forget = ShardGarbageForgetRequest { upload_id: manifest.upload_id };
            handle.client.clone().garbage_forget(forget).await?;
            swept.collected += 1;
        }
        Ok(swept)
    }
}
