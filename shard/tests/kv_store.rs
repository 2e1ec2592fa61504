//! The shard's KV semantics against a real RocksDB in a temp folder:
//! versions, compare-and-set, TTL, limits, atomic transactions, ownership.

use std::sync::Arc;

use omnishard_common::topology::{ShardAddr, Topology};
use omnishard_shard::apply::{Op, Txn};
use omnishard_shard::{Error, Shard, ShardConfig};

fn topology(epoch: u64, n: usize) -> Topology {
    Topology {
        epoch,
        vnodes: 256,
        shards: (1..=n).map(|i| ShardAddr::new(format!("shard-{i}"), format!("127.0.0.1:{}", 1000 + i))).collect(),
    }
}

/// A single-shard ring, so every key belongs to the shard under test.
async fn open(dir: &std::path::Path) -> Arc<Shard> {
    let config = ShardConfig { id: "shard-1".into(), data_dir: dir.to_path_buf(), ..Default::default() };
    let shard = Shard::open(config).await.unwrap();
    shard.replication.bootstrap("127.0.0.1:1").await.unwrap();
    shard.install_topology(topology(1, 1)).await.unwrap();
    shard
}

fn put(key: &str, value: &str, expected: Option<u64>) -> Op {
    Op::Put { key: key.into(), value: value.into(), expires_at_ms: 0, expected_version: expected }
}

fn txn(ops: Vec<Op>) -> Vec<Txn> {
    vec![Txn { namespace: "default".into(), ops }]
}

async fn apply_one(shard: &Arc<Shard>, ops: Vec<Op>) -> Result<u64, Error> {
    let mut results = shard.apply(1, txn(ops)).await?;
    results.remove(0).map(|c| c.seq)
}

async fn get(shard: &Arc<Shard>, key: &str) -> Option<(Vec<u8>, u64)> {
    let mut values = shard.read(1, "default", vec![key.into()]).await.unwrap();
    values.remove(0).map(|e| (e.value, e.version))
}

#[tokio::test]
async fn test_versions_increase_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path()).await;
    let v1 = apply_one(&shard, vec![put("a", "1", None)]).await.unwrap();
    let v2 = apply_one(&shard, vec![put("a", "2", None)]).await.unwrap();
    assert!(v2 > v1);
    assert_eq!(get(&shard, "a").await, Some((b"2".to_vec(), v2)));
    shard.shutdown().await;
    drop(shard);
    // Give the Raft tasks a moment to release the database lock.
    let shard = loop {
        let config = ShardConfig { id: "shard-1".into(), data_dir: dir.path().to_path_buf(), ..Default::default() };
        match Shard::open(config).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    };
    shard.replication.bootstrap("127.0.0.1:1").await.unwrap();
    assert_eq!(shard.stats().await.unwrap().epoch, 1, "installed topology is persisted");
    assert_eq!(get(&shard, "a").await, Some((b"2".to_vec(), v2)));
    let v3 = apply_one(&shard, vec![put("b", "x", None)]).await.unwrap();
    assert!(v3 > v2, "sequence continues after reopen");
}

#[tokio::test]
async fn test_compare_and_set() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path()).await;
    let v1 = apply_one(&shard, vec![put("k", "a", Some(0))]).await.unwrap();
    let err = apply_one(&shard, vec![put("k", "b", Some(0))]).await.unwrap_err();
    assert!(matches!(err, Error::VersionConflict { expected: 0, actual, .. } if actual == v1), "{err}");
    assert_eq!(err.to_status("shard-1").code(), tonic::Code::FailedPrecondition);
    let err = apply_one(&shard, vec![put("k", "b", Some(v1 + 100))]).await.unwrap_err();
    assert!(matches!(err, Error::VersionConflict { .. }));
    let v2 = apply_one(&shard, vec![put("k", "b", Some(v1))]).await.unwrap();
    assert_eq!(get(&shard, "k").await, Some((b"b".to_vec(), v2)));
    // Delete at a stale version fails; at the current one succeeds.
    assert!(apply_one(&shard, vec![Op::Delete { key: "k".into(), expected_version: Some(v1) }]).await.is_err());
    apply_one(&shard, vec![Op::Delete { key: "k".into(), expected_version: Some(v2) }]).await.unwrap();
    assert_eq!(get(&shard, "k").await, None);
}

#[tokio::test]
async fn test_transaction_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path()).await;
    apply_one(&shard, vec![put("x", "old", None)]).await.unwrap();
    // The second op conflicts: the first must not be applied either.
    let err = apply_one(&shard, vec![put("y", "new", None), put("x", "new", Some(0))]).await.unwrap_err();
    assert!(matches!(err, Error::VersionConflict { .. }));
    assert_eq!(get(&shard, "y").await, None);
    assert_eq!(get(&shard, "x").await.unwrap().0, b"old");
    // Later ops of a transaction see its earlier ops.
    let seq = apply_one(
        &shard,
        vec![
            put("z", "1", Some(0)),
            put("z", "2", None),
            Op::Delete { key: "z".into(), expected_version: None },
            put("z", "3", Some(0)),
        ],
    )
    .await
    .unwrap();
    assert_eq!(get(&shard, "z").await, Some((b"3".to_vec(), seq)));
}

#[tokio::test]
async fn test_independent_transactions_in_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path()).await;
    let txns = vec![
        Txn { namespace: "default".into(), ops: vec![put("p", "1", Some(0))] },
        Txn { namespace: "default".into(), ops: vec![put("p", "2", Some(0))] },
        Txn { namespace: "other".into(), ops: vec![put("p", "3", Some(0))] },
    ];
    let results = shard.apply(1, txns).await.unwrap();
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(Error::VersionConflict { .. })), "sees the earlier txn of the same group");
    assert!(results[2].is_ok(), "namespaces are separate key spaces");
    assert_eq!(get(&shard, "p").await.unwrap().0, b"1");
}

#[tokio::test]
async fn test_ttl_hides_then_compaction_drops() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path()).await;
    let now = omnishard_shard::codec::now_ms();
    let expired = Op::Put { key: "gone".into(), value: "v".into(), expires_at_ms: now + 50, expected_version: None };
    let lasting =
        Op::Put { key: "kept".into(), value: "v".into(), expires_at_ms: now + 3_600_000, expected_version: None };
    apply_one(&shard, vec![expired, lasting]).await.unwrap();
    assert!(get(&shard, "gone").await.is_some());
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    assert_eq!(get(&shard, "gone").await, None, "expired keys are invisible at once");
    let (entries, _) = shard.scan(1, "default", vec![], vec![], 100).await.unwrap();
    assert_eq!(entries.iter().map(|e| e.key.as_slice()).collect::<Vec<_>>(), vec![b"kept".as_slice()]);
    // CAS treats an expired key as absent.
    apply_one(&shard, vec![put("gone", "again", Some(0))]).await.unwrap();
    apply_one(
        &shard,
        vec![Op::Put { key: "gone2".into(), value: "v".into(), expires_at_ms: now + 1, expected_version: None }],
    )
    .await
    .unwrap();
    shard.store().db().flush().unwrap();
    shard.store().compact().unwrap();
    assert_eq!(shard.store().count_raw_entries().unwrap(), 2, "the compaction filter removed the expired entry");
}

#[tokio::test]
async fn test_limits_are_enforced_by_the_shard() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path()).await;
    let results = shard
        .apply(1, txn(vec![Op::Put { key: vec![b'k'; 4097], value: vec![], expires_at_ms: 0, expected_version: None }]))
        .await
        .unwrap();
    let err = results.into_iter().next().unwrap().unwrap_err();
    assert_eq!(err.to_status("shard-1").code(), tonic::Code::InvalidArgument);
    assert!(err.to_string().contains("max_key_bytes"), "{err}");
    let big = Op::Put { key: "v".into(), value: vec![0; (4 << 20) + 1], expires_at_ms: 0, expected_version: None };
    let err = shard.apply(1, txn(vec![big])).await.unwrap().remove(0).unwrap_err();
    assert!(err.to_string().contains("max_value_bytes"), "{err}");
    let many: Vec<Op> = (0..10_001).map(|i| put(&format!("k{i}"), "", None)).collect();
    let err = shard.apply(1, txn(many)).await.unwrap().remove(0).unwrap_err();
    assert!(err.to_string().contains("max_batch_ops"), "{err}");
    assert!(shard.read(1, "default", vec![vec![]]).await.is_err(), "empty key");
    assert!(shard.read(1, "Bad NS", vec![b"k".to_vec()]).await.is_err(), "bad namespace");
    assert!(shard.scan(1, "default", vec![], vec![], 10_001).await.is_err(), "page too large");
}

#[tokio::test]
async fn test_misrouted_requests_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let config = ShardConfig { id: "shard-1".into(), data_dir: dir.path().to_path_buf(), ..Default::default() };
    let shard = Shard::open(config).await.unwrap();
    shard.replication.bootstrap("127.0.0.1:1").await.unwrap();
    // Before any topology: everything is a wrong-epoch rejection.
    let status = shard.read(1, "default", vec![b"k".to_vec()]).await.unwrap_err().to_status("shard-1");
    assert_eq!(omnishard_common::rejection::Rejection::kind_of(&status), Some(("wrong-epoch", 0)));
    shard.install_topology(topology(2, 3)).await.unwrap();
    // Older or conflicting topologies are refused; one without this shard too.
    assert!(shard.install_topology(topology(1, 3)).await.is_err());
    assert!(shard.install_topology(topology(2, 4)).await.is_err());
    let mut foreign = topology(3, 3);
    foreign.shards.retain(|s| s.id != "shard-1");
    assert!(shard.install_topology(foreign).await.is_err());
    // Keys of other shards are refused under the right epoch.
    let ring = topology(2, 3).ring().unwrap();
    let foreign_key =
        (0..).map(|i| format!("k{i}")).find(|k| ring.owner("default", k.as_bytes()) != "shard-1").unwrap();
    let own_key = (0..).map(|i| format!("k{i}")).find(|k| ring.owner("default", k.as_bytes()) == "shard-1").unwrap();
    let status = shard.read(2, "default", vec![foreign_key.into()]).await.unwrap_err().to_status("shard-1");
    assert_eq!(omnishard_common::rejection::Rejection::kind_of(&status).map(|k| k.0), Some("not-owner"));
    assert!(shard.read(2, "default", vec![own_key.clone().into()]).await.is_ok());
    let status = shard.read(1, "default", vec![own_key.into()]).await.unwrap_err().to_status("shard-1");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
}
