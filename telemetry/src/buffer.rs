//! The in-memory span buffer behind `omnishard admin trace` and `admin slow`:
//! an OpenTelemetry span processor that keeps this process's recent spans in
//! a bounded ring, and moves every span of a slow request into a second,
//! separately bounded store so a burst of fast requests cannot evict it.
//!
//! A *request* is a local root server span: no parent in this process (the
//! gateway's `gateway.<Service>.<Method>` span, a shard's server span). Its
//! children end before it does, so when a slow root ends its spans are still
//! in the ring and are copied out then; spans of that trace that end later
//! (background work) go straight to the slow store.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanId, SpanKind, Status, TraceId};
use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

/// How much the buffer keeps.
#[derive(Debug, Clone, Copy)]
pub struct BufferLimits {
    /// Recent spans of any request.
    pub recent_spans: usize,
    /// Traces of slow requests.
    pub slow_traces: usize,
    /// Spans kept per slow trace.
    pub spans_per_slow_trace: usize,
    /// Request summaries kept for `admin slow`.
    pub requests: usize,
    /// A request at least this long is slow.
    pub slow_threshold: Duration,
}

impl Default for BufferLimits {
    fn default() -> Self {
        BufferLimits {
            recent_spans: 20_000,
            slow_traces: 256,
            spans_per_slow_trace: 2_000,
            requests: 10_000,
            slow_threshold: Duration::from_millis(100),
        }
    }
}

/// One finished span, as `admin trace` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// `SpanId::INVALID` for a root.
    pub parent_span_id: SpanId,
    pub name: String,
    pub start: SystemTime,
    pub duration: Duration,
    /// Attributes as `key=value` text, in the order they were set.
    pub attributes: Vec<(String, String)>,
    /// The error message when the span failed.
    pub error: Option<String>,
}

/// One finished request (a local root span), as `admin slow` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    pub trace_id: TraceId,
    pub name: String,
    pub start: SystemTime,
    pub duration: Duration,
    /// The gRPC status code name (`ok`, `not_found`, ...).
    pub code: String,
}

#[derive(Default)]
struct Store {
    recent: VecDeque<Arc<SpanData>>,
    slow: HashMap<TraceId, Vec<Arc<SpanData>>>,
    slow_order: VecDeque<TraceId>,
    /// Local root server spans; turned into [`RequestRecord`]s only when asked.
    requests: VecDeque<Arc<SpanData>>,
}

/// The buffer; cheap to clone, every clone shares the same store.
#[derive(Clone)]
pub struct SpanBuffer {
    limits: BufferLimits,
    store: Arc<Mutex<Store>>,
}

impl std::fmt::Debug for SpanBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanBuffer").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl SpanBuffer {
    pub fn new(limits: BufferLimits) -> SpanBuffer {
        SpanBuffer { limits, store: Arc::default() }
    }

    /// The slow-request threshold.
    pub fn slow_threshold(&self) -> Duration {
        self.limits.slow_threshold
    }

    /// Every span of `trace_id` this process still holds, oldest start first.
    pub fn trace(&self, trace_id: TraceId) -> Vec<SpanRecord> {
        let store = self.lock();
        let mut spans: Vec<Arc<SpanData>> = store.slow.get(&trace_id).cloned().unwrap_or_default();
        let known: std::collections::HashSet<SpanId> = spans.iter().map(|s| s.span_context.span_id()).collect();
        spans.extend(
            store
                .recent
                .iter()
                .filter(|s| s.span_context.trace_id() == trace_id && !known.contains(&s.span_context.span_id()))
                .cloned(),
        );
        drop(store);
        let mut records: Vec<SpanRecord> = spans.iter().map(|s| record(s)).collect();
        records.sort_by_key(|r| r.start);
        records
    }

    /// The `limit` slowest requests still remembered, slowest first.
    pub fn slowest(&self, limit: usize) -> Vec<RequestRecord> {
        let mut requests: Vec<Arc<SpanData>> = self.lock().requests.iter().cloned().collect();
        requests.sort_by_key(|span| std::cmp::Reverse(duration(span)));
        requests.truncate(limit);
        requests.iter().map(|span| request(span)).collect()
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Files a finished span. Runs on the request path for every span, so it
    /// only moves pointers under the lock; evicted spans are freed after it.
    fn keep(&self, span: SpanData) {
        let span = Arc::new(span);
        let trace_id = span.span_context.trace_id();
        // Background work (a sweeper's shard calls) has roots too, but no server span.
        let is_request = span.span_kind == SpanKind::Server
            && (span.parent_span_id == SpanId::INVALID || span.parent_span_is_remote);
        let is_slow = is_request && duration(&span) >= self.limits.slow_threshold;
        let mut evicted = Vec::new();
        let mut store = self.lock();
        if is_slow {
            self.promote(&mut store, trace_id);
        }
        if let Some(slow) = store.slow.get_mut(&trace_id) {
            if slow.len() < self.limits.spans_per_slow_trace {
                slow.push(span.clone());
            }
        }
        if is_request {
            if store.requests.len() >= self.limits.requests {
                evicted.extend(store.requests.pop_front());
            }
            store.requests.push_back(span.clone());
        }
        if store.recent.len() >= self.limits.recent_spans {
            evicted.extend(store.recent.pop_front());
        }
        store.recent.push_back(span);
        drop(store);
        drop(evicted);
    }

    /// Copies the spans of a slow trace out of the ring, evicting the oldest slow trace if full.
    fn promote(&self, store: &mut Store, trace_id: TraceId) {
        if store.slow.contains_key(&trace_id) {
            return;
        }
        if store.slow_order.len() >= self.limits.slow_traces {
            if let Some(oldest) = store.slow_order.pop_front() {
                store.slow.remove(&oldest);
            }
        }
        let spans: Vec<Arc<SpanData>> = store
            .recent
            .iter()
            .filter(|s| s.span_context.trace_id() == trace_id)
            .take(self.limits.spans_per_slow_trace)
            .cloned()
            .collect();
        store.slow.insert(trace_id, spans);
        store.slow_order.push_back(trace_id);
    }
}

fn duration(span: &SpanData) -> Duration {
    span.end_time.duration_since(span.start_time).unwrap_or_default()
}

fn request(span: &SpanData) -> RequestRecord {
    RequestRecord {
        trace_id: span.span_context.trace_id(),
        name: span.name.to_string(),
        start: span.start_time,
        duration: duration(span),
        code: attribute(span, "error.code").unwrap_or_else(|| "ok".into()),
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
}

/// Attributes that only steer the exporter, not worth showing.
fn shown(key: &str) -> bool {
    !matches!(key, "busy_ns" | "idle_ns" | "code.file.path" | "code.line.number" | "code.module.name" | "target")
        && !key.starts_with("thread.")
}

fn record(span: &SpanData) -> SpanRecord {
    SpanRecord {
        trace_id: span.span_context.trace_id(),
        span_id: span.span_context.span_id(),
        parent_span_id: span.parent_span_id,
        name: span.name.to_string(),
        start: span.start_time,
        duration: duration(span),
        attributes: span
            .attributes
            .iter()
            .filter(|kv| shown(kv.key.as_str()))
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect(),
        error: match &span.status {
            Status::Error { description } => Some(description.to_string()),
            _ => None,
        },
    }
}

impl SpanProcessor for SpanBuffer {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        self.keep(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, TraceFlags, TraceState};
    use opentelemetry::KeyValue;

    fn span(trace: u128, id: u64, parent: u64, name: &str, start_ms: u64, ms: u64) -> SpanData {
        let start = SystemTime::UNIX_EPOCH + Duration::from_millis(start_ms);
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(trace),
                SpanId::from(id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: false,
            span_kind: if parent == 0 { SpanKind::Server } else { SpanKind::Internal },
            name: name.to_string().into(),
            start_time: start,
            end_time: start + Duration::from_millis(ms),
            attributes: vec![KeyValue::new("keys", 3)],
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    fn limits(recent: usize) -> BufferLimits {
        BufferLimits { recent_spans: recent, slow_threshold: Duration::from_millis(100), ..BufferLimits::default() }
    }

    #[test]
    fn test_trace_returns_its_spans_in_start_order() {
        let buffer = SpanBuffer::new(limits(100));
        buffer.on_end(span(1, 11, 10, "child", 5, 2));
        buffer.on_end(span(2, 20, 0, "other", 0, 1));
        buffer.on_end(span(1, 10, 0, "root", 0, 10));
        let spans = buffer.trace(TraceId::from(1));
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["root", "child"]);
        assert_eq!(spans[1].parent_span_id, SpanId::from(10));
        assert_eq!(spans[1].attributes, vec![("keys".to_string(), "3".to_string())]);
    }

    #[test]
    fn test_slow_request_survives_eviction_of_the_ring() {
        let buffer = SpanBuffer::new(limits(4));
        buffer.on_end(span(1, 11, 10, "slow child", 1, 150));
        buffer.on_end(span(1, 10, 0, "slow root", 0, 200));
        for i in 0..10 {
            buffer.on_end(span(100 + i, 1, 0, "fast", 0, 1));
        }
        assert_eq!(buffer.trace(TraceId::from(1)).len(), 2, "a slow trace must outlive the ring");
        assert!(buffer.trace(TraceId::from(100)).is_empty(), "fast traces are evicted");
    }

    #[test]
    fn test_slowest_lists_requests_slowest_first() {
        let buffer = SpanBuffer::new(limits(100));
        buffer.on_end(span(1, 1, 0, "a", 0, 5));
        buffer.on_end(span(2, 2, 0, "b", 0, 50));
        buffer.on_end(span(3, 3, 0, "c", 0, 20));
        buffer.on_end(span(3, 4, 3, "not a request", 0, 90));
        let names: Vec<String> = buffer.slowest(2).into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["b", "c"]);
    }
}
