//! `omnishard shard` and `omnishard gateway`: the server roles.
//!
//! Both bind first, then print `... listening on ADDR` on stdout once they
//! serve, so a supervisor (or a test) can start them on port 0. Before it
//! they print `... metrics on ADDR`, the HTTP side port of `/metrics`.

use anyhow::Context;
use omnishard_gateway::GatewayConfig;
use omnishard_shard::ShardConfig;
use tokio::net::TcpListener;

use crate::args::{GatewayArgs, ObserveArgs, ShardArgs};

pub async fn shard(args: ShardArgs) -> anyhow::Result<()> {
    // Watched before anything else, so a SIGTERM while storage opens (a
    // supervisor stopping, or dying) still ends in a clean shutdown.
    let shutdown = shutdown_signal();
    if let Some(parent) = args.parent_pid {
        exit_with_parent(parent)?;
    }
    let telemetry = init_telemetry("shard", &args.id, &args.observe);
    // The side port comes up first: /healthz answers while storage opens, /readyz after.
    let metrics_addr = start_metrics(&args.observe, telemetry).await?;
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<ShardConfig>(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => ShardConfig::default(),
    };
    config.id = args.id;
    config.data_dir = args.data;
    if let Some(id) = args.replica_id {
        config.raft.node_id = id;
    }
    config.raft.join |= args.join;
    for member in &args.members {
        let (id, addr) = member
            .split_once('=')
            .and_then(|(id, addr)| Some((id.parse::<u64>().ok()?, addr.to_string())))
            .with_context(|| format!("--member {member:?}: expected ID=HOST:PORT"))?;
        config.raft.initial_members.insert(id, addr);
    }
    let shard = omnishard_shard::Shard::open(config).await.context("opening the shard")?;
    omnishard_shard::metrics::register(&shard, &telemetry.metrics);
    shard.set_metrics_addr(metrics_addr.to_string());
    let listener = bind(&args.listen).await?;
    // A one-replica group leads before the shard says it listens.
    shard.replication.bootstrap(&listener.local_addr()?.to_string()).await.context("forming the replica group")?;
    telemetry.readiness.set_ready();
    println!("omnishard shard {} metrics on {metrics_addr}", shard.id());
    println!("omnishard shard {} listening on {}", shard.id(), listener.local_addr()?);
    let served = omnishard_shard::serve_shard(shard.clone(), listener, shutdown).await;
    shard.shutdown().await;
    omnishard_telemetry::shutdown();
    served.map_err(|e| anyhow::anyhow!("shard failed: {e}"))
}

pub async fn gateway(args: GatewayArgs) -> anyhow::Result<()> {
    let telemetry = init_telemetry("gateway", "gateway", &args.observe);
    let metrics_addr = start_metrics(&args.observe, telemetry).await?;
    let config = GatewayConfig::load(&args.config)?;
    let listener = bind(&args.listen).await?;
    let cluster = omnishard_gateway::connect(&config).await?;
    cluster.current().set_metrics_addr(metrics_addr.to_string());
    telemetry.readiness.set_ready();
    println!("omnishard gateway metrics on {metrics_addr}");
    println!("omnishard gateway listening on {}", listener.local_addr()?);
    let served = omnishard_gateway::serve_cluster(cluster, listener, shutdown_signal()).await;
    omnishard_telemetry::shutdown();
    served.map_err(|e| anyhow::anyhow!("gateway failed: {e}"))
}

/// Logs, traces and metrics for a server process.
pub fn init_telemetry(role: &str, id: &str, observe: &ObserveArgs) -> &'static omnishard_telemetry::Telemetry {
    let mut options = omnishard_telemetry::Options::new(role, id);
    options.slow_threshold = observe.slow_threshold;
    if let Some(level) = &observe.log_level {
        options.default_log_level = level.clone();
    }
    omnishard_telemetry::init(options)
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `--metrics-listen`.
pub async fn start_metrics(
    observe: &ObserveArgs,
    telemetry: &omnishard_telemetry::Telemetry,
) -> anyhow::Result<std::net::SocketAddr> {
    omnishard_telemetry::http::start(&observe.metrics_listen, telemetry.metrics.clone(), telemetry.readiness.clone())
        .await
        .with_context(|| format!("cannot serve metrics on {}", observe.metrics_listen))
}

pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM. Both are watched from this call
/// on, not from the first poll: a signal that arrives while the process
/// starts up is kept, not lost to the default action (an abrupt exit).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let watched = signal(SignalKind::terminate()).and_then(|term| Ok((term, signal(SignalKind::interrupt())?)));
    async move {
        match watched {
            Ok((mut term, mut interrupt)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops this process");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        }
        tracing::info!("shutdown requested");
    }
}

/// Ties this process to its supervisor `parent` (`--parent-pid`): when the
/// parent dies, even of SIGKILL, the kernel sends SIGTERM and the shard shuts
/// down, so no orphan keeps holding its RocksDB lock.
#[cfg(target_os = "linux")]
fn exit_with_parent(parent: u32) -> anyhow::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
        .context("cannot ask for SIGTERM on the parent's exit (--parent-pid)")?;
    check_parent(parent)
}

/// Without `prctl` nothing signals the parent's death; the start-up check
/// is all there is.
#[cfg(not(target_os = "linux"))]
fn exit_with_parent(parent: u32) -> anyhow::Result<()> {
    check_parent(parent)
}

/// The parent may have died before the death signal was armed; then no
/// signal comes and this process already has another parent.
fn check_parent(parent: u32) -> anyhow::Result<()> {
    let actual = nix::unistd::getppid().as_raw();
    if u32::try_from(actual).ok() != Some(parent) {
        anyhow::bail!("--parent-pid is {parent} but the parent process is {actual}; the supervisor has exited, so this shard does not start");
    }
    Ok(())
}
