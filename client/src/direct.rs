//! Direct mode for key-value calls: the client caches the cluster's ring
//! and sends gets, batch gets and puts straight to the owning shard, saving
//! the gateway hop (as Redis Cluster and TiKV clients do). The ring comes
//! from the gateway's `Cluster` answer; when a shard refuses a call with its
//! typed rejection (`wrong-epoch` or `not-owner`, after a topology change),
//! the client fetches the ring again and retries; while a key's range is
//! fenced in the short step before it changes owner (`moving`), the client
//! backs off (5 ms doubling to 100 ms, for up to 10 s) and retries, as the
//! gateway does.
//!
//! Like the gateway, it coalesces: concurrent gets bound for one shard (from
//! every clone of the client) share one `Read` call and concurrent puts one
//! `Apply` call (each still its own transaction), with up to 4 calls of each
//! kind in flight per shard.
//!
//! Everything else (graph, search, files, scans, multi-shard writes) goes
//! through the gateway: [`DirectClient::gateway`].

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use omnishard_common::batching::Batching;
use omnishard_common::limits::Limits;
use omnishard_common::namespace;
use omnishard_common::placement::Ring;
use omnishard_common::rejection::Rejection;
use omnishard_proto::v1::shard_service_client::ShardServiceClient;
use omnishard_proto::v1::*;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint};

use crate::{Client, Error, PutOptions};

/// How often a call is retried after the ring was refreshed.
const MAX_REFRESHES: usize = 3;
/// Longest a call keeps retrying a fenced (moving) range.
const MOVING_BUDGET: Duration = Duration::from_secs(10);
/// Longest TTL, as the gateway allows.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Gets per coalesced `Read`, and such calls in flight per shard.
const MAX_BATCH: usize = 256;
const INFLIGHT: usize = 4;

/// The cached ring, a connection to every shard it names, and each shard's
/// queue of gets waiting to be coalesced (its batching task ends when the
/// routing is replaced and dropped).
struct Routing {
    ring: Ring,
    shards: Vec<ShardServiceClient<Channel>>,
    gets: Vec<mpsc::Sender<PendingGet>>,
    puts: Vec<mpsc::Sender<PendingPut>>,
}

/// One single-key transaction waiting for the next write batch of its shard.
struct PendingPut {
    txn: ShardTxn,
    reply: oneshot::Sender<Result<TxnOutcome, tonic::Status>>,
}

/// One get waiting for the next read batch of its shard.
struct PendingGet {
    namespace: String,
    key: Vec<u8>,
    reply: oneshot::Sender<Result<ShardValue, tonic::Status>>,
}

/// A key-value client that talks to the shards itself. Cheap to clone.
#[derive(Clone)]
pub struct DirectClient {
    gateway: Client,
    namespace: String,
    limits: Limits,
    routing: Arc<RwLock<Arc<Routing>>>,
}

impl DirectClient {
    /// Connects to the gateway at `url`, reads the ring and connects to every shard.
    pub async fn connect(url: &str) -> Result<DirectClient, Error> {
        let gateway = Client::connect(url).await?;
        let routing = fetch_routing(&gateway).await?;
        Ok(DirectClient {
            gateway,
            namespace: String::new(),
            limits: Limits::default(),
            routing: Arc::new(RwLock::new(Arc::new(routing))),
        })
    }

    /// The same client, working in `namespace`.
    pub fn with_namespace(&self, namespace: impl Into<String>) -> DirectClient {
        DirectClient { namespace: namespace.into(), ..self.clone() }
    }

    /// The gateway client, for every call direct mode does not cover.
    pub fn gateway(&self) -> Client {
        self.gateway.with_namespace(self.namespace.clone())
    }

    /// The ring epoch this client routes with.
    pub fn epoch(&self) -> u64 {
        self.routing().ring.epoch()
    }

    /// Reads a key from its shard; `NotFound` when it is absent or expired.
    pub async fn get(&self, key: &[u8]) -> Result<KeyValue, Error> {
        let ns = self.resolved()?;
        self.limits.check_key(key).map_err(invalid)?;
        let value = self.read_one(ns, key).await?;
        if !value.found {
            return Err(tonic::Status::not_found(format!("key {:?} not found", String::from_utf8_lossy(key))).into());
        }
        Ok(KeyValue {
            key: key.to_vec(),
            value: value.value,
            version: value.version,
            expires_at_ms: value.expires_at_ms,
        })
    }

    /// Reads many keys, one call per owning shard, all shards in parallel;
    /// `None` for each absent key, in request order.
    pub async fn batch_get(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<KeyValue>>, Error> {
        let ns = self.resolved()?;
        for key in keys {
            self.limits.check_key(key).map_err(invalid)?;
        }
        let mut retry = Retry::new();
        loop {
            let routing = self.routing();
            let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for (i, key) in keys.iter().enumerate() {
                groups.entry(routing.ring.owner_index(ns, key)).or_default().push(i);
            }
            let calls = groups.into_iter().map(|(shard, indexes)| {
                let epoch = routing.ring.epoch();
                let mut client = routing.shards[shard].clone();
                async move {
                    // A shard answers a prefix of the keys when their values reach its
                    // page byte budget: ask again for the rest.
                    let mut values = Vec::with_capacity(indexes.len());
                    while values.len() < indexes.len() {
                        let rest = indexes[values.len()..].iter().map(|&i| keys[i].clone()).collect();
                        let req = ShardReadRequest { epoch, namespace: ns.to_string(), keys: rest };
                        let page = client.read(req).await?.into_inner();
                        if page.values.is_empty() {
                            return Err(tonic::Status::internal("a shard answered a batch read with no values"));
                        }
                        values.extend(page.values);
                    }
                    Ok((indexes, values))
                }
            });
            let mut out: Vec<Option<KeyValue>> = vec![None; keys.len()];
            let mut refused = None;
            for result in futures::future::join_all(calls).await {
                match result {
                    Ok((indexes, values)) => {
                        for (i, v) in indexes.into_iter().zip(values).filter(|(_, v)| v.found) {
                            out[i] = Some(KeyValue {
                                key: keys[i].clone(),
                                value: v.value,
                                version: v.version,
                                expires_at_ms: v.expires_at_ms,
                            });
                        }
                    }
                    Err(status) => match Rejection::kind_of(&status) {
                        Some((kind, _)) => refused = Some(kind.to_string()),
                        None => return Err(status.into()),
                    },
                }
            }
            match refused {
                None => return Ok(out),
                Some(kind) => self.wait_out(&kind, &mut retry).await?,
            }
        }
    }

    /// Writes a key on its shard, acknowledged once it is in the shard's synced WAL.
    pub async fn put(&self, key: &[u8], value: &[u8], options: PutOptions) -> Result<WriteResult, Error> {
        let ns = self.resolved()?;
        self.limits.check_key(key).map_err(invalid)?;
        self.limits.check_value(value).map_err(invalid)?;
        // A deadline, not a TTL, so a retried write does not extend it.
        let expires_at_ms = match options.ttl {
            Some(ttl) if ttl.is_zero() => return Err(invalid_field("ttl", "must be positive; omit it for no expiry")),
            Some(ttl) if ttl > MAX_TTL => return Err(invalid_field("ttl", "is longer than the limit of 100 years")),
            Some(ttl) => now_ms().saturating_add(ttl.as_millis() as u64),
            None => 0,
        };
        let put = ShardPut {
            key: key.to_vec(),
            value: value.to_vec(),
            expires_at_ms,
            expected_version: options.expected_version,
        };
        let txn = ShardTxn { namespace: ns.to_string(), ops: vec![ShardOp { op: Some(shard_op::Op::Put(put)) }] };
        let mut retry = Retry::new();
        loop {
            let routing = self.routing();
            let shard = routing.ring.owner_index(ns, key);
            let (reply, answer) = oneshot::channel();
            routing.puts[shard].send(PendingPut { txn: txn.clone(), reply }).await.map_err(|_| batcher_gone())?;
            match answer.await.map_err(|_| batcher_gone())? {
                // This transaction alone was refused, before it was applied: the key is fenced.
                Ok(outcome) if outcome.code != 0 && !outcome.rejection.is_empty() => {
                    self.wait_out(&outcome.rejection, &mut retry).await?
                }
                Ok(outcome) if outcome.code != 0 => {
                    return Err(tonic::Status::new(tonic::Code::from_i32(outcome.code), outcome.message).into());
                }
                Ok(outcome) => {
                    let shard_id = routing.ring.shard_ids()[shard].to_string();
                    return Ok(WriteResult { shard_id, version: outcome.seq, seq: outcome.seq });
                }
                // The whole batch was refused before anything was written: safe to send again.
                Err(status) => match Rejection::kind_of(&status) {
                    Some((kind, _)) => self.wait_out(kind, &mut retry).await?,
                    None => return Err(status.into()),
                },
            }
        }
    }

    /// Reads one key through its shard's next read batch, with retries on a stale ring.
    async fn read_one(&self, ns: &str, key: &[u8]) -> Result<ShardValue, Error> {
        let mut retry = Retry::new();
        loop {
            let routing = self.routing();
            let shard = routing.ring.owner_index(ns, key);
            let (reply, answer) = oneshot::channel();
            let get = PendingGet { namespace: ns.to_string(), key: key.to_vec(), reply };
            routing.gets[shard].send(get).await.map_err(|_| batcher_gone())?;
            match answer.await.map_err(|_| batcher_gone())? {
                Ok(value) => return Ok(value),
                Err(status) => match Rejection::kind_of(&status) {
                    Some((kind, _)) => self.wait_out(kind, &mut retry).await?,
                    None => return Err(status.into()),
                },
            }
        }
    }

    /// Before a refused call runs again: waits out a fenced range
    /// (`moving`, backing off), or fetches the ring again (any other
    /// rejection). Errs once the range stays fenced past [`MOVING_BUDGET`]
    /// or the shards still refuse after [`MAX_REFRESHES`] fresh rings.
    async fn wait_out(&self, kind: &str, retry: &mut Retry) -> Result<(), Error> {
        if kind == (Rejection::Moving { shard_epoch: 0 }).kind() {
            if retry.started.elapsed() >= MOVING_BUDGET {
                return Err(Error::Status(tonic::Status::unavailable(format!(
                    "the key's range stayed fenced for {MOVING_BUDGET:?} while it changes owner; retry later"
                ))));
            }
            tokio::time::sleep(retry.pause).await;
            retry.pause = (retry.pause * 2).min(Duration::from_millis(100));
            return Ok(());
        }
        retry.refreshes += 1;
        if retry.refreshes > MAX_REFRESHES {
            return Err(stale_ring());
        }
        self.refresh().await
    }

    /// Fetches the ring again from the gateway.
    pub async fn refresh(&self) -> Result<(), Error> {
        let routing = fetch_routing(&self.gateway).await?;
        *self.routing.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(routing);
        Ok(())
    }

    fn routing(&self) -> Arc<Routing> {
        self.routing.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn resolved(&self) -> Result<&str, Error> {
        namespace::resolve(&self.namespace).map_err(invalid)
    }
}

/// One call's retries so far.
struct Retry {
    started: std::time::Instant,
    pause: Duration,
    refreshes: usize,
}

impl Retry {
    fn new() -> Retry {
        Retry { started: std::time::Instant::now(), pause: Duration::from_millis(5), refreshes: 0 }
    }
}

/// The gateway's ring and a lazily connected channel to each shard.
async fn fetch_routing(gateway: &Client) -> Result<Routing, Error> {
    let cluster = gateway.cluster().await?;
    let ids: Vec<String> = cluster.shards.iter().map(|s| s.id.clone()).collect();
    let ring = Ring::new(cluster.epoch, cluster.vnodes, &ids)
        .map_err(|e| tonic::Status::internal(format!("the gateway's topology makes no ring: {e}")))?;
    let mut shards = Vec::with_capacity(cluster.shards.len());
    let mut gets = Vec::with_capacity(cluster.shards.len());
    let mut puts = Vec::with_capacity(cluster.shards.len());
    for shard in &cluster.shards {
        let url = if shard.addr.contains("://") { shard.addr.clone() } else { format!("http://{}", shard.addr) };
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| Error::Connect { url: url.clone(), reason: e.to_string() })?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true);
        let client = ShardServiceClient::new(endpoint.connect_lazy());
        let (queue, pending) = mpsc::channel(8192);
        let (batch_client, epoch) = (client.clone(), ring.epoch());
        tokio::spawn(
            Batching::new(MAX_BATCH, Duration::ZERO, INFLIGHT)
                .run(pending, move |batch| send_gets(batch_client.clone(), epoch, batch)),
        );
        let (put_queue, pending_puts) = mpsc::channel(8192);
        let put_client = client.clone();
        tokio::spawn(
            Batching::new(MAX_BATCH, Duration::ZERO, INFLIGHT)
                .run(pending_puts, move |batch| send_puts(put_client.clone(), epoch, batch)),
        );
        shards.push(client);
        gets.push(queue);
        puts.push(put_queue);
    }
    Ok(Routing { ring, shards, gets, puts })
}

/// One `Apply` carrying every transaction of the batch; each put gets its outcome.
async fn send_puts(mut client: ShardServiceClient<Channel>, epoch: u64, batch: Vec<PendingPut>) {
    let (txns, replies): (Vec<ShardTxn>, Vec<_>) = batch.into_iter().map(|p| (p.txn, p.reply)).unzip();
    match client.apply(ShardApplyRequest { epoch, txns }).await.map(|r| r.into_inner().outcomes) {
        Ok(outcomes) if outcomes.len() == replies.len() => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Ok(outcomes) => {
            let status = tonic::Status::internal(format!(
                "shard answered {} outcomes for {} transactions",
                outcomes.len(),
                replies.len()
            ));
            replies.into_iter().for_each(|r| drop(r.send(Err(status.clone()))));
        }
        Err(status) => replies.into_iter().for_each(|r| drop(r.send(Err(status.clone())))),
    }
}

/// One `Read` per namespace in the batch; each get gets its value or the error.
async fn send_gets(client: ShardServiceClient<Channel>, epoch: u64, batch: Vec<PendingGet>) {
    let mut by_namespace: Vec<(String, Vec<PendingGet>)> = Vec::new();
    for get in batch {
        match by_namespace.iter_mut().find(|(ns, _)| *ns == get.namespace) {
            Some((_, gets)) => gets.push(get),
            None => by_namespace.push((get.namespace.clone(), vec![get])),
        }
    }
    let calls = by_namespace.into_iter().map(|(namespace, mut gets)| {
        let mut client = client.clone();
        async move {
            // A shard answers a prefix of the keys when their values reach its
            // page byte budget: those are answered, and the rest go again.
            while !gets.is_empty() {
                let keys = gets.iter().map(|g| g.key.clone()).collect();
                let answer = client.read(ShardReadRequest { epoch, namespace: namespace.clone(), keys }).await;
                match answer.map(|r| r.into_inner().values) {
                    Ok(values) if !values.is_empty() && values.len() <= gets.len() => {
                        let rest = gets.split_off(values.len());
                        for (get, value) in gets.into_iter().zip(values) {
                            let _ = get.reply.send(Ok(value));
                        }
                        gets = rest;
                    }
                    Ok(values) => {
                        let status = tonic::Status::internal(format!(
                            "shard answered {} values for {} keys",
                            values.len(),
                            gets.len()
                        ));
                        return gets.into_iter().for_each(|g| drop(g.reply.send(Err(status.clone()))));
                    }
                    Err(status) => return gets.into_iter().for_each(|g| drop(g.reply.send(Err(status.clone())))),
                }
            }
        }
    });
    futures::future::join_all(calls).await;
}

fn invalid(e: omnishard_common::Error) -> Error {
    Error::Status(e.into())
}

fn invalid_field(field: &str, why: &str) -> Error {
    Error::Status(tonic::Status::invalid_argument(format!("{field}: {why}")))
}

fn batcher_gone() -> Error {
    Error::Status(tonic::Status::unavailable("the direct client's batching task stopped (runtime shutting down)"))
}

fn stale_ring() -> Error {
    Error::Status(tonic::Status::unavailable("the shards kept refusing the ring after refreshing it; retry later"))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
