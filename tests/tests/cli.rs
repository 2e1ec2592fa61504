//! The `omnishard` CLI against a real cluster, and start-up errors.

use omnishard_tests::{binary, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_cli_kv_and_admin_commands() {
    let mut cluster = Cluster::builder().shards(3).start().await.unwrap();

    let (code, out, _) = cluster.cli(&["kv", "put", "hello", "world"]).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.starts_with("OK version="), "{out}");
    let (code, out, _) = cluster.cli(&["kv", "get", "hello"]).await.unwrap();
    assert_eq!((code, out.as_str()), (0, "world"), "get prints the raw value and nothing else");
    let (_, out, _) = cluster.cli(&["--json", "kv", "get", "hello"]).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["value"], "world");
    let version = v["version"].as_u64().unwrap();

    let (code, _, err) =
        cluster.cli(&["kv", "put", "hello", "again", "--expected-version", &(version + 1).to_string()]).await.unwrap();
    assert_ne!(code, 0);
    assert!(err.starts_with("error: failed_precondition"), "{err}");
    let (code, _, err) = cluster.cli(&["kv", "put", "t", "v", "--ttl", "soon"]).await.unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("--ttl"), "{err}");
    let (code, _, err) = cluster.cli(&["--namespace", "NO SPACES", "kv", "get", "x"]).await.unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("invalid_argument: namespace"), "{err}");

    for (k, v) in [("fruit:apple", "red"), ("fruit:banana", "yellow"), ("veg:kale", "green")] {
        assert_eq!(cluster.cli(&["kv", "put", k, v]).await.unwrap().0, 0);
    }
    let (_, out, _) = cluster.cli(&["kv", "scan", "fruit:"]).await.unwrap();
    assert_eq!(out, "fruit:apple\tred\nfruit:banana\tyellow\n");
    let (_, out, _) = cluster.cli(&["--json", "kv", "scan", "fruit:", "--limit", "1"]).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["entries"].as_array().unwrap().len(), 1);
    assert_eq!(v["more"], true);

    let (code, out, _) = cluster.cli(&["kv", "del", "veg:kale"]).await.unwrap();
    assert_eq!((code, out.as_str()), (0, "deleted\n"));
    let (code, _, err) = cluster.cli(&["kv", "get", "veg:kale"]).await.unwrap();
    assert_eq!(code, 3, "not found has its own exit code");
    assert!(err.starts_with("error: not_found"), "{err}");

    let (code, out, _) = cluster.cli(&["admin", "cluster"]).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("ring epoch 1") && out.matches("serving").count() == 3, "{out}");
    assert!(out.contains("OF MEAN") && out.contains("per shard on average"), "{out}");
    let (_, out, _) = cluster.cli(&["--json", "admin", "cluster"]).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let counts: Vec<u64> = v["shards"].as_array().unwrap().iter().map(|s| s["key_count"].as_u64().unwrap()).collect();
    assert_eq!(v["keys"]["total"].as_u64(), Some(counts.iter().sum()), "{out}");
    let mean = counts.iter().sum::<u64>() as f64 / 3.0;
    let most = counts.iter().map(|&c| c as f64 * 100.0 / mean).fold(0.0, f64::max);
    assert_eq!(v["keys"]["spread"]["max_pct_of_mean"].as_f64(), Some(most), "{out}");

    // A dead shard: one clear line with `unavailable` and the shard id.
    cluster.kill_shard(0).await.unwrap();
    let mut dead_key = None;
    for i in 0..200 {
        let (code, _, err) = cluster.cli(&["kv", "get", &format!("probe-{i}")]).await.unwrap();
        if code == 1 {
            dead_key = Some(err);
            break;
        }
    }
    let err = dead_key.expect("some key lives on shard-1");
    assert!(err.starts_with("error: unavailable") && err.contains("shard-1"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let (_, out, _) = cluster.cli(&["--json", "admin", "cluster"]).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["shards"][0]["health"], "unavailable");
}

async fn gateway_fails_with(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    let out = tokio::process::Command::new(binary().unwrap())
        .args(["gateway", "--config", &path.to_string_lossy(), "--listen", "127.0.0.1:0"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "gateway started with a bad config");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn test_gateway_refuses_bad_topologies() {
    let err = gateway_fails_with(
        "epoch = 1\n[[shards]]\nid = \"a\"\naddr = \"127.0.0.1:1\"\n[[shards]]\nid = \"a\"\naddr = \"127.0.0.1:2\"\n",
    )
    .await;
    assert!(err.contains("duplicate shard id \"a\""), "{err}");

    // Port 1 on loopback refuses connections: the shard is unreachable.
    let err = gateway_fails_with(
        "epoch = 1\n[[shards]]\nid = \"s1\"\naddr = \"127.0.0.1:1\"\n[gateway]\nstartup_timeout = \"300ms\"\n",
    )
    .await;
    assert!(err.contains("shard s1 unavailable at 127.0.0.1:1") && err.contains("start-up"), "{err}");

    // The topology names a shard id that is not the one listening there.
    let cluster = Cluster::builder().shards(1).start().await.unwrap();
    let info = cluster.client().await.unwrap().cluster().await.unwrap();
    let addr = &info.shards[0].addr;
    let err = gateway_fails_with(&format!("epoch = 2\n[[shards]]\nid = \"shard-9\"\naddr = \"{addr}\"\n")).await;
    assert!(err.contains("shard-9") && err.contains("shard-1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_cli_graph_commands() {
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g.jsonl");
    std::fs::write(
        &file,
        r#"{"vertex": {"id": "alice", "label": "agent", "properties": {"role": "planner"}}}
{"vertex": {"id": "bob", "label": "agent", "properties": {"role": "coder"}}}
{"vertex": {"id": "doc", "label": "document"}}
{"edge": {"from": "alice", "to": "bob", "label": "delegates"}}
{"edge": {"from": "bob", "to": "doc", "label": "cites", "weight": 0.5}}
"#,
    )
    .unwrap();
    let (code, out, err) = cluster.cli(&["graph", "--graph", "team", "load", &file.to_string_lossy()]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "loaded 3 vertices and 2 edges\n");
    let (_, out, _) = cluster.cli(&["graph", "--graph", "team", "traverse", "alice", "--depth", "2"]).await.unwrap();
    assert_eq!(out, "0\talice\n1\tbob\n2\tdoc\n");
    let (_, out, _) = cluster.cli(&["graph", "--graph", "team", "path", "alice", "doc"]).await.unwrap();
    assert_eq!(out, "alice -> bob -> doc\n");
    let (_, out, _) =
        cluster.cli(&["--json", "graph", "--graph", "team", "neighbors", "doc", "--direction", "in"]).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["edges"][0]["from"], "bob");
    // Another graph of the same namespace is empty.
    let (_, out, _) = cluster.cli(&["graph", "find", "agent"]).await.unwrap();
    assert_eq!(out, "");
    let (code, _, err) = cluster.cli(&["graph", "--graph", "team", "edge", "put", "alice", "nobody"]).await.unwrap();
    assert_eq!(code, 3);
    assert!(err.contains("nobody"), "{err}");
    std::fs::write(&file, "{\"vertex\": {\"id\": 1}}\n").unwrap();
    let (code, _, err) = cluster.cli(&["graph", "load", &file.to_string_lossy()]).await.unwrap();
    assert_ne!(code, 0);
    assert!(err.contains(":1: bad line"), "{err}");
}
