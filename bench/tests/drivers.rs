//! Smoke tests of every driver against its real system: RocksDB in-process,
//! the echo floor on loopback, PostgreSQL and Redis started by
//! `scripts/test.sh` (through `scripts/peers.sh`), which names them in
//! `OMNISHARD_PEER_POSTGRES` and `OMNISHARD_PEER_REDIS`. The omnishard
//! driver's smoke test runs against a real cluster in `tests/tests/bench.rs`.

use std::time::Duration;

use omnishard_bench::drivers::{postgres::Postgres, redis::Redis, rocksdb::RocksDb};
use omnishard_bench::kv::{self, KvSystem, YcsbConfig};
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
