//! Observability end to end: traces exported over OTLP from a real gateway
//! and 3 real shards to an in-test collector, the same trees from `admin
//! trace` with no collector, `admin slow`, `/metrics` counters and
//! histograms, `/healthz` and `/readyz`, and JSON log lines with trace ids.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use omnishard_proto::v1::*;
use omnishard_tests::Cluster;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;

/// A caller's own trace context: the gateway must join it.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// One span, whoever reported it.
#[derive(Debug, Clone)]
struct Span {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    attributes: HashMap<String, String>,
}

/// An OTLP trace collector keeping every span it receives.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                kept.extend(scope.spans.into_iter().map(|s| Span {
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent: hex::encode(&s.parent_span_id),
                    name: s.name,
                    attributes:
                        s.attributes.into_iter().map(|kv| (kv.key, text(kv.value.and_then(|v| v.value)))).collect(),
                }));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn text(value: Option<AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(s)) => s,
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

impl Collector {
    /// Serves on a free loopback port; returns the endpoint URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }

    /// The spans of `trace_id` once `done` holds for them (batches arrive every 100 ms).
    async fn wait_for(&self, trace_id: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        for _ in 0..200 {
            let spans: Vec<Span> =
                self.spans.lock().unwrap().iter().filter(|s| s.trace_id == trace_id).cloned().collect();
            if done(&spans) {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let spans: Vec<Span> = self.spans.lock().unwrap().iter().filter(|s| s.trace_id == trace_id).cloned().collect();
        panic!("trace {trace_id} never completed; got {spans:#?}");
    }
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn children<'a>(spans: &'a [Span], parent: &Span, name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.parent == parent.span_id && s.name == name).collect()
}

/// Shard server spans of `method` reached through the gateway's call spans.
fn shard_spans<'a>(spans: &'a [Span], calls: &[&Span], method: &str) -> Vec<&'a Span> {
    let mut found = Vec::new();
    for call in calls {
        let served = children(spans, call, &format!("shard.ShardService.{method}"));
        assert_eq!(served.len(), 1, "one shard span under {call:?}");
        assert_eq!(served[0].attributes.get("shard.id"), call.attributes.get("shard.id"), "the shard that was called");
        found.push(served[0]);
    }
    found
}

/// Root → hops → calls → shard spans, with cost attributes, spanning ≥ 2 shards.
fn check_traversal(spans: &[Span], caller_span: Option<&str>) {
    let roots = named(spans, "gateway.GraphService.Traverse");
    assert_eq!(roots.len(), 1, "{spans:#?}");
    let root = roots[0];
    if let Some(parent) = caller_span {
        assert_eq!(root.parent, parent, "the gateway joins the caller's trace");
    }
    assert!(root.attributes.contains_key("shard_round_trips"), "{root:?}");
    assert_eq!(root.attributes.get("rows").map(String::as_str), Some("61"), "{root:?}");
    let hops = children(spans, root, "graph.hop");
    assert!(!hops.is_empty(), "{spans:#?}");
    let mut shards = BTreeSet::new();
    for hop in &hops {
        assert!(hop.attributes.contains_key("frontier") && hop.attributes.contains_key("edges_expanded"), "{hop:?}");
        let calls = children(spans, hop, "call.ShardService.GraphExpand");
        assert!(!calls.is_empty(), "hop without shard calls: {hop:?}");
        for served in shard_spans(spans, &calls, "GraphExpand") {
            assert!(served.attributes.contains_key("edges_expanded"), "{served:?}");
            assert!(served.attributes.contains_key("frontier"), "{served:?}");
            shards.insert(served.attributes["shard.id"].clone());
        }
    }
    assert!(shards.len() >= 2, "a 2-hop traversal of a spread graph touches several shards: {shards:?}");
}

/// Root → statistics, query and fetch phases; the query reaches all 3 shards.
fn check_search(spans: &[Span]) {
    let roots = named(spans, "gateway.SearchService.Search");
    assert_eq!(roots.len(), 1, "{spans:#?}");
    let root = roots[0];
    assert!(root.attributes.contains_key("docs_scored"), "{root:?}");
    for phase in ["search.statistics", "search.query", "search.fetch"] {
        assert_eq!(children(spans, root, phase).len(), 1, "phase {phase} under the root: {spans:#?}");
    }
    let query = children(spans, root, "search.query")[0];
    let calls = children(spans, query, "call.ShardService.SearchQuery");
    let served = shard_spans(spans, &calls, "SearchQuery");
    let shards: BTreeSet<&str> = served.iter().map(|s| s.attributes["shard.id"].as_str()).collect();
    assert_eq!(shards.len(), 3, "{served:#?}");
    let scored: u64 = served.iter().map(|s| s.attributes["docs_scored"].parse::<u64>().unwrap()).sum();
    assert_eq!(scored, 40, "every matching document is scored on its shard");
    let stats = children(spans, root, "search.statistics")[0];
    assert_eq!(children(spans, stats, "call.ShardService.SearchStats").len(), 3);
}

/// A hub with 30 neighbours, each with one more: 61 vertices within 2 hops.
async fn load_graph(client: &omnishard_client::Client) {
    let mut api = client.graph();
    let mut ids = vec!["hub".to_string()];
    let mut edges = Vec::new();
    for i in 0..30 {
        ids.push(format!("v{i}"));
        ids.push(format!("w{i}"));
        edges.push(("hub".to_string(), format!("v{i}")));
        edges.push((format!("v{i}"), format!("w{i}")));
    }
    let vertices = ids.iter().map(|id| VertexWrite { id: id.clone(), label: "node".into(), ..Default::default() });
    let req = WriteVerticesRequest { graph: "g".into(), vertices: vertices.collect(), ..Default::default() };
    api.write_vertices(req).await.unwrap();
    let edges = edges.into_iter().map(|(from, to)| EdgeWrite { from, to, label: "next".into(), ..Default::default() });
    api.write_edges(WriteEdgesRequest { graph: "g".into(), edges: edges.collect(), ..Default::default() })
        .await
        .unwrap();
}

/// A 2-hop traversal from the hub, sent with the caller's `traceparent`; returns the trace id.
async fn traverse(client: &omnishard_client::Client) -> String {
    let req = TraverseRequest { graph: "g".into(), start: vec!["hub".into()], max_depth: 2, ..Default::default() };
    let mut request = tonic::Request::new(req);
    let parent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    request.metadata_mut().insert("traceparent", parent.parse().unwrap());
    let response = client.graph().traverse(request).await.unwrap();
    assert_eq!(response.get_ref().reached.len(), 61);
    response.metadata().get("x-trace-id").expect("x-trace-id").to_str().unwrap().to_string()
}

/// 40 documents mention "apple"; a search that needs every shard; returns the trace id.
async fn search(client: &omnishard_client::Client) -> String {
    let mut api = client.search();
    let fields = vec![FieldSpec { name: "body".into(), r#type: FieldType::Text as i32, analyzer: String::new() }];
    api.create_index(CreateIndexRequest { namespace: String::new(), index: "docs".into(), fields }).await.unwrap();
    let documents = (0..60)
        .map(|i| {
            let body = if i < 40 { format!("apple number {i}") } else { format!("pear number {i}") };
            Document { id: format!("d{i}"), json: serde_json::json!({ "body": body }).to_string(), version: 0 }
        })
        .collect();
    api.index_documents(IndexDocumentsRequest { namespace: String::new(), index: "docs".into(), documents })
        .await
        .unwrap();
    api.refresh(RefreshRequest { namespace: String::new(), index: "docs".into() }).await.unwrap();
    let req = SearchRequest { index: "docs".into(), query: "apple".into(), size: 5, ..Default::default() };
    let response = api.search(req).await.unwrap();
    assert_eq!(response.get_ref().total, 40);
    response.metadata().get("x-trace-id").expect("x-trace-id").to_str().unwrap().to_string()
}

#[tokio::test]
async fn test_traversal_and_search_export_traces_with_shard_spans_to_an_otlp_collector() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let cluster = Cluster::builder()
        .shards(3)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .start()
        .await
        .unwrap();
    let client = cluster.client().await.unwrap();
    load_graph(&client).await;

    let trace_id = traverse(&client).await;
    assert_eq!(trace_id, CALLER_TRACE, "the caller's trace is honoured");
    let spans = collector
        .wait_for(&trace_id, |spans| {
            let calls = named(spans, "call.ShardService.GraphExpand").len();
            calls > 0 && named(spans, "shard.ShardService.GraphExpand").len() == calls
        })
        .await;
    check_traversal(&spans, Some(CALLER_SPAN));

    let trace_id = search(&client).await;
    let spans = collector
        .wait_for(&trace_id, |spans| {
            named(spans, "shard.ShardService.SearchQuery").len() == 3
                && named(spans, "shard.ShardService.SearchStats").len() == 3
                && named(spans, "gateway.SearchService.Search").len() == 1
        })
        .await;
    check_search(&spans);
}

fn from_wire(spans: &[TraceSpan]) -> Vec<Span> {
    spans
        .iter()
        .map(|s| Span {
            trace_id: s.trace_id.clone(),
            span_id: s.span_id.clone(),
            parent: s.parent_span_id.clone(),
            name: s.name.clone(),
            attributes: s.attributes.iter().map(|a| (a.key.clone(), a.value.clone())).collect(),
        })
        .collect()
}

#[tokio::test]
async fn test_admin_trace_and_slow_work_without_a_collector() {
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    load_graph(&client).await;

    let trace_id = traverse(&client).await;
    let answer = client.trace(&trace_id).await.unwrap();
    assert!(answer.unreachable.is_empty(), "{:?}", answer.unreachable);
    check_traversal(&from_wire(&answer.spans), Some(CALLER_SPAN));
    let processes: BTreeSet<&str> = answer.spans.iter().map(|s| s.process.as_str()).collect();
    assert!(processes.contains("gateway") && processes.len() >= 3, "{processes:?}");

    let trace_id = search(&client).await;
    check_search(&from_wire(&client.trace(&trace_id).await.unwrap().spans));

    // The CLI prints the same tree as an indented waterfall, and --trace shows ids.
    let (code, out, err) = cluster.cli(&["admin", "trace", &trace_id]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("trace {trace_id}")), "{out}");
    let root = out.lines().find(|l| l.contains("gateway.SearchService.Search [gateway]")).expect(&out);
    let query = out.lines().find(|l| l.contains("search.query [gateway]")).expect(&out);
    // Columns before the name are fixed, so a deeper span's name starts further right.
    assert!(query.find("search.query") > root.find("gateway.SearchService"), "{out}");
    assert!(out.contains("shard.ShardService.SearchQuery [shard-"), "{out}");
    let (code, _, err) = cluster.cli(&["--trace", "kv", "put", "k", "v"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let printed = err.lines().find_map(|l| l.strip_prefix("trace-id: ")).expect(&err).to_string();
    assert_eq!(printed.len(), 32, "{err}");
    assert!(!client.trace(&printed).await.unwrap().spans.is_empty());

    // admin slow lists requests with their trace ids, slowest first.
    let slow = client.slow_requests(5).await.unwrap();
    assert!(!slow.requests.is_empty());
    assert!(slow.requests.windows(2).all(|w| w[0].duration_nanos >= w[1].duration_nanos));
    assert_eq!(slow.slow_threshold_nanos, 100_000_000);
    let (code, out, err) = cluster.cli(&["admin", "slow", "--limit", "3"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 5, "header, 3 requests, footer: {out}");

    // Bad input names the field.
    let err = client.trace("not-a-trace").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.to_string().contains("trace_id"), "{err}");
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Sum of the samples of `name` whose labels include every pair of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.split(['{', ' ']).next() == Some(name))
        .filter(|line| labels.iter().all(|(k, v)| line.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every `omnishard_*` series the dashboard and the alert rules use.
fn series_used_by_deploy_assets() -> BTreeSet<String> {
    let assets = [
        include_str!("../../deploy/observability/alerts.yml"),
        include_str!("../../deploy/observability/dashboard.json"),
    ];
    let mut names = BTreeSet::new();
    for text in assets {
        for (start, _) in text.match_indices("omnishard_") {
            let name: String = text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let base = ["_bucket", "_count", "_sum"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
            names.insert(base.to_string());
        }
    }
    names
}

#[tokio::test]
async fn test_metrics_count_requests_errors_and_storage_on_every_process() {
    // Every request counts as slow, so the slow-request series exist too.
    let mut cluster = Cluster::builder().shards(3).env("OMNISHARD_SLOW_THRESHOLD", "0ms").start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let info = client.cluster().await.unwrap();
    let gateway = format!("http://{}", info.metrics_addr);
    assert!(!info.metrics_addr.is_empty());
    assert!(info.shards.iter().all(|s| !s.metrics_addr.is_empty()), "{info:?}");
    // The JSON view lists every address too.
    let (code, out, _) = cluster.cli(&["--json", "admin", "cluster"]).await.unwrap();
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["gateway"]["metrics_addr"], info.metrics_addr);
    assert_eq!(json["shards"][0]["metrics_addr"], info.shards[0].metrics_addr);

    assert_eq!(get(&format!("{gateway}/healthz")).await.0, 200);
    assert_eq!(get(&format!("{gateway}/readyz")).await.0, 200);
    let get_ok = [("service", "KvService"), ("method", "Get"), ("code", "ok")];
    let not_found = [("service", "KvService"), ("method", "Get"), ("code", "not_found")];
    let (_, before) = get(&format!("{gateway}/metrics")).await;
    for i in 0..10 {
        client.put(format!("k{i}").as_bytes(), b"v", Default::default()).await.unwrap();
        client.get(format!("k{i}").as_bytes()).await.unwrap();
    }
    let err = client.get(b"missing").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let (_, after) = get(&format!("{gateway}/metrics")).await;
    let moved = |name: &str, labels: &[(&str, &str)]| sample(&after, name, labels) - sample(&before, name, labels);
    assert_eq!(moved("omnishard_requests_total", &get_ok), 10.0, "{after}");
    assert_eq!(moved("omnishard_requests_total", &not_found), 1.0, "{after}");
    let get_latency = [("service", "KvService"), ("method", "Get")];
    assert_eq!(moved("omnishard_request_duration_seconds_count", &get_latency), 11.0, "{after}");
    assert!(sample(&after, "omnishard_shard_rpc_duration_seconds_count", &[("method", "Read")]) >= 1.0, "{after}");
    assert_eq!(sample(&after, "omnishard_requests_in_flight", &[]), 0.0, "nothing is in flight between requests");
    for name in
        ["omnishard_shard_breaker_open", "omnishard_process_resident_memory_bytes", "omnishard_memory_limit_bytes"]
    {
        assert!(after.contains(name), "{name} missing: {after}");
    }

    // Each shard reports its storage.
    let shard = format!("http://{}", info.shards[0].metrics_addr);
    assert_eq!(get(&format!("{shard}/readyz")).await.0, 200);
    let (_, text) = get(&format!("{shard}/metrics")).await;
    assert!(sample(&text, "omnishard_requests_total", &[("service", "ShardService"), ("role", "shard")]) >= 1.0);
    for needle in [
        r#"omnishard_rocksdb_bytes{cf="kv",kind="memtable""#,
        r#"omnishard_rocksdb_bytes{cf="all",kind="block_cache""#,
        "omnishard_rocksdb_bytes{cf=\"kv\",kind=\"pending_compaction\"",
        "omnishard_rocksdb_bytes{cf=\"kv\",kind=\"sst\"",
        "omnishard_disk_free_bytes",
        "omnishard_shard_applied_seq",
        "omnishard_process_open_fds",
    ] {
        assert!(text.contains(needle), "{needle} missing: {text}");
    }

    // A dead shard: calls to it fail, counted by shard and code.
    let mut api = client.search();
    let fields = vec![FieldSpec { name: "body".into(), r#type: FieldType::Text as i32, analyzer: String::new() }];
    api.create_index(CreateIndexRequest { namespace: String::new(), index: "docs".into(), fields }).await.unwrap();
    cluster.kill_shard(2).await.unwrap();
    let mut failed = 0;
    for i in 0..10 {
        if client.get(format!("k{i}").as_bytes()).await.is_err_and(|e| e.code() == tonic::Code::Unavailable) {
            failed += 1;
        }
    }
    assert!(failed > 0, "some of 10 keys live on the dead shard");
    let (_, text) = get(&format!("{gateway}/metrics")).await;
    let errors = sample(&text, "omnishard_shard_rpc_errors_total", &[("shard", "shard-3"), ("code", "unavailable")]);
    assert!(errors >= 1.0, "{text}");
    assert!(sample(&text, "omnishard_requests_total", &[("code", "unavailable")]) >= failed as f64, "{text}");

    // Every series the dashboard and the alert rules use is served.
    let (_, shard_text) = get(&format!("{shard}/metrics")).await;
    let served = |name: &str| {
        [&text, &shard_text]
            .iter()
            .any(|t| t.lines().any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{"))))
    };
    for name in series_used_by_deploy_assets() {
        assert!(
            served(&name) || served(&format!("{name}_bucket")),
            "{name} is used by deploy/observability but not served"
        );
    }
}

/// The stderr of a shard started with `--log-format FORMAT` and a 0 ms slow
/// threshold, after one `Stats` call made inside the caller's trace.
async fn shard_log_after_a_traced_call(format: &str) -> String {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let mut shard = tokio::process::Command::new(omnishard_tests::binary().unwrap())
        .args(["--log-format", format, "shard", "--id", "s1", "--listen", "127.0.0.1:0", "--slow-threshold", "0ms"])
        .arg("--data")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(shard.stdout.take().unwrap());
    let mut addr = None;
    while addr.is_none() {
        let mut line = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line).await.unwrap();
        addr = omnishard_common::process::parse_listening(&line).map(str::to_string);
    }
    let url = format!("http://{}", addr.unwrap());
    let mut api = shard_service_client::ShardServiceClient::connect(url).await.unwrap();
    let mut request = tonic::Request::new(ShardStatsRequest {});
    request.metadata_mut().insert("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01").parse().unwrap());
    api.stats(request).await.unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(shard.id().unwrap() as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let mut log = String::new();
    shard.stderr.take().unwrap().read_to_string(&mut log).await.unwrap();
    log
}

#[tokio::test]
async fn test_json_logs_carry_the_trace_id_and_log_slow_requests() {
    let log = shard_log_after_a_traced_call("json").await;
    let slow: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["fields"]["message"] == "slow request")
        .collect();
    let ours = slow.iter().find(|line| line["fields"]["rpc"] == "/omnishard.v1.ShardService/Stats").expect(&log);
    assert_eq!(ours["openTelemetry"]["traceId"], CALLER_TRACE, "{ours}");
    assert_eq!(ours["openTelemetry"]["spanId"].as_str().map(str::len), Some(16), "{ours}");
    assert_eq!(ours["level"], "WARN");
}

#[tokio::test]
async fn test_text_logs_carry_the_trace_id_and_span_id() {
    let log = shard_log_after_a_traced_call("text").await;
    let line = log.lines().find(|l| l.contains("slow request") && l.contains("ShardService/Stats")).expect(&log);
    assert!(line.contains(" WARN "), "{line}");
    assert!(line.ends_with(&format!("span_id={}", &line[line.len() - 16..])), "{line}");
    assert!(line.contains(&format!("trace_id={CALLER_TRACE} span_id=")), "{line}");
}
