//! `omnishard bench graph`: bulk load of a synthetic power-law graph, then
//! 1-hop neighbours of a 1,000-neighbour vertex and 3-hop traversals on a
//! 10,000-vertex graph, single client and concurrent, through the gateway.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use omnishard_client::Client;
use omnishard_proto::v1::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::args::{BenchGraphArgs, Global};
use crate::bench::EmbeddedCluster;
use crate::output;

/// Vertices or edges per write request while loading.
const BATCH: usize = 1000;

pub async fn run(global: &Global, args: BenchGraphArgs) -> anyhow::Result<()> {
    let cluster = EmbeddedCluster::start_with(args.shards, true, None).await?;
    let client = Client::connect(&cluster.url).await?;
    let mut lines = vec![format!(
        "shards={} vertices={} edges={} loaders={} clients={} duration={:?}",
        args.shards, args.vertices, args.edges, args.loaders, args.clients, args.duration
    )];
    lines.push("| workload | result |".into());
    lines.push("|---|---|".into());
    let t = Instant::now();
    load_vertices(&client, "big", args.vertices, args.loaders).await?;
    lines.push(format!(
        "| load vertices (batches of {BATCH}) | {:.0} vertices/s |",
        args.vertices as f64 / t.elapsed().as_secs_f64()
    ));
    let t = Instant::now();
    let edges = load_edges(&client, "big", args.vertices, args.edges, args.loaders).await?;
    lines.push(format!(
        "| load edges (batches of {BATCH}, power-law sources) | {:.0} edges/s |",
        edges as f64 / t.elapsed().as_secs_f64()
    ));

    // A vertex with exactly 1,000 neighbours.
    let hub_edges = (0..1000)
        .map(|i| EdgeWrite {
            from: "v0".into(),
            to: format!("v{}", i + 1),
            label: "hub".into(),
            weight: 1.0,
            ..Default::default()
        })
        .collect();
    client
        .graph()
        .write_edges(WriteEdgesRequest { graph: "big".into(), edges: hub_edges, ..Default::default() })
        .await?;
    let (h, trips) = time_single(args.duration, || {
        let mut api = client.graph();
        async move {
            let req = NeighborsRequest {
                graph: "big".into(),
                id: "v0".into(),
                labels: vec!["hub".into()],
                limit: 1000,
                direction: Direction::Out as i32,
                ..Default::default()
            };
            let n = api.neighbors(req).await?.into_inner().edges.len();
            anyhow::ensure!(n == 1000, "expected 1000 neighbours, got {n}");
            Ok(1)
        }
    })
    .await?;
    lines.push(format!("| 1-hop neighbours of a 1,000-neighbour vertex, 1 client | p50 {:.2} ms, p99 {:.2} ms, {trips} shard round trip |", ms(&h, 0.5), ms(&h, 0.99)));

    load_vertices(&client, "small", 10_000, args.loaders).await?;
    load_edges(&client, "small", 10_000, 30_000, args.loaders).await?;
    let (h, trips) = time_single(args.duration, || traverse3(client.clone())).await?;
    lines.push(format!("| 3-hop traversal, 10,000 vertices / 30,000 edges, 1 client | p50 {:.2} ms, p99 {:.2} ms, {trips:.1} shard round trips |", ms(&h, 0.5), ms(&h, 0.99)));
    let (ops, h) = time_concurrent(args.clients, args.duration, &client).await?;
    lines.push(format!(
        "| 3-hop traversal, {} clients | {:.0} traversals/s, p50 {:.2} ms, p99 {:.2} ms |",
        args.clients,
        ops,
        ms(&h, 0.5),
        ms(&h, 0.99)
    ));
    cluster.stop().await;
    if global.json {
        output::print_json(&serde_json::json!({ "report": lines }));
    } else {
        for line in lines {
            println!("{line}");
        }
    }
    Ok(())
}

/// A latency quantile of `h` (microseconds) in milliseconds.
pub(crate) fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// An auto-resizing latency histogram in microseconds.
pub(crate) fn histogram() -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).expect("3 significant figures is a valid precision");
    h.auto(true);
    h
}

async fn load_vertices(client: &Client, graph: &str, n: usize, loaders: usize) -> anyhow::Result<()> {
    let batches: Vec<(usize, usize)> = (0..n).step_by(BATCH).map(|s| (s, (s + BATCH).min(n))).collect();
    let batches = Arc::new(std::sync::Mutex::new(batches));
    let tasks: Vec<_> = (0..loaders)
        .map(|_| {
            let (client, graph, batches) = (client.clone(), graph.to_string(), batches.clone());
            tokio::spawn(async move {
                loop {
                    let Some((s, e)) = batches.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.pop() else {
                        return Ok::<_, anyhow::Error>(());
                    };
                    let vertices = (s..e)
                        .map(|i| VertexWrite {
                            id: format!("v{i}"),
                            label: "node".into(),
                            properties_json: format!(r#"{{"n":{i}}}"#),
                            ..Default::default()
                        })
                        .collect();
                    client
                        .graph()
                        .write_vertices(WriteVerticesRequest { graph: graph.clone(), vertices, ..Default::default() })
                        .await?;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Edges with power-law sources (a few vertices have most out-edges), uniform targets.
async fn load_edges(client: &Client, graph: &str, n: usize, m: usize, loaders: usize) -> anyhow::Result<usize> {
    let per_loader = m / loaders;
    let tasks: Vec<_> = (0..loaders)
        .map(|l| {
            let (client, graph) = (client.clone(), graph.to_string());
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(l as u64);
                let mut written = 0;
                while written < per_loader {
                    let mut seen = HashSet::new();
                    let mut edges = Vec::with_capacity(BATCH);
                    while edges.len() < BATCH.min(per_loader - written) {
                        let from = ((n as f64) * rng.random::<f64>().powi(3)) as usize;
                        let to = rng.random_range(0..n);
                        if seen.insert((from, to)) {
                            edges.push(EdgeWrite {
                                from: format!("v{from}"),
                                to: format!("v{to}"),
                                label: "link".into(),
                                weight: 1.0,
                                ..Default::default()
                            });
                        }
                    }
                    written += edges.len();
                    client
                        .graph()
                        .write_edges(WriteEdgesRequest { graph: graph.clone(), edges, ..Default::default() })
                        .await?;
                }
                Ok::<_, anyhow::Error>(written)
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total)
}

async fn traverse3(client: Client) -> anyhow::Result<u32> {
    let start = format!("v{}", rand::rng().random_range(0..10_000));
    let req = TraverseRequest {
        graph: "small".into(),
        start: vec![start],
        direction: Direction::Out as i32,
        max_depth: 3,
        ..Default::default()
    };
    Ok(client.graph().traverse(req).await?.into_inner().shard_round_trips)
}

/// Back-to-back calls from one client; latency histogram and mean round trips.
async fn time_single<F, Fut>(duration: Duration, call: F) -> anyhow::Result<(Histogram<u64>, f64)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u32>>,
{
    let mut h = histogram();
    let (mut trips, mut n) = (0u64, 0u64);
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let t = Instant::now();
        trips += u64::from(call().await?);
        h.record(t.elapsed().as_micros() as u64)?;
        n += 1;
    }
    Ok((h, trips as f64 / n.max(1) as f64))
}

async fn time_concurrent(clients: usize, duration: Duration, client: &Client) -> anyhow::Result<(f64, Histogram<u64>)> {
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { time_single(duration, || traverse3(client.clone())).await })
        })
        .collect();
    let mut h = histogram();
    let mut ops = 0;
    for t in tasks {
        let (th, _) = t.await??;
        ops += th.len();
        h.add(th)?;
    }
    Ok((ops as f64 / start.elapsed().as_secs_f64(), h))
}
