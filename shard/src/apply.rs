//! The single door of every mutation: requests queue here, are grouped into
//! [`Proposal`]s (group commit: what queued while the previous proposals
//! replicated shares the next one) and proposed to the shard's Raft group.
//! A request is answered once its proposal is committed on a majority and
//! applied here by the [`crate::execute::Executor`], which assigns sequence
//! numbers and checks compare-and-set conditions identically on every replica.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::codec;
use crate::error::{Error, Result};
use crate::execute::{ChunkWrite, Outcome, Proposal, Work};
use crate::files::ops::Stored;
use crate::files::write::{FilesCommitted, FilesTxn};
use crate::graph::write::{GraphCommitted, GraphTxn};
use crate::raft::Replication;
use crate::search::write::{AdminOp, SearchTxn};

pub use crate::execute::{Committed, Op, Txn};

/// A request waiting for its proposal.
struct Job {
    work: Work,
    reply: oneshot::Sender<Result<Outcome>>,
}

/// Handle to the proposer task; [`Applier::shutdown`] (or drop) stops it.
pub struct Applier {
    queue: mpsc::Sender<Job>,
    last_seq: Arc<AtomicU64>,
}

impl Drop for Applier {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Applier {
    /// Starts proposing to `replication`. `last_seq` is the executor's
    /// counter; `max_group` bounds the transactions of one proposal,
    /// `queue_len` the requests waiting, `inflight` the proposals replicating at once.
    pub fn start(
        replication: Arc<Replication>,
        last_seq: Arc<AtomicU64>,
        max_group: usize,
        queue_len: usize,
        inflight: usize,
    ) -> Applier {
        let (queue, jobs) = mpsc::channel(queue_len.max(1));
        let permits = Arc::new(Semaphore::new(inflight.max(1)));
        tokio::spawn(propose_loop(replication, jobs, max_group.max(1), permits));
        Applier { queue, last_seq }
    }

    /// Stops taking work; queued requests are still proposed.
    pub fn shutdown(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.queue, closed));
    }

    /// The shared counter of the last applied sequence.
    pub fn last_seq_handle(&self) -> Arc<AtomicU64> {
        self.last_seq.clone()
    }

    /// The last applied sequence number.
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    /// Applies independent transactions; each result says whether that one committed.
    pub async fn apply(&self, txns: Vec<Txn>) -> Result<Vec<Result<Committed>>> {
        match self.submit(Work::Txns(txns)).await? {
            Outcome::Txns(results) => Ok(results),
            other => Err(mismatch(&other)),
        }
    }

    /// Applies one graph transaction.
    pub async fn apply_graph(&self, txn: GraphTxn) -> Result<GraphCommitted> {
        match self.submit(Work::Graph(txn)).await? {
            Outcome::Graph(result) => result,
            other => Err(mismatch(&other)),
        }
    }

    /// Applies one transaction of document writes; `existed` is left empty.
    pub async fn apply_search(&self, txn: SearchTxn) -> Result<Committed> {
        match self.submit(Work::Search(txn)).await? {
            Outcome::Search(result) => result,
            other => Err(mismatch(&other)),
        }
    }

    /// Applies one file mutation.
    pub async fn apply_files(&self, txn: FilesTxn) -> Result<FilesCommitted> {
        match self.submit(Work::Files(txn)).await? {
            Outcome::Files(result) => result,
            other => Err(mismatch(&other)),
        }
    }

    /// Stores chunk bytes.
    pub async fn apply_chunks(&self, chunks: ChunkWrite) -> Result<Stored> {
        match self.submit(Work::Chunks(chunks)).await? {
            Outcome::Chunks(result) => result,
            other => Err(mismatch(&other)),
        }
    }

    /// Applies one index definition change.
    pub async fn apply_search_admin(&self, op: AdminOp) -> Result<()> {
        match self.submit(Work::SearchAdmin(op)).await? {
            Outcome::Done(result) => result,
            other => Err(mismatch(&other)),
        }
    }

    /// Applies scale-out work (ingest, mark acks, clearing) that answers only done or failed.
    pub async fn apply_migration(&self, work: Work) -> Result<()> {
        match self.submit(work).await? {
            Outcome::Done(result) => result,
            other => Err(mismatch(&other)),
        }
    }

    /// Durably writes one metadata entry through the same path as data.
    pub async fn put_meta(&self, key: &'static [u8], value: Vec<u8>) -> Result<()> {
        match self.submit(Work::Meta { key: key.to_vec(), value }).await? {
            Outcome::Done(result) => result,
            other => Err(mismatch(&other)),
        }
    }

    async fn submit(&self, work: Work) -> Result<Outcome> {
        let (reply, outcome) = oneshot::channel();
        self.queue.try_send(Job { work, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::Overloaded("the apply queue is full (apply_queue)"),
            mpsc::error::TrySendError::Closed(_) => Error::ShuttingDown,
        })?;
        outcome.await.map_err(|_| Error::ShuttingDown)?
    }
}

fn mismatch(outcome: &Outcome) -> Error {
    Error::Internal(format!("the apply path answered with the wrong outcome: {outcome:?}"))
}

/// Forms proposals from queued jobs, in queue order, and proposes them while
/// earlier ones replicate (at most `permits` at once).
async fn propose_loop(
    replication: Arc<Replication>,
    mut jobs: mpsc::Receiver<Job>,
    max_group: usize,
    permits: Arc<Semaphore>,
) {
    let mut next: Option<Job> = None;
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let first = match next.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut group = vec![first];
        if !group[0].work.goes_alone() {
            let mut weight = group[0].work.weight();
            while weight < max_group {
                match jobs.try_recv() {
                    Ok(job) if job.work.goes_alone() => {
                        next = Some(job);
                        break;
                    }
                    Ok(job) => {
                        weight += job.work.weight();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
        }
        let (work, replies): (Vec<Work>, Vec<_>) = group.into_iter().map(|job| (job.work, job.reply)).unzip();
        let pending = replication.propose_in_order(Proposal { now_ms: codec::now_ms(), work }).await;
        tokio::spawn(async move {
            let result = match pending {
                Ok(pending) => pending.await,
                Err(e) => Err(e),
            };
            deliver(replies, result);
            drop(permit);
        });
    }
}

/// Hands each job its outcome, or a copy of the proposal's error.
fn deliver(replies: Vec<oneshot::Sender<Result<Outcome>>>, result: Result<Vec<Outcome>>) {
    match result {
        Ok(outcomes) if outcomes.len() == replies.len() => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Ok(outcomes) => {
            let e = Error::Internal(format!("{} outcomes for {} requests", outcomes.len(), replies.len()));
            for reply in replies {
                let _ = reply.send(Err(e.duplicate()));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.duplicate()));
            }
        }
    }
}
