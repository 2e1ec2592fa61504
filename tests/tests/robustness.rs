//! Hostile and careless clients against real processes: malformed
//! protobuf, silent connections, pages that would not fit in memory, and a
//! crowd of bad clients (idle streams and connections, nested queries,
//! giant syntax errors, fan-out bombs) that must not disturb a normal one.

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use omnishard_client::PutOptions;
use omnishard_proto::v1::*;
use omnishard_tests::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

/// A codec that sends and receives raw bytes, to put malformed protobuf on the wire.
#[derive(Debug, Clone, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

/// Sends `bytes` as the request of `path` on `url`.
async fn raw_call(url: &str, path: &'static str, bytes: Vec<u8>) -> Result<Vec<u8>, Status> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string()).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(bytes), path, Raw).await.map(|r| r.into_inner())
}

/// A length-delimited field 1 that claims 100 bytes and carries 1.
const MALFORMED: &[u8] = &[0x0a, 100, b'a'];

#[tokio::test]
async fn test_malformed_protobuf_is_invalid_argument_on_every_port() {
    let cluster = Cluster::builder().shards(1).start().await.unwrap();
    let public = [
        "/omnishard.v1.KvService/Get",
        "/omnishard.v1.KvService/Put",
        "/omnishard.v1.KvService/BatchGet",
        "/omnishard.v1.KvService/Scan",
        "/omnishard.v1.GraphService/Query",
        "/omnishard.v1.GraphService/WriteVertices",
        "/omnishard.v1.SearchService/Search",
        "/omnishard.v1.SearchService/CreateIndex",
        "/omnishard.v1.FileService/Stat",
        "/omnishard.v1.AdminService/Trace",
    ];
    for path in public {
        let err = raw_call(cluster.gateway_url(), path, MALFORMED.to_vec()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{path}: {err:?}");
        assert!(err.message().starts_with("message: failed to decode"), "{path}: {}", err.message());
    }
    // Internal ports decode with the same codec.
    for path in ["/omnishard.v1.ShardService/Read", "/omnishard.v1.ShardService/MigrateIngest"] {
        let err = raw_call(&cluster.shard_url(0), path, MALFORMED.to_vec()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{path}: {err:?}");
    }
    // A well-formed request still works on the same path.
    let client = cluster.client().await.unwrap();
    client.put(b"k", b"v", PutOptions::default()).await.unwrap();
    assert_eq!(client.get(b"k").await.unwrap().value, b"v");
}

/// Reads from `stream` until the server closes it; how long that took.
async fn until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue, // the server's SETTINGS and ACKs
        }
    }
}

#[tokio::test]
async fn test_silent_and_idle_connections_are_closed() {
    let cluster = Cluster::builder()
        .shards(1)
        .gateway_toml("\n[gateway]\nhandshake_timeout = \"1s\"\nidle_timeout = \"2s\"\n")
        .start()
        .await
        .unwrap();
    let addr = cluster.gateway_url().trim_start_matches("http://").to_string();
    // Connects and says nothing: closed after the handshake timeout.
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let closed = until_closed(&mut silent, Duration::from_secs(10)).await;
    let closed = closed.expect("a connection that never spoke was not closed");
    assert!(closed >= Duration::from_millis(800), "closed too early: {closed:?}");
    // Completes the HTTP/2 handshake, then opens no stream: bytes alone do
    // not stop the handshake clock.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    idle.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap(); // an empty SETTINGS frame
    let closed = until_closed(&mut idle, Duration::from_secs(10)).await;
    let closed = closed.expect("an HTTP/2 connection without a request was not closed");
    assert!(closed >= Duration::from_millis(800), "closed too early: {closed:?}");
    // A client that works keeps working (a closed channel reconnects).
    let client = cluster.client().await.unwrap();
    client.put(b"a", b"1", PutOptions::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(client.get(b"a").await.unwrap().value, b"1");
}

#[tokio::test]
async fn test_scans_and_batch_reads_end_pages_at_the_byte_budget() {
    // 1 MiB pages on every process; 40 values of 200 KiB over 3 shards.
    let budget = "\n[limits]\nmax_page_bytes = 1048576\n";
    let cluster = Cluster::builder().shards(3).shard_toml(budget).gateway_toml(budget).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let keys: Vec<Vec<u8>> = (0..40).map(|i| format!("big:{i:03}").into_bytes()).collect();
    for (i, key) in keys.iter().enumerate() {
        client.put(key, &vec![i as u8; 200 << 10], PutOptions::default()).await.unwrap();
    }
    // Scans: short pages with a cursor, and paging returns every key once, in order.
    let mut seen = Vec::new();
    let mut cursor: Option<Vec<u8>> = None;
    let mut pages = 0;
    loop {
        let page = client.scan(b"big:", cursor.as_deref(), 40).await.unwrap();
        let bytes: usize = page.entries.iter().map(|e| e.value.len()).sum();
        assert!(bytes <= (1 << 20) + (200 << 10), "a page of {bytes} bytes");
        assert!(!page.entries.is_empty() || page.next_cursor.is_none());
        seen.extend(page.entries.into_iter().map(|e| e.key));
        pages += 1;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, keys, "paging lost, repeated or reordered keys");
    assert!(pages >= 8, "{pages} pages for 8 MB at 1 MiB per page");
    // Batch reads: a raw answer says it is truncated; the SDK continues it.
    let mut kv = omnishard_proto::v1::kv_service_client::KvServiceClient::connect(cluster.gateway_url().to_string())
        .await
        .unwrap();
    let answer = kv.batch_get(BatchGetRequest { namespace: String::new(), keys: keys.clone() }).await.unwrap();
    let answer = answer.into_inner();
    assert!(answer.truncated, "40 x 200 KiB fit in a 1 MiB page");
    assert!(!answer.results.is_empty() && answer.results.len() < keys.len(), "{} results", answer.results.len());
    let all = client.batch_get(&keys).await.unwrap();
    assert_eq!(all.len(), keys.len());
    for (i, value) in all.iter().enumerate() {
        let value = value.as_ref().unwrap_or_else(|| panic!("key {i} missing"));
        assert_eq!((value.key.as_slice(), value.value.len(), value.value[0]), (keys[i].as_slice(), 200 << 10, i as u8));
    }
}

/// The p99 of `latencies`.
fn p99(latencies: &mut [Duration]) -> Duration {
    latencies.sort();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

/// A normal client's gets and searches for `duration`: latencies and errors.
async fn normal_traffic(client: &omnishard_client::Client, duration: Duration) -> (Vec<Duration>, Vec<String>) {
    let mut search = client.search();
    let started = Instant::now();
    let (mut latencies, mut errors) = (Vec::new(), Vec::new());
    let mut i = 0u32;
    while started.elapsed() < duration {
        let t = Instant::now();
        let key = format!("normal:{}", i % 100);
        if let Err(e) = client.get(key.as_bytes()).await {
            errors.push(format!("get {key}: {e}"));
        }
        latencies.push(t.elapsed());
        let t = Instant::now();
        let req = SearchRequest { index: "docs".into(), query: "hello".into(), size: 5, ..Default::default() };
        match search.search(req).await {
            Ok(res) if res.get_ref().total > 0 => {}
            Ok(_) => errors.push("search found nothing".into()),
            Err(e) => errors.push(format!("search: {e}")),
        }
        latencies.push(t.elapsed());
        i += 1;
    }
    (latencies, errors)
}

/// Loads what the normal and the hostile clients use: 100 keys, an index
/// of 200 documents, and a hub vertex with 2,000 neighbours.
async fn load(client: &omnishard_client::Client) {
    for i in 0..100 {
        client.put(format!("normal:{i}").as_bytes(), b"value", PutOptions::default()).await.unwrap();
    }
    let mut search = client.search();
    let fields = vec![FieldSpec { name: "body".into(), r#type: FieldType::Text as i32, analyzer: String::new() }];
    search.create_index(CreateIndexRequest { namespace: String::new(), index: "docs".into(), fields }).await.unwrap();
    let documents = (0..200)
        .map(|i| Document { id: format!("d{i}"), json: format!(r#"{{"body":"hello world {i}"}}"#), version: 0 })
        .collect();
    search
        .index_documents(IndexDocumentsRequest { namespace: String::new(), index: "docs".into(), documents })
        .await
        .unwrap();
    search.refresh(RefreshRequest { namespace: String::new(), index: "docs".into() }).await.unwrap();
    let mut graph = client.graph();
    let vertices = std::iter::once("hub".to_string())
        .chain((0..2000).map(|i| format!("n{i}")))
        .map(|id| VertexWrite { id, label: "node".into(), ..Default::default() })
        .collect();
    graph.write_vertices(WriteVerticesRequest { graph: "g".into(), vertices, ..Default::default() }).await.unwrap();
    let edges = (0..2000)
        .map(|i| EdgeWrite { from: "hub".into(), to: format!("n{i}"), label: "l".into(), ..Default::default() })
        .collect();
    graph.write_edges(WriteEdgesRequest { graph: "g".into(), edges, ..Default::default() }).await.unwrap();
}

/// Holds `n` Upload streams open on one new connection without ever sending a header.
async fn idle_uploads(url: String, n: usize, hold: Duration) {
    let channel = tonic::transport::Endpoint::from_shared(url).unwrap().connect().await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..n {
        let mut files = omnishard_proto::v1::file_service_client::FileServiceClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let (_tx, rx) = tokio::sync::mpsc::channel::<UploadRequest>(1);
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
            let _ = tokio::time::timeout(hold, files.upload(stream)).await;
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// Sends bad queries in a loop until `stop`, checking each answer's code
/// and message size; returns how many were sent.
async fn bad_queries(client: omnishard_client::Client, stop: Instant) -> usize {
    let mut search = client.search();
    let mut graph = client.graph();
    let nested_search = format!("{}x{}", "(".repeat(850), ")".repeat(850));
    let giant_syntax_error = format!("body:({}", "hello AND ".repeat(2_000));
    let nested_gremlin = format!("g.V('a').out({}'x'{})", "x(".repeat(7_000), ")".repeat(7_000));
    let bomb = "g.V('hub').both().both().both().count()";
    let mut sent = 0;
    while Instant::now() < stop {
        for (text, code) in [(&nested_search, Code::InvalidArgument), (&giant_syntax_error, Code::InvalidArgument)] {
            let req = SearchRequest { index: "docs".into(), query: text.clone(), size: 5, ..Default::default() };
            let err = search.search(req).await.expect_err("a hostile search succeeded");
            assert_eq!(err.code(), code, "{}", err.message());
            assert!(err.message().len() <= 1024, "a {}-byte error message", err.message().len());
        }
        for (text, code) in [(nested_gremlin.as_str(), Code::InvalidArgument), (bomb, Code::ResourceExhausted)] {
            let req = QueryRequest { graph: "g".into(), query: text.to_string(), ..Default::default() };
            let err = graph.query(req).await.expect_err("a hostile query succeeded");
            assert_eq!(err.code(), code, "{}", err.message());
            assert!(err.message().len() <= 1024, "a {}-byte error message", err.message().len());
        }
        sent += 4;
    }
    sent
}

fn alive(pid: Option<u32>) -> bool {
    pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
}

#[tokio::test]
async fn test_hostile_clients_do_not_disturb_a_normal_client() {
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let normal = cluster.client().await.unwrap();
    load(&normal).await;
    let (mut idle, errors) = normal_traffic(&normal, Duration::from_secs(3)).await;
    assert!(errors.is_empty(), "{errors:?}");
    let idle_p99 = p99(&mut idle);

    let hostile_for = Duration::from_secs(8);
    let stop = Instant::now() + hostile_for;
    // 4,100 upload streams that never send a header, over five connections.
    let streams: Vec<_> = (0..5)
        .map(|i| {
            tokio::spawn(idle_uploads(cluster.gateway_url().to_string(), if i < 4 { 1000 } else { 100 }, hostile_for))
        })
        .collect();
    // 300 connections that never say anything.
    let mut silent = Vec::new();
    let addr = cluster.gateway_url().trim_start_matches("http://").to_string();
    for _ in 0..300 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // Two clients sending nested queries, giant syntax errors and fan-out bombs.
    let bad: Vec<_> = (0..2)
        .map(|_| {
            let url = cluster.gateway_url().to_string();
            tokio::spawn(async move { bad_queries(omnishard_client::Client::connect(&url).await.unwrap(), stop).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut during, errors) = normal_traffic(&normal, hostile_for - Duration::from_secs(1)).await;
    let mut sent = 0;
    for task in bad {
        sent += task.await.unwrap();
    }
    for task in streams {
        task.await.unwrap();
    }
    drop(silent);

    assert!(errors.is_empty(), "the normal client failed {} times: {:?}", errors.len(), &errors[..errors.len().min(5)]);
    let during_p99 = p99(&mut during);
    // The latency aim (p99 under 10x idle) is a benchmark (bench/hostile.sh
    // runs this against a release build and records the ratio); in a debug
    // build sharing two cores with the attackers, only a stall is a failure:
    // load shedding, a held slot or a dead shard would cost seconds.
    println!(
        "hostile: normal p99 {:.2} ms idle, {:.2} ms under attack ({:.1}x; {} requests, {sent} bad queries)",
        idle_p99.as_secs_f64() * 1e3,
        during_p99.as_secs_f64() * 1e3,
        during_p99.as_secs_f64() / idle_p99.as_secs_f64(),
        during.len()
    );
    assert!(during_p99 < Duration::from_secs(2), "normal p99 {during_p99:?} under attack vs {idle_p99:?} idle");
    assert!(sent >= 8, "only {sent} bad queries were answered");
    assert!(alive(cluster.gateway_pid()), "the gateway died");
    for i in 0..3 {
        assert!(alive(cluster.shard_pid(i)), "shard {i} died");
    }
    // Nothing tripped a circuit breaker: every shard still answers at once.
    for i in 0..100 {
        normal.get(format!("normal:{i}").as_bytes()).await.unwrap();
    }
}
