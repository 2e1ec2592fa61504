//! The receiving side of scale-out against a real RocksDB: `MigrateIngest`
//! takes records only within the migration this shard was told it receives,
//! only for this shard, and only records storable as they are; a refused
//! batch leaves the shard's keys readable and writable and its versions
//! increasing. Drops and topology installs are checked the same way, and a
//! shard whose Raft stopped says so instead of serving stats.

use std::sync::Arc;

use omnishard_common::stored::{Space, GRAPH_LABEL, GRAPH_VERTEX};
use omnishard_common::topology::{ShardAddr, Topology};
use omnishard_shard::apply::{Op, Txn};
use omnishard_shard::codec;
use omnishard_shard::migrate::{DropMode, IngestTo, Record, MAX_INGEST_VERSION};
use omnishard_shard::{Error, Shard, ShardConfig};
use prost::Message;

/// Epoch 1: three shards. Epoch 2 (the migration's ring): shard-2 removed,
/// so shard-1 receives part of shard-2's keys.
fn before() -> Topology {
    topology(1, &["shard-1", "shard-2", "shard-3"])
}

fn after() -> Topology {
    topology(2, &["shard-1", "shard-3"])
}

fn topology(epoch: u64, ids: &[&str]) -> Topology {
    Topology {
        epoch,
        vnodes: 256,
        shards: ids.iter().enumerate().map(|(i, id)| ShardAddr::new(*id, format!("127.0.0.1:{}", 1001 + i))).collect(),
    }
}

async fn open(dir: &std::path::Path) -> Arc<Shard> {
    let config = ShardConfig { id: "shard-1".into(), data_dir: dir.to_path_buf(), ..Default::default() };
    let shard = Shard::open(config).await.unwrap();
    shard.replication.bootstrap("127.0.0.1:1").await.unwrap();
    shard.install_topology(before()).await.unwrap();
    shard
}

/// A user key of `default` that shard-1 owns under both rings (so the KV API
/// serves it now), and one that the migration's ring gives to shard-3.
fn own_key() -> String {
    let (old, new) = (before().ring().unwrap(), after().ring().unwrap());
    (0..)
        .map(|i| format!("k{i}"))
        .find(|k| old.owner("default", k.as_bytes()) == "shard-1" && new.owner("default", k.as_bytes()) == "shard-1")
        .unwrap()
}

fn foreign_key() -> String {
    let new = after().ring().unwrap();
    (0..).map(|i| format!("k{i}")).find(|k| new.owner("default", k.as_bytes()) == "shard-3").unwrap()
}

fn kv_record(key: &str, value: Vec<u8>) -> Record {
    Record { key: codec::encode_key("default", key.as_bytes()), value: Some(value), mark: 0, space: Space::Kv }
}

fn to(migration_id: u64) -> IngestTo {
    IngestTo { migration_id, target_epoch: 2, target_shard: "shard-1".into() }
}

async fn put(shard: &Arc<Shard>, key: &str, value: &str) -> u64 {
    let op = Op::Put { key: key.into(), value: value.into(), expires_at_ms: 0, expected_version: None };
    let txn = Txn { namespace: "default".into(), ops: vec![op] };
    shard.apply(1, vec![txn]).await.unwrap().remove(0).unwrap().seq
}

async fn get(shard: &Arc<Shard>, key: &str) -> Option<(Vec<u8>, u64)> {
    let mut values = shard.read(1, "default", vec![key.into()]).await.unwrap();
    values.remove(0).map(|e| (e.value, e.version))
}

/// The key still reads as it was, takes a write and a compare-and-set on
/// the new version, and every version is above `floor`: the refusal left
/// nothing behind, and the sequence did not go backwards.
async fn still_serves(shard: &Arc<Shard>, key: &str, was: Option<(Vec<u8>, u64)>, floor: u64) {
    assert_eq!(get(shard, key).await, was, "{key} changed");
    let v1 = put(shard, key, "after").await;
    assert!(v1 > floor, "version {v1} not above {floor}");
    assert_eq!(get(shard, key).await, Some((b"after".to_vec(), v1)));
    let op = Op::Put { key: key.into(), value: "cas".into(), expires_at_ms: 0, expected_version: Some(v1) };
    let txn = Txn { namespace: "default".into(), ops: vec![op] };
    let v2 = shard.apply(1, vec![txn]).await.unwrap().remove(0).unwrap().seq;
    assert!(v2 > v1, "versions went backwards: {v2} after {v1}");
    let scanned = shard.scan(1, "default", key.as_bytes().to_vec(), Vec::new(), 10).await.unwrap();
    assert!(scanned.0.iter().any(|e| e.key == key.as_bytes() && e.version == v2), "scan over {key}: {scanned:?}");
}

#[tokio::test]
async fn test_ingest_without_a_migration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path()).await;
    let key = own_key();
    let v = put(&shard, &key, "before").await;
    let err =
        shard.migrate_ingest(to(1), vec![kv_record(&key, codec::encode_value(7, 0, b"copied"))]).await.unwrap_err();
    assert_eq!(err.to_status("shard-1").code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("receives records in no migration"), "{err}");
    still_serves(&shard, &key, Some((b"before".to_vec(), v)), v).await;
}

#[tokio::test]
async fn test_ingest_with_a_wrong_id_epoch_or_shard_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path()).await;
    shard.migrate_receive(3, after()).await.unwrap();
    // Asking again is fine; an older migration is refused.
    shard.migrate_receive(3, after()).await.unwrap();
    let err = shard.migrate_receive(2, after()).await.unwrap_err();
    assert_eq!(err.to_status("shard-1").code(), tonic::Code::FailedPrecondition, "{err}");
    let key = own_key();
    let record = || vec![kv_record(&key, codec::encode_value(7, 0, b"copied"))];

    let err = shard.migrate_ingest(to(4), record()).await.unwrap_err();
    assert_eq!(err.to_status("shard-1").code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("migration 3, not 4"), "{err}");
    let err = shard.migrate_ingest(to(0), record()).await.unwrap_err();
    assert!(err.to_string().starts_with("migration_id:"), "{err}");
    let err = shard.migrate_ingest(IngestTo { target_epoch: 3, ..to(3) }, record()).await.unwrap_err();
    assert!(err.to_string().starts_with("target_epoch:"), "{err}");
    let err = shard.migrate_ingest(IngestTo { target_shard: "shard-3".into(), ..to(3) }, record()).await.unwrap_err();
    assert_eq!(err.to_status("shard-1").code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.to_string().starts_with("target_shard:"), "{err}");
    // A key the migration's ring gives to another shard.
    let foreign = vec![kv_record(&foreign_key(), codec::encode_value(7, 0, b"copied"))];
    let err = shard.migrate_ingest(to(3), foreign).await.unwrap_err();
    assert_eq!(err.to_status("shard-1").code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.to_string().contains("to shard shard-3"), "{err}");
    still_serves(&shard, &key, None, 0).await;

    // The right migration: the record lands with the source's version, and
    // the sequence moves past it.
    shard.migrate_ingest(to(3), vec![kv_record(&key, codec::encode_value(5_000, 0, b"copied"))]).await.unwrap();
    assert_eq!(get(&shard, &key).await, Some((b"copied".to_vec(), 5_000)));
    assert!(put(&shard, &key, "newer").await > 5_000);
}

#[tokio::test]
async fn test_ingest_of_a_value_shorter_than_its_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path()).await;
    shard.migrate_receive(1, after()).await.unwrap();
    let key = own_key();
    let v = put(&shard, &key, "before").await;
    let short = kv_record(&key, vec![0; codec::HEADER_LEN - 1]);
    let err = shard.migrate_ingest(to(1), vec![short]).await.unwrap_err();
    assert_eq!(err.to_status("shard-1").code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.to_string().contains("records[0]") && err.to_string().contains("header"), "{err}");
    // A good record before a bad one is not applied either.
    let other = (0..).map(|i| format!("o{i}")).find(|k| *k != key && own_key_of(k)).unwrap();
    let batch = vec![kv_record(&other, codec::encode_value(9, 0, b"x")), kv_record(&key, vec![1, 2, 3])];
    let err = shard.migrate_ingest(to(1), batch).await.unwrap_err();
    assert!(err.to_string().contains("records[1]"), "{err}");
    assert_eq!(get(&shard, &other).await, None, "part of a refused batch was applied");
    still_serves(&shard, &key, Some((b"before".to_vec(), v)), v).await;
}

fn own_key_of(key: &str) -> bool {
    let (old, new) = (before().ring().unwrap(), after().ring().unwrap());
    old.owner("default", key.as_bytes()) == "shard-1" && new.owner("default", key.as_bytes()) == "shard-1"
}

#[tokio::test]
async fn test_ingest_of_wild_versions_is_refused_and_the_sequence_never_wraps() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path()).await;
    shard.migrate_receive(1, after()).await.unwrap();
    let key = own_key();
    let v = put(&shard, &key, "before").await;
    for version in [u64::MAX, MAX_INGEST_VERSION + 1, 0] {
        let err = shard
            .migrate_ingest(to(1), vec![kv_record(&key, codec::encode_value(version, 0, b"x"))])
            .await
            .unwrap_err();
        assert_eq!(err.to_status("shard-1").code(), tonic::Code::InvalidArgument, "{err}");
        assert!(err.to_string().contains(&format!("version is {version}")), "{err}");
    }
    assert_eq!(shard.stats().await.unwrap().seq, v, "a refused ingest moved the sequence");
    still_serves(&shard, &key, Some((b"before".to_vec(), v)), v).await;
    // The ceiling itself is storable, and the sequence continues above it.
    shard
        .migrate_ingest(to(1), vec![kv_record(&key, codec::encode_value(MAX_INGEST_VERSION, 0, b"top"))])
        .await
        .unwrap();
    assert_eq!(get(&shard, &key).await, Some((b"top".to_vec(), MAX_INGEST_VERSION)));
    assert_eq!(put(&shard, &key, "next").await, MAX_INGEST_VERSION + 1);
}

#[tokio::test]
async fn test_ingest_of_malformed_graph_records_is_refused() {
    use omnishard_proto::v1::Vertex;
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path()).await;
    shard.migrate_receive(1, after()).await.unwrap();
    let ring = after().ring().unwrap();
    let id = (0..).map(|i| format!("v{i}")).find(|v| ring.owner("default", v.as_bytes()) == "shard-1").unwrap();
    let prefix = b"default\0g\0".to_vec();
    let vertex_key = [&prefix[..], &[GRAPH_VERTEX], id.as_bytes()].concat();
    let graph =
        |key: &[u8], value: Vec<u8>| Record { key: key.to_vec(), value: Some(value), mark: 0, space: Space::Graph };
    let good = Vertex { id: id.clone(), label: "n".into(), version: 3, ..Default::default() };
    let wrong_id = Vertex { id: format!("{id}x"), ..good.clone() };
    let no_version = Vertex { version: 0, ..good.clone() };
    let mut label_key = prefix.clone();
    label_key.push(GRAPH_LABEL);
    label_key.extend_from_slice(&1u16.to_be_bytes());
    label_key.push(b'n');
    label_key.extend_from_slice(id.as_bytes());
    for (record, why) in [
        (graph(&vertex_key, vec![0xff, 0xff, 0xff]), "not a vertex"),
        (graph(&vertex_key, wrong_id.encode_to_vec()), "belongs to vertex"),
        (graph(&vertex_key, no_version.encode_to_vec()), "version is 0"),
        (graph(&label_key, b"junk".to_vec()), "label entry has none"),
    ] {
        let err = shard.migrate_ingest(to(1), vec![record]).await.unwrap_err();
        assert_eq!(err.to_status("shard-1").code(), tonic::Code::InvalidArgument, "{err}");
        assert!(err.to_string().contains(why), "{why}: {err}");
    }
    shard
        .migrate_ingest(to(1), vec![graph(&vertex_key, good.encode_to_vec()), graph(&label_key, Vec::new())])
        .await
        .unwrap();
    assert_eq!(shard.store().get_cf("graph", &vertex_key).unwrap(), Some(good.encode_to_vec()));
}

#[tokio::test]
async fn test_drops_and_installs_check_the_migration() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path()).await;
    shard.migrate_receive(1, after()).await.unwrap();
    let code = |e: Error| e.to_status("shard-1").code();
    // A receiving shard keeps its copies until its ring switched.
    let err = shard.check_drop(1, &DropMode::Unowned).await.unwrap_err();
    assert_eq!(code(err), tonic::Code::FailedPrecondition);
    let incoming =
        |after: Topology, source: &str| DropMode::Incoming { before: before(), after, source: source.into() };
    shard.check_drop(1, &incoming(after(), "shard-2")).await.unwrap();
    assert_eq!(
        code(shard.check_drop(2, &incoming(after(), "shard-2")).await.unwrap_err()),
        tonic::Code::FailedPrecondition
    );
    assert_eq!(
        code(shard.check_drop(0, &incoming(after(), "shard-2")).await.unwrap_err()),
        tonic::Code::InvalidArgument
    );
    let other_ring = topology(2, &["shard-1", "shard-2"]);
    let err = shard.check_drop(1, &incoming(other_ring.clone(), "shard-2")).await.unwrap_err();
    assert!(err.to_string().starts_with("after:"), "{err}");
    let err = shard.check_drop(1, &incoming(after(), "shard-9")).await.unwrap_err();
    assert!(err.to_string().starts_with("source:"), "{err}");
    // The migration's epoch installs only as its ring.
    assert_eq!(code(shard.check_install(&other_ring).await.unwrap_err()), tonic::Code::FailedPrecondition);
    shard.check_install(&after()).await.unwrap();
    shard.install_topology(after()).await.unwrap();
    // Switched: nothing more is ingested, and the copies are this shard's.
    let err = shard.migrate_ingest(to(1), Vec::new()).await.unwrap_err();
    assert!(err.to_string().contains("already switched"), "{err}");
    shard.check_drop(1, &DropMode::Unowned).await.unwrap();
}

#[tokio::test]
async fn test_a_source_installs_the_new_ring_only_once_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path()).await;
    let target = topology(2, &["shard-1", "shard-2", "shard-3", "shard-4"]);
    shard.migrate_begin(1, target.clone(), false).await.unwrap();
    let code = |e: Error| e.to_status("shard-1").code();
    assert_eq!(code(shard.check_install(&target).await.unwrap_err()), tonic::Code::FailedPrecondition);
    assert_eq!(code(shard.check_drop(2, &DropMode::Unowned).await.unwrap_err()), tonic::Code::FailedPrecondition);
    // A source receives nothing in its own migration.
    assert_eq!(code(shard.migrate_receive(1, target.clone()).await.unwrap_err()), tonic::Code::FailedPrecondition);
    shard.migrate_begin(1, target.clone(), true).await.unwrap();
    shard.check_install(&target).await.unwrap();
    shard.check_drop(1, &DropMode::Unowned).await.unwrap();
}

#[tokio::test]
async fn test_stats_say_raft_stopped_once_it_did() {
    use omnishard_proto::v1::shard_service_client::ShardServiceClient;
    use omnishard_proto::v1::ShardStatsRequest;
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(omnishard_shard::serve_shard(shard.clone(), listener, async {
        let _ = stopped.await;
    }));
    let mut client = loop {
        match ShardServiceClient::connect(url.clone()).await {
            Ok(client) => break client,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    };
    assert_eq!(client.stats(ShardStatsRequest {}).await.unwrap().into_inner().shard_id, "shard-1");
    assert_eq!(shard.replication.stopped(), None);
    shard.replication.shutdown().await;
    let reason = shard.replication.stopped().expect("a stopped Raft is reported");
    let status = client.stats(ShardStatsRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), format!("raft stopped: {reason}"));
    let _ = stop.send(());
    let _ = server.await;
}
