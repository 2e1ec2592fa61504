//! `omnishard bench kv`: concurrent puts and gets against a gateway, with
//! throughput and latency percentiles. By default it starts its own cluster
//! (3 shard processes and a gateway process, on loopback, in a temp folder)
//! so runs with and without coalescing are one flag apart; `--external`
//! drives the gateway named by `--gateway` instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use omnishard_client::{Client, Op, PutOptions};
use omnishard_common::process::start_role;
use omnishard_common::topology::{ShardAddr, Topology};
use omnishard_gateway::GatewayConfig;
use rand::Rng;
use serde_json::json;
use tokio::process::{Child, Command};

use crate::args::{BenchCommand, BenchKvArgs, Global};
use crate::output;

/// Keys written per `Write` call while loading.
const LOAD_BATCH: u64 = 500;

pub async fn run(global: &Global, cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Kv(args) => kv(global, args).await,
        BenchCommand::Graph(args) => crate::bench_graph::run(global, args).await,
        BenchCommand::Search(args) => crate::bench_search::run(global, args).await,
        BenchCommand::Files(args) => crate::bench_files::run(global, args).await,
        BenchCommand::OtlpSink(args) => crate::bench_otlp::run(args).await,
        BenchCommand::Compare(args) => crate::bench_compare::run(global, *args).await,
        BenchCommand::Failover(args) => crate::bench_failover::run(global, args).await,
        BenchCommand::EchoServer(args) => crate::bench_compare::echo_server(args).await,
    }
}

/// Results of one phase.
struct PhaseResult {
    name: String,
    ops: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    /// CPU seconds each process used during the phase.
    cpu: CpuUse,
}

/// CPU time (user + system, seconds) of the benchmark's processes. Reported
/// per operation beside throughput: on a shared VM the wall clock drifts from
/// run to run, while CPU time per operation is what tracing or coalescing
/// actually change.
#[derive(Debug, Clone, Copy, Default)]
struct CpuUse {
    gateway: f64,
    shards: f64,
    client: f64,
}

impl CpuUse {
    /// Now, for `cluster`'s processes (none when the gateway is external) and this process.
    fn now(cluster: Option<&EmbeddedCluster>) -> CpuUse {
        let mut cpu = CpuUse { client: cpu_seconds("self").unwrap_or(0.0), ..CpuUse::default() };
        for (name, _, seconds) in cluster.map(EmbeddedCluster::usage).unwrap_or_default() {
            if name == "gateway" {
                cpu.gateway += seconds;
            } else {
                cpu.shards += seconds;
            }
        }
        cpu
    }

    fn since(self, before: CpuUse) -> CpuUse {
        CpuUse {
            gateway: self.gateway - before.gateway,
            shards: self.shards - before.shards,
            client: self.client - before.client,
        }
    }

    /// Microseconds of CPU per operation: gateway, shards, client, total.
    fn per_op_us(&self, ops: u64) -> [f64; 4] {
        let per = |s: f64| if ops == 0 { 0.0 } else { s * 1e6 / ops as f64 };
        [per(self.gateway), per(self.shards), per(self.client), per(self.gateway + self.shards + self.client)]
    }
}

/// User + system CPU seconds of process `pid` (`self` for this one), from `/proc`.
fn cpu_seconds(pid: &str) -> Option<f64> {
    // utime and stime, fields 14 and 15 of /proc/PID/stat, in clock ticks (100 Hz).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

async fn kv(global: &Global, args: BenchKvArgs) -> anyhow::Result<()> {
    let mut cluster = None;
    let url = if args.external {
        global.gateway.clone()
    } else {
        let started = EmbeddedCluster::start(&args).await?;
        let url = started.url.clone();
        cluster = Some(started);
        url
    };
    let clients = connect_pool(&url, args.connections).await?;
    let value: Arc<Vec<u8>> = Arc::new((0..args.value_size).map(|i| (i % 251) as u8).collect());
    load(&clients[0], &args, &value).await?;
    let mut results = Vec::new();
    for phase in &args.phases {
        let before = CpuUse::now(cluster.as_ref());
        let mut result = run_phase(phase, &clients, &args, &value).await?;
        result.cpu = CpuUse::now(cluster.as_ref()).since(before);
        results.push(result);
    }
    report(global, &args, &results);
    if let Some(cluster) = cluster {
        cluster.stop().await;
    }
    Ok(())
}

async fn connect_pool(url: &str, connections: usize) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::new();
    for _ in 0..connections.max(1) {
        clients.push(Client::connect(url).await?.with_namespace("bench"));
    }
    Ok(clients)
}

/// Writes every key once so reads hit existing data.
async fn load(client: &Client, args: &BenchKvArgs, value: &Arc<Vec<u8>>) -> anyhow::Result<()> {
    let bar = ProgressBar::new(args.keys).with_style(style("load")).with_message("loading keys");
    let mut start = 0;
    while start < args.keys {
        let end = (start + LOAD_BATCH).min(args.keys);
        let ops = (start..end)
            .map(|i| Op::Put { key: key(i), value: value.to_vec(), options: PutOptions::default() })
            .collect();
        client.write(ops).await.context("loading keys")?;
        bar.set_position(end);
        start = end;
    }
    bar.finish_and_clear();
    Ok(())
}

async fn run_phase(
    phase: &str,
    clients: &[Client],
    args: &BenchKvArgs,
    value: &Arc<Vec<u8>>,
) -> anyhow::Result<PhaseResult> {
    let is_put = match phase {
        "put" => true,
        "get" => false,
        other => anyhow::bail!("--phases: unknown phase {other:?}; use put and get"),
    };
    let bar = ProgressBar::new(args.duration.as_secs().max(1)).with_style(style(phase)).with_message(phase.to_string());
    let started = Instant::now();
    let deadline = started + args.duration;
    let tasks: Vec<_> = (0..args.clients)
        .map(|n| {
            let client = clients[n % clients.len()].clone();
            let value = value.clone();
            let keys = args.keys;
            tokio::spawn(async move { drive(client, is_put, keys, value, deadline).await })
        })
        .collect();
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(250)).await;
                bar.set_position(started.elapsed().as_secs());
            }
        })
    };
    let mut latency = new_histogram();
    let (mut ops, mut errors) = (0, 0);
    for task in tasks {
        let (h, n, e) = task.await?;
        latency.add(h)?;
        ops += n;
        errors += e;
    }
    let elapsed = started.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    Ok(PhaseResult { name: phase.to_string(), ops, errors, elapsed, latency, cpu: CpuUse::default() })
}

/// One client: back-to-back operations on uniformly random keys until `deadline`.
async fn drive(
    client: Client,
    is_put: bool,
    keys: u64,
    value: Arc<Vec<u8>>,
    deadline: Instant,
) -> (Histogram<u64>, u64, u64) {
    let mut latency = new_histogram();
    let (mut ops, mut errors) = (0u64, 0u64);
    while Instant::now() < deadline {
        let k = key(rand::rng().random_range(0..keys));
        let t = Instant::now();
        let ok = if is_put {
            client.put(&k, &value, PutOptions::default()).await.is_ok()
        } else {
            client.get(&k).await.is_ok()
        };
        let _ = latency.record(t.elapsed().as_micros() as u64);
        ops += 1;
        errors += u64::from(!ok);
    }
    (latency, ops, errors)
}

fn new_histogram() -> Histogram<u64> {
    // Construction only fails for precisions above 5 significant figures.
    let mut h = Histogram::<u64>::new(3).expect("3 significant figures is a valid precision");
    h.auto(true);
    h
}

fn key(i: u64) -> Vec<u8> {
    format!("bench:{i:012}").into_bytes()
}

fn style(_phase: &str) -> ProgressStyle {
    ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len}").unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn report(global: &Global, args: &BenchKvArgs, results: &[PhaseResult]) {
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    if global.json {
        let phases: Vec<_> = results
            .iter()
            .map(|r| {
                let [gateway, shards, client, total] = r.cpu.per_op_us(r.ops);
                json!({"phase": r.name, "ops": r.ops, "errors": r.errors,
                       "ops_per_sec": r.ops as f64 / r.elapsed.as_secs_f64(),
                       "p50_ms": ms(&r.latency, 0.50), "p99_ms": ms(&r.latency, 0.99), "p999_ms": ms(&r.latency, 0.999),
                       "cpu_us_per_op": {"gateway": gateway, "shards": shards, "client": client, "total": total}})
            })
            .collect();
        output::print_json(&json!({"clients": args.clients, "value_size": args.value_size, "keys": args.keys,
            "coalesce": args.coalesce, "coalesce_inflight": args.coalesce_inflight, "external": args.external, "phases": phases}));
        return;
    }
    println!(
        "clients={} connections={} value_size={} keys={} duration={:?} coalesce={} coalesce_inflight={}",
        args.clients,
        args.connections,
        args.value_size,
        args.keys,
        args.duration,
        if args.external { "external".to_string() } else { args.coalesce.to_string() },
        args.coalesce_inflight.map(|n| n.to_string()).unwrap_or_else(|| "default".into())
    );
    println!("| op  | ops/s | p50 ms | p99 ms | p99.9 ms | errors | CPU µs/op gateway | shards | client |");
    println!("|-----|------:|-------:|-------:|---------:|-------:|------------------:|-------:|-------:|");
    for r in results {
        let [gateway, shards, client, _] = r.cpu.per_op_us(r.ops);
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {gateway:.1} | {shards:.1} | {client:.1} |",
            r.name,
            r.ops as f64 / r.elapsed.as_secs_f64(),
            ms(&r.latency, 0.50),
            ms(&r.latency, 0.99),
            ms(&r.latency, 0.999),
            r.errors
        );
    }
}

/// A throwaway cluster of separate processes in a temp folder.
pub struct EmbeddedCluster {
    pub url: String,
    /// Per shard, its replica processes (one unless started replicated).
    pub groups: Vec<Vec<Replica>>,
    gateway: Child,
    _dir: tempfile::TempDir,
}

/// One shard replica process of an [`EmbeddedCluster`].
pub struct Replica {
    pub shard: String,
    pub node: u64,
    pub addr: String,
    pub data: std::path::PathBuf,
    pub child: Option<Child>,
}

impl Replica {
    /// Starts (or restarts, on its old address and folder) this replica.
    pub async fn start(&mut self, replicated: bool) -> anyhow::Result<()> {
        let data = self.data.to_string_lossy().into_owned();
        let node = self.node.to_string();
        let mut args = vec!["shard", "--id", &self.shard, "--listen", &self.addr, "--data", &data];
        if replicated {
            args.extend(["--replica-id", &node, "--join"]);
        }
        let mut last = None;
        // A restart reuses a port that was just released: retry briefly.
        for _ in 0..50 {
            match spawn_role(&args).await {
                Ok((child, addr)) => {
                    self.child = Some(child);
                    self.addr = addr;
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("cannot start {}", self.shard)))
    }

    /// SIGKILL: no shutdown, no flush.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

impl EmbeddedCluster {
    async fn start(args: &BenchKvArgs) -> anyhow::Result<EmbeddedCluster> {
        EmbeddedCluster::start_replicated(args.shards, args.replicas, |config| {
            config.gateway.coalesce = args.coalesce;
            if let Some(inflight) = args.coalesce_inflight {
                config.gateway.coalesce_inflight = inflight;
            }
        })
        .await
    }

    /// `shards` shard processes and a gateway process with the given coalescing settings.
    pub async fn start_with(shards: usize, coalesce: bool, inflight: Option<usize>) -> anyhow::Result<EmbeddedCluster> {
        EmbeddedCluster::start_configured(shards, |config| {
            config.gateway.coalesce = coalesce;
            if let Some(inflight) = inflight {
                config.gateway.coalesce_inflight = inflight;
            }
        })
        .await
    }

    /// `shards` shard processes and a gateway process whose config `adjust` edits.
    pub async fn start_configured(
        shards: usize,
        adjust: impl FnOnce(&mut GatewayConfig),
    ) -> anyhow::Result<EmbeddedCluster> {
        EmbeddedCluster::start_replicated(shards, 1, adjust).await
    }

    /// `shards` groups of `replicas` shard processes each (Raft groups when
    /// more than one), and a gateway process whose config `adjust` edits.
    pub async fn start_replicated(
        shards: usize,
        replicas: usize,
        adjust: impl FnOnce(&mut GatewayConfig),
    ) -> anyhow::Result<EmbeddedCluster> {
        let dir = tempfile::tempdir()?;
        let replicated = replicas > 1;
        let mut groups = Vec::new();
        let mut addrs = Vec::new();
        for i in 1..=shards {
            let id = format!("shard-{i}");
            let mut group = Vec::new();
            for node in 1..=replicas.max(1) as u64 {
                let data = if replicated { dir.path().join(format!("{id}-r{node}")) } else { dir.path().join(&id) };
                let mut replica = Replica { shard: id.clone(), node, addr: "127.0.0.1:0".into(), data, child: None };
                replica.start(replicated).await?;
                group.push(replica);
            }
            let all: Vec<String> = group.iter().map(|r| r.addr.clone()).collect();
            if replicated {
                omnishard_client::replication::form_group(&all, Duration::from_secs(30))
                    .await
                    .with_context(|| format!("forming shard {id}"))?;
                addrs.push(ShardAddr { id, addr: all[0].clone(), replicas: all });
            } else {
                addrs.push(ShardAddr::new(id, all[0].clone()));
            }
            groups.push(group);
        }
        let mut config = GatewayConfig::new(Topology { epoch: 1, vnodes: 256, shards: addrs });
        adjust(&mut config);
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, toml::to_string_pretty(&config)?)?;
        let (gateway, addr) =
            spawn_role(&["gateway", "--config", &config_path.to_string_lossy(), "--listen", "127.0.0.1:0"]).await?;
        Ok(EmbeddedCluster { url: format!("http://{addr}"), groups, gateway, _dir: dir })
    }

    /// The folder holding the shards' data.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Peak resident memory (Linux `VmHWM`, bytes) and CPU time used so far
    /// (user + system, seconds) of each process: shards, then the gateway.
    pub fn usage(&self) -> Vec<(String, u64, f64)> {
        let shards = self.groups.iter().flatten().filter_map(|r| {
            let name = if self.groups[0].len() > 1 { format!("{}-r{}", r.shard, r.node) } else { r.shard.clone() };
            Some((name, r.child.as_ref()?.id()?))
        });
        let gateway = self.gateway.id().map(|pid| ("gateway".to_string(), pid));
        shards
            .chain(gateway)
            .filter_map(|(name, pid)| {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                let kib: u64 =
                    status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
                Some((name, kib * 1024, cpu_seconds(&pid.to_string())?))
            })
            .collect()
    }

    pub async fn stop(mut self) {
        for replica in self.groups.iter_mut().flatten() {
            replica.kill().await;
        }
        let _ = self.gateway.kill().await;
    }
}

/// Starts `omnishard ARGS...` and waits for its address.
pub async fn spawn_role(args: &[&str]) -> anyhow::Result<(Child, String)> {
    let mut command = Command::new(std::env::current_exe()?);
    // Slow-request lines are expected under a benchmark's load; keep them out of its output.
    command.args(args).env("RUST_LOG", "warn,omnishard::slow=error");
    start_role(command, Duration::from_secs(30)).await.with_context(|| format!("starting omnishard {}", args[0]))
}
