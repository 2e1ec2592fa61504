//! `omnishard admin ...`: operator commands.

use omnishard_client::Client;
use serde_json::json;

use crate::args::{AdminCommand, Global};
use crate::output;

pub async fn run(global: &Global, cmd: AdminCommand) -> anyhow::Result<()> {
    let client = Client::connect(&global.gateway).await?;
    match cmd {
        AdminCommand::Cluster => cluster(global, &client).await,
        AdminCommand::Reindex { index } => crate::search::reindex(global, &client, index).await,
        AdminCommand::VerifyFiles => crate::file::verify(global, &client).await,
        AdminCommand::Trace { trace_id } => crate::trace::trace(global, &client, &trace_id).await,
        AdminCommand::Slow { limit } => crate::trace::slow(global, &client, limit).await,
    }
}

async fn cluster(global: &Global, client: &Client) -> anyhow::Result<()> {
    let info = client.cluster().await?;
    if global.json {
        let shards: Vec<_> = info
            .shards
            .iter()
            .map(|s| {
                json!({"id": s.id, "addr": s.addr, "health": s.health, "key_count": s.key_count,
                       "seq": s.seq, "epoch": s.epoch, "error": s.error, "metrics_addr": s.metrics_addr})
            })
            .collect();
        output::print_json(&json!({"epoch": info.epoch, "vnodes": info.vnodes, "shards": shards,
                                   "gateway": {"metrics_addr": info.metrics_addr}}));
        return Ok(());
    }
    println!("ring epoch {}, {} vnodes per shard; gateway metrics on {}", info.epoch, info.vnodes, info.metrics_addr);
    println!("{:<12} {:<22} {:<12} {:>10} {:>10}  METRICS", "SHARD", "ADDR", "HEALTH", "KEYS", "SEQ");
    for s in &info.shards {
        println!("{:<12} {:<22} {:<12} {:>10} {:>10}  {}", s.id, s.addr, s.health, s.key_count, s.seq, s.metrics_addr);
        if !s.error.is_empty() {
            println!("  {}", s.error);
        }
    }
    Ok(())
}
