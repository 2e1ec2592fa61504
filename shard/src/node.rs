//! One shard: its store, its apply path, its ownership, and the separate
//! capacity pools that keep heavy work from starving point operations.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use omnishard_common::topology::Topology;
use prost::Message;
use tokio::sync::Semaphore;

use crate::apply::Applier;
use crate::config::ShardConfig;
use crate::error::{Error, Result};
use crate::files::leases::ReadLeases;
use crate::ownership::Ownership;
use crate::search::index::Registry;
use crate::search::indexer::Indexer;
use crate::store::{Store, META_TOPOLOGY};
use omnishard_proto::v1::InstallTopologyRequest;

/// A running shard. Share it as `Arc<Shard>`.
pub struct Shard {
    pub(crate) config: ShardConfig,
    pub(crate) store: Store,
    pub(crate) applier: Applier,
    pub(crate) ownership: Ownership,
    /// Blocking-thread budget for point reads.
    pub(crate) point_permits: Semaphore,
    /// Blocking-thread budget for scans, apart from point reads.
    pub(crate) scan_permits: Semaphore,
    /// Search indexes of this shard.
    pub(crate) search: Arc<Registry>,
    /// Turns the search outbox into Tantivy commits.
    pub(crate) indexer: Indexer,
    /// Blocking-thread budget for searches, apart from point reads and scans.
    pub(crate) search_permits: Semaphore,
    /// Blocking-thread budget for chunk reads and writes, apart from everything else.
    pub(crate) file_permits: Semaphore,
    /// Read leases on file versions whose manifest this shard holds.
    pub(crate) read_leases: ReadLeases,
    /// Set after a bulk (WAL-less) chunk write, cleared by the flush that makes it durable.
    pub(crate) chunks_dirty: AtomicBool,
    /// Where this shard's `/metrics` is served, once known.
    metrics_addr: OnceLock<String>,
}

/// What `Stats` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub shard_id: String,
    pub seq: u64,
    pub epoch: u64,
    pub key_count: u64,
}

impl Shard {
    /// Opens the shard's database and starts its apply thread.
    pub fn open(config: ShardConfig) -> Result<Arc<Shard>> {
        omnishard_common::topology::check_shard_id(&config.id)?;
        let store = Store::open(&config)?;
        let persisted = match store.topology_bytes()? {
            Some(bytes) => {
                let msg = InstallTopologyRequest::decode(bytes.as_slice())
                    .map_err(|e| Error::Corrupt { key: "meta/topology".into(), reason: e.to_string() })?;
                Some(Topology::from(&msg))
            }
            None => None,
        };
        let ownership = Ownership::new(config.id.clone(), persisted)?;
        let applier = Applier::start(store.clone(), config.sync_writes, config.max_group_commit, config.apply_queue)?;
        let search = Arc::new(Registry::open(&store, config.data_dir.join("search"))?);
        let indexer = Indexer::start(
            store.clone(),
            search.clone(),
            applier.last_seq_handle(),
            config.search.refresh_interval,
            config.search.writer_memory.as_u64() as usize,
        )?;
        Ok(Arc::new(Shard {
            search_permits: Semaphore::new(config.search.concurrency.max(1)),
            file_permits: Semaphore::new(config.files.concurrency.max(1)),
            read_leases: ReadLeases::new(config.files.read_lease_max),
            chunks_dirty: AtomicBool::new(false),
            metrics_addr: OnceLock::new(),
            search,
            indexer,
            point_permits: Semaphore::new(config.point_read_concurrency.max(1)),
            scan_permits: Semaphore::new(config.scan_concurrency.max(1)),
            config,
            store,
            applier,
            ownership,
        }))
    }

    /// This shard's id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// Records where `/metrics` is served, for `admin cluster`.
    pub fn set_metrics_addr(&self, addr: String) {
        let _ = self.metrics_addr.set(addr);
    }

    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<&str> {
        self.metrics_addr.get().map(String::as_str)
    }

    /// The store, for admin tooling and tests.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Sequence, epoch and key estimate.
    pub async fn stats(self: &Arc<Self>) -> Result<Stats> {
        let key_count = self.blocking_light(|shard| shard.store.estimated_keys()).await?;
        Ok(Stats {
            shard_id: self.config.id.clone(),
            seq: self.applier.last_seq(),
            epoch: self.ownership.epoch(),
            key_count,
        })
    }

    /// Installs a topology: validated, persisted through the apply path, then enforced.
    pub async fn install_topology(&self, topology: Topology) -> Result<u64> {
        let ring = self.ownership.admit(&topology)?;
        if self.ownership.epoch() == topology.epoch {
            return Ok(topology.epoch); // the same topology again
        }
        let encoded = InstallTopologyRequest::from(&topology).encode_to_vec();
        self.applier.put_meta(META_TOPOLOGY, encoded).await?;
        let epoch = topology.epoch;
        tracing::info!(shard_id = %self.config.id, epoch, shards = topology.shards.len(), "topology installed");
        self.ownership.set(topology, ring);
        Ok(epoch)
    }

    /// Runs a short blocking storage call off the reactor, on the point-read budget.
    pub(crate) async fn blocking_light<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Shard) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.blocking(&self.point_permits, f).await
    }

    /// Runs a long blocking storage call off the reactor, on the scan budget.
    pub(crate) async fn blocking_heavy<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Shard) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.blocking(&self.scan_permits, f).await
    }

    /// Runs a search step off the reactor, on the search budget.
    pub(crate) async fn blocking_search<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Shard) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.blocking(&self.search_permits, f).await
    }

    /// Runs a chunk read or write off the reactor, on the file budget.
    pub(crate) async fn blocking_files<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Shard) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.blocking(&self.file_permits, f).await
    }

    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        budget: &Semaphore,
        f: impl FnOnce(&Shard) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let _permit = budget.acquire().await.map_err(|_| Error::ShuttingDown)?;
        let shard = self.clone();
        // The blocking thread works inside the request's span.
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| f(&shard))).await.map_err(|_| Error::ShuttingDown)?
    }
}
