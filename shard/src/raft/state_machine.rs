//! The Raft state machine: committed entries go to the [`Executor`] (the
//! shard's only write path) in log order; snapshots are dumps of RocksDB.
//!
//! The Raft position (last applied log id and membership) is written in the
//! same batch as the data it produced, so after a crash a replica knows
//! exactly which entries to apply again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, LogId, RaftSnapshotBuilder, StorageError, StorageIOError, StoredMembership};
use serde::{Deserialize, Serialize};

use super::{snapshot, wire, BasicNode, Entry, NodeId, TypeConfig};
use crate::error::Error;
use crate::execute::{Executor, Outcome, META_RAFT_APPLIED};
use crate::store::CF_META;

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// The Raft position the data reflects.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    pub log_id: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, BasicNode>,
}

/// What applying one entry answers to the `client_write` that proposed it.
///
/// Outcomes stay in the process: openraft hands them to the local caller on
/// the leader and never sends them over the network, so they are not
/// serialized (openraft only requires the type to be serializable).
#[derive(Default, Serialize, Deserialize)]
pub struct Reply {
    #[serde(skip)]
    pub outcomes: Vec<Outcome>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reply({} outcomes)", self.outcomes.len())
    }
}

fn storage_error(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

fn snapshot_error(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(None, &std::io::Error::other(e.to_string())).into()
}

/// The state machine of one replica.
pub struct StateMachine {
    executor: Arc<Executor>,
    /// Where snapshot files live (`<data>/raft-snapshots`).
    dir: PathBuf,
    applied: Applied,
    /// The file a snapshot is being received into.
    receiving: Option<PathBuf>,
}

impl StateMachine {
    /// Opens the state machine over `executor`, reading its Raft position.
    pub fn open(executor: Arc<Executor>, dir: PathBuf) -> crate::Result<StateMachine> {
        std::fs::create_dir_all(&dir).map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
        let applied = match executor.store().get_cf(CF_META, META_RAFT_APPLIED)? {
            Some(bytes) => wire::decode("meta/raft_applied", &bytes)?,
            None => Applied::default(),
        };
        // Unfinished receptions are useless after a restart.
        for path in files_in(&dir, ".part") {
            let _ = std::fs::remove_file(path);
        }
        Ok(StateMachine { executor, dir, applied, receiving: None })
    }

    fn latest_snapshot(&self) -> Option<(SnapshotMeta<NodeId, BasicNode>, PathBuf)> {
        let mut found: Vec<(SnapshotMeta<NodeId, BasicNode>, PathBuf)> = files_in(&self.dir, ".meta")
            .into_iter()
            .filter_map(|meta_path| {
                let bytes = std::fs::read(&meta_path).ok()?;
                let meta: SnapshotMeta<NodeId, BasicNode> = wire::decode("snapshot meta", &bytes).ok()?;
                let data = meta_path.with_extension("snap");
                data.exists().then_some((meta, data))
            })
            .collect();
        found.sort_by_key(|(meta, _)| meta.last_log_id.map(|l| l.index));
        found.pop()
    }
}

/// Files of `dir` whose name ends with `suffix`.
fn files_in(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(suffix)))
        .collect()
}

/// Keeps the snapshot `keep` (and its meta) and deletes older ones.
fn remove_other_snapshots(dir: &Path, keep: &Path) {
    for path in files_in(dir, ".snap").into_iter().chain(files_in(dir, ".meta")) {
        if path.with_extension("snap") != keep {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Makes `data` (already synced) the current snapshot with `meta`.
fn publish(dir: &Path, data: &Path, meta: &SnapshotMeta<NodeId, BasicNode>) -> StorageResult<PathBuf> {
    let name = format!("snapshot-{}", meta.snapshot_id);
    let final_data = dir.join(format!("{name}.snap"));
    std::fs::rename(data, &final_data).map_err(snapshot_error)?;
    let meta_bytes = wire::encode(meta).map_err(snapshot_error)?;
    let meta_tmp = dir.join(format!("{name}.meta.tmp"));
    std::fs::write(&meta_tmp, meta_bytes).map_err(snapshot_error)?;
    std::fs::rename(&meta_tmp, dir.join(format!("{name}.meta"))).map_err(snapshot_error)?;
    remove_other_snapshots(dir, &final_data);
    Ok(final_data)
}

async fn open_snapshot(meta: SnapshotMeta<NodeId, BasicNode>, path: &Path) -> StorageResult<Snapshot<TypeConfig>> {
    let file = tokio::fs::File::open(path).await.map_err(snapshot_error)?;
    Ok(Snapshot { meta, snapshot: Box::new(file) })
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        Ok((self.applied.log_id, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Reply>>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let executor = self.executor.clone();
        let mut applied = self.applied.clone();
        let (replies, applied) = tokio::task::spawn_blocking(move || {
            let mut replies = Vec::with_capacity(entries.len());
            for entry in entries {
                applied.log_id = Some(entry.log_id);
                if let EntryPayload::Membership(membership) = &entry.payload {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                }
                let position = wire::encode(&applied).map_err(storage_error)?;
                let reply = match &entry.payload {
                    EntryPayload::Normal(proposal) => {
                        Reply { outcomes: executor.execute(proposal, &position).map_err(storage_error)? }
                    }
                    EntryPayload::Blank | EntryPayload::Membership(_) => {
                        executor.record_applied(&position).map_err(storage_error)?;
                        Reply::default()
                    }
                };
                replies.push(reply);
            }
            Ok::<_, StorageError<NodeId>>((replies, applied))
        })
        .await
        .map_err(storage_error)??;
        self.applied = applied;
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { executor: self.executor.clone(), dir: self.dir.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<tokio::fs::File>> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let path = self.dir.join(format!("receiving-{nanos}.part"));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(snapshot_error)?;
        if let Some(old) = self.receiving.replace(path) {
            let _ = std::fs::remove_file(old);
        }
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> StorageResult<()> {
        snapshot.sync_all().await.map_err(snapshot_error)?;
        drop(snapshot);
        let received = self.receiving.take().ok_or_else(|| snapshot_error("no snapshot is being received"))?;
        let executor = self.executor.clone();
        let dir = self.dir.clone();
        let published = meta.clone();
        let applied = Applied { log_id: meta.last_log_id, membership: meta.last_membership.clone() };
        tokio::task::spawn_blocking(move || {
            let meta = published;
            let records = snapshot::load(executor.store(), &received).map_err(snapshot_error)?;
            // The snapshot's own position record says the same; write it anyway.
            executor.record_applied(&wire::encode(&applied).map_err(snapshot_error)?).map_err(snapshot_error)?;
            executor.data_replaced().map_err(snapshot_error)?;
            tracing::info!(records, last_log_id = ?meta.last_log_id, "snapshot installed");
            publish(&dir, &received, &meta)
        })
        .await
        .map_err(snapshot_error)??;
        self.applied = Applied { log_id: meta.last_log_id, membership: meta.last_membership.clone() };
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        match self.latest_snapshot() {
            None => Ok(None),
            Some((meta, path)) => open_snapshot(meta, &path).await.map(Some),
        }
    }
}

/// Builds a snapshot from a RocksDB snapshot of the live data.
pub struct SnapshotBuilder {
    executor: Arc<Executor>,
    dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let executor = self.executor.clone();
        let dir = self.dir.clone();
        let (meta, path) = tokio::task::spawn_blocking(move || {
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
            let tmp = dir.join(format!("building-{nanos}.part"));
            let position = snapshot::dump(executor.store(), &tmp, META_RAFT_APPLIED).map_err(snapshot_error)?;
            let applied: Applied = match position {
                Some(bytes) => wire::decode("meta/raft_applied", &bytes).map_err(snapshot_error)?,
                None => Applied::default(),
            };
            let index = applied.log_id.map(|l| l.index).unwrap_or(0);
            let term = applied.log_id.map(|l| l.leader_id.term).unwrap_or(0);
            let meta = SnapshotMeta {
                last_log_id: applied.log_id,
                last_membership: applied.membership,
                snapshot_id: format!("{term}-{index}-{nanos}"),
            };
            let path = publish(&dir, &tmp, &meta)?;
            tracing::info!(index, term, "snapshot built");
            Ok::<_, StorageError<NodeId>>((meta, path))
        })
        .await
        .map_err(snapshot_error)??;
        open_snapshot(meta, &path).await
    }
}
