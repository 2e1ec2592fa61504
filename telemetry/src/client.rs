//! The tower layer in front of a channel to a shard: a client span per call
//! (`call.<Service>.<Method>`, tagged `shard.id`), the W3C `traceparent`
//! header that joins the shard's server span to it, and the caller-side
//! per-shard latency and error metrics.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use opentelemetry::trace::Status as SpanStatus;
use tower::{BoxError, Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{code_name, propagation, rpc, Telemetry};

/// Wraps a channel to shard `shard_id` in [`ShardCalls`].
#[derive(Clone)]
pub struct ShardCallLayer {
    shard_id: Arc<str>,
}

impl ShardCallLayer {
    pub fn new(shard_id: &str) -> ShardCallLayer {
        ShardCallLayer { shard_id: Arc::from(shard_id) }
    }
}

impl<S> Layer<S> for ShardCallLayer {
    type Service = ShardCalls<S>;

    fn layer(&self, inner: S) -> ShardCalls<S> {
        ShardCalls { inner, shard_id: self.shard_id.clone(), telemetry: crate::global() }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct ShardCalls<S> {
    inner: S,
    shard_id: Arc<str>,
    telemetry: &'static Telemetry,
}

impl<S, B, RB> Service<http::Request<B>> for ShardCalls<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>, Error = BoxError>,
    S::Future: Send + 'static,
    RB: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let names = rpc::names("call", request.uri().path());
        let span = tracing::info_span!(
            target: "omnishard::call",
            "call",
            otel.name = names.span_name.as_str(),
            otel.kind = "client",
            shard.id = &*self.shard_id,
        );
        propagation::inject(&span, request.headers_mut());
        let future = span.in_scope(|| self.inner.call(request)).instrument(span.clone());
        let shard_id = self.shard_id.clone();
        let telemetry = self.telemetry;
        let start = Instant::now();
        Box::pin(async move {
            let result = future.await;
            let status = match &result {
                Ok(response) => tonic::Status::from_header_map(response.headers()),
                Err(err) => Some(match err.downcast_ref::<tonic::Status>() {
                    Some(status) => status.clone(),
                    None => tonic::Status::unavailable(err.to_string()),
                }),
            };
            let method = names.method.as_str();
            let metrics = &telemetry.metrics;
            metrics.shard_latency.with_label_values(&[&shard_id, method]).observe(start.elapsed().as_secs_f64());
            if let Some(status) = status.filter(|s| s.code() != tonic::Code::Ok) {
                let code = code_name(status.code());
                metrics.shard_errors.with_label_values(&[&shard_id, method, code]).inc();
                span.set_attribute("error.code", code);
                span.set_status(SpanStatus::error(status.message().to_string()));
            }
            result
        })
    }
}
