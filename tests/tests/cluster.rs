//! End-to-end: real shard and gateway processes on port 0.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use omnishard_client::{Client, Op, PutOptions};
use omnishard_tests::Cluster;
use tonic::Code;

const KEYS: usize = 10_000;

fn key(i: usize) -> Vec<u8> {
    format!("user:{i:05}").into_bytes()
}

/// Writes KEYS keys in batches; returns key → owning shard id.
async fn load(client: &Client, round: &str) -> HashMap<Vec<u8>, String> {
    let mut owners = HashMap::new();
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(500) {
        let ops: Vec<Op> = chunk
            .iter()
            .map(|&i| Op::Put {
                key: key(i),
                value: format!("{round}-{i}").into_bytes(),
                options: PutOptions::default(),
            })
            .collect();
        let results = client.write(ops).await.unwrap();
        for (&i, r) in chunk.iter().zip(results) {
            owners.insert(key(i), r.shard_id);
        }
    }
    owners
}

async fn read_all(client: &Client) -> Vec<Option<omnishard_client::KeyValue>> {
    let keys: Vec<Vec<u8>> = (0..KEYS).map(key).collect();
    let mut out = Vec::new();
    for chunk in keys.chunks(2000) {
        out.extend(client.batch_get(chunk).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_cluster_spreads_scans_and_survives_sigkill() {
    let mut cluster = Cluster::builder().shards(3).start().await.unwrap();
    let client = cluster.client().await.unwrap();

    // Write, overwrite half with newer values, read back.
    load(&client, "first").await;
    let owners = load(&client, "second").await;
    // Concurrent single-key puts: these go through the gateway's coalescing.
    let writers: Vec<_> = (0..32)
        .map(|w| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in (0..KEYS).step_by(2).skip(w).step_by(32) {
                    client.put(&key(i), format!("third-{i}").as_bytes(), PutOptions::default()).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let expected = |i: usize| if i.is_multiple_of(2) { format!("third-{i}") } else { format!("second-{i}") };
    for (i, kv) in read_all(&client).await.into_iter().enumerate() {
        assert_eq!(kv.unwrap().value, expected(i).into_bytes());
    }

    // Spread over all three shards, roughly evenly.
    let mut per_shard: BTreeMap<&str, usize> = BTreeMap::new();
    for shard in owners.values() {
        *per_shard.entry(shard.as_str()).or_default() += 1;
    }
    assert_eq!(per_shard.len(), 3, "{per_shard:?}");
    for (shard, n) in &per_shard {
        assert!(*n > KEYS / 5, "shard {shard} holds only {n} keys");
    }
    let info = client.cluster().await.unwrap();
    assert_eq!(info.epoch, 1);
    assert!(info.shards.iter().all(|s| s.health == "serving" && s.key_count > 0), "{info:?}");

    // Scan everything in key order with pagination.
    let mut scanned = Vec::new();
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let page = client.scan(b"user:", cursor.as_deref(), 777).await.unwrap();
        assert!(page.entries.len() <= 777);
        scanned.extend(page.entries.into_iter().map(|kv| kv.key));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let all: Vec<Vec<u8>> = (0..KEYS).map(key).collect();
    assert_eq!(scanned, all, "scan returns every key once, in order");

    // SIGKILL one shard: only its keys fail, with UNAVAILABLE naming it.
    let victim = cluster.shard_ids()[1].clone();
    cluster.kill_shard(1).await.unwrap();
    let (mut failed, mut served) = (0, 0);
    for i in (0..KEYS).step_by(17) {
        match client.get(&key(i)).await {
            Ok(kv) => {
                assert_ne!(owners[&key(i)], victim);
                assert_eq!(kv.value, expected(i).into_bytes());
                served += 1;
            }
            Err(e) => {
                assert_eq!(owners[&key(i)], victim, "a key of a live shard failed: {e}");
                assert_eq!(e.code(), Code::Unavailable, "{e}");
                assert!(e.to_string().contains(&victim), "error does not name the shard: {e}");
                failed += 1;
            }
        }
    }
    assert!(failed > 0 && served > 0, "failed={failed} served={served}");
    // Writes to live shards keep working too.
    let live_key = (0..KEYS).map(key).find(|k| owners[k] != victim).unwrap();
    client.put(&live_key, b"during-outage", PutOptions::default()).await.unwrap();
    let info = client.cluster().await.unwrap();
    let dead = info.shards.iter().find(|s| s.id == victim).unwrap();
    assert_eq!(dead.health, "unavailable");

    // Restart it: every key is back with its last acknowledged value.
    cluster.restart_shard(1).await.unwrap();
    let victim_key = (0..KEYS).map(key).find(|k| owners[k] == victim).unwrap();
    let mut attempts = 0;
    while client.get(&victim_key).await.is_err() {
        attempts += 1;
        assert!(attempts < 100, "shard did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, kv) in read_all(&client).await.into_iter().enumerate() {
        let kv = kv.unwrap_or_else(|| panic!("key {i} lost"));
        if key(i) == live_key {
            assert_eq!(kv.value, b"during-outage");
        } else {
            assert_eq!(kv.value, expected(i).into_bytes(), "key {i}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_kv_semantics_through_the_gateway() {
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let client = cluster.client().await.unwrap();

    // Versions and compare-and-set.
    let w1 = client.put(b"cas", b"1", PutOptions { expected_version: Some(0), ..Default::default() }).await.unwrap();
    assert!(w1.version > 0 && w1.seq >= w1.version);
    let err =
        client.put(b"cas", b"2", PutOptions { expected_version: Some(0), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("version conflict"), "{err}");
    let w2 = client
        .put(b"cas", b"2", PutOptions { expected_version: Some(w1.version), ..Default::default() })
        .await
        .unwrap();
    assert!(w2.version > w1.version);
    assert_eq!(client.delete(b"cas", Some(w1.version)).await.unwrap_err().code(), Code::FailedPrecondition);
    assert!(client.delete(b"cas", Some(w2.version)).await.unwrap());
    assert!(!client.delete(b"cas", None).await.unwrap());
    assert_eq!(client.get(b"cas").await.unwrap_err().code(), Code::NotFound);

    // TTL: visible, then gone.
    client.put(b"ttl", b"v", PutOptions { ttl: Some(Duration::from_millis(300)), ..Default::default() }).await.unwrap();
    assert!(client.get(b"ttl").await.unwrap().expires_at_ms > 0);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(client.get(b"ttl").await.unwrap_err().code(), Code::NotFound);

    // Namespaces never collide and scans stay inside one.
    let a = client.with_namespace("team-a");
    let b = client.with_namespace("team-b");
    a.put(b"same", b"from-a", PutOptions::default()).await.unwrap();
    b.put(b"same", b"from-b", PutOptions::default()).await.unwrap();
    assert_eq!(a.get(b"same").await.unwrap().value, b"from-a");
    assert_eq!(b.get(b"same").await.unwrap().value, b"from-b");
    let page = a.scan(b"", None, 100).await.unwrap();
    assert_eq!(page.entries.len(), 1);

    // Keys sharing a {tag} are one atomic unit: a conflict on one op
    // leaves every other op unapplied.
    client.put(b"{cart42}:total", b"10", PutOptions::default()).await.unwrap();
    let ops = vec![
        Op::Put { key: b"{cart42}:item1".to_vec(), value: b"apple".to_vec(), options: PutOptions::default() },
        Op::Put { key: b"{cart42}:item2".to_vec(), value: b"pear".to_vec(), options: PutOptions::default() },
        Op::Put {
            key: b"{cart42}:total".to_vec(),
            value: b"30".to_vec(),
            options: PutOptions { expected_version: Some(0), ..Default::default() },
        },
    ];
    assert_eq!(client.write(ops.clone()).await.unwrap_err().code(), Code::FailedPrecondition);
    assert_eq!(client.get(b"{cart42}:item1").await.unwrap_err().code(), Code::NotFound);
    let mut ok_ops = ops;
    ok_ops[2] = Op::Put { key: b"{cart42}:total".to_vec(), value: b"30".to_vec(), options: PutOptions::default() };
    let results = client.write(ok_ops).await.unwrap();
    assert!(results.iter().all(|r| r.shard_id == results[0].shard_id && r.seq == results[0].seq), "{results:?}");

    // Bad input: the right code and a message naming the field and limit.
    let cases: Vec<(Result<_, omnishard_client::Error>, &str)> = vec![
        (client.put(b"", b"v", PutOptions::default()).await, "key: must not be empty"),
        (client.put(&vec![b'k'; 4097], b"v", PutOptions::default()).await, "limits.max_key_bytes"),
        (client.put(b"big", &vec![0; (4 << 20) + 1], PutOptions::default()).await, "limits.max_value_bytes"),
        (client.with_namespace("Bad Namespace").put(b"k", b"v", PutOptions::default()).await, "namespace:"),
    ];
    for (result, needle) in cases {
        let err = result.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(err.to_string().contains(needle), "{err} should mention {needle}");
    }
    let too_many: Vec<Op> =
        (0..10_001).map(|i| Op::Delete { key: format!("k{i}").into_bytes(), expected_version: None }).collect();
    let err = client.write(too_many).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.to_string().contains("limits.max_batch_ops"), "{err}");
    assert_eq!(client.scan(b"", None, 10_001).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(client.scan(b"", Some(b"\x09bogus"), 10).await.unwrap_err().code(), Code::InvalidArgument);
    // Nothing of the refused writes was stored.
    assert_eq!(client.get(b"big").await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_uncoalesced_gateway_behaves_the_same() {
    let cluster = Cluster::builder().shards(2).gateway_toml("\n[gateway]\ncoalesce = false\n").start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let handles: Vec<_> = (0..64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let k = format!("c{i}");
                let w = client.put(k.as_bytes(), b"v", PutOptions::default()).await.unwrap();
                assert_eq!(client.get(k.as_bytes()).await.unwrap().version, w.version);
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(client.scan(b"c", None, 1000).await.unwrap().entries.len(), 64);
}

/// Keys sharing a tag, written as one batch again and again while the shard
/// is SIGKILLed: after restart every key holds the value of the same batch,
/// at least the last acknowledged one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_sigkill_mid_batch_exposes_all_or_nothing() {
    let mut cluster = Cluster::builder().shards(1).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let keys: Vec<Vec<u8>> = (0..1000).map(|i| format!("{{acct}}:{i:04}").into_bytes()).collect();
    let writer = {
        let client = client.clone();
        let keys = keys.clone();
        tokio::spawn(async move {
            let mut acked = 0u64;
            for round in 1u64.. {
                let ops = keys
                    .iter()
                    .map(|k| Op::Put {
                        key: k.clone(),
                        value: round.to_string().into_bytes(),
                        options: PutOptions::default(),
                    })
                    .collect();
                match client.write(ops).await {
                    Ok(_) => acked = round,
                    Err(_) => return acked,
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.kill_shard(0).await.unwrap();
    let acked = writer.await.unwrap();
    assert!(acked > 0, "no batch was acknowledged before the kill");
    cluster.restart_shard(0).await.unwrap();
    let values = loop {
        match client.batch_get(&keys).await {
            Ok(values) => break values,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let rounds: std::collections::BTreeSet<u64> =
        values.iter().map(|v| String::from_utf8(v.clone().unwrap().value).unwrap().parse().unwrap()).collect();
    assert_eq!(rounds.len(), 1, "a batch was half applied: {rounds:?}");
    let survived = *rounds.iter().next().unwrap();
    assert!(survived >= acked, "acknowledged batch {acked} lost; found {survived}");
}
