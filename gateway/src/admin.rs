//! Operator views of the cluster, gathered from every shard in parallel:
//! `admin cluster`, and the trace views `admin trace` and `admin slow`.

use std::time::Duration;

use omnishard_proto::v1::{ClusterResponse, ShardInfo, SlowRequestsResponse, TraceRequest, TraceResponse, TraceSpan};
use omnishard_telemetry::wire;

use crate::cluster::Cluster;
use crate::error::Error;

/// How long `Cluster` waits for one shard's stats before calling it unavailable.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// How a shard whose Raft stopped starts its `Stats` refusal (the shard's
/// `omnishard_shard::raft::RAFT_STOPPED`; the gateway does not link the shard crate).
const RAFT_STOPPED: &str = "raft stopped: ";

/// The health `admin cluster` shows for a shard whose `Stats` failed with `e`:
/// `raft stopped: <reason>` when the process answers but its Raft is gone
/// (it serves nothing), else `unavailable`.
fn health_of(e: &Error) -> String {
    let message = match e {
        Error::ShardUnavailable { reason, .. } => reason,
        Error::Shard { message, .. } => message,
        _ => return "unavailable".into(),
    };
    match message.find(RAFT_STOPPED) {
        Some(at) => message[at..].to_string(),
        None => "unavailable".into(),
    }
}

impl Cluster {
    /// Shards, addresses, health, epochs, sequences and key counts.
    pub async fn cluster_info(&self) -> ClusterResponse {
        let calls = self.shards.iter().map(|shard| async move {
            let mut info = ShardInfo {
                id: shard.client.id().to_string(),
                addr: shard.client.addr(),
                replicas: shard.client.replica_addrs(),
                ..Default::default()
            };
            match tokio::time::timeout(STATS_TIMEOUT, shard.client.clone().stats()).await {
                Ok(Ok(stats)) => {
                    info.health = "serving".into();
                    info.key_count = stats.key_count;
                    info.seq = stats.seq;
                    info.epoch = stats.epoch;
                    info.metrics_addr = stats.metrics_addr;
                }
                Ok(Err(e)) => {
                    info.health = health_of(&e);
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
            metrics_addr: self.metrics_addr.get().cloned().unwrap_or_default(),
        }
    }

    /// Every span of `trace_id` held by this gateway and by every shard;
    /// shards that cannot answer are listed, not fatal.
    pub async fn trace(&self, trace_id: &str) -> Result<TraceResponse, tonic::Status> {
        let id = wire::parse_trace_id(trace_id).map_err(tonic::Status::invalid_argument)?;
        let local = omnishard_telemetry::global().buffer.trace(id);
        let mut spans: Vec<TraceSpan> = local.iter().map(|span| wire::span(span, "gateway")).collect();
        let calls = self.shards.iter().map(|shard| async move {
            let request = TraceRequest { trace_id: id.to_string() };
            let answer = tokio::time::timeout(STATS_TIMEOUT, shard.client.clone().trace_spans(request)).await;
            (shard.client.id(), answer)
        });
        let mut unreachable = Vec::new();
        for (shard_id, answer) in futures::future::join_all(calls).await {
            match answer {
                Ok(Ok(answer)) => spans.extend(answer.spans),
                Ok(Err(e)) => unreachable.push(format!("{shard_id}: {e}")),
                Err(_) => unreachable.push(format!("{shard_id}: no answer within {}ms", STATS_TIMEOUT.as_millis())),
            }
        }
        spans.sort_by_key(|span| span.start_unix_nanos);
        Ok(TraceResponse { spans, unreachable })
    }

    /// The slowest requests this gateway still remembers, slowest first.
    pub fn slow_requests(&self, limit: u32) -> SlowRequestsResponse {
        let limit = if limit == 0 { 20 } else { limit.min(10_000) } as usize;
        let buffer = &omnishard_telemetry::global().buffer;
        SlowRequestsResponse {
            requests: buffer.slowest(limit).iter().map(wire::request).collect(),
            slow_threshold_nanos: buffer.slow_threshold().as_nanos().min(u64::MAX as u128) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_stopped_raft_is_not_serving() {
        let stopped = Error::ShardUnavailable {
            shard_id: "s1".into(),
            addr: "127.0.0.1:1".into(),
            reason: "raft stopped: panicked".into(),
        };
        assert_eq!(health_of(&stopped), "raft stopped: panicked");
        let down = Error::ShardUnavailable {
            shard_id: "s1".into(),
            addr: "127.0.0.1:1".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(health_of(&down), "unavailable");
        assert_eq!(health_of(&Error::Exhausted("busy".into())), "unavailable");
    }
}
