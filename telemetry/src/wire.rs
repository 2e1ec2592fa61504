//! The buffer's records as the `omnishard.v1` messages `admin trace` and
//! `admin slow` return.

use std::time::{Duration, SystemTime};

use omnishard_proto::v1::{SlowRequest, SpanAttribute, TraceSpan};
use opentelemetry::trace::{SpanId, TraceId};

use crate::buffer::{RequestRecord, SpanRecord};

/// Parses the 32 hex digits of a trace id, naming the field on error.
pub fn parse_trace_id(text: &str) -> Result<TraceId, String> {
    let text = text.trim();
    let valid = text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit());
    match TraceId::from_hex(text) {
        Ok(id) if valid && id != TraceId::INVALID => Ok(id),
        // Never echo an unbounded client string: a long one is described, not quoted.
        _ if text.len() > 64 => {
            Err(format!("trace_id: is {} bytes; a trace id is 32 hex digits, not all zero", text.len()))
        }
        _ => Err(format!("trace_id: {text:?} is not a trace id (32 hex digits, not all zero)")),
    }
}

/// `span` as recorded by `process`.
pub fn span(span: &SpanRecord, process: &str) -> TraceSpan {
    TraceSpan {
        trace_id: span.trace_id.to_string(),
        span_id: span.span_id.to_string(),
        parent_span_id: if span.parent_span_id == SpanId::INVALID {
            String::new()
        } else {
            span.parent_span_id.to_string()
        },
        name: span.name.clone(),
        process: process.to_string(),
        start_unix_nanos: unix_nanos(span.start),
        duration_nanos: nanos(span.duration),
        attributes: span
            .attributes
            .iter()
            .map(|(key, value)| SpanAttribute { key: key.clone(), value: value.clone() })
            .collect(),
        error: span.error.clone().unwrap_or_default(),
    }
}

/// A request summary for `admin slow`.
pub fn request(request: &RequestRecord) -> SlowRequest {
    SlowRequest {
        trace_id: request.trace_id.to_string(),
        name: request.name.clone(),
        start_unix_nanos: unix_nanos(request.start),
        duration_nanos: nanos(request.duration),
        code: request.code.clone(),
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    nanos(time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default())
}

fn nanos(duration: Duration) -> u64 {
    duration.as_nanos().min(u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_trace_id_accepts_hex_and_names_the_field() {
        assert!(parse_trace_id("4bf92f3577b34da6a3ce929d0e0e4736").is_ok());
        let err = parse_trace_id("nope").unwrap_err();
        assert!(err.starts_with("trace_id:"), "{err}");
        assert!(parse_trace_id(&"0".repeat(32)).is_err());
    }

    #[test]
    fn test_a_long_trace_id_is_not_echoed() {
        let err = parse_trace_id(&"f".repeat(10_000)).unwrap_err();
        assert!(err.len() < 100, "{err}");
        assert!(err.contains("10000 bytes"), "{err}");
    }
}
