//! The shard's graph model against a real RocksDB: vertex modes and CAS,
//! edge halves, cascading vertex deletes, paging and local expansion.

use std::sync::Arc;

use omnishard_common::topology::{ShardAddr, Topology};
use omnishard_proto::v1::{
    graph_op, Direction, Edge, EdgeHalf, FrontierEntry, GraphOp, ShardEdgeHalf, ShardGraphExpandRequest, VertexWrite,
    WriteMode,
};
use omnishard_shard::{Error, Shard, ShardConfig};

async fn open(dir: &std::path::Path) -> Arc<Shard> {
    let shard = Shard::open(ShardConfig { id: "shard-1".into(), data_dir: dir.to_path_buf(), ..Default::default() })
        .await
        .unwrap();
    shard.replication.bootstrap("127.0.0.1:1").await.unwrap();
    let topology = Topology { epoch: 1, vnodes: 256, shards: vec![ShardAddr::new("shard-1", "h:1")] };
    shard.install_topology(topology).await.unwrap();
    shard
}

fn vertex(id: &str, label: &str, props: &str, mode: WriteMode) -> GraphOp {
    GraphOp {
        op: Some(graph_op::Op::PutVertex(VertexWrite {
            id: id.into(),
            label: label.into(),
            properties_json: props.into(),
            mode: mode as i32,
            expected_version: None,
        })),
    }
}

fn half(half: EdgeHalf, from: &str, to: &str, label: &str) -> GraphOp {
    let edge = Edge { from: from.into(), to: to.into(), label: label.into(), weight: 1.0, ..Default::default() };
    GraphOp {
        op: Some(graph_op::Op::PutEdgeHalf(ShardEdgeHalf {
            half: half as i32,
            edge: Some(edge),
            ..Default::default()
        })),
    }
}

fn both(from: &str, to: &str, label: &str) -> Vec<GraphOp> {
    vec![half(EdgeHalf::Out, from, to, label), half(EdgeHalf::In, from, to, label)]
}

#[tokio::test]
async fn test_vertex_modes_merge_and_cas() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path()).await;
    let done = shard
        .graph_apply(1, "", "", vec![vertex("a", "person", r#"{"name":"ann","age":30}"#, WriteMode::Create)])
        .await
        .unwrap();
    let v1 = done.vertices[0].version;
    let err = shard.graph_apply(1, "", "", vec![vertex("a", "person", "{}", WriteMode::Create)]).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    let err = shard.graph_apply(1, "", "", vec![vertex("zz", "", "{}", WriteMode::Merge)]).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let merged = shard.graph_apply(1, "", "", vec![vertex("a", "", r#"{"age":31}"#, WriteMode::Merge)]).await.unwrap();
    let v = &merged.vertices[0];
    assert_eq!(v.label, "person");
    let props: serde_json::Value = serde_json::from_str(&v.properties_json).unwrap();
    assert_eq!(props, serde_json::json!({"name": "ann", "age": 31}));
    assert!(v.version > v1);
    let mut stale = vertex("a", "", "{}", WriteMode::Replace);
    if let Some(graph_op::Op::PutVertex(w)) = stale.op.as_mut() {
        w.expected_version = Some(v1);
    }
    assert!(matches!(shard.graph_apply(1, "", "", vec![stale]).await.unwrap_err(), Error::VersionConflict { .. }));
    let err = shard.graph_apply(1, "", "", vec![vertex("b", "x", "[1,2]", WriteMode::Upsert)]).await.unwrap_err();
    assert!(err.to_string().contains("properties_json"), "{err}");
    let err = shard.graph_apply(1, "", "", vec![vertex("b", "x", "{oops", WriteMode::Upsert)]).await.unwrap_err();
    assert!(err.to_string().contains("not valid JSON"), "{err}");
}

#[tokio::test]
async fn test_edges_need_their_vertex_and_delete_cascades() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path()).await;
    let err = shard.graph_apply(1, "", "g", both("a", "b", "knows")).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "no dangling edges: {err}");
    let mut ops = vec![vertex("a", "p", "{}", WriteMode::Upsert), vertex("b", "p", "{}", WriteMode::Upsert)];
    ops.extend(both("a", "b", "knows"));
    ops.extend(both("b", "a", "knows"));
    ops.extend(both("a", "a", "self")); // self-loop
    shard.graph_apply(1, "", "g", ops).await.unwrap();
    let out = shard.graph_edges(1, "", "g", "a".into(), EdgeHalf::Out, vec![], vec![], 100).await.unwrap();
    let mut got: Vec<(&str, &str)> = out.edges.iter().map(|e| (e.to.as_str(), e.label.as_str())).collect();
    got.sort();
    assert_eq!(got, vec![("a", "self"), ("b", "knows")]);
    let only =
        shard.graph_edges(1, "", "g", "a".into(), EdgeHalf::Out, vec!["self".into()], vec![], 100).await.unwrap();
    assert_eq!(only.edges.len(), 1);
    let first = shard.graph_edges(1, "", "g", "a".into(), EdgeHalf::Out, vec![], vec![], 1).await.unwrap();
    let rest =
        shard.graph_edges(1, "", "g", "a".into(), EdgeHalf::Out, vec![], first.next.clone().unwrap(), 1).await.unwrap();
    let mut paged = vec![first.edges[0].to.as_str(), rest.edges[0].to.as_str()];
    paged.sort();
    assert_eq!(paged, vec!["a", "b"], "paging returns each edge once");
    assert!(rest.next.is_none());
    let done = shard
        .graph_apply(1, "", "g", vec![GraphOp { op: Some(graph_op::Op::DeleteVertex("a".into())) }])
        .await
        .unwrap();
    // a->b, b->a and a->a: the halves stored with a (out a->b, a->a; in b->a, a->a).
    assert_eq!(done.edge_halves_deleted, 4);
    assert_eq!(done.removed_edges.len(), 4);
    let b_in = shard.graph_edges(1, "", "g", "b".into(), EdgeHalf::In, vec![], vec![], 100).await.unwrap();
    assert_eq!(b_in.edges.len(), 1, "the other half of a->b is removed by the gateway, not here");
    assert!(shard.graph_get(1, "", "g", vec!["a".into()]).await.unwrap()[0].is_none());
}

#[tokio::test]
async fn test_local_expansion_by_depth_with_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path()).await;
    // a -> b -> c -> a (cycle), a -> c shortcut, c -> d
    let mut ops: Vec<GraphOp> =
        ["a", "b", "c", "d"].iter().map(|id| vertex(id, "n", "{}", WriteMode::Upsert)).collect();
    for (f, t) in [("a", "b"), ("b", "c"), ("c", "a"), ("a", "c"), ("c", "d")] {
        ops.extend(both(f, t, "e"));
    }
    shard.graph_apply(1, "", "", ops).await.unwrap();
    let req = |depth, max_visited| ShardGraphExpandRequest {
        epoch: 1,
        frontier: vec![FrontierEntry { id: "a".into(), depth: 0, path: vec!["a".into()] }],
        direction: Direction::Out as i32,
        max_depth: depth,
        max_visited,
        max_fanout: 100,
        with_paths: true,
        ..Default::default()
    };
    let got = shard.graph_expand(1, req(2, 100)).await.unwrap();
    let mut depths: Vec<(String, u32)> =
        got.reached.iter().map(|r| (r.vertex.as_ref().unwrap().id.clone(), r.depth)).collect();
    depths.sort();
    assert_eq!(depths, vec![("a".into(), 0), ("b".into(), 1), ("c".into(), 1), ("d".into(), 2)]);
    let d = got.reached.iter().find(|r| r.vertex.as_ref().unwrap().id == "d").unwrap();
    assert_eq!(d.path, vec!["a", "c", "d"]);
    assert!(got.remote.is_empty() && got.truncated_by.is_empty());
    let got = shard.graph_expand(1, req(5, 2)).await.unwrap();
    assert_eq!((got.reached.len(), got.truncated_by.as_str()), (2, "max_visited"));
}

#[tokio::test]
async fn test_graph_records_migrate_with_their_vertex() {
    use omnishard_common::rejection::Rejection;
    use omnishard_common::stored::{graph_owner, Space};
    use omnishard_shard::migrate::DropMode;

    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path()).await;
    let ids: Vec<String> = (0..60).map(|i| format!("v{i}")).collect();
    let mut ops: Vec<GraphOp> = ids.iter().map(|id| vertex(id, "node", "{}", WriteMode::Upsert)).collect();
    for pair in ids.windows(2) {
        ops.extend(both(&pair[0], &pair[1], "next"));
    }
    shard.graph_apply(1, "", "g", ops).await.unwrap();

    // Under a two-shard ring about half the vertices move to shard-2.
    let target = Topology {
        epoch: 2,
        vnodes: 256,
        shards: vec![ShardAddr::new("shard-1", "h:1"), ShardAddr::new("shard-2", "h:2")],
    };
    let ring = target.ring().unwrap();
    let moving: Vec<&String> = ids.iter().filter(|id| ring.owner("default", id.as_bytes()) == "shard-2").collect();
    assert!(moving.len() > 10 && moving.len() < 50, "{} of 60 move", moving.len());
    shard.migrate_begin(1, target.clone(), false).await.unwrap();

    // The export, paged by a cursor that crosses from KV to graph, holds
    // every record of a moving vertex and nothing else.
    let (mut cursor, mut exported) = (Vec::new(), Vec::new());
    loop {
        let page = shard.migrate_export(1, cursor, 7, 1 << 20).await.unwrap();
        exported.extend(page.records);
        if page.done {
            break;
        }
        cursor = page.next;
    }
    assert!(exported.iter().all(|r| r.space == Space::Graph));
    // A cursor saved before graphs moved (a bare KV key) still reads: KV after it, then graph.
    let legacy = shard.migrate_export(1, b"default\0k".to_vec(), 10_000, 1 << 30).await.unwrap();
    assert_eq!(legacy.records.len(), exported.len(), "a KV-only cursor resumes into the graph records");
    for record in &exported {
        let (ns, id) = graph_owner(&record.key).unwrap();
        assert_eq!(ring.owner(ns, id), "shard-2", "{:?} exported but stays", String::from_utf8_lossy(id));
    }
    // A vertex, its label entry and its (up to two) out- and in-halves.
    let vertex_keys = exported.iter().filter(|r| r.version() > 0).count();
    assert!(vertex_keys >= moving.len() * 2, "{vertex_keys} versioned records for {} vertices", moving.len());
    assert!(exported.len() >= moving.len() * 3, "{} records for {} vertices", exported.len(), moving.len());

    // A write to a moving vertex during the copy leaves marks for each key it changed.
    let mover = moving[0].clone();
    shard.graph_apply(1, "", "g", vec![vertex(&mover, "node", r#"{"x":1}"#, WriteMode::Upsert)]).await.unwrap();
    let dirty = shard.migrate_dirty(1, 100).await.unwrap();
    assert!(!dirty.records.is_empty() && dirty.records.iter().all(|r| r.space == Space::Graph), "{dirty:?}");
    assert!(dirty.records.iter().all(|r| graph_owner(&r.key).unwrap().1 == mover.as_bytes()));

    // Fenced: writes and reads of moving vertices are refused as `moving`; others go on.
    shard.migrate_begin(1, target.clone(), true).await.unwrap();
    let write = shard.graph_apply(1, "", "g", vec![vertex(&mover, "node", "{}", WriteMode::Upsert)]).await;
    assert!(matches!(write, Err(Error::Rejected(Rejection::Moving { .. }))), "{write:?}");
    let read = shard.graph_get(1, "", "g", vec![mover.clone()]).await;
    assert!(matches!(read, Err(Error::Rejected(Rejection::Moving { .. }))), "{read:?}");
    let staying = ids.iter().find(|id| ring.owner("default", id.as_bytes()) == "shard-1").unwrap();
    shard.graph_get(1, "", "g", vec![staying.clone()]).await.unwrap();

    // After the switch the source deletes exactly the moved records.
    shard.install_topology(target.clone()).await.unwrap();
    while !shard.migrate_drop(DropMode::Unowned, 5).await.unwrap().1 {}
    let left = shard.graph_get(2, "", "g", vec![staying.clone()]).await.unwrap();
    assert!(left[0].is_some(), "a staying vertex was deleted");
    let mut remaining = 0;
    let cf = shard.store().cf("graph").unwrap();
    for item in shard.store().db().iterator_cf(cf, rocksdb::IteratorMode::Start) {
        let (key, _) = item.unwrap();
        let (ns, id) = graph_owner(&key).unwrap();
        assert_eq!(ring.owner(ns, id), "shard-1", "{:?} left behind", String::from_utf8_lossy(&key));
        remaining += 1;
    }
    assert!(remaining >= (60 - moving.len()) * 2, "{remaining} records left");
}
