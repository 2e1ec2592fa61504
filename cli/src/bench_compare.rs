//! `omnishard bench compare` (alias `ycsb`): omnishard against the systems
//! users would otherwise pick, all through the one harness of
//! `omnishard-bench`: the YCSB core workloads on omnishard (an embedded
//! cluster of separate processes), PostgreSQL, Redis and in-process RocksDB
//! next to the gRPC echo floor; graph workloads on PostgreSQL; search on
//! PostgreSQL and in-process Tantivy; files against the raw disk.
//! `bench/run-peers.sh` starts the peer servers and calls this;
//! `omnishard bench echo-server` is the floor's server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use omnishard_bench::drivers::omnishard::{Omnishard, OmnishardDirect};
use omnishard_bench::drivers::omnishard_graph::OmnishardGraph;
use omnishard_bench::drivers::omnishard_search::OmnishardSearch;
use omnishard_bench::drivers::postgres::{self, Postgres};
use omnishard_bench::drivers::postgres_graph::PostgresGraph;
use omnishard_bench::drivers::postgres_search::PostgresSearch;
use omnishard_bench::drivers::tantivy::TantivySearch;
use omnishard_bench::drivers::{redis::Redis, rocksdb::RocksDb};
use omnishard_bench::files::FilesConfig;
use omnishard_bench::graph::{GraphConfig, GraphSystem, SyntheticGraph};
use omnishard_bench::kv::{self, KvSystem, YcsbConfig};
use omnishard_bench::report::{Ratio, Report};
use omnishard_bench::runner::Timing;
use omnishard_bench::search::{self, Doc, Hit, SearchConfig, SearchSystem};
use omnishard_bench::stats::Measurement;
use omnishard_bench::workload::Workload;
use omnishard_bench::{echo, files};

use crate::args::{BenchCompareArgs, EchoServerArgs, Global};
use crate::bench::{spawn_role, EmbeddedCluster};
use crate::output;

/// The systems, and the suites each has drivers for.
const SYSTEMS: &[(&str, &[&str])] = &[
    ("echo", &["kv"]),
    ("omnishard", &["kv", "graph", "search", "files"]),
    ("omnishard-uncoalesced", &["kv"]),
    ("omnishard-direct", &["kv"]),
    ("postgres", &["kv", "graph", "search"]),
    ("redis-always", &["kv"]),
    ("redis-everysec", &["kv"]),
    ("rocksdb", &["kv"]),
    ("tantivy", &["search"]),
    ("disk", &["files"]),
];

/// What a comparison has gathered so far.
#[derive(Default)]
struct Gathered {
    results: Vec<Measurement>,
    settings: Vec<String>,
    /// Each search system's top 10s, to compare rankings.
    answers: Vec<(String, Vec<Vec<Vec<Hit>>>)>,
}

/// The inputs every system of a suite shares, made on first use.
struct Shared<'a> {
    args: &'a BenchCompareArgs,
    graph: Option<Arc<SyntheticGraph>>,
    docs: Option<Arc<Vec<Doc>>>,
}

impl Shared<'_> {
    fn graph(&mut self) -> Arc<SyntheticGraph> {
        let args = self.args;
        self.graph
            .get_or_insert_with(|| Arc::new(SyntheticGraph::generate(args.graph_vertices, args.graph_degree, 1)))
            .clone()
    }

    fn docs(&mut self) -> anyhow::Result<Arc<Vec<Doc>>> {
        if self.docs.is_none() {
            let docs = search::wordnet(&self.args.corpus, self.args.search_docs).map_err(anyhow::Error::msg)?;
            self.docs = Some(Arc::new(docs));
        }
        Ok(self.docs.clone().unwrap_or_default())
    }
}

pub async fn run(global: &Global, args: BenchCompareArgs) -> anyhow::Result<()> {
    check_names(&args)?;
    let config = YcsbConfig {
        records: args.records,
        value_size: args.value_size,
        clients: args.clients,
        warmup: args.warmup,
        duration: args.duration,
        load_batch: 500,
    };
    let mut shared = Shared { args: &args, graph: None, docs: None };
    let mut gathered = Gathered::default();
    for system in &args.systems {
        let suites = suites_of(system, &args);
        if !suites.is_empty() {
            run_system(system, &suites, &args, &config, &mut shared, &mut gathered).await?;
        }
    }
    describe_suites(&args, &shared, &mut gathered);
    let checks = ranking_checks(&gathered.answers);
    let Gathered { mut results, settings, .. } = gathered;
    // One table per workload (the echo floor first), systems in the order they ran.
    results.sort_by_key(|r| (r.label() != "echo", r.label().to_string()));
    let report = Report { machine: machine(), config, settings, results, checks };
    if let Some(dir) = &args.out {
        write_report(&report, dir)?;
    }
    if global.json {
        output::print_json(&serde_json::to_value(&report)?);
    } else {
        print!("{}", report.markdown());
    }
    Ok(())
}

/// Refuses unknown system and suite names before anything runs.
fn check_names(args: &BenchCompareArgs) -> anyhow::Result<()> {
    for system in &args.systems {
        if !SYSTEMS.iter().any(|(name, _)| name == system) {
            let known: Vec<&str> = SYSTEMS.iter().map(|(name, _)| *name).collect();
            anyhow::bail!("--systems: unknown system {system:?}; use {}", known.join(", "));
        }
    }
    for suite in &args.suites {
        if !["kv", "graph", "search", "files"].contains(&suite.as_str()) {
            anyhow::bail!("--suites: unknown suite {suite:?}; use kv, graph, search or files");
        }
    }
    Ok(())
}

/// The asked suites that `system` has drivers for.
fn suites_of(system: &str, args: &BenchCompareArgs) -> Vec<String> {
    let supported = SYSTEMS.iter().find(|(name, _)| *name == system).map(|(_, s)| *s).unwrap_or_default();
    args.suites.iter().filter(|s| supported.contains(&s.as_str())).cloned().collect()
}

fn write_report(report: &Report, dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("report.md"), report.markdown())?;
    std::fs::write(dir.join("report.json"), report.json())?;
    match omnishard_bench::chart::render(report, dir) {
        Ok(files) => {
            eprintln!("charts: {}", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "))
        }
        Err(e) => eprintln!("warning: no charts: {e}"),
    }
    Ok(())
}

/// Runs every asked suite on one system.
async fn run_system(
    system: &str,
    suites: &[String],
    args: &BenchCompareArgs,
    config: &YcsbConfig,
    shared: &mut Shared<'_>,
    out: &mut Gathered,
) -> anyhow::Result<()> {
    let has = |suite: &str| suites.iter().any(|s| s == suite);
    let workloads = workloads(args)?;
    match system {
        "echo" => {
            out.results.extend(echo_floor(args, config).await?);
            out.settings.push(format!(
                "echo: bare gRPC unary echo of {}-byte payloads, direct and through one relay process; {} clients over {} connections",
                config.value_size, config.clients, args.connections
            ));
        }
        "omnishard" => {
            let cluster = EmbeddedCluster::start_with(args.shards, true, None).await?;
            let outcome = omnishard_suites(&cluster.url, &has, args, config, &workloads, shared, out).await;
            cluster.stop().await;
            outcome?;
            out.settings.push(format!(
                "omnishard: {} shard processes and a gateway process (coalescing on), writes acknowledged after the shard's synced WAL write; {} clients over {} connections",
                args.shards, config.clients, args.connections
            ));
        }
        "omnishard-uncoalesced" => {
            let cluster = EmbeddedCluster::start_with(args.shards, false, None).await?;
            let store = Omnishard::connect(&cluster.url, args.connections).await.map_err(anyhow::Error::msg);
            let outcome = match store {
                Ok(store) => run_kv(&store.named("omnishard (coalescing off)"), &workloads, config).await,
                Err(e) => Err(e),
            };
            cluster.stop().await;
            out.results.extend(outcome?);
            out.settings.push(
                "omnishard (coalescing off): the same cluster with the gateway sending one shard call per request"
                    .into(),
            );
        }
        "omnishard-direct" => {
            let cluster = EmbeddedCluster::start_with(args.shards, true, None).await?;
            let outcome = match OmnishardDirect::connect(&cluster.url).await {
                Ok(store) => run_kv(&store, &workloads, config).await,
                Err(e) => Err(anyhow::Error::msg(e)),
            };
            cluster.stop().await;
            out.results.extend(outcome?);
            out.settings.push(
                "omnishard (SDK direct mode): the same cluster; one DirectClient shared by every client task caches the ring and sends gets and puts (both coalesced per shard) and batch gets straight to the owning shard over one channel per shard; loads and scans through the gateway".into(),
            );
        }
        "postgres" => {
            let sync = postgres::setting(&args.postgres, "synchronous_commit").await.map_err(anyhow::Error::msg)?;
            out.settings.push(format!(
                "postgres: synchronous_commit={sync}, one connection per client ({}), prepared statements, upserts; graphs in an adjacency table indexed on (src, dst) and dst before a COPY load, traversed with recursive CTEs; search on a stored tsvector (english) with a GIN index, ranked by ts_rank",
                config.clients
            ));
            if has("kv") {
                let store = Postgres::create(&args.postgres).await.map_err(anyhow::Error::msg)?;
                out.results.extend(run_kv(&store, &workloads, config).await?);
            }
            if has("graph") {
                let store = PostgresGraph::create(&args.postgres).await.map_err(anyhow::Error::msg)?;
                out.results.extend(run_graph(&store, shared.graph(), args).await?);
            }
            if has("search") {
                let store = PostgresSearch::create(&args.postgres).await.map_err(anyhow::Error::msg)?;
                run_search(&store, shared.docs()?, args, out).await?;
            }
        }
        "redis-always" | "redis-everysec" => {
            let fsync = system.trim_start_matches("redis-");
            let store = Redis::create(&args.redis, fsync).await.map_err(anyhow::Error::msg)?;
            out.results.extend(run_kv(&store, &workloads, config).await?);
            out.settings.push(format!(
                "redis: appendonly yes, appendfsync {fsync}, one connection per client; scans through a sorted-set key index"
            ));
        }
        "rocksdb" => {
            let dir = tempfile::tempdir()?;
            let store = RocksDb::open(dir.path()).map_err(anyhow::Error::msg)?;
            out.results.extend(run_kv(&store, &workloads, config).await?);
            out.settings.push("rocksdb: in-process, no network, synced WAL writes, 256 MiB block cache".into());
        }
        "tantivy" => {
            let dir = tempfile::tempdir()?;
            let store = TantivySearch::create(dir.path()).map_err(anyhow::Error::msg)?;
            run_search(&store, shared.docs()?, args, out).await?;
            out.settings.push(
                "tantivy: one in-process index with omnishard's schema and analyzers, 2 indexing threads, 128 MiB, one commit; queries on the calling thread, ids read from the stored field".into(),
            );
        }
        "disk" => {
            let dir = tempfile::tempdir()?;
            let bar = spinner("disk: dd-style write and read");
            out.results.extend(files::disk(dir.path(), files_config(args)).await.map_err(anyhow::Error::msg)?);
            bar.finish_and_clear();
            out.settings.push(
                "disk: the raw disk under the temp folder, dd-style: 1 MiB sequential writes then fdatasync, then a sequential read back (from the page cache, as omnishard's downloads may be)".into(),
            );
        }
        other => anyhow::bail!("--systems: unknown system {other:?}"),
    }
    Ok(())
}

/// Every asked suite against one running cluster.
async fn omnishard_suites(
    url: &str,
    has: &dyn Fn(&str) -> bool,
    args: &BenchCompareArgs,
    config: &YcsbConfig,
    workloads: &[Workload],
    shared: &mut Shared<'_>,
    out: &mut Gathered,
) -> anyhow::Result<()> {
    if has("kv") {
        let store = Omnishard::connect(url, args.connections).await.map_err(anyhow::Error::msg)?;
        out.results.extend(run_kv(&store, workloads, config).await?);
    }
    if has("graph") {
        let store = OmnishardGraph::connect(url).await.map_err(anyhow::Error::msg)?;
        out.results.extend(run_graph(&store, shared.graph(), args).await?);
    }
    if has("search") {
        let store = OmnishardSearch::connect(url).await.map_err(anyhow::Error::msg)?;
        run_search(&store, shared.docs()?, args, out).await?;
    }
    if has("files") {
        let client = omnishard_client::Client::connect(url).await?;
        let bar = spinner("omnishard: uploads and downloads");
        out.results.extend(files::omnishard(&client, files_config(args)).await.map_err(anyhow::Error::msg)?);
        bar.finish_and_clear();
    }
    Ok(())
}

fn timing(args: &BenchCompareArgs) -> Timing {
    Timing { warmup: args.warmup.min(Duration::from_secs(2)), duration: args.model_duration }
}

fn files_config(args: &BenchCompareArgs) -> FilesConfig {
    FilesConfig { size: args.file_size.as_u64(), files: args.files }
}

async fn run_graph<S: GraphSystem>(
    store: &S,
    graph: Arc<SyntheticGraph>,
    args: &BenchCompareArgs,
) -> anyhow::Result<Vec<Measurement>> {
    let name = store.name();
    let bar = spinner(&format!("{name}: graph of {} vertices, {} edges", graph.vertices, graph.edges()));
    let config = GraphConfig { loaders: args.loaders, clients: args.clients, timing: timing(args) };
    let results =
        omnishard_bench::graph::run(store, graph, &config).await.map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    bar.finish_and_clear();
    Ok(results)
}

async fn run_search<S: SearchSystem>(
    store: &S,
    docs: Arc<Vec<Doc>>,
    args: &BenchCompareArgs,
    out: &mut Gathered,
) -> anyhow::Result<()> {
    let name = store.name();
    let bar = spinner(&format!("{name}: search over {} documents", docs.len()));
    let config = SearchConfig {
        loaders: args.loaders,
        batch: 1_000,
        queries: args.search_queries,
        clients: args.clients,
        timing: timing(args),
    };
    let run = search::run(store, docs, &config).await.map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    bar.finish_and_clear();
    out.results.extend(run.measurements);
    out.answers.push((name, run.answers));
    Ok(())
}

/// The shape of each non-KV suite that ran, for the report's fine print.
fn describe_suites(args: &BenchCompareArgs, shared: &Shared<'_>, out: &mut Gathered) {
    if let Some(graph) = &shared.graph {
        out.settings.push(format!(
            "graph: {} vertices, {} edges (mean out-degree {}, power-law targets, seed 1), loaded by {} connections; timed runs {:.0} s after a warm-up; every system's answers checked against an in-memory BFS first",
            graph.vertices,
            graph.edges(),
            args.graph_degree,
            args.loaders,
            args.model_duration.as_secs_f64()
        ));
    }
    if let Some(docs) = &shared.docs {
        out.settings.push(format!(
            "search: {} WordNet glosses (title, stemmed body, part of speech, lexicographer file), {} loaders × 1,000 documents per call, timed until searchable; {} queries of each kind drawn from the corpus, top 10",
            docs.len(),
            args.loaders,
            args.search_queries
        ));
    }
    if args.suites.iter().any(|s| s == "files") {
        out.settings.push(format!(
            "files: {} files of {} of random bytes each (nothing deduplicates), one at a time; downloads checked against SHA-256",
            args.files, args.file_size
        ));
    }
}

/// How often omnishard's top 10 equals single-process Tantivy's.
fn ranking_checks(answers: &[(String, Vec<Vec<Vec<Hit>>>)]) -> Vec<Ratio> {
    let find = |name: &str| answers.iter().find(|(n, _)| n == name).map(|(_, a)| a);
    let (Some(ours), Some(theirs)) = (find("omnishard"), find("tantivy (in-process)")) else { return Vec::new() };
    let queries: usize = ours.iter().map(Vec::len).sum();
    vec![Ratio {
        goal: format!("omnishard search top 10 = tantivy (in-process) top 10 (share of {queries} queries)"),
        ratio: search::agreement(ours, theirs),
        floor: 1.0,
    }]
}

fn workloads(args: &BenchCompareArgs) -> anyhow::Result<Vec<Workload>> {
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
async fn run_kv<S: KvSystem>(
    store: &S,
    workloads: &[Workload],
    config: &YcsbConfig,
) -> anyhow::Result<Vec<Measurement>> {
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
async fn echo_floor(args: &BenchCompareArgs, config: &YcsbConfig) -> anyhow::Result<Vec<Measurement>> {
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
