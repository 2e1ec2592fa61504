//! Smoke tests of every driver against its real system: RocksDB and Tantivy
//! in-process, the echo floor on loopback, PostgreSQL and Redis started by
//! `scripts/test.sh` (through `scripts/peers.sh`), which names them in
//! `OMNISHARD_PEER_POSTGRES` and `OMNISHARD_PEER_REDIS`. The omnishard
//! driver's smoke test runs against a real cluster in `tests/tests/bench.rs`.

use std::time::Duration;

use std::sync::Arc;

use omnishard_bench::drivers::postgres_graph::PostgresGraph;
use omnishard_bench::drivers::postgres_search::PostgresSearch;
use omnishard_bench::drivers::tantivy::TantivySearch;
use omnishard_bench::drivers::{postgres::Postgres, redis::Redis, rocksdb::RocksDb};
use omnishard_bench::graph::{self, GraphConfig, SyntheticGraph};
use omnishard_bench::kv::{self, KvSystem, YcsbConfig};
use omnishard_bench::runner::Timing;
use omnishard_bench::search::{self, Doc, QueryKind, SearchClient, SearchConfig, SearchRun, SearchSystem};
use omnishard_bench::stats::Measurement;
use omnishard_bench::workload::Workload;

fn tiny() -> YcsbConfig {
    YcsbConfig {
        records: 300,
        value_size: 100,
        clients: 4,
        warmup: Duration::from_millis(50),
        duration: Duration::from_millis(300),
        load_batch: 64,
    }
}

/// Checks the driver, loads, and runs workloads A (reads and updates) and E (scans and inserts).
async fn smoke<S: KvSystem>(system: &S) {
    kv::check(system).await.unwrap();
    kv::load(system, &tiny()).await.unwrap();
    for letter in ['A', 'E'] {
        let result = kv::run(system, Workload::core(letter).unwrap(), &tiny()).await.unwrap();
        assert_eq!(result.errors, 0, "{result:?}");
        assert!(result.ops_per_sec > 0.0, "{result:?}");
        let ops: Vec<&str> = result.ops.iter().map(|o| o.op.as_str()).collect();
        let expected: &[&str] = if letter == 'A' { &["read", "update"] } else { &["scan", "insert"] };
        for op in expected {
            assert!(ops.contains(op), "workload {letter} recorded {ops:?}");
        }
    }
}

/// The peer server named by `var`, or `None` (test skipped, said on stderr)
/// unless `OMNISHARD_REQUIRE_PEERS` is set, as `scripts/test.sh` sets it.
fn peer(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) => Some(url),
        Err(_) if std::env::var("OMNISHARD_REQUIRE_PEERS").is_ok() => {
            panic!("{var} is not set; scripts/test.sh starts the peer servers and sets it")
        }
        Err(_) => {
            eprintln!("skipped: {var} is not set (scripts/test.sh starts PostgreSQL and Redis)");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rocksdb_driver_runs_a_tiny_workload() {
    let dir = tempfile::tempdir().unwrap();
    smoke(&RocksDb::open(dir.path()).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_postgres_driver_runs_a_tiny_workload() {
    let Some(url) = peer("OMNISHARD_PEER_POSTGRES") else { return };
    let postgres = Postgres::create(&url).await.unwrap();
    assert_eq!(postgres.setting("synchronous_commit").await.unwrap(), "on");
    smoke(&postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_redis_driver_runs_a_tiny_workload_in_both_fsync_modes() {
    let Some(url) = peer("OMNISHARD_PEER_REDIS") else { return };
    for fsync in ["always", "everysec"] {
        let redis = Redis::create(&url, fsync).await.unwrap();
        assert_eq!(redis.name(), format!("redis (appendfsync {fsync})"));
        smoke(&redis).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_echo_floor_direct_and_through_a_relay() {
    let direct = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let direct_url = format!("http://{}", direct.local_addr().unwrap());
    tokio::spawn(omnishard_bench::echo::serve(direct, None));
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_url = format!("http://{}", relay.local_addr().unwrap());
    // The relay connects to its upstream before serving, which is already listening.
    tokio::spawn(omnishard_bench::echo::serve(relay, Some(direct_url.clone())));
    for (name, url) in [("direct", &direct_url), ("relay", &relay_url)] {
        let mut result = None;
        // The relay may still be connecting upstream: retry the first attempt briefly.
        for _ in 0..50 {
            match omnishard_bench::echo::measure(name, url, 4, 1, 64, Duration::ZERO, Duration::from_millis(200)).await
            {
                Ok(r) => {
                    result = Some(r);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let result = result.expect("echo server answers");
        assert_eq!(result.errors, 0, "{result:?}");
        assert!(result.ops[0].ops > 10, "{result:?}");
    }
}

fn tiny_timing() -> Timing {
    Timing { warmup: Duration::from_millis(20), duration: Duration::from_millis(200) }
}

/// The labels of `results`, in order.
fn labels(results: &[Measurement]) -> Vec<&str> {
    results.iter().map(Measurement::label).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_postgres_graph_driver_answers_like_the_in_memory_graph() {
    let Some(url) = peer("OMNISHARD_PEER_POSTGRES") else { return };
    let store = PostgresGraph::create(&url).await.unwrap();
    let graph = Arc::new(SyntheticGraph::generate(2_000, 4.0, 1));
    let config = GraphConfig { loaders: 2, clients: 3, timing: tiny_timing() };
    // `run` first checks neighbours, 3-hop reach and shortest paths against the in-memory graph.
    let results = graph::run(&store, graph.clone(), &config).await.unwrap();
    assert_eq!(labels(&results), ["graph-load", "graph-1hop", "graph-3hop", "graph-3hop-concurrent", "graph-path"]);
    assert_eq!(results[0].unit, "edges");
    assert!(results[0].workload.contains(&format!("{} power-law edges", graph.edges())), "{}", results[0].workload);
    for m in &results[1..] {
        assert!(m.errors == 0 && m.ops[0].ops > 0, "{m:?}");
    }
}

/// The 4,058-document WordNet sample the search tests use.
pub fn sample_docs() -> Arc<Vec<Doc>> {
    let text = include_str!("../../tests/data/wordnet-sample.jsonl");
    Arc::new(text.lines().map(|line| serde_json::from_str(line).unwrap()).collect())
}

async fn search_smoke<S: SearchSystem>(store: &S) -> SearchRun {
    let config = SearchConfig { loaders: 2, batch: 500, queries: 30, clients: 3, timing: tiny_timing() };
    let run = search::run(store, sample_docs(), &config).await.unwrap();
    let expected = ["search-index", "search-term", "search-phrase", "search-boolean", "search-concurrent"];
    assert_eq!(labels(&run.measurements), expected);
    assert_eq!(run.measurements[0].unit, "docs");
    for m in &run.measurements[1..] {
        assert!(m.errors == 0 && m.ops[0].ops > 0, "{m:?}");
    }
    // Queries come from the corpus: most of them match something.
    let matched = run.answers.iter().flatten().filter(|top| !top.is_empty()).count();
    assert!(matched * 10 > 90 * 7, "{matched} of 90 queries matched");
    assert!(run
        .answers
        .iter()
        .flatten()
        .all(|top| top.len() <= 10 && top.windows(2).all(|w| w[0].score >= w[1].score)));
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_tantivy_search_driver_indexes_and_ranks_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    let store = TantivySearch::create(dir.path()).unwrap();
    let run = search_smoke(&store).await;
    // The kept top 10s are those of the sampled queries, in order: asking
    // them again on a new client gives the same rankings.
    let mut client = store.client().await.unwrap();
    let mut again = Vec::new();
    for kind in QueryKind::ALL {
        let mut tops = Vec::new();
        for query in search::sample_queries(&sample_docs(), kind, 30) {
            tops.push(client.search(&query).await.unwrap());
        }
        again.push(tops);
    }
    assert_eq!(search::agreement(&run.answers, &again), 1.0);
    assert_eq!(run.answers, again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_postgres_search_driver_indexes_and_ranks_the_sample() {
    let Some(url) = peer("OMNISHARD_PEER_POSTGRES") else { return };
    search_smoke(&PostgresSearch::create(&url).await.unwrap()).await;
}
