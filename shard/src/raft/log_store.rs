//! The Raft log, the vote and the committed position, kept in the shard's
//! own RocksDB (column families `raft_log` and `raft_state`): one WAL, one
//! set of files to back up. Appends and votes are synced before openraft is
//! told they are durable; the state machine's own writes then need no sync.
//!
//! An append is written at once (readable when `append` returns) and synced
//! by the [`WalSyncer`] thread, which tells openraft when it is durable: Raft
//! never waits for an fsync to go on (the leader sends entries to followers
//! while its own copy syncs), and appends that queue during one fsync share
//! the next (group commit). The WAL is one sequential file, so syncing it
//! makes every earlier write durable.
//!
//! The newest entries also stay in memory ([`RecentEntries`]): the leader
//! reads each entry once per follower and once to apply it.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions};

use super::recent::RecentEntries;
use super::{wire, Entry, NodeId, TypeConfig};
use crate::store::{Store, CF_RAFT_LOG, CF_RAFT_STATE};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// The log of one replica. Cheap to clone (it shares the store).
#[derive(Clone)]
pub struct LogStore {
    store: Store,
    sync: bool,
    syncer: WalSyncer,
    /// The newest entries, read without RocksDB (shared by every clone).
    recent: Arc<Mutex<RecentEntries>>,
}

impl LogStore {
    /// `sync`: fsync appends and votes (turn off only for throwaway tests).
    pub fn new(store: Store, sync: bool) -> std::io::Result<LogStore> {
        let syncer = WalSyncer::start(store.clone())?;
        Ok(LogStore { store, sync, syncer, recent: Arc::default() })
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentEntries> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a blocking RocksDB step off the reactor.
    async fn blocking<T: Send + 'static>(
        &self,
        step: impl FnOnce(&LogStore) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || step(&this))
            .await
            .map_err(|e| StorageIOError::write_logs(&std::io::Error::other(e.to_string())).into())
            .and_then(|r| r)
    }

    fn get_state<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> StorageResult<Option<T>> {
        let read = |e: String| -> StorageError<NodeId> { StorageIOError::read(&std::io::Error::other(e)).into() };
        let cf = self.store.cf(CF_RAFT_STATE).map_err(|e| read(e.to_string()))?;
        match self.store.db().get_cf(cf, key).map_err(|e| read(e.to_string()))? {
            None => Ok(None),
            Some(bytes) => {
                wire::decode(&String::from_utf8_lossy(key), &bytes).map(Some).map_err(|e| read(e.to_string()))
            }
        }
    }

    fn put_state<T: serde::Serialize>(&self, key: &[u8], value: &T, sync: bool) -> StorageResult<()> {
        let write = |e: String| -> StorageError<NodeId> { StorageIOError::write(&std::io::Error::other(e)).into() };
        let bytes = wire::encode(value).map_err(|e| write(e.to_string()))?;
        let cf = self.store.cf(CF_RAFT_STATE).map_err(|e| write(e.to_string()))?;
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.store.db().put_cf_opt(cf, key, bytes, &opts).map_err(|e| write(e.to_string()))
    }

    /// Entries with index in `range`, in order.
    fn read_range(&self, start: u64, end: Bound<u64>) -> StorageResult<Vec<Entry>> {
        let read = |e: String| -> StorageError<NodeId> { StorageIOError::read_logs(&std::io::Error::other(e)).into() };
        let cf = self.store.cf(CF_RAFT_LOG).map_err(|e| read(e.to_string()))?;
        let from = start.to_be_bytes();
        let mut entries = Vec::new();
        // Entries are read about once (to apply, or to send to a lagging
        // replica): keep them out of the block cache, which they would fill.
        let mut opts = ReadOptions::default();
        opts.fill_cache(false);
        for item in self.store.db().iterator_cf_opt(cf, opts, IteratorMode::From(&from, Direction::Forward)) {
            let (key, value) = item.map_err(|e| read(e.to_string()))?;
            let index = index_of(&key).ok_or_else(|| read(format!("bad log key {key:?}")))?;
            let inside = match end {
                Bound::Included(end) => index <= end,
                Bound::Excluded(end) => index < end,
                Bound::Unbounded => true,
            };
            if !inside {
                break;
            }
            entries.push(wire::decode(&format!("raft log entry {index}"), &value).map_err(|e| read(e.to_string()))?);
        }
        Ok(entries)
    }

    fn last_entry(&self) -> StorageResult<Option<Entry>> {
        let read = |e: String| -> StorageError<NodeId> { StorageIOError::read_logs(&std::io::Error::other(e)).into() };
        let cf = self.store.cf(CF_RAFT_LOG).map_err(|e| read(e.to_string()))?;
        match self.store.db().iterator_cf(cf, IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item.map_err(|e| read(e.to_string()))?;
                wire::decode(&format!("raft log entry {key:?}"), &value).map(Some).map_err(|e| read(e.to_string()))
            }
        }
    }

    fn write_batch(&self, batch: WriteBatch, sync: bool) -> StorageResult<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.store
            .db()
            .write_opt(batch, &opts)
            .map_err(|e| StorageIOError::write_logs(&std::io::Error::other(e.to_string())).into())
    }

    /// Deletes entries with index in `[from, to)`.
    fn delete_range(&self, from: u64, to: u64) -> StorageResult<WriteBatch> {
        let cf = self
            .store
            .cf(CF_RAFT_LOG)
            .map_err(|e| StorageIOError::write_logs(&std::io::Error::other(e.to_string())))?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, from.to_be_bytes(), to.to_be_bytes());
        Ok(batch)
    }
}

fn index_of(key: &[u8]) -> Option<u64> {
    key.try_into().ok().map(u64::from_be_bytes)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = range.end_bound().cloned();
        if let Some(entries) = self.recent().get_range(start, end) {
            return Ok(entries);
        }
        self.blocking(move |log| log.read_range(start, end)).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        self.blocking(|log| {
            let last_purged_log_id: Option<LogId<NodeId>> = log.get_state(LAST_PURGED)?;
            let last_log_id = log.last_entry()?.map(|e| e.log_id).or(last_purged_log_id);
            Ok(LogState { last_purged_log_id, last_log_id })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let vote = *vote;
        self.blocking(move |log| log.put_state(VOTE, &vote, log.sync)).await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.blocking(|log| log.get_state(VOTE)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        // Not synced: after a crash the committed position is found again.
        self.blocking(move |log| log.put_state(COMMITTED, &committed, false)).await
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        self.blocking(|log| Ok(log.get_state::<Option<LogId<NodeId>>>(COMMITTED)?.flatten())).await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let written = self
            .blocking(move |log| {
                let write = |e: String| -> StorageError<NodeId> {
                    StorageIOError::write_logs(&std::io::Error::other(e)).into()
                };
                let cf = log.store.cf(CF_RAFT_LOG).map_err(|e| write(e.to_string()))?;
                let mut batch = WriteBatch::default();
                let mut sized = Vec::with_capacity(entries.len());
                for entry in entries {
                    let bytes = wire::encode(&entry).map_err(|e| write(e.to_string()))?;
                    batch.put_cf(cf, entry.log_id.index.to_be_bytes(), &bytes);
                    sized.push((entry, bytes.len()));
                }
                log.write_batch(batch, false)?;
                Ok(sized)
            })
            .await
            .map(|sized| self.recent().append(sized));
        match &written {
            Ok(()) if self.sync => self.syncer.sync_then(callback),
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        written
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.recent().truncate(log_id.index);
        self.blocking(move |log| {
            let batch = log.delete_range(log_id.index, u64::MAX)?;
            log.write_batch(batch, log.sync)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.recent().purge(log_id.index);
        self.blocking(move |log| {
            // The purge mark first: a crash in between leaves entries that are ignored.
            log.put_state(LAST_PURGED, &log_id, log.sync)?;
            let batch = log.delete_range(0, log_id.index.saturating_add(1))?;
            log.write_batch(batch, false)
        })
        .await
    }
}

/// A thread that syncs the WAL for appends and then reports them durable;
/// every append waiting when a sync starts is covered by it.
#[derive(Clone)]
struct WalSyncer {
    thread: Arc<WalThread>,
}

/// The thread and its queue; dropping the last [`LogStore`] clone closes the
/// queue and joins the thread, so the thread's database handle is released
/// before the owner goes on. Were it released later, on its own, a process
/// exiting meanwhile could close RocksDB during static destruction
/// (`pthread lock: Invalid argument`, rocksdb#11349).
struct WalThread {
    waiting: Option<std::sync::mpsc::Sender<LogFlushed<TypeConfig>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WalThread {
    fn drop(&mut self) {
        drop(self.waiting.take());
        if let Some(handle) = self.handle.take() {
            if handle.join().is_err() {
                tracing::error!("the WAL sync thread panicked");
            }
        }
    }
}

impl WalSyncer {
    /// Starts the thread; it ends when the last [`LogStore`] clone is dropped.
    fn start(store: Store) -> std::io::Result<WalSyncer> {
        let (waiting, pending) = std::sync::mpsc::channel::<LogFlushed<TypeConfig>>();
        let handle = std::thread::Builder::new().name("raft-wal-sync".into()).spawn(move || {
            while let Ok(first) = pending.recv() {
                let mut batch = vec![first];
                batch.extend(pending.try_iter());
                let synced = store.db().flush_wal(true).map_err(|e| e.to_string());
                for callback in batch {
                    callback.log_io_completed(synced.clone().map_err(std::io::Error::other));
                }
            }
        })?;
        Ok(WalSyncer { thread: Arc::new(WalThread { waiting: Some(waiting), handle: Some(handle) }) })
    }

    /// Reports `callback` durable after the next WAL sync (the write it
    /// covers was already made).
    fn sync_then(&self, callback: LogFlushed<TypeConfig>) {
        let Some(waiting) = &self.thread.waiting else {
            return callback.log_io_completed(Err(std::io::Error::other("the WAL sync thread stopped")));
        };
        if let Err(std::sync::mpsc::SendError(callback)) = waiting.send(callback) {
            callback.log_io_completed(Err(std::io::Error::other("the WAL sync thread stopped")));
        }
    }
}
