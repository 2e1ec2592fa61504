//! The shard's side of online scale-out: moving the KV and graph records it
//! loses under a new ring to their new owners while it keeps serving them.
//!
//! The gateway's rebalancer drives it (see `omnishard_gateway::rebalance`):
//! 1. `begin` — replicated through Raft, so every replica agrees from which
//!    log position on each write to a *moving* key (one the new ring gives to
//!    another shard) leaves a **mark** in `meta` (`migration/mark/<key>` for
//!    KV, `migration/gmark/<key>` for graph → the write's sequence), in the
//!    same batch as the write. A graph record moves with its vertex
//!    (`omnishard_common::stored`).
//! 2. `export` — pages of the moving records, read from the current state.
//! 3. `dirty` + `ack` — the catch-up: current records of marked keys, then the
//!    marks dropped unless the key was written again meanwhile (the mark's
//!    sequence changed), so no write is ever forgotten.
//! 4. `begin` with `fence` — from this log position on, writes to moving keys
//!    are refused with the retryable `moving` rejection; the last marks are
//!    shipped, then the gateway switches the ring.
//! 5. `drop` — after the switch, the records this shard no longer owns, then
//!    its marks and migration state, are deleted.
//!
//! Every step is idempotent and its state durable (Raft log + RocksDB), so a
//! crash of any process at any step resumes where it stopped.
//!
//! KV and graph data move; `begin` refuses while the shard holds search or
//! file data.

use std::sync::{Arc, RwLock};

use omnishard_common::placement::Ring;
use omnishard_common::rejection::Rejection;
use omnishard_common::stored::Space;
use omnishard_common::topology::Topology;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use crate::execute::Work;
use crate::node::Shard;
use crate::store::{Store, CF_CHUNKS, CF_FILES, CF_GRAPH, CF_KV, CF_META, CF_SEARCH};

/// `meta` key of the persisted migration state (JSON; empty = none).
pub const META_MIGRATION: &[u8] = b"migration";
/// Prefix of the KV marks in `meta`: `migration/mark/` + stored KV key → sequence (u64 BE).
pub const MARK_PREFIX: &[u8] = b"migration/mark/";
/// Prefix of the graph marks in `meta`: `migration/gmark/` + stored graph key → sequence.
pub const GRAPH_MARK_PREFIX: &[u8] = b"migration/gmark/";

/// Most records an export or dirty page carries.
pub const MAX_PAGE_RECORDS: usize = 10_000;
/// Most records an export looks at per call, moving or not (bounds its latency).
const MAX_SCANNED: usize = 50_000;

/// A migration as persisted: its id, the ring after it and whether moving keys are fenced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    pub id: u64,
    pub target: Topology,
    pub fenced: bool,
}

/// A running migration with its ring built.
pub struct Moving {
    pub persisted: Persisted,
    pub ring: Ring,
}

/// What a write to `key` must do while a migration runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteCheck {
    /// The key stays here: nothing to do.
    Stays,
    /// The key moves: leave a mark with the write.
    Mark,
}

/// The migration this shard runs as a source, if any; shared by the apply
/// path (marks and fence) and the request handlers.
pub struct MigrationState {
    shard_id: String,
    current: RwLock<Option<Arc<Moving>>>,
}

impl MigrationState {
    /// Starts from what `store` persisted.
    pub fn load(shard_id: &str, store: &Store) -> Result<MigrationState> {
        let state = MigrationState { shard_id: shard_id.to_string(), current: RwLock::new(None) };
        state.reload(store)?;
        Ok(state)
    }

    /// Re-reads the persisted state (after a snapshot replaced the data).
    pub fn reload(&self, store: &Store) -> Result<()> {
        let raw = store.get_cf(CF_META, META_MIGRATION)?.unwrap_or_default();
        self.follow(&raw)
    }

    /// Follows a committed `meta/migration` value (empty = none).
    pub fn follow(&self, raw: &[u8]) -> Result<()> {
        let moving = if raw.is_empty() {
            None
        } else {
            let persisted: Persisted = serde_json::from_slice(raw)
                .map_err(|e| Error::Corrupt { key: "meta/migration".into(), reason: e.to_string() })?;
            let ring = persisted.target.ring()?;
            Some(Arc::new(Moving { persisted, ring }))
        };
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = moving;
        Ok(())
    }

    /// The running migration, if any.
    pub fn current(&self) -> Option<Arc<Moving>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The running migration if its id is `id`, else a clear error.
    pub fn expect(&self, id: u64) -> Result<Arc<Moving>> {
        match self.current() {
            Some(m) if m.persisted.id == id => Ok(m),
            Some(m) => Err(Error::FailedPrecondition(format!(
                "shard {} runs migration {}, not {id}",
                self.shard_id, m.persisted.id
            ))),
            None => Err(Error::FailedPrecondition(format!("shard {} runs no migration {id}", self.shard_id))),
        }
    }

    /// Decides a write to `key` of `namespace` (called by the apply path,
    /// identically on every replica). Fenced moving keys are refused.
    pub fn check_write(&self, moving: Option<&Moving>, namespace: &str, key: &[u8]) -> Result<WriteCheck> {
        let Some(moving) = moving else { return Ok(WriteCheck::Stays) };
        if moving.ring.owner(namespace, key) == self.shard_id {
            return Ok(WriteCheck::Stays);
        }
        if moving.persisted.fenced {
            return Err(Error::Rejected(Rejection::Moving { shard_epoch: moving.persisted.target.epoch - 1 }));
        }
        Ok(WriteCheck::Mark)
    }

    /// Whether the stored `key` of `space` belongs elsewhere under `ring`.
    pub fn leaves(&self, ring: &Ring, space: Space, stored_key: &[u8]) -> bool {
        match space.owner_of(stored_key) {
            Some((ns, key)) => ring.owner(ns, key) != self.shard_id,
            None => false,
        }
    }
}

/// The column family of `space`.
pub fn cf_of(space: Space) -> &'static str {
    match space {
        Space::Kv => CF_KV,
        Space::Graph => CF_GRAPH,
    }
}

/// Where the marks of `space` live in `meta`.
pub fn mark_prefix(space: Space) -> &'static [u8] {
    match space {
        Space::Kv => MARK_PREFIX,
        Space::Graph => GRAPH_MARK_PREFIX,
    }
}

/// The mark key of a stored key of `space`.
pub fn mark_key(space: Space, stored_key: &[u8]) -> Vec<u8> {
    let prefix = mark_prefix(space);
    let mut out = Vec::with_capacity(prefix.len() + stored_key.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(stored_key);
    out
}

/// One record shipped between shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The stored value (version and expiry header included); `None` = delete.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    pub mark: u64,
    /// The column family the key is of.
    #[serde(default)]
    pub space: Space,
}

impl Record {
    /// The version the record carries (0 for a delete, a label entry or a short value).
    pub fn version(&self) -> u64 {
        let Some(value) = self.value.as_deref() else { return 0 };
        match self.space {
            Space::Kv => codec::decode_value(value).map(|s| s.version).unwrap_or(0),
            Space::Graph => crate::graph::read::stored_version(&self.key, value),
        }
    }

    fn size(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Vec::len)
    }
}

/// A page of records and where the next one starts.
#[derive(Debug, Default)]
pub struct Page {
    pub records: Vec<Record>,
    pub next: Vec<u8>,
    pub done: bool,
    pub scanned: u64,
}

/// The first model that does not migrate yet (search, files) whose data `store` holds, if any.
pub fn unmovable_model(store: &Store) -> Result<Option<&'static str>> {
    for (cf, model) in [(CF_SEARCH, "search"), (CF_FILES, "file"), (CF_CHUNKS, "file")] {
        let mut any = false;
        store.scan_prefix(cf, b"", b"", None, |_, _| {
            any = true;
            Ok(false)
        })?;
        if any {
            return Ok(Some(model));
        }
    }
    Ok(None)
}

/// Refuses a migration while data of models that do not move yet exists.
pub fn check_movable(store: &Store) -> Result<()> {
    match unmovable_model(store)? {
        Some(model) => Err(Error::FailedPrecondition(format!(
            "this shard holds {model} data; online migration moves KV and graph data only so far, so the shard set cannot change yet"
        ))),
        None => Ok(()),
    }
}

/// Moving records after cursor `after` (exclusive), bounded by records and
/// bytes. A cursor is the space's wire number (one byte) then the last key
/// looked at; KV is exported first, then graph. A cursor saved by a version
/// that moved KV only is the bare KV key: it starts with a namespace
/// character, never with a wire number, and is read as such.
pub fn export(
    state: &MigrationState,
    store: &Store,
    ring: &Ring,
    after: &[u8],
    max: usize,
    max_bytes: usize,
) -> Result<Page> {
    let (mut space, mut from) = match after.split_first() {
        None => (Space::Kv, &[][..]),
        Some((&n, key)) => match Space::from_wire(u32::from(n)) {
            Some(space) => (space, key),
            None => (Space::Kv, after),
        },
    };
    let mut page = Page::default();
    let mut bytes = 0usize;
    loop {
        let mut last = from.to_vec();
        let mut stopped = false;
        store.scan_prefix(cf_of(space), b"", from, None, |key, value| {
            if key == from {
                return Ok(true);
            }
            if page.records.len() >= max || bytes >= max_bytes || page.scanned as usize >= MAX_SCANNED {
                stopped = true;
                return Ok(false);
            }
            page.scanned += 1;
            last = key.to_vec();
            if state.leaves(ring, space, key) {
                let record = Record { key: key.to_vec(), value: Some(value.to_vec()), mark: 0, space };
                bytes += record.size();
                page.records.push(record);
            }
            Ok(true)
        })?;
        let next_space = Space::ALL.iter().copied().find(|s| *s > space);
        match next_space {
            Some(next) if !stopped => {
                space = next;
                from = &[];
            }
            _ => {
                page.done = !stopped;
                page.next = [vec![space as u8], last].concat();
                return Ok(page);
            }
        }
    }
}

/// Up to `max` marked keys with their current records (absent = delete).
pub fn dirty(store: &Store, max: usize) -> Result<Page> {
    let mut records = Vec::new();
    for space in Space::ALL {
        let prefix = mark_prefix(space);
        let mut marks = Vec::new();
        store.scan_prefix(CF_META, prefix, prefix, None, |key, value| {
            if records.len() + marks.len() >= max {
                return Ok(false);
            }
            let mark = value.try_into().map(u64::from_be_bytes).unwrap_or(0);
            marks.push((key[prefix.len()..].to_vec(), mark));
            Ok(true)
        })?;
        let keys: Vec<Vec<u8>> = marks.iter().map(|(k, _)| k.clone()).collect();
        let values = store.multi_get_cf(cf_of(space), &keys)?;
        records.extend(marks.into_iter().zip(values).map(|((key, mark), value)| Record { key, value, mark, space }));
    }
    let done = records.len() < max;
    Ok(Page { records, next: Vec::new(), done, scanned: 0 })
}

/// Up to `max` stored keys (KV, then graph) that `keep` rejects.
pub fn unwanted(store: &Store, max: usize, keep: impl Fn(Space, &[u8]) -> bool) -> Result<Vec<(Space, Vec<u8>)>> {
    let mut out = Vec::new();
    for space in Space::ALL {
        store.scan_prefix(cf_of(space), b"", b"", None, |key, _| {
            if !keep(space, key) {
                out.push((space, key.to_vec()));
            }
            Ok(out.len() < max)
        })?;
        if out.len() >= max {
            break;
        }
    }
    Ok(out)
}

/// Which records [`Shard::migrate_drop`] deletes.
pub enum DropMode {
    /// Records the installed ring gives to other shards, then marks and state.
    Unowned,
    /// Records `source` owns under `before` and this shard owns under `after`.
    Incoming { before: Topology, after: Topology, source: String },
}

impl Shard {
    /// Starts the migration to `target` (or fences it): replicated, so
    /// every replica marks (or refuses) the same writes. Returns the marks waiting.
    pub async fn migrate_begin(self: &Arc<Self>, id: u64, target: Topology, fence: bool) -> Result<u64> {
        target.validate()?;
        let installed = self
            .ownership
            .installed()
            .ok_or_else(|| Error::FailedPrecondition(format!("shard {} has no topology installed", self.id())))?;
        if target.epoch != installed.ring.epoch() + 1 {
            return Err(Error::FailedPrecondition(format!(
                "migration {id} targets epoch {} but shard {} enforces epoch {}; the target must be the next epoch",
                target.epoch,
                self.id(),
                installed.ring.epoch()
            )));
        }
        let wanted = Persisted { id, target, fenced: fence };
        match self.migration.current() {
            Some(m) if m.persisted == wanted => {}
            Some(m) if m.persisted.id != id => {
                return Err(Error::FailedPrecondition(format!(
                    "shard {} already runs migration {}",
                    self.id(),
                    m.persisted.id
                )))
            }
            current => {
                if current.is_none() {
                    self.blocking_light(|shard| check_movable(&shard.store)).await?;
                }
                let raw = serde_json::to_vec(&wanted).map_err(|e| Error::Internal(e.to_string()))?;
                self.applier.put_meta(META_MIGRATION, raw).await?;
                tracing::info!(shard_id = %self.id(), migration = id, fence, "migration state set");
            }
        }
        self.blocking_light(|shard| {
            let mut n = 0u64;
            for space in Space::ALL {
                let prefix = mark_prefix(space);
                shard.store.scan_prefix(CF_META, prefix, prefix, None, |_, _| {
                    n += 1;
                    Ok(true)
                })?;
            }
            Ok(n)
        })
        .await
    }

    /// A page of records that migration `id` moves away.
    pub async fn migrate_export(
        self: &Arc<Self>,
        id: u64,
        after: Vec<u8>,
        max: usize,
        max_bytes: usize,
    ) -> Result<Page> {
        let moving = self.migration.expect(id)?;
        let max = max.clamp(1, MAX_PAGE_RECORDS);
        self.blocking_heavy(move |shard| export(&shard.migration, &shard.store, &moving.ring, &after, max, max_bytes))
            .await
    }

    /// Marked keys of migration `id` with their current records.
    pub async fn migrate_dirty(self: &Arc<Self>, id: u64, max: usize) -> Result<Page> {
        self.migration.expect(id)?;
        let max = max.clamp(1, MAX_PAGE_RECORDS);
        self.blocking_heavy(move |shard| dirty(&shard.store, max)).await
    }

    /// Forgets the marks of shipped records (unless written again since).
    pub async fn migrate_ack(self: &Arc<Self>, id: u64, marks: Vec<Record>) -> Result<()> {
        self.migration.expect(id)?;
        self.applier.apply_migration(Work::MigrateAck(marks)).await
    }

    /// Stores records copied from another shard.
    pub async fn migrate_ingest(self: &Arc<Self>, records: Vec<Record>) -> Result<()> {
        for (i, record) in records.iter().enumerate() {
            if record.space.owner_of(&record.key).is_none() {
                return Err(Error::InvalidArgument(omnishard_common::Error::invalid(
                    "records",
                    format!("records[{i}].key is not a stored {:?} key", record.space),
                )));
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        self.applier.apply_migration(Work::Ingest(records)).await
    }

    /// Deletes up to `max` records `mode` selects; `(deleted, done)`.
    pub async fn migrate_drop(self: &Arc<Self>, mode: DropMode, max: usize) -> Result<(u64, bool)> {
        let max = max.clamp(1, MAX_PAGE_RECORDS);
        let keys = match &mode {
            DropMode::Unowned => {
                let installed = self.ownership.installed().ok_or_else(|| {
                    Error::FailedPrecondition(format!("shard {} has no topology installed", self.id()))
                })?;
                self.blocking_heavy(move |shard| {
                    unwanted(&shard.store, max, |space, key| !shard.migration.leaves(&installed.ring, space, key))
                })
                .await?
            }
            DropMode::Incoming { before, after, source } => {
                let (before, after, source) = (before.ring()?, after.ring()?, source.clone());
                self.blocking_heavy(move |shard| {
                    unwanted(&shard.store, max, |space, key| {
                        let Some((ns, user)) = space.owner_of(key) else { return true };
                        !(before.owner(ns, user) == source && after.owner(ns, user) == shard.id())
                    })
                })
                .await?
            }
        };
        let deleted = keys.len() as u64;
        if !keys.is_empty() {
            let records = keys.into_iter().map(|(space, key)| Record { key, value: None, mark: 0, space }).collect();
            self.applier.apply_migration(Work::Ingest(records)).await?;
        }
        let done = (deleted as usize) < max;
        if done && matches!(mode, DropMode::Incoming { .. }) {
            // Copies deleted (a restarted copy, or an aborted migration):
            // compacting drops the tombstones and corrects the key estimate.
            self.blocking_heavy(|shard| shard.store.compact()).await?;
        }
        if done && matches!(mode, DropMode::Unowned) && self.migration.current().is_some() {
            self.applier.apply_migration(Work::MigrateClear).await?;
            // Deleted ranges leave tombstones; compacting drops them and
            // makes the key count estimate right again.
            self.blocking_heavy(|shard| shard.store.compact()).await?;
            tracing::info!(shard_id = %self.id(), "migration finished on this shard");
        }
        Ok((deleted, done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnishard_common::topology::ShardAddr;

    fn topology(n: usize, epoch: u64) -> Topology {
        Topology {
            epoch,
            vnodes: 64,
            shards: (1..=n).map(|i| ShardAddr::new(format!("s{i}"), format!("127.0.0.1:{}", 7400 + i))).collect(),
        }
    }

    fn moving(fenced: bool) -> Moving {
        let target = topology(4, 2);
        Moving { ring: target.ring().unwrap(), persisted: Persisted { id: 1, target, fenced } }
    }

    #[test]
    fn test_writes_to_moving_keys_are_marked_then_fenced() {
        let state = MigrationState { shard_id: "s1".into(), current: RwLock::new(None) };
        let open = moving(false);
        let (mut stays, mut marks) = (0, 0);
        for i in 0..2000 {
            let key = format!("k{i}");
            // Under the 3-shard ring only some keys are s1's, but the check only looks at the new ring.
            match state.check_write(Some(&open), "default", key.as_bytes()).unwrap() {
                WriteCheck::Stays => stays += 1,
                WriteCheck::Mark => {
                    marks += 1;
                    let fenced = moving(true);
                    let err = state.check_write(Some(&fenced), "default", key.as_bytes()).unwrap_err();
                    assert!(matches!(err, Error::Rejected(Rejection::Moving { shard_epoch: 1 })), "{err:?}");
                }
            }
            assert_eq!(state.check_write(None, "default", key.as_bytes()).unwrap(), WriteCheck::Stays);
        }
        // s1 keeps about a quarter of the key space under the 4-shard ring.
        assert!(stays > 300 && marks > 1000, "stays {stays} marks {marks}");
    }

    #[test]
    fn test_mark_keys_and_record_versions() {
        let stored = codec::encode_key("ns", b"a\0b");
        assert!(mark_key(Space::Kv, &stored).starts_with(MARK_PREFIX));
        assert!(mark_key(Space::Graph, &stored).starts_with(GRAPH_MARK_PREFIX));
        // Neither prefix range holds the other's marks.
        assert!(!GRAPH_MARK_PREFIX.starts_with(MARK_PREFIX) && !MARK_PREFIX.starts_with(GRAPH_MARK_PREFIX));
        let record = Record { key: stored, value: Some(codec::encode_value(42, 0, b"v")), mark: 0, space: Space::Kv };
        assert_eq!(record.version(), 42);
    }
}
