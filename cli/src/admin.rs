//! `omnishard admin ...`: operator commands.

use anyhow::{bail, Context};
use omnishard_client::Client;
use omnishard_proto::v1::shard_raft_service_client::ShardRaftServiceClient;
use omnishard_proto::v1::{
    AddReplicaRequest, RaftStatusRequest, RaftStatusResponse, RebalanceStatusResponse, RemoveReplicaRequest, ShardInfo,
    TransferLeaderRequest,
};
use serde_json::json;
use tonic::transport::Channel;

use crate::args::{AdminCommand, Global, RebalanceCommand, ReplicaCommand};
use crate::output;

pub async fn run(global: &Global, cmd: AdminCommand) -> anyhow::Result<()> {
    let client = Client::connect(&global.gateway).await?;
    match cmd {
        AdminCommand::Cluster => cluster(global, &client).await,
        AdminCommand::Replica { command } => replica(global, &client, command).await,
        AdminCommand::Reindex { index } => crate::search::reindex(global, &client, index).await,
        AdminCommand::VerifyFiles => crate::file::verify(global, &client).await,
        AdminCommand::Trace { trace_id } => crate::trace::trace(global, &client, &trace_id).await,
        AdminCommand::Slow { limit } => crate::trace::slow(global, &client, limit).await,
        AdminCommand::AddShard { id, addr, rate } => {
            let status = client.add_shard(&id, &addr, rate.unwrap_or(0)).await?;
            if !global.json {
                println!(
                    "shard {id} joins the ring at epoch {}; follow it with: omnishard admin rebalance status --watch",
                    status.target_epoch
                );
            }
            show_status(global.json, &status);
            Ok(())
        }
        AdminCommand::RemoveShard { id, rate } => {
            let status = client.remove_shard(&id, rate.unwrap_or(0)).await?;
            if !global.json {
                println!("shard {id} leaves the ring at epoch {} once its ranges moved; follow it with: omnishard admin rebalance status --watch", status.target_epoch);
            }
            show_status(global.json, &status);
            Ok(())
        }
        AdminCommand::Rebalance { command } => rebalance(global, &client, command).await,
    }
}

async fn rebalance(global: &Global, client: &Client, command: RebalanceCommand) -> anyhow::Result<()> {
    let status = match command {
        RebalanceCommand::Status { watch: true } if !global.json => return watch(client).await,
        RebalanceCommand::Status { .. } => client.rebalance_status().await?,
        RebalanceCommand::Pause => client.rebalance_control(Some(true), None).await?,
        RebalanceCommand::Resume { rate } => client.rebalance_control(Some(false), rate).await?,
        RebalanceCommand::Throttle { rate } => client.rebalance_control(None, Some(rate)).await?,
        RebalanceCommand::Abort => client.rebalance_abort().await?,
    };
    show_status(global.json, &status);
    Ok(())
}

/// Redraws a progress bar until nothing is moving.
async fn watch(client: &Client) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {percent:>3}% {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    loop {
        let status = client.rebalance_status().await?;
        bar.set_position((status.progress * 1000.0) as u64);
        bar.set_message(status_line(&status));
        if status.state == "done" {
            bar.finish();
            println!();
            show_status(false, &status);
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// One line: phase, moved, rate, ETA.
fn status_line(s: &RebalanceStatusResponse) -> String {
    let (keys, bytes) = s.moves.iter().fold((0, 0), |(k, b), m| (k + m.keys, b + m.bytes));
    let eta = if s.eta_seconds > 0.0 { format!(", ETA {:.0}s", s.eta_seconds) } else { String::new() };
    format!(
        "{} {} ({}): {keys} keys, {} moved at {}/s{eta}",
        s.state,
        s.reason,
        s.phase,
        bytesize::ByteSize(bytes),
        bytesize::ByteSize(s.bytes_per_sec as u64)
    )
}

fn show_status(json: bool, s: &RebalanceStatusResponse) {
    if json {
        let moves: Vec<_> = s
            .moves
            .iter()
            .map(|m| json!({"source": m.source, "target": m.target, "keys": m.keys, "bytes": m.bytes}))
            .collect();
        output::print_json(&json!({"state": s.state, "epoch": s.epoch, "migration_id": s.migration_id,
            "reason": s.reason, "phase": s.phase, "target_epoch": s.target_epoch,
            "rate_bytes_per_sec": s.rate_bytes_per_sec, "progress": s.progress, "elapsed_ms": s.elapsed_ms,
            "bytes_per_sec": s.bytes_per_sec, "eta_seconds": s.eta_seconds, "driver": s.driver,
            "last_error": s.last_error, "moves": moves}));
        return;
    }
    if s.migration_id == 0 {
        println!("state done: nothing has moved yet (ring epoch {})", s.epoch);
        return;
    }
    println!(
        "state {}; ring epoch {}; migration {} ({}), phase {}, {:.0}% done",
        s.state,
        s.epoch,
        s.migration_id,
        s.reason,
        s.phase,
        s.progress * 100.0
    );
    println!(
        "throttle {}/s; moved at {}/s over {:.1}s{}",
        bytesize::ByteSize(s.rate_bytes_per_sec),
        bytesize::ByteSize(s.bytes_per_sec as u64),
        s.elapsed_ms as f64 / 1000.0,
        if s.eta_seconds > 0.0 { format!(", ETA {:.0}s", s.eta_seconds) } else { String::new() }
    );
    println!("{:<14} {:<14} {:>10} {:>12}", "FROM", "TO", "KEYS", "BYTES");
    for m in &s.moves {
        println!("{:<14} {:<14} {:>10} {:>12}", m.source, m.target, m.keys, bytesize::ByteSize(m.bytes).to_string());
    }
    if !s.last_error.is_empty() {
        println!("last error (retrying): {}", s.last_error);
    }
}

async fn cluster(global: &Global, client: &Client) -> anyhow::Result<()> {
    let info = client.cluster().await?;
    if global.json {
        let balance = Balance::of(&info.shards);
        let shards: Vec<_> = info
            .shards
            .iter()
            .map(|s| {
                json!({"id": s.id, "addr": s.addr, "health": s.health, "key_count": s.key_count,
                       "pct_of_mean": balance.share_of_mean(s),
                       "seq": s.seq, "epoch": s.epoch, "error": s.error, "metrics_addr": s.metrics_addr})
            })
            .collect();
        let mut groups = Vec::new();
        for shard in info.shards.iter().filter(|s| s.replicas.len() > 1) {
            let views: Vec<_> = group_views(shard)
                .await
                .into_iter()
                .map(|(addr, view)| match view {
                    Ok(s) => json!({"addr": addr, "node_id": s.node_id, "role": s.role, "term": s.term,
                                    "leader_id": s.leader_id, "applied_index": s.applied_index,
                                    "last_log_index": s.last_log_index, "snapshot_index": s.snapshot_index,
                                    "seq": s.seq}),
                    Err(e) => json!({"addr": addr, "error": e}),
                })
                .collect();
            groups.push(json!({"shard": shard.id, "replicas": views}));
        }
        let balance = Balance::of(&info.shards);
        let spread = balance.spread().map(|(low, high)| json!({"min_pct_of_mean": low, "max_pct_of_mean": high}));
        output::print_json(&json!({"epoch": info.epoch, "vnodes": info.vnodes, "shards": shards,
                                   "groups": groups, "gateway": {"metrics_addr": info.metrics_addr},
                                   "keys": {"total": balance.total, "mean_per_shard": balance.mean,
                                            "spread": spread}}));
        return Ok(());
    }
    println!("ring epoch {}, {} vnodes per shard; gateway metrics on {}", info.epoch, info.vnodes, info.metrics_addr);
    let balance = Balance::of(&info.shards);
    println!("{:<12} {:<22} {:<12} {:>10} {:>8} {:>10}  METRICS", "SHARD", "ADDR", "HEALTH", "KEYS", "OF MEAN", "SEQ");
    for s in &info.shards {
        let share = balance.share_of_mean(s).map(|p| format!("{p:.0}%")).unwrap_or_else(|| "-".into());
        println!(
            "{:<12} {:<22} {:<12} {:>10} {:>8} {:>10}  {}",
            s.id, s.addr, s.health, s.key_count, share, s.seq, s.metrics_addr
        );
        if !s.error.is_empty() {
            println!("  {}", s.error);
        }
    }
    if let Some((low, high)) = balance.spread() {
        println!(
            "keys: {} in all, {:.1} per shard on average; shards hold {low:.0}%..{high:.0}% of the mean",
            balance.total, balance.mean
        );
    }
    let replicated: Vec<&ShardInfo> = info.shards.iter().filter(|s| s.replicas.len() > 1).collect();
    if replicated.is_empty() {
        return Ok(());
    }
    println!();
    println!(
        "{:<12} {:>4} {:<22} {:<10} {:>6} {:>10} {:>10} {:>8}",
        "SHARD", "NODE", "REPLICA", "ROLE", "TERM", "APPLIED", "LAST_LOG", "LAG"
    );
    for shard in replicated {
        let views = group_views(shard).await;
        // Lag is the leader's view of each replica's matched log index.
        let lags: Vec<(u64, u64)> = views
            .iter()
            .filter_map(|(_, v)| v.as_ref().ok())
            .filter(|v| v.role == "leader")
            .flat_map(|v| v.replicas.iter().map(|r| (r.node_id, r.lag)))
            .collect();
        for (addr, view) in &views {
            match view {
                Ok(v) => {
                    let lag = lags.iter().find(|(id, _)| *id == v.node_id).map(|(_, l)| l.to_string());
                    println!(
                        "{:<12} {:>4} {:<22} {:<10} {:>6} {:>10} {:>10} {:>8}",
                        shard.id,
                        v.node_id,
                        addr,
                        v.role,
                        v.term,
                        v.applied_index,
                        v.last_log_index,
                        lag.unwrap_or_else(|| "-".into())
                    );
                }
                Err(e) => println!("{:<12} {:>4} {:<22} {:<10} {e}", shard.id, "?", addr, "down"),
            }
        }
    }
    Ok(())
}

/// Every replica's own view of its group (or why it did not answer).
async fn group_views(shard: &ShardInfo) -> Vec<(String, Result<RaftStatusResponse, String>)> {
    let calls = shard.replicas.iter().map(|addr| async move {
        let view = async {
            let mut client = raft_client(addr).await?;
            Ok::<_, anyhow::Error>(client.status(RaftStatusRequest {}).await?.into_inner())
        };
        let view = tokio::time::timeout(std::time::Duration::from_secs(2), view)
            .await
            .map_err(|_| "no answer within 2s".to_string())
            .and_then(|r| r.map_err(|e| format!("{e:#}")));
        (addr.clone(), view)
    });
    futures::future::join_all(calls).await
}

async fn raft_client(addr: &str) -> anyhow::Result<ShardRaftServiceClient<Channel>> {
    ShardRaftServiceClient::connect(format!("http://{addr}")).await.with_context(|| format!("connecting to {addr}"))
}

/// The address of the replica leading `shard`, as its replicas report it.
async fn leader_addr(client: &Client, shard: &str) -> anyhow::Result<String> {
    let info = client.cluster().await?;
    let Some(found) = info.shards.iter().find(|s| s.id == shard) else {
        bail!("--shard: no shard {shard:?} in the cluster");
    };
    let replicas = if found.replicas.is_empty() { vec![found.addr.clone()] } else { found.replicas.clone() };
    let probe = ShardInfo { replicas, ..found.clone() };
    for (addr, view) in group_views(&probe).await {
        if let Ok(view) = view {
            if view.role == "leader" {
                return Ok(addr);
            }
            if !view.leader_addr.is_empty() {
                return Ok(view.leader_addr);
            }
        }
    }
    bail!("shard {shard} has no leader right now (no majority of its replicas is up)")
}

async fn replica(global: &Global, client: &Client, command: ReplicaCommand) -> anyhow::Result<()> {
    let shard = match &command {
        ReplicaCommand::Add { shard, .. }
        | ReplicaCommand::Remove { shard, .. }
        | ReplicaCommand::TransferLeader { shard, .. } => shard.clone(),
    };
    let leader = leader_addr(client, &shard).await?;
    let mut raft = raft_client(&leader).await?;
    let (done, view) = match command {
        ReplicaCommand::Add { node, addr, .. } => {
            let view = raft.add_replica(AddReplicaRequest { node_id: node, addr: addr.clone() }).await?.into_inner();
            (
                format!(
                    "replica {node} at {addr} added to {shard}; gateways follow it when it leads (list it in the topology's replicas of {shard} for their next start)"
                ),
                view,
            )
        }
        ReplicaCommand::Remove { node, .. } => {
            let view = raft.remove_replica(RemoveReplicaRequest { node_id: node }).await?.into_inner();
            (format!("replica {node} removed from {shard}"), view)
        }
        ReplicaCommand::TransferLeader { node, .. } => {
            let view = raft.transfer_leader(TransferLeaderRequest { node_id: node }).await?.into_inner();
            (format!("replica {node} leads {shard}"), view)
        }
    };
    if global.json {
        let members: Vec<_> = view.members.iter().map(|m| json!({"node_id": m.node_id, "addr": m.addr})).collect();
        output::print_json(
            &json!({"shard": shard, "leader_id": view.leader_id, "term": view.term, "members": members}),
        );
    } else {
        println!("{done}");
        let members: Vec<String> = view.members.iter().map(|m| format!("{}={}", m.node_id, m.addr)).collect();
        println!("members: {}", members.join(" "));
    }
    Ok(())
}

/// How keys spread over the shards that answered (the ring aims at every
/// shard within ±20% of the mean).
struct Balance {
    total: u64,
    mean: f64,
    /// Key counts of the shards that answered.
    counted: Vec<u64>,
}

impl Balance {
    fn of(shards: &[ShardInfo]) -> Balance {
        let counted: Vec<u64> = shards.iter().filter(|s| s.error.is_empty()).map(|s| s.key_count).collect();
        let total = counted.iter().sum();
        let mean = if counted.is_empty() { 0.0 } else { total as f64 / counted.len() as f64 };
        Balance { total, mean, counted }
    }

    /// A shard's key count as a percentage of the mean; `None` when it did
    /// not answer or there are no keys.
    fn share_of_mean(&self, shard: &ShardInfo) -> Option<f64> {
        (shard.error.is_empty() && self.mean > 0.0).then(|| shard.key_count as f64 * 100.0 / self.mean)
    }

    /// The smallest and largest share of the mean.
    fn spread(&self) -> Option<(f64, f64)> {
        if self.mean <= 0.0 {
            return None;
        }
        let shares = self.counted.iter().map(|&c| c as f64 * 100.0 / self.mean);
        let low = shares.clone().fold(f64::INFINITY, f64::min);
        let high = shares.fold(0.0, f64::max);
        Some((low, high))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(keys: u64, error: &str) -> ShardInfo {
        ShardInfo { key_count: keys, error: error.into(), ..Default::default() }
    }

    #[test]
    fn test_balance_is_relative_to_the_mean_of_shards_that_answered() {
        let shards = [shard(90, ""), shard(110, ""), shard(100, ""), shard(0, "unavailable")];
        let balance = Balance::of(&shards);
        assert_eq!((balance.total, balance.mean), (300, 100.0));
        assert_eq!(balance.spread(), Some((90.0, 110.0)));
        assert_eq!(balance.share_of_mean(&shards[1]), Some(110.0));
        assert_eq!(balance.share_of_mean(&shards[3]), None);
        assert_eq!(Balance::of(&[shard(0, "")]).spread(), None, "no keys, no spread");
    }
}
