//! `omnishard bench ycsb`: the YCSB core workloads against omnishard (an
//! embedded cluster of separate processes), PostgreSQL, Redis and
//! in-process RocksDB, all through the one harness of `omnishard-bench`,
//! next to the gRPC echo floor. `bench/run-peers.sh` starts the peer servers
//! and calls this; `omnishard bench echo-server` is the floor's server.

use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use omnishard_bench::drivers::{omnishard::Omnishard, postgres::Postgres, redis::Redis, rocksdb::RocksDb};
use omnishard_bench::echo;
use omnishard_bench::kv::{self, KvSystem, YcsbConfig, YcsbResult};
use omnishard_bench::report::Report;
use omnishard_bench::workload::Workload;

use crate::args::{BenchYcsbArgs, EchoServerArgs, Global};
use crate::bench::{spawn_role, EmbeddedCluster};
use crate::output;

pub async fn run(global: &Global, args: BenchYcsbArgs) -> anyhow::Result<()> {
    let config = YcsbConfig {
        records: args.records,
        value_size: args.value_size,
        clients: args.clients,
        warmup: args.warmup,
        duration: args.duration,
        load_batch: 500,
    };
    let workloads = workloads(&args)?;
    let mut results = Vec::new();
    let mut settings = Vec::new();
    for system in &args.systems {
        match system.as_str() {
            "echo" => {
                results.extend(echo_floor(&args, &config).await?);
                settings.push(format!(
                    "echo: bare gRPC unary echo of {}-byte payloads, direct and through one relay process; {} clients over {} connections",
                    config.value_size, config.clients, args.connections
                ));
            }
            "omnishard" => {
                let cluster = EmbeddedCluster::start_with(args.shards, true, None).await?;
                let store = Omnishard::connect(&cluster.url, args.connections).await.map_err(anyhow::Error::msg)?;
                results.extend(run_system(&store, &workloads, &config).await?);
                cluster.stop().await;
                settings.push(format!(
                    "omnishard: {} shard processes and a gateway process (coalescing on), writes acknowledged after the shard's synced WAL write; {} clients over {} connections",
                    args.shards, config.clients, args.connections
                ));
            }
            "postgres" => {
                let store = Postgres::create(&args.postgres).await.map_err(anyhow::Error::msg)?;
                let sync = store.setting("synchronous_commit").await.map_err(anyhow::Error::msg)?;
                results.extend(run_system(&store, &workloads, &config).await?);
                settings.push(format!(
                    "postgres: synchronous_commit={sync}, one connection per client ({}), prepared statements, upserts",
                    config.clients
                ));
            }
            "redis-always" | "redis-everysec" => {
                let fsync = system.trim_start_matches("redis-");
                let store = Redis::create(&args.redis, fsync).await.map_err(anyhow::Error::msg)?;
                results.extend(run_system(&store, &workloads, &config).await?);
                settings.push(format!(
                    "redis: appendonly yes, appendfsync {fsync}, one connection per client; scans through a sorted-set key index"
                ));
            }
            "rocksdb" => {
                let dir = tempfile::tempdir()?;
                let store = RocksDb::open(dir.path()).map_err(anyhow::Error::msg)?;
                results.extend(run_system(&store, &workloads, &config).await?);
                settings.push("rocksdb: in-process, no network, synced WAL writes, 256 MiB block cache".into());
            }
            other => anyhow::bail!(
                "--systems: unknown system {other:?}; use omnishard, postgres, redis-always, redis-everysec, rocksdb or echo"
            ),
        }
    }
    // One table per workload (the echo floor first), systems in the order they ran.
    results.sort_by_key(|r| {
        let label = r.workload.split(' ').next().unwrap_or_default().to_string();
        (label != "echo", label)
    });
    let report = Report { machine: machine(), config, settings, results };
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("report.md"), report.markdown())?;
        std::fs::write(dir.join("report.json"), report.json())?;
        match omnishard_bench::chart::render(&report, dir) {
            Ok(files) => {
                eprintln!("charts: {}", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "))
            }
            Err(e) => eprintln!("warning: no charts: {e}"),
        }
    }
    if global.json {
        output::print_json(&serde_json::to_value(&report)?);
    } else {
        print!("{}", report.markdown());
    }
    Ok(())
}

fn workloads(args: &BenchYcsbArgs) -> anyhow::Result<Vec<Workload>> {
    args.workloads
        .iter()
        .map(|&letter| Workload::core(letter).map_err(|e| anyhow::anyhow!("--workloads: {e}")))
        .chain((args.batch_reads > 1).then(|| Ok(Workload::batched_reads(args.batch_reads))))
        .map(|workload| {
            let mut workload = workload?;
            if let Some(distribution) = args.distribution {
                workload.distribution = distribution;
            }
            Ok(workload)
        })
        .collect()
}

/// Loads the records once, then runs every workload on them, with a progress line.
async fn run_system<S: KvSystem>(
    store: &S,
    workloads: &[Workload],
    config: &YcsbConfig,
) -> anyhow::Result<Vec<YcsbResult>> {
    let name = store.name();
    let bar = spinner(&name);
    kv::check(store).await.map_err(|e| anyhow::anyhow!("{name} does not behave as a key-value store: {e}"))?;
    bar.set_message(format!("{name}: loading {} records", config.records));
    kv::load(store, config).await.map_err(|e| anyhow::anyhow!("{name}: loading: {e}"))?;
    let mut results = Vec::new();
    for workload in workloads {
        bar.set_message(format!("{name}: YCSB {}", workload.describe()));
        let result = kv::run(store, workload.clone(), config).await.map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        results.push(result);
    }
    bar.finish_and_clear();
    Ok(results)
}

fn spinner(name: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(name.to_string());
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The echo server and a relay in front of it, each its own process, measured in turn.
async fn echo_floor(args: &BenchYcsbArgs, config: &YcsbConfig) -> anyhow::Result<Vec<YcsbResult>> {
    let bar = spinner("echo");
    let (mut direct, direct_addr) = spawn_role(&["bench", "echo-server", "--listen", "127.0.0.1:0"]).await?;
    let upstream = format!("http://{direct_addr}");
    let (mut relay, relay_addr) =
        spawn_role(&["bench", "echo-server", "--listen", "127.0.0.1:0", "--upstream", &upstream]).await?;
    let mut results = Vec::new();
    for (name, url) in [("echo direct", upstream.clone()), ("echo via relay", format!("http://{relay_addr}"))] {
        bar.set_message(format!("{name}: {} clients", config.clients));
        let result = echo::measure(
            name,
            &url,
            config.clients,
            args.connections,
            config.value_size,
            config.warmup,
            config.duration,
        )
        .await
        .map_err(anyhow::Error::msg)?;
        results.push(result);
    }
    let _ = relay.kill().await;
    let _ = direct.kill().await;
    bar.finish_and_clear();
    Ok(results)
}

/// `omnishard bench echo-server`.
pub async fn echo_server(args: EchoServerArgs) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    println!("omnishard echo listening on {}", listener.local_addr()?);
    echo::serve(listener, args.upstream).await.map_err(|e| anyhow::anyhow!("echo server: {e}"))
}

/// CPU model, core count and memory of this machine.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|rest| rest.split_once(':')).map(|(_, m)| m.trim()))
        .unwrap_or("unknown CPU");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    format!("{cores} vCPUs {model}, {:.0} GiB", mem_kib as f64 / (1 << 20) as f64)
}
