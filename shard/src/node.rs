//! One shard replica: its store, its Raft node and apply path, its
//! ownership, and the separate capacity pools that keep heavy work from
//! starving point operations.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use omnishard_common::topology::Topology;
use prost::Message;
use tokio::sync::Semaphore;

use crate::apply::Applier;
use crate::config::ShardConfig;
use crate::error::{Error, Result};
use crate::execute::{Effects, Executor};
use crate::files::leases::ReadLeases;
use crate::migrate::MigrationState;
use crate::ownership::Ownership;
use crate::raft::Replication;
use crate::search::index::{active_generation, Registry, SearchIndex};
use crate::search::indexer::{Indexer, IndexerHandle};
use crate::search::write::AdminOp;
use crate::store::{Store, META_TOPOLOGY};
use omnishard_proto::v1::InstallTopologyRequest;

/// A running shard. Share it as `Arc<Shard>`.
pub struct Shard {
    pub(crate) config: ShardConfig,
    pub(crate) store: Store,
    pub(crate) applier: Applier,
    /// This replica's Raft node.
    pub replication: Arc<Replication>,
    pub(crate) ownership: Arc<Ownership>,
    /// The scale-out migration this shard is a source of, if any.
    pub(crate) migration: Arc<MigrationState>,
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
    /// A model with data here that cannot migrate yet (search, files), if any (see [`crate::migrate`]).
    pub non_kv_model: Option<&'static str>,
}

impl Shard {
    /// Opens the shard's database, starts its Raft node, indexer and apply path.
    pub async fn open(config: ShardConfig) -> Result<Arc<Shard>> {
        omnishard_common::topology::check_shard_id(&config.id)?;
        if config.raft.node_id == 0 {
            return Err(Error::InvalidArgument(omnishard_common::Error::invalid("raft.node_id", "must be at least 1")));
        }
        let store = Store::open(&config)?;
        let persisted = match store.topology_bytes()? {
            Some(bytes) => Some(decode_topology(&bytes)?),
            None => None,
        };
        let ownership = Arc::new(Ownership::new(config.id.clone(), persisted)?);
        let last_seq = Arc::new(AtomicU64::new(store.last_seq()?));
        let search = Arc::new(Registry::open(&store, config.data_dir.join("search"))?);
        let indexer = Indexer::start(
            store.clone(),
            search.clone(),
            last_seq.clone(),
            config.search.refresh_interval,
            config.search.writer_memory.as_u64() as usize,
        )?;
        let effects = Arc::new(Follow {
            store: store.clone(),
            ownership: ownership.clone(),
            search: search.clone(),
            indexer: indexer.handle().ok_or(Error::ShuttingDown)?,
        });
        // The Raft log is synced; the state machine's batches then need not be.
        let migration = Arc::new(MigrationState::load(&config.id, &store)?);
        let executor = Arc::new(Executor::new(store.clone(), false, last_seq.clone(), effects, migration.clone()));
        let replication = Arc::new(
            Replication::start(&config.id, &config.raft, executor, store.clone(), &config.data_dir, config.sync_writes)
                .await?,
        );
        let applier = Applier::start(
            replication.clone(),
            last_seq,
            config.max_group_commit,
            config.apply_queue,
            config.raft.max_inflight_proposals,
        );
        Ok(Arc::new(Shard {
            search_permits: Semaphore::new(config.search.concurrency.max(1)),
            file_permits: Semaphore::new(config.files.concurrency.max(1)),
            read_leases: ReadLeases::new(config.files.read_lease_max),
            metrics_addr: OnceLock::new(),
            search,
            indexer,
            point_permits: Semaphore::new(config.point_read_concurrency.max(1)),
            scan_permits: Semaphore::new(config.scan_concurrency.max(1)),
            config,
            store,
            applier,
            replication,
            ownership,
            migration,
        }))
    }

    /// Stops proposing and stops the Raft node (before the database closes).
    pub async fn shutdown(&self) {
        self.replication.shutdown().await;
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
        let (key_count, non_kv_model) = self
            .blocking_light(|shard| Ok((shard.store.estimated_keys()?, crate::migrate::unmovable_model(&shard.store)?)))
            .await?;
        Ok(Stats {
            non_kv_model,
            shard_id: self.config.id.clone(),
            seq: self.applier.last_seq(),
            epoch: self.ownership.epoch(),
            key_count,
        })
    }

    /// Installs a topology: validated, then replicated through the apply
    /// path; every replica enforces it once applied ([`Follow`]).
    pub async fn install_topology(&self, topology: Topology) -> Result<u64> {
        self.ownership.admit(&topology)?;
        if self.ownership.epoch() == topology.epoch {
            return Ok(topology.epoch); // the same topology again
        }
        let encoded = InstallTopologyRequest::from(&topology).encode_to_vec();
        self.applier.put_meta(META_TOPOLOGY, encoded).await?;
        tracing::info!(shard_id = %self.config.id, epoch = topology.epoch, shards = topology.shards.len(), "topology installed");
        Ok(topology.epoch)
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

fn decode_topology(bytes: &[u8]) -> Result<Topology> {
    let msg = InstallTopologyRequest::decode(bytes)
        .map_err(|e| Error::Corrupt { key: "meta/topology".into(), reason: e.to_string() })?;
    Ok(Topology::from(&msg))
}

/// Keeps in-memory state in step with what the apply path committed, on
/// every replica: the enforced ring and the open search indexes.
struct Follow {
    store: Store,
    ownership: Arc<Ownership>,
    search: Arc<Registry>,
    indexer: IndexerHandle,
}

impl Follow {
    /// Opens index `name` at its active generation and registers it.
    fn open_index(&self, ns: &str, name: &str, meta: crate::search::keys::IndexMeta) -> Result<Arc<SearchIndex>> {
        let generation = active_generation(&self.store, meta.uid)?;
        let index = Arc::new(SearchIndex::open(self.search.root(), ns, name, meta, generation)?);
        self.search.insert(index.clone());
        Ok(index)
    }
}

impl Effects for Follow {
    fn topology_installed(&self, encoded: &[u8]) {
        let installed = decode_topology(encoded).and_then(|topology| {
            let ring = self.ownership.admit(&topology)?;
            self.ownership.set(topology, ring);
            Ok(())
        });
        if let Err(e) = installed {
            tracing::error!(error = %e, "a committed topology cannot be enforced");
        }
    }

    fn search_admin(&self, op: &AdminOp) {
        let done = match op {
            AdminOp::Create { namespace, index, meta } => self.open_index(namespace, index, meta.clone()).map(|_| ()),
            AdminOp::Update { namespace, index, meta } => self.search.get(namespace, index).map(|open| {
                open.set_meta(meta.clone());
                self.indexer.rebuild_later(open);
            }),
            AdminOp::Drop { namespace, index, .. } => {
                if let Some(open) = self.search.remove(namespace, index) {
                    self.indexer.forget_later(open);
                }
                Ok(())
            }
        };
        if let Err(e) = done {
            tracing::error!(error = %e, ?op, "a committed index change cannot be followed");
        }
    }

    fn data_replaced(&self) {
        let defined = match Registry::defined(&self.store) {
            Ok(defined) => defined,
            Err(e) => return tracing::error!(error = %e, "index definitions unreadable after a snapshot"),
        };
        for open in self.search.list(None) {
            let still = defined
                .iter()
                .any(|(ns, name, meta)| *ns == open.namespace && *name == open.name && meta.uid == open.uid);
            if !still {
                if let Some(open) = self.search.remove(&open.namespace, &open.name) {
                    self.indexer.forget_later(open);
                }
            }
        }
        for (ns, name, meta) in defined {
            let index = match self.search.get(&ns, &name) {
                Ok(open) => {
                    open.set_meta(meta);
                    Ok(open)
                }
                Err(_) => self.open_index(&ns, &name, meta),
            };
            match index {
                // Tantivy indexes are derived: rebuild them from the new data.
                Ok(index) => self.indexer.rebuild_later(index),
                Err(e) => tracing::error!(error = %e, index = %name, "cannot open an index after a snapshot"),
            }
        }
    }
}
