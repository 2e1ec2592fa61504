//! `omnishard dev`: the embedded default. Starts N shards as child processes
//! (each its own RocksDB under `DATA/shard-i`, so losing one behaves as in
//! production) and the metadata group (`DATA/meta`, the shared topology that
//! `admin add-shard` changes), writes the seed topology to
//! `DATA/topology.toml`, and runs the gateway in this process until Ctrl-C or
//! SIGTERM. Shards and the metadata group restart on their previous ports.
//!
//! `dev` supervises its children: a child that exits is restarted on the
//! same port and data folder, after a back-off that doubles from 0.5 s to
//! 30 s (and starts over once the child stayed up a minute). Children exit
//! with `dev`, even when it is killed (`--parent-pid`, which arms
//! `PR_SET_PDEATHSIG`), so no orphan keeps a RocksDB lock and `dev` always
//! starts again.
//!
//! With `--replicas R` each shard is a Raft group of R child processes
//! (`DATA/shard-i-rK`), formed on first start; a restart reuses each
//! replica's previous port, because the group's membership records it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use omnishard_common::process::{describe_exit, start_role};
use omnishard_common::topology::{ShardAddr, Topology};
use omnishard_gateway::GatewayConfig;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::args::DevArgs;
use crate::roles::{bind, init_telemetry, shutdown_signal, start_metrics};

/// The file `dev` keeps its topology in.
const TOPOLOGY_FILE: &str = "topology.toml";
/// Shard id of the metadata group (outside the ring).
const META_ID: &str = "meta";
/// How long a shard may take to start.
const SHARD_START_TIMEOUT: Duration = Duration::from_secs(30);
/// The first restart of a crashed child waits this long; each further one
/// twice as long, up to [`MAX_RESTART_DELAY`].
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(500);
/// The longest wait between restarts of a child that keeps crashing.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);
/// A child that stayed up this long crashed anew: its back-off starts over.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// A child process of `dev`: one replica of a shard or of the metadata group.
struct Supervised {
    /// How messages name it: `shard-1`, `shard-1 replica 2`, `meta`.
    name: String,
    /// Its shard id.
    id: String,
    data: PathBuf,
    /// The address it listens on. A restart reuses it: the topology (and a
    /// replica group's membership) records it.
    addr: String,
    /// Its replica id, in a group of several.
    replica: Option<u64>,
    /// The running process; `None` while it is being restarted.
    child: Option<Child>,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let mut observe = args.observe.clone();
    observe.log_level.get_or_insert_with(|| "warn".into());
    let telemetry = init_telemetry("gateway", "gateway", &observe);
    let metrics_addr = start_metrics(&observe, telemetry).await?;
    if args.shards == 0 || args.shards > 64 {
        bail!("--shards is {}; it must be between 1 and 64", args.shards);
    }
    if args.replicas == 0 || args.replicas > 7 {
        bail!("--replicas is {}; it must be between 1 and 7", args.replicas);
    }
    std::fs::create_dir_all(&args.data).with_context(|| format!("creating {}", args.data.display()))?;
    let previous_config = previous_config(&args.data)?;
    let previous = previous_config.as_ref().map(GatewayConfig::topology);
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
        let prev_replicas = prev.shards[0].replica_addrs().len();
        if prev_replicas != args.replicas {
            bail!(
                "{} holds shards of {prev_replicas} replica(s); start it with --replicas {prev_replicas} or use another --data folder",
                args.data.display()
            );
        }
    }
    // Bind the gateway port first so a busy port fails before anything starts.
    let listener = bind(&format!("127.0.0.1:{}", args.port)).await?;

    let mut children = Vec::new();
    let mut shards = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let previous_addrs = previous.as_ref().map(|p| p.shards[i].replica_addrs());
        match start_group(id, &args.data, args.replicas, previous_addrs, &mut children).await {
            Ok(shard) => shards.push(shard),
            Err(e) => {
                stop_all(&mut children).await;
                return Err(e);
            }
        }
    }
    // The metadata group: holds the shared topology, so shards can be
    // added and removed online (`omnishard admin add-shard`); replicated
    // like the shards, so with --replicas 3 it survives the loss of one.
    let previous_meta = previous_config.as_ref().and_then(|c| c.meta.as_ref()).map(|m| m.replica_addrs());
    let meta = match start_group(META_ID, &args.data, args.replicas, previous_meta, &mut children).await {
        Ok(meta) => meta,
        Err(e) => {
            stop_all(&mut children).await;
            return Err(e);
        }
    };
    // Shard addresses change between runs (port 0); placement depends only
    // on ids, but the epoch still moves on because the topology changed.
    let epoch = match &previous {
        Some(prev) if prev.shards == shards => prev.epoch,
        Some(prev) => prev.epoch + 1,
        None => 1,
    };
    let topology = Topology { epoch, vnodes: omnishard_common::placement::DEFAULT_VNODES, shards };
    let mut config = GatewayConfig::new(topology.clone());
    config.meta = Some(meta);
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
    children: &mut [Supervised],
) -> anyhow::Result<()> {
    let cluster = omnishard_gateway::connect(config).await?;
    cluster.current().set_metrics_addr(metrics_addr.to_string());
    omnishard_telemetry::global().readiness.set_ready();
    let endpoint = format!("http://{}", listener.local_addr()?);
    println!("omnishard dev: gateway listening on {endpoint}");
    println!("  metrics on http://{metrics_addr}/metrics (every process's: omnishard admin cluster)");
    let now = cluster.current();
    println!(
        "  {} shards of {} replica(s) (ring epoch {}), data in {}, seed topology in {}",
        now.shard_count(),
        config.shards[0].replica_addrs().len(),
        now.epoch(),
        args.data.display(),
        args.data.join(TOPOLOGY_FILE).display()
    );
    drop(now);
    println!("  try: omnishard kv put hello world && omnishard kv get hello");
    println!("  stop with Ctrl-C");
    // Supervision stops as soon as shutdown is asked for: children that the
    // same Ctrl-C stopped (it reaches the whole terminal process group) stay
    // stopped while the gateway drains.
    let (stop_tx, stop_rx) = watch::channel(false);
    let shutdown = async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    };
    // Restarts run in this task, on the thread that runs `main`, never in a
    // spawned task: PR_SET_PDEATHSIG fires when the thread that started the
    // child ends, and a pooled thread may end long before this process.
    let supervise_all = async {
        futures::future::join_all(children.iter_mut().map(|child| supervise(child, stop_rx.clone()))).await;
        std::future::pending::<()>().await
    };
    tokio::select! {
        served = omnishard_gateway::serve_cluster(cluster, listener, shutdown) => {
            served.map_err(|e| anyhow::anyhow!("gateway failed: {e}"))
        }
        () = supervise_all => Ok(()),
    }
}

/// Restarts `child` whenever it exits, with back-off, until `stop` turns true.
async fn supervise(child: &mut Supervised, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::default();
    let mut restarts = 0u64;
    loop {
        let Some(running) = child.child.as_mut() else { return };
        let up_since = Instant::now();
        let status = tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => return,
            status = running.wait() => status,
        };
        child.child = None;
        if up_since.elapsed() >= STABLE_AFTER {
            backoff = Backoff::default();
        }
        let mut what = match status {
            Ok(status) => format!("exited ({})", describe_exit(&status)),
            Err(e) => format!("exited (status unknown: {e})"),
        };
        loop {
            let delay = backoff.next_delay();
            restarts += 1;
            eprintln!(
                "omnishard dev: {} {what}; restarting in {} (restart {restarts})",
                child.name,
                humantime::format_duration(delay)
            );
            let restarted = tokio::select! {
                biased;
                _ = stop.wait_for(|stopped| *stopped) => return,
                restarted = async {
                    tokio::time::sleep(delay).await;
                    start_shard(&child.id, &child.data, &child.addr, child.replica).await
                } => restarted,
            };
            match restarted {
                Ok((process, _)) => {
                    child.child = Some(process);
                    eprintln!("omnishard dev: {} is back on {}", child.name, child.addr);
                    break;
                }
                Err(e) => what = format!("did not start ({e:#})"),
            }
        }
    }
}

/// The wait before each restart of a crashed child: doubling from
/// [`FIRST_RESTART_DELAY`] up to [`MAX_RESTART_DELAY`].
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST_RESTART_DELAY }
    }
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(MAX_RESTART_DELAY);
        delay
    }
}

/// Starts the replicas of shard `id` (forming its group when it is new)
/// and returns its topology entry.
async fn start_group(
    id: &str,
    data: &Path,
    replicas: usize,
    previous: Option<Vec<String>>,
    children: &mut Vec<Supervised>,
) -> anyhow::Result<ShardAddr> {
    if replicas == 1 {
        // The previous port first: the shared topology in the metadata
        // group records each shard's address.
        let previous = previous.and_then(|p| p.into_iter().next());
        let dir = data.join(id);
        let started = match &previous {
            Some(listen) => {
                match start_shard(id, &dir, listen, None).await {
                    Ok(started) => Ok(started),
                    Err(e) => {
                        eprintln!("omnishard dev: {id} cannot listen on its previous address {listen} ({e:#}); using a new port");
                        start_shard(id, &dir, "127.0.0.1:0", None).await
                    }
                }
            }
            None => start_shard(id, &dir, "127.0.0.1:0", None).await,
        };
        let (child, addr) = started?;
        children.push(Supervised {
            name: id.to_string(),
            id: id.to_string(),
            data: dir,
            addr: addr.clone(),
            replica: None,
            child: Some(child),
        });
        return Ok(ShardAddr::new(id, addr));
    }
    let mut addrs = Vec::new();
    for node in 1..=replicas as u64 {
        let listen = previous.as_ref().and_then(|p| p.get(node as usize - 1).cloned());
        let listen = listen.unwrap_or_else(|| "127.0.0.1:0".into());
        let dir = data.join(format!("{id}-r{node}"));
        let (child, addr) = start_shard(id, &dir, &listen, Some(node)).await?;
        children.push(Supervised {
            name: format!("{id} replica {node}"),
            id: id.to_string(),
            data: dir,
            addr: addr.clone(),
            replica: Some(node),
            child: Some(child),
        });
        addrs.push(addr);
    }
    if previous.is_none() {
        omnishard_client::replication::form_group(&addrs, SHARD_START_TIMEOUT)
            .await
            .with_context(|| format!("forming shard {id}"))?;
    }
    Ok(ShardAddr { id: id.to_string(), addr: addrs[0].clone(), replicas: addrs })
}

/// Starts `omnishard shard` on `listen` and waits for its address; with a
/// replica id it joins a group instead of forming one alone. The shard exits
/// when this process does, however it ends (`--parent-pid`).
async fn start_shard(id: &str, data: &Path, listen: &str, replica: Option<u64>) -> anyhow::Result<(Child, String)> {
    let exe = std::env::current_exe().context("locating the omnishard binary")?;
    let mut command = Command::new(exe);
    command
        .args(["shard", "--id", id, "--listen", listen, "--parent-pid", &std::process::id().to_string(), "--data"])
        .arg(data)
        // Shards log warnings only, unless the user asked for more; openraft's
        // own lines (peers unreachable while they start) stay quiet: the
        // shard logs when its Raft node stops.
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,openraft=off".into()));
    if let Some(node) = replica {
        command.args(["--replica-id", &node.to_string(), "--join"]);
    }
    start_role(command, SHARD_START_TIMEOUT).await.with_context(|| format!("starting shard {id} on {listen}"))
}

/// Asks every shard to stop (SIGTERM), then kills what is left after 10 s.
async fn stop_all(children: &mut Vec<Supervised>) {
    for child in children.iter().filter_map(|c| c.child.as_ref()) {
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
        }
    }
    for supervised in children.iter_mut() {
        let Some(child) = supervised.child.as_mut() else { continue };
        if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
            eprintln!("omnishard dev: {} did not stop in 10s; killing it", supervised.name);
            let _ = child.kill().await;
        }
    }
    children.clear();
}

fn previous_config(data: &Path) -> anyhow::Result<Option<GatewayConfig>> {
    let path = data.join(TOPOLOGY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(GatewayConfig::load(&path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_backoff_doubles_up_to_the_cap() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..9).map(|_| backoff.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
    }
}
