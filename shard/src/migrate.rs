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
//! A shard that gains ranges is told so first (`receive`, `meta/migration_in`):
//! `ingest` then takes only records of that migration, for that ring and
//! this shard, each checked to be storable as it is (a value shorter than
//! its header would make the key unreadable; a version near `u64::MAX`
//! would wrap the shard's sequence), before anything of the batch is applied.
//! Drops and topology installs are checked against both records the same way.
//!
//! KV and graph data move; `begin` refuses while the shard holds search or
//! file data.

use std::sync::{Arc, RwLock};

use omnishard_common::placement::Ring;
use omnishard_common::rejection::Rejection;
use omnishard_common::stored::{graph_owner, Space, GRAPH_IN, GRAPH_LABEL, GRAPH_OUT, GRAPH_PENDING, GRAPH_VERTEX};
use omnishard_common::topology::Topology;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{show_key, Error, Result};
use crate::execute::Work;
use crate::node::Shard;
use crate::store::{Store, CF_CHUNKS, CF_FILES, CF_GRAPH, CF_KV, CF_META, CF_SEARCH};

/// `meta` key of the persisted migration state (JSON; empty = none).
pub const META_MIGRATION: &[u8] = b"migration";
/// Prefix of the KV marks in `meta`: `migration/mark/` + stored KV key → sequence (u64 BE).
pub const MARK_PREFIX: &[u8] = b"migration/mark/";
/// Prefix of the graph marks in `meta`: `migration/gmark/` + stored graph key → sequence.
pub const GRAPH_MARK_PREFIX: &[u8] = b"migration/gmark/";
/// `meta` key of the migration this shard receives records in (JSON [`Incoming`]; empty = none).
pub const META_INCOMING: &[u8] = b"migration_in";

/// Highest version an ingested record may carry. Versions are the source's
/// sequence numbers, one per committed write: 2^63 of them take about
/// 290,000 years at a million writes a second, so no real record is above
/// it, while a shard whose sequence an ingest moved up to it still has 2^63
/// writes left before `u64::MAX`: an ingest can never wrap the sequence.
pub const MAX_INGEST_VERSION: u64 = u64::MAX / 2;

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

/// A migration this shard receives records in, as persisted: its id and the ring after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incoming {
    pub id: u64,
    pub target: Topology,
}

/// What an ingest says about itself; checked against [`Incoming`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestTo {
    /// The migration the records belong to.
    pub migration_id: u64,
    /// The epoch of that migration's ring.
    pub target_epoch: u64,
    /// The shard the records are for.
    pub target_shard: String,
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

/// The migration `store` records this shard receiving records in, if any.
pub fn incoming(store: &Store) -> Result<Option<Incoming>> {
    let raw = store.get_cf(CF_META, META_INCOMING)?.unwrap_or_default();
    if raw.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(&raw)
        .map(Some)
        .map_err(|e| Error::Corrupt { key: "meta/migration_in".into(), reason: e.to_string() })
}

/// Whether two topologies place keys alike: the same epoch, vnodes and shard
/// ids in the same order (addresses do not place anything).
fn same_ring(a: &Topology, b: &Topology) -> bool {
    a.epoch == b.epoch && a.vnodes == b.vnodes && a.shards.iter().map(|s| &s.id).eq(b.shards.iter().map(|s| &s.id))
}

/// Refuses migration id 0: the driver numbers migrations from 1, so 0 is a
/// request that never named one.
fn check_migration_id(id: u64) -> Result<()> {
    if id == 0 {
        return Err(Error::InvalidArgument(omnishard_common::Error::invalid(
            "migration_id",
            "is 0; it must name the migration (ids start at 1)",
        )));
    }
    Ok(())
}

/// The version `record` carries, once checked to be storable as it is: a KV
/// value holds its version and expiry header, a graph value decodes as what
/// its key says (a vertex or edge half of the key's vertex; a label entry
/// has no value), and every version is between 1 and [`MAX_INGEST_VERSION`].
/// A delete (and a label entry) carries 0. The reason names what is wrong.
pub fn checked_version(record: &Record) -> std::result::Result<u64, String> {
    let Some(value) = record.value.as_deref() else { return Ok(0) };
    let version = match record.space {
        Space::Kv => codec::decode_value(value).map(|stored| stored.version).ok_or_else(|| {
            format!(
                "value is {} bytes; a KV value holds at least its {}-byte version and expiry header",
                value.len(),
                codec::HEADER_LEN
            )
        })?,
        Space::Graph => match graph_value_version(&record.key, value)? {
            Some(version) => version,
            None => return Ok(0),
        },
    };
    if version == 0 || version > MAX_INGEST_VERSION {
        return Err(format!("version is {version}; it must be between 1 and {MAX_INGEST_VERSION}"));
    }
    Ok(version)
}

/// The tag byte of a stored graph key: after `namespace 0x00 graph 0x00`, or
/// [`GRAPH_PENDING`] for an edge intent.
fn graph_tag(key: &[u8]) -> Option<u8> {
    if key.first() == Some(&GRAPH_PENDING) {
        return Some(GRAPH_PENDING);
    }
    let ns_end = key.iter().position(|&b| b == 0)?;
    let rest = &key[ns_end + 1..];
    let graph_end = rest.iter().position(|&b| b == 0)?;
    rest.get(graph_end + 1).copied()
}

/// The version of a stored graph value under `key`; `None` for a label entry.
fn graph_value_version(key: &[u8], value: &[u8]) -> std::result::Result<Option<u64>, String> {
    use omnishard_proto::v1::{Edge, Vertex};
    use prost::Message;
    let (_, owner) = graph_owner(key).ok_or("key is not a stored graph key")?;
    let tag = graph_tag(key).ok_or("key has no graph tag")?;
    let (version, of) = match tag {
        GRAPH_LABEL if value.is_empty() => return Ok(None),
        GRAPH_LABEL => return Err(format!("value is {} bytes; a label entry has none", value.len())),
        GRAPH_VERTEX => {
            let vertex = Vertex::decode(value).map_err(|e| format!("value is not a vertex: {e}"))?;
            (vertex.version, vertex.id)
        }
        GRAPH_OUT | GRAPH_IN | GRAPH_PENDING => {
            let edge = Edge::decode(value).map_err(|e| format!("value is not an edge: {e}"))?;
            // An in-half is stored with the edge's head, the others with its tail.
            (edge.version, if tag == GRAPH_IN { edge.to } else { edge.from })
        }
        other => return Err(format!("key has the unknown graph tag {other:#04x}")),
    };
    if of.as_bytes() != owner {
        return Err(format!("value belongs to vertex {of:?}, but the key to vertex {:?}", show_key(owner)));
    }
    Ok(Some(version))
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
        check_migration_id(id)?;
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
        match self.blocking_light(|shard| incoming(&shard.store)).await? {
            Some(receiving) if receiving.id >= id => {
                return Err(Error::FailedPrecondition(format!(
                    "shard {} receives records in migration {}; it cannot give ranges away in migration {id}",
                    self.id(),
                    receiving.id
                )))
            }
            Some(receiving) => {
                // An older migration this shard received records in ended
                // (switched or aborted) before this one began: forget it, so
                // its record no longer holds back drops here.
                self.applier.put_meta(META_INCOMING, Vec::new()).await?;
                tracing::info!(shard_id = %self.id(), migration = receiving.id, "older incoming migration forgotten");
            }
            None => {}
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

    /// Records that this shard receives records in migration `id`, whose
    /// ring is `target` (replicated, so any replica that leads checks ingests
    /// against it). Idempotent; a newer migration replaces an older one.
    pub async fn migrate_receive(self: &Arc<Self>, id: u64, target: Topology) -> Result<()> {
        check_migration_id(id)?;
        target.validate()?;
        if target.shard(self.id()).is_none() {
            return Err(Error::InvalidArgument(omnishard_common::Error::invalid(
                "target",
                format!("epoch {} does not list shard {}, so it receives nothing", target.epoch, self.id()),
            )));
        }
        let installed = self.ownership.epoch();
        if installed != 0 && installed.checked_add(1) != Some(target.epoch) {
            return Err(Error::FailedPrecondition(format!(
                "migration {id} targets epoch {} but shard {} enforces epoch {installed}; the target must be the next epoch",
                target.epoch,
                self.id()
            )));
        }
        if let Some(m) = self.migration.current() {
            return Err(Error::FailedPrecondition(format!(
                "shard {} gives ranges away in migration {}; it cannot receive records in migration {id}",
                self.id(),
                m.persisted.id
            )));
        }
        let wanted = Incoming { id, target };
        match self.blocking_light(|shard| incoming(&shard.store)).await? {
            Some(current) if current == wanted => return Ok(()),
            Some(current) if current.id >= id => {
                return Err(Error::FailedPrecondition(format!(
                    "shard {} already receives records in migration {} (to epoch {}); migration {id} is not newer",
                    self.id(),
                    current.id,
                    current.target.epoch
                )))
            }
            _ => {}
        }
        let raw = serde_json::to_vec(&wanted).map_err(|e| Error::Internal(e.to_string()))?;
        self.applier.put_meta(META_INCOMING, raw).await?;
        tracing::info!(shard_id = %self.id(), migration = id, epoch = wanted.target.epoch, "receiving records");
        Ok(())
    }

    /// The migration this shard receives records in, if it is migration `id`
    /// and its ring has not switched yet; else a clear error.
    async fn receiving(self: &Arc<Self>, id: u64) -> Result<Incoming> {
        let current = self.blocking_light(|shard| incoming(&shard.store)).await?;
        let current = match current {
            Some(current) if current.id == id => current,
            Some(current) => {
                return Err(Error::FailedPrecondition(format!(
                    "shard {} receives records in migration {}, not {id}",
                    self.id(),
                    current.id
                )))
            }
            None => {
                return Err(Error::FailedPrecondition(format!(
                    "shard {} receives records in no migration (migration {id} was not begun here as incoming)",
                    self.id()
                )))
            }
        };
        let installed = self.ownership.epoch();
        if installed >= current.target.epoch {
            return Err(Error::FailedPrecondition(format!(
                "migration {id} already switched shard {} to epoch {installed}; it receives nothing more",
                self.id()
            )));
        }
        Ok(current)
    }

    /// Stores records copied from another shard in migration `to.migration_id`:
    /// only while this shard receives that migration, only records its ring
    /// gives this shard, and only if every record is storable as it is
    /// ([`checked_version`]). A refusal applies nothing of the batch.
    pub async fn migrate_ingest(self: &Arc<Self>, to: IngestTo, records: Vec<Record>) -> Result<()> {
        check_migration_id(to.migration_id)?;
        if !self.replication.is_leader() {
            // Only the leader's state says whether the migration was recorded.
            return Err(self.replication.not_leader_here());
        }
        if to.target_shard != self.id() {
            return Err(Error::InvalidArgument(omnishard_common::Error::invalid(
                "target_shard",
                format!(
                    "is {:?}, but this is shard {}",
                    omnishard_common::query_text::excerpt(&to.target_shard, 64),
                    self.id()
                ),
            )));
        }
        let receiving = self.receiving(to.migration_id).await?;
        if to.target_epoch != receiving.target.epoch {
            return Err(Error::FailedPrecondition(format!(
                "target_epoch: is {}, but migration {} moves to epoch {}",
                to.target_epoch, receiving.id, receiving.target.epoch
            )));
        }
        let ring = receiving.target.ring()?;
        let invalid = |i: usize, record: &Record, reason: String| {
            Error::InvalidArgument(omnishard_common::Error::invalid(
                "records",
                format!("records[{i}] ({:?} key {:?}): {reason}", record.space, show_key(&record.key)),
            ))
        };
        for (i, record) in records.iter().enumerate() {
            let Some((ns, key)) = record.space.owner_of(&record.key) else {
                return Err(invalid(i, record, format!("the key is not a stored {:?} key", record.space)));
            };
            let owner = ring.owner(ns, key);
            if owner != self.id() {
                let reason = format!("epoch {} gives the key to shard {owner}, not to {}", ring.epoch(), self.id());
                return Err(invalid(i, record, reason));
            }
            checked_version(record).map_err(|reason| invalid(i, record, reason))?;
        }
        if records.is_empty() {
            return Ok(());
        }
        self.applier.apply_migration(Work::Ingest(records)).await
    }

    /// Checks that a drop of migration `id` may run here: a source drops
    /// only in the migration it runs; a shard that receives records keeps
    /// them until its ring switched; leftovers are dropped only for the
    /// migration this shard receives, with its ring.
    pub async fn check_drop(self: &Arc<Self>, id: u64, mode: &DropMode) -> Result<()> {
        check_migration_id(id)?;
        match mode {
            DropMode::Unowned => {
                if let Some(m) = self.migration.current() {
                    if m.persisted.id != id {
                        return Err(Error::FailedPrecondition(format!(
                            "shard {} runs migration {}, not {id}",
                            self.id(),
                            m.persisted.id
                        )));
                    }
                }
                if let Some(receiving) = self.blocking_light(|shard| incoming(&shard.store)).await? {
                    if self.ownership.epoch() < receiving.target.epoch {
                        return Err(Error::FailedPrecondition(format!(
                            "shard {} receives records in migration {}, whose ring (epoch {}) has not switched; the copies stay",
                            self.id(),
                            receiving.id,
                            receiving.target.epoch
                        )));
                    }
                }
                Ok(())
            }
            DropMode::Incoming { before, after, source } => {
                let receiving = self.receiving(id).await?;
                if !same_ring(after, &receiving.target) {
                    return Err(Error::InvalidArgument(omnishard_common::Error::invalid(
                        "after",
                        format!(
                            "epoch {} is not the ring migration {id} moves to (epoch {})",
                            after.epoch, receiving.target.epoch
                        ),
                    )));
                }
                if before.epoch.checked_add(1) != Some(after.epoch) {
                    return Err(Error::InvalidArgument(omnishard_common::Error::invalid(
                        "before",
                        format!("epoch {} is not the one before epoch {}", before.epoch, after.epoch),
                    )));
                }
                if before.shard(source).is_none() {
                    return Err(Error::InvalidArgument(omnishard_common::Error::invalid(
                        "source",
                        format!("{source:?} is not a shard of epoch {}", before.epoch),
                    )));
                }
                Ok(())
            }
        }
    }

    /// Checks that installing `topology` does not cut a migration short: the
    /// ring a migration moves to is installed only as that very ring, and on
    /// a source only once its moving keys are fenced (else writes marked
    /// since the last catch-up round would be left behind).
    pub async fn check_install(self: &Arc<Self>, topology: &Topology) -> Result<()> {
        if let Some(m) = self.migration.current() {
            let target = &m.persisted.target;
            if topology.epoch > target.epoch
                || (topology.epoch == target.epoch && !same_ring(topology, target))
                || (topology.epoch == target.epoch && !m.persisted.fenced)
            {
                return Err(Error::FailedPrecondition(format!(
                    "shard {} runs migration {} to epoch {} (fenced: {}); epoch {} may be installed only once it is fenced, as that ring",
                    self.id(),
                    m.persisted.id,
                    target.epoch,
                    m.persisted.fenced,
                    topology.epoch
                )));
            }
        }
        let receiving = self.blocking_light(|shard| incoming(&shard.store)).await?;
        if let Some(receiving) = receiving {
            let switched = self.ownership.epoch() >= receiving.target.epoch;
            if !switched && topology.epoch == receiving.target.epoch && !same_ring(topology, &receiving.target) {
                return Err(Error::FailedPrecondition(format!(
                    "shard {} receives records in migration {} to epoch {}; this epoch-{} topology places keys differently",
                    self.id(),
                    receiving.id,
                    receiving.target.epoch,
                    topology.epoch
                )));
            }
        }
        Ok(())
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

    #[test]
    fn test_checked_version_refuses_what_a_key_could_not_survive() {
        let kv =
            |value: Option<Vec<u8>>| Record { key: codec::encode_key("ns", b"k"), value, mark: 0, space: Space::Kv };
        assert_eq!(checked_version(&kv(Some(codec::encode_value(42, 0, b"v")))), Ok(42));
        assert_eq!(checked_version(&kv(None)), Ok(0), "a delete carries no version");
        let short = checked_version(&kv(Some(vec![0; codec::HEADER_LEN - 1]))).unwrap_err();
        assert!(short.contains("15 bytes") && short.contains("16-byte"), "{short}");
        for wild in [0, MAX_INGEST_VERSION + 1, u64::MAX] {
            let err = checked_version(&kv(Some(codec::encode_value(wild, 0, b"")))).unwrap_err();
            assert!(err.contains(&format!("version is {wild}")), "{err}");
        }
        assert_eq!(checked_version(&kv(Some(codec::encode_value(MAX_INGEST_VERSION, 0, b"")))), Ok(MAX_INGEST_VERSION));

        use omnishard_proto::v1::Edge;
        use prost::Message;
        let graph = |key: Vec<u8>, value: Vec<u8>| Record { key, value: Some(value), mark: 0, space: Space::Graph };
        let mut out = b"ns\0g\0".to_vec();
        out.push(GRAPH_OUT);
        for part in ["a", "knows"] {
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out.extend_from_slice(b"b");
        let edge = Edge { from: "a".into(), to: "b".into(), label: "knows".into(), version: 9, ..Default::default() };
        assert_eq!(checked_version(&graph(out.clone(), edge.encode_to_vec())), Ok(9));
        let inn = [b"ns\0g\0".as_slice(), &[GRAPH_IN], &out[b"ns\0g\0".len() + 1..]].concat();
        // The same bytes as an in-half belong to `a` by the key but to `b` by the edge.
        assert!(checked_version(&graph(inn, edge.encode_to_vec())).unwrap_err().contains("belongs to vertex"));
        let wild = Edge { version: u64::MAX, ..edge };
        assert!(checked_version(&graph(out, wild.encode_to_vec())).unwrap_err().contains("version is"));
    }

    #[tokio::test]
    async fn test_the_apply_path_refuses_unstorable_records_itself() {
        // Past the RPC's checks (a proposal already in the log): every replica
        // refuses the batch the same way, and the sequence stays where it was.
        let dir = tempfile::tempdir().unwrap();
        let config = crate::ShardConfig { id: "s1".into(), data_dir: dir.path().to_path_buf(), ..Default::default() };
        let shard = Shard::open(config).await.unwrap();
        shard.replication.bootstrap("127.0.0.1:1").await.unwrap();
        let key = codec::encode_key("default", b"k");
        let record = |value: Vec<u8>| Record { key: key.clone(), value: Some(value), mark: 0, space: Space::Kv };
        let good = record(codec::encode_value(7, 0, b"v"));
        for bad in [record(vec![0; 3]), record(codec::encode_value(u64::MAX, 0, b"v"))] {
            let err = shard.applier.apply_migration(Work::Ingest(vec![good.clone(), bad])).await.unwrap_err();
            assert!(err.to_string().starts_with("records: records[1]"), "{err}");
            assert_eq!(shard.applier.last_seq(), 0);
            assert_eq!(shard.store.get_cf(CF_KV, &key).unwrap(), None, "part of a refused batch was applied");
        }
        shard.applier.apply_migration(Work::Ingest(vec![good])).await.unwrap();
        assert_eq!(shard.applier.last_seq(), 7);
        shard.shutdown().await;
    }
}
