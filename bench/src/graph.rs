//! The graph workloads: a synthetic power-law graph (shaped like a package
//! dependency graph: a few out-edges per vertex, a few very popular
//! targets), its batched load, 1-hop neighbours, 3-hop traversals and
//! shortest paths, against any [`GraphSystem`]. Every system must give the
//! answers of an in-memory breadth-first search before it is measured.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::kv::DriverResult;
use crate::runner::{self, OpClient, Timing};
use crate::stats::{Measurement, Recorder};

/// Most out-edges of one vertex (so a 1-hop read is one page everywhere).
pub const MAX_OUT_DEGREE: usize = 32;

/// The vertex and edge lists every system loads.
#[derive(Debug, Clone)]
pub struct SyntheticGraph {
    pub vertices: u64,
    /// Out-edges of each vertex, sorted, without duplicates or self-loops.
    pub out: Vec<Vec<u64>>,
}

impl SyntheticGraph {
    /// `vertices` vertices with about `mean_degree` out-edges each; targets
    /// follow a power law (vertex `n·u³` for uniform `u`), so low ids are hubs.
    pub fn generate(vertices: u64, mean_degree: f64, seed: u64) -> SyntheticGraph {
        let mut rng = StdRng::seed_from_u64(seed);
        let out = (0..vertices)
            .map(|v| {
                // Exponentially spread out-degrees with the asked mean, at least 1.
                let u: f64 = rng.random_range(f64::EPSILON..1.0);
                let degree = (1.0 - (mean_degree - 1.0).max(0.0) * u.ln()) as usize;
                let mut targets: Vec<u64> = (0..degree.min(MAX_OUT_DEGREE))
                    .map(|_| ((vertices as f64) * rng.random::<f64>().powi(3)) as u64)
                    .filter(|&t| t != v && t < vertices)
                    .collect();
                targets.sort_unstable();
                targets.dedup();
                targets
            })
            .collect();
        SyntheticGraph { vertices, out }
    }

    pub fn edges(&self) -> usize {
        self.out.iter().map(Vec::len).sum()
    }

    /// Every edge as (from, to), in vertex order.
    pub fn edge_list(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.out.iter().enumerate().flat_map(|(from, targets)| targets.iter().map(move |&to| (from as u64, to)))
    }

    /// Vertices reached from `start` in 1..=`depth` hops along out-edges (`start` itself not counted).
    pub fn reach(&self, start: u64, depth: u32) -> usize {
        let mut seen = HashSet::from([start]);
        let mut frontier = vec![start];
        for _ in 0..depth {
            let mut next = Vec::new();
            for v in frontier {
                for &t in &self.out[v as usize] {
                    if seen.insert(t) {
                        next.push(t);
                    }
                }
            }
            frontier = next;
        }
        seen.len() - 1
    }

    /// Hops of a shortest path from `from` to `to` of at most `max_depth` hops.
    pub fn distance(&self, from: u64, to: u64, max_depth: u32) -> Option<u32> {
        let mut seen = HashSet::from([from]);
        let mut queue = VecDeque::from([(from, 0)]);
        while let Some((v, d)) = queue.pop_front() {
            if v == to {
                return Some(d);
            }
            if d == max_depth {
                continue;
            }
            for &t in &self.out[v as usize] {
                if seen.insert(t) {
                    queue.push_back((t, d + 1));
                }
            }
        }
        None
    }
}

/// A graph store under test.
pub trait GraphSystem: Send + Sync + 'static {
    type Client: GraphClient;

    fn name(&self) -> String;

    /// Loads every vertex and edge of `graph` (durably) with `loaders` connections in parallel.
    fn load(&self, graph: Arc<SyntheticGraph>, loaders: usize) -> impl Future<Output = DriverResult<()>> + Send;

    /// A new connection for one client task.
    fn client(&self) -> impl Future<Output = DriverResult<Self::Client>> + Send;
}

/// One client's connection to a graph store. Vertices are named by number.
pub trait GraphClient: Send + 'static {
    /// Out-neighbours of `v` (read in full); returns how many.
    fn neighbors(&mut self, v: u64) -> impl Future<Output = DriverResult<usize>> + Send;
    /// Distinct vertices within `depth` hops along out-edges, `v` not counted.
    fn reach(&mut self, v: u64, depth: u32) -> impl Future<Output = DriverResult<usize>> + Send;
    /// Hops of a shortest path of at most `max_depth` hops, if there is one.
    fn shortest_path(
        &mut self,
        from: u64,
        to: u64,
        max_depth: u32,
    ) -> impl Future<Output = DriverResult<Option<u32>>> + Send;
}

/// One timed graph operation.
#[derive(Debug, Clone, Copy)]
pub enum GraphOp {
    Neighbors(u64),
    Reach(u64, u32),
    Path(u64, u64, u32),
}

/// Adapts a [`GraphClient`] to the timed runner.
struct Driven<C>(C);

impl<C: GraphClient> OpClient for Driven<C> {
    type Op = GraphOp;

    async fn execute(&mut self, op: &GraphOp) -> DriverResult<()> {
        match *op {
            GraphOp::Neighbors(v) => self.0.neighbors(v).await.map(drop),
            GraphOp::Reach(v, depth) => self.0.reach(v, depth).await.map(drop),
            GraphOp::Path(from, to, max) => self.0.shortest_path(from, to, max).await.map(drop),
        }
    }
}

/// The shape of the graph workloads; the same for every system in one run.
#[derive(Debug, Clone, Copy)]
pub struct GraphConfig {
    /// Connections loading in parallel.
    pub loaders: usize,
    /// Clients of the concurrent traversal run (the others run with one client).
    pub clients: usize,
    pub timing: Timing,
}

/// Longest shortest path searched for.
pub const PATH_DEPTH: u32 = 5;

/// Checks `system`'s answers against the in-memory graph for a sample of
/// vertices: neighbour counts, 3-hop reach and shortest-path lengths.
pub async fn check<S: GraphSystem>(system: &S, graph: &SyntheticGraph) -> DriverResult<()> {
    let mut client = system.client().await?;
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..20 {
        let v = rng.random_range(0..graph.vertices);
        let (got, want) = (client.neighbors(v).await?, graph.out[v as usize].len());
        if got != want {
            return Err(format!("{}: vertex {v} has {want} out-neighbours, read {got}", system.name()));
        }
        let (got, want) = (client.reach(v, 3).await?, graph.reach(v, 3));
        if got != want {
            return Err(format!("{}: {want} vertices are within 3 hops of {v}, traversal found {got}", system.name()));
        }
        let to = rng.random_range(0..graph.vertices);
        let (got, want) = (client.shortest_path(v, to, PATH_DEPTH).await?, graph.distance(v, to, PATH_DEPTH));
        if got != want {
            return Err(format!("{}: shortest path {v} → {to} is {want:?} hops, found {got:?}", system.name()));
        }
    }
    Ok(())
}

/// Loads `graph` into `system`, checks it, and times every graph workload.
pub async fn run<S: GraphSystem>(
    system: &S,
    graph: Arc<SyntheticGraph>,
    config: &GraphConfig,
) -> DriverResult<Vec<Measurement>> {
    let name = system.name();
    let started = Instant::now();
    system.load(graph.clone(), config.loaders).await?;
    let load_time = started.elapsed();
    check(system, &graph).await?;
    let mut results = vec![load_measurement(&name, &graph, load_time)];
    let ops = sample_ops(&graph, 2_000);
    let runs: [(&str, &'static str, Vec<GraphOp>, usize); 4] = [
        ("graph-1hop (out-neighbours of a uniform vertex, 1 client)", "neighbors", ops.neighbors, 1),
        ("graph-3hop (vertices within 3 hops of a uniform vertex, 1 client)", "traverse", ops.reach.clone(), 1),
        ("graph-3hop-concurrent (3-hop traversals, {clients} clients)", "traverse", ops.reach, config.clients),
        ("graph-path (shortest path of ≤ 5 hops between reachable vertices, 1 client)", "path", ops.paths, 1),
    ];
    for (workload, op, ops, clients) in runs {
        let mut connections = Vec::new();
        for _ in 0..clients {
            connections.push(Driven(system.client().await?));
        }
        let recorder = runner::drive(connections, Arc::new(ops), op, config.timing).await?;
        let workload = workload.replace("{clients}", &clients.to_string());
        results.push(Measurement::of(&name, workload, &recorder, config.timing.duration, 1.0, "ops"));
    }
    Ok(results)
}

/// The load as one operation: edges per second over the whole load.
fn load_measurement(name: &str, graph: &SyntheticGraph, took: Duration) -> Measurement {
    let mut recorder = Recorder::new();
    recorder.record("load", took, true);
    let workload = format!(
        "graph-load (batched load of {} vertices and {} power-law edges, durable)",
        graph.vertices,
        graph.edges()
    );
    Measurement::of(name, workload, &recorder, took, graph.edges() as f64, "edges")
}

/// The timed operations, the same for every system.
struct SampledOps {
    neighbors: Vec<GraphOp>,
    reach: Vec<GraphOp>,
    paths: Vec<GraphOp>,
}

/// `n` uniform start vertices; path targets are chosen among the vertices a
/// start reaches, so a path exists (an absent one costs a full search).
fn sample_ops(graph: &SyntheticGraph, n: usize) -> SampledOps {
    let mut rng = StdRng::seed_from_u64(29);
    let starts: Vec<u64> = (0..n).map(|_| rng.random_range(0..graph.vertices)).collect();
    let paths = starts
        .iter()
        .filter_map(|&from| {
            // A random walk of 1 to 4 hops: its end is at most 4 hops away.
            let mut target = from;
            for _ in 0..rng.random_range(1..=4) {
                let out = &graph.out[target as usize];
                if out.is_empty() {
                    break;
                }
                target = out[rng.random_range(0..out.len())];
            }
            if target == from {
                return None;
            }
            Some(GraphOp::Path(from, target, PATH_DEPTH))
        })
        .collect();
    SampledOps {
        neighbors: starts.iter().map(|&v| GraphOp::Neighbors(v)).collect(),
        reach: starts.iter().map(|&v| GraphOp::Reach(v, 3)).collect(),
        paths,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_generated_graph_has_the_asked_shape() {
        let graph = SyntheticGraph::generate(10_000, 4.0, 1);
        let mean = graph.edges() as f64 / 10_000.0;
        assert!((3.0..5.0).contains(&mean), "mean out-degree {mean}");
        assert!(graph.out.iter().all(|t| t.len() <= MAX_OUT_DEGREE && t.windows(2).all(|w| w[0] < w[1])));
        assert!(graph.edge_list().all(|(from, to)| from != to));
        // Power law: the 1% lowest ids receive far more than 1% of the edges.
        let hubs = graph.edge_list().filter(|&(_, to)| to < 100).count();
        assert!(hubs * 5 > graph.edges(), "{hubs} of {} edges go to hubs", graph.edges());
        // Deterministic, so every system loads the same graph.
        assert_eq!(SyntheticGraph::generate(10_000, 4.0, 1).out, graph.out);
    }

    #[test]
    fn test_reach_and_distance_on_a_known_graph() {
        // 0 → 1 → 2 → 3 → 4, and 0 → 2.
        let graph = SyntheticGraph { vertices: 5, out: vec![vec![1, 2], vec![2], vec![3], vec![4], vec![]] };
        assert_eq!(graph.reach(0, 1), 2);
        assert_eq!(graph.reach(0, 2), 3);
        assert_eq!(graph.reach(0, 3), 4);
        assert_eq!(graph.reach(4, 3), 0);
        assert_eq!(graph.distance(0, 4, 5), Some(3));
        assert_eq!(graph.distance(0, 4, 2), None);
        assert_eq!(graph.distance(4, 0, 5), None);
        assert_eq!(graph.distance(2, 2, 5), Some(0));
    }

    #[test]
    fn test_sampled_paths_have_an_answer() {
        let graph = SyntheticGraph::generate(2_000, 3.0, 5);
        let ops = sample_ops(&graph, 200);
        assert!(ops.paths.len() > 150);
        for op in ops.paths {
            let GraphOp::Path(from, to, max) = op else { panic!("{op:?}") };
            assert!(graph.distance(from, to, max).is_some(), "{from} → {to}");
        }
    }
}
