//! Online scale-out: adding and removing shards while the cluster serves.
//!
//! `add_shard` / `remove_shard` only *record* the change in the shared
//! cluster document (a new target ring, epoch + 1). Every gateway runs
//! [`run`]; the one holding the document's lease drives the migration in
//! phases ([`Phase`]), saving its progress in the document as it goes:
//!
//! 1. **copy** — each source ships the records it loses, page by page from
//!    its saved cursor, throttled; the source marks every write to a moving
//!    key made meanwhile (see `omnishard_shard::migrate`).
//! 2. **catch-up** — rounds of shipping marked keys' current records until
//!    few remain.
//! 3. **fenced** — sources refuse writes to moving keys (retryable, the
//!    gateway retries them), the last marks are shipped, then the document
//!    switches to the new ring and every shard installs it.
//! 4. **cleanup** — sources delete what they handed over.
//!
//! A driver that dies leaves its lease to expire ([`LEASE`]); the next one
//! resumes from the saved phase and cursors. Every step is idempotent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use omnishard_common::placement::Ring;
use omnishard_common::stored::Space;
use omnishard_common::topology::{ShardAddr, Topology};
use omnishard_proto::v1::*;

use crate::cluster::ShardHandle;
use crate::error::{Error, Result};
use crate::live::LiveCluster;
use crate::replicas::ShardClient;
use crate::topology_store::{
    ClusterDoc, Lease, Migration, MoveProgress, Phase, SourceProgress, TopologyStore, DEFAULT_RATE,
};

/// How long a driver's claim lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(3);
/// Longest one ingest call may take (well inside the lease).
const INGEST_BOUND: Duration = Duration::from_secs(1);
/// How often the driver saves progress (and renews its lease).
const SAVE_EVERY: Duration = Duration::from_millis(500);
/// How often idle gateways look for work to drive.
const POLL: Duration = Duration::from_millis(200);
/// Records per copy page.
const PAGE_RECORDS: u32 = 2_000;
/// Bytes per copy page (at most).
const PAGE_BYTES: u64 = 1 << 20;
/// Catch-up stops (and the fence starts) below this many marks per round.
const FENCE_BELOW: usize = 2_000;
/// Most catch-up rounds before fencing anyway.
const MAX_ROUNDS: usize = 8;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn invalid(message: String) -> Error {
    Error::InvalidArgument(omnishard_common::Error::Topology(message))
}

/// Checks a shard address a caller gave: `host:port` with a numeric port,
/// usable as a gRPC endpoint. `field` names it in the error.
fn check_addr(field: &'static str, addr: &str) -> Result<()> {
    let bad = |why: String| Error::InvalidArgument(omnishard_common::Error::invalid(field, why));
    // Quoted in every refusal below: never more than an excerpt of it.
    let quoted = omnishard_common::query_text::excerpt(addr, 128);
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(bad(format!("{quoted:?} is not host:port (the port is missing)")));
    };
    if host.is_empty() {
        return Err(bad(format!("{quoted:?} is not host:port (the host is missing)")));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => {}
        _ => return Err(bad(format!("{quoted:?} is not host:port (the port is not 1-65535)"))),
    }
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| bad(format!("{quoted:?} is not host:port ({e})")))?;
    Ok(())
}

/// The refusal of adding a shard whose id or address the topology already has.
fn already_in(topology: &Topology, shard: &ShardAddr) -> Option<Error> {
    let taken = topology.shards.iter().find(|s| s.id == shard.id || s.replica_addrs().contains(&shard.addr))?;
    let message = if taken.id == shard.id {
        format!(
            "shard {:?} is already in the topology (epoch {}, at {}); pick another id, or remove it first",
            shard.id, topology.epoch, taken.addr
        )
    } else {
        format!("addr: {} is already shard {:?}'s address (epoch {})", shard.addr, taken.id, topology.epoch)
    };
    Some(Error::AlreadyExists(message))
}

/// The refusal of removing a shard the topology does not have.
fn not_in(topology: &Topology, id: &str) -> Error {
    let ids: Vec<&str> = topology.shards.iter().map(|s| s.id.as_str()).collect();
    let id = omnishard_common::query_text::excerpt(id, 64);
    Error::NotFound {
        what: format!("{id:?} is not in the topology (epoch {} has {}); shard {id:?}", topology.epoch, ids.join(", ")),
    }
}

/// The cluster document, which must exist for a change to be recorded.
async fn current_doc(store: &TopologyStore) -> Result<ClusterDoc> {
    store.load().await?.map(|(doc, _)| doc).ok_or_else(|| {
        invalid("the metadata group holds no cluster document yet; start a gateway with this [meta] first".into())
    })
}

/// Records a new shard joining: the next epoch's ring includes it.
pub async fn add_shard(live: &LiveCluster, shard: ShardAddr, rate: Option<u64>) -> Result<ClusterDoc> {
    let store = live.require_store()?;
    // The request itself first: nothing is called or written for a bad one.
    omnishard_common::topology::check_shard_id(&shard.id)?;
    check_addr("addr", &shard.addr)?;
    for addr in &shard.replicas {
        check_addr("replicas", addr)?;
    }
    if let Some(refused) = already_in(&current_doc(store).await?.topology, &shard) {
        return Err(refused);
    }
    // The shard must be up and be the one named, before anything is recorded.
    let settings = live.current().settings.clone();
    let stats = ShardClient::new(&shard, &settings)?.stats().await?;
    if stats.shard_id != shard.id {
        return Err(invalid(format!(
            "the shard listening at {} is {:?}, not {:?}",
            shard.addr, stats.shard_id, shard.id
        )));
    }
    check_movable(live).await?;
    let (doc, ()) = store
        .update(|doc| {
            busy(doc)?;
            if let Some(refused) = already_in(&doc.topology, &shard) {
                return Err(refused);
            }
            let mut target = doc.topology.clone();
            target.epoch += 1;
            target.shards.push(shard.clone());
            target.validate()?;
            start(doc, target, format!("add {}", shard.id), rate);
            Ok((true, ()))
        })
        .await?;
    Ok(doc)
}

/// Records a shard leaving: its ranges move to the others, then it is out.
pub async fn remove_shard(live: &LiveCluster, id: &str, rate: Option<u64>) -> Result<ClusterDoc> {
    let store = live.require_store()?;
    // Which shard first: other shards' state says nothing about a missing one.
    let doc = current_doc(store).await?;
    if doc.topology.shard(id).is_none() {
        return Err(not_in(&doc.topology, id));
    }
    check_movable(live).await?;
    let (doc, ()) = store
        .update(|doc| {
            busy(doc)?;
            if doc.topology.shard(id).is_none() {
                return Err(not_in(&doc.topology, id));
            }
            if doc.topology.shards.len() == 1 {
                return Err(invalid(format!("shard {id:?} is the last shard; a cluster needs at least one")));
            }
            let mut target = doc.topology.clone();
            target.epoch += 1;
            target.shards.retain(|s| s.id != id);
            start(doc, target, format!("remove {id}"), rate);
            Ok((true, ()))
        })
        .await?;
    Ok(doc)
}

/// Pauses or resumes the migration and/or changes its throttle.
pub async fn control(live: &LiveCluster, paused: Option<bool>, rate: Option<u64>) -> Result<ClusterDoc> {
    let store = live.require_store()?;
    if rate == Some(0) {
        return Err(Error::InvalidArgument(omnishard_common::Error::invalid("rate", "must be more than 0 bytes/s")));
    }
    let (doc, ()) = store
        .update(|doc| {
            let Some(m) = doc.migration.as_mut() else {
                return Err(invalid("nothing is moving: no migration to pause, resume or throttle".into()));
            };
            if let Some(paused) = paused {
                m.paused = paused;
            }
            if let Some(rate) = rate {
                m.rate_bytes_per_sec = rate;
            }
            Ok((true, ()))
        })
        .await?;
    Ok(doc)
}

/// Aborts the running migration if its ring has not switched yet: the
/// driver then rolls it back (sources forget it, targets delete the copies)
/// and the topology stays as it was. After the switch the way back is
/// another change (`remove-shard` of an added shard, `add-shard` again).
pub async fn abort(live: &LiveCluster) -> Result<ClusterDoc> {
    let store = live.require_store()?;
    let (doc, ()) = store
        .update(|doc| {
            let Some(m) = doc.migration.as_mut() else {
                return Err(invalid("nothing is moving: no migration to abort".into()));
            };
            match m.phase {
                Phase::Copy | Phase::CatchUp | Phase::Fenced => {
                    m.phase = Phase::Aborting;
                    m.paused = false;
                    Ok((true, ()))
                }
                Phase::Aborting | Phase::Aborted => Ok((false, ())),
                Phase::Cleanup | Phase::Done => Err(invalid(format!(
                    "migration {} already switched the ring to epoch {}; undo it with another add-shard or remove-shard",
                    m.id, m.target.epoch
                ))),
            }
        })
        .await?;
    Ok(doc)
}

/// The shared document, for `rebalance status`.
pub async fn status(live: &LiveCluster) -> Result<ClusterDoc> {
    let store = live.require_store()?;
    store
        .load()
        .await?
        .map(|(doc, _)| doc)
        .ok_or_else(|| invalid("the metadata group holds no cluster document".into()))
}

/// The document as `rebalance status` shows it.
pub fn status_of(doc: &ClusterDoc) -> RebalanceStatusResponse {
    let mut out = RebalanceStatusResponse { epoch: doc.topology.epoch, ..Default::default() };
    let (migration, state) = match (&doc.migration, &doc.last_finished) {
        (Some(m), _) if m.phase == Phase::Aborting => (m, "aborting"),
        (Some(m), _) => (m, if m.paused { "paused" } else { "moving" }),
        (None, Some(m)) => (m, "done"),
        (None, None) => {
            out.state = "done".into();
            out.phase = Phase::Done.name().into();
            return out;
        }
    };
    out.state = state.into();
    out.migration_id = migration.id;
    out.reason = migration.reason.clone();
    out.phase = match (state, migration.phase) {
        ("done", Phase::Aborted) => Phase::Aborted.name().into(),
        ("done", _) => Phase::Done.name().into(),
        (_, phase) => phase.name().into(),
    };
    out.target_epoch = migration.target.epoch;
    out.rate_bytes_per_sec = migration.rate_bytes_per_sec;
    out.moves = migration
        .moves
        .iter()
        .map(|m| RebalanceMove { source: m.source.clone(), target: m.target.clone(), keys: m.keys, bytes: m.bytes })
        .collect();
    let end = if state == "done" { migration.updated_ms } else { now_ms() };
    out.elapsed_ms = end.saturating_sub(migration.started_ms);
    let bytes: u64 = migration.moves.iter().map(|m| m.bytes).sum();
    if out.elapsed_ms > 0 {
        out.bytes_per_sec = bytes as f64 * 1000.0 / out.elapsed_ms as f64;
    }
    out.progress = progress(migration);
    if state != "done" && out.progress > 0.0 && out.progress < 1.0 {
        out.eta_seconds = out.elapsed_ms as f64 / 1000.0 * (1.0 - out.progress) / out.progress;
    }
    out.driver = doc.lease.as_ref().map(|l| l.holder.clone()).unwrap_or_default();
    out.last_error = migration.last_error.clone();
    out
}

/// How far along a migration is: the copy by records looked at (most of
/// the work), then a share for each later phase.
fn progress(m: &Migration) -> f64 {
    let copy = {
        let (scanned, estimated) = m.sources.iter().fold((0u64, 0u64), |(s, e), p| {
            if p.copied {
                (s + p.scanned.max(1), e + p.scanned.max(1))
            } else {
                (s + p.scanned, e + p.estimated_keys.max(p.scanned))
            }
        });
        if estimated == 0 {
            0.0
        } else {
            scanned as f64 / estimated as f64
        }
    };
    match m.phase {
        Phase::Copy => 0.9 * copy,
        Phase::CatchUp => 0.92,
        Phase::Fenced => 0.95,
        Phase::Cleanup => 0.97,
        Phase::Done | Phase::Aborting | Phase::Aborted => 1.0,
    }
}

/// Refuses a change while any shard holds data of a model that does not
/// move yet (search, files): better refused up front than stuck.
async fn check_movable(live: &LiveCluster) -> Result<()> {
    let cluster = live.current();
    let calls = cluster.shards.iter().map(|h| h.client.clone().stats());
    for stats in futures::future::join_all(calls).await {
        let stats = stats?;
        if !stats.non_kv_model.is_empty() {
            return Err(Error::InvalidArgument(omnishard_common::Error::Topology(format!(
                "shard {} holds {} data; online migration moves KV and graph data only so far, so shards cannot be added or removed on this cluster",
                stats.shard_id, stats.non_kv_model
            ))));
        }
    }
    Ok(())
}

fn busy(doc: &ClusterDoc) -> Result<()> {
    match &doc.migration {
        Some(m) => Err(Error::InvalidArgument(omnishard_common::Error::Topology(format!(
            "migration {} ({}) is still running; wait for `admin rebalance status` to say done",
            m.id, m.reason
        )))),
        None => Ok(()),
    }
}

/// Puts a new migration to `target` into `doc`.
fn start(doc: &mut ClusterDoc, target: Topology, reason: String, rate: Option<u64>) {
    let (sources, moves) = plan(&doc.topology, &target);
    doc.last_migration_id += 1;
    let now = now_ms();
    doc.migration = Some(Migration {
        id: doc.last_migration_id,
        reason,
        target,
        phase: Phase::Copy,
        paused: false,
        rate_bytes_per_sec: rate.unwrap_or(DEFAULT_RATE),
        sources,
        moves,
        started_ms: now,
        updated_ms: now,
        last_error: String::new(),
    });
}

/// Which shards give ranges away and which pairs move data. Consistent
/// hashing moves ranges only to added shards and only from removed ones.
fn plan(from: &Topology, to: &Topology) -> (Vec<SourceProgress>, Vec<MoveProgress>) {
    let added: Vec<&str> = to.shards.iter().filter(|s| from.shard(&s.id).is_none()).map(|s| s.id.as_str()).collect();
    let removed: Vec<&str> = from.shards.iter().filter(|s| to.shard(&s.id).is_none()).map(|s| s.id.as_str()).collect();
    let mut moves = Vec::new();
    for old in &from.shards {
        let leaving = removed.contains(&old.id.as_str());
        for new in &to.shards {
            if new.id != old.id && (leaving || added.contains(&new.id.as_str())) {
                moves.push(MoveProgress { source: old.id.clone(), target: new.id.clone(), keys: 0, bytes: 0 });
            }
        }
    }
    let mut sources: Vec<SourceProgress> = Vec::new();
    for m in &moves {
        if !sources.iter().any(|s| s.shard == m.source) {
            sources.push(SourceProgress {
                shard: m.source.clone(),
                cursor: String::new(),
                copied: false,
                scanned: 0,
                estimated_keys: 0,
            });
        }
    }
    (sources, moves)
}

/// Drives migrations whenever this gateway holds (or can take) the lease.
pub async fn run(live: Arc<LiveCluster>) {
    let Some(store) = live.store().cloned() else { return };
    configure_fail_points();
    loop {
        tokio::time::sleep(POLL).await;
        match claim(&live, &store).await {
            Ok(Some(driver)) => {
                let id = driver.migration.id;
                match driver.drive().await {
                    Ok(()) => {}
                    // Not a failure: the next claim finds the phase `aborting` and rolls back.
                    Err(Error::Aborted { .. }) => tracing::info!(migration = id, "migration aborted; rolling back"),
                    Err(e) => {
                        tracing::warn!(migration = id, error = %e, "migration step failed; retrying");
                        record_error(&store, &live.id, id, &e).await;
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the cluster document"),
        }
    }
}

/// Takes the lease when a migration waits for a driver.
async fn claim(live: &Arc<LiveCluster>, store: &TopologyStore) -> Result<Option<Driver>> {
    let Some((mut doc, version)) = store.load().await? else { return Ok(None) };
    live.adopt(&doc)?;
    let Some(migration) = doc.migration.clone() else { return Ok(None) };
    let now = now_ms();
    if let Some(lease) = &doc.lease {
        if lease.holder != live.id && lease.until_ms > now {
            return Ok(None);
        }
    }
    doc.lease = Some(Lease { holder: live.id.clone(), until_ms: now + LEASE.as_millis() as u64 });
    if store.store(&doc, version).await?.is_err() {
        return Ok(None);
    }
    tracing::info!(migration = migration.id, phase = migration.phase.name(), "driving migration");
    Ok(Some(Driver {
        live: live.clone(),
        store: store.clone(),
        previous: doc.topology.clone(),
        migration,
        last_save: Instant::now(),
        copied_bytes: 0,
        copy_started: Instant::now(),
    }))
}

async fn record_error(store: &TopologyStore, holder: &str, id: u64, e: &Error) {
    let message = e.to_string();
    let _ = store
        .update(|doc| {
            let mine = doc.lease.as_ref().is_some_and(|l| l.holder == holder);
            match doc.migration.as_mut() {
                Some(m) if mine && m.id == id => {
                    m.last_error = message.clone();
                    Ok((true, ()))
                }
                _ => Ok((false, ())),
            }
        })
        .await;
}

/// The driver of one migration while it holds the lease.
struct Driver {
    live: Arc<LiveCluster>,
    store: TopologyStore,
    /// The topology before the change.
    previous: Topology,
    migration: Migration,
    last_save: Instant,
    copied_bytes: u64,
    copy_started: Instant,
}

impl Driver {
    async fn drive(mut self) -> Result<()> {
        let target_ring = self.migration.target.ring()?;
        if matches!(self.migration.phase, Phase::Copy | Phase::CatchUp | Phase::Fenced | Phase::Aborting) {
            self.announce_to_targets().await?;
        }
        loop {
            match self.migration.phase {
                Phase::Copy => self.copy(&target_ring).await?,
                Phase::CatchUp => self.catch_up(&target_ring).await?,
                Phase::Fenced => self.fence_and_switch(&target_ring).await?,
                Phase::Cleanup => self.cleanup().await?,
                Phase::Aborting => self.roll_back().await?,
                Phase::Done | Phase::Aborted => return Ok(()),
            }
        }
    }

    /// A handle for shard `id` as the *target* topology knows it (a
    /// removed shard: as the previous one did).
    fn handle(&self, id: &str) -> Result<ShardHandle> {
        let (shard, topology) = match self.migration.target.shard(id) {
            Some(shard) => (shard, &self.migration.target),
            None => (
                self.previous.shard(id).ok_or_else(|| invalid(format!("shard {id:?} is in neither topology")))?,
                &self.previous,
            ),
        };
        let cluster = self.live.current();
        let client = cluster
            .shards
            .iter()
            .find(|h| h.client.id() == id)
            .map(|h| h.client.clone())
            .map_or_else(|| ShardClient::new(shard, &cluster.settings), Ok)?;
        Ok(ShardHandle::new(client, topology))
    }

    fn begin_request(&self, fence: bool) -> MigrateBeginRequest {
        MigrateBeginRequest {
            migration_id: self.migration.id,
            target: Some(InstallTopologyRequest::from(&self.migration.target)),
            fence,
            incoming: false,
        }
    }

    /// Tells every shard that gains ranges that it receives records in this
    /// migration: its ingests and drops are refused otherwise. Idempotent,
    /// so every driver that takes over does it again.
    async fn announce_to_targets(&self) -> Result<()> {
        let mut targets: Vec<&str> = self.migration.moves.iter().map(|m| m.target.as_str()).collect();
        targets.sort_unstable();
        targets.dedup();
        let req = MigrateBeginRequest { incoming: true, ..self.begin_request(false) };
        for target in targets {
            self.handle(target)?.client.clone().migrate_begin(req.clone()).await?;
        }
        Ok(())
    }

    /// Copies every source's moving records from its cursor on.
    async fn copy(&mut self, ring: &Ring) -> Result<()> {
        for i in 0..self.migration.sources.len() {
            if self.migration.sources[i].copied {
                continue;
            }
            let source_id = self.migration.sources[i].shard.clone();
            let source = self.handle(&source_id)?;
            source.client.clone().migrate_begin(self.begin_request(false)).await?;
            if self.migration.sources[i].cursor.is_empty() {
                self.migration.sources[i].estimated_keys = source.client.clone().stats().await?.key_count;
                self.drop_incoming(&source_id).await?;
            }
            loop {
                self.wait_while_paused().await?;
                let after = hex::decode(&self.migration.sources[i].cursor).unwrap_or_default();
                let req = MigrateExportRequest {
                    migration_id: self.migration.id,
                    after,
                    max_records: PAGE_RECORDS,
                    max_bytes: PAGE_BYTES,
                };
                let page = source.client.clone().migrate_export(req).await?;
                let bytes = self.ship(&source_id, ring, page.records, false).await?;
                let progress = &mut self.migration.sources[i];
                progress.cursor = hex::encode(&page.next);
                progress.scanned += page.scanned;
                if page.done {
                    progress.copied = true;
                }
                self.throttle(bytes).await;
                if page.done {
                    break;
                }
                self.save_soon().await?;
            }
            self.save().await?;
        }
        self.migration.phase = Phase::CatchUp;
        self.save().await
    }

    /// Deletes what an earlier, unfinished attempt left on the targets.
    async fn drop_incoming(&mut self, source: &str) -> Result<()> {
        let targets: Vec<String> =
            self.migration.moves.iter().filter(|m| m.source == source).map(|m| m.target.clone()).collect();
        for target in targets {
            let handle = self.handle(&target)?;
            loop {
                let req = MigrateDropRequest {
                    mode: MigrateDropMode::Incoming as i32,
                    before: Some(InstallTopologyRequest::from(&self.previous)),
                    after: Some(InstallTopologyRequest::from(&self.migration.target)),
                    source: source.to_string(),
                    max_records: 1_000,
                    migration_id: self.migration.id,
                };
                // Bounded by the lease like an ingest: a stalled driver must
                // not delete what its successor copied since.
                self.renew_if_half_gone().await?;
                let call = handle.client.clone().migrate_drop(req);
                let done = tokio::time::timeout(INGEST_BOUND, call).await.map_err(|_| Error::ShardTimeout {
                    shard_id: target.clone(),
                    message: format!("dropping leftovers took over {INGEST_BOUND:?} (bounded by the driver's lease)"),
                })??;
                if done.done {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Sends records to their new owners; with `ack`, then forgets their
    /// marks on the source. Returns the bytes shipped.
    async fn ship(&mut self, source: &str, ring: &Ring, records: Vec<MigrateRecord>, ack: bool) -> Result<u64> {
        let mut by_target: HashMap<usize, Vec<MigrateRecord>> = HashMap::new();
        for record in records {
            let Some((ns, key)) = Space::from_wire(record.space).and_then(|space| space.owner_of(&record.key)) else {
                continue;
            };
            by_target.entry(ring.owner_index(ns, key)).or_default().push(record);
        }
        let mut total = 0u64;
        let mut marks = Vec::new();
        for (index, records) in by_target {
            let target = ring.shard_ids()[index].to_string();
            if ack {
                marks.extend(records.iter().map(|r| MigrateRecord {
                    key: r.key.clone(),
                    mark: r.mark,
                    space: r.space,
                    ..Default::default()
                }));
            }
            if target == source {
                continue; // marked, yet staying: nothing to ship
            }
            let bytes: u64 = records.iter().map(|r| (r.key.len() + r.value.len()) as u64).sum();
            let count = records.len() as u64;
            let req = MigrateIngestRequest {
                migration_id: self.migration.id,
                records,
                target_epoch: self.migration.target.epoch,
                target_shard: target.clone(),
            };
            self.ingest(&target, req).await?;
            if let Some(m) = self.migration.moves.iter_mut().find(|m| m.source == source && m.target == target) {
                m.keys += count;
                m.bytes += bytes;
            }
            total += bytes;
        }
        if !marks.is_empty() {
            let req = MigrateAckRequest { migration_id: self.migration.id, marks };
            self.handle(source)?.client.clone().migrate_ack(req).await?;
        }
        Ok(total)
    }

    /// Sends one batch to a target only while this driver's lease surely
    /// lasts: the lease is renewed first once a third of it is gone, and the
    /// call is bounded to [`INGEST_BOUND`]. So a driver that stalled and lost
    /// its lease never writes an old copy over what its successor shipped.
    async fn ingest(&mut self, target: &str, req: MigrateIngestRequest) -> Result<()> {
        self.renew_if_half_gone().await?;
        let call = self.handle(target)?.client.clone().migrate_ingest(req);
        match tokio::time::timeout(INGEST_BOUND, call).await {
            Ok(done) => done.map(|_| ()),
            Err(_) => Err(Error::ShardTimeout {
                shard_id: target.to_string(),
                message: format!("ingest took over {INGEST_BOUND:?} (bounded by the driver's lease)"),
            }),
        }
    }

    /// Renews the lease when less than two call bounds of it are left (the
    /// lease is 3 s, a bounded call 1 s: renewed after 1 s).
    async fn renew_if_half_gone(&mut self) -> Result<()> {
        if self.last_save.elapsed() >= LEASE - INGEST_BOUND * 2 {
            self.save().await?;
        }
        Ok(())
    }

    /// Ships up to one page of marks from every source; how many were shipped.
    async fn drain_round(&mut self, ring: &Ring) -> Result<usize> {
        let mut shipped = 0;
        for i in 0..self.migration.sources.len() {
            let source_id = self.migration.sources[i].shard.clone();
            let source = self.handle(&source_id)?;
            let req = MigrateDirtyRequest { migration_id: self.migration.id, max_records: 5_000 };
            let page = source.client.clone().migrate_dirty(req).await?;
            shipped += page.records.len();
            let bytes = self.ship(&source_id, ring, page.records, true).await?;
            self.throttle(bytes).await;
        }
        Ok(shipped)
    }

    /// Ships writes made during the copy until few remain.
    async fn catch_up(&mut self, ring: &Ring) -> Result<()> {
        for _ in 0..MAX_ROUNDS {
            self.wait_while_paused().await?;
            let shipped = self.drain_round(ring).await?;
            self.save_soon().await?;
            if shipped < FENCE_BELOW {
                break;
            }
        }
        self.migration.phase = Phase::Fenced;
        self.save().await
    }

    /// Fences moving keys, ships the last marks, switches the ring.
    async fn fence_and_switch(&mut self, ring: &Ring) -> Result<()> {
        let fence_started = Instant::now();
        for source in self.migration.sources.clone() {
            self.handle(&source.shard)?.client.clone().migrate_begin(self.begin_request(true)).await?;
        }
        hold_at("rebalance-fenced").await;
        while self.drain_round(ring).await? > 0 {}
        // The switch: one compare-and-set makes the new ring current for every gateway.
        let target = self.migration.target.clone();
        self.migration.phase = Phase::Cleanup;
        let holder = self.live.id.clone();
        let migration = self.migration.clone();
        let (doc, ()) = self
            .store
            .update(|doc| {
                check_lease(doc, &holder, migration.id)?;
                check_not_aborted(doc)?;
                doc.topology = target.clone();
                doc.migration = Some(migration.clone());
                Ok((true, ()))
            })
            .await?;
        self.live.adopt(&doc)?;
        hold_at("rebalance-switched").await;
        self.install_everywhere().await?;
        tracing::info!(
            migration = self.migration.id,
            epoch = target.epoch,
            fenced_ms = fence_started.elapsed().as_millis() as u64,
            "ring switched"
        );
        Ok(())
    }

    /// Installs the target topology on every shard it lists.
    async fn install_everywhere(&self) -> Result<()> {
        let install = InstallTopologyRequest::from(&self.migration.target);
        for shard in &self.migration.target.shards {
            self.handle(&shard.id)?.client.clone().install_topology(install.clone()).await?;
        }
        Ok(())
    }

    /// Sources delete what they handed over; then the migration is done.
    async fn cleanup(&mut self) -> Result<()> {
        self.install_everywhere().await?;
        hold_at("rebalance-cleanup").await;
        for source in self.migration.sources.clone() {
            if self.migration.target.shard(&source.shard).is_none() {
                continue; // a removed shard keeps its copy until the operator stops it
            }
            self.drop_unowned(&source.shard).await?;
        }
        self.finish(Phase::Done).await?;
        tracing::info!(migration = self.migration.id, reason = %self.migration.reason, "migration done");
        Ok(())
    }

    /// Has `shard` delete, page by page, what its installed ring gives to
    /// others, then forget the migration (marks, fence, state).
    async fn drop_unowned(&mut self, shard: &str) -> Result<()> {
        let handle = self.handle(shard)?;
        loop {
            let req = MigrateDropRequest {
                mode: MigrateDropMode::Unowned as i32,
                before: None,
                after: None,
                source: String::new(),
                max_records: 5_000,
                migration_id: self.migration.id,
            };
            if handle.client.clone().migrate_drop(req).await?.done {
                return Ok(());
            }
            self.save_soon().await?;
        }
    }

    /// Ends the migration in `phase` (done or aborted): it becomes the last
    /// finished one and the lease is released.
    async fn finish(&mut self, phase: Phase) -> Result<()> {
        self.migration.phase = phase;
        let holder = self.live.id.clone();
        let mut finished = self.migration.clone();
        finished.updated_ms = now_ms();
        self.store
            .update(|doc| {
                check_lease(doc, &holder, finished.id)?;
                doc.migration = None;
                doc.lease = None;
                doc.last_finished = Some(finished.clone());
                Ok((true, ()))
            })
            .await?;
        Ok(())
    }

    /// Sleeps so the bytes shipped since the copy started stay under the rate.
    async fn throttle(&mut self, bytes: u64) {
        self.copied_bytes += bytes;
        let rate = self.migration.rate_bytes_per_sec.max(1);
        let due = Duration::from_secs_f64(self.copied_bytes as f64 / rate as f64);
        let elapsed = self.copy_started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }

    /// While paused, keeps the lease and waits.
    async fn wait_while_paused(&mut self) -> Result<()> {
        while self.migration.paused {
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.save().await?;
        }
        Ok(())
    }

    async fn save_soon(&mut self) -> Result<()> {
        if self.last_save.elapsed() >= SAVE_EVERY {
            self.save().await?;
        }
        Ok(())
    }

    /// Writes progress and renews the lease; picks up pause and throttle
    /// changes made meanwhile. Fails if another driver took over.
    async fn save(&mut self) -> Result<()> {
        let holder = self.live.id.clone();
        let mut mine = self.migration.clone();
        mine.updated_ms = now_ms();
        let (doc, ()) = self
            .store
            .update(|doc| {
                check_lease(doc, &holder, mine.id)?;
                if let Some(stored) = &doc.migration {
                    mine.paused = stored.paused;
                    mine.rate_bytes_per_sec = stored.rate_bytes_per_sec;
                    if stored.phase == Phase::Aborting {
                        mine.phase = Phase::Aborting;
                    }
                }
                doc.lease = Some(Lease { holder: holder.clone(), until_ms: now_ms() + LEASE.as_millis() as u64 });
                doc.migration = Some(mine.clone());
                Ok((true, ()))
            })
            .await?;
        if let Some(stored) = doc.migration {
            if stored.rate_bytes_per_sec != self.migration.rate_bytes_per_sec {
                // A new throttle applies from now on.
                self.copied_bytes = 0;
                self.copy_started = Instant::now();
            }
            self.migration.paused = stored.paused;
            self.migration.rate_bytes_per_sec = stored.rate_bytes_per_sec;
            if stored.phase == Phase::Aborting && self.migration.phase != Phase::Aborting {
                // The operator aborted: stop this step; the drive loop rolls back.
                self.migration.phase = Phase::Aborting;
                self.last_save = Instant::now();
                return Err(Error::Aborted { migration: self.migration.id });
            }
        }
        self.last_save = Instant::now();
        Ok(())
    }

    /// Undoes a migration that never switched: every source forgets it
    /// (marks, fence, state; the installed ring still gives it all its
    /// records, so nothing is deleted there), then every target deletes the
    /// copies it took in. The topology stays; the migration ends `aborted`.
    async fn roll_back(&mut self) -> Result<()> {
        for source in self.migration.sources.clone() {
            self.drop_unowned(&source.shard).await?;
        }
        for source in self.migration.sources.clone() {
            self.drop_incoming(&source.shard).await?;
        }
        self.finish(Phase::Aborted).await?;
        tracing::info!(migration = self.migration.id, "migration aborted and rolled back");
        Ok(())
    }
}

/// Fault injection for crash tests: `FAILPOINTS` (the `fail` crate's
/// syntax, e.g. `rebalance-fenced=return(4000)`) makes the driver hold that
/// many milliseconds at a step, so a test can kill processes exactly there.
/// The steps: `rebalance-fenced` (moving keys fenced, ring not switched),
/// `rebalance-switched` (ring switched, not yet installed on the shards),
/// `rebalance-cleanup` (before sources delete what they handed over).
fn configure_fail_points() {
    let Ok(spec) = std::env::var("FAILPOINTS") else { return };
    for entry in spec.split(';').filter(|e| !e.trim().is_empty()) {
        let configured = match entry.split_once('=') {
            Some((name, actions)) => fail::cfg(name.trim(), actions.trim()),
            None => Err("expected name=actions".to_string()),
        };
        match configured {
            Ok(()) => tracing::warn!(fail_point = entry, "fail point configured"),
            Err(e) => tracing::error!(fail_point = entry, error = %e, "FAILPOINTS entry ignored"),
        }
    }
}

/// Holds the driver at `step` when a fail point there says so (see [`configure_fail_points`]).
async fn hold_at(step: &str) {
    let held = (|| {
        fail::fail_point!(step, |ms: Option<String>| ms.and_then(|ms| ms.parse::<u64>().ok()));
        None
    })();
    if let Some(ms) = held {
        tracing::warn!(step, ms, "fail point holds the migration driver");
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Refuses the switch once the operator aborted (the abort and the switch
/// are both compare-and-sets of the document, so one of them wins).
fn check_not_aborted(doc: &ClusterDoc) -> Result<()> {
    match &doc.migration {
        Some(m) if m.phase == Phase::Aborting => Err(Error::Aborted { migration: m.id }),
        _ => Ok(()),
    }
}

fn check_lease(doc: &ClusterDoc, holder: &str, id: u64) -> Result<()> {
    let mine = doc.lease.as_ref().is_some_and(|l| l.holder == holder);
    let same = doc.migration.as_ref().is_some_and(|m| m.id == id);
    if mine && same {
        Ok(())
    } else {
        Err(Error::Exhausted(format!("migration {id}: this gateway lost its lease to another driver")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(ids: &[&str], epoch: u64) -> Topology {
        Topology {
            epoch,
            vnodes: 16,
            shards: ids
                .iter()
                .enumerate()
                .map(|(i, id)| ShardAddr::new(*id, format!("127.0.0.1:{}", 7401 + i)))
                .collect(),
        }
    }

    #[test]
    fn test_plan_moves_only_to_added_and_from_removed_shards() {
        let (sources, moves) = plan(&topology(&["a", "b", "c"], 1), &topology(&["a", "b", "c", "d"], 2));
        assert_eq!(sources.iter().map(|s| s.shard.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(moves.iter().all(|m| m.target == "d"));
        assert_eq!(moves.len(), 3);

        let (sources, moves) = plan(&topology(&["a", "b", "c"], 1), &topology(&["a", "c"], 2));
        assert_eq!(sources.iter().map(|s| s.shard.as_str()).collect::<Vec<_>>(), ["b"]);
        assert_eq!(moves.iter().map(|m| m.target.as_str()).collect::<Vec<_>>(), ["a", "c"]);
    }

    #[test]
    fn test_admin_refusals_carry_the_right_code_and_field() {
        for bad in ["h", "h:", ":1", "h:0", "h:65536", "h:port", "a b:1"] {
            let err = check_addr("addr", bad).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}");
            assert!(err.to_string().starts_with("addr: ") && err.to_string().contains(bad), "{err}");
        }
        check_addr("addr", "localhost:7401").unwrap();
        check_addr("addr", "[::1]:7401").unwrap();
        let t = topology(&["a", "b"], 3);
        let again = already_in(&t, &ShardAddr::new("a", "10.0.0.9:1")).unwrap();
        assert_eq!(again.code(), tonic::Code::AlreadyExists);
        assert!(again.to_string().contains("\"a\" is already in the topology"), "{again}");
        let taken = already_in(&t, &ShardAddr::new("c", "127.0.0.1:7402")).unwrap();
        assert!(taken.to_string().starts_with("addr: ") && taken.to_string().contains("\"b\""), "{taken}");
        assert!(already_in(&t, &ShardAddr::new("c", "127.0.0.1:7409")).is_none());
        let missing = not_in(&t, "z");
        assert_eq!(missing.code(), tonic::Code::NotFound);
        assert!(missing.to_string().contains("\"z\" is not in the topology (epoch 3 has a, b)"), "{missing}");
    }

    #[test]
    fn test_lease_check_names_the_loss() {
        let mut doc = ClusterDoc {
            topology: topology(&["a"], 1),
            migration: None,
            lease: Some(Lease { holder: "g1".into(), until_ms: u64::MAX }),
            last_migration_id: 0,
            last_finished: None,
        };
        start(&mut doc, topology(&["a", "b"], 2), "add b".into(), None);
        assert!(check_lease(&doc, "g1", 1).is_ok());
        assert!(check_lease(&doc, "g2", 1).unwrap_err().to_string().contains("lost its lease"));
        assert!(check_lease(&doc, "g1", 2).is_err());
        assert_eq!(doc.migration.as_ref().unwrap().rate_bytes_per_sec, DEFAULT_RATE);
    }
}
