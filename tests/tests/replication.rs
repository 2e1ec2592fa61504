//! Replication on real processes: 3 shards × 3 replicas on loopback, each
//! replica its own `omnishard shard` process, the gateway in front.
//!
//! * SIGKILL of a leader, of a follower, and of two leaders in a row while
//!   writers run: writes resume within 10 s and every acknowledged write is
//!   on every replica with its final value once the killed ones are back.
//! * A wiped replica catches up by snapshot; searches and traversals then
//!   answer the same whichever replica leads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use omnishard_common::placement::Ring;
use omnishard_proto::v1::shard_service_client::ShardServiceClient;
use omnishard_proto::v1::ShardReadRequest;
use omnishard_tests::Cluster;

const SHARDS: usize = 3;
const REPLICAS: usize = 3;

/// Acknowledged writes: key → (last acknowledged value, its version).
type Acked = Arc<Mutex<HashMap<String, (String, u64)>>>;

/// Writers that put keys in a loop, recording what was acknowledged and
/// the longest time between two successful writes.
struct Writers {
    acked: Acked,
    stop: Arc<std::sync::atomic::AtomicBool>,
    longest_gap: Arc<Mutex<Duration>>,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
}

impl Writers {
    async fn start(cluster: &Cluster, count: usize) -> Writers {
        let acked: Acked = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let longest_gap = Arc::new(Mutex::new(Duration::ZERO));
        let last_success = Arc::new(Mutex::new(Instant::now()));
        let mut tasks = Vec::new();
        for w in 0..count {
            let client = cluster.client().await.unwrap();
            let (acked, stop, longest_gap, last_success) =
                (acked.clone(), stop.clone(), longest_gap.clone(), last_success.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let key = format!("w{w}-k{}", n % 40);
                    let value = format!("w{w}-v{n}");
                    if let Ok(written) = client.put(key.as_bytes(), value.as_bytes(), Default::default()).await {
                        acked.lock().unwrap().insert(key, (value, written.version));
                        let now = Instant::now();
                        let mut last = last_success.lock().unwrap();
                        let gap = now - *last;
                        *last = now;
                        let mut longest = longest_gap.lock().unwrap();
                        *longest = (*longest).max(gap);
                    }
                }
                n
            }));
        }
        Writers { acked, stop, longest_gap, tasks }
    }

    /// Stops the writers; returns the acknowledged writes and the longest gap.
    async fn finish(self) -> (HashMap<String, (String, u64)>, Duration) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        let gap = *self.longest_gap.lock().unwrap();
        (acked, gap)
    }
}

/// Waits until every replica of every shard applied as far as its leader.
async fn wait_caught_up(cluster: &Cluster) {
    for shard in 0..SHARDS {
        wait_caught_up_group(cluster, shard, REPLICAS).await;
    }
}

/// Waits until the `replicas` replicas of `shard` applied as far as its leader.
async fn wait_caught_up_group(cluster: &Cluster, shard: usize, replicas: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let leader = cluster.leader_of(shard).await.unwrap();
        let target = cluster.raft_status(shard, leader).await.unwrap().applied_index;
        let mut behind = false;
        for replica in 0..replicas {
            let applied = cluster.raft_status(shard, replica).await.map(|s| s.applied_index).unwrap_or(0);
            behind |= applied < target;
        }
        if !behind {
            return;
        }
        assert!(Instant::now() < deadline, "shard {shard} replicas did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks that every acknowledged write is on every replica with its final value.
async fn assert_on_every_replica(cluster: &Cluster, acked: &HashMap<String, (String, u64)>) {
    let ring = Ring::new(1, 256, &cluster.shard_ids()).unwrap();
    let mut by_shard: Vec<Vec<&String>> = vec![Vec::new(); SHARDS];
    for key in acked.keys() {
        by_shard[ring.owner_index("default", key.as_bytes())].push(key);
    }
    for (shard, keys) in by_shard.iter().enumerate() {
        for replica in 0..REPLICAS {
            let mut client = ShardServiceClient::connect(cluster.replica_url(shard, replica)).await.unwrap();
            let mut request = tonic::Request::new(ShardReadRequest {
                epoch: 1,
                namespace: "default".into(),
                keys: keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
            });
            request.metadata_mut().insert("x-omnishard-read", "follower".parse().unwrap());
            let values = client.read(request).await.unwrap().into_inner().values;
            for (key, found) in keys.iter().zip(values) {
                let (value, version) = &acked[*key];
                assert!(found.found, "{key} missing on shard {shard} replica {replica}");
                assert_eq!(
                    (String::from_utf8_lossy(&found.value).as_ref(), found.version),
                    (value.as_str(), *version),
                    "{key} on shard {shard} replica {replica}"
                );
            }
        }
    }
}

async fn replicated() -> Cluster {
    Cluster::builder().shards(SHARDS).replicas(REPLICAS).start().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_leader_and_follower_kills_lose_no_acknowledged_write() {
    let mut cluster = replicated().await;
    let writers = Writers::start(&cluster, 6).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Shard 0: two leaders killed in a row.
    let first = cluster.leader_of(0).await.unwrap();
    cluster.kill_replica(0, first).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = cluster.leader_of(0).await.unwrap();
    assert_ne!(first, second);
    cluster.kill_replica(0, second).await.unwrap();
    // One of three left: no quorum until one comes back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.restart_replica(0, first).await.unwrap();
    // Shard 1: its leader. Shard 2: a follower.
    let leader1 = cluster.leader_of(1).await.unwrap();
    cluster.kill_replica(1, leader1).await.unwrap();
    let leader2 = cluster.leader_of(2).await.unwrap();
    let follower2 = (leader2 + 1) % REPLICAS;
    cluster.kill_replica(2, follower2).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (acked, longest_gap) = writers.finish().await;
    assert!(acked.len() > 100, "only {} keys acknowledged", acked.len());
    assert!(longest_gap < Duration::from_secs(10), "writes stalled for {longest_gap:?}");

    cluster.restart_replica(0, second).await.unwrap();
    cluster.restart_replica(1, leader1).await.unwrap();
    cluster.restart_replica(2, follower2).await.unwrap();
    wait_caught_up(&cluster).await;
    assert_on_every_replica(&cluster, &acked).await;

    // And the gateway reads the final values (linearizable reads on the leaders).
    let client = cluster.client().await.unwrap();
    for (key, (value, _)) in acked.iter().take(50) {
        assert_eq!(client.get(key.as_bytes()).await.unwrap().value, value.as_bytes(), "{key}");
    }
}

mod catch_up {
    use omnishard_proto::v1::*;
    use omnishard_tests::Cluster;

    const INDEX: &str = "notes";
    const WORDS: [&str; 8] = ["raft", "log", "snapshot", "leader", "quorum", "replica", "term", "vote"];

    /// Search and traversal answers, as the gateway gives them.
    async fn answers(cluster: &Cluster) -> (Vec<(String, String)>, Vec<(String, u32)>) {
        let client = cluster.client().await.unwrap();
        let mut search = client.search();
        search.refresh(RefreshRequest { index: INDEX.into(), ..Default::default() }).await.unwrap();
        let mut hits = Vec::new();
        for query in ["raft", "leader quorum", "\"term vote\"", "snapshot -log"] {
            let req = SearchRequest { index: INDEX.into(), query: query.into(), size: 20, ..Default::default() };
            let resp = search.search(req).await.unwrap().into_inner();
            hits.extend(resp.hits.into_iter().map(|h| (h.id, format!("{:.5}", h.score))));
        }
        let req = TraverseRequest {
            graph: "g".into(),
            start: vec!["v0".into()],
            direction: Direction::Out as i32,
            max_depth: 4,
            ..Default::default()
        };
        let reached = client.graph().traverse(req).await.unwrap().into_inner().reached;
        let reached = reached.into_iter().map(|r| (r.vertex.unwrap().id, r.depth)).collect();
        (hits, reached)
    }

    async fn load(cluster: &Cluster, from: usize, to: usize) {
        let client = cluster.client().await.unwrap();
        let documents = (from..to)
            .map(|i| {
                let text = format!("{} {} {}", WORDS[i % 8], WORDS[(i * 3) % 8], WORDS[(i * 5 + 1) % 8]);
                Document { id: format!("d{i}"), json: format!(r#"{{"body":"{text}"}}"#), version: 0 }
            })
            .collect();
        let req = IndexDocumentsRequest { index: INDEX.into(), documents, ..Default::default() };
        client.search().index_documents(req).await.unwrap();
        let vertices =
            (from..to).map(|i| VertexWrite { id: format!("v{i}"), label: "n".into(), ..Default::default() }).collect();
        let mut graph = client.graph();
        graph.write_vertices(WriteVerticesRequest { graph: "g".into(), vertices, ..Default::default() }).await.unwrap();
        let edges = (from..to)
            .flat_map(|i| [(i, (i * 7 + 3) % to), (i, (i + 1) % to)])
            .map(|(f, t)| EdgeWrite {
                from: format!("v{f}"),
                to: format!("v{t}"),
                label: "next".into(),
                weight: 1.0,
                ..Default::default()
            })
            .collect();
        graph.write_edges(WriteEdgesRequest { graph: "g".into(), edges, ..Default::default() }).await.unwrap();
        // Many small entries, so the leader snapshots and purges its log.
        for i in from..to {
            client.put(format!("key{i}").as_bytes(), b"x", Default::default()).await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn test_wiped_replica_catches_up_by_snapshot_and_answers_the_same() {
        let toml = "[raft]\nsnapshot_logs = 20\nlogs_to_keep = 5\n";
        let mut cluster = Cluster::builder().shards(1).replicas(3).shard_toml(toml).start().await.unwrap();
        let client = cluster.client().await.unwrap();
        let fields = vec![FieldSpec { name: "body".into(), r#type: FieldType::Text as i32, analyzer: String::new() }];
        let req = CreateIndexRequest { index: INDEX.into(), fields, ..Default::default() };
        client.search().create_index(req).await.unwrap();
        load(&cluster, 0, 60).await;

        let leader = cluster.leader_of(0).await.unwrap();
        let wiped = (leader + 1) % 3;
        cluster.kill_replica(0, wiped).await.unwrap();
        cluster.wipe_replica(0, wiped).unwrap();
        load(&cluster, 60, 150).await;
        let leader_status = cluster.raft_status(0, leader).await.unwrap();
        assert!(leader_status.snapshot_index > 0, "the leader snapshotted: {leader_status:?}");

        cluster.restart_replica(0, wiped).await.unwrap();
        super::wait_caught_up_group(&cluster, 0, 3).await;
        let caught_up = cluster.raft_status(0, wiped).await.unwrap();
        assert!(caught_up.snapshot_index > 0, "caught up by snapshot: {caught_up:?}");
        assert!(caught_up.seq >= leader_status.seq, "{caught_up:?} vs {leader_status:?}");

        // The same answers whichever replica leads (and serves the reads).
        let expected = answers(&cluster).await;
        assert!(!expected.0.is_empty() && expected.1.len() > 10, "{expected:?}");
        for replica in [wiped, (wiped + 1) % 3, (wiped + 2) % 3] {
            cluster.transfer_leader(0, replica).await.unwrap();
            assert_eq!(cluster.leader_of(0).await.unwrap(), replica);
            assert_eq!(answers(&cluster).await, expected, "answers with replica {replica} leading");
        }
    }
}

/// A linearizability checker for registers (Wing & Gong's search with
/// memoization, as in Lowe's and Knossos' checkers), and a history recorded
/// on the cluster while leaders are killed.
mod linearizable {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    use omnishard_tests::Cluster;

    /// One operation on a register. `ret` is `None` when the outcome is
    /// unknown (the call failed: a write may or may not have taken effect).
    #[derive(Debug, Clone)]
    pub struct Call {
        pub write: bool,
        /// Written value, or the value read (`None` = absent).
        pub value: Option<String>,
        pub call: Instant,
        pub ret: Option<Instant>,
    }

    /// Whether some order of the calls, consistent with real time, is a legal
    /// sequential history of a register starting absent. Failed reads are
    /// dropped; failed writes may take effect at any point after their call,
    /// or never.
    pub fn check(history: &[Call]) -> bool {
        let calls: Vec<&Call> = history.iter().filter(|c| c.write || c.ret.is_some()).collect();
        assert!(calls.len() <= 128, "the checker handles at most 128 calls per register");
        let mut seen = HashSet::new();
        search(&calls, 0, None, &mut seen)
    }

    fn search(calls: &[&Call], done: u128, state: Option<String>, seen: &mut HashSet<(u128, Option<String>)>) -> bool {
        // Finished when every call with a known outcome is placed.
        if calls.iter().enumerate().all(|(i, c)| done & (1 << i) != 0 || c.ret.is_none()) {
            return true;
        }
        if !seen.insert((done, state.clone())) {
            return false;
        }
        // A call may go next only if it began before every pending call ended.
        let horizon = calls
            .iter()
            .enumerate()
            .filter(|(i, c)| done & (1 << i) == 0 && c.ret.is_some())
            .filter_map(|(_, c)| c.ret)
            .min();
        for (i, c) in calls.iter().enumerate() {
            if done & (1 << i) != 0 || horizon.is_some_and(|h| c.call > h) {
                continue;
            }
            let next = if c.write {
                c.value.clone()
            } else if c.value == state {
                state.clone()
            } else {
                continue;
            };
            if search(calls, done | (1 << i), next, seen) {
                return true;
            }
        }
        false
    }

    #[test]
    fn test_checker_accepts_linearizable_and_rejects_stale_reads() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let w = |v: &str, a, b| Call { write: true, value: Some(v.into()), call: at(a), ret: Some(at(b)) };
        let r = |v: Option<&str>, a, b| Call { write: false, value: v.map(Into::into), call: at(a), ret: Some(at(b)) };
        // Overlapping write and read may see either value.
        assert!(check(&[w("a", 0, 10), r(Some("a"), 5, 8), r(None, 1, 3)]));
        // A read after a completed write must not see the old value.
        assert!(!check(&[w("a", 0, 10), r(None, 20, 30)]));
        // Stale read: b overwrote a before the read began.
        assert!(!check(&[w("a", 0, 10), w("b", 11, 20), r(Some("a"), 25, 30)]));
        // A failed write may have happened...
        let lost = Call { write: true, value: Some("x".into()), call: at(0), ret: None };
        assert!(check(&[lost.clone(), r(Some("x"), 50, 60)]));
        // ...or not, but not both ways.
        assert!(check(&[lost.clone(), r(None, 50, 60)]));
        assert!(!check(&[lost, r(Some("x"), 50, 60), r(None, 70, 80)]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn test_history_during_leader_kills_is_linearizable() {
        const KEYS: usize = 3;
        let mut cluster = Cluster::builder().shards(super::SHARDS).replicas(super::REPLICAS).start().await.unwrap();
        let history = std::sync::Arc::new(std::sync::Mutex::new(vec![Vec::<Call>::new(); KEYS]));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut clients = Vec::new();
        for c in 0..4 {
            let client = cluster.client().await.unwrap();
            let (history, stop) = (history.clone(), stop.clone());
            clients.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let key = (n * 7 + c) % KEYS;
                    let write = (n + c) % 3 == 0;
                    let name = format!("reg{key}");
                    let value = format!("c{c}-{n}");
                    let call = Instant::now();
                    let (value, ok) = if write {
                        let done = client.put(name.as_bytes(), value.as_bytes(), Default::default()).await;
                        (Some(value), done.is_ok())
                    } else {
                        match client.get(name.as_bytes()).await {
                            Ok(kv) => (Some(String::from_utf8_lossy(&kv.value).into_owned()), true),
                            Err(e) if e.code() == tonic::Code::NotFound => (None, true),
                            Err(_) => (None, false),
                        }
                    };
                    let ret = ok.then(Instant::now);
                    history.lock().unwrap()[key].push(Call { write, value, call, ret });
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            }));
        }
        // Kill each shard's leader in turn while the clients run.
        for shard in 0..super::SHARDS {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let leader = cluster.leader_of(shard).await.unwrap();
            cluster.kill_replica(shard, leader).await.unwrap();
            tokio::time::sleep(Duration::from_millis(400)).await;
            cluster.restart_replica(shard, leader).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for client in clients {
            client.await.unwrap();
        }
        let history = history.lock().unwrap().clone();
        for (key, calls) in history.iter().enumerate() {
            // Keep the checker's input bounded: the first 120 calls of each register.
            let calls = &calls[..calls.len().min(120)];
            assert!(calls.len() >= 20, "register {key}: only {} calls recorded", calls.len());
            assert!(check(calls), "register {key}: history is not linearizable: {calls:#?}");
        }
    }
}

mod partition {
    use std::time::Duration;

    use omnishard_proto::v1::shard_service_client::ShardServiceClient;
    use omnishard_proto::v1::{shard_op, ShardApplyRequest, ShardOp, ShardPut, ShardTxn};
    use omnishard_tests::Cluster;

    /// A put sent straight to replica `replica` (not through the gateway).
    async fn put_direct(cluster: &Cluster, replica: usize, key: &str) -> Result<(), tonic::Status> {
        let mut client = ShardServiceClient::connect(cluster.replica_url(0, replica))
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let put =
            ShardPut { key: key.as_bytes().to_vec(), value: b"from the old leader".to_vec(), ..Default::default() };
        let txn = ShardTxn { namespace: "default".into(), ops: vec![ShardOp { op: Some(shard_op::Op::Put(put)) }] };
        let mut request = tonic::Request::new(ShardApplyRequest { epoch: 1, txns: vec![txn] });
        request.set_timeout(Duration::from_secs(3));
        let outcome = client.apply(request).await?.into_inner();
        match outcome.outcomes.first() {
            Some(o) if o.code == 0 => Ok(()),
            Some(o) => Err(tonic::Status::new(tonic::Code::from(o.code), o.message.clone())),
            None => Err(tonic::Status::internal("no outcome")),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn test_partitioned_old_leader_cannot_acknowledge_writes() {
        let cluster = Cluster::builder().shards(1).replicas(3).partitionable().start().await.unwrap();
        let client = cluster.client().await.unwrap();
        client.put(b"k", b"v1", Default::default()).await.unwrap();
        let old = cluster.leader_of(0).await.unwrap();
        put_direct(&cluster, old, "before").await.expect("the leader takes writes before the partition");

        cluster.partition_replica(0, old);
        // Cut off from both followers, the old leader cannot commit anything.
        let err = put_direct(&cluster, old, "lost").await.expect_err("a partitioned leader acknowledged a write");
        assert!(
            matches!(err.code(), tonic::Code::DeadlineExceeded | tonic::Code::Unavailable | tonic::Code::Cancelled),
            "{err}"
        );
        // The majority side elects a leader and the gateway writes through it.
        client.put(b"k", b"v2", Default::default()).await.unwrap();
        let new = cluster.leader_of_excluding(0, old).await.unwrap();
        assert_ne!(new, old);

        cluster.heal(0);
        super::wait_caught_up_group(&cluster, 0, 3).await;
        assert_eq!(client.get(b"k").await.unwrap().value, b"v2");
        // The write the old leader took during the partition never happened.
        assert_eq!(client.get(b"lost").await.unwrap_err().code(), tonic::Code::NotFound);
        assert_eq!(client.get(b"before").await.unwrap().value, b"from the old leader");
    }
}

/// Follower reads through the gateway: any replica answers once it applied
/// the caller's `min_seq`, without the leader's quorum round.
mod follower_reads {
    use omnishard_client::ReadMode;
    use omnishard_common::read_mode::READ_HEADER;
    use omnishard_proto::v1::kv_service_client::KvServiceClient;
    use omnishard_proto::v1::GetRequest;
    use omnishard_tests::Cluster;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn test_follower_reads_read_your_writes_and_outlive_the_quorum() {
        let mut cluster = Cluster::builder().shards(1).replicas(3).start().await.unwrap();
        let client = cluster.client().await.unwrap();
        // Each read goes to the next replica in turn, so followers serve most
        // of them; min_seq makes each see the write just acknowledged.
        for i in 0..30 {
            let key = format!("ryw{i}");
            let written = client.put(key.as_bytes(), format!("v{i}").as_bytes(), Default::default()).await.unwrap();
            let read = client.get_with(key.as_bytes(), ReadMode::Follower { min_seq: written.version }).await.unwrap();
            assert_eq!((read.value.as_slice(), read.version), (format!("v{i}").as_bytes(), written.version), "{key}");
        }

        // A header the gateway does not understand is refused, naming it.
        let mut kv = KvServiceClient::connect(cluster.gateway_url().to_string()).await.unwrap();
        let mut request = tonic::Request::new(GetRequest { namespace: "default".into(), key: b"ryw0".to_vec() });
        request.metadata_mut().insert(READ_HEADER, "nearest".parse().unwrap());
        let status = kv.get(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains(READ_HEADER), "{status:?}");

        // With two of three replicas gone there is no quorum, so no
        // linearizable read can be served; the survivor still answers
        // follower reads from what it applied.
        let leader = cluster.leader_of(0).await.unwrap();
        let survivor = (leader + 1) % 3;
        for replica in (0..3).filter(|&r| r != survivor) {
            cluster.kill_replica(0, replica).await.unwrap();
        }
        for i in 0..30 {
            let key = format!("ryw{i}");
            let read = client.get_with(key.as_bytes(), ReadMode::Follower { min_seq: 0 }).await.unwrap();
            assert_eq!(read.value, format!("v{i}").as_bytes(), "{key} from the surviving follower");
        }
    }
}

/// Membership changes the gateway's topology does not know about.
mod membership {
    use omnishard_tests::Cluster;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn test_gateway_follows_a_leader_added_online() {
        let mut cluster = Cluster::builder().shards(1).replicas(3).start().await.unwrap();
        let client = cluster.client().await.unwrap();
        client.put(b"before", b"1", Default::default()).await.unwrap();

        // A fourth replica joins, takes the lead, and the first three leave
        // one by one: the gateway only ever knew the first three addresses.
        let added = cluster.add_replica(0).await.unwrap();
        cluster.transfer_leader(0, added).await.unwrap();
        assert_eq!(cluster.leader_of(0).await.unwrap(), added);
        client.put(b"after-transfer", b"2", Default::default()).await.unwrap();
        assert_eq!(client.get(b"before").await.unwrap().value, b"1");

        cluster.remove_replica(0, 0).await.unwrap();
        cluster.kill_replica(0, 0).await.unwrap();
        client.put(b"after-removal", b"3", Default::default()).await.unwrap();
        for (key, value) in [(&b"before"[..], &b"1"[..]), (b"after-transfer", b"2"), (b"after-removal", b"3")] {
            assert_eq!(client.get(key).await.unwrap().value, value, "{}", String::from_utf8_lossy(key));
        }
        let status = cluster.raft_status(0, added).await.unwrap();
        assert_eq!(status.role, "leader");
        assert_eq!(status.members.len(), 3, "{status:?}");
    }
}

/// Raft's own calls between replicas are counted, not traced.
mod telemetry {
    use omnishard_proto::v1::shard_raft_service_client::ShardRaftServiceClient;
    use omnishard_proto::v1::shard_service_client::ShardServiceClient;
    use omnishard_proto::v1::{RaftMessage, ShardStatsRequest};
    use omnishard_tests::Cluster;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn test_replication_calls_have_metrics_but_no_spans() {
        let cluster = Cluster::builder().shards(1).replicas(3).start().await.unwrap();
        let client = cluster.client().await.unwrap();
        client.put(b"k", b"v", Default::default()).await.unwrap();

        let mut shard = ShardServiceClient::connect(cluster.replica_url(0, 1)).await.unwrap();
        let stats = shard.stats(ShardStatsRequest {}).await.unwrap();
        assert!(stats.metadata().get("x-trace-id").is_some(), "client-facing calls are traced");
        let mut raft = ShardRaftServiceClient::connect(cluster.replica_url(0, 1)).await.unwrap();
        let refused = raft.append_entries(RaftMessage { data: b"not postcard".to_vec() }).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        assert!(refused.metadata().get("x-trace-id").is_none(), "replication calls are not traced: {refused:?}");

        let metrics_addr = stats.into_inner().metrics_addr;
        let text = reqwest::get(format!("http://{metrics_addr}/metrics")).await.unwrap().text().await.unwrap();
        let appends = text
            .lines()
            .find(|l| l.contains("method=\"AppendEntries\"") && l.contains("code=\"ok\"") && !l.starts_with('#'))
            .unwrap_or_else(|| panic!("no AppendEntries counter in:\n{text}"));
        let count: f64 = appends.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(count >= 1.0, "{appends}");
    }
}
