//! `omnishard shard` and `omnishard gateway`: the server roles.
//!
//! Both bind first, then print `... listening on ADDR` on stdout once they
//! serve, so a supervisor (or a test) can start them on port 0.

use anyhow::Context;
use omnishard_gateway::GatewayConfig;
use omnishard_shard::ShardConfig;
use tokio::net::TcpListener;

use crate::args::{GatewayArgs, ShardArgs};

pub async fn shard(args: ShardArgs) -> anyhow::Result<()> {
    omnishard_common::telemetry::init_logging("info");
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<ShardConfig>(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => ShardConfig::default(),
    };
    config.id = args.id;
    config.data_dir = args.data;
    let shard = omnishard_shard::Shard::open(config).context("opening the shard")?;
    let listener = bind(&args.listen).await?;
    println!("omnishard shard {} listening on {}", shard.id(), listener.local_addr()?);
    omnishard_shard::serve_shard(shard, listener, shutdown_signal())
        .await
        .map_err(|e| anyhow::anyhow!("shard failed: {e}"))
}

pub async fn gateway(args: GatewayArgs) -> anyhow::Result<()> {
    omnishard_common::telemetry::init_logging("info");
    let config = GatewayConfig::load(&args.config)?;
    let listener = bind(&args.listen).await?;
    let cluster = omnishard_gateway::connect(&config).await?;
    println!("omnishard gateway listening on {}", listener.local_addr()?);
    omnishard_gateway::serve_cluster(cluster, listener, shutdown_signal())
        .await
        .map_err(|e| anyhow::anyhow!("gateway failed: {e}"))
}

pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
}
