//! Graph model end to end: the same random graphs loaded into clusters of
//! 1, 3 and 5 shards give the answers of an in-test reference BFS.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use omnishard_proto::v1::*;
use omnishard_tests::Cluster;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Code;

/// A random graph with cycles, self-loops and parallel edges of different labels.
struct TestGraph {
    vertices: Vec<String>,
    edges: BTreeSet<(String, String, String)>,
}

fn random_graph(seed: u64, n: usize, m: usize) -> TestGraph {
    let mut rng = StdRng::seed_from_u64(seed);
    let vertices: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
    let mut edges = BTreeSet::new();
    while edges.len() < m {
        let from = vertices[rng.random_range(0..n)].clone();
        let to = if rng.random_bool(0.05) { from.clone() } else { vertices[rng.random_range(0..n)].clone() };
        let label = ["knows", "cites"][rng.random_range(0..2)].to_string();
        edges.insert((from, to, label));
    }
    TestGraph { vertices, edges }
}

/// Reference BFS depths from `start`.
fn reference_bfs(g: &TestGraph, start: &str, dir: Direction, labels: &[&str], max_depth: u32) -> BTreeMap<String, u32> {
    let mut adj: HashMap<&str, Vec<&str>> = HashMap::new();
    for (f, t, l) in &g.edges {
        if !labels.is_empty() && !labels.contains(&l.as_str()) {
            continue;
        }
        if matches!(dir, Direction::Out | Direction::Both) {
            adj.entry(f).or_default().push(t);
        }
        if matches!(dir, Direction::In | Direction::Both) {
            adj.entry(t).or_default().push(f);
        }
    }
    let mut depth = BTreeMap::from([(start.to_string(), 0)]);
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        let d = depth[v];
        if d == max_depth {
            continue;
        }
        for &next in adj.get(v).map(Vec::as_slice).unwrap_or_default() {
            if !depth.contains_key(next) {
                depth.insert(next.to_string(), d + 1);
                queue.push_back(next);
            }
        }
    }
    depth
}

async fn load(client: &omnishard_client::Client, graph: &str, g: &TestGraph) {
    let mut api = client.graph();
    let vertices = g
        .vertices
        .iter()
        .map(|id| VertexWrite {
            id: id.clone(),
            label: "node".into(),
            properties_json: format!(r#"{{"name":"{id}"}}"#),
            ..Default::default()
        })
        .collect();
    api.write_vertices(WriteVerticesRequest { graph: graph.into(), vertices, ..Default::default() }).await.unwrap();
    let edges = g
        .edges
        .iter()
        .map(|(f, t, l)| EdgeWrite {
            from: f.clone(),
            to: t.clone(),
            label: l.clone(),
            weight: 1.0,
            ..Default::default()
        })
        .collect();
    api.write_edges(WriteEdgesRequest { graph: graph.into(), edges, ..Default::default() }).await.unwrap();
}

async fn traverse(
    client: &omnishard_client::Client,
    graph: &str,
    start: &str,
    dir: Direction,
    labels: &[&str],
    depth: u32,
) -> (BTreeMap<String, u32>, TraverseResponse) {
    let req = TraverseRequest {
        graph: graph.into(),
        start: vec![start.into()],
        direction: dir as i32,
        edge_labels: labels.iter().map(|l| l.to_string()).collect(),
        max_depth: depth,
        return_paths: true,
        ..Default::default()
    };
    let resp = client.graph().traverse(req).await.unwrap().into_inner();
    let depths = resp.reached.iter().map(|r| (r.vertex.as_ref().unwrap().id.clone(), r.depth)).collect();
    (depths, resp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traversals_match_reference_bfs_on_1_3_and_5_shards() {
    let graphs: Vec<TestGraph> = (0..3).map(|seed| random_graph(seed, 40, 110)).collect();
    for shards in [1, 3, 5] {
        let cluster = Cluster::builder().shards(shards).start().await.unwrap();
        let client = cluster.client().await.unwrap();
        for (n, g) in graphs.iter().enumerate() {
            let name = format!("g{n}");
            load(&client, &name, g).await;
            for start in ["v0", "v7", "v13"] {
                for dir in [Direction::Out, Direction::In, Direction::Both] {
                    for (labels, depth) in [(vec![], 1), (vec![], 3), (vec!["knows"], 4)] {
                        let expected = reference_bfs(g, start, dir, &labels, depth);
                        let (got, resp) = traverse(&client, &name, start, dir, &labels, depth).await;
                        assert_eq!(
                            got, expected,
                            "{shards} shards, graph {n}, {start} {dir:?} {labels:?} depth {depth}"
                        );
                        // Every returned path is a real walk of the reported length.
                        for r in &resp.reached {
                            assert_eq!(r.path.len() as u32, r.depth + 1);
                            assert_eq!(r.path.first().map(String::as_str), Some(start));
                        }
                        if shards == 1 {
                            assert!(resp.shard_round_trips <= 1, "one shard expands everything locally");
                        }
                    }
                }
                // Shortest paths have the reference length.
                let all = reference_bfs(g, start, Direction::Out, &[], 10);
                for target in ["v1", "v20", "v39"] {
                    let resp = client
                        .graph()
                        .shortest_path(ShortestPathRequest {
                            graph: name.clone(),
                            from: start.into(),
                            to: target.into(),
                            direction: Direction::Out as i32,
                            max_depth: 10,
                            ..Default::default()
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    match all.get(target) {
                        Some(&d) => {
                            assert!(resp.found);
                            assert_eq!(resp.path.len() as u32, d + 1, "{start} -> {target}");
                            for pair in resp.path.windows(2) {
                                assert!(
                                    g.edges.iter().any(|(f, t, _)| *f == pair[0] && *t == pair[1]),
                                    "not an edge: {pair:?}"
                                );
                            }
                        }
                        None => assert!(!resp.found),
                    }
                }
            }
            // Neighbours: out-edges of v0 equal the reference.
            let resp = client
                .graph()
                .neighbors(NeighborsRequest {
                    graph: name.clone(),
                    id: "v0".into(),
                    direction: Direction::Out as i32,
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let got: BTreeSet<(String, String)> = resp.edges.into_iter().map(|e| (e.to, e.label)).collect();
            let want: BTreeSet<(String, String)> =
                g.edges.iter().filter(|(f, _, _)| f == "v0").map(|(_, t, l)| (t.clone(), l.clone())).collect();
            assert_eq!(got, want);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_graph_bad_input_and_deletes() {
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let mut api = client.graph();
    let g = TestGraph {
        vertices: vec!["a".into(), "b".into(), "c".into()],
        edges: BTreeSet::from([
            ("a".into(), "b".into(), "x".into()),
            ("b".into(), "c".into(), "x".into()),
            ("c".into(), "a".into(), "x".into()),
        ]),
    };
    load(&client, "", &g).await;
    // Vertices by label, merged across shards in id order and paged.
    let find = |cursor: Vec<u8>, property: &str, value: &str| FindVerticesRequest {
        label: "node".into(),
        property: property.into(),
        value_json: value.into(),
        limit: 2,
        cursor,
        ..Default::default()
    };
    let first = api.find_vertices(find(vec![], "", "")).await.unwrap().into_inner();
    let ids: Vec<&str> = first.vertices.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, vec!["a", "b"]);
    let rest = api.find_vertices(find(first.next_cursor, "", "")).await.unwrap().into_inner();
    assert_eq!(rest.vertices.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(), vec!["c"]);
    assert!(rest.next_cursor.is_empty());
    let by_name = api.find_vertices(find(vec![], "name", "\"c\"")).await.unwrap().into_inner();
    assert_eq!(by_name.vertices.len(), 1);
    assert_eq!(api.find_vertices(find(vec![], "name", "{bad")).await.unwrap_err().code(), Code::InvalidArgument);

    // Edge to a missing vertex is rejected and leaves nothing behind.
    let err = api
        .write_edges(WriteEdgesRequest {
            edges: vec![EdgeWrite { from: "a".into(), to: "zzz".into(), label: "x".into(), ..Default::default() }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("zzz"));
    let dup = vec![
        VertexWrite { id: "d".into(), ..Default::default() },
        VertexWrite { id: "d".into(), ..Default::default() },
    ];
    assert_eq!(
        api.write_vertices(WriteVerticesRequest { vertices: dup, ..Default::default() }).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let bad_json = vec![VertexWrite { id: "d".into(), properties_json: "{nope".into(), ..Default::default() }];
    let err = api.write_vertices(WriteVerticesRequest { vertices: bad_json, ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("properties_json"), "{err:?}");
    let trav = |depth, direction| TraverseRequest {
        start: vec!["a".into()],
        max_depth: depth,
        direction,
        ..Default::default()
    };
    assert_eq!(api.traverse(trav(0, 1)).await.unwrap_err().code(), Code::InvalidArgument);
    let err = api.traverse(trav(11, 1)).await.unwrap_err();
    assert!(err.message().contains("graph.max_depth"), "{err:?}");
    assert_eq!(api.traverse(trav(2, 9)).await.unwrap_err().code(), Code::InvalidArgument);
    // A cycle terminates.
    let resp = api.traverse(trav(10, Direction::Out as i32)).await.unwrap().into_inner();
    assert_eq!(resp.reached.len(), 3);
    // Deleting a vertex removes both halves of its edges everywhere.
    let resp = api
        .delete_vertices(DeleteVerticesRequest { ids: vec!["b".into()], ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((resp.vertices_deleted, resp.edges_deleted), (1, 2));
    for (id, dir) in [("a", Direction::Out), ("c", Direction::In)] {
        let n = api
            .neighbors(NeighborsRequest { id: id.into(), direction: dir as i32, limit: 10, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert!(n.edges.is_empty(), "{id} still sees b: {:?}", n.edges);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_gremlin_queries() {
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let mut api = client.graph();
    let people = [("ann", 31, "paris"), ("bob", 25, "rome"), ("cid", 40, "oslo"), ("dee", 35, "rome")];
    let vertices = people
        .iter()
        .map(|(id, age, city)| VertexWrite {
            id: id.to_string(),
            label: "person".into(),
            properties_json: format!(r#"{{"name":"{id}","age":{age},"city":"{city}"}}"#),
            ..Default::default()
        })
        .chain(std::iter::once(VertexWrite { id: "acme".into(), label: "company".into(), ..Default::default() }))
        .collect();
    api.write_vertices(WriteVerticesRequest { vertices, ..Default::default() }).await.unwrap();
    let edges = [
        ("ann", "bob", "knows"),
        ("ann", "cid", "knows"),
        ("bob", "dee", "knows"),
        ("cid", "dee", "knows"),
        ("ann", "acme", "works_at"),
    ]
    .iter()
    .map(|(f, t, l)| EdgeWrite {
        from: f.to_string(),
        to: t.to_string(),
        label: l.to_string(),
        weight: 1.0,
        ..Default::default()
    })
    .collect();
    api.write_edges(WriteEdgesRequest { edges, ..Default::default() }).await.unwrap();
    let q = |query: &str| QueryRequest { query: query.into(), ..Default::default() };
    let run = |query: &'static str| {
        let mut api = api.clone();
        async move {
            let r = api.query(q(query)).await.unwrap().into_inner();
            r.results_json
                .into_iter()
                .map(|j| serde_json::from_str::<serde_json::Value>(&j).unwrap())
                .collect::<Vec<_>>()
        }
    };
    use serde_json::json;
    assert_eq!(run("g.V('ann').out('knows').values('name')").await.len(), 2);
    assert_eq!(run("g.V('ann').out('knows').out('knows').count()").await, vec![json!(2)], "dee twice, as in Gremlin");
    assert_eq!(run("g.V('ann').out('knows').out('knows').dedup().count()").await, vec![json!(1)]);
    assert_eq!(run("g.V('ann').repeat(out('knows')).times(2).dedup().values('name')").await, vec![json!("dee")]);
    let mut adults = run("g.V().hasLabel('person').has('age', gte(31)).values('name')").await;
    adults.sort_by_key(|v| v.to_string());
    assert_eq!(adults, vec![json!("ann"), json!("cid"), json!("dee")]);
    assert_eq!(run("g.V().hasLabel('person').has('city', within('rome','oslo')).count()").await, vec![json!(3)]);
    assert_eq!(run("g.V('dee').in('knows').has('name', neq('bob')).values('name')").await, vec![json!("cid")]);
    assert_eq!(run("g.V('ann').outE('works_at').count()").await, vec![json!(1)]);
    assert_eq!(run("g.V('ann').out('knows').limit(1).count()").await, vec![json!(1)]);
    let paths = run("g.V('ann').out('knows').out('knows').path()").await;
    assert!(
        paths.contains(&json!(["ann", "bob", "dee"])) && paths.contains(&json!(["ann", "cid", "dee"])),
        "{paths:?}"
    );
    let err = api.query(q("g.V('ann').oot('knows')")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("position 11"), "{err:?}");
    assert_eq!(api.query(q("g.V().out()")).await.unwrap_err().code(), Code::InvalidArgument, "no full scans");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_budgets_trip_on_a_super_node() {
    // Default budgets: max_fanout 10,000 edges per vertex and hop.
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let mut api = client.graph();
    const FOLLOWERS: usize = 100_000;
    // A hub with 100,000 followers, loaded in batches of 10,000.
    let mut vertices = vec![VertexWrite { id: "hub".into(), label: "n".into(), ..Default::default() }];
    vertices.extend((0..FOLLOWERS).map(|i| VertexWrite {
        id: format!("f{i}"),
        label: "n".into(),
        ..Default::default()
    }));
    for chunk in vertices.chunks(10_000) {
        api.write_vertices(WriteVerticesRequest { vertices: chunk.to_vec(), ..Default::default() }).await.unwrap();
    }
    let edges: Vec<EdgeWrite> = (0..FOLLOWERS)
        .map(|i| EdgeWrite {
            from: "hub".into(),
            to: format!("f{i}"),
            label: "f".into(),
            weight: 1.0,
            ..Default::default()
        })
        .collect();
    for chunk in edges.chunks(10_000) {
        api.write_edges(WriteEdgesRequest { edges: chunk.to_vec(), ..Default::default() }).await.unwrap();
    }
    let req = |partial| TraverseRequest {
        start: vec!["hub".into()],
        max_depth: 1,
        direction: Direction::Out as i32,
        allow_partial: partial,
        ..Default::default()
    };
    let err = api.traverse(req(false)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("max_fanout"), "{err:?}");
    let partial = api.traverse(req(true)).await.unwrap().into_inner();
    assert!(partial.truncated && partial.truncated_by == "max_fanout");
    assert!(partial.reached.len() <= 10_001, "the fan-out cap bounds the result: {}", partial.reached.len());
    let err = api.query(QueryRequest { query: "g.V('hub').out()".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    // Neighbour paging still reads every edge of the super-node, a bounded page at a time.
    let mut cursor = Vec::new();
    let mut total = 0;
    loop {
        let page = api
            .neighbors(NeighborsRequest {
                id: "hub".into(),
                limit: 10_000,
                cursor,
                direction: Direction::Out as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.edges.len() <= 10_000);
        total += page.edges.len();
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    assert_eq!(total, FOLLOWERS);
}

/// Reference Dijkstra over out-edges.
fn reference_dijkstra(edges: &[(String, String, f64)], from: &str, to: &str) -> Option<f64> {
    let mut dist: HashMap<&str, f64> = HashMap::from([(from, 0.0)]);
    let mut done: BTreeSet<&str> = BTreeSet::new();
    loop {
        let (v, d) =
            dist.iter().filter(|(v, _)| !done.contains(*v)).min_by(|a, b| a.1.total_cmp(b.1)).map(|(v, d)| (*v, *d))?;
        if v == to {
            return Some(d);
        }
        done.insert(v);
        for (f, t, w) in edges.iter().filter(|(f, _, _)| f == v) {
            let _ = f;
            let c = d + w;
            if dist.get(t.as_str()).is_none_or(|&old| c < old) {
                dist.insert(t, c);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_weighted_shortest_path_matches_dijkstra() {
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let mut api = client.graph();
    let mut rng = StdRng::seed_from_u64(7);
    let n = 30;
    let vertices = (0..n).map(|i| VertexWrite { id: format!("w{i}"), ..Default::default() }).collect();
    api.write_vertices(WriteVerticesRequest { graph: "w".into(), vertices, ..Default::default() }).await.unwrap();
    let mut seen = BTreeSet::new();
    let mut edges = Vec::new();
    while edges.len() < 90 {
        let (f, t) = (rng.random_range(0..n), rng.random_range(0..n));
        if seen.insert((f, t)) {
            edges.push((format!("w{f}"), format!("w{t}"), (rng.random_range(1..20) as f64) / 4.0));
        }
    }
    let writes = edges
        .iter()
        .map(|(f, t, w)| EdgeWrite {
            from: f.clone(),
            to: t.clone(),
            label: "r".into(),
            weight: *w,
            ..Default::default()
        })
        .collect();
    api.write_edges(WriteEdgesRequest { graph: "w".into(), edges: writes, ..Default::default() }).await.unwrap();
    for target in ["w3", "w11", "w29"] {
        let resp = api
            .shortest_path(ShortestPathRequest {
                graph: "w".into(),
                from: "w0".into(),
                to: target.into(),
                weighted: true,
                direction: Direction::Out as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        match reference_dijkstra(&edges, "w0", target) {
            Some(cost) => {
                assert!(resp.found, "{target}");
                assert!((resp.cost - cost).abs() < 1e-9, "{target}: {} vs {cost}", resp.cost);
                let walked: f64 = resp
                    .path
                    .windows(2)
                    .map(|p| edges.iter().find(|(f, t, _)| *f == p[0] && *t == p[1]).unwrap().2)
                    .sum();
                assert!((walked - cost).abs() < 1e-9, "the path's own weight is its cost");
            }
            None => assert!(!resp.found),
        }
    }
}

/// The writer dies after the out-half (with its intent) is stored and while
/// the target shard is down: after the target restarts, the repair pass
/// stores the in-half and both directions agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_crash_between_edge_halves_is_repaired() {
    use omnishard_proto::v1::shard_service_client::ShardServiceClient;
    let mut cluster =
        Cluster::builder().shards(3).gateway_toml("\n[graph]\nrepair_interval = \"200ms\"\n").start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let mut api = client.graph();
    let ids: Vec<String> = cluster.shard_ids();
    let ring = omnishard_common::placement::Ring::new(1, 256, &ids).unwrap();
    let owner = |v: &str| ring.owner_index("default", v.as_bytes());
    let source = "src".to_string();
    let target = (0..).map(|i| format!("dst{i}")).find(|t| owner(t) != owner(&source)).unwrap();
    let vertices =
        [&source, &target].iter().map(|id| VertexWrite { id: id.to_string(), ..Default::default() }).collect();
    api.write_vertices(WriteVerticesRequest { vertices, ..Default::default() }).await.unwrap();
    let info = client.cluster().await.unwrap();
    let source_addr = format!("http://{}", info.shards[owner(&source)].addr);

    // The target's shard dies; the out-half lands with its intent, the in-half never does.
    cluster.kill_shard(owner(&target)).await.unwrap();
    let edge = Edge { from: source.clone(), to: target.clone(), label: "x".into(), weight: 1.0, ..Default::default() };
    let op = GraphOp {
        op: Some(graph_op::Op::PutEdgeHalf(ShardEdgeHalf {
            half: EdgeHalf::Out as i32,
            edge: Some(edge),
            pending: true,
            ..Default::default()
        })),
    };
    let mut shard = ShardServiceClient::connect(source_addr).await.unwrap();
    shard.graph_apply(ShardGraphApplyRequest { epoch: 1, ops: vec![op], ..Default::default() }).await.unwrap();

    cluster.restart_shard(owner(&target)).await.unwrap();
    let in_edges = |id: String| {
        let mut api = api.clone();
        async move {
            let req = NeighborsRequest { id, direction: Direction::In as i32, limit: 10, ..Default::default() };
            api.neighbors(req).await.map(|r| r.into_inner().edges.len()).unwrap_or(0)
        }
    };
    let mut waited = 0;
    while in_edges(target.clone()).await == 0 {
        waited += 1;
        assert!(waited < 100, "the in-half was never repaired");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let out = api
        .neighbors(NeighborsRequest {
            id: source.clone(),
            direction: Direction::Out as i32,
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.edges.len(), 1);
    let traversed = api
        .traverse(TraverseRequest {
            start: vec![target.clone()],
            direction: Direction::In as i32,
            max_depth: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(traversed.reached.len(), 2, "both directions agree");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_traversal_property_filters() {
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let mut api = client.graph();
    let vertices = [("a", 50), ("b", 20), ("c", 40), ("d", 45)]
        .iter()
        .map(|(id, age)| VertexWrite {
            id: id.to_string(),
            properties_json: format!(r#"{{"age":{age}}}"#),
            ..Default::default()
        })
        .collect();
    api.write_vertices(WriteVerticesRequest { vertices, ..Default::default() }).await.unwrap();
    // a -> b (2015), a -> c (2021), b -> d (2022), c -> d (2010)
    let edges = [("a", "b", 2015), ("a", "c", 2021), ("b", "d", 2022), ("c", "d", 2010)]
        .iter()
        .map(|(f, t, y)| EdgeWrite {
            from: f.to_string(),
            to: t.to_string(),
            properties_json: format!(r#"{{"since":{y}}}"#),
            weight: 1.0,
            ..Default::default()
        })
        .collect();
    api.write_edges(WriteEdgesRequest { edges, ..Default::default() }).await.unwrap();
    let filter = |key: &str, op: &str, v: &str| PropertyFilter { key: key.into(), op: op.into(), value_json: v.into() };
    let run = |vf: Vec<PropertyFilter>, ef: Vec<PropertyFilter>| {
        let mut api = api.clone();
        async move {
            let req = TraverseRequest {
                start: vec!["a".into()],
                direction: Direction::Out as i32,
                max_depth: 2,
                vertex_filters: vf,
                edge_filters: ef,
                ..Default::default()
            };
            let mut ids: Vec<String> = api
                .traverse(req)
                .await
                .unwrap()
                .into_inner()
                .reached
                .into_iter()
                .map(|r| r.vertex.unwrap().id)
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(run(vec![], vec![]).await, vec!["a", "b", "c", "d"]);
    assert_eq!(
        run(vec![filter("age", "gte", "30")], vec![]).await,
        vec!["a", "c", "d"],
        "b is skipped, d still reached via c"
    );
    assert_eq!(run(vec![], vec![filter("since", "gt", "2020")]).await, vec!["a", "c"], "only recent edges");
    assert_eq!(run(vec![filter("age", "gte", "30")], vec![filter("since", "gt", "2020")]).await, vec!["a", "c"]);
    let bad = TraverseRequest {
        start: vec!["a".into()],
        max_depth: 1,
        vertex_filters: vec![filter("age", "like", "1")],
        ..Default::default()
    };
    let err = api.traverse(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("op:"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_dfs_visits_in_preorder() {
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let mut api = client.graph();
    // r -> a -> a1, r -> b -> b1, a1 -> r (cycle)
    let vertices =
        ["r", "a", "a1", "b", "b1"].iter().map(|id| VertexWrite { id: id.to_string(), ..Default::default() }).collect();
    api.write_vertices(WriteVerticesRequest { vertices, ..Default::default() }).await.unwrap();
    let edges = [("r", "a"), ("r", "b"), ("a", "a1"), ("b", "b1"), ("a1", "r")]
        .iter()
        .map(|(f, t)| EdgeWrite { from: f.to_string(), to: t.to_string(), weight: 1.0, ..Default::default() })
        .collect();
    api.write_edges(WriteEdgesRequest { edges, ..Default::default() }).await.unwrap();
    let req = TraverseRequest {
        start: vec!["r".into()],
        max_depth: 5,
        order: TraversalOrder::Dfs as i32,
        return_paths: true,
        ..Default::default()
    };
    let resp = api.traverse(req).await.unwrap().into_inner();
    let order: Vec<(String, u32)> =
        resp.reached.iter().map(|r| (r.vertex.as_ref().unwrap().id.clone(), r.depth)).collect();
    let expected: Vec<(String, u32)> =
        [("r", 0), ("a", 1), ("a1", 2), ("b", 1), ("b1", 2)].iter().map(|(v, d)| (v.to_string(), *d)).collect();
    assert_eq!(order, expected);
    assert_eq!(resp.reached[2].path, vec!["r", "a", "a1"]);
    let shallow = TraverseRequest {
        start: vec!["r".into()],
        max_depth: 1,
        order: TraversalOrder::Dfs as i32,
        ..Default::default()
    };
    assert_eq!(api.traverse(shallow).await.unwrap().into_inner().reached.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_edge_modes_and_compare_and_set() {
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let mut api = client.graph();
    let vertices = ["p", "q"].iter().map(|id| VertexWrite { id: id.to_string(), ..Default::default() }).collect();
    api.write_vertices(WriteVerticesRequest { vertices, ..Default::default() }).await.unwrap();
    let edge = |mode: WriteMode, props: &str, expected: Option<u64>| EdgeWrite {
        from: "p".into(),
        to: "q".into(),
        label: "l".into(),
        properties_json: props.into(),
        weight: 0.0,
        mode: mode as i32,
        expected_version: expected,
    };
    let write = |e: EdgeWrite| {
        let mut api = api.clone();
        async move { api.write_edges(WriteEdgesRequest { edges: vec![e], ..Default::default() }).await }
    };
    assert_eq!(write(edge(WriteMode::Merge, "{}", None)).await.unwrap_err().code(), Code::NotFound);
    let v1 = write(edge(WriteMode::Create, r#"{"a":1}"#, None)).await.unwrap().into_inner().edges[0].version;
    assert_eq!(write(edge(WriteMode::Create, "{}", None)).await.unwrap_err().code(), Code::AlreadyExists);
    assert_eq!(
        write(edge(WriteMode::Merge, r#"{"b":2}"#, Some(v1 + 1000))).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    write(edge(WriteMode::Merge, r#"{"b":2}"#, Some(v1))).await.unwrap();
    // Both halves carry the merged properties.
    for (id, dir) in [("p", Direction::Out), ("q", Direction::In)] {
        let n = api
            .neighbors(NeighborsRequest { id: id.into(), direction: dir as i32, limit: 5, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let props: serde_json::Value = serde_json::from_str(&n.edges[0].properties_json).unwrap();
        assert_eq!(props, serde_json::json!({"a": 1, "b": 2}), "{id}");
    }
}

/// Longest message a refusal may carry: it names the field and the limit and
/// quotes a short excerpt, never the client's input whole.
const SHORT_MESSAGE: usize = 300;

fn query(text: impl Into<String>) -> QueryRequest {
    QueryRequest { query: text.into(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_gremlin_nesting_and_length_are_refused_and_the_gateway_serves_on() {
    let cluster = Cluster::builder().shards(2).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let mut api = client.graph();
    let a = VertexWrite { id: "a".into(), label: "n".into(), ..Default::default() };
    api.write_vertices(WriteVerticesRequest { vertices: vec![a], ..Default::default() }).await.unwrap();
    // The probes that overflowed the gateway's stack: 7,000 nested calls.
    let deep_out = format!("g.V('a').out({}'l'{})", "x(".repeat(7_000), ")".repeat(7_000));
    let deep_has = format!("g.V('a').has('k', {}1{})", "eq(".repeat(7_000), ")".repeat(7_000));
    for text in [deep_out, deep_has] {
        let err = api.query(query(text)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", &err.message()[..err.message().len().min(200)]);
        assert!(err.message().contains("the limit is 32"), "{}", &err.message()[..err.message().len().min(200)]);
        assert!(err.message().len() < SHORT_MESSAGE, "{} bytes", err.message().len());
    }
    // A 1 MB query is refused by its length, before it is parsed.
    let huge = format!("g.V('{}')", "a".repeat(1 << 20));
    let err = api.query(query(huge)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("the limit is 65536"), "{}", &err.message()[..err.message().len().min(200)]);
    assert!(err.message().len() < SHORT_MESSAGE, "{} bytes", err.message().len());
    // Syntax errors quote an excerpt: in a 100 KB query (refused by length) and in a 60 KB one.
    for size in [100_000, 60_000] {
        let text = format!("g.V('a').{}()", "x".repeat(size));
        let err = api.query(query(text)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().len() < SHORT_MESSAGE, "{size}: {} bytes", err.message().len());
    }
    let err = api.query(query(format!("g.V('a').out('{}').oops()", "l".repeat(60_000)))).await.unwrap_err();
    assert!(err.message().contains("unknown step oops() at position 60017"), "{}", err.message());
    assert!(err.message().len() < SHORT_MESSAGE, "{} bytes", err.message().len());
    // The gateway is still up and answers.
    let count = api.query(query("g.V('a').count()")).await.unwrap().into_inner();
    assert_eq!(count.results_json, vec!["1".to_string()]);
}

/// The gateway's peak resident memory (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_gremlin_budget_stops_a_hub_query_while_expanding() {
    // Default budgets: max_visited 100,000 traversers.
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let mut api = client.graph();
    const NEIGHBOURS: usize = 2_000;
    let mut vertices = vec![VertexWrite { id: "hub".into(), label: "n".into(), ..Default::default() }];
    vertices.extend((0..NEIGHBOURS).map(|i| VertexWrite {
        id: format!("n{i}"),
        label: "n".into(),
        ..Default::default()
    }));
    api.write_vertices(WriteVerticesRequest { vertices, ..Default::default() }).await.unwrap();
    // Edge properties make every copy of an edge cost what it does in real graphs.
    let note = format!(r#"{{"note":"{}"}}"#, "x".repeat(256));
    let edges = (0..NEIGHBOURS)
        .map(|i| EdgeWrite {
            from: "hub".into(),
            to: format!("n{i}"),
            label: "l".into(),
            properties_json: note.clone(),
            weight: 1.0,
            ..Default::default()
        })
        .collect();
    api.write_edges(WriteEdgesRequest { edges, ..Default::default() }).await.unwrap();
    // Two hops: every neighbour leads back to the hub, 2,000 traversers.
    let two = api.query(query("g.V('hub').both().both().count()")).await.unwrap().into_inner();
    assert_eq!(two.results_json, vec![NEIGHBOURS.to_string()]);
    // Three hops would be 2,000 × 2,000 traversers: refused while counting, not after building them.
    let pid = cluster.gateway_pid().unwrap();
    let started = std::time::Instant::now();
    let err = api.query(query("g.V('hub').both().both().both().count()")).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("max_visited"), "{err:?}");
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    let peak = peak_rss(pid);
    assert!(peak < 1 << 30, "gateway peak RSS {} MiB", peak >> 20);
    // And the gateway serves on.
    let one = api.query(query("g.V('hub').out().count()")).await.unwrap().into_inner();
    assert_eq!(one.results_json, vec![NEIGHBOURS.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_gremlin_memory_budget_counts_shared_vertices_once() {
    let cluster = Cluster::builder().shards(1).gateway_toml("\n[graph]\nmax_query_bytes = \"1MiB\"\n").start().await;
    let cluster = cluster.unwrap();
    let client = cluster.client().await.unwrap();
    let mut api = client.graph();
    let big = format!(r#"{{"blob":"{}"}}"#, "b".repeat(300_000));
    let vertices = vec![
        VertexWrite { id: "a".into(), label: "n".into(), ..Default::default() },
        VertexWrite { id: "big".into(), label: "n".into(), properties_json: big, ..Default::default() },
    ];
    api.write_vertices(WriteVerticesRequest { vertices, ..Default::default() }).await.unwrap();
    // Four parallel edges: four traversers standing on the one 300 KB vertex.
    let edges = (0..4)
        .map(|i| EdgeWrite {
            from: "a".into(),
            to: "big".into(),
            label: format!("l{i}"),
            weight: 1.0,
            ..Default::default()
        })
        .collect();
    api.write_edges(WriteEdgesRequest { edges, ..Default::default() }).await.unwrap();
    let count = api.query(query("g.V('a').out().count()")).await.unwrap().into_inner();
    assert_eq!(count.results_json, vec!["4".to_string()], "the vertex is held once, not four times");
    let one = api.query(query("g.V('a').out().dedup().values('blob')")).await.unwrap().into_inner();
    assert_eq!(one.results_json.len(), 1);
    // Four copies of it in the results are over 1 MiB.
    let err = api.query(query("g.V('a').out().values('blob')")).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("graph.max_query_bytes"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_find_vertices_needs_a_label_and_a_property_for_a_value() {
    let cluster = Cluster::builder().shards(2).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let mut api = client.graph();
    let vertices = vec![VertexWrite {
        id: "a".into(),
        label: "n".into(),
        properties_json: r#"{"k":1}"#.into(),
        ..Default::default()
    }];
    api.write_vertices(WriteVerticesRequest { vertices, ..Default::default() }).await.unwrap();
    let find = |label: &str, property: &str, value: &str| FindVerticesRequest {
        label: label.into(),
        property: property.into(),
        value_json: value.into(),
        ..Default::default()
    };
    let found = api.find_vertices(find("n", "k", "1")).await.unwrap().into_inner();
    assert_eq!(found.vertices.len(), 1);
    let none = api.find_vertices(find("n", "k", "2")).await.unwrap().into_inner();
    assert!(none.vertices.is_empty());
    // A value without a property used to be ignored: every vertex of the label came back.
    let err = api.find_vertices(find("n", "", "2")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("property:"), "{err:?}");
    let err = api.find_vertices(find("", "", "")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("label:"), "{err:?}");
    let err = api.find_vertices(find("", "k", "1")).await.unwrap_err();
    assert!(err.message().starts_with("label:"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_deeply_nested_json_is_refused_cleanly() {
    let cluster = Cluster::builder().shards(2).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let mut api = client.graph();
    const DEPTH: usize = 100_000;
    let deep = format!("{}{}", "[".repeat(DEPTH), "]".repeat(DEPTH));
    let deep_object = format!(r#"{{"k":{deep}}}"#);
    let short = |m: &str| m[..m.len().min(200)].to_string();
    let v = |id: &str, props: &str| VertexWrite {
        id: id.into(),
        label: "n".into(),
        properties_json: props.into(),
        ..Default::default()
    };
    let err = api
        .write_vertices(WriteVerticesRequest { vertices: vec![v("d", &deep_object)], ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", short(err.message()));
    assert!(err.message().contains("properties_json"), "{}", short(err.message()));
    assert!(err.message().len() < SHORT_MESSAGE, "{} bytes", err.message().len());
    api.write_vertices(WriteVerticesRequest { vertices: vec![v("a", "{}"), v("b", "{}")], ..Default::default() })
        .await
        .unwrap();
    let edge = EdgeWrite {
        from: "a".into(),
        to: "b".into(),
        label: "l".into(),
        properties_json: deep_object.clone(),
        ..Default::default()
    };
    let err = api.write_edges(WriteEdgesRequest { edges: vec![edge], ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", short(err.message()));
    assert!(err.message().len() < SHORT_MESSAGE, "{} bytes", err.message().len());
    let find =
        FindVerticesRequest { label: "n".into(), property: "k".into(), value_json: deep.clone(), ..Default::default() };
    let err = api.find_vertices(find).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", short(err.message()));
    assert!(err.message().starts_with("value_json:"), "{}", short(err.message()));
    assert!(err.message().len() < SHORT_MESSAGE, "{} bytes", err.message().len());
    // Traversal filters: refused without quoting the value back.
    let filter = PropertyFilter { key: "k".into(), op: "eq".into(), value_json: deep.clone() };
    for order in [TraversalOrder::Bfs, TraversalOrder::Dfs] {
        let req = TraverseRequest {
            start: vec!["a".into()],
            max_depth: 1,
            vertex_filters: vec![filter.clone()],
            order: order as i32,
            ..Default::default()
        };
        let err = api.traverse(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", short(err.message()));
        assert!(err.message().starts_with("value_json:"), "{}", short(err.message()));
        assert!(err.message().len() < SHORT_MESSAGE, "{order:?}: {} bytes", err.message().len());
    }
    let long_op = PropertyFilter { key: "k".into(), op: "o".repeat(100_000), value_json: "1".into() };
    let req =
        TraverseRequest { start: vec!["a".into()], max_depth: 1, edge_filters: vec![long_op], ..Default::default() };
    let err = api.traverse(req).await.unwrap_err();
    assert!(err.message().starts_with("op:"), "{}", short(err.message()));
    assert!(err.message().len() < SHORT_MESSAGE, "{} bytes", err.message().len());
    // Nothing crashed: shards and gateway answer.
    let got = api.get_vertices(GetVerticesRequest { ids: vec!["a".into(), "d".into()], ..Default::default() });
    let got = got.await.unwrap().into_inner();
    assert_eq!(got.vertices.iter().map(|v| v.found).collect::<Vec<_>>(), vec![true, false]);
}
