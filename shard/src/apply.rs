//! The single write path of a shard.
//!
//! Every mutation reaches RocksDB through [`Applier`]: one dedicated thread
//! that takes transactions from a bounded queue, checks compare-and-set
//! conditions, assigns each committed transaction the next sequence number
//! (which is also the version of every value it writes), and commits a whole
//! group of transactions with one `WriteBatch` and one WAL sync (group
//! commit). A transaction commits entirely or not at all; so does the group's
//! batch, which also carries the new last sequence. This is the step where a
//! Raft log will plug in later: keep it the only door.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rocksdb::{WriteBatch, WriteOptions};
use tokio::sync::{mpsc, oneshot};

use crate::codec;
use crate::error::{show_key, Error, Result};
use crate::files::write::{self as files_write, FilesCommitted, FilesTxn};
use crate::graph::write::{self as graph_write, GraphCommitted, GraphTxn};
use crate::search::write::{self as search_write, AdminOp, SearchTxn};
use crate::store::{Store, CF_KV, CF_META, META_LAST_SEQ};

/// One mutation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: Vec<u8>, value: Vec<u8>, expires_at_ms: u64, expected_version: Option<u64> },
    Delete { key: Vec<u8>, expected_version: Option<u64> },
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
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// A unit of work for the apply thread.
enum Job {
    Txns {
        txns: Vec<Txn>,
        reply: oneshot::Sender<Vec<Result<Committed>>>,
    },
    Meta {
        key: &'static [u8],
        value: Vec<u8>,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Graph transactions commit on their own: they may scan what they delete.
    Graph {
        txn: GraphTxn,
        reply: oneshot::Sender<Result<GraphCommitted>>,
    },
    /// Document writes share group commits with KV transactions.
    Search {
        txn: SearchTxn,
        reply: oneshot::Sender<Result<Committed>>,
    },
    /// File mutations commit on their own: a release scans the claims it drops.
    Files {
        txn: FilesTxn,
        reply: oneshot::Sender<Result<FilesCommitted>>,
    },
    /// Index definitions commit on their own.
    SearchAdmin {
        op: AdminOp,
        reply: oneshot::Sender<Result<()>>,
    },
}

impl Job {
    /// Whether the job must commit alone rather than in a group.
    fn goes_alone(&self) -> bool {
        matches!(self, Job::Graph { .. } | Job::SearchAdmin { .. } | Job::Files { .. })
    }
}

/// Handle to the apply thread; [`Applier::shutdown`] (or drop) stops it.
pub struct Applier {
    queue: mpsc::Sender<Job>,
    last_seq: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Applier {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Applier {
    /// Starts the apply thread over `store`, continuing from its last sequence.
    pub fn start(store: Store, sync: bool, max_group: usize, queue_len: usize) -> Result<Applier> {
        let last_seq = Arc::new(AtomicU64::new(store.last_seq()?));
        let (queue, jobs) = mpsc::channel(queue_len.max(1));
        let writer = Writer { store, sync, max_group: max_group.max(1), last_seq: last_seq.clone() };
        let thread = std::thread::Builder::new()
            .name("omnishard-apply".into())
            .spawn(move || writer.run(jobs))
            .map_err(|e| Error::Internal(format!("cannot start apply thread: {e}")))?;
        Ok(Applier { queue, last_seq, thread: Some(thread) })
    }

    /// Stops taking work, lets the thread commit what is queued, and waits
    /// for it, so the database is closed before the process exits (RocksDB
    /// must not be torn down by exit handlers while a thread still uses it).
    pub fn shutdown(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.queue, closed));
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the apply thread panicked");
            }
        }
    }

    /// The shared counter of the last committed sequence (published after each commit).
    pub fn last_seq_handle(&self) -> Arc<AtomicU64> {
        self.last_seq.clone()
    }

    /// The last committed sequence number.
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    /// Applies independent transactions; each result says whether that one committed.
    pub async fn apply(&self, txns: Vec<Txn>) -> Result<Vec<Result<Committed>>> {
        let (reply, outcome) = oneshot::channel();
        self.enqueue(Job::Txns { txns, reply })?;
        outcome.await.map_err(|_| Error::ShuttingDown)
    }

    /// Applies one graph transaction.
    pub async fn apply_graph(&self, txn: GraphTxn) -> Result<GraphCommitted> {
        let (reply, outcome) = oneshot::channel();
        self.enqueue(Job::Graph { txn, reply })?;
        outcome.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Applies one transaction of document writes; `existed` is left empty.
    pub async fn apply_search(&self, txn: SearchTxn) -> Result<Committed> {
        let (reply, outcome) = oneshot::channel();
        self.enqueue(Job::Search { txn, reply })?;
        outcome.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Applies one file mutation.
    pub async fn apply_files(&self, txn: FilesTxn) -> Result<FilesCommitted> {
        let (reply, outcome) = oneshot::channel();
        self.enqueue(Job::Files { txn, reply })?;
        outcome.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Applies one index definition change.
    pub async fn apply_search_admin(&self, op: AdminOp) -> Result<()> {
        let (reply, outcome) = oneshot::channel();
        self.enqueue(Job::SearchAdmin { op, reply })?;
        outcome.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Durably writes one metadata entry through the same path as data.
    pub async fn put_meta(&self, key: &'static [u8], value: Vec<u8>) -> Result<()> {
        let (reply, outcome) = oneshot::channel();
        self.enqueue(Job::Meta { key, value, reply })?;
        outcome.await.map_err(|_| Error::ShuttingDown)?
    }

    fn enqueue(&self, job: Job) -> Result<()> {
        self.queue.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::Overloaded("the apply queue is full (apply_queue)"),
            mpsc::error::TrySendError::Closed(_) => Error::ShuttingDown,
        })
    }
}

/// State owned by the apply thread.
struct Writer {
    store: Store,
    sync: bool,
    max_group: usize,
    last_seq: Arc<AtomicU64>,
}

impl Writer {
    fn run(self, mut jobs: mpsc::Receiver<Job>) {
        let mut next = None;
        while let Some(first) = next.take().or_else(|| jobs.blocking_recv()) {
            match first {
                Job::Graph { txn, reply } => {
                    let _ = reply.send(self.commit_graph(&txn));
                    continue;
                }
                Job::SearchAdmin { op, reply } => {
                    let _ = reply.send(self.commit_search_admin(&op));
                    continue;
                }
                Job::Files { txn, reply } => {
                    let _ = reply.send(self.commit_files(&txn));
                    continue;
                }
                _ => {}
            }
            // Group commit: whatever queued up while the previous sync ran
            // shares the next one (up to a job that goes alone).
            let mut group = vec![first];
            let mut txn_count = group_txns(&group);
            while txn_count < self.max_group {
                match jobs.try_recv() {
                    Ok(job) if job.goes_alone() => {
                        next = Some(job);
                        break;
                    }
                    Ok(job) => {
                        txn_count += group_txns(std::slice::from_ref(&job));
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
    }

    fn commit_group(&self, group: Vec<Job>) {
        let start_seq = self.last_seq.load(Ordering::Acquire);
        let mut next_seq = start_seq;
        let mut batch = WriteBatch::default();
        let mut overlay: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut search_overlay = search_write::Overlay::new();
        let mut outcomes: Vec<Vec<Result<Committed>>> = Vec::with_capacity(group.len());
        let now = codec::now_ms();
        for job in &group {
            match job {
                Job::Txns { txns, .. } => {
                    let results =
                        txns.iter().map(|txn| self.stage(txn, &mut next_seq, &mut overlay, &mut batch, now)).collect();
                    outcomes.push(results);
                }
                Job::Search { txn, .. } => {
                    let seq = next_seq + 1;
                    let staged = search_write::stage(&self.store, txn, seq, &mut search_overlay, &mut batch);
                    if staged.is_ok() {
                        next_seq = seq;
                    }
                    outcomes.push(vec![staged.map(|_| Committed { seq, existed: Vec::new() })]);
                }
                // `run` never puts these in a group.
                Job::Graph { .. } | Job::SearchAdmin { .. } | Job::Files { .. } => outcomes.push(Vec::new()),
                Job::Meta { key, value, .. } => match self.store.cf(CF_META) {
                    Ok(cf) => {
                        batch.put_cf(cf, key, value);
                        outcomes.push(Vec::new());
                    }
                    Err(e) => outcomes.push(vec![Err(e)]),
                },
            }
        }
        let write = self.write(batch, next_seq, start_seq);
        if write.is_ok() {
            self.last_seq.store(next_seq, Ordering::Release);
        }
        for (job, results) in group.into_iter().zip(outcomes) {
            reply(job, results, &write);
        }
    }

    /// Stages and commits one graph transaction under the next sequence.
    fn commit_graph(&self, txn: &GraphTxn) -> Result<GraphCommitted> {
        self.commit_alone(|seq, batch| graph_write::stage(&self.store, txn, seq, codec::now_ms(), batch))
    }

    /// Stages and commits one file mutation under the next sequence.
    fn commit_files(&self, txn: &FilesTxn) -> Result<FilesCommitted> {
        self.commit_alone(|seq, batch| files_write::stage(&self.store, txn, seq, codec::now_ms(), batch))
    }

    /// Commits what `stage` adds to a fresh batch under the next sequence.
    fn commit_alone<T>(&self, stage: impl FnOnce(u64, &mut WriteBatch) -> Result<T>) -> Result<T> {
        let start_seq = self.last_seq.load(Ordering::Acquire);
        let seq = start_seq + 1;
        let mut batch = WriteBatch::default();
        let committed = stage(seq, &mut batch)?;
        self.write(batch, seq, start_seq)?;
        self.last_seq.store(seq, Ordering::Release);
        Ok(committed)
    }

    /// Stages and commits one index definition change (no sequence number).
    fn commit_search_admin(&self, op: &AdminOp) -> Result<()> {
        let mut batch = WriteBatch::default();
        search_write::stage_admin(&self.store, op, &mut batch)?;
        let seq = self.last_seq.load(Ordering::Acquire);
        self.write(batch, seq, seq)
    }

    /// Checks one transaction against the state so far and, if every
    /// condition holds, adds its writes to `batch` under the next sequence.
    fn stage(
        &self,
        txn: &Txn,
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
        for op in &txn.ops {
            let stored_key = codec::encode_key(&txn.namespace, op.key());
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
        *next_seq = seq;
        Ok(Committed { seq, existed })
    }

    /// Commits the staged batch together with the new last sequence.
    fn write(&self, mut batch: WriteBatch, next_seq: u64, start_seq: u64) -> Result<()> {
        if next_seq != start_seq {
            batch.put_cf(self.store.cf(CF_META)?, META_LAST_SEQ, next_seq.to_be_bytes());
        }
        if batch.is_empty() {
            return Ok(());
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(self.sync);
        self.store.db().write_opt(batch, &opts)?;
        Ok(())
    }
}

fn group_txns(jobs: &[Job]) -> usize {
    jobs.iter().map(|j| if let Job::Txns { txns, .. } = j { txns.len() } else { 1 }).sum()
}

/// Sends a job its results, or the group's write error when the batch failed.
fn reply(job: Job, results: Vec<Result<Committed>>, write: &Result<()>) {
    let failed = |e: &Error| Error::Internal(format!("group commit failed: {e}"));
    match job {
        Job::Txns { reply, .. } => {
            let results = match write {
                Ok(()) => results,
                // Nothing of the group reached disk: every transaction failed.
                Err(e) => results.into_iter().map(|_| Err(failed(e))).collect(),
            };
            let _ = reply.send(results);
        }
        Job::Search { reply, .. } => {
            let result = match (write, results.into_iter().next()) {
                (Err(e), _) => Err(failed(e)),
                (Ok(()), Some(result)) => result,
                (Ok(()), None) => Err(Error::Internal("search job without outcome".into())),
            };
            let _ = reply.send(result);
        }
        Job::Graph { reply, .. } => {
            let _ = reply.send(Err(Error::Internal("graph job in a KV group".into())));
        }
        Job::SearchAdmin { reply, .. } => {
            let _ = reply.send(Err(Error::Internal("index definition in a KV group".into())));
        }
        Job::Files { reply, .. } => {
            let _ = reply.send(Err(Error::Internal("file mutation in a KV group".into())));
        }
        Job::Meta { reply, .. } => {
            let result = match (write, results.into_iter().next()) {
                (Err(e), _) => Err(failed(e)),
                (Ok(()), Some(Err(e))) => Err(e),
                (Ok(()), _) => Ok(()),
            };
            let _ = reply.send(result);
        }
    }
}
