//! The shared, durable cluster document: the topology every gateway routes
//! with, the migration in progress and who drives it.
//!
//! It lives in the **metadata group**: an ordinary omnishard shard (one
//! process, or a Raft group of three for no single point of failure) that
//! is not part of the placement ring. The document is one KV entry,
//! `omnishard.meta/cluster`, written only by compare-and-set on its version,
//! so two gateways (or two admins) changing it at once cannot both win, and
//! every read is linearizable (the group's leader after a quorum round).
//!
//! Why not etcd: a shard group already *is* a small replicated, linearizable
//! store built on `openraft`, with the same binary, config, metrics and
//! backups as the rest of the cluster; etcd would be a second system to
//! deploy and operate for a document of a few kilobytes.

use omnishard_common::topology::{ShardAddr, Topology};
use omnishard_proto::v1::{shard_op, ShardApplyRequest, ShardOp, ShardPut, ShardReadRequest, ShardTxn};
use serde::{Deserialize, Serialize};

use crate::cluster::ShardHandle;
use crate::config::GatewaySettings;
use crate::error::{Error, Result};
use crate::replicas::ShardClient;

/// Namespace of the document in the metadata group.
pub const META_NAMESPACE: &str = "omnishard.meta";
/// Key of the document.
pub const DOC_KEY: &[u8] = b"cluster";

/// Default migration throttle: 50 MiB/s.
pub const DEFAULT_RATE: u64 = 50 << 20;

/// Everything gateways share about the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterDoc {
    /// The ring every gateway routes with.
    pub topology: Topology,
    /// The topology change in progress, if any.
    #[serde(default)]
    pub migration: Option<Migration>,
    /// The gateway driving the migration, while its lease lasts.
    #[serde(default)]
    pub lease: Option<Lease>,
    /// Id of the last migration started (ids never repeat).
    #[serde(default)]
    pub last_migration_id: u64,
    /// The last migration that finished, for `rebalance status`.
    #[serde(default)]
    pub last_finished: Option<Migration>,
}

/// A driver's claim on the migration; another gateway takes over once it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: String,
    pub until_ms: u64,
}

/// Where a migration stands. Each step is idempotent; a driver that takes
/// over re-runs the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Copying each source's moving records (from its cursor on).
    Copy,
    /// Shipping writes made during the copy (marks), round after round.
    CatchUp,
    /// Moving keys refuse writes; the last marks are shipped, then the switch.
    Fenced,
    /// The new ring is current; sources delete what they handed over.
    Cleanup,
    /// Nothing is moving any more.
    Done,
    /// The operator aborted before the switch: sources forget the migration
    /// (lifting any fence), targets delete the copies, the ring stays.
    Aborting,
    /// An aborted migration whose copies are gone.
    Aborted,
}

impl Phase {
    /// Lower-case name, as shown by `rebalance status`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Copy => "copy",
            Phase::CatchUp => "catch-up",
            Phase::Fenced => "fenced",
            Phase::Cleanup => "cleanup",
            Phase::Done => "done",
            Phase::Aborting => "aborting",
            Phase::Aborted => "aborted",
        }
    }
}

/// One topology change: the ring it leads to and its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    pub id: u64,
    /// What the operator asked for, e.g. `add shard-4`.
    pub reason: String,
    /// The topology after the change (epoch = current + 1).
    pub target: Topology,
    pub phase: Phase,
    pub paused: bool,
    /// Throttle in bytes per second over all moving ranges.
    pub rate_bytes_per_sec: u64,
    /// Copy progress of every shard that gives ranges away.
    pub sources: Vec<SourceProgress>,
    /// Progress of every (source → target) pair.
    pub moves: Vec<MoveProgress>,
    pub started_ms: u64,
    pub updated_ms: u64,
    /// The last error a step hit (the step is retried).
    #[serde(default)]
    pub last_error: String,
}

/// A source's copy position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceProgress {
    pub shard: String,
    /// The last stored key shipped, hex; empty = not started.
    pub cursor: String,
    pub copied: bool,
    /// Records looked at so far (moving or not), to estimate progress.
    pub scanned: u64,
    /// The source's key count when the copy started, to estimate progress.
    pub estimated_keys: u64,
}

/// Keys and bytes moved between one source and one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveProgress {
    pub source: String,
    pub target: String,
    pub keys: u64,
    pub bytes: u64,
}

/// The typed result of a compare-and-set that lost.
#[derive(Debug)]
pub struct Conflict;

/// Client of the metadata group.
#[derive(Clone)]
pub struct TopologyStore {
    shard: ShardHandle,
}

impl TopologyStore {
    /// A client of the group `meta`; connects nothing yet.
    pub fn new(meta: &ShardAddr, settings: &GatewaySettings) -> Result<TopologyStore> {
        // The group serves one ring of its own: every key is its own.
        let own = Topology { epoch: 1, vnodes: 1, shards: vec![meta.clone()] };
        Ok(TopologyStore { shard: ShardHandle::new(ShardClient::new(meta, settings)?, &own) })
    }

    /// The document and its version, or `None` before it is first stored.
    pub async fn load(&self) -> Result<Option<(ClusterDoc, u64)>> {
        let req = ShardReadRequest { epoch: 1, namespace: META_NAMESPACE.into(), keys: vec![DOC_KEY.to_vec()] };
        let values = self
            .shard
            .call(|c| {
                let req = req.clone();
                async move { c.read(req, omnishard_common::read_mode::ReadMode::Linearizable).await }
            })
            .await?
            .values;
        let Some(value) = values.into_iter().next().filter(|v| v.found) else { return Ok(None) };
        let doc = serde_json::from_slice(&value.value).map_err(|e| Error::Shard {
            shard_id: self.shard.client.id().to_string(),
            code: tonic::Code::DataLoss,
            message: format!("the cluster document in the metadata group is unreadable: {e}"),
        })?;
        Ok(Some((doc, value.version)))
    }

    /// Stores `doc` if the stored version is still `expected` (0 = absent).
    /// `Ok(Err(Conflict))` when another writer got there first.
    pub async fn store(&self, doc: &ClusterDoc, expected: u64) -> Result<std::result::Result<u64, Conflict>> {
        let value = serde_json::to_vec(doc).map_err(|e| Error::Exhausted(e.to_string()))?;
        let put = ShardPut { key: DOC_KEY.to_vec(), value, expires_at_ms: 0, expected_version: Some(expected) };
        let req = ShardApplyRequest {
            epoch: 1,
            txns: vec![ShardTxn {
                namespace: META_NAMESPACE.into(),
                ops: vec![ShardOp { op: Some(shard_op::Op::Put(put)) }],
            }],
        };
        let outcome = self
            .shard
            .call(|c| {
                let req = req.clone();
                async move { c.apply(req).await }
            })
            .await?
            .outcomes
            .pop()
            .unwrap_or_default();
        match tonic::Code::from_i32(outcome.code) {
            tonic::Code::Ok => Ok(Ok(outcome.seq)),
            tonic::Code::FailedPrecondition if outcome.message.contains("version conflict") => Ok(Err(Conflict)),
            code => Err(Error::Shard { shard_id: self.shard.client.id().to_string(), code, message: outcome.message }),
        }
    }

    /// Reads the document, applies `change` and stores it, retrying on
    /// conflicts. `change` returns `Ok(false)` to leave it as it is.
    pub async fn update<T>(
        &self,
        mut change: impl FnMut(&mut ClusterDoc) -> Result<(bool, T)>,
    ) -> Result<(ClusterDoc, T)> {
        for _ in 0..50 {
            let (mut doc, version) = self.load().await?.ok_or_else(|| {
                Error::InvalidArgument(omnishard_common::Error::Topology(
                    "the metadata group holds no cluster document yet; start a gateway with this [meta] first".into(),
                ))
            })?;
            let (changed, out) = change(&mut doc)?;
            if !changed {
                return Ok((doc, out));
            }
            if self.store(&doc, version).await?.is_ok() {
                return Ok((doc, out));
            }
        }
        Err(Error::Exhausted("the cluster document changed 50 times in a row under this update; retry".into()))
    }

    /// The stored document, seeding it with `seed` on first start.
    pub async fn load_or_seed(&self, seed: &Topology) -> Result<ClusterDoc> {
        loop {
            if let Some((doc, _)) = self.load().await? {
                return Ok(doc);
            }
            let doc = ClusterDoc {
                topology: seed.clone(),
                migration: None,
                lease: None,
                last_migration_id: 0,
                last_finished: None,
            };
            if self.store(&doc, 0).await?.is_ok() {
                tracing::info!(
                    epoch = seed.epoch,
                    shards = seed.shards.len(),
                    "seeded the metadata group with the topology"
                );
                return Ok(doc);
            }
        }
    }
}
