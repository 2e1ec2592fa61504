//! The gateway's connection to one shard: a pooled tonic channel behind tower
//! layers, and the translation of shard failures into gateway errors that
//! name the shard.
//!
//! Layers, outermost first:
//! 0. [`ShardCalls`] — a client span per call, the `traceparent` header, and
//!    per-shard latency and error metrics.
//! 1. [`Guard`] — circuit breaker (failsafe): after repeated transport
//!    failures the shard is skipped for a backoff period, so a dead shard
//!    costs its callers microseconds instead of a connect timeout each.
//!    It also turns transport errors into statuses that say what happened.
//! 2. concurrency limit — bounds in-flight calls to one shard.
//! 3. timeout — no call waits longer than `request_timeout`.
//! 4. the channel — one HTTP/2 connection, multiplexing every call, reconnecting lazily.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use failsafe::failure_policy::{self, ConsecutiveFailures};
use failsafe::StateMachine;
use omnishard_common::read_mode::ReadMode;
use omnishard_common::rejection::Rejection;
use omnishard_common::topology::ShardAddr;
use omnishard_proto::v1::shard_file_service_client::ShardFileServiceClient;
use omnishard_proto::v1::shard_service_client::ShardServiceClient;
use omnishard_proto::v1::*;
use omnishard_telemetry::client::{ShardCallLayer, ShardCalls};
use tonic::transport::{Channel, Endpoint};
use tower::limit::ConcurrencyLimit;
use tower::timeout::Timeout;
use tower::{BoxError, Service, ServiceBuilder};

use crate::config::GatewaySettings;
use crate::error::{Error, Result};

/// Largest message exchanged with a shard.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

type Breaker = StateMachine<ConsecutiveFailures<Doubling>, ()>;
type Stack = ShardCalls<Guard<ConcurrencyLimit<Timeout<Channel>>>>;

/// A cheap-to-clone handle for calling one replica of a shard
/// ([`crate::replicas::ShardClient`] picks the replica).
#[derive(Clone)]
pub struct ReplicaClient {
    id: Arc<str>,
    addr: Arc<str>,
    grpc: ShardServiceClient<Stack>,
    /// The same connection and breaker for calls whose own deadline is
    /// longer than `request_timeout` (searches, index rebuilds).
    long: ShardServiceClient<Stack>,
    /// File chunks and manifests, on a connection of their own: a large
    /// transfer then never shares HTTP/2 flow control with point operations.
    files: ShardFileServiceClient<Stack>,
}

/// How long a long-running shard call (an index rebuild) may take.
pub const LONG_CALL_TIMEOUT: Duration = Duration::from_secs(600);

// RPC methods take `self`: the client is a cheap clone, and an owned
// receiver lets callers return the call's future from a closure.
impl ReplicaClient {
    /// Creates the client without connecting; the channel connects on first use
    /// and reconnects after failures, so a dead shard never blocks others.
    pub fn new(shard: &ShardAddr, settings: &GatewaySettings) -> Result<ReplicaClient> {
        let endpoint = Endpoint::from_shared(format!("http://{}", shard.addr))
            .map_err(|e| {
                omnishard_common::Error::Topology(format!("shard {} address {:?}: {e}", shard.id, shard.addr))
            })?
            .connect_timeout(settings.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = endpoint.clone().connect_lazy();
        // Bulk streams want wide HTTP/2 windows and large frames; point calls keep the defaults.
        let file_channel = endpoint
            .initial_stream_window_size(8 << 20)
            .initial_connection_window_size(32 << 20)
            .max_frame_size(1 << 20)
            .connect_lazy();
        let breaker = failsafe::Config::new()
            .failure_policy(failure_policy::consecutive_failures(
                settings.breaker_failures.max(1),
                Doubling { next: settings.breaker_backoff, max: settings.breaker_max_backoff },
            ))
            .build();
        watch_breaker(&shard.id, breaker.clone());
        let stack = |channel: &Channel, timeout: Duration| {
            ServiceBuilder::new()
                .layer(ShardCallLayer::new(&shard.id))
                .layer_fn(|inner| Guard { inner, breaker: breaker.clone(), timeout })
                .concurrency_limit(settings.shard_concurrency)
                .timeout(timeout)
                .service(channel.clone())
        };
        let client = |timeout: Duration| {
            ShardServiceClient::new(stack(&channel, timeout))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
        };
        let files = ShardFileServiceClient::new(stack(&file_channel, LONG_CALL_TIMEOUT))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(ReplicaClient {
            id: Arc::from(shard.id.as_str()),
            addr: Arc::from(shard.addr.as_str()),
            grpc: client(settings.request_timeout),
            long: client(LONG_CALL_TIMEOUT),
            files,
        })
    }

    /// The shard's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The shard's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Reads keys, with the consistency `mode` asks of the replica.
    pub async fn read(self, req: ShardReadRequest, mode: ReadMode) -> Result<ShardReadResponse> {
        let mut request = tonic::Request::new(req);
        mode.write(request.metadata_mut());
        self.grpc.clone().read(request).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn apply(self, req: ShardApplyRequest) -> Result<ShardApplyResponse> {
        self.grpc.clone().apply(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn scan(self, req: ShardScanRequest) -> Result<ShardScanResponse> {
        self.grpc.clone().scan(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn stats(self) -> Result<ShardStatsResponse> {
        self.grpc.clone().stats(ShardStatsRequest {}).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn graph_apply(self, req: ShardGraphApplyRequest) -> Result<ShardGraphApplyResponse> {
        self.grpc.clone().graph_apply(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn graph_get(self, req: ShardGraphGetRequest) -> Result<GetVerticesResponse> {
        self.grpc.clone().graph_get(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn graph_edges(self, req: ShardGraphEdgesRequest) -> Result<NeighborsResponse> {
        self.grpc.clone().graph_edges(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn graph_edges_many(self, req: ShardGraphEdgesManyRequest) -> Result<ShardGraphEdgesManyResponse> {
        self.grpc.clone().graph_edges_many(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn graph_pending(self, req: ShardGraphPendingRequest) -> Result<ShardGraphPendingResponse> {
        self.grpc.clone().graph_pending(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn graph_find(self, req: ShardGraphFindRequest) -> Result<FindVerticesResponse> {
        self.grpc.clone().graph_find(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn graph_expand(self, req: ShardGraphExpandRequest) -> Result<ShardGraphExpandResponse> {
        self.grpc.clone().graph_expand(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn search_define(self, req: ShardSearchDefineRequest) -> Result<ShardSearchDefineResponse> {
        self.long.clone().search_define(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn search_drop(self, req: DropIndexRequest) -> Result<DropIndexResponse> {
        self.grpc.clone().search_drop(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn search_list(self, req: ShardSearchListRequest) -> Result<ShardSearchListResponse> {
        self.long.clone().search_list(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn search_write(self, req: ShardSearchWriteRequest) -> Result<IndexDocumentsResponse> {
        self.grpc.clone().search_write(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn search_get(self, req: ShardSearchGetRequest) -> Result<GetDocumentsResponse> {
        self.grpc.clone().search_get(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    // The search phases carry their own deadline (the shard enforces it and
    // the gateway wraps the whole search in it), so they use the long client.
    pub async fn search_stats(self, req: ShardSearchStatsRequest) -> Result<ShardSearchStatsResponse> {
        self.long.clone().search_stats(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn search_query(self, req: ShardSearchQueryRequest) -> Result<ShardSearchQueryResponse> {
        self.long.clone().search_query(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn search_fetch(self, req: ShardSearchFetchRequest) -> Result<ShardSearchFetchResponse> {
        self.long.clone().search_fetch(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn search_refresh(self, req: RefreshRequest) -> Result<RefreshResponse> {
        self.long.clone().search_refresh(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn search_reindex(self, req: ReindexRequest) -> Result<ReindexResponse> {
        self.long.clone().search_reindex(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    // File calls use the file connection; their deadline is the long one,
    // because a chunk may wait behind a large transfer's on the shard.
    pub async fn chunk_put(self, req: ShardChunkPutRequest) -> Result<ShardChunkPutResponse> {
        self.files.clone().chunk_put(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn chunk_claim(self, req: ShardChunkClaimRequest) -> Result<ShardChunkClaimResponse> {
        self.files.clone().chunk_claim(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn chunk_get(self, req: ShardChunkGetRequest) -> Result<ShardChunkGetResponse> {
        self.files.clone().chunk_get(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn upload_control(self, req: ShardUploadControlRequest) -> Result<ShardUploadControlResponse> {
        self.files.clone().upload_control(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn manifest_commit(self, req: ShardManifestCommitRequest) -> Result<ShardManifestCommitResponse> {
        self.files.clone().manifest_commit(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn manifest_get(self, req: ShardManifestGetRequest) -> Result<ShardManifestGetResponse> {
        self.files.clone().manifest_get(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn manifest_delete(self, req: ShardManifestDeleteRequest) -> Result<ShardManifestDeleteResponse> {
        self.files.clone().manifest_delete(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn manifest_list(self, req: ShardManifestListRequest) -> Result<ShardManifestListResponse> {
        self.files.clone().manifest_list(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn read_lease(self, req: ShardReadLeaseRequest) -> Result<ShardReadLeaseResponse> {
        self.files.clone().read_lease(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn files_pending(self, req: ShardFilesPendingRequest) -> Result<ShardFilesPendingResponse> {
        self.files.clone().files_pending(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn garbage_forget(self, req: ShardGarbageForgetRequest) -> Result<ShardGarbageForgetResponse> {
        self.files.clone().garbage_forget(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn chunk_verify(self, req: ShardChunkVerifyRequest) -> Result<ShardChunkVerifyResponse> {
        self.files.clone().chunk_verify(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn chunks_present(self, req: ShardChunksPresentRequest) -> Result<ShardChunksPresentResponse> {
        self.files.clone().chunks_present(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn trace_spans(self, req: TraceRequest) -> Result<TraceResponse> {
        self.grpc.clone().trace_spans(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn migrate_begin(self, req: MigrateBeginRequest) -> Result<MigrateBeginResponse> {
        self.long.clone().migrate_begin(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn migrate_export(self, req: MigrateExportRequest) -> Result<MigrateRecords> {
        self.long.clone().migrate_export(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn migrate_dirty(self, req: MigrateDirtyRequest) -> Result<MigrateRecords> {
        self.long.clone().migrate_dirty(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn migrate_ack(self, req: MigrateAckRequest) -> Result<MigrateAckResponse> {
        self.long.clone().migrate_ack(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn migrate_ingest(self, req: MigrateIngestRequest) -> Result<MigrateIngestResponse> {
        self.long.clone().migrate_ingest(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn migrate_drop(self, req: MigrateDropRequest) -> Result<MigrateDropResponse> {
        self.long.clone().migrate_drop(req).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    pub async fn install_topology(self, req: InstallTopologyRequest) -> Result<u64> {
        self.grpc.clone().install_topology(req).await.map(|r| r.into_inner().epoch).map_err(|s| self.error(s))
    }

    /// Translates a status from this shard (or from the layers in front of it).
    pub fn error(&self, status: tonic::Status) -> Error {
        let shard_id = self.id.to_string();
        if let Some(leader) = Rejection::leader_hint(&status) {
            return Error::NotLeader { shard_id, leader, message: status.message().to_string() };
        }
        if let Some((kind, shard_epoch)) = Rejection::kind_of(&status) {
            if kind == "moving" {
                return Error::Moving { shard_id, message: status.message().to_string() };
            }
            return Error::Misrouted {
                shard_id,
                wrong_epoch: kind == "wrong-epoch",
                shard_epoch,
                message: status.message().to_string(),
            };
        }
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown => {
                Error::ShardUnavailable { shard_id, addr: self.addr.to_string(), reason: status.message().to_string() }
            }
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                Error::ShardTimeout { shard_id, message: status.message().to_string() }
            }
            code => Error::Shard { shard_id, code, message: status.message().to_string() },
        }
    }
}

/// Publishes the breaker's state as `omnishard_shard_breaker_open{shard}` (1 = open).
fn watch_breaker(shard_id: &str, breaker: Breaker) {
    static GAUGE: std::sync::OnceLock<prometheus::IntGaugeVec> = std::sync::OnceLock::new();
    let metrics = &omnishard_telemetry::global().metrics;
    let gauge = GAUGE
        .get_or_init(|| {
            metrics.gauge_vec(
                "shard_breaker_open",
                "1 while the gateway's circuit breaker to a shard is open",
                &["shard"],
            )
        })
        .clone();
    let shard_id = shard_id.to_string();
    metrics.on_scrape(move || {
        // An open breaker whose back-off has passed lets the next call probe
        // the shard (half-open), which counts as closed here.
        let open = !breaker.is_call_permitted();
        gauge.with_label_values(&[shard_id.as_str()]).set(i64::from(open));
    });
}

/// Open periods of the circuit: `next`, doubling up to `max`. (failsafe's
/// own backoffs start at one second, too long for a shard that restarts fast.)
#[derive(Debug, Clone)]
pub struct Doubling {
    next: Duration,
    max: Duration,
}

impl Iterator for Doubling {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next.min(self.max);
        self.next = (current * 2).min(self.max);
        Some(current)
    }
}

/// Circuit breaker and error naming in front of a shard's channel.
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    breaker: Breaker,
    timeout: Duration,
}

impl<S, Req> Service<Req> for Guard<S>
where
    S: Service<Req, Error = BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let timeout = self.timeout;
        self.inner.poll_ready(cx).map_err(|e| describe(e, timeout))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if !self.breaker.is_call_permitted() {
            let status = tonic::Status::unavailable("circuit open after repeated failures; retrying shortly");
            return Box::pin(std::future::ready(Err(Box::new(status) as BoxError)));
        }
        let breaker = self.breaker.clone();
        let timeout = self.timeout;
        let call = self.inner.call(req);
        Box::pin(async move {
            match call.await {
                Ok(response) => {
                    breaker.on_success();
                    Ok(response)
                }
                Err(e) => {
                    if counts_against_shard(&e) {
                        breaker.on_error();
                    }
                    Err(describe(e, timeout))
                }
            }
        })
    }
}

/// Whether a failed call says the shard is unreachable or broken, rather
/// than that one stream was reset (a peer refusing one oversized header,
/// say): only the former may open the circuit that every caller of the
/// shard depends on, so one client's bad requests cannot open it for all.
fn counts_against_shard(err: &BoxError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            // A shard that resets a stream with INTERNAL_ERROR is broken; other
            // resets (refused, cancelled, a protocol error on one stream) are not.
            let broken_stream = h2.reason() == Some(h2::Reason::INTERNAL_ERROR);
            return !h2.is_reset() || h2.is_go_away() || broken_stream;
        }
        source = e.source();
    }
    true
}

/// Turns a transport-level error into a status whose message says what failed.
fn describe(err: BoxError, timeout: Duration) -> BoxError {
    if err.is::<tower::timeout::error::Elapsed>() {
        let status = tonic::Status::deadline_exceeded(format!("no answer within {}ms", timeout.as_millis()));
        return Box::new(status);
    }
    let mut reason = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        // Transport errors often repeat their cause's text; say it once.
        let cause_text = cause.to_string();
        if !reason.ends_with(&cause_text) {
            reason.push_str(": ");
            reason.push_str(&cause_text);
        }
        source = cause.source();
    }
    Box::new(tonic::Status::unavailable(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_breaker_backoff_doubles_to_the_cap() {
        let periods: Vec<u128> = Doubling { next: Duration::from_millis(250), max: Duration::from_secs(2) }
            .take(6)
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(periods, vec![250, 500, 1000, 2000, 2000, 2000]);
    }
}
