//! What the gateway knows about the cluster: the ring, one [`ShardHandle`]
//! per shard, and start-up checks.

use std::sync::Arc;
use std::time::Instant;

use omnishard_common::limits::Limits;
use omnishard_common::placement::Ring;
use omnishard_proto::v1::InstallTopologyRequest;

use crate::coalesce::Coalescer;
use crate::config::{GatewayConfig, GatewaySettings};
use crate::error::{Error, Result};
use crate::replicas::ShardClient;

/// The routing state of a gateway.
pub struct Cluster {
    pub(crate) ring: Ring,
    pub(crate) shards: Vec<ShardHandle>,
    pub(crate) coalescers: Option<Vec<Coalescer>>,
    pub(crate) settings: GatewaySettings,
    pub(crate) limits: Limits,
    pub(crate) graph: crate::config::GraphBudgets,
    pub(crate) search: crate::config::SearchLimits,
    /// Global statistics of recent queries, with the views they describe.
    pub(crate) statistics_cache: crate::search::query::StatisticsCache,
    pub(crate) files: crate::config::FileSettings,
    /// One permit per running upload or download (`files.max_transfers`).
    pub(crate) transfers: Arc<tokio::sync::Semaphore>,
    /// Where this gateway's `/metrics` is served, once known.
    pub(crate) metrics_addr: std::sync::OnceLock<String>,
    /// The configuration this view was built from (its topology included).
    pub(crate) config: GatewayConfig,
}

/// One shard as the gateway calls it: the client plus what is needed to
/// repair a shard that lost or never got the current topology.
#[derive(Clone)]
pub struct ShardHandle {
    pub client: ShardClient,
    topology: Arc<InstallTopologyRequest>,
}

impl ShardHandle {
    /// A handle that installs `topology` on the shard when the shard is behind.
    pub fn new(client: ShardClient, topology: &omnishard_common::topology::Topology) -> ShardHandle {
        ShardHandle { client, topology: Arc::new(InstallTopologyRequest::from(topology)) }
    }

    /// The epoch this gateway routes with.
    pub fn epoch(&self) -> u64 {
        self.topology.epoch
    }

    /// Runs `call`; when the shard says it enforces an *older* epoch than
    /// ours (it is new, or missed an install), installs ours and tries once
    /// more. Safe for writes too: a rejected request was never applied.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(ShardClient) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        match call(self.client.clone()).await {
            Err(Error::Misrouted { wrong_epoch: true, shard_epoch, .. }) if shard_epoch < self.epoch() => {
                self.client.clone().install_topology((*self.topology).clone()).await?;
                call(self.client.clone()).await
            }
            Err(Error::Misrouted { shard_id, wrong_epoch: true, shard_epoch, .. }) => Err(Error::Misrouted {
                message: format!(
                    "gateway routes with ring epoch {} but shard {shard_id} enforces epoch {shard_epoch}; reload the gateway's topology",
                    self.epoch()
                ),
                shard_id,
                wrong_epoch: true,
                shard_epoch,
            }),
            other => other,
        }
    }
}

impl Cluster {
    /// Builds clients for every shard of `config`; connects nothing yet.
    pub fn new(config: &GatewayConfig) -> Result<Cluster> {
        Cluster::build(config, None)
    }

    /// The same gateway routing with `topology` instead: shards it already
    /// knows at the same address keep their connections; shared budgets
    /// (file transfers) carry over.
    pub fn with_topology(&self, topology: &omnishard_common::topology::Topology) -> Result<Cluster> {
        let mut config = self.config.clone();
        config.epoch = topology.epoch;
        config.vnodes = topology.vnodes;
        config.shards = topology.shards.clone();
        let next = Cluster::build(&config, Some(self))?;
        if let Some(addr) = self.metrics_addr.get() {
            next.set_metrics_addr(addr.clone());
        }
        Ok(next)
    }

    fn build(config: &GatewayConfig, previous: Option<&Cluster>) -> Result<Cluster> {
        config.validate()?;
        let topology = config.topology();
        let ring = topology.ring()?;
        let install = Arc::new(InstallTopologyRequest::from(&topology));
        let reuse = |s: &omnishard_common::topology::ShardAddr| {
            previous?
                .shards
                .iter()
                .find(|h| h.client.id() == s.id && h.client.replica_addrs().contains(&s.addr))
                .map(|h| h.client.clone())
        };
        let shards = topology
            .shards
            .iter()
            .map(|s| {
                let client = match reuse(s) {
                    Some(client) => client,
                    None => ShardClient::new(s, &config.gateway)?,
                };
                Ok(ShardHandle { client, topology: install.clone() })
            })
            .collect::<Result<Vec<_>>>()?;
        let coalescers = config
            .gateway
            .coalesce
            .then(|| shards.iter().map(|h| Coalescer::start(h.clone(), &config.gateway)).collect());
        Ok(Cluster {
            ring,
            shards,
            coalescers,
            settings: config.gateway.clone(),
            limits: config.limits,
            graph: config.graph.clone(),
            search: config.search.clone(),
            statistics_cache: crate::search::query::StatisticsCache::new(config.search.statistics_cache),
            files: config.files.clone(),
            transfers: match previous {
                Some(previous) => previous.transfers.clone(),
                None => Arc::new(tokio::sync::Semaphore::new(config.files.max_transfers)),
            },
            metrics_addr: std::sync::OnceLock::new(),
            config: config.clone(),
        })
    }

    /// Records where `/metrics` is served, for `admin cluster`.
    pub fn set_metrics_addr(&self, addr: String) {
        let _ = self.metrics_addr.set(addr);
    }

    /// The ring epoch.
    pub fn epoch(&self) -> u64 {
        self.ring.epoch()
    }

    /// How many shards the ring has.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Reaches every shard, checks it is the shard the topology names, and
    /// installs the topology on it. Fails naming the first shard that is
    /// unreachable or wrong, unless `allow_unavailable_shards` is set.
    pub async fn connect_all(&self) -> Result<()> {
        let checks = self.shards.iter().map(|shard| self.check_shard(shard));
        for result in futures::future::join_all(checks).await {
            match result {
                Ok(()) => {}
                Err(e @ Error::ShardUnavailable { .. }) | Err(e @ Error::ShardTimeout { .. })
                    if self.settings.allow_unavailable_shards =>
                {
                    tracing::warn!(error = %e, "starting without a shard");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn check_shard(&self, shard: &ShardHandle) -> Result<()> {
        let deadline = Instant::now() + self.settings.startup_timeout;
        let stats = loop {
            match shard.client.clone().stats().await {
                Ok(stats) => break stats,
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(Error::ShardUnavailable { shard_id, addr, reason }) => {
                    return Err(Error::ShardUnavailable {
                        shard_id,
                        addr,
                        reason: format!("unreachable at start-up for {:?}: {reason}", self.settings.startup_timeout),
                    })
                }
                Err(e) => return Err(e),
            }
        };
        if stats.shard_id != shard.client.id() {
            return Err(omnishard_common::Error::Topology(format!(
                "the topology lists shard {:?} at {}, but the shard listening there is {:?}",
                shard.client.id(),
                shard.client.addr(),
                stats.shard_id
            ))
            .into());
        }
        let epoch = shard.client.clone().install_topology((*shard.topology).clone()).await?;
        tracing::info!(shard_id = %shard.client.id(), epoch, "shard ready");
        Ok(())
    }
}
