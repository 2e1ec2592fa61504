//! The gateway's current view of the cluster, replaced whole when the
//! topology changes.
//!
//! A request takes one [`Cluster`] snapshot and uses it to the end, so its
//! ring and shard list always agree. With a metadata group configured, a
//! watcher polls the shared document every [`WATCH_INTERVAL`] and swaps in
//! a new view when the epoch moves; a shard's typed "wrong epoch" answer
//! triggers an immediate refresh. [`LiveCluster::retry`] re-runs a request
//! on the new view when a shard says the gateway's ring is stale, and waits
//! out the short fence of a moving range.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::Mutex;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::kv::{partial, WriteOp, Written};
use crate::topology_store::{ClusterDoc, TopologyStore};
use omnishard_proto::v1::{Vertex, VertexWrite};

/// How often a gateway re-reads the shared topology.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// Longest a request keeps retrying redirects and fenced ranges.
pub const REDIRECT_BUDGET: Duration = Duration::from_secs(10);

/// The swappable cluster view plus, when configured, the shared store.
pub struct LiveCluster {
    current: ArcSwap<Cluster>,
    store: Option<TopologyStore>,
    /// Serialises refreshes so a burst of stale answers reads the store once.
    refreshing: Mutex<()>,
    /// This gateway's identity as a migration driver.
    pub(crate) id: String,
    /// The shared document as last read, for the rebalance metrics.
    last_doc: ArcSwapOption<ClusterDoc>,
}

impl LiveCluster {
    /// A view that never changes (no metadata group).
    pub fn fixed(cluster: Arc<Cluster>) -> Arc<LiveCluster> {
        Arc::new(LiveCluster {
            current: ArcSwap::new(cluster),
            store: None,
            refreshing: Mutex::new(()),
            id: gateway_id(),
            last_doc: ArcSwapOption::empty(),
        })
    }

    /// A view that follows `store`, starting from `cluster`.
    pub fn shared(cluster: Arc<Cluster>, store: TopologyStore) -> Arc<LiveCluster> {
        Arc::new(LiveCluster {
            current: ArcSwap::new(cluster),
            store: Some(store),
            refreshing: Mutex::new(()),
            id: gateway_id(),
            last_doc: ArcSwapOption::empty(),
        })
    }

    /// The view to serve one request with.
    pub fn current(&self) -> Arc<Cluster> {
        self.current.load_full()
    }

    /// The shared store, when configured.
    pub fn store(&self) -> Option<&TopologyStore> {
        self.store.as_ref()
    }

    /// The shared store, or the error an admin command gets without one.
    pub fn require_store(&self) -> Result<&TopologyStore> {
        self.store.as_ref().ok_or_else(|| {
            Error::InvalidArgument(omnishard_common::Error::Topology(
                "this gateway has no [meta] group configured: the topology is a static file, so shards cannot be added or removed online".into(),
            ))
        })
    }

    /// Adopts `doc`'s topology when it is newer than the current view.
    pub fn adopt(&self, doc: &ClusterDoc) -> Result<bool> {
        self.last_doc.store(Some(Arc::new(doc.clone())));
        let current = self.current();
        if doc.topology.epoch <= current.epoch() {
            return Ok(false);
        }
        let next = current.with_topology(&doc.topology)?;
        tracing::info!(
            from = current.epoch(),
            to = doc.topology.epoch,
            shards = doc.topology.shards.len(),
            "gateway switched ring"
        );
        self.current.store(Arc::new(next));
        Ok(true)
    }

    /// Re-reads the shared document now; whether the view changed.
    pub async fn refresh(&self) -> Result<bool> {
        let Some(store) = &self.store else { return Ok(false) };
        let before = self.current().epoch();
        let _one = self.refreshing.lock().await;
        if self.current().epoch() != before {
            return Ok(true); // another request refreshed meanwhile
        }
        match store.load().await? {
            Some((doc, _)) => self.adopt(&doc),
            None => Ok(false),
        }
    }

    /// Publishes, at every scrape, the ring epoch this gateway routes with
    /// and the migration it last read: `omnishard_ring_epoch`,
    /// `omnishard_rebalance_running` (1 while moving, paused or aborting),
    /// `omnishard_rebalance_paused`, `omnishard_rebalance_progress_percent`
    /// and per `{source, target}` `omnishard_rebalance_moved_keys` /
    /// `_moved_bytes` of the running (else the last) migration.
    pub fn publish_metrics(self: &Arc<Self>) {
        let metrics = &omnishard_telemetry::global().metrics;
        let epoch = metrics.gauge("ring_epoch", "The ring epoch this gateway routes with");
        let running = metrics.gauge("rebalance_running", "1 while a migration is moving, paused or aborting");
        let paused = metrics.gauge("rebalance_paused", "1 while the running migration is paused");
        let progress = metrics.gauge("rebalance_progress_percent", "How far the running migration is, in percent");
        let keys = metrics.gauge_vec(
            "rebalance_moved_keys",
            "Records moved by the running (else the last) migration",
            &["source", "target"],
        );
        let bytes = metrics.gauge_vec(
            "rebalance_moved_bytes",
            "Bytes moved by the running (else the last) migration",
            &["source", "target"],
        );
        let live = Arc::downgrade(self);
        metrics.on_scrape(move || {
            let Some(live) = live.upgrade() else { return };
            epoch.set(live.current().epoch() as i64);
            let Some(doc) = live.last_doc.load_full() else { return };
            let status = crate::rebalance::status_of(&doc);
            running.set(i64::from(doc.migration.is_some()));
            paused.set(i64::from(status.state == "paused"));
            progress.set((status.progress * 100.0).round() as i64);
            keys.reset();
            bytes.reset();
            for m in &status.moves {
                keys.with_label_values(&[m.source.as_str(), m.target.as_str()]).set(m.keys as i64);
                bytes.with_label_values(&[m.source.as_str(), m.target.as_str()]).set(m.bytes as i64);
            }
        });
    }

    /// Polls the shared document forever (spawn it).
    pub async fn watch(self: Arc<Self>) {
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            if let Err(e) = self.refresh().await {
                tracing::debug!(error = %e, "cannot read the shared topology; keeping the current ring");
            }
        }
    }

    /// Runs `call` on the current view; when a shard answers that the ring
    /// is stale, refreshes and runs it again on the new view; while a range
    /// is fenced, backs off and retries. Safe for writes: a rejected request
    /// was not applied anywhere.
    pub async fn retry<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(Arc<Cluster>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut redirects = Redirects::new();
        loop {
            let cluster = self.current();
            let epoch = cluster.epoch();
            let err = match call(cluster).await {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            // A multi-shard write that failed on some shards only is not
            // retried here: the others committed (see [`LiveCluster::write`]).
            if !self.wait_out(&err, epoch, &mut redirects).await {
                return Err(err);
            }
        }
    }

    /// Applies a batch write. Parts that a shard refused as misrouted or
    /// fenced were not applied, so only those are sent again, on the
    /// current ring; parts that committed are kept. A batch spanning a
    /// moving range thus completes instead of being partially applied.
    pub async fn write(&self, ns: &str, ops: Vec<WriteOp>) -> Result<Vec<Written>> {
        self.resend_refused(&ops, |cluster, part| async move { cluster.write_attempt(ns, &part).await })
            .await
            .map_err(|(committed, e)| partial(committed, e))
    }

    /// Creates or updates vertices (atomic per shard), re-sending only the
    /// shards' parts refused by a redirect or fence, like [`LiveCluster::write`].
    pub async fn write_vertices(&self, ns: &str, graph: &str, vertices: Vec<VertexWrite>) -> Result<Vec<Vertex>> {
        self.resend_refused(
            &vertices,
            |cluster, part| async move { cluster.write_vertices_attempt(ns, graph, &part).await },
        )
        .await
        .map_err(|(_, e)| e)
    }

    /// Runs `attempt` on the items not yet written until every part
    /// committed. Only parts refused by a redirect or fence (not applied) are
    /// sent again; a part that failed otherwise (a timeout may have
    /// committed) ends it with the shards that committed and the failure.
    async fn resend_refused<O, T, F, Fut>(
        &self,
        items: &[O],
        attempt: F,
    ) -> std::result::Result<Vec<T>, (Vec<String>, Error)>
    where
        O: Clone,
        F: Fn(Arc<Cluster>, Vec<O>) -> Fut,
        Fut: Future<Output = Result<PartsAttempt<T>>>,
    {
        let mut redirects = Redirects::new();
        let mut results: Vec<Option<T>> = (0..items.len()).map(|_| None).collect();
        let mut committed = Vec::new();
        loop {
            let pending: Vec<usize> = (0..items.len()).filter(|&i| results[i].is_none()).collect();
            let part: Vec<O> = pending.iter().map(|&i| items[i].clone()).collect();
            let cluster = self.current();
            let epoch = cluster.epoch();
            let mut pass = match attempt(cluster, part).await {
                Ok(pass) => pass,
                Err(e) => return Err((committed, e)),
            };
            // Only refusals are safe to send again: a part that timed out may have committed.
            let all_redirects = pass.failures.iter().all(Error::is_redirect);
            let failure = pass.take_failure();
            for (&i, result) in pending.iter().zip(pass.results) {
                results[i] = result;
            }
            committed.extend(pass.committed);
            let Some(err) = failure else {
                return Ok(results.into_iter().flatten().collect());
            };
            if !all_redirects || !self.wait_out(&err, epoch, &mut redirects).await {
                return Err((committed, err));
            }
        }
    }

    /// Whether a request that failed with `err` under `epoch` should run
    /// again, after refreshing the view or pausing as the error calls for.
    async fn wait_out(&self, err: &Error, epoch: u64, redirects: &mut Redirects) -> bool {
        let stale = match err {
            Error::Misrouted { shard_epoch, wrong_epoch, .. } => !*wrong_epoch || *shard_epoch > epoch,
            Error::Moving { .. } => false,
            _ => return false,
        };
        if self.store.is_none() || Instant::now() >= redirects.deadline {
            return false;
        }
        if stale {
            self.refresh().await.ok();
        }
        if self.current().epoch() == epoch {
            tokio::time::sleep(redirects.pause).await;
            redirects.pause = (redirects.pause * 2).min(Duration::from_millis(100));
        }
        true
    }
}

/// What one pass of a write split by shard did: each item's result where
/// its shard's part committed, the shards that committed, and the failures
/// of the other parts.
pub(crate) struct PartsAttempt<T> {
    pub results: Vec<Option<T>>,
    pub committed: Vec<String>,
    pub failures: Vec<Error>,
}

impl<T> PartsAttempt<T> {
    /// Nothing written yet, for `n` items.
    pub fn new(n: usize) -> PartsAttempt<T> {
        PartsAttempt { results: (0..n).map(|_| None).collect(), committed: Vec::new(), failures: Vec::new() }
    }

    /// The failure to report: the first that is not a redirect, else the first.
    pub fn take_failure(&mut self) -> Option<Error> {
        if self.failures.is_empty() {
            return None;
        }
        let index = self.failures.iter().position(|e| !e.is_redirect()).unwrap_or(0);
        Some(self.failures.swap_remove(index))
    }
}

/// One request's retry budget and next pause.
struct Redirects {
    deadline: Instant,
    pause: Duration,
}

impl Redirects {
    fn new() -> Redirects {
        Redirects { deadline: Instant::now() + REDIRECT_BUDGET, pause: Duration::from_millis(5) }
    }
}

/// A name for this gateway process in driver leases.
fn gateway_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "gateway".into());
    format!("{host}-{}-{:08x}", std::process::id(), rand::random::<u32>())
}
