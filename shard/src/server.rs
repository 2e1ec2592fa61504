//! The shard's gRPC face: a thin tonic adapter over [`Shard`], plus health
//! and reflection, served on an already bound listener.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use omnishard_common::stored::Space;
use omnishard_common::topology::Topology;
use omnishard_proto::v1::shard_file_service_server::ShardFileServiceServer;
use omnishard_proto::v1::shard_service_server::{ShardService, ShardServiceServer};
use omnishard_proto::v1::*;
use omnishard_telemetry::record;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use crate::apply::{Op, Txn};
use crate::config::ShardConfig;
use crate::consistency::ConsistencyLayer;
use crate::error::Error;
use crate::file_server::ShardFileGrpc;
use crate::migrate::{DropMode, IngestTo, Page, Record};
use crate::node::Shard;
use crate::raft::service::ShardRaftGrpc;
use crate::store::Entry;
use omnishard_proto::v1::shard_raft_service_server::ShardRaftServiceServer;

/// Largest gRPC message a shard accepts or sends: a full batch of big values.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Opens the shard in `config` and serves it on `listener` until `shutdown` resolves.
pub async fn serve(
    config: ShardConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let shard = Shard::open(config).await?;
    let served = serve_shard(shard.clone(), listener, shutdown).await;
    shard.shutdown().await;
    served
}

/// Serves an opened shard on `listener` until `shutdown` resolves.
pub async fn serve_shard(
    shard: Arc<Shard>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<ShardServiceServer<ShardGrpc>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(omnishard_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let service = ShardServiceServer::new(ShardGrpc { shard: shard.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let files = ShardFileServiceServer::new(ShardFileGrpc { shard: shard.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let raft = ShardRaftServiceServer::new(ShardRaftGrpc { shard: shard.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let addr = listener.local_addr()?;
    tracing::info!(shard_id = %shard.id(), %addr, epoch = shard.ownership.epoch(), node_id = shard.replication.node_id(), "shard serving");
    shard.replication.bootstrap(&addr.to_string()).await?;
    let served = server_stack(shard.id())
        .layer(ConsistencyLayer::new(shard.clone()))
        .add_service(health)
        .add_service(reflection)
        .add_service(service)
        .add_service(files)
        .add_service(raft)
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await;
    served?;
    tracing::info!(shard_id = %shard.id(), "shard stopped");
    Ok(())
}

/// Raft's own traffic between replicas: counted in the metrics, not traced.
const REPLICATION_CALLS: &[&str] = &[
    "/omnishard.v1.ShardRaftService/AppendEntries",
    "/omnishard.v1.ShardRaftService/Vote",
    "/omnishard.v1.ShardRaftService/InstallSnapshot",
];

/// Requests a shard admits at once, by class ([`omnishard_serving::admission`]):
/// a flood of one kind (searches, chunk writes) never takes the slots that
/// replication or point reads and writes need.
fn admission() -> omnishard_serving::AdmissionLayer {
    use omnishard_serving::Class;
    omnishard_serving::AdmissionLayer::new(
        "shard",
        vec![
            // Raft between replicas: if it starves, the group loses its leader.
            Class::new("replication", 1024, REPLICATION_CALLS),
            // File chunks and manifests.
            Class::new("file", 1024, &["/omnishard.v1.ShardFileService/"]),
            // Calls that read or score many records each.
            Class::new(
                "heavy",
                1024,
                &[
                    "/omnishard.v1.ShardService/Scan",
                    "/omnishard.v1.ShardService/SearchStats",
                    "/omnishard.v1.ShardService/SearchQuery",
                    "/omnishard.v1.ShardService/SearchFetch",
                    "/omnishard.v1.ShardService/SearchReindex",
                    "/omnishard.v1.ShardService/GraphFind",
                    "/omnishard.v1.ShardService/GraphExpand",
                    "/omnishard.v1.ShardService/GraphEdgesMany",
                    "/omnishard.v1.ShardService/MigrateExport",
                    "/omnishard.v1.ShardService/TraceSpans",
                ],
            ),
            // Everything else: point reads and writes, stats, admin.
            Class::new("point", MAX_IN_FLIGHT, &[]),
        ],
    )
}

/// Most point requests a shard serves at once; past it, new ones are shed.
pub const MAX_IN_FLIGHT: usize = 2048;

type Stack = tower::layer::util::Stack<
    omnishard_serving::AdmissionLayer,
    tower::layer::util::Stack<omnishard_telemetry::server::RequestLayer, tower::layer::util::Identity>,
>;

/// The shard server's layers, outermost first.
fn server_stack(shard_id: &str) -> Server<Stack> {
    let server = Server::builder()
        // Wide HTTP/2 windows let chunk writes stream without stalls.
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(32 << 20)
        // Large frames: a chunk is a few frames, not hundreds.
        .max_frame_size(1 << 20)
        // Timeout: no request holds resources longer than this. Generous,
        // because rebuilding a search index is one call; everyday calls are
        // bounded far tighter by the gateway's deadlines (it cancels them).
        .timeout(Duration::from_secs(600));
    // Keep-alive pings close half-open connections (gateways' connections never idle out).
    omnishard_serving::ConnectionSettings::internal()
        .apply(server)
        // Traces, metrics and `x-trace-id` for every request, shed ones included.
        .layer(
            omnishard_telemetry::server::RequestLayer::new("shard")
                .with_shard_id(shard_id)
                .without_spans(REPLICATION_CALLS),
        )
        // Admission by class: a full class answers UNAVAILABLE at once instead of
        // queueing; error messages are bounded so none can break a peer's HTTP/2.
        .layer(admission())
}

/// The tonic adapter: convert, call the domain, map the error.
pub struct ShardGrpc {
    shard: Arc<Shard>,
}

impl ShardGrpc {
    fn status(&self, err: Error) -> Status {
        err.to_status(self.shard.id())
    }
}

#[tonic::async_trait]
impl ShardService for ShardGrpc {
    async fn read(&self, request: Request<ShardReadRequest>) -> Result<Response<ShardReadResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        record("keys_read", req.keys.len() as i64);
        let asked = req.keys.len();
        let values = self.shard.read(req.epoch, &req.namespace, req.keys).await.map_err(|e| self.status(e))?;
        record("rows", values.iter().filter(|v| v.is_some()).count() as i64);
        let truncated = values.len() < asked;
        let values = values
            .into_iter()
            .map(|entry| match entry {
                Some(e) => {
                    ShardValue { found: true, value: e.value, version: e.version, expires_at_ms: e.expires_at_ms }
                }
                None => ShardValue::default(),
            })
            .collect();
        Ok(Response::new(ShardReadResponse { values, truncated }))
    }

    async fn apply(&self, request: Request<ShardApplyRequest>) -> Result<Response<ShardApplyResponse>, Status> {
        let req = request.into_inner();
        let txns = req.txns.into_iter().map(txn_from_proto).collect::<Result<Vec<_>, Status>>()?;
        record("txns", txns.len() as i64);
        let results = self.shard.apply(req.epoch, txns).await.map_err(|e| self.status(e))?;
        let outcomes = results
            .into_iter()
            .map(|r| match r {
                Ok(c) => TxnOutcome { seq: c.seq, existed: c.existed, ..Default::default() },
                Err(e) => {
                    let rejection = match &e {
                        Error::Rejected(r) => r.kind().to_string(),
                        _ => String::new(),
                    };
                    let status = self.status(e);
                    TxnOutcome {
                        seq: 0,
                        existed: Vec::new(),
                        code: status.code() as i32,
                        message: status.message().into(),
                        rejection,
                    }
                }
            })
            .collect();
        Ok(Response::new(ShardApplyResponse { outcomes }))
    }

    async fn scan(&self, request: Request<ShardScanRequest>) -> Result<Response<ShardScanResponse>, Status> {
        let req = request.into_inner();
        let (entries, more) = self
            .shard
            .scan(req.epoch, &req.namespace, req.prefix, req.start_after, req.limit)
            .await
            .map_err(|e| self.status(e))?;
        record("rows", entries.len() as i64);
        Ok(Response::new(ShardScanResponse { entries: entries.into_iter().map(entry_to_proto).collect(), more }))
    }

    async fn stats(&self, _request: Request<ShardStatsRequest>) -> Result<Response<ShardStatsResponse>, Status> {
        if let Some(reason) = self.shard.replication.stopped() {
            // The data still reads, but nothing commits: not serving.
            return Err(Status::unavailable(format!("{}{reason}", crate::raft::RAFT_STOPPED)));
        }
        let stats = self.shard.stats().await.map_err(|e| self.status(e))?;
        Ok(Response::new(ShardStatsResponse {
            shard_id: stats.shard_id,
            seq: stats.seq,
            epoch: stats.epoch,
            key_count: stats.key_count,
            metrics_addr: self.shard.metrics_addr().unwrap_or_default().to_string(),
            non_kv_model: stats.non_kv_model.unwrap_or_default().to_string(),
        }))
    }

    async fn trace_spans(&self, request: Request<TraceRequest>) -> Result<Response<TraceResponse>, Status> {
        let trace_id = omnishard_telemetry::wire::parse_trace_id(&request.into_inner().trace_id)
            .map_err(Status::invalid_argument)?;
        let spans = omnishard_telemetry::global().buffer.trace(trace_id);
        let spans = spans.iter().map(|span| omnishard_telemetry::wire::span(span, self.shard.id())).collect();
        Ok(Response::new(TraceResponse { spans, unreachable: Vec::new() }))
    }

    async fn install_topology(
        &self,
        request: Request<InstallTopologyRequest>,
    ) -> Result<Response<InstallTopologyResponse>, Status> {
        let topology = Topology::from(request.get_ref());
        self.shard.check_install(&topology).await.map_err(|e| self.status(e))?;
        let epoch = self.shard.install_topology(topology).await.map_err(|e| self.status(e))?;
        Ok(Response::new(InstallTopologyResponse { epoch }))
    }

    async fn graph_apply(
        &self,
        request: Request<ShardGraphApplyRequest>,
    ) -> Result<Response<ShardGraphApplyResponse>, Status> {
        let req = request.into_inner();
        let done =
            self.shard.graph_apply(req.epoch, &req.namespace, &req.graph, req.ops).await.map_err(|e| self.status(e))?;
        Ok(Response::new(ShardGraphApplyResponse {
            seq: done.seq,
            vertices: done.vertices,
            edges: done.edges,
            removed_edges: done.removed_edges,
            edge_halves_deleted: done.edge_halves_deleted,
            vertices_deleted: done.vertices_deleted,
        }))
    }

    async fn graph_get(&self, request: Request<ShardGraphGetRequest>) -> Result<Response<GetVerticesResponse>, Status> {
        let req = request.into_inner();
        let vertices =
            self.shard.graph_get(req.epoch, &req.namespace, &req.graph, req.ids).await.map_err(|e| self.status(e))?;
        let vertices = vertices.into_iter().map(|v| MaybeVertex { found: v.is_some(), vertex: v }).collect();
        Ok(Response::new(GetVerticesResponse { vertices }))
    }

    async fn graph_edges(
        &self,
        request: Request<ShardGraphEdgesRequest>,
    ) -> Result<Response<NeighborsResponse>, Status> {
        let req = request.into_inner();
        let half = EdgeHalf::try_from(req.half).map_err(|_| Status::invalid_argument("half: must be OUT or IN"))?;
        let page = self
            .shard
            .graph_edges(req.epoch, &req.namespace, &req.graph, req.id, half, req.labels, req.start_after, req.limit)
            .await
            .map_err(|e| self.status(e))?;
        Ok(Response::new(NeighborsResponse { edges: page.edges, next_cursor: page.next.unwrap_or_default() }))
    }

    async fn graph_edges_many(
        &self,
        request: Request<ShardGraphEdgesManyRequest>,
    ) -> Result<Response<ShardGraphEdgesManyResponse>, Status> {
        let lists = self.shard.graph_edges_many(request.into_inner()).await.map_err(|e| self.status(e))?;
        Ok(Response::new(ShardGraphEdgesManyResponse { lists }))
    }

    async fn graph_pending(
        &self,
        request: Request<ShardGraphPendingRequest>,
    ) -> Result<Response<ShardGraphPendingResponse>, Status> {
        let req = request.into_inner();
        let pending =
            self.shard.graph_pending(req.epoch, req.older_than_ms, req.limit).await.map_err(|e| self.status(e))?;
        let edges = pending
            .into_iter()
            .map(|(namespace, graph, edge)| PendingEdge { namespace, graph, edge: Some(edge) })
            .collect();
        Ok(Response::new(ShardGraphPendingResponse { edges }))
    }

    async fn graph_find(
        &self,
        request: Request<ShardGraphFindRequest>,
    ) -> Result<Response<FindVerticesResponse>, Status> {
        let (vertices, more) = self.shard.graph_find(request.into_inner()).await.map_err(|e| self.status(e))?;
        let next_cursor = match vertices.last() {
            Some(last) if more => last.id.clone().into_bytes(),
            _ => Vec::new(),
        };
        Ok(Response::new(FindVerticesResponse { vertices, next_cursor }))
    }

    async fn graph_expand(
        &self,
        request: Request<ShardGraphExpandRequest>,
    ) -> Result<Response<ShardGraphExpandResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        record("frontier", req.frontier.len() as i64);
        let expanded = self.shard.graph_expand(req.epoch, req).await.map_err(|e| self.status(e))?;
        record("edges_expanded", expanded.edges_read as i64);
        record("vertices_reached", expanded.reached.len() as i64);
        record("frontier_out", expanded.remote.len() as i64);
        Ok(Response::new(ShardGraphExpandResponse {
            reached: expanded.reached,
            remote: expanded.remote,
            truncated_by: expanded.truncated_by,
            edges_read: expanded.edges_read,
        }))
    }

    async fn search_define(
        &self,
        request: Request<ShardSearchDefineRequest>,
    ) -> Result<Response<ShardSearchDefineResponse>, Status> {
        let changed = self.shard.search_define(request.into_inner()).await.map_err(|e| self.status(e))?;
        Ok(Response::new(ShardSearchDefineResponse { changed }))
    }

    async fn search_drop(&self, request: Request<DropIndexRequest>) -> Result<Response<DropIndexResponse>, Status> {
        let req = request.into_inner();
        self.shard.search_drop(&req.namespace, &req.index).await.map_err(|e| self.status(e))?;
        Ok(Response::new(DropIndexResponse {}))
    }

    async fn search_list(
        &self,
        request: Request<ShardSearchListRequest>,
    ) -> Result<Response<ShardSearchListResponse>, Status> {
        let req = request.into_inner();
        let indexes = self.shard.search_list(&req.namespace, &req.index).await.map_err(|e| self.status(e))?;
        Ok(Response::new(ShardSearchListResponse { indexes }))
    }

    async fn search_write(
        &self,
        request: Request<ShardSearchWriteRequest>,
    ) -> Result<Response<IndexDocumentsResponse>, Status> {
        let req = request.into_inner();
        record("docs_written", req.ops.len() as i64);
        let (written, seq) = self.shard.search_write(req).await.map_err(|e| self.status(e))?;
        Ok(Response::new(IndexDocumentsResponse { written, seq }))
    }

    async fn search_get(
        &self,
        request: Request<ShardSearchGetRequest>,
    ) -> Result<Response<GetDocumentsResponse>, Status> {
        let documents = self.shard.search_get(request.into_inner()).await.map_err(|e| self.status(e))?;
        Ok(Response::new(GetDocumentsResponse { documents }))
    }

    async fn search_stats(
        &self,
        request: Request<ShardSearchStatsRequest>,
    ) -> Result<Response<ShardSearchStatsResponse>, Status> {
        Ok(Response::new(self.shard.search_stats(request.into_inner()).await.map_err(|e| self.status(e))?))
    }

    async fn search_query(
        &self,
        request: Request<ShardSearchQueryRequest>,
    ) -> Result<Response<ShardSearchQueryResponse>, Status> {
        let answer = self.shard.search_query(request.into_inner()).await.map_err(|e| self.status(e))?;
        record("docs_scored", answer.total as i64);
        record("hits", answer.hits.len() as i64);
        Ok(Response::new(answer))
    }

    async fn search_fetch(
        &self,
        request: Request<ShardSearchFetchRequest>,
    ) -> Result<Response<ShardSearchFetchResponse>, Status> {
        let req = request.into_inner();
        record("docs_fetched", req.ids.len() as i64);
        Ok(Response::new(self.shard.search_fetch(req).await.map_err(|e| self.status(e))?))
    }

    async fn search_refresh(&self, request: Request<RefreshRequest>) -> Result<Response<RefreshResponse>, Status> {
        let req = request.into_inner();
        let searchable_seq = self.shard.search_refresh(&req.namespace, &req.index).await.map_err(|e| self.status(e))?;
        Ok(Response::new(RefreshResponse { searchable_seq }))
    }

    async fn search_reindex(&self, request: Request<ReindexRequest>) -> Result<Response<ReindexResponse>, Status> {
        let req = request.into_inner();
        let documents = self.shard.search_reindex(&req.namespace, &req.index).await.map_err(|e| self.status(e))?;
        Ok(Response::new(ReindexResponse { documents }))
    }

    async fn migrate_begin(
        &self,
        request: Request<MigrateBeginRequest>,
    ) -> Result<Response<MigrateBeginResponse>, Status> {
        let req = request.into_inner();
        let target = req.target.as_ref().map(Topology::from).ok_or_else(|| missing("target"))?;
        if req.incoming {
            if req.fence {
                return Err(Status::invalid_argument("fence: a shard that receives records has nothing to fence"));
            }
            self.shard.migrate_receive(req.migration_id, target).await.map_err(|e| self.status(e))?;
            return Ok(Response::new(MigrateBeginResponse { dirty: 0 }));
        }
        let dirty = self.shard.migrate_begin(req.migration_id, target, req.fence).await.map_err(|e| self.status(e))?;
        Ok(Response::new(MigrateBeginResponse { dirty }))
    }

    async fn migrate_export(&self, request: Request<MigrateExportRequest>) -> Result<Response<MigrateRecords>, Status> {
        let req = request.into_inner();
        let max_bytes = if req.max_bytes == 0 { 4 << 20 } else { req.max_bytes.min(64 << 20) as usize };
        let page = self
            .shard
            .migrate_export(req.migration_id, req.after, req.max_records as usize, max_bytes)
            .await
            .map_err(|e| self.status(e))?;
        record("rows", page.records.len() as i64);
        Ok(Response::new(records_to_proto(page)))
    }

    async fn migrate_dirty(&self, request: Request<MigrateDirtyRequest>) -> Result<Response<MigrateRecords>, Status> {
        let req = request.into_inner();
        let page =
            self.shard.migrate_dirty(req.migration_id, req.max_records as usize).await.map_err(|e| self.status(e))?;
        record("rows", page.records.len() as i64);
        Ok(Response::new(records_to_proto(page)))
    }

    async fn migrate_ack(&self, request: Request<MigrateAckRequest>) -> Result<Response<MigrateAckResponse>, Status> {
        let req = request.into_inner();
        let marks = req.marks.into_iter().map(record_from_proto).collect::<Result<_, _>>()?;
        self.shard.migrate_ack(req.migration_id, marks).await.map_err(|e| self.status(e))?;
        Ok(Response::new(MigrateAckResponse {}))
    }

    async fn migrate_ingest(
        &self,
        request: Request<MigrateIngestRequest>,
    ) -> Result<Response<MigrateIngestResponse>, Status> {
        let req = request.into_inner();
        record("rows", req.records.len() as i64);
        let records = req.records.into_iter().map(record_from_proto).collect::<Result<_, _>>()?;
        let to =
            IngestTo { migration_id: req.migration_id, target_epoch: req.target_epoch, target_shard: req.target_shard };
        self.shard.migrate_ingest(to, records).await.map_err(|e| self.status(e))?;
        Ok(Response::new(MigrateIngestResponse {}))
    }

    async fn migrate_drop(
        &self,
        request: Request<MigrateDropRequest>,
    ) -> Result<Response<MigrateDropResponse>, Status> {
        let req = request.into_inner();
        let mode = match MigrateDropMode::try_from(req.mode) {
            Ok(MigrateDropMode::Unowned) => DropMode::Unowned,
            Ok(MigrateDropMode::Incoming) => DropMode::Incoming {
                before: req.before.as_ref().map(Topology::from).ok_or_else(|| missing("before"))?,
                after: req.after.as_ref().map(Topology::from).ok_or_else(|| missing("after"))?,
                source: req.source,
            },
            Err(_) => return Err(Status::invalid_argument(format!("mode: unknown value {}", req.mode))),
        };
        self.shard.check_drop(req.migration_id, &mode).await.map_err(|e| self.status(e))?;
        let (deleted, done) =
            self.shard.migrate_drop(mode, req.max_records.max(1) as usize).await.map_err(|e| self.status(e))?;
        Ok(Response::new(MigrateDropResponse { deleted, done }))
    }
}

fn missing(field: &str) -> Status {
    Status::invalid_argument(format!("{field}: is required"))
}

fn records_to_proto(page: Page) -> MigrateRecords {
    MigrateRecords {
        records: page
            .records
            .into_iter()
            .map(|r| MigrateRecord {
                key: r.key,
                deleted: r.value.is_none(),
                value: r.value.unwrap_or_default(),
                mark: r.mark,
                space: r.space as u32,
            })
            .collect(),
        next: page.next,
        done: page.done,
        scanned: page.scanned,
    }
}

fn record_from_proto(r: MigrateRecord) -> Result<Record, Status> {
    let space = Space::from_wire(r.space).ok_or_else(|| {
        Status::invalid_argument(format!("records[].space: {} is neither 0 (kv) nor 1 (graph)", r.space))
    })?;
    Ok(Record { key: r.key, value: (!r.deleted).then_some(r.value), mark: r.mark, space })
}

fn txn_from_proto(txn: ShardTxn) -> Result<Txn, Status> {
    let ops = txn
        .ops
        .into_iter()
        .map(|op| match op.op {
            Some(shard_op::Op::Put(p)) => Ok(Op::Put {
                key: p.key,
                value: p.value,
                expires_at_ms: p.expires_at_ms,
                expected_version: p.expected_version,
            }),
            Some(shard_op::Op::Delete(d)) => Ok(Op::Delete { key: d.key, expected_version: d.expected_version }),
            None => Err(Status::invalid_argument("ops: an op has neither put nor delete")),
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(Txn { namespace: txn.namespace, ops })
}

fn entry_to_proto(e: Entry) -> ShardScanEntry {
    ShardScanEntry { key: e.key, value: e.value, version: e.version, expires_at_ms: e.expires_at_ms }
}

/// Accepted connections with the internal ports' deadlines: a connection
/// that sends nothing within the handshake timeout is closed.
fn incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<omnishard_serving::connection::Guarded>> + Send + 'static {
    omnishard_serving::incoming(listener, omnishard_serving::ConnectionSettings::internal())
}
