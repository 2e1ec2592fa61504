//! The gateway's gRPC face: thin tonic adapters for `KvService` and
//! `AdminService` over [`Cluster`], plus health and reflection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use omnishard_common::read_mode::ReadMode;
use omnishard_proto::v1::admin_service_server::{AdminService, AdminServiceServer};
use omnishard_proto::v1::graph_service_server::GraphServiceServer;
use omnishard_proto::v1::kv_service_server::{KvService, KvServiceServer};
use omnishard_proto::v1::*;
use omnishard_telemetry::record;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use tower::layer::util::{Identity, Stack as Layers};

use crate::cluster::Cluster;
use crate::config::GatewayConfig;
use crate::error::Error;
use crate::file_server::FileGrpc;
use crate::graph_server::GraphGrpc;
use crate::kv::WriteOp;
use crate::live::LiveCluster;
use crate::rebalance;
use crate::search_server::SearchGrpc;
use crate::topology_store::{ClusterDoc, TopologyStore};
use omnishard_common::topology::ShardAddr;
use omnishard_proto::v1::file_service_server::FileServiceServer;
use omnishard_proto::v1::search_service_server::SearchServiceServer;

/// Largest message a client may send: a full batch of large values.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Largest message of a file transfer (data comes in pieces of any size up to this).
pub const FILE_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Connects to every shard, then serves the gateway on `listener` until `shutdown` resolves.
pub async fn serve(
    config: GatewayConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let cluster = connect(&config).await?;
    serve_cluster(cluster, listener, shutdown).await
}

/// Builds the cluster view of `config` and checks every shard (see [`Cluster::connect_all`]).
/// With a metadata group (`[meta]`), the topology comes from the shared
/// document (seeded from `config` on first start) and follows its changes.
pub async fn connect(config: &GatewayConfig) -> Result<Arc<LiveCluster>, Error> {
    let Some(meta) = &config.meta else {
        let cluster = Arc::new(Cluster::new(config)?);
        cluster.connect_all().await?;
        return Ok(LiveCluster::fixed(cluster));
    };
    let store = TopologyStore::new(meta, &config.gateway)?;
    let doc = load_shared(&store, config).await?;
    let mut config = config.clone();
    config.epoch = doc.topology.epoch;
    config.vnodes = doc.topology.vnodes;
    config.shards = doc.topology.shards.clone();
    let cluster = Arc::new(Cluster::new(&config)?);
    cluster.connect_all().await?;
    Ok(LiveCluster::shared(cluster, store))
}

/// Reads (or seeds) the shared document, waiting for the metadata group to start.
async fn load_shared(store: &TopologyStore, config: &GatewayConfig) -> Result<ClusterDoc, Error> {
    let deadline = std::time::Instant::now() + config.gateway.startup_timeout;
    loop {
        match store.load_or_seed(&config.topology()).await {
            Ok(doc) => return Ok(doc),
            Err(e) if e.is_retryable() && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Serves an already connected cluster on `listener` until `shutdown` resolves.
pub async fn serve_cluster(
    cluster: Arc<LiveCluster>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<KvServiceServer<KvGrpc>>().await;
    health_reporter.set_serving::<AdminServiceServer<AdminGrpc>>().await;
    health_reporter.set_serving::<GraphServiceServer<GraphGrpc>>().await;
    health_reporter.set_serving::<SearchServiceServer<SearchGrpc>>().await;
    health_reporter.set_serving::<FileServiceServer<FileGrpc>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(omnishard_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let kv = KvServiceServer::new(KvGrpc { cluster: cluster.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let admin = AdminServiceServer::new(AdminGrpc { cluster: cluster.clone() });
    let graph = GraphServiceServer::new(GraphGrpc { cluster: cluster.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let search = SearchServiceServer::new(SearchGrpc { cluster: cluster.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // File data arrives in many small messages, never one huge one.
    let files = FileServiceServer::new(FileGrpc { cluster: cluster.clone() })
        .max_decoding_message_size(FILE_MESSAGE_BYTES)
        .max_encoding_message_size(FILE_MESSAGE_BYTES);
    let now = cluster.current();
    let sweeper =
        tokio::spawn(run_file_sweeper(cluster.clone(), now.files.sweep_interval.max(Duration::from_millis(100))));
    let repair =
        tokio::spawn(run_edge_repair(cluster.clone(), now.graph.repair_interval.max(Duration::from_millis(100))));
    cluster.publish_metrics();
    // With a shared topology: follow its changes, and drive migrations when this gateway holds the lease.
    let watcher = tokio::spawn(cluster.clone().watch());
    let driver = tokio::spawn(crate::rebalance::run(cluster.clone()));
    let connections = omnishard_serving::ConnectionSettings {
        handshake_timeout: now.settings.handshake_timeout,
        idle_timeout: Some(now.settings.idle_timeout),
        ..omnishard_serving::ConnectionSettings::public()
    };
    tracing::info!(addr = %listener.local_addr()?, epoch = now.epoch(), shards = now.shards.len(), shared = cluster.store().is_some(), "gateway serving");
    drop(now);
    server_stack(connections)
        .add_service(health)
        .add_service(reflection)
        .add_service(kv)
        .add_service(admin)
        .add_service(graph)
        .add_service(search)
        .add_service(files)
        .serve_with_incoming_shutdown(incoming(listener, connections), shutdown)
        .await?;
    repair.abort();
    sweeper.abort();
    watcher.abort();
    driver.abort();
    tracing::info!("gateway stopped");
    Ok(())
}

/// Collects file garbage every `interval` with the view current at each pass.
async fn run_file_sweeper(live: Arc<LiveCluster>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let cluster = live.current();
        match cluster.sweep_files().await {
            Ok(swept) if swept != crate::files::sweep::Swept::default() => tracing::info!(?swept, "file sweep"),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "file sweep incomplete; retrying next interval"),
        }
    }
}

/// Repairs half-written edges every `interval` with the view current at each pass.
async fn run_edge_repair(live: Arc<LiveCluster>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = live.current().repair_pending_edges(interval).await {
            tracing::debug!(error = %e, "edge repair pass incomplete; retrying next interval");
        }
    }
}

/// Requests the gateway admits at once, by class ([`omnishard_serving::admission`]):
/// a class that is full sheds its new requests at once, whatever the others do.
fn admission() -> omnishard_serving::AdmissionLayer {
    use omnishard_serving::Class;
    omnishard_serving::AdmissionLayer::new(
        "gateway",
        vec![
            // Long file streams count against file capacity only
            // (`files.max_transfers` inside; this bounds the streams themselves).
            // They hold their slots while they stream; their pace is bounded
            // by `files.idle_timeout` and `files.min_rate`.
            Class::streams(
                "file stream",
                1024,
                &["/omnishard.v1.FileService/Upload", "/omnishard.v1.FileService/Download"],
            ),
            // Scans, searches, traversals and admin fan-outs: many shard calls each.
            Class::new(
                "heavy",
                512,
                &[
                    "/omnishard.v1.KvService/Scan",
                    "/omnishard.v1.SearchService/Search",
                    "/omnishard.v1.SearchService/Reindex",
                    "/omnishard.v1.GraphService/Traverse",
                    "/omnishard.v1.GraphService/ShortestPath",
                    "/omnishard.v1.GraphService/Query",
                    "/omnishard.v1.FileService/List",
                    "/omnishard.v1.FileService/Verify",
                    "/omnishard.v1.AdminService/",
                ],
            ),
            // Everything else: point reads and writes.
            Class::new("point", MAX_IN_FLIGHT, &[]),
        ],
    )
}

/// Most point requests the gateway serves at once; past it, new ones are shed.
pub const MAX_IN_FLIGHT: usize = 4096;

type Stack = Layers<
    crate::deadline::DeadlineLayer,
    Layers<omnishard_serving::AdmissionLayer, Layers<omnishard_telemetry::server::RequestLayer, Identity>>,
>;

/// The gateway server's layers, outermost first.
fn server_stack(connections: omnishard_serving::ConnectionSettings) -> Server<Stack> {
    let server = Server::builder()
        // Wide HTTP/2 windows let a file upload stream without stalls.
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(32 << 20)
        // Large frames: a 1 MiB piece of a file is one frame, not 64.
        .max_frame_size(1 << 20);
    // Keep-alive pings close half-open connections; streams per connection are bounded.
    connections
        .apply(server)
        // Traces, metrics and `x-trace-id` for every request, shed ones included.
        .layer(omnishard_telemetry::server::RequestLayer::new("gateway"))
        // Admission by class: a full class answers UNAVAILABLE at once instead of
        // queueing, and never takes another class's slots; error messages are bounded.
        .layer(admission())
        // Deadline: a request never outlives this, whatever the shards do
        // (file transfers excepted: their length grows with the file).
        .layer(crate::deadline::DeadlineLayer(Duration::from_secs(60)))
}

fn status(err: Error) -> Status {
    err.to_status()
}

/// Adapter for `KvService`. Every call retries shard redirects (a ring
/// that changed) and fenced ranges on the current view (see [`LiveCluster::retry`]).
pub struct KvGrpc {
    cluster: Arc<LiveCluster>,
}

#[tonic::async_trait]
impl KvService for KvGrpc {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let mode = ReadMode::from_metadata(request.metadata())?;
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let kv = self
            .cluster
            .retry(|c| {
                let key = req.key.clone();
                let ns = &req.namespace;
                async move { c.get(ns, key, mode).await }
            })
            .await
            .map_err(status)?;
        record("bytes", kv.value.len() as i64);
        Ok(Response::new(GetResponse { kv: Some(kv) }))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let ttl = ttl_from_proto(req.ttl)?;
        record("bytes", req.value.len() as i64);
        let written = self
            .cluster
            .retry(|c| {
                let (ns, key, value) = (&req.namespace, req.key.clone(), req.value.clone());
                async move { c.put(ns, key, value, ttl, req.expected_version).await }
            })
            .await
            .map_err(status)?;
        Ok(Response::new(PutResponse { result: Some(result(written)) }))
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let written = self
            .cluster
            .retry(|c| {
                let (ns, key) = (&req.namespace, req.key.clone());
                async move { c.delete(ns, key, req.expected_version).await }
            })
            .await
            .map_err(status)?;
        Ok(Response::new(DeleteResponse { deleted: written.existed, result: Some(result(written)) }))
    }

    async fn batch_get(&self, request: Request<BatchGetRequest>) -> Result<Response<BatchGetResponse>, Status> {
        let mode = ReadMode::from_metadata(request.metadata())?;
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        record("keys", req.keys.len() as i64);
        let page = self
            .cluster
            .retry(|c| {
                let (ns, keys) = (&req.namespace, req.keys.clone());
                async move { c.batch_get(ns, keys, mode).await }
            })
            .await
            .map_err(status)?;
        record("rows", page.values.iter().filter(|v| v.is_some()).count() as i64);
        let results = page.values.into_iter().map(|kv| MaybeKeyValue { found: kv.is_some(), kv }).collect();
        Ok(Response::new(BatchGetResponse { results, truncated: page.truncated }))
    }

    async fn write(&self, request: Request<WriteRequest>) -> Result<Response<WriteResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let ops = req
            .ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| match op.op {
                Some(write_op::Op::Put(p)) => Ok(WriteOp::Put {
                    key: p.key,
                    value: p.value,
                    ttl: ttl_from_proto(p.ttl)?,
                    expected_version: p.expected_version,
                }),
                Some(write_op::Op::Delete(d)) => {
                    Ok(WriteOp::Delete { key: d.key, expected_version: d.expected_version })
                }
                None => Err(Status::invalid_argument(format!("ops[{i}]: has neither put nor delete"))),
            })
            .collect::<Result<Vec<_>, Status>>()?;
        record("keys", ops.len() as i64);
        // Parts refused by a moving range are re-sent on their own.
        let written = self.cluster.write(&req.namespace, ops).await.map_err(status)?;
        record(
            "shards",
            written.iter().map(|w| w.shard_id.as_str()).collect::<std::collections::BTreeSet<_>>().len() as i64,
        );
        Ok(Response::new(WriteResponse { results: written.into_iter().map(result).collect() }))
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let page = self
            .cluster
            .retry(|c| {
                let (ns, prefix, cursor) = (&req.namespace, req.prefix.clone(), &req.cursor);
                async move { c.scan(ns, prefix, cursor, req.limit).await }
            })
            .await
            .map_err(status)?;
        record("rows", page.entries.len() as i64);
        Ok(Response::new(ScanResponse { entries: page.entries, next_cursor: page.next_cursor }))
    }
}

/// Adapter for `AdminService`.
pub struct AdminGrpc {
    cluster: Arc<LiveCluster>,
}

#[tonic::async_trait]
impl AdminService for AdminGrpc {
    async fn cluster(&self, _request: Request<ClusterRequest>) -> Result<Response<ClusterResponse>, Status> {
        Ok(Response::new(self.cluster.current().cluster_info().await))
    }

    async fn trace(&self, request: Request<TraceRequest>) -> Result<Response<TraceResponse>, Status> {
        self.cluster.current().trace(&request.into_inner().trace_id).await.map(Response::new)
    }

    async fn slow_requests(
        &self,
        request: Request<SlowRequestsRequest>,
    ) -> Result<Response<SlowRequestsResponse>, Status> {
        Ok(Response::new(self.cluster.current().slow_requests(request.into_inner().limit)))
    }

    async fn add_shard(&self, request: Request<AddShardRequest>) -> Result<Response<RebalanceStatusResponse>, Status> {
        let req = request.into_inner();
        let shard = ShardAddr { id: req.id, addr: req.addr, replicas: req.replicas };
        let rate = (req.rate_bytes_per_sec > 0).then_some(req.rate_bytes_per_sec);
        let doc = rebalance::add_shard(&self.cluster, shard, rate).await.map_err(status)?;
        Ok(Response::new(rebalance::status_of(&doc)))
    }

    async fn remove_shard(
        &self,
        request: Request<RemoveShardRequest>,
    ) -> Result<Response<RebalanceStatusResponse>, Status> {
        let req = request.into_inner();
        let rate = (req.rate_bytes_per_sec > 0).then_some(req.rate_bytes_per_sec);
        let doc = rebalance::remove_shard(&self.cluster, &req.id, rate).await.map_err(status)?;
        Ok(Response::new(rebalance::status_of(&doc)))
    }

    async fn rebalance_status(
        &self,
        _request: Request<RebalanceStatusRequest>,
    ) -> Result<Response<RebalanceStatusResponse>, Status> {
        let doc = rebalance::status(&self.cluster).await.map_err(status)?;
        Ok(Response::new(rebalance::status_of(&doc)))
    }

    async fn rebalance_control(
        &self,
        request: Request<RebalanceControlRequest>,
    ) -> Result<Response<RebalanceStatusResponse>, Status> {
        let req = request.into_inner();
        let doc = if req.abort {
            if req.paused.is_some() || req.rate_bytes_per_sec.is_some() {
                return Err(Status::invalid_argument("abort: cannot be combined with paused or rate_bytes_per_sec"));
            }
            rebalance::abort(&self.cluster).await
        } else {
            rebalance::control(&self.cluster, req.paused, req.rate_bytes_per_sec).await
        }
        .map_err(status)?;
        Ok(Response::new(rebalance::status_of(&doc)))
    }
}

fn result(w: crate::kv::Written) -> WriteResult {
    WriteResult { shard_id: w.shard_id, version: w.version, seq: w.seq }
}

/// A TTL on the wire must be a valid, non-negative protobuf duration.
fn ttl_from_proto(ttl: Option<prost_types::Duration>) -> Result<Option<Duration>, Status> {
    let Some(ttl) = ttl else { return Ok(None) };
    if ttl.seconds < 0 || ttl.nanos < 0 || ttl.nanos >= 1_000_000_000 {
        return Err(Status::invalid_argument(format!(
            "ttl: {}s {}ns is not a valid positive duration",
            ttl.seconds, ttl.nanos
        )));
    }
    let ttl = Duration::new(ttl.seconds as u64, ttl.nanos as u32);
    crate::kv::check_ttl(ttl).map(Some).map_err(status)
}

/// Accepted connections with the public port's deadlines: a connection that
/// sends nothing, or holds no request for minutes, is closed.
fn incoming(
    listener: TcpListener,
    connections: omnishard_serving::ConnectionSettings,
) -> impl futures::Stream<Item = std::io::Result<omnishard_serving::connection::Guarded>> + Send + 'static {
    omnishard_serving::incoming(listener, connections)
}
