//! The indexer: one thread per shard that turns the outbox into Tantivy
//! commits. Every refresh interval (and on demand) it reads the outbox of
//! each index past the sequence the index last applied, re-indexes those
//! documents as RocksDB holds them, commits with that sequence as payload,
//! publishes a new view and trims the outbox. Rebuilds (reindex, schema
//! growth) write a new generation from a RocksDB snapshot, then switch.
//!
//! One thread and one open writer keep indexing memory within the writer
//! budget however many indexes there are.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use rocksdb::WriteBatch;
use serde_json::{Map, Value};
use tantivy::{IndexWriter, Term};
use tokio::sync::oneshot;

use super::index::{self, tantivy_error, Registry, SearchIndex};
use super::keys;
use super::schema::id_field;
use crate::codec::prefix_end;
use crate::error::{Error, Result};
use crate::store::{Store, CF_SEARCH};

/// Outbox entries applied per commit, so catching up after a long outage
/// holds a bounded set of ids in memory.
const MAX_OUTBOX_PER_COMMIT: usize = 50_000;

/// Tantivy's smallest budget for one indexing thread.
const MIN_WRITER_MEMORY: usize = 15_000_000;

/// A document id from the outbox, and whether an older copy may be indexed.
struct Pending {
    id: String,
    delete: bool,
}

/// Work the indexer is asked to do now.
enum Command {
    /// Commit pending writes of one index; answers with its searchable sequence.
    Refresh { index: Arc<SearchIndex>, reply: oneshot::Sender<Result<u64>> },
    /// Rebuild an index from RocksDB; answers with the documents indexed.
    Rebuild { index: Arc<SearchIndex>, reply: oneshot::Sender<Result<u64>> },
    /// Forget a dropped index and delete its directories.
    Forget { index: Arc<SearchIndex>, reply: oneshot::Sender<()> },
    /// Stop the thread (handles held by the apply path keep the channel open).
    Stop,
}

/// Handle to the indexer thread; dropping it stops the thread.
pub struct Indexer {
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What the indexer thread owns.
struct Worker {
    store: Store,
    registry: Arc<Registry>,
    last_seq: Arc<AtomicU64>,
    memory: usize,
    /// The one open writer: (index uid, generation, writer).
    writer: Option<(u64, u32, IndexWriter)>,
}

impl Indexer {
    /// Starts the thread. `last_seq` is the apply path's committed sequence.
    pub fn start(
        store: Store,
        registry: Arc<Registry>,
        last_seq: Arc<AtomicU64>,
        interval: Duration,
        memory: usize,
    ) -> Result<Indexer> {
        let (commands, receiver) = mpsc::channel();
        // Tantivy needs at least 15 MB per indexing thread.
        let memory = memory.max(MIN_WRITER_MEMORY);
        let worker = Worker { store, registry, last_seq, memory, writer: None };
        let thread = std::thread::Builder::new()
            .name("omnishard-indexer".into())
            .spawn(move || worker.run(receiver, interval))
            .map_err(|e| Error::Internal(format!("cannot start indexer thread: {e}")))?;
        Ok(Indexer { commands: Some(commands), thread: Some(thread) })
    }

    /// Stops the thread after its current step and waits for it.
    pub fn shutdown(&mut self) {
        if let Some(commands) = self.commands.take() {
            let _ = commands.send(Command::Stop);
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the indexer thread panicked");
            }
        }
    }

    /// Commits pending writes of `index` now; returns its searchable sequence.
    pub async fn refresh(&self, index: Arc<SearchIndex>) -> Result<u64> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Refresh { index, reply })?;
        answer.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Rebuilds `index` from RocksDB; returns the documents indexed.
    pub async fn rebuild(&self, index: Arc<SearchIndex>) -> Result<u64> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Rebuild { index, reply })?;
        answer.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Forgets a dropped index and deletes its files.
    pub async fn forget(&self, index: Arc<SearchIndex>) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Forget { index, reply })?;
        answer.await.map_err(|_| Error::ShuttingDown)
    }

    fn send(&self, command: Command) -> Result<()> {
        let commands = self.commands.as_ref().ok_or(Error::ShuttingDown)?;
        commands.send(command).map_err(|_| Error::ShuttingDown)
    }

    /// A handle that queues work without waiting for it (for the apply path).
    pub fn handle(&self) -> Option<IndexerHandle> {
        self.commands.clone().map(|commands| IndexerHandle { commands })
    }
}

/// Queues indexer work without waiting: the apply path must not block on a
/// rebuild. Work is done in queue order, so a later [`Indexer::refresh`] of
/// the same index returns after it.
#[derive(Clone)]
pub struct IndexerHandle {
    commands: mpsc::Sender<Command>,
}

impl IndexerHandle {
    /// Rebuilds `index` from RocksDB in the background.
    pub fn rebuild_later(&self, index: Arc<SearchIndex>) {
        let (reply, _) = oneshot::channel();
        let _ = self.commands.send(Command::Rebuild { index, reply });
    }

    /// Forgets a dropped index in the background.
    pub fn forget_later(&self, index: Arc<SearchIndex>) {
        let (reply, _) = oneshot::channel();
        let _ = self.commands.send(Command::Forget { index, reply });
    }
}

impl Worker {
    fn run(mut self, commands: mpsc::Receiver<Command>, interval: Duration) {
        // Indexes whose schema grew while the shard was down need a rebuild.
        for index in self.registry.list(None) {
            if !index.generation_is_current() {
                let rebuilt = self.rebuild(&index).map(|_| ());
                self.log_failure(&index, "rebuild", rebuilt);
            }
        }
        let mut next_tick = std::time::Instant::now() + interval;
        loop {
            let wait = next_tick.saturating_duration_since(std::time::Instant::now());
            match commands.recv_timeout(wait) {
                Ok(Command::Refresh { index, reply }) => {
                    let _ = reply.send(self.refresh(&index));
                }
                Ok(Command::Rebuild { index, reply }) => {
                    let _ = reply.send(self.rebuild(&index));
                }
                Ok(Command::Forget { index, reply }) => {
                    self.forget(&index);
                    let _ = reply.send(());
                }
                Err(RecvTimeoutError::Timeout) => {
                    for index in self.registry.list(None) {
                        let refreshed = self.refresh(&index).map(|_| ());
                        self.log_failure(&index, "refresh", refreshed);
                    }
                    next_tick = std::time::Instant::now() + interval;
                }
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if let Some((_, _, writer)) = self.writer.take() {
            // Uncommitted work is still in the outbox; nothing is lost.
            drop(writer);
        }
    }

    fn log_failure(&self, index: &SearchIndex, what: &str, result: Result<()>) {
        if let Err(e) = result {
            tracing::error!(namespace = %index.namespace, index = %index.name, error = %e, "search {what} failed");
        }
    }

    /// Applies the outbox of `index` up to the shard's committed sequence.
    fn refresh(&mut self, index: &Arc<SearchIndex>) -> Result<u64> {
        loop {
            // Read the sequence first: the snapshot then holds at least
            // everything up to it (writes publish their sequence after commit).
            let upto = self.last_seq.load(Ordering::Acquire);
            let applied = index.applied.load(Ordering::Acquire);
            let store = self.store.clone();
            let snapshot = store.db().snapshot();
            let (ids, last, more) = self.pending(index, applied, &snapshot)?;
            if ids.is_empty() {
                index.set_searchable(upto.max(applied));
                return Ok(index.searchable_seq());
            }
            let complete = !more;
            self.index_documents(index, &ids, &snapshot)?;
            drop(snapshot);
            self.commit(index, last)?;
            if complete {
                index.set_searchable(upto.max(last));
                return Ok(index.searchable_seq());
            }
            index.set_searchable(last);
        }
    }

    /// Ids in the outbox of `index` after `applied`, the last sequence seen,
    /// and whether entries were left for the next commit.
    fn pending(
        &self,
        index: &SearchIndex,
        applied: u64,
        snapshot: &rocksdb::Snapshot<'_>,
    ) -> Result<(Vec<Pending>, u64, bool)> {
        let mut ids: Vec<Pending> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut entries = 0;
        let mut last = applied;
        let mut more = false;
        let prefix = keys::outbox_prefix(index.uid);
        let start = keys::outbox(index.uid, applied + 1, 0);
        self.store.scan_prefix(CF_SEARCH, &prefix, &start, Some(snapshot), |key, value| {
            let seq = keys::seq_of_outbox(key).unwrap_or(last);
            // Never stop inside one transaction: its entries share a sequence.
            if entries >= MAX_OUTBOX_PER_COMMIT && seq != last {
                more = true;
                return Ok(false);
            }
            entries += 1;
            last = seq;
            let (created, id) = keys::decode_outbox(value).unwrap_or((false, value));
            let id = String::from_utf8_lossy(id).into_owned();
            match seen.get(&id) {
                Some(&at) => ids[at].delete |= !created,
                None => {
                    seen.insert(id.clone(), ids.len());
                    ids.push(Pending { id, delete: !created });
                }
            }
            Ok(true)
        })?;
        Ok((ids, last, more))
    }

    /// Replaces the index entries of `ids` by the documents in `snapshot`.
    fn index_documents(
        &mut self,
        index: &SearchIndex,
        ids: &[Pending],
        snapshot: &rocksdb::Snapshot<'_>,
    ) -> Result<()> {
        let meta = index.meta();
        let store = self.store.clone();
        let doc_keys: Vec<Vec<u8>> = ids.iter().map(|p| keys::doc(index.uid, &p.id)).collect();
        let mut read = rocksdb::ReadOptions::default();
        read.set_snapshot(snapshot);
        let values = store.db().batched_multi_get_cf_opt(store.cf(CF_SEARCH)?, doc_keys.iter(), false, &read);
        let writer = self.writer_for(index)?;
        let schema = writer.index().schema();
        let id_field = id_field(&schema)?;
        for (pending, value) in ids.iter().zip(values) {
            let id = pending.id.as_str();
            // Deletes cost a term lookup in every segment at commit: skip
            // them for documents that did not exist before.
            if pending.delete {
                writer.delete_term(Term::from_field_text(id_field, id));
            }
            if let Some(value) = value? {
                let object = parse_doc(id, &value)?;
                writer.add_document(meta.schema.to_tantivy(&schema, id, &object)?).map_err(tantivy_error)?;
            }
        }
        Ok(())
    }

    /// Commits the open writer with `seq` as payload, publishes a view and
    /// trims the outbox up to `seq`.
    fn commit(&mut self, index: &SearchIndex, seq: u64) -> Result<()> {
        let writer = self.writer.as_mut().map(|(_, _, w)| w).ok_or_else(|| Error::Internal("no writer".into()))?;
        let mut prepared = writer.prepare_commit().map_err(tantivy_error)?;
        prepared.set_payload(&seq.to_string());
        prepared.commit().map_err(tantivy_error)?;
        {
            let generation = index.generation.read().unwrap_or_else(|e| e.into_inner());
            generation.reader.reload().map_err(tantivy_error)?;
        }
        index.publish_view();
        index.applied.store(seq, Ordering::Release);
        self.trim_outbox(index.uid, seq)
    }

    /// Deletes outbox entries up to `seq`: the index holds them now. Not
    /// synced: entries that come back after a crash are applied again, harmlessly.
    fn trim_outbox(&self, uid: u64, seq: u64) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.store.cf(CF_SEARCH)?, keys::outbox_prefix(uid), keys::outbox(uid, seq + 1, 0));
        self.store.db().write(batch)?;
        Ok(())
    }

    /// The open writer, opened on `index`'s active generation if needed.
    fn writer_for(&mut self, index: &SearchIndex) -> Result<&mut IndexWriter> {
        let generation = index.generation.read().unwrap_or_else(|e| e.into_inner());
        let wanted = (index.uid, generation.number);
        if self.writer.as_ref().map(|(uid, number, _)| (*uid, *number)) != Some(wanted) {
            // Drop the other writer first: its lock and memory are released.
            self.writer = None;
            let writer = generation.index.writer_with_num_threads(1, self.memory).map_err(tantivy_error)?;
            self.writer = Some((wanted.0, wanted.1, writer));
        }
        drop(generation);
        self.writer.as_mut().map(|(_, _, w)| w).ok_or_else(|| Error::Internal("no writer".into()))
    }

    /// Builds a new generation from a RocksDB snapshot and switches to it.
    fn rebuild(&mut self, index: &Arc<SearchIndex>) -> Result<u64> {
        let meta = index.meta();
        let number = index.generation.read().unwrap_or_else(|e| e.into_inner()).number + 1;
        let dir = index::generation_dir(self.registry.root(), index.uid, number);
        let _ = std::fs::remove_dir_all(&dir);
        let generation = index::open_generation(self.registry.root(), &meta, number)?;
        // One writer at a time keeps indexing memory within the budget.
        self.writer = None;
        let store = self.store.clone();
        let snapshot = store.db().snapshot();
        // The snapshot's documents reflect every outbox entry it holds: the
        // new generation has applied up to the last of them (replaying one
        // of them could add a created document twice).
        let upto = self.last_seq.load(Ordering::Acquire).max(self.last_outbox_seq(index.uid, &snapshot)?);
        let mut writer = generation.index.writer_with_num_threads(1, self.memory).map_err(tantivy_error)?;
        let schema = generation.index.schema();
        let mut count = 0u64;
        self.store.scan_prefix(CF_SEARCH, &keys::doc_prefix(index.uid), b"", Some(&snapshot), |key, value| {
            let id = keys::id_of_doc(key).unwrap_or_default();
            let object = parse_doc(id, value)?;
            writer.add_document(meta.schema.to_tantivy(&schema, id, &object)?).map_err(tantivy_error)?;
            count += 1;
            Ok(true)
        })?;
        drop(snapshot);
        let mut prepared = writer.prepare_commit().map_err(tantivy_error)?;
        prepared.set_payload(&upto.to_string());
        prepared.commit().map_err(tantivy_error)?;
        drop(writer);
        generation.reader.reload().map_err(tantivy_error)?;
        // Durably switch, then retire the old directory.
        let mut batch = WriteBatch::default();
        batch.put_cf(self.store.cf(CF_SEARCH)?, keys::generation(index.uid), number.to_be_bytes());
        let mut sync = rocksdb::WriteOptions::default();
        sync.set_sync(true);
        self.store.db().write_opt(batch, &sync)?;
        let old = std::mem::replace(&mut *index.generation.write().unwrap_or_else(|e| e.into_inner()), generation);
        index.publish_view();
        index.applied.store(upto, Ordering::Release);
        index.set_searchable(upto);
        let _ = std::fs::remove_dir_all(index::generation_dir(self.registry.root(), index.uid, old.number));
        self.trim_outbox(index.uid, upto)?;
        tracing::info!(namespace = %index.namespace, index = %index.name, documents = count, generation = number, "search index rebuilt");
        // Writes made during the rebuild are still in the outbox.
        self.refresh(index)?;
        Ok(count)
    }

    /// The highest outbox sequence of index `uid` in `snapshot` (0 if none).
    fn last_outbox_seq(&self, uid: u64, snapshot: &rocksdb::Snapshot<'_>) -> Result<u64> {
        let prefix = keys::outbox_prefix(uid);
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_snapshot(snapshot);
        opts.set_iterate_lower_bound(prefix.clone());
        let Some(end) = prefix_end(&prefix) else { return Ok(0) };
        let mut iter = self.store.db().iterator_cf_opt(
            self.store.cf(CF_SEARCH)?,
            opts,
            rocksdb::IteratorMode::From(&end, rocksdb::Direction::Reverse),
        );
        match iter.next() {
            Some(item) => Ok(keys::seq_of_outbox(&item?.0).unwrap_or(0)),
            None => Ok(0),
        }
    }

    fn forget(&mut self, index: &SearchIndex) {
        if self.writer.as_ref().is_some_and(|(uid, _, _)| *uid == index.uid) {
            self.writer = None;
        }
        let number = index.generation.read().unwrap_or_else(|e| e.into_inner()).number;
        let _ = std::fs::remove_dir_all(index::generation_dir(self.registry.root(), index.uid, number));
    }
}

/// Decodes a stored document into its JSON object.
fn parse_doc(id: &str, value: &[u8]) -> Result<Map<String, Value>> {
    let corrupt = |reason: String| Error::Corrupt { key: format!("document {id:?}"), reason };
    let (_, json) = keys::decode_doc(value).ok_or_else(|| corrupt("shorter than its header".into()))?;
    match serde_json::from_slice(json) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(corrupt("not a JSON object".into())),
        Err(e) => Err(corrupt(e.to_string())),
    }
}
