//! Online scale-out on real processes: a metadata group, shards and
//! gateways on loopback; shards added and removed while writers and
//! readers run; SIGKILL of the gateway, a source and the target in the
//! middle of a migration; a second gateway following the change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use omnishard_client::{Client, Op, PutOptions};
use omnishard_tests::Cluster;

/// The last acknowledged state of each key: `Some(value)` or deleted.
type Model = Arc<Mutex<HashMap<String, Option<String>>>>;

/// Writers and readers running against the gateway while ranges move.
struct Load {
    model: Model,
    stop: Arc<AtomicBool>,
    /// Errors any reader or writer saw (the gateway must hide redirects).
    errors: Arc<Mutex<Vec<String>>>,
    reads: Arc<AtomicU64>,
    writes: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `writers` tasks each own a slice of `keys` (so the model needs no
    /// ordering between tasks) and put or delete in a loop; the first
    /// writes batches of 16 keys that span shards (so batches hit moving
    /// and fenced ranges), the others one key at a time; `readers` read
    /// random keys and check them against the model's keys they own.
    fn start(client: &Client, keys: usize, writers: usize, readers: usize) -> Load {
        let model: Model = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let (reads, writes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (client, model, stop, errors, writes) =
                (client.clone(), model.clone(), stop.clone(), errors.clone(), writes.clone());
            let batch = if w == 0 { 16 } else { 1 };
            tasks.push(tokio::spawn(async move {
                let mut round = 0u64;
                let mine: Vec<usize> = (w..keys).step_by(writers).collect();
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    for chunk in mine.chunks(batch) {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let states: Vec<(String, Option<String>)> = chunk
                            .iter()
                            .map(|&i| {
                                // Every 7th write is a delete: deleted keys must stay deleted.
                                let deleted = (i as u64 + round).is_multiple_of(7);
                                (format!("key-{i}"), (!deleted).then(|| format!("v{round}-{i}")))
                            })
                            .collect();
                        match write_states(&client, &states).await {
                            Ok(()) => {
                                let mut model = model.lock().unwrap();
                                for (key, state) in states {
                                    model.insert(key, state);
                                }
                                writes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            }
                            Err(e) => errors.lock().unwrap().push(format!("write {:?}: {e}", states[0].0)),
                        }
                    }
                }
            }));
        }
        for r in 0..readers {
            let (client, stop, errors, reads) = (client.clone(), stop.clone(), errors.clone(), reads.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = r * 7919;
                while !stop.load(Ordering::Relaxed) {
                    i = (i + 7919) % keys;
                    let key = format!("key-{i}");
                    match client.get(key.as_bytes()).await {
                        Ok(_) => {}
                        Err(omnishard_client::Error::Status(s)) if s.code() == tonic::Code::NotFound => {}
                        Err(e) => errors.lock().unwrap().push(format!("read {key}: {e}")),
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        Load { model, stop, errors, reads, writes, tasks }
    }

    async fn stop(self) -> (HashMap<String, Option<String>>, Vec<String>, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let model = self.model.lock().unwrap().clone();
        let errors = self.errors.lock().unwrap().clone();
        (model, errors, self.reads.load(Ordering::Relaxed), self.writes.load(Ordering::Relaxed))
    }
}

/// Writes `states` (`None` = delete): one put or delete, or one batch `Write`.
async fn write_states(client: &Client, states: &[(String, Option<String>)]) -> Result<(), omnishard_client::Error> {
    if let [(key, state)] = states {
        return match state {
            Some(value) => client.put(key.as_bytes(), value.as_bytes(), PutOptions::default()).await.map(|_| ()),
            None => client.delete(key.as_bytes(), None).await.map(|_| ()),
        };
    }
    let ops = states
        .iter()
        .map(|(key, state)| match state {
            Some(value) => Op::Put {
                key: key.clone().into_bytes(),
                value: value.clone().into_bytes(),
                options: PutOptions::default(),
            },
            None => Op::Delete { key: key.clone().into_bytes(), expected_version: None },
        })
        .collect();
    client.write(ops).await.map(|_| ())
}

/// Puts `n` keys (every 10th with a one-hour TTL) and returns the model.
async fn load_keys(client: &Client, n: usize) -> HashMap<String, Option<String>> {
    use futures::StreamExt;
    let stream = futures::stream::iter((0..n).map(|i| {
        let client = client.clone();
        async move {
            let key = format!("key-{i}");
            let value = format!("v0-{i}");
            let ttl = (i % 10 == 0).then_some(Duration::from_secs(3600));
            client.put(key.as_bytes(), value.as_bytes(), PutOptions { ttl, expected_version: None }).await.unwrap();
            (key, Some(value))
        }
    }));
    stream.buffer_unordered(64).collect().await
}

/// Every key reads back as the model says; TTL'd keys keep their expiry.
async fn check_model(client: &Client, model: &HashMap<String, Option<String>>) {
    for (key, state) in model {
        match (client.get(key.as_bytes()).await, state) {
            (Ok(kv), Some(value)) => {
                assert_eq!(String::from_utf8_lossy(&kv.value), *value, "key {key}");
                assert!(kv.version > 0, "key {key} lost its version");
            }
            (Err(omnishard_client::Error::Status(s)), None) if s.code() == tonic::Code::NotFound => {}
            (got, want) => panic!("key {key}: got {got:?}, want {want:?}"),
        }
    }
}

/// Runs `admin rebalance status --json` until `state` is `done`.
async fn wait_done(cluster: &Cluster, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let (code, out, err) = cluster.cli(&["--json", "admin", "rebalance", "status"]).await.unwrap();
        assert_eq!(code, 0, "rebalance status failed: {err}");
        let status: serde_json::Value = serde_json::from_str(&out).unwrap();
        if status["state"] == "done" {
            return status;
        }
        assert!(Instant::now() < deadline, "migration not done in {limit:?}: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `admin cluster --json` after a change: asserts every shard holds within
/// ±20% of the mean key count; returns the shard ids and the ring epoch.
async fn assert_balanced(cluster: &Cluster) -> (Vec<String>, u64) {
    let (code, out, err) = cluster.cli(&["--json", "admin", "cluster"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    let shards = info["shards"].as_array().unwrap();
    let ids: Vec<String> = shards.iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
    let pcts: Vec<f64> = shards.iter().map(|s| s["pct_of_mean"].as_f64().unwrap_or(0.0)).collect();
    for (id, pct) in ids.iter().zip(&pcts) {
        assert!((80.0..=120.0).contains(pct), "{id} holds {pct:.0}% of the mean: {pcts:?}");
    }
    (ids, info["epoch"].as_u64().unwrap())
}

async fn add_shard(cluster: &mut Cluster, id: &str, rate: &str) {
    let (_, addr) = cluster.start_shard(id).await.unwrap();
    let (code, out, err) =
        cluster.cli(&["admin", "add-shard", "--id", id, "--addr", &addr, "--rate", rate]).await.unwrap();
    assert_eq!(code, 0, "add-shard {id}: {out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_shards_added_and_removed_under_load_lose_nothing() {
    let mut cluster = Cluster::builder().shards(3).with_meta().start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let keys = 3000;
    let initial = load_keys(&client, keys).await;
    let load = Load::start(&client, keys, 4, 4);

    add_shard(&mut cluster, "shard-4", "50MiB/s").await;
    let done = wait_done(&cluster, Duration::from_secs(120)).await;
    assert_eq!(done["epoch"], 2, "{done}");
    let moved: u64 = done["moves"].as_array().unwrap().iter().map(|m| m["keys"].as_u64().unwrap()).sum();
    assert!(moved > keys as u64 / 8, "only {moved} keys moved to shard-4: {done}");

    add_shard(&mut cluster, "shard-5", "50MiB/s").await;
    wait_done(&cluster, Duration::from_secs(120)).await;

    let (code, out, err) = cluster.cli(&["admin", "remove-shard", "--id", "shard-2"]).await.unwrap();
    assert_eq!(code, 0, "remove-shard: {out}{err}");
    let done = wait_done(&cluster, Duration::from_secs(120)).await;
    assert_eq!(done["epoch"], 4, "{done}");

    // Let the load run a little on the final ring too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut model, errors, reads, writes) = load.stop().await;
    assert!(errors.is_empty(), "{} errors, first: {:?}", errors.len(), &errors[..errors.len().min(5)]);
    assert!(reads > 100 && writes > 100, "load too light: {reads} reads, {writes} writes");
    for (key, value) in initial {
        model.entry(key).or_insert(value);
    }
    check_model(&client, &model).await;

    // Balance: the removed shard is gone and every shard holds within ±20% of the mean.
    let (ids, epoch) = assert_balanced(&cluster).await;
    assert_eq!(epoch, 4);
    assert_eq!(ids, ["shard-1", "shard-3", "shard-4", "shard-5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_migration_survives_sigkill_of_gateway_source_and_target() {
    let mut cluster = Cluster::builder().shards(3).with_meta().start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let keys = 20_000;
    let model = load_keys(&client, keys).await;

    // Slow enough to be caught mid-copy: ~1.2 MB moves at 64 KiB/s.
    add_shard(&mut cluster, "shard-4", "64KiB/s").await;
    let progressed = |status: &serde_json::Value| {
        status["moves"].as_array().map(|m| m.iter().map(|m| m["keys"].as_u64().unwrap_or(0)).sum::<u64>()).unwrap_or(0)
    };
    let status_now = |cluster: &Cluster| {
        let cluster_url = cluster.gateway_url().to_string();
        async move {
            let client = Client::connect(&cluster_url).await.unwrap();
            let s = client.rebalance_status().await.unwrap();
            serde_json::json!({"state": s.state, "phase": s.phase,
                "moves": s.moves.iter().map(|m| serde_json::json!({"keys": m.keys})).collect::<Vec<_>>()})
        }
    };
    // 1. The gateway (the driver) dies mid-copy; a restarted one resumes after the lease.
    wait_until(|| async { progressed(&status_now(&cluster).await) > 0 }, "copy to start").await;
    cluster.restart_gateway().await.unwrap();
    let before = progressed(&status_now(&cluster).await);
    // 2. The source shard-1 dies mid-copy and comes back.
    wait_until(|| async { progressed(&status_now(&cluster).await) > before }, "copy to resume").await;
    cluster.kill_shard(0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.restart_shard(0).await.unwrap();
    // 3. The target dies mid-copy and comes back.
    let before = progressed(&status_now(&cluster).await);
    wait_until(|| async { progressed(&status_now(&cluster).await) > before }, "copy to resume after source").await;
    let target = cluster.shard_index("shard-4").unwrap();
    cluster.kill_shard(target).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.restart_shard(target).await.unwrap();

    // Writers run while it finishes at a higher throttle (changed live).
    let client = cluster.client().await.unwrap();
    let load = Load::start(&client, keys, 2, 2);
    let (code, out, err) = cluster.cli(&["admin", "rebalance", "throttle", "--rate", "100MiB/s"]).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let done = wait_done(&cluster, Duration::from_secs(120)).await;
    assert_eq!(done["epoch"], 2, "{done}");
    let (mut written, errors, _, _) = load.stop().await;
    assert!(errors.is_empty(), "{} errors, first: {:?}", errors.len(), &errors[..errors.len().min(5)]);
    for (key, value) in model {
        written.entry(key).or_insert(value);
    }
    check_model(&client, &written).await;
    // Keys nobody rewrote kept their TTL across the move.
    let mut ttl_checked = 0;
    for i in (0..keys).step_by(10) {
        let key = format!("key-{i}");
        if written[&key].as_deref() == Some(format!("v0-{i}").as_str()) {
            let kv = client.get(key.as_bytes()).await.unwrap();
            assert!(kv.expires_at_ms > 0, "{key} lost its TTL");
            ttl_checked += 1;
        }
    }
    assert!(ttl_checked > 0 || keys < 100);
    let (ids, _) = assert_balanced(&cluster).await;
    assert_eq!(ids.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_migration_completes_after_kills_at_fence_switch_and_cleanup() {
    // Fail points hold every driver 3 s at each late step, so the kills land inside them.
    let hold = "rebalance-fenced=return(3000);rebalance-switched=return(3000);rebalance-cleanup=return(3000)";
    let mut cluster = Cluster::builder().shards(3).with_meta().env("FAILPOINTS", hold).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let keys = 3000;
    let model = load_keys(&client, keys).await;
    add_shard(&mut cluster, "shard-4", "100MiB/s").await;

    // 1. The driver dies while the moving keys are fenced and the ring is
    //    not yet switched; the next gateway fences again and switches.
    wait_phase(&cluster, "fenced").await;
    cluster.restart_gateway().await.unwrap();
    // 2. The target and a source die just after the switch (ring epoch 2
    //    stored, not yet installed on the shards) and come back.
    wait_phase(&cluster, "cleanup").await;
    let target = cluster.shard_index("shard-4").unwrap();
    cluster.kill_shard(target).await.unwrap();
    cluster.kill_shard(0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.restart_shard(target).await.unwrap();
    cluster.restart_shard(0).await.unwrap();
    // 3. Another source dies during the cleanup, before or while it deletes what it handed over.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(phase(&cluster).await, "cleanup");
    cluster.kill_shard(1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.restart_shard(1).await.unwrap();

    let done = wait_done(&cluster, Duration::from_secs(120)).await;
    assert_eq!(done["epoch"], 2, "{done}");
    let client = cluster.client().await.unwrap();
    check_model(&client, &model).await;
    // New writes land and read back on the final ring.
    let after: HashMap<String, Option<String>> =
        (0..keys).step_by(3).map(|i| (format!("key-{i}"), Some(format!("after-{i}")))).collect();
    for (key, value) in &after {
        let value = value.as_deref().unwrap();
        client.put(key.as_bytes(), value.as_bytes(), PutOptions::default()).await.unwrap();
    }
    check_model(&client, &after).await;
    // Every source deleted what it handed over: the key counts are balanced.
    let (ids, _) = assert_balanced(&cluster).await;
    assert_eq!(ids.len(), 4);
}

/// Everything a graph answers that a move could break: each sampled
/// vertex's 3-hop reach (both directions, with depths), its out-edges,
/// and every vertex of the label (so a copy that shows twice, or a vertex
/// that went missing, changes it).
async fn graph_answers(client: &Client, graph: &str, sample: &[String]) -> Vec<String> {
    use omnishard_proto::v1::*;
    let mut api = client.graph();
    let mut out = Vec::new();
    for start in sample {
        let req = TraverseRequest {
            graph: graph.into(),
            start: vec![start.clone()],
            direction: Direction::Both as i32,
            max_depth: 3,
            ..Default::default()
        };
        let resp = api.traverse(req).await.unwrap().into_inner();
        let mut reached: Vec<String> =
            resp.reached.iter().map(|r| format!("{}@{}", r.vertex.as_ref().unwrap().id, r.depth)).collect();
        reached.sort();
        out.push(format!("reach {start}: {}", reached.join(",")));
        let req = NeighborsRequest { graph: graph.into(), id: start.clone(), limit: 1000, ..Default::default() };
        let mut edges: Vec<String> = api
            .neighbors(req)
            .await
            .unwrap()
            .into_inner()
            .edges
            .iter()
            .map(|e| format!("{}-{}->{}", e.from, e.label, e.to))
            .collect();
        edges.sort();
        out.push(format!("out {start}: {}", edges.join(",")));
    }
    let mut cursor = Vec::new();
    let mut all = Vec::new();
    loop {
        let req =
            FindVerticesRequest { graph: graph.into(), label: "node".into(), limit: 500, cursor, ..Default::default() };
        let page = api.find_vertices(req).await.unwrap().into_inner();
        all.extend(page.vertices.into_iter().map(|v| v.id));
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    out.push(format!("label node: {} vertices: {}", all.len(), all.join(",")));
    out
}

/// Loads `n` vertices (label `node`) and `m` random edges into `graph`.
async fn load_graph(client: &Client, graph: &str, n: usize, m: usize) -> Vec<String> {
    use omnishard_proto::v1::*;
    let mut api = client.graph();
    let ids: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
    let vertices = ids
        .iter()
        .map(|id| VertexWrite {
            id: id.clone(),
            label: "node".into(),
            properties_json: format!(r#"{{"name":"{id}"}}"#),
            ..Default::default()
        })
        .collect();
    api.write_vertices(WriteVerticesRequest { graph: graph.into(), vertices, ..Default::default() }).await.unwrap();
    // A fixed pseudo-random graph (an LCG, so runs are comparable).
    let mut x = 12345u64;
    let mut next = || {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 33) as usize
    };
    let mut distinct = std::collections::BTreeSet::new();
    while distinct.len() < m {
        distinct.insert((next() % n, next() % n, ["knows", "cites"][next() % 2]));
    }
    let edges: Vec<EdgeWrite> = distinct
        .into_iter()
        .map(|(from, to, label)| EdgeWrite {
            from: ids[from].clone(),
            to: ids[to].clone(),
            label: label.into(),
            weight: 1.0,
            ..Default::default()
        })
        .collect();
    for chunk in edges.chunks(500) {
        let req = WriteEdgesRequest { graph: graph.into(), edges: chunk.to_vec(), ..Default::default() };
        api.write_edges(req).await.unwrap();
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_graph_moves_with_its_vertices_while_it_is_read_and_written() {
    use omnishard_proto::v1::*;
    let mut cluster = Cluster::builder().shards(3).with_meta().start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let ids = load_graph(&client, "g", 400, 1600).await;
    let model = load_keys(&client, 3000).await;
    let sample: Vec<String> = ids.iter().step_by(20).cloned().collect();
    let before = graph_answers(&client, "g", &sample).await;

    // A writer adds vertices and an edge between them while the ranges move
    // (an edge write refused by the short fence is retried, as a client
    // would; vertex writes never fail); a reader traverses and must never
    // see an error.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut api = client.graph();
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (from, to) = (format!("w{i}"), format!("w{}", i + 1));
                let vertices = [&from, &to]
                    .iter()
                    .map(|id| VertexWrite { id: id.to_string(), label: "live".into(), ..Default::default() })
                    .collect::<Vec<_>>();
                let edge = EdgeWrite { from: from.clone(), to: to.clone(), label: "next".into(), ..Default::default() };
                // Vertex writes that meet the fence are re-sent by the gateway itself.
                let v = WriteVerticesRequest { graph: "g".into(), vertices, ..Default::default() };
                if let Err(s) = api.write_vertices(v).await {
                    panic!("vertex write {from}, {to}: {s}");
                }
                loop {
                    let e = WriteEdgesRequest { graph: "g".into(), edges: vec![edge.clone()], ..Default::default() };
                    match api.write_edges(e).await.map(|_| ()) {
                        Ok(()) => break,
                        Err(s) if s.code() == tonic::Code::Unavailable => {
                            tokio::time::sleep(Duration::from_millis(20)).await
                        }
                        Err(s) => panic!("graph write {from}->{to}: {s}"),
                    }
                }
                acked.push((from, to));
                i += 1;
            }
            acked
        })
    };
    let reader = {
        let (client, stop, sample) = (client.clone(), stop.clone(), sample.clone());
        tokio::spawn(async move {
            let mut api = client.graph();
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let start = sample[reads as usize % sample.len()].clone();
                let req = TraverseRequest {
                    graph: "g".into(),
                    start: vec![start],
                    direction: Direction::Both as i32,
                    max_depth: 2,
                    ..Default::default()
                };
                if let Err(s) = api.traverse(req).await {
                    panic!("traversal during the move: {s}");
                }
                reads += 1;
            }
            reads
        })
    };

    add_shard(&mut cluster, "shard-4", "50MiB/s").await;
    let done = wait_done(&cluster, Duration::from_secs(120)).await;
    let moved: u64 = done["moves"].as_array().unwrap().iter().map(|m| m["keys"].as_u64().unwrap()).sum();
    assert!(moved > 500, "only {moved} records moved to shard-4: {done}");
    let (code, out, err) = cluster.cli(&["admin", "remove-shard", "--id", "shard-2"]).await.unwrap();
    assert_eq!(code, 0, "remove-shard: {out}{err}");
    let done = wait_done(&cluster, Duration::from_secs(120)).await;
    assert_eq!(done["epoch"], 3, "{done}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.unwrap();
    let reads = reader.await.unwrap();
    assert!(acked.len() > 5 && reads > 5, "load too light: {} edge writes, {reads} traversals", acked.len());

    // The loaded graph answers exactly as before the moves: same reach
    // and depths, same edges, every vertex of the label once.
    let after = graph_answers(&client, "g", &sample).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b, a);
    }
    // Every edge written during the moves is there, both halves.
    let mut api = client.graph();
    for (from, to) in &acked {
        let out =
            NeighborsRequest { graph: "g".into(), id: from.clone(), labels: vec!["next".into()], ..Default::default() };
        let edges = api.neighbors(out).await.unwrap().into_inner().edges;
        assert!(edges.iter().any(|e| &e.to == to), "out-half {from}->{to} lost");
        let inn = NeighborsRequest {
            graph: "g".into(),
            id: to.clone(),
            direction: Direction::In as i32,
            labels: vec!["next".into()],
            ..Default::default()
        };
        let edges = api.neighbors(inn).await.unwrap().into_inner().edges;
        assert!(edges.iter().any(|e| &e.from == from), "in-half {from}->{to} lost");
    }
    // Versions never go backwards on the new owner: a vertex written now is newer than before.
    let get = |id: &str| GetVerticesRequest { graph: "g".into(), ids: vec![id.into()], ..Default::default() };
    for id in sample.iter().take(5) {
        let old = api.get_vertices(get(id)).await.unwrap().into_inner().vertices[0].vertex.clone().unwrap();
        let write = VertexWrite { id: id.clone(), label: "node".into(), ..Default::default() };
        let req = WriteVerticesRequest { graph: "g".into(), vertices: vec![write], ..Default::default() };
        let new = api.write_vertices(req).await.unwrap().into_inner().vertices[0].clone();
        assert!(new.version > old.version, "{id}: version {} after {}", new.version, old.version);
    }
    check_model(&client, &model).await;
    // The shards hold an even share of the keys.
    let (ids, _) = assert_balanced(&cluster).await;
    assert_eq!(ids, ["shard-1", "shard-3", "shard-4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_abort_rolls_back_until_the_ring_switches() {
    use omnishard_proto::v1::{shard_service_client::ShardServiceClient, ShardStatsRequest};
    let hold = "rebalance-fenced=return(2000);rebalance-switched=return(2000)";
    let mut cluster = Cluster::builder().shards(3).with_meta().env("FAILPOINTS", hold).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let keys = 3000;
    let model = load_keys(&client, keys).await;
    let (target, addr) = cluster.start_shard("shard-4").await.unwrap();
    let add = ["admin", "add-shard", "--id", "shard-4", "--addr", addr.as_str()];
    let abort = ["admin", "rebalance", "abort"];
    let target_keys = || {
        let url = cluster.shard_url(target);
        async move {
            let mut api = ShardServiceClient::connect(url).await.unwrap();
            api.stats(ShardStatsRequest {}).await.unwrap().into_inner().key_count
        }
    };

    // 1. Aborted mid-copy: the target's copies are deleted, the ring stays.
    let (code, out, err) = cluster.cli(&[&add[..], &["--rate", "64KiB/s"]].concat()).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    wait_until(|| async { target_keys().await > 0 }, "copies on shard-4").await;
    let (code, out, err) = cluster.cli(&abort).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let done = wait_done(&cluster, Duration::from_secs(60)).await;
    assert_eq!((done["phase"].as_str(), done["epoch"].as_u64()), (Some("aborted"), Some(1)), "{done}");
    assert_eq!(target_keys().await, 0, "shard-4 kept copies after the abort");

    // 2. Aborted while fenced: the fence is lifted at once, every key reads and takes writes.
    let (code, out, err) = cluster.cli(&add).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    wait_phase(&cluster, "fenced").await;
    let (code, out, err) = cluster.cli(&abort).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let done = wait_done(&cluster, Duration::from_secs(60)).await;
    assert_eq!((done["phase"].as_str(), done["epoch"].as_u64()), (Some("aborted"), Some(1)), "{done}");
    check_model(&client, &model).await;
    let started = Instant::now();
    for i in (0..keys).step_by(7) {
        client.put(format!("key-{i}").as_bytes(), b"after-abort", PutOptions::default()).await.unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(20), "writes waited on a fence");
    assert_eq!(target_keys().await, 0, "shard-4 kept copies after the abort");

    // 3. After the switch an abort is refused; the migration finishes.
    let (code, out, err) = cluster.cli(&add).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    wait_phase(&cluster, "cleanup").await;
    let (code, _, err) = cluster.cli(&abort).await.unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("already switched the ring to epoch 2"), "{err}");
    let done = wait_done(&cluster, Duration::from_secs(60)).await;
    assert_eq!((done["phase"].as_str(), done["epoch"].as_u64()), (Some("done"), Some(2)), "{done}");
    let (code, _, err) = cluster.cli(&abort).await.unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("nothing is moving"), "{err}");
    let mut model = model;
    for i in (0..keys).step_by(7) {
        model.insert(format!("key-{i}"), Some("after-abort".into()));
    }
    check_model(&client, &model).await;
    let (ids, _) = assert_balanced(&cluster).await;
    assert_eq!(ids.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_direct_client_waits_out_the_fence() {
    // The driver holds the fence 2 s, so direct calls to moving keys meet it.
    let hold = "rebalance-fenced=return(2000)";
    let mut cluster = Cluster::builder().shards(3).with_meta().env("FAILPOINTS", hold).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let keys = 400;
    load_keys(&client, keys).await;
    let direct = omnishard_client::DirectClient::connect(cluster.gateway_url()).await.unwrap();
    add_shard(&mut cluster, "shard-4", "100MiB/s").await;
    wait_phase(&cluster, "fenced").await;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..keys {
        let key = format!("key-{i}");
        let call = Instant::now();
        direct.put(key.as_bytes(), format!("direct-{i}").as_bytes(), PutOptions::default()).await.unwrap();
        let kv = direct.get(key.as_bytes()).await.unwrap();
        assert_eq!(kv.value, format!("direct-{i}").as_bytes());
        slowest = slowest.max(call.elapsed());
    }
    assert!(slowest > Duration::from_millis(300), "no call met the fence (slowest {slowest:?})");
    assert!(started.elapsed() < Duration::from_secs(60));
    wait_done(&cluster, Duration::from_secs(60)).await;
    assert_eq!(direct.epoch(), 2, "the direct client follows the new ring");
    let model = (0..keys).map(|i| (format!("key-{i}"), Some(format!("direct-{i}")))).collect();
    check_model(&client, &model).await;
}

/// The running migration's phase, as the (current) gateway reports it; empty while it cannot answer.
async fn phase(cluster: &Cluster) -> String {
    match Client::connect(cluster.gateway_url()).await {
        Ok(client) => client.rebalance_status().await.map(|s| s.phase).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn wait_phase(cluster: &Cluster, want: &str) {
    wait_until(|| async { phase(cluster).await == want }, &format!("phase {want}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_second_gateway_routes_with_the_new_ring_within_a_second() {
    let mut cluster = Cluster::builder().shards(3).with_meta().start().await.unwrap();
    let second = cluster.start_gateway().await.unwrap();
    let first_client = cluster.client().await.unwrap();
    let second_client = Client::connect(&second).await.unwrap();
    load_keys(&first_client, 500).await;

    add_shard(&mut cluster, "shard-4", "50MiB/s").await;
    wait_done(&cluster, Duration::from_secs(60)).await;
    let switched = Instant::now();
    // Within a second the other gateway routes with epoch 2 (4 shards)...
    loop {
        let info = second_client.cluster().await.unwrap();
        if info.epoch == 2 && info.shards.len() == 4 {
            break;
        }
        assert!(switched.elapsed() < Duration::from_secs(1), "second gateway still on epoch {}", info.epoch);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...and its writes land on the new shard when it owns the key.
    let mut on_new = 0;
    for i in 0..200 {
        let key = format!("after-{i}");
        let written = second_client.put(key.as_bytes(), b"x", PutOptions::default()).await.unwrap();
        on_new += usize::from(written.shard_id == "shard-4");
        assert_eq!(first_client.get(key.as_bytes()).await.unwrap().value, b"x");
    }
    assert!(on_new > 10, "only {on_new} of 200 new keys landed on shard-4");
    // Both read every old key.
    for i in (0..500).step_by(7) {
        let key = format!("key-{i}");
        assert_eq!(second_client.get(key.as_bytes()).await.unwrap().value, format!("v0-{i}").as_bytes());
    }
    // Both publish the new epoch and the finished migration's moves on /metrics.
    for client in [&first_client, &second_client] {
        let addr = client.cluster().await.unwrap().metrics_addr;
        let text = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
        let value = |name: &str| -> Vec<f64> {
            text.lines()
                .filter(|line| line.split(['{', ' ']).next() == Some(name))
                .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
                .collect()
        };
        assert_eq!(value("omnishard_ring_epoch"), [2.0], "{addr}");
        assert_eq!(value("omnishard_rebalance_running"), [0.0], "{addr}");
        let moved: f64 = value("omnishard_rebalance_moved_keys").iter().sum();
        assert!(moved > 50.0, "{addr}: {moved} keys moved by the last migration");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_rebalance_commands_check_their_input() {
    let cluster = Cluster::builder().shards(2).with_meta().start().await.unwrap();
    let (code, out, _) = cluster.cli(&["--json", "admin", "rebalance", "status"]).await.unwrap();
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["state"], "done");
    let (code, _, err) = cluster.cli(&["admin", "remove-shard", "--id", "nope"]).await.unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("\"nope\" is not in the topology"), "{err}");
    let (code, _, err) = cluster.cli(&["admin", "rebalance", "pause"]).await.unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("nothing is moving"), "{err}");
    let (code, _, err) = cluster.cli(&["admin", "rebalance", "throttle", "--rate", "fast"]).await.unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("not a rate like 50MiB/s"), "{err}");
    let (code, _, err) =
        cluster.cli(&["admin", "add-shard", "--id", "shard-9", "--addr", "127.0.0.1:1"]).await.unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("shard-9") || err.contains("127.0.0.1:1"), "{err}");
}

async fn wait_until<F, Fut>(check: F, what: &str)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The status code and message of a refused admin call.
fn refusal<T: std::fmt::Debug>(outcome: Result<T, omnishard_client::Error>) -> (tonic::Code, String) {
    match outcome {
        Err(omnishard_client::Error::Status(s)) => (s.code(), s.message().to_string()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_add_and_remove_shard_refuse_bad_input_with_the_right_codes() {
    let cluster = Cluster::builder().shards(2).with_meta().start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let existing = cluster.shard_ids()[0].clone();

    // Bad addresses: INVALID_ARGUMENT naming `addr`, before anything is called or written.
    for addr in ["127.0.0.1", "127.0.0.1:99999", ":7401", "bad host:7401", "127.0.0.1:"] {
        let (code, message) = refusal(client.add_shard("shard-9", addr, 0).await);
        assert_eq!(code, tonic::Code::InvalidArgument, "{addr:?}: {message}");
        assert!(message.starts_with("addr:") && message.contains(addr), "{addr:?}: {message}");
    }
    // An id the topology has: ALREADY_EXISTS naming it, whatever the address (even an unreachable one).
    let (code, message) = refusal(client.add_shard(&existing, "127.0.0.1:1", 0).await);
    assert_eq!(code, tonic::Code::AlreadyExists, "{message}");
    assert!(message.contains(&format!("{existing:?} is already in the topology")), "{message}");
    // Removing an id the topology lacks: NOT_FOUND naming it.
    let (code, message) = refusal(client.remove_shard("nope", 0).await);
    assert_eq!(code, tonic::Code::NotFound, "{message}");
    assert!(message.contains("\"nope\" is not in the topology"), "{message}");

    // Nothing was recorded.
    let status = client.rebalance_status().await.unwrap();
    assert_eq!((status.state.as_str(), status.epoch, status.migration_id), ("done", 1, 0), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_shard_refuses_ingest_outside_a_migration() {
    use omnishard_proto::v1::shard_service_client::ShardServiceClient;
    use omnishard_proto::v1::{MigrateIngestRequest, MigrateRecord};
    let cluster = Cluster::builder().shards(2).with_meta().start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let written = client.put(b"probe", b"v1", PutOptions::default()).await.unwrap();
    let index = cluster.shard_index(&written.shard_id).unwrap();
    let mut shard = ShardServiceClient::connect(cluster.shard_url(index)).await.unwrap();
    // A value shorter than its header, with no migration running: refused, nothing applied.
    for value in [vec![1, 2, 3], [u64::MAX.to_be_bytes(), 0u64.to_be_bytes()].concat()] {
        let record = MigrateRecord { key: b"default\0probe".to_vec(), value, ..Default::default() };
        let req = MigrateIngestRequest {
            migration_id: 1,
            records: vec![record],
            target_epoch: 2,
            target_shard: written.shard_id.clone(),
        };
        let status = shard.migrate_ingest(req).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
        assert!(status.message().contains("receives records in no migration"), "{status:?}");
    }
    // The key reads and takes writes; versions keep increasing.
    let kv = client.get(b"probe").await.unwrap();
    assert_eq!((kv.value.as_slice(), kv.version), (&b"v1"[..], written.version));
    let next = client.put(b"probe", b"v2", PutOptions::default()).await.unwrap();
    assert!(next.version > written.version, "{} after {}", next.version, written.version);
    let info = client.cluster().await.unwrap();
    assert!(info.shards.iter().all(|s| s.health == "serving"), "{info:?}");
}
