//! Replication: each shard is a Raft group of replicas, run by `openraft`.
//!
//! * [`log_store`] — the Raft log and vote in the shard's RocksDB.
//! * [`state_machine`] — committed entries into the [`crate::execute::Executor`]; snapshots.
//! * [`snapshot`] — the snapshot file (a point-in-time dump of RocksDB).
//! * [`network`] — openraft's messages to other replicas over gRPC.
//! * [`service`] — the replica's gRPC service: Raft messages and group administration.
//! * [`wire`] — encodings.
//!
//! A write is a [`Proposal`] appended to the log by the leader; it is
//! acknowledged once a majority holds it durably and the leader applied it.
//! Reads on the leader first confirm leadership with a quorum (read index,
//! shared by concurrent reads: [`Replication::linearizable`]).

// openraft's `StorageError` is large, and its trait signatures return it.
#![allow(clippy::result_large_err)]

pub mod log_store;
pub mod network;
mod recent;
pub mod service;
pub mod snapshot;
pub mod state_machine;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use omnishard_common::rejection::Rejection;
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
pub use openraft::BasicNode;
use openraft::{ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::execute::{Executor, Outcome, Proposal};
use crate::store::Store;
use state_machine::Reply;

/// A replica's id within its group.
pub type NodeId = u64;

/// How a replica whose Raft stopped starts the message of its `Stats`
/// refusal (`admin cluster` shows it as the shard's health).
pub const RAFT_STOPPED: &str = "raft stopped: ";

openraft::declare_raft_types!(
    /// openraft's types for a shard group.
    pub TypeConfig:
        D = Arc<Proposal>,
        R = Reply,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A replica's Raft node.
pub type ShardRaft = openraft::Raft<TypeConfig>;

/// Replication settings (`[raft]` in a shard's TOML).
///
/// * `node_id` — this replica's id in its group (default 1).
/// * `join` — start without a group and wait to be initialized or added by
///   a leader (default false: with no `initial_members`, a replica forms a
///   one-replica group of its own).
/// * `initial_members` — `{ id = "host:port" }` of a new group; every member
///   may be started with the same map.
/// * `advertise` — the address other replicas and gateways use (default: the bound address).
/// * `heartbeat_interval` (150ms), `election_timeout_min` (600ms),
///   `election_timeout_max` (1.2s) — failure detection: a follower that hears
///   nothing for a random time in the window starts an election. The
///   heartbeat interval is also the time one append message may take.
/// * `snapshot_logs` — entries since the last snapshot that trigger a new one (default 10000).
/// * `logs_to_keep` — entries kept after a snapshot for lagging replicas (default 1000).
/// * `max_inflight_proposals` — proposals the leader has in flight at once (default 4).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSettings {
    pub node_id: NodeId,
    pub join: bool,
    pub initial_members: BTreeMap<NodeId, String>,
    pub advertise: Option<String>,
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub election_timeout_min: Duration,
    #[serde(with = "humantime_serde")]
    pub election_timeout_max: Duration,
    pub snapshot_logs: u64,
    pub logs_to_keep: u64,
    pub max_inflight_proposals: usize,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            node_id: 1,
            join: false,
            initial_members: BTreeMap::new(),
            advertise: None,
            heartbeat_interval: Duration::from_millis(150),
            election_timeout_min: Duration::from_millis(600),
            election_timeout_max: Duration::from_millis(1200),
            snapshot_logs: 10_000,
            logs_to_keep: 1_000,
            max_inflight_proposals: 4,
        }
    }
}

impl RaftSettings {
    fn openraft_config(&self, shard_id: &str) -> Result<openraft::Config> {
        let config = openraft::Config {
            cluster_name: shard_id.to_string(),
            heartbeat_interval: self.heartbeat_interval.as_millis() as u64,
            election_timeout_min: self.election_timeout_min.as_millis() as u64,
            election_timeout_max: self.election_timeout_max.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_logs.max(1)),
            max_in_snapshot_log_to_keep: self.logs_to_keep,
            // openraft gives one append message a heartbeat interval to
            // arrive; entries can carry file chunks: keep messages small.
            max_payload_entries: 8,
            install_snapshot_timeout: 10_000,
            ..Default::default()
        };
        config.validate().map_err(|e| {
            Error::InvalidArgument(omnishard_common::Error::invalid("raft", format!("settings rejected: {e}")))
        })
    }
}

/// The replica's Raft node and what the shard asks of it.
pub struct Replication {
    raft: ShardRaft,
    node_id: NodeId,
    settings: RaftSettings,
    reads: ReadBarrier,
    /// The address this replica listens on, once bound (peers are dialled from it).
    source: Arc<std::sync::OnceLock<std::net::IpAddr>>,
}

impl Replication {
    /// Starts the Raft node over `executor`'s store; snapshots go under `data_dir`.
    pub async fn start(
        shard_id: &str,
        settings: &RaftSettings,
        executor: Arc<Executor>,
        store: Store,
        data_dir: &Path,
        sync: bool,
    ) -> Result<Replication> {
        let config = Arc::new(settings.openraft_config(shard_id)?);
        let log = log_store::LogStore::new(store, sync)
            .map_err(|e| Error::Internal(format!("cannot start the Raft log sync thread: {e}")))?;
        let machine = state_machine::StateMachine::open(executor, data_dir.join("raft-snapshots"))?;
        let network = network::NetworkFactory::default();
        let source = network.source.clone();
        let raft = ShardRaft::new(settings.node_id, config, network, log, machine)
            .await
            .map_err(|e| Error::Internal(format!("cannot start Raft: {e}")))?;
        Ok(Replication {
            raft,
            node_id: settings.node_id,
            settings: settings.clone(),
            reads: ReadBarrier::default(),
            source,
        })
    }

    /// The openraft handle.
    pub fn raft(&self) -> &ShardRaft {
        &self.raft
    }

    /// This replica's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Forms the group at start when the settings say so: the configured
    /// initial members, or (unless joining) a group of this replica alone,
    /// which is then waited for until it leads (no other replica is needed).
    /// A multi-replica group forms in the background: it needs the others up.
    pub async fn bootstrap(self: &Arc<Self>, bound: &str) -> Result<()> {
        if let Ok(addr) = bound.parse::<std::net::SocketAddr>() {
            let _ = self.source.set(addr.ip());
        }
        if self.settings.join {
            return Ok(());
        }
        if self.raft.is_initialized().await.map_err(fatal)? {
            // A restarted one-replica group elects itself; wait for that.
            if self.voters() == BTreeSet::from([self.node_id]) {
                return self.wait_leader(Duration::from_secs(30)).await;
            }
            return Ok(());
        }
        let own = self.settings.advertise.clone().unwrap_or_else(|| bound.to_string());
        if self.settings.initial_members.is_empty() {
            self.initialize(BTreeMap::from([(self.node_id, own)])).await?;
            return self.wait_leader(Duration::from_secs(30)).await;
        }
        let this = self.clone();
        let members = self.settings.initial_members.clone();
        tokio::spawn(async move {
            if let Err(e) = this.initialize(members).await {
                tracing::error!(error = %e, "cannot form the replica group");
            }
        });
        Ok(())
    }

    /// Waits until this replica leads its group.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<()> {
        self.raft
            .wait(Some(timeout))
            .state(ServerState::Leader, "leadership")
            .await
            .map(|_| ())
            .map_err(|e| Error::NoQuorum(format!("not leader after {timeout:?}: {e}")))
    }

    /// Initializes a new group; asking again with the same members is fine.
    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> Result<()> {
        let nodes: BTreeMap<NodeId, BasicNode> =
            members.into_iter().map(|(id, addr)| (id, BasicNode { addr })).collect();
        match self.raft.initialize(nodes).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(Error::Internal(format!("cannot initialize the group: {e}"))),
        }
    }

    /// Hands `proposal` to Raft now (so proposals keep the caller's order)
    /// and returns a future of what applying it produced.
    pub async fn propose_in_order(
        &self,
        proposal: Proposal,
    ) -> Result<impl std::future::Future<Output = Result<Vec<Outcome>>> + Send + 'static> {
        let answer = self.raft.client_write_ff(Arc::new(proposal)).await.map_err(fatal)?;
        Ok(async move {
            match answer.await {
                Ok(Ok(response)) => Ok(response.data.outcomes),
                Ok(Err(ClientWriteError::ForwardToLeader(f))) => Err(not_leader(&f)),
                Ok(Err(e)) => Err(Error::Internal(format!("replication refused the write: {e}"))),
                // The node stopped before answering.
                Err(_) => Err(Error::ShuttingDown),
            }
        })
    }

    /// Waits until a read here sees every write acknowledged before the call
    /// began: confirms leadership with a quorum and waits for the apply.
    pub async fn linearizable(&self) -> Result<()> {
        self.reads.confirm(&self.raft).await
    }

    /// Whether this replica currently leads its group.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// The "not leader" rejection naming the leader this replica knows.
    pub fn not_leader_here(&self) -> Error {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics
            .current_leader
            .and_then(|id| metrics.membership_config.membership().get_node(&id).map(|n| n.addr.clone()));
        Error::Rejected(Rejection::NotLeader { leader })
    }

    /// Why this replica's Raft stopped, if it did: a fatal error (a panic in
    /// the apply path, a storage error) or a shutdown. It then commits and
    /// applies nothing more, though the process still answers.
    pub fn stopped(&self) -> Option<String> {
        let metrics = self.raft.metrics();
        if let Err(fatal) = &metrics.borrow().running_state {
            return Some(match fatal {
                openraft::error::Fatal::Stopped => "shut down".to_string(),
                other => other.to_string(),
            });
        }
        // The core drops the metrics sender when its task ends, a panic included.
        if metrics.has_changed().is_err() {
            return Some("the Raft core task ended".into());
        }
        None
    }

    /// Voter ids of the current membership.
    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.raft.metrics().borrow().membership_config.membership().voter_ids().collect()
    }

    /// Stops the Raft node.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "Raft did not stop cleanly");
        }
    }
}

/// Maps openraft's "forward to leader" to the typed rejection gateways follow.
pub fn not_leader(f: &ForwardToLeader<NodeId, BasicNode>) -> Error {
    Error::Rejected(Rejection::NotLeader { leader: f.leader_node.as_ref().map(|n| n.addr.clone()) })
}

/// openraft stopped: the replica is going away.
pub fn fatal(e: impl std::fmt::Display) -> Error {
    tracing::warn!(error = %e, "Raft stopped");
    Error::ShuttingDown
}

/// Shares one leadership confirmation among reads that arrive together: a
/// read waits for a round that *started* after it arrived (then the round's
/// read index covers every write acknowledged before the read).
#[derive(Default)]
struct ReadBarrier {
    requested: AtomicU64,
    confirmed: tokio::sync::Mutex<u64>,
}

impl ReadBarrier {
    async fn confirm(&self, raft: &ShardRaft) -> Result<()> {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut confirmed = self.confirmed.lock().await;
        if *confirmed >= ticket {
            return Ok(());
        }
        let covers = self.requested.load(Ordering::SeqCst);
        match raft.ensure_linearizable().await {
            Ok(_) => {
                *confirmed = covers;
                Ok(())
            }
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => Err(not_leader(&f)),
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => Err(Error::NoQuorum(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(fatal(e)),
        }
    }
}
