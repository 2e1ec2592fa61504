//! The deterministic step of the write path: what every replica does with a
//! committed proposal. It checks compare-and-set conditions, assigns each
//! committed transaction the next sequence number (which is also the version
//! of every value it writes) and commits the whole proposal — with the Raft
//! log position it came from — as one RocksDB `WriteBatch`, so a crash never
//! leaves half a proposal applied or an applied one unrecorded.
//!
//! Every input comes from the proposal (including the clock, stamped by the
//! leader), so every replica derives the same data, the same sequence
//! numbers and the same search outbox from the same log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use omnishard_common::stored::Space;
use rocksdb::{WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{show_key, Error, Result};
use crate::files::ops::Stored;
use crate::files::write::{self as files_write, FilesCommitted, FilesTxn};
use crate::graph::write::{self as graph_write, GraphCommitted, GraphTxn};
use crate::migrate::{self, MigrationState, Moving, Record, WriteCheck};
use crate::search::write::{self as search_write, AdminOp, SearchTxn};
use crate::store::{Store, CF_KV, CF_META, META_LAST_SEQ, META_TOPOLOGY};

/// `meta` key holding the Raft position the data reflects (see [`crate::raft`]).
pub const META_RAFT_APPLIED: &[u8] = b"raft_applied";

/// One mutation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        expires_at_ms: u64,
        expected_version: Option<u64>,
    },
    Delete {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        expected_version: Option<u64>,
    },
}

impl Op {
    /// The user key the op touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

/// Mutations of one namespace that commit together or not at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub namespace: String,
    pub ops: Vec<Op>,
}

/// A committed transaction: its sequence number (= the version of every
/// value it wrote) and, per op, whether the key existed before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub seq: u64,
    pub existed: Vec<bool>,
}

/// Chunk bytes to store (content-addressed; already verified by the leader).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkWrite {
    pub namespace: String,
    pub compress: bool,
    #[serde(with = "crate::raft::wire::protos")]
    pub chunks: Vec<omnishard_proto::v1::ChunkData>,
}

/// One request of a proposal, without its reply channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Work {
    /// Independent KV transactions; each commits or fails on its own.
    Txns(Vec<Txn>),
    /// One metadata entry (the installed topology).
    Meta {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Graph transactions commit on their own: they may scan what they delete.
    Graph(GraphTxn),
    /// Document writes share proposals with KV transactions.
    Search(SearchTxn),
    /// File mutations commit on their own: a release scans the claims it drops.
    Files(FilesTxn),
    /// Index definitions commit on their own.
    SearchAdmin(AdminOp),
    /// Chunk bytes commit on their own: they are large.
    Chunks(ChunkWrite),
    /// KV records copied from another shard (scale-out); deletes when `value` is `None`.
    Ingest(Vec<Record>),
    /// Drops migration marks whose record was shipped, unless rewritten since.
    MigrateAck(Vec<Record>),
    /// Drops every migration mark and the migration state.
    MigrateClear,
}

impl Work {
    /// Whether the work must be the only one of its proposal.
    pub fn goes_alone(&self) -> bool {
        matches!(
            self,
            Work::Graph(_)
                | Work::SearchAdmin(_)
                | Work::Files(_)
                | Work::Chunks(_)
                | Work::Ingest(_)
                | Work::MigrateAck(_)
                | Work::MigrateClear
        )
    }

    /// How many transactions the work counts for in a group.
    pub fn weight(&self) -> usize {
        match self {
            Work::Txns(txns) => txns.len().max(1),
            _ => 1,
        }
    }
}

/// One Raft log entry: work that commits together, and the leader's clock
/// when it proposed it (expiry checks use it, so replicas agree).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub now_ms: u64,
    pub work: Vec<Work>,
}

/// What applying one [`Work`] produced.
#[derive(Debug)]
pub enum Outcome {
    Txns(Vec<Result<Committed>>),
    Graph(Result<GraphCommitted>),
    Search(Result<Committed>),
    Files(Result<FilesCommitted>),
    Chunks(Result<Stored>),
    Done(Result<()>),
}

impl Outcome {
    /// The outcome of `work` when its proposal could not be committed.
    fn failed(work: &Work, err: &Error) -> Outcome {
        let failed = || Error::Internal(format!("commit failed: {err}"));
        match work {
            Work::Txns(txns) => Outcome::Txns(txns.iter().map(|_| Err(failed())).collect()),
            Work::Graph(_) => Outcome::Graph(Err(failed())),
            Work::Search(_) => Outcome::Search(Err(failed())),
            Work::Files(_) => Outcome::Files(Err(failed())),
            Work::Chunks(_) => Outcome::Chunks(Err(failed())),
            Work::Meta { .. } | Work::SearchAdmin(_) | Work::Ingest(_) | Work::MigrateAck(_) | Work::MigrateClear => {
                Outcome::Done(Err(failed()))
            }
        }
    }
}

/// In-memory state that must follow what was applied, on every replica.
pub trait Effects: Send + Sync {
    /// A topology was committed (encoded `InstallTopologyRequest`).
    fn topology_installed(&self, encoded: &[u8]);
    /// An index definition change was committed.
    fn search_admin(&self, op: &AdminOp);
    /// The data was replaced by a snapshot.
    fn data_replaced(&self);
}

/// Applies proposals to the shard's RocksDB. Only the state machine calls it,
/// one proposal at a time.
pub struct Executor {
    store: Store,
    /// fsync every batch; off when a Raft log already holds the data durably.
    sync: bool,
    last_seq: Arc<AtomicU64>,
    effects: Arc<dyn Effects>,
    /// The scale-out migration this shard is a source of: marks and fence.
    migration: Arc<MigrationState>,
}

impl Executor {
    /// An executor over `store`; `last_seq` starts at the store's last sequence.
    pub fn new(
        store: Store,
        sync: bool,
        last_seq: Arc<AtomicU64>,
        effects: Arc<dyn Effects>,
        migration: Arc<MigrationState>,
    ) -> Executor {
        Executor { store, sync, last_seq, effects, migration }
    }

    /// The store it writes.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The shared counter of the last committed sequence (published after each commit).
    pub fn last_seq_handle(&self) -> Arc<AtomicU64> {
        self.last_seq.clone()
    }

    /// Follows data replaced by a snapshot: sequence, topology, indexes.
    pub fn data_replaced(&self) -> Result<()> {
        self.last_seq.store(self.store.last_seq()?, Ordering::Release);
        if let Some(topology) = self.store.get_cf(CF_META, META_TOPOLOGY)? {
            self.effects.topology_installed(&topology);
        }
        self.migration.reload(&self.store)?;
        self.effects.data_replaced();
        Ok(())
    }

    /// Records the Raft position of an entry that carries no work.
    pub fn record_applied(&self, applied: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.store.cf(CF_META)?, META_RAFT_APPLIED, applied);
        self.write(batch)
    }

    /// Applies `proposal`, recording `applied` (the Raft position) in the same
    /// batch. Refused work (a failed condition) is an `Err` inside its
    /// [`Outcome`]; the outer error means the disk failed, and nothing of the
    /// proposal (nor its position) was written.
    pub fn execute(&self, proposal: &Proposal, applied: &[u8]) -> Result<Vec<Outcome>> {
        let alone = proposal.work.len() == 1 && proposal.work[0].goes_alone();
        if !alone && proposal.work.iter().any(Work::goes_alone) {
            // The proposer never builds one; refuse it the same way everywhere.
            let err = Error::Internal("a proposal mixes work that must commit alone".into());
            self.record_applied(applied)?;
            return Ok(proposal.work.iter().map(|w| Outcome::failed(w, &err)).collect());
        }
        let now = proposal.now_ms;
        if alone {
            return Ok(vec![self.execute_alone(&proposal.work[0], now, applied)?]);
        }
        self.execute_group(&proposal.work, now, applied)
    }

    fn execute_alone(&self, work: &Work, now: u64, applied: &[u8]) -> Result<Outcome> {
        let store = &self.store;
        let outcome = match work {
            Work::Graph(txn) => Outcome::Graph(self.commit_alone(applied, |seq, batch| {
                let (committed, changed) = graph_write::stage(store, txn, seq, now, batch)?;
                self.mark_graph(&changed, seq, batch)?;
                Ok(committed)
            })?),
            Work::Files(txn) => Outcome::Files(
                self.commit_alone(applied, |seq, batch| files_write::stage(store, txn, seq, now, batch))?,
            ),
            Work::Chunks(chunks) => Outcome::Chunks(self.commit_unsequenced(applied, |batch| {
                files_write::stage_chunks(store, &chunks.namespace, chunks.compress, &chunks.chunks, batch)
            })?),
            Work::SearchAdmin(op) => {
                let done = self.commit_unsequenced(applied, |batch| search_write::stage_admin(store, op, batch))?;
                if done.is_ok() {
                    self.effects.search_admin(op);
                }
                Outcome::Done(done)
            }
            Work::Ingest(records) => Outcome::Done(self.commit_ingest(applied, records)?),
            Work::MigrateAck(marks) => {
                Outcome::Done(self.commit_unsequenced(applied, |batch| self.stage_ack(marks, batch))?)
            }
            Work::MigrateClear => {
                let done = self.commit_unsequenced(applied, |batch| {
                    let meta = store.cf(CF_META)?;
                    for space in Space::ALL {
                        let prefix = migrate::mark_prefix(space);
                        let end = codec::prefix_end(prefix).unwrap_or_default();
                        batch.delete_range_cf(meta, prefix, &end);
                    }
                    batch.delete_cf(meta, migrate::META_MIGRATION);
                    Ok(())
                })?;
                if done.is_ok() {
                    self.migration.follow(b"")?;
                }
                Outcome::Done(done)
            }
            Work::Txns(_) | Work::Search(_) | Work::Meta { .. } => unreachable_group(work),
        };
        if outcome_failed(&outcome) {
            // The work was refused; the entry is still applied.
            self.record_applied(applied)?;
        }
        Ok(outcome)
    }

    fn execute_group(&self, group: &[Work], now: u64, applied: &[u8]) -> Result<Vec<Outcome>> {
        let start_seq = self.last_seq.load(Ordering::Acquire);
        let mut next_seq = start_seq;
        let mut batch = WriteBatch::default();
        let mut overlay: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut search_overlay = search_write::Overlay::new();
        let mut outcomes = Vec::with_capacity(group.len());
        let mut topology = None;
        let mut migration = None;
        let moving = self.migration.current();
        for work in group {
            outcomes.push(match work {
                Work::Txns(txns) => Outcome::Txns(
                    txns.iter()
                        .map(|txn| self.stage(txn, moving.as_deref(), &mut next_seq, &mut overlay, &mut batch, now))
                        .collect(),
                ),
                Work::Search(txn) => {
                    let seq = next_seq + 1;
                    let staged = search_write::stage(&self.store, txn, seq, &mut search_overlay, &mut batch);
                    if staged.is_ok() {
                        next_seq = seq;
                    }
                    Outcome::Search(staged.map(|_| Committed { seq, existed: Vec::new() }))
                }
                Work::Meta { key, value } => Outcome::Done(self.store.cf(CF_META).map(|cf| {
                    batch.put_cf(cf, key, value);
                    if key.as_slice() == META_TOPOLOGY {
                        topology = Some(value.clone());
                    }
                    if key.as_slice() == migrate::META_MIGRATION {
                        migration = Some(value.clone());
                    }
                })),
                _ => unreachable_group(work),
            });
        }
        self.finish(batch, next_seq, start_seq, applied)?;
        self.last_seq.store(next_seq, Ordering::Release);
        if let Some(topology) = topology {
            self.effects.topology_installed(&topology);
        }
        if let Some(migration) = migration {
            self.migration.follow(&migration)?;
        }
        Ok(outcomes)
    }

    /// Stores copied records. Their versions were assigned by the source, so
    /// the sequence moves past the highest one: versions never go backwards.
    /// Every record is checked first, identically on every replica (the
    /// leader checked them too, but the log is the authority): one that
    /// would make its key unreadable or carry a version past
    /// [`migrate::MAX_INGEST_VERSION`] refuses the whole batch, so the
    /// sequence never wraps.
    fn commit_ingest(&self, applied: &[u8], records: &[Record]) -> Result<Result<()>> {
        let start_seq = self.last_seq.load(Ordering::Acquire);
        let mut top = start_seq;
        for (i, record) in records.iter().enumerate() {
            match migrate::checked_version(record) {
                Ok(version) => top = top.max(version),
                Err(reason) => {
                    let reason = format!("records[{i}] (key {:?}): {reason}", show_key(&record.key));
                    return Ok(Err(Error::InvalidArgument(omnishard_common::Error::invalid("records", reason))));
                }
            }
        }
        let mut batch = WriteBatch::default();
        for record in records {
            let cf = self.store.cf(migrate::cf_of(record.space))?;
            match &record.value {
                Some(value) => batch.put_cf(cf, &record.key, value),
                None => batch.delete_cf(cf, &record.key),
            }
        }
        self.finish(batch, top, start_seq, applied)?;
        self.last_seq.store(top, Ordering::Release);
        Ok(Ok(()))
    }

    /// Deletes the marks of shipped records whose mark did not change since.
    fn stage_ack(&self, marks: &[Record], batch: &mut WriteBatch) -> Result<()> {
        let meta = self.store.cf(CF_META)?;
        let keys: Vec<Vec<u8>> = marks.iter().map(|r| migrate::mark_key(r.space, &r.key)).collect();
        let current = self.store.multi_get_cf(CF_META, &keys)?;
        for ((key, record), now) in keys.iter().zip(marks).zip(current) {
            if now.as_deref() == Some(record.mark.to_be_bytes().as_slice()) {
                batch.delete_cf(meta, key);
            }
        }
        Ok(())
    }

    /// Marks the graph keys a transaction changed that a running migration
    /// moves (each belongs to a vertex), or refuses the transaction when
    /// they are fenced, as [`Executor::stage`] does for KV keys.
    fn mark_graph(&self, changed: &[Vec<u8>], seq: u64, batch: &mut WriteBatch) -> Result<()> {
        let Some(moving) = self.migration.current() else { return Ok(()) };
        let meta = self.store.cf(CF_META)?;
        for key in changed {
            let Some((ns, vertex)) = Space::Graph.owner_of(key) else { continue };
            if self.migration.check_write(Some(&moving), ns, vertex)? == WriteCheck::Mark {
                batch.put_cf(meta, migrate::mark_key(Space::Graph, key), seq.to_be_bytes());
            }
        }
        Ok(())
    }

    /// Commits what `stage` adds to a fresh batch under the next sequence.
    /// Outer error: the disk failed; inner: the work was refused.
    fn commit_alone<T>(
        &self,
        applied: &[u8],
        stage: impl FnOnce(u64, &mut WriteBatch) -> Result<T>,
    ) -> Result<Result<T>> {
        let start_seq = self.last_seq.load(Ordering::Acquire);
        let seq = start_seq + 1;
        let mut batch = WriteBatch::default();
        let committed = match stage(seq, &mut batch) {
            Ok(committed) => committed,
            Err(refused) => return Ok(Err(refused)),
        };
        self.finish(batch, seq, start_seq, applied)?;
        self.last_seq.store(seq, Ordering::Release);
        Ok(Ok(committed))
    }

    /// Commits what `stage` adds to a fresh batch, without a new sequence.
    fn commit_unsequenced<T>(
        &self,
        applied: &[u8],
        stage: impl FnOnce(&mut WriteBatch) -> Result<T>,
    ) -> Result<Result<T>> {
        let seq = self.last_seq.load(Ordering::Acquire);
        let mut batch = WriteBatch::default();
        let done = match stage(&mut batch) {
            Ok(done) => done,
            Err(refused) => return Ok(Err(refused)),
        };
        self.finish(batch, seq, seq, applied)?;
        Ok(Ok(done))
    }

    /// Checks one transaction against the state so far and, if every
    /// condition holds, adds its writes to `batch` under the next sequence.
    fn stage(
        &self,
        txn: &Txn,
        moving: Option<&Moving>,
        next_seq: &mut u64,
        overlay: &mut HashMap<Vec<u8>, u64>,
        batch: &mut WriteBatch,
        now: u64,
    ) -> Result<Committed> {
        let cf = self.store.cf(CF_KV)?;
        let seq = *next_seq + 1;
        // Versions this transaction would leave behind, checked before any
        // of its writes reach the batch so a conflict leaves no trace.
        let mut tentative: Vec<(Vec<u8>, u64)> = Vec::with_capacity(txn.ops.len());
        let mut existed = Vec::with_capacity(txn.ops.len());
        let mut marked = Vec::new();
        for op in &txn.ops {
            // Scale-out: a fenced moving key refuses the whole transaction.
            let check = self.migration.check_write(moving, &txn.namespace, op.key())?;
            let stored_key = codec::encode_key(&txn.namespace, op.key());
            if check == WriteCheck::Mark {
                marked.push(migrate::mark_key(Space::Kv, &stored_key));
            }
            let (expected, needs_current) = match op {
                Op::Put { expected_version, .. } => (*expected_version, expected_version.is_some()),
                Op::Delete { expected_version, .. } => (*expected_version, true),
            };
            let current = if needs_current {
                match tentative.iter().rev().find(|(k, _)| *k == stored_key) {
                    Some((_, v)) => *v,
                    None => match overlay.get(&stored_key) {
                        Some(v) => *v,
                        None => self.store.current_version(&stored_key, now)?,
                    },
                }
            } else {
                0
            };
            if let Some(expected) = expected {
                if expected != current {
                    return Err(Error::VersionConflict { key: show_key(op.key()), expected, actual: current });
                }
            }
            existed.push(current != 0);
            let after = if matches!(op, Op::Put { .. }) { seq } else { 0 };
            tentative.push((stored_key, after));
        }
        for (op, (stored_key, after)) in txn.ops.iter().zip(tentative) {
            match op {
                Op::Put { value, expires_at_ms, .. } => {
                    batch.put_cf(cf, &stored_key, codec::encode_value(seq, *expires_at_ms, value))
                }
                Op::Delete { .. } => batch.delete_cf(cf, &stored_key),
            }
            overlay.insert(stored_key, after);
        }
        if !marked.is_empty() {
            let meta = self.store.cf(CF_META)?;
            for mark in marked {
                batch.put_cf(meta, mark, seq.to_be_bytes());
            }
        }
        *next_seq = seq;
        Ok(Committed { seq, existed })
    }

    /// Commits the staged batch with the new last sequence and the Raft position.
    fn finish(&self, mut batch: WriteBatch, next_seq: u64, start_seq: u64, applied: &[u8]) -> Result<()> {
        let meta = self.store.cf(CF_META)?;
        if next_seq != start_seq {
            batch.put_cf(meta, META_LAST_SEQ, next_seq.to_be_bytes());
        }
        batch.put_cf(meta, META_RAFT_APPLIED, applied);
        self.write(batch)
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(self.sync);
        self.store.db().write_opt(batch, &opts)?;
        Ok(())
    }
}

fn outcome_failed(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Graph(r) => r.is_err(),
        Outcome::Files(r) => r.is_err(),
        Outcome::Chunks(r) => r.is_err(),
        Outcome::Done(r) => r.is_err(),
        Outcome::Search(r) => r.is_err(),
        Outcome::Txns(_) => false,
    }
}

/// Group work in the alone path (or the reverse) is a bug; report it instead of panicking.
fn unreachable_group(work: &Work) -> Outcome {
    Outcome::failed(work, &Error::Internal("work applied on the wrong path".into()))
}
