//! The benchmark harness's omnishard drivers (KV, graph, search, files)
//! against a real cluster (3 shard processes and a gateway), and the
//! `omnishard bench compare` command end to end with the echo floor,
//! in-process RocksDB and the raw disk.

use std::sync::Arc;
use std::time::Duration;

use omnishard_bench::drivers::omnishard::Omnishard;
use omnishard_bench::drivers::omnishard_graph::OmnishardGraph;
use omnishard_bench::drivers::omnishard_search::OmnishardSearch;
use omnishard_bench::drivers::tantivy::TantivySearch;
use omnishard_bench::files::{self, FilesConfig};
use omnishard_bench::graph::{self, GraphConfig, SyntheticGraph};
use omnishard_bench::kv::{self, YcsbConfig};
use omnishard_bench::runner::Timing;
use omnishard_bench::search::{self, Doc, SearchConfig};
use omnishard_bench::workload::Workload;
use omnishard_tests::Cluster;

fn tiny_timing() -> Timing {
    Timing { warmup: Duration::from_millis(20), duration: Duration::from_millis(200) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_omnishard_driver_runs_every_core_workload() {
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let store = Omnishard::connect(cluster.gateway_url(), 2).await.unwrap();
    kv::check(&store).await.unwrap();
    let config = YcsbConfig {
        records: 500,
        value_size: 100,
        clients: 4,
        warmup: Duration::from_millis(50),
        duration: Duration::from_millis(300),
        load_batch: 100,
    };
    kv::load(&store, &config).await.unwrap();
    for letter in ['A', 'B', 'C', 'D', 'E', 'F'] {
        let result = kv::run(&store, Workload::core(letter).unwrap(), &config).await.unwrap();
        assert_eq!(result.errors, 0, "workload {letter}: {result:?}");
        assert!(result.ops_per_sec > 0.0, "workload {letter}: {result:?}");
    }
    // The loaded records are really in the cluster, under the benchmark's namespace.
    let client = cluster.client().await.unwrap().with_namespace("ycsb");
    assert_eq!(client.get(b"user000000000499").await.unwrap().value.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_bench_ycsb_command_reports_echo_floor_and_rocksdb() {
    let out = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(omnishard_tests::binary().unwrap())
        .args(["--json", "bench", "compare", "--systems", "echo,rocksdb,disk", "--suites", "kv,files"])
        .args(["--workloads", "C,E", "--records", "200", "--file-size", "2MiB", "--files", "1"])
        .args(["--clients", "4", "--warmup", "10ms", "--duration", "200ms", "--out"])
        .arg(out.path())
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let rows: Vec<(String, String)> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["system"].as_str().unwrap().to_string(), r["workload"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(rows.len(), 6, "{rows:?}");
    assert_eq!(rows[0], ("echo direct".to_string(), "echo (RPC floor)".to_string()));
    assert_eq!(rows[1].0, "echo via relay");
    assert!(rows[2].1.starts_with("C (100% read"), "{rows:?}");
    assert!(rows[3].1.starts_with("E (5% insert / 95% scan"), "{rows:?}");
    assert_eq!(rows[4].0, "disk (dd-style)");
    assert!(rows[4].1.starts_with("files-read (1 files of 2 MiB"), "{rows:?}");
    assert!(rows[5].1.starts_with("files-write"), "{rows:?}");
    let markdown = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(markdown.contains("| rocksdb (in-process) |"), "{markdown}");
    assert!(markdown.contains("| system | MB/s | op |"), "{markdown}");
    for file in ["report.json", "throughput.png", "latency-p99.png"] {
        assert!(out.path().join(file).exists(), "{file}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_bench_compare_refuses_unknown_systems_and_suites() {
    for (flag, value, expected) in
        [("--systems", "mysql", "unknown system \"mysql\""), ("--suites", "timeseries", "unknown suite \"timeseries\"")]
    {
        let output = tokio::process::Command::new(omnishard_tests::binary().unwrap())
            .args(["bench", "compare", flag, value])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(expected), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_omnishard_graph_driver_answers_like_the_in_memory_graph() {
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let store = OmnishardGraph::connect(cluster.gateway_url()).await.unwrap();
    let graph = Arc::new(SyntheticGraph::generate(2_000, 4.0, 1));
    let config = GraphConfig { loaders: 2, clients: 3, timing: tiny_timing() };
    // `run` checks neighbours, 3-hop reach and shortest paths against the in-memory graph first.
    let results = graph::run(&store, graph, &config).await.unwrap();
    let labels: Vec<&str> = results.iter().map(|m| m.label()).collect();
    assert_eq!(labels, ["graph-load", "graph-1hop", "graph-3hop", "graph-3hop-concurrent", "graph-path"]);
    for m in &results[1..] {
        assert!(m.errors == 0 && m.ops[0].ops > 0, "{m:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_omnishard_search_driver_ranks_exactly_like_one_tantivy_index() {
    let text = include_str!("../data/wordnet-sample.jsonl");
    let docs: Arc<Vec<Doc>> = Arc::new(text.lines().map(|line| serde_json::from_str(line).unwrap()).collect());
    let config = SearchConfig { loaders: 2, batch: 500, queries: 30, clients: 3, timing: tiny_timing() };
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let ours = search::run(&OmnishardSearch::connect(cluster.gateway_url()).await.unwrap(), docs.clone(), &config)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let theirs = search::run(&TantivySearch::create(dir.path()).unwrap(), docs, &config).await.unwrap();
    for m in &ours.measurements[1..] {
        assert!(m.errors == 0 && m.ops[0].ops > 0, "{m:?}");
    }
    assert!(ours.answers.iter().flatten().any(|top| top.len() == 10));
    assert_eq!(search::agreement(&ours.answers, &theirs.answers), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_omnishard_files_driver_uploads_and_downloads_checked_files() {
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let results = files::omnishard(&client, FilesConfig { size: 3 << 20, files: 2 }).await.unwrap();
    let labels: Vec<&str> = results.iter().map(|m| m.label()).collect();
    assert_eq!(labels, ["files-write", "files-read"]);
    assert_eq!(results.iter().map(|m| m.ops[0].ops).collect::<Vec<_>>(), [2, 2]);
    // Both files are stored, each its own 3 MiB.
    for key in ["bench/file-0", "bench/file-1"] {
        assert_eq!(client.download(key.as_bytes(), 0, 0).await.unwrap().info.size, 3 << 20);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_sdk_direct_mode_reads_and_writes_the_gateways_data() {
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let gateway = cluster.client().await.unwrap().with_namespace("direct");
    let direct = omnishard_client::DirectClient::connect(cluster.gateway_url()).await.unwrap().with_namespace("direct");
    assert_eq!(direct.epoch(), gateway.cluster().await.unwrap().epoch);
    // Written through the gateway, read directly from the shards, and back.
    for n in 0..30u32 {
        gateway.put(format!("g{n}").as_bytes(), &n.to_be_bytes(), Default::default()).await.unwrap();
        direct.put(format!("d{n}").as_bytes(), &n.to_be_bytes(), Default::default()).await.unwrap();
    }
    for n in 0..30u32 {
        assert_eq!(direct.get(format!("g{n}").as_bytes()).await.unwrap().value, n.to_be_bytes());
        assert_eq!(gateway.get(format!("d{n}").as_bytes()).await.unwrap().value, n.to_be_bytes());
    }
    // Many concurrent gets (coalesced per shard) each get their own value.
    let gets = (0..200u32).map(|i| {
        let (direct, n) = (direct.clone(), i % 30);
        async move { (n, direct.get(format!("g{n}").as_bytes()).await.unwrap().value) }
    });
    for (n, value) in futures::future::join_all(gets).await {
        assert_eq!(value, n.to_be_bytes());
    }
    // Many concurrent puts (coalesced per shard) each land as their own write.
    let puts = (0..100u32).map(|n| {
        let direct = direct.clone();
        async move { direct.put(format!("p{n}").as_bytes(), &n.to_be_bytes(), Default::default()).await.unwrap() }
    });
    let versions: std::collections::HashSet<(String, u64)> =
        futures::future::join_all(puts).await.into_iter().map(|w| (w.shard_id, w.version)).collect();
    assert_eq!(versions.len(), 100, "every put has its own version on its shard");
    for n in (0..100u32).step_by(7) {
        assert_eq!(gateway.get(format!("p{n}").as_bytes()).await.unwrap().value, n.to_be_bytes());
    }
    let keys: Vec<Vec<u8>> = ["g1", "absent", "d29", "g0"].iter().map(|k| k.as_bytes().to_vec()).collect();
    let found: Vec<bool> = direct.batch_get(&keys).await.unwrap().iter().map(Option::is_some).collect();
    assert_eq!(found, [true, false, true, true]);
    assert_eq!(direct.get(b"absent").await.unwrap_err().code(), tonic::Code::NotFound);
    // Versions and compare-and-set behave as through the gateway.
    let old = direct.get(b"d3").await.unwrap().version;
    let stale = omnishard_client::PutOptions { expected_version: Some(old + 1_000_000), ..Default::default() };
    assert_eq!(direct.put(b"d3", b"x", stale).await.unwrap_err().code(), tonic::Code::FailedPrecondition);
    let fresh = omnishard_client::PutOptions { expected_version: Some(old), ..Default::default() };
    assert!(direct.put(b"d3", b"x", fresh).await.unwrap().version > old);
    // Bad input is refused with the field named, before any shard is called.
    let err = direct.put(b"", b"x", Default::default()).await.unwrap_err();
    assert!(err.code() == tonic::Code::InvalidArgument && err.to_string().contains("key"), "{err}");
    // The driver runs reads, updates and scans.
    let store = omnishard_bench::drivers::omnishard::OmnishardDirect::connect(cluster.gateway_url()).await.unwrap();
    kv::check(&store).await.unwrap();
}

/// A TCP forwarder standing in for a stable gateway address (a load
/// balancer): new connections go to whatever `target` names at the time.
async fn forwarder(target: Arc<std::sync::Mutex<String>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let to = target.lock().unwrap().clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_sdk_direct_mode_refreshes_its_ring_when_the_shards_move_to_a_new_epoch() {
    let mut cluster = Cluster::builder().shards(3).start().await.unwrap();
    let target = Arc::new(std::sync::Mutex::new(cluster.gateway_url().trim_start_matches("http://").to_string()));
    let url = forwarder(target.clone()).await;
    let direct = omnishard_client::DirectClient::connect(&url).await.unwrap();
    for n in 0..30u32 {
        direct.put(format!("k{n}").as_bytes(), &n.to_be_bytes(), Default::default()).await.unwrap();
    }
    assert_eq!(direct.epoch(), 1);
    // The operator moves the cluster to epoch 2: a gateway with the new
    // topology installs it on every shard it writes to.
    let config = cluster.data_dir().join("gateway.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace("epoch = 1\n", "epoch = 2\n");
    std::fs::write(&config, text).unwrap();
    cluster.restart_gateway().await.unwrap();
    *target.lock().unwrap() = cluster.gateway_url().trim_start_matches("http://").to_string();
    let gateway = cluster.client().await.unwrap();
    for n in 0..30u32 {
        gateway.put(format!("g{n}").as_bytes(), b"x", Default::default()).await.unwrap();
    }
    let stats = gateway.cluster().await.unwrap();
    assert!(stats.shards.iter().all(|s| s.epoch == 2), "{:?}", stats.shards);
    // The direct client's epoch-1 calls are refused; it refreshes from the
    // gateway and retries, so its callers see no error.
    for n in 0..30u32 {
        assert_eq!(direct.get(format!("k{n}").as_bytes()).await.unwrap().value, n.to_be_bytes());
    }
    assert_eq!(direct.epoch(), 2);
    direct.put(b"after", b"y", Default::default()).await.unwrap();
    assert_eq!(gateway.get(b"after").await.unwrap().value, b"y");
}
