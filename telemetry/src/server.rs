//! The tower layer in front of every gRPC server (gateway and shard): one
//! server span per request (`<prefix>.<Service>.<Method>`, joined to the
//! caller's W3C trace context), the `x-trace-id` response header, request
//! metrics by service, method and final status code, the in-flight gauge,
//! and the slow-request log line.
//!
//! The span and the timer live until the response *body* ends, so a
//! streaming response (a download) is measured whole, its final status is
//! read from the trailers, and work done while the body streams is traced
//! inside the request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use opentelemetry::trace::Status as SpanStatus;
use tower::{BoxError, Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::propagation::{self, TRACE_ID_HEADER};
use crate::rpc::{self, RpcNames};
use crate::{code_name, Telemetry};

/// Wraps a server in [`Requests`].
#[derive(Clone)]
pub struct RequestLayer {
    prefix: &'static str,
    /// Paths served without a span (metrics only): high-rate internal calls.
    untraced: &'static [&'static str],
    /// Set as `shard.id` on every span (shards only); shared, not copied per request.
    shard_id: Option<opentelemetry::StringValue>,
}

impl RequestLayer {
    /// Spans are named `<prefix>.<Service>.<Method>`.
    pub fn new(prefix: &'static str) -> RequestLayer {
        RequestLayer { prefix, untraced: &[], shard_id: None }
    }

    /// Serves `paths` (full gRPC paths) with metrics but no span: calls
    /// between replicas arrive thousands of times a second, cost CPU to
    /// trace, and would push client requests out of the trace buffer.
    pub fn without_spans(mut self, paths: &'static [&'static str]) -> RequestLayer {
        self.untraced = paths;
        self
    }

    /// Tags every span with `shard.id`.
    pub fn with_shard_id(mut self, id: &str) -> RequestLayer {
        self.shard_id = Some(std::sync::Arc::<str>::from(id).into());
        self
    }
}

impl<S> Layer<S> for RequestLayer {
    type Service = Requests<S>;

    fn layer(&self, inner: S) -> Requests<S> {
        Requests { inner, layer: self.clone(), telemetry: crate::global() }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct Requests<S> {
    inner: S,
    layer: RequestLayer,
    telemetry: &'static Telemetry,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl<S, B, RB> Service<http::Request<B>> for Requests<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    RB: Body + Default + Unpin + Send + 'static,
{
    type Response = http::Response<TracedBody<RB>>;
    type Error = BoxError;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = Call::start(&self.layer, self.telemetry, &request);
        let span = call.span.clone();
        let future = span.in_scope(|| self.inner.call(request)).instrument(span);
        Box::pin(async move {
            let mut call = call;
            // Shed requests arrive here as answers (`omnishard_serving::admission`
            // counts them in `load_shed`); an error is the service failing.
            let response = match future.await {
                Ok(response) => response,
                Err(err) => {
                    call.code = Some(tonic::Code::Unknown);
                    return Err(err.into());
                }
            };
            Ok(call.respond(response))
        })
    }
}

/// One request being served: its span, timer and final status.
struct Call {
    span: tracing::Span,
    telemetry: &'static Telemetry,
    names: std::sync::Arc<RpcNames>,
    start: Instant,
    trace_id: Option<String>,
    code: Option<tonic::Code>,
    message: String,
    body_ended: bool,
}

impl Call {
    fn start<B>(layer: &RequestLayer, telemetry: &'static Telemetry, request: &http::Request<B>) -> Call {
        let names = rpc::names(layer.prefix, request.uri().path());
        let span = if layer.untraced.contains(&request.uri().path()) {
            tracing::Span::none()
        } else {
            Call::span(layer, &names, request)
        };
        let trace_id = propagation::trace_id(&span).map(|id| id.to_string());
        telemetry.metrics.in_flight.inc();
        Call {
            span,
            telemetry,
            names,
            start: Instant::now(),
            trace_id,
            code: None,
            message: String::new(),
            body_ended: false,
        }
    }

    /// The server span of a traced request, child of the caller's context.
    fn span<B>(layer: &RequestLayer, names: &RpcNames, request: &http::Request<B>) -> tracing::Span {
        // Service and method are in the span name; as attributes of their own
        // (OpenTelemetry's `rpc.service`, `rpc.method`) they cost an
        // allocation each on every request and told the reader nothing new.
        let span = tracing::info_span!(
            target: "omnishard::request",
            "request",
            otel.name = names.span_name.as_str(),
            otel.kind = "server",
        );
        let parent = propagation::extract(request.headers());
        if opentelemetry::trace::TraceContextExt::has_active_span(&parent) {
            let _ = span.set_parent(parent);
        }
        if let Some(id) = &layer.shard_id {
            span.set_attribute("shard.id", id.clone());
        }
        span
    }

    /// Reads a trailers-only status and tags the response with the trace id.
    fn respond<RB>(mut self, mut response: http::Response<RB>) -> http::Response<TracedBody<RB>> {
        self.read_status(response.headers());
        if let Some(mut id) = self.trace_id.as_deref().and_then(|id| http::HeaderValue::from_str(id).ok()) {
            propagation::never_index(&mut id);
            response.headers_mut().insert(TRACE_ID_HEADER, id);
        }
        response.map(|inner| TracedBody { inner, call: Some(self) })
    }

    fn read_status(&mut self, headers: &http::HeaderMap) {
        if let Some(status) = tonic::Status::from_header_map(headers) {
            self.code = Some(status.code());
            self.message = status.message().to_string();
        }
    }

    /// Records the request once its response is complete (or abandoned).
    fn finish(&mut self) {
        let code = self.code.unwrap_or(if self.body_ended { tonic::Code::Ok } else { tonic::Code::Cancelled });
        let elapsed = self.start.elapsed();
        let (service, method) = (self.names.service.as_str(), self.names.method.as_str());
        // Unknown paths must not mint new label values: the caller chooses them.
        let (service, method) =
            if code == tonic::Code::Unimplemented { ("unknown", "unknown") } else { (service, method) };
        let metrics = &self.telemetry.metrics;
        metrics.in_flight.dec();
        metrics.latency.with_label_values(&[service, method]).observe(elapsed.as_secs_f64());
        metrics.requests.with_label_values(&[service, method, code_name(code)]).inc();
        self.span.set_attribute("rpc.grpc.status_code", code as i64);
        if code != tonic::Code::Ok {
            self.span.set_attribute("error.code", code_name(code));
            self.span.set_status(SpanStatus::error(std::mem::take(&mut self.message)));
        }
        if elapsed >= self.telemetry.buffer.slow_threshold() {
            metrics.slow.with_label_values(&[service, method]).inc();
            // Inside the span, so the line carries its trace and span ids.
            self.span.in_scope(|| {
                tracing::warn!(
                    target: "omnishard::slow",
                    trace_id = self.trace_id.as_deref().unwrap_or("-"),
                    rpc = self.names.path.as_str(),
                    code = code_name(code),
                    duration_ms = elapsed.as_secs_f64() * 1e3,
                    "slow request"
                );
            });
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A response body that keeps its request's span open and records the
/// request when it ends.
pub struct TracedBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B: Body + Unpin> Body for TracedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        let polled = match &this.call {
            Some(call) => call.span.in_scope(|| Pin::new(&mut this.inner).poll_frame(cx)),
            None => Pin::new(&mut this.inner).poll_frame(cx),
        };
        if let Some(call) = this.call.as_mut() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        call.read_status(trailers);
                    }
                }
                Poll::Ready(Some(Err(_))) => call.code = call.code.or(Some(tonic::Code::Internal)),
                Poll::Ready(None) => {
                    call.body_ended = true;
                    this.call = None;
                }
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
