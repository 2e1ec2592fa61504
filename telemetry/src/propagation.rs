//! W3C trace context (`traceparent`, `tracestate`) in gRPC metadata, which
//! travels as HTTP/2 headers: extracted by servers, injected by clients.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TraceId};
use opentelemetry::Context;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Response header carrying the request's trace id.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

/// The caller's trace context, or an empty one.
pub fn extract(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Writes `span`'s context into `headers`, so the callee joins the trace.
pub fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
    for name in ["traceparent", "tracestate"] {
        if let Some(value) = headers.get_mut(name) {
            never_index(value);
        }
    }
}

/// Keeps a per-request header value (a trace id) out of the HTTP/2 header
/// compression table. Every value is new, so indexing it would only evict
/// the entries that do repeat (content-type, grpc-status) from the table on
/// both ends of the connection, making every later header block bigger and
/// slower to encode and decode.
pub fn never_index(value: &mut http::HeaderValue) {
    value.set_sensitive(true);
}

/// The trace id of `span`, if tracing is on.
pub fn trace_id(span: &tracing::Span) -> Option<TraceId> {
    if span.is_none() {
        return None;
    }
    let id = span.context().span().span_context().trace_id();
    (id != TraceId::INVALID).then_some(id)
}

/// Sets a cost attribute on the current span (a no-op outside one).
pub fn record(key: &'static str, value: impl Into<opentelemetry::Value>) {
    tracing::Span::current().set_attribute(key, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_extract_reads_traceparent() {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
        let context = extract(&headers);
        let span = context.span();
        let parent = span.span_context();
        assert_eq!(parent.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.span_id().to_string(), "00f067aa0ba902b7");
        assert!(parent.is_remote());
    }
}
