//! `omnishard admin trace` and `admin slow`: a trace's spans as an indented
//! waterfall (start offset, duration, process, cost attributes), and the
//! slowest recent requests.

use std::collections::{HashMap, HashSet};

use omnishard_client::Client;
use omnishard_proto::v1::{SlowRequestsResponse, TraceResponse, TraceSpan};
use serde_json::json;

use crate::args::Global;
use crate::output;

pub async fn trace(global: &Global, client: &Client, trace_id: &str) -> anyhow::Result<()> {
    let answer = client.trace(trace_id).await?;
    if global.json {
        output::print_json(&trace_json(&answer));
        return Ok(());
    }
    if answer.spans.is_empty() {
        anyhow::bail!(
            "no spans of trace {trace_id} are left in memory (the buffer keeps recent requests, and slow ones longer)"
        );
    }
    print!("{}", waterfall(&answer.spans));
    for process in &answer.unreachable {
        eprintln!("not asked: {process}");
    }
    Ok(())
}

pub async fn slow(global: &Global, client: &Client, limit: u32) -> anyhow::Result<()> {
    let answer = client.slow_requests(limit).await?;
    if global.json {
        output::print_json(&slow_json(&answer));
        return Ok(());
    }
    println!("{:>10}  {:<32}  {:<18}  REQUEST", "MS", "TRACE ID", "CODE");
    for request in &answer.requests {
        println!(
            "{:>10.3}  {:<32}  {:<18}  {}",
            request.duration_nanos as f64 / 1e6,
            request.trace_id,
            request.code,
            request.name
        );
    }
    println!(
        "(requests over {} ms keep every span: omnishard admin trace TRACE_ID)",
        answer.slow_threshold_nanos / 1_000_000
    );
    Ok(())
}

/// The spans as a tree: each line is `offset ms  duration ms  name [process] attributes`,
/// children indented under their parent and ordered by start.
pub fn waterfall(spans: &[TraceSpan]) -> String {
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: HashMap<&str, Vec<&TraceSpan>> = HashMap::new();
    let mut roots = Vec::new();
    for span in spans {
        if ids.contains(span.parent_span_id.as_str()) {
            children.entry(span.parent_span_id.as_str()).or_default().push(span);
        } else {
            roots.push(span); // the trace's root, or a span whose parent is not held here
        }
    }
    roots.sort_by_key(|s| s.start_unix_nanos);
    for list in children.values_mut() {
        list.sort_by_key(|s| s.start_unix_nanos);
    }
    let origin = spans.iter().map(|s| s.start_unix_nanos).min().unwrap_or(0);
    let total = spans.iter().map(|s| s.start_unix_nanos + s.duration_nanos).max().unwrap_or(origin) - origin;
    let mut out = format!(
        "trace {}  {} spans  {:.3} ms\n{:>10} {:>10}  SPAN\n",
        spans.first().map(|s| s.trace_id.as_str()).unwrap_or(""),
        spans.len(),
        total as f64 / 1e6,
        "START ms",
        "TOOK ms"
    );
    let mut stack: Vec<(&TraceSpan, usize)> = roots.into_iter().rev().map(|s| (s, 0)).collect();
    while let Some((span, depth)) = stack.pop() {
        out.push_str(&line(span, depth, origin));
        if let Some(kids) = children.get(span.span_id.as_str()) {
            stack.extend(kids.iter().rev().map(|kid| (*kid, depth + 1)));
        }
    }
    out
}

fn line(span: &TraceSpan, depth: usize, origin: u64) -> String {
    let attributes: Vec<String> =
        span.attributes.iter().filter(|a| !is_plumbing(&a.key)).map(|a| format!("{}={}", a.key, a.value)).collect();
    let mut text = format!(
        "{:>10.3} {:>10.3}  {}{} [{}]",
        span.start_unix_nanos.saturating_sub(origin) as f64 / 1e6,
        span.duration_nanos as f64 / 1e6,
        "  ".repeat(depth),
        span.name,
        span.process
    );
    if !attributes.is_empty() {
        text.push_str("  ");
        text.push_str(&attributes.join(" "));
    }
    if !span.error.is_empty() {
        text.push_str(&format!("  ERROR: {}", span.error));
    }
    text.push('\n');
    text
}

/// Attributes every span has, which would only clutter the waterfall.
fn is_plumbing(key: &str) -> bool {
    matches!(key, "rpc.system" | "rpc.service" | "rpc.method" | "span.kind" | "otel.kind" | "otel.name")
}

fn trace_json(answer: &TraceResponse) -> serde_json::Value {
    let spans: Vec<_> = answer
        .spans
        .iter()
        .map(|s| {
            let attributes: serde_json::Map<String, serde_json::Value> =
                s.attributes.iter().map(|a| (a.key.clone(), json!(a.value))).collect();
            json!({"trace_id": s.trace_id, "span_id": s.span_id, "parent_span_id": s.parent_span_id,
                   "name": s.name, "process": s.process, "start_unix_nanos": s.start_unix_nanos,
                   "duration_nanos": s.duration_nanos, "attributes": attributes, "error": s.error})
        })
        .collect();
    json!({"spans": spans, "unreachable": answer.unreachable})
}

fn slow_json(answer: &SlowRequestsResponse) -> serde_json::Value {
    let requests: Vec<_> = answer
        .requests
        .iter()
        .map(|r| {
            json!({"trace_id": r.trace_id, "name": r.name, "start_unix_nanos": r.start_unix_nanos,
                   "duration_nanos": r.duration_nanos, "code": r.code})
        })
        .collect();
    json!({"requests": requests, "slow_threshold_nanos": answer.slow_threshold_nanos})
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnishard_proto::v1::SpanAttribute;

    fn span(id: &str, parent: &str, name: &str, start: u64, took: u64) -> TraceSpan {
        TraceSpan {
            trace_id: "t".into(),
            span_id: id.into(),
            parent_span_id: parent.into(),
            name: name.into(),
            process: "gateway".into(),
            start_unix_nanos: start,
            duration_nanos: took,
            attributes: vec![SpanAttribute { key: "keys".into(), value: "2".into() }],
            error: String::new(),
        }
    }

    #[test]
    fn test_waterfall_indents_children_under_parents_in_start_order() {
        let spans = vec![
            span("c2", "r", "second", 3_000_000, 1_000_000),
            span("r", "", "root", 1_000_000, 5_000_000),
            span("g", "c1", "grandchild", 2_500_000, 500_000),
            span("c1", "r", "first", 2_000_000, 1_000_000),
        ];
        let text = waterfall(&spans);
        let lines: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].contains("     0.000      5.000  root [gateway]  keys=2"), "{text}");
        assert!(lines[1].contains("  first"), "{text}");
        assert!(lines[2].contains("    grandchild"), "{text}");
        assert!(lines[3].contains("  second") && lines[3].contains("2.000"), "{text}");
        assert!(text.starts_with("trace t  4 spans  5.000 ms"), "{text}");
    }
}
