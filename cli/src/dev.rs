//! `omnishard dev`: the embedded default. Starts N shards as child processes
//! (each its own RocksDB under `DATA/shard-i`, so losing one behaves as in
//! production), writes the topology it generated to `DATA/topology.toml`, and
//! runs the gateway in this process until Ctrl-C or SIGTERM.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use omnishard_common::process::start_role;
use omnishard_common::topology::{ShardAddr, Topology};
use omnishard_gateway::GatewayConfig;
use tokio::process::{Child, Command};

use crate::args::DevArgs;
use crate::roles::{bind, init_telemetry, shutdown_signal, start_metrics};

/// The file `dev` keeps its topology in.
const TOPOLOGY_FILE: &str = "topology.toml";
/// How long a shard may take to start.
const SHARD_START_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let mut observe = args.observe.clone();
    observe.log_level.get_or_insert_with(|| "warn".into());
    let telemetry = init_telemetry("gateway", "gateway", &observe);
    let metrics_addr = start_metrics(&observe, telemetry).await?;
    if args.shards == 0 || args.shards > 64 {
        bail!("--shards is {}; it must be between 1 and 64", args.shards);
    }
    std::fs::create_dir_all(&args.data).with_context(|| format!("creating {}", args.data.display()))?;
    let previous = previous_topology(&args.data)?;
    let ids: Vec<String> = (1..=args.shards).map(|i| format!("shard-{i}")).collect();
    if let Some(prev) = &previous {
        let prev_ids: Vec<&str> = prev.shards.iter().map(|s| s.id.as_str()).collect();
        if prev_ids != ids.iter().map(String::as_str).collect::<Vec<_>>() {
            bail!(
                "{} holds a {}-shard cluster; start it with --shards {} or use another --data folder",
                args.data.display(),
                prev.shards.len(),
                prev.shards.len()
            );
        }
    }
    // Bind the gateway port first so a busy port fails before anything starts.
    let listener = bind(&format!("127.0.0.1:{}", args.port)).await?;

    let mut children = Vec::new();
    let mut shards = Vec::new();
    for id in &ids {
        match start_shard(id, &args.data.join(id)).await {
            Ok((child, addr)) => {
                shards.push(ShardAddr { id: id.clone(), addr });
                children.push((id.clone(), child));
            }
            Err(e) => {
                stop_all(&mut children).await;
                return Err(e);
            }
        }
    }
    // Shard addresses change between runs (port 0); placement depends only
    // on ids, but the epoch still moves on because the topology changed.
    let epoch = match &previous {
        Some(prev) if prev.shards == shards => prev.epoch,
        Some(prev) => prev.epoch + 1,
        None => 1,
    };
    let topology = Topology { epoch, vnodes: omnishard_common::placement::DEFAULT_VNODES, shards };
    let config = GatewayConfig::new(topology.clone());
    std::fs::write(args.data.join(TOPOLOGY_FILE), toml::to_string_pretty(&config)?)
        .context("writing the topology file")?;

    let result = serve_gateway(&config, listener, &args, metrics_addr, &mut children).await;
    stop_all(&mut children).await;
    omnishard_telemetry::shutdown();
    result
}

async fn serve_gateway(
    config: &GatewayConfig,
    listener: tokio::net::TcpListener,
    args: &DevArgs,
    metrics_addr: std::net::SocketAddr,
    children: &mut [(String, Child)],
) -> anyhow::Result<()> {
    let cluster = omnishard_gateway::connect(config).await?;
    cluster.set_metrics_addr(metrics_addr.to_string());
    omnishard_telemetry::global().readiness.set_ready();
    let endpoint = format!("http://{}", listener.local_addr()?);
    println!("omnishard dev: gateway listening on {endpoint}");
    println!("  metrics on http://{metrics_addr}/metrics (every process's: omnishard admin cluster)");
    println!(
        "  {} shards (ring epoch {}), data in {}, topology in {}",
        config.shards.len(),
        config.epoch,
        args.data.display(),
        args.data.join(TOPOLOGY_FILE).display()
    );
    println!("  try: omnishard kv put hello world && omnishard kv get hello");
    println!("  stop with Ctrl-C");
    // A shard that dies stays dead, as it would in production without a
    // supervisor: only its keys fail, the rest of the cluster keeps serving.
    let watch_children = async {
        let mut running: Vec<&mut (String, Child)> = children.iter_mut().collect();
        while !running.is_empty() {
            let (id, index) = first_exit(&mut running).await;
            eprintln!("omnishard dev: {id} exited; its keys are unavailable until omnishard dev restarts");
            running.remove(index);
        }
        std::future::pending::<()>().await
    };
    let shutdown = async {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = watch_children => {}
        }
    };
    omnishard_gateway::serve_cluster(cluster, listener, shutdown)
        .await
        .map_err(|e| anyhow::anyhow!("gateway failed: {e}"))
}

/// Starts `omnishard shard` on port 0 and waits for its address.
async fn start_shard(id: &str, data: &Path) -> anyhow::Result<(Child, String)> {
    let exe = std::env::current_exe().context("locating the omnishard binary")?;
    let mut command = Command::new(exe);
    command
        .args(["shard", "--id", id, "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        // Shards log warnings only, unless the user asked for more.
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()));
    start_role(command, SHARD_START_TIMEOUT).await.with_context(|| format!("starting shard {id}"))
}

/// Resolves with the id and position of the first child that exits.
async fn first_exit(children: &mut [&mut (String, Child)]) -> (String, usize) {
    let waits = children.iter_mut().map(|entry| {
        Box::pin(async move {
            let _ = entry.1.wait().await;
            entry.0.clone()
        })
    });
    let (id, index, _) = futures::future::select_all(waits).await;
    (id, index)
}

/// Asks every shard to stop (SIGTERM), then kills what is left after 10 s.
async fn stop_all(children: &mut Vec<(String, Child)>) {
    for (_, child) in children.iter() {
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
        }
    }
    for (id, child) in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
            eprintln!("omnishard dev: {id} did not stop in 10s; killing it");
            let _ = child.kill().await;
        }
    }
    children.clear();
}

fn previous_topology(data: &Path) -> anyhow::Result<Option<Topology>> {
    let path = data.join(TOPOLOGY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let config = GatewayConfig::load(&path)?;
    Ok(Some(config.topology()))
}
