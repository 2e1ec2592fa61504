//! Operator views of the cluster, gathered from every shard in parallel.

use std::time::Duration;

use omnishard_proto::v1::{ClusterResponse, ShardInfo};

use crate::cluster::Cluster;

/// How long `Cluster` waits for one shard's stats before calling it unavailable.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);

impl Cluster {
    /// Shards, addresses, health, epochs, sequences and key counts.
    pub async fn cluster_info(&self) -> ClusterResponse {
        let calls = self.shards.iter().map(|shard| async move {
            let mut info = ShardInfo {
                id: shard.client.id().to_string(),
                addr: shard.client.addr().to_string(),
                ..Default::default()
            };
            match tokio::time::timeout(STATS_TIMEOUT, shard.client.clone().stats()).await {
                Ok(Ok(stats)) => {
                    info.health = "serving".into();
                    info.key_count = stats.key_count;
                    info.seq = stats.seq;
                    info.epoch = stats.epoch;
                }
                Ok(Err(e)) => {
                    info.health = "unavailable".into();
                    info.error = e.to_string();
                }
                Err(_) => {
                    info.health = "unavailable".into();
                    info.error = format!("no answer within {}ms", STATS_TIMEOUT.as_millis());
                }
            }
            info
        });
        ClusterResponse {
            epoch: self.epoch(),
            vnodes: self.ring.vnodes(),
            shards: futures::future::join_all(calls).await,
        }
    }
}
