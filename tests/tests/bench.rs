//! The benchmark harness's omnishard driver against a real cluster (3 shard
//! processes and a gateway), and the `omnishard bench ycsb` command end to
//! end with the echo floor and in-process RocksDB.

use std::time::Duration;

use omnishard_bench::drivers::omnishard::Omnishard;
use omnishard_bench::kv::{self, YcsbConfig};
use omnishard_bench::workload::Workload;
use omnishard_tests::Cluster;

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
        .args(["--json", "bench", "ycsb", "--systems", "echo,rocksdb", "--workloads", "C,E", "--records", "200"])
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
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(rows[0], ("echo direct".to_string(), "echo (RPC floor)".to_string()));
    assert_eq!(rows[1].0, "echo via relay");
    assert!(rows[2].1.starts_with("C (100% read"), "{rows:?}");
    assert!(rows[3].1.starts_with("E (5% insert / 95% scan"), "{rows:?}");
    let markdown = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(markdown.contains("| rocksdb (in-process) |"), "{markdown}");
    assert!(out.path().join("report.json").exists());
}
