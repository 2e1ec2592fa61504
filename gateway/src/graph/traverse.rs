//! Neighbours, vertices by label, k-hop traversal and shortest paths
//! (fewest hops, or cheapest by edge weight).
//!
//! A traversal runs in rounds. Each round sends every shard that owns part of
//! the frontier one `GraphExpand` call, all in parallel. A shard expands
//! breadth-first while the next vertices are its own and returns the
//! frontier that leaves it. The gateway keeps the best (smallest) depth per
//! vertex; a vertex reached again at a smaller depth is expanded again, so
//! depths equal those of a single-process BFS even when a shorter path
//! crosses shards. Budgets bound depth, visited vertices, frontier size,
//! per-vertex fan-out and time.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::time::Instant;

use omnishard_proto::v1::{
    Direction, Edge, EdgeHalf, FindVerticesRequest, FindVerticesResponse, FrontierEntry, NeighborsResponse,
    PropertyFilter, Reached, ShardGraphEdgesRequest, ShardGraphExpandRequest, ShardGraphFindRequest, Vertex,
};

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use omnishard_telemetry::record;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A traversal request after validation.
#[derive(Debug, Clone, Default)]
pub struct TraverseSpec {
    pub start: Vec<String>,
    pub direction: Direction,
    pub edge_labels: Vec<String>,
    pub vertex_labels: Vec<String>,
    pub max_depth: u32,
    pub with_paths: bool,
    pub allow_partial: bool,
    /// Property filters on visited vertices and on followed edges.
    pub vertex_filters: Vec<PropertyFilter>,
    pub edge_filters: Vec<PropertyFilter>,
}

/// One direction of a bidirectional search: the ids seen with a path to each, and the newest level.
struct Side {
    direction: Direction,
    seen: HashMap<String, Vec<String>>,
    frontier: Vec<FrontierEntry>,
    level: u32,
}

impl Side {
    fn new(start: &str, direction: Direction) -> Side {
        let path = vec![start.to_string()];
        Side {
            direction,
            seen: HashMap::from([(start.to_string(), path.clone())]),
            frontier: vec![FrontierEntry { id: start.to_string(), depth: 0, path }],
            level: 0,
        }
    }
}

/// A shortest-path request after validation.
#[derive(Debug, Clone, Default)]
pub struct PathSpec {
    pub from: String,
    pub to: String,
    pub direction: Direction,
    pub edge_labels: Vec<String>,
    pub max_depth: u32,
}

/// What a traversal found.
#[derive(Debug, Clone, Default)]
pub struct Traversal {
    pub reached: Vec<Reached>,
    pub shard_round_trips: u32,
    pub truncated_by: Option<String>,
}

/// Best known way to a vertex.
struct Best {
    depth: u32,
    path: Vec<String>,
    vertex: Option<Vertex>,
}

impl Cluster {
    /// One page of edges around `id` (out, in, or out then in).
    #[allow(clippy::too_many_arguments)]
    pub async fn neighbors(
        &self,
        ns: &str,
        graph: &str,
        id: String,
        direction: Direction,
        labels: Vec<String>,
        limit: u32,
        cursor: &[u8],
    ) -> Result<NeighborsResponse> {
        let (ns, graph) = self.graph_names(ns, graph)?;
        self.limits.check_key(id.as_bytes())?;
        let limit = self.limits.scan_page(limit)?;
        // Cursor: one byte for the side (0 out, 1 in), then the shard's own cursor.
        let (mut side, mut start_after) = match cursor.split_first() {
            None => (if direction == Direction::In { 1 } else { 0 }, Vec::new()),
            Some((&s @ (0 | 1), rest)) => (s, rest.to_vec()),
            Some(_) => return Err(omnishard_common::Error::invalid("cursor", "is not a cursor from Neighbors").into()),
        };
        let handle = &self.shards[self.vertex_owner(&ns, &id)];
        let mut edges: Vec<Edge> = Vec::new();
        loop {
            let req = ShardGraphEdgesRequest {
                epoch: handle.epoch(),
                namespace: ns.clone(),
                graph: graph.clone(),
                id: id.clone(),
                half: if side == 0 { EdgeHalf::Out as i32 } else { EdgeHalf::In as i32 },
                labels: labels.clone(),
                limit: (limit - edges.len()) as u32,
                start_after: start_after.clone(),
            };
            let page = self
                .with_read_retries(|| {
                    let req = req.clone();
                    async move { handle.call(|c| c.graph_edges(req.clone())).await }
                })
                .await?;
            edges.extend(page.edges);
            if !page.next_cursor.is_empty() {
                let mut next = vec![side];
                next.extend(page.next_cursor);
                return Ok(NeighborsResponse { edges, next_cursor: next });
            }
            if side == 0 && direction == Direction::Both && edges.len() < limit {
                side = 1;
                start_after.clear();
                continue;
            }
            let next_cursor = if side == 0 && direction == Direction::Both { vec![1] } else { Vec::new() };
            return Ok(NeighborsResponse { edges, next_cursor });
        }
    }

    /// Vertices with `label` (and a property value, when given) from every
    /// shard, merged in id order, paged by the last id.
    pub async fn find_vertices(&self, req: FindVerticesRequest) -> Result<FindVerticesResponse> {
        let (ns, graph) = self.graph_names(&req.namespace, &req.graph)?;
        check_find(&self.limits, &req)?;
        let limit = self.limits.scan_page(req.limit)?;
        self.limits.check_key_len("cursor", req.cursor.len())?;
        let start_after = String::from_utf8(req.cursor)
            .map_err(|_| omnishard_common::Error::invalid("cursor", "is not a cursor from FindVertices"))?;
        let calls = self.shards.iter().map(|handle| {
            let shard_req = ShardGraphFindRequest {
                epoch: handle.epoch(),
                namespace: ns.clone(),
                graph: graph.clone(),
                label: req.label.clone(),
                property: req.property.clone(),
                value_json: req.value_json.clone(),
                limit: limit as u32,
                start_after: start_after.clone(),
            };
            self.with_read_retries(move || {
                let shard_req = shard_req.clone();
                async move { handle.call(|c| c.graph_find(shard_req.clone())).await }
            })
        });
        let mut merged: BTreeMap<String, Vertex> = BTreeMap::new();
        let mut more = false;
        for result in futures::future::join_all(calls).await {
            let page = result?;
            more |= !page.next_cursor.is_empty();
            merged.extend(page.vertices.into_iter().map(|v| (v.id.clone(), v)));
        }
        // Each shard gave its first `limit` matches: the first `limit` of the union are the global page.
        more |= merged.len() > limit;
        let vertices: Vec<Vertex> = merged.into_values().take(limit).collect();
        let next_cursor = match vertices.last() {
            Some(last) if more => last.id.clone().into_bytes(),
            _ => Vec::new(),
        };
        Ok(FindVerticesResponse { vertices, next_cursor })
    }

    /// k-hop traversal; see the module docs.
    pub async fn traverse(&self, ns: &str, graph: &str, spec: TraverseSpec) -> Result<Traversal> {
        let (ns, graph) = self.graph_names(ns, graph)?;
        let budgets = self.graph.clone();
        check_depth(spec.max_depth, budgets.max_depth)?;
        parse_filters(&self.limits, "vertex_filters", &spec.vertex_filters)?;
        parse_filters(&self.limits, "edge_filters", &spec.edge_filters)?;
        if spec.start.is_empty() {
            return Err(omnishard_common::Error::invalid("start", "must name at least one vertex").into());
        }
        self.limits.check_batch("start", spec.start.len())?;
        let deadline = Instant::now() + budgets.deadline;
        let mut best: HashMap<String, Best> = HashMap::new();
        let mut frontier: Vec<FrontierEntry> = spec
            .start
            .iter()
            .map(|id| FrontierEntry {
                id: id.clone(),
                depth: 0,
                path: if spec.with_paths { vec![id.clone()] } else { vec![] },
            })
            .collect();
        let mut out = Traversal::default();
        let mut hop_number = 0;
        while !frontier.is_empty() {
            if let Some(budget) = over_budget(&budgets, &best, &frontier, deadline) {
                if spec.allow_partial {
                    out.truncated_by = Some(budget.0.to_string());
                    break;
                }
                return Err(Error::Budget { budget: budget.0, detail: budget.1 });
            }
            let mut by_shard: BTreeMap<usize, Vec<FrontierEntry>> = BTreeMap::new();
            for entry in frontier.drain(..) {
                by_shard.entry(self.vertex_owner(&ns, &entry.id)).or_default().push(entry);
            }
            out.shard_round_trips += by_shard.len() as u32;
            hop_number += 1;
            let hop = hop_span(hop_number, by_shard.values().map(Vec::len).sum(), by_shard.len());
            let visit_budget = (budgets.max_visited.saturating_sub(best.len())).max(1) as u32;
            let calls = by_shard.into_iter().map(|(shard, entries)| {
                let handle = &self.shards[shard];
                let req = ShardGraphExpandRequest {
                    epoch: handle.epoch(),
                    namespace: ns.clone(),
                    graph: graph.clone(),
                    frontier: entries,
                    direction: spec.direction as i32,
                    edge_labels: spec.edge_labels.clone(),
                    vertex_labels: spec.vertex_labels.clone(),
                    max_depth: spec.max_depth,
                    max_visited: visit_budget,
                    max_fanout: budgets.max_fanout as u32,
                    with_paths: spec.with_paths,
                    vertex_filters: spec.vertex_filters.clone(),
                    edge_filters: spec.edge_filters.clone(),
                };
                async move { handle.call(|c| c.graph_expand(req.clone())).await }
            });
            let mut next: HashMap<String, FrontierEntry> = HashMap::new();
            let mut edges_expanded = 0;
            // Budgets are checked as the answers are merged, at the first vertex over one.
            let mut stopped = None;
            'merge: for result in futures::future::join_all(calls).instrument(hop.clone()).await {
                let expanded = result?;
                edges_expanded += expanded.edges_read;
                if !expanded.truncated_by.is_empty() {
                    if !spec.allow_partial {
                        return Err(Error::Budget {
                            budget: if expanded.truncated_by == "max_fanout" { "max_fanout" } else { "max_visited" },
                            detail: format!("a shard stopped expanding ({})", expanded.truncated_by),
                        });
                    }
                    out.truncated_by.get_or_insert(expanded.truncated_by.clone());
                }
                for r in expanded.reached {
                    let Some(vertex) = r.vertex else { continue };
                    let known = best.get(&vertex.id);
                    if known.is_none() && best.len() >= budgets.max_visited {
                        stopped = Some((
                            "max_visited",
                            format!(
                                "more than {} vertices visited; the limit is {} (graph.max_visited)",
                                budgets.max_visited, budgets.max_visited
                            ),
                        ));
                        break 'merge;
                    }
                    let improves = known.is_none_or(|b| r.depth < b.depth || b.vertex.is_none());
                    if improves {
                        best.insert(vertex.id.clone(), Best { depth: r.depth, path: r.path, vertex: Some(vertex) });
                    }
                }
                for entry in expanded.remote {
                    let known = best.get(&entry.id).map(|b| b.depth).unwrap_or(u32::MAX);
                    let queued = next.get(&entry.id).map(|e| e.depth);
                    if entry.depth < known && entry.depth < queued.unwrap_or(u32::MAX) && entry.depth <= spec.max_depth
                    {
                        if queued.is_none() && next.len() >= budgets.max_frontier {
                            stopped = Some(frontier_over(&budgets, next.len() + 1));
                            break 'merge;
                        }
                        next.insert(entry.id.clone(), entry);
                    }
                }
            }
            if let Some((budget, detail)) = stopped {
                if spec.allow_partial {
                    out.truncated_by = Some(budget.to_string());
                    break;
                }
                return Err(Error::Budget { budget, detail });
            }
            frontier = next.into_values().collect();
            hop.set_attribute("edges_expanded", edges_expanded as i64);
            hop.set_attribute("next_frontier", frontier.len() as i64);
        }
        record("shard_round_trips", out.shard_round_trips as i64);
        record("rows", best.len() as i64);
        let mut reached: Vec<Reached> = best
            .into_values()
            .filter_map(|b| b.vertex.map(|v| Reached { vertex: Some(v), depth: b.depth, path: b.path }))
            .collect();
        reached.sort_by(|a, b| (a.depth, vertex_id(a)).cmp(&(b.depth, vertex_id(b))));
        out.reached = reached;
        Ok(out)
    }

    /// Depth-first traversal from each start vertex in turn, in preorder.
    /// Inherently sequential: one edge read and one vertex read per visited
    /// vertex, each from the vertex's shard; bounded by the same budgets.
    pub async fn traverse_dfs(&self, ns: &str, graph: &str, spec: TraverseSpec) -> Result<Traversal> {
        let budgets = self.graph.clone();
        check_depth(spec.max_depth, budgets.max_depth)?;
        let vertex_filters = parse_filters(&self.limits, "vertex_filters", &spec.vertex_filters)?;
        let edge_filters = parse_filters(&self.limits, "edge_filters", &spec.edge_filters)?;
        if spec.start.is_empty() {
            return Err(omnishard_common::Error::invalid("start", "must name at least one vertex").into());
        }
        self.limits.check_batch("start", spec.start.len())?;
        let passes = |props: &str, fs: &[(String, omnishard_common::predicate::Predicate)]| {
            fs.iter().all(|(k, p)| omnishard_common::predicate::properties_pass(props, k, p))
        };
        let deadline = Instant::now() + budgets.deadline;
        let mut out = Traversal::default();
        let mut visited: HashSet<String> = HashSet::new();
        // Pushed in reverse so the first start (and first edge) is visited first.
        let mut stack: Vec<(String, u32, Vec<String>)> =
            spec.start.iter().rev().map(|id| (id.clone(), 0, vec![id.clone()])).collect();
        'walk: while let Some((id, depth, path)) = stack.pop() {
            if visited.contains(&id) {
                continue;
            }
            if visited.len() >= budgets.max_visited || Instant::now() > deadline {
                let budget = if visited.len() >= budgets.max_visited { "max_visited" } else { "deadline" };
                if spec.allow_partial {
                    out.truncated_by = Some(budget.into());
                    break;
                }
                return Err(Error::Budget {
                    budget,
                    detail: format!("depth-first traversal stopped after {} vertices", visited.len()),
                });
            }
            let Some(vertex) = self.get_vertices(ns, graph, std::slice::from_ref(&id)).await?.pop().flatten() else {
                continue;
            };
            out.shard_round_trips += 1;
            let label_ok = spec.vertex_labels.is_empty() || spec.vertex_labels.contains(&vertex.label);
            if depth > 0 && !(label_ok && passes(&vertex.properties_json, &vertex_filters)) {
                continue;
            }
            visited.insert(id.clone());
            out.reached.push(Reached {
                vertex: Some(vertex),
                depth,
                path: if spec.with_paths { path.clone() } else { vec![] },
            });
            if depth == spec.max_depth {
                continue;
            }
            let fanout = budgets.max_fanout.min(self.limits.max_scan_page) as u32;
            let page =
                self.neighbors(ns, graph, id.clone(), spec.direction, spec.edge_labels.clone(), fanout, &[]).await?;
            out.shard_round_trips += 1;
            if !page.next_cursor.is_empty() {
                // Walking on from the first edges only would give a wrong order without saying so.
                if !spec.allow_partial {
                    return Err(Error::Budget {
                        budget: "max_fanout",
                        detail: format!(
                            "vertex {:?} has more than {fanout} edges (graph.max_fanout)",
                            super::excerpt(&id, ID_EXCERPT)
                        ),
                    });
                }
                out.truncated_by.get_or_insert_with(|| "max_fanout".into());
            }
            for edge in page.edges.into_iter().rev().filter(|e| passes(&e.properties_json, &edge_filters)) {
                let next = if edge.from == id { edge.to } else { edge.from };
                if !visited.contains(&next) {
                    // Checked before each push: the stack is this traversal's frontier.
                    if stack.len() >= budgets.max_frontier {
                        if spec.allow_partial {
                            out.truncated_by = Some("max_frontier".into());
                            break 'walk;
                        }
                        let (budget, detail) = frontier_over(&budgets, stack.len() + 1);
                        return Err(Error::Budget { budget, detail });
                    }
                    let mut next_path = path.clone();
                    next_path.push(next.clone());
                    stack.push((next, depth + 1, next_path));
                }
            }
        }
        Ok(out)
    }

    /// Unweighted shortest path by bidirectional BFS: one level at a time,
    /// always from the smaller frontier (forward from `from` along
    /// `direction`, backward from `to` against it), until the two searches
    /// meet. Each level is one `GraphExpand` call per shard owning part of
    /// that frontier. `max_depth` (0 = `graph.max_depth`) bounds the length.
    pub async fn shortest_path(&self, ns: &str, graph: &str, path: PathSpec) -> Result<(Option<Vec<String>>, u32)> {
        let (ns, graph) = self.graph_names(ns, graph)?;
        let max_depth = if path.max_depth == 0 { self.graph.max_depth } else { path.max_depth };
        check_depth(max_depth, self.graph.max_depth)?;
        if self.get_vertices(&ns, &graph, &[path.from.clone(), path.to.clone()]).await?.iter().any(Option::is_none) {
            return Ok((None, 1));
        }
        if path.from == path.to {
            return Ok((Some(vec![path.from]), 1));
        }
        let backward_direction = match path.direction {
            Direction::In => Direction::Out,
            Direction::Out | Direction::Unspecified => Direction::In,
            Direction::Both => Direction::Both,
        };
        let mut sides = [Side::new(&path.from, path.direction), Side::new(&path.to, backward_direction)];
        let mut round_trips = 1;
        let deadline = Instant::now() + self.graph.deadline;
        for _ in 0..max_depth {
            let i = if sides[0].frontier.len() <= sides[1].frontier.len() { 0 } else { 1 };
            if sides[i].frontier.is_empty() {
                return Ok((None, round_trips));
            }
            if Instant::now() > deadline {
                return Err(Error::Budget {
                    budget: "deadline",
                    detail: format!("path search took longer than {:?}", self.graph.deadline),
                });
            }
            let seen_by_other = sides[1 - i].seen.len();
            round_trips += self.expand_level(&ns, &graph, &path.edge_labels, &mut sides[i], seen_by_other).await?;
            let (side, other) = if i == 0 { (&sides[0], &sides[1]) } else { (&sides[1], &sides[0]) };
            let meeting = side
                .frontier
                .iter()
                .filter_map(|e| other.seen.get(&e.id).map(|o| (e.path.len() + o.len(), &e.id)))
                .min();
            if let Some((_, id)) = meeting {
                let (forward, backward) = (&sides[0].seen[id], &sides[1].seen[id]);
                let mut full = forward.clone();
                full.extend(backward.iter().rev().skip(1).cloned());
                return Ok((Some(full), round_trips));
            }
            if sides[0].seen.len() + sides[1].seen.len() > self.graph.max_visited {
                return Err(Error::Budget {
                    budget: "max_visited",
                    detail: format!(
                        "path search visited more than {} vertices (graph.max_visited)",
                        self.graph.max_visited
                    ),
                });
            }
        }
        Ok((None, round_trips))
    }

    /// Expands one side of a bidirectional search by exactly one level; returns
    /// the shard calls made. The vertices seen by both sides (`seen_by_other`
    /// on the other) and the new frontier are checked against their budgets
    /// as they are added.
    async fn expand_level(
        &self,
        ns: &str,
        graph: &str,
        edge_labels: &[String],
        side: &mut Side,
        seen_by_other: usize,
    ) -> Result<u32> {
        let level = side.level;
        let mut by_shard: BTreeMap<usize, Vec<FrontierEntry>> = BTreeMap::new();
        for entry in side.frontier.drain(..) {
            by_shard.entry(self.vertex_owner(ns, &entry.id)).or_default().push(entry);
        }
        let calls = by_shard.len() as u32;
        let hop = hop_span(level + 1, by_shard.values().map(Vec::len).sum(), by_shard.len());
        let requests = by_shard.into_iter().map(|(shard, entries)| {
            let handle = &self.shards[shard];
            let req = ShardGraphExpandRequest {
                epoch: handle.epoch(),
                namespace: ns.to_string(),
                graph: graph.to_string(),
                frontier: entries,
                direction: side.direction as i32,
                edge_labels: edge_labels.to_vec(),
                max_depth: level + 1,
                max_visited: self.graph.max_visited as u32,
                max_fanout: self.graph.max_fanout as u32,
                with_paths: true,
                ..Default::default()
            };
            async move { handle.call(|c| c.graph_expand(req.clone())).await }
        });
        let mut next = Vec::new();
        let mut edges_expanded = 0;
        for result in futures::future::join_all(requests).instrument(hop.clone()).await {
            let expanded = result?;
            edges_expanded += expanded.edges_read;
            let found = expanded.reached.into_iter().map(|r| FrontierEntry {
                id: vertex_id(&r).to_string(),
                depth: r.depth,
                path: r.path,
            });
            for entry in found.chain(expanded.remote) {
                if entry.depth == level + 1 && !side.seen.contains_key(&entry.id) {
                    if side.seen.len() + seen_by_other >= self.graph.max_visited {
                        return Err(Error::Budget {
                            budget: "max_visited",
                            detail: format!(
                                "path search visited more than {} vertices (graph.max_visited)",
                                self.graph.max_visited
                            ),
                        });
                    }
                    if next.len() >= self.graph.max_frontier {
                        let (budget, detail) = frontier_over(&self.graph, next.len() + 1);
                        return Err(Error::Budget { budget, detail });
                    }
                    side.seen.insert(entry.id.clone(), entry.path.clone());
                    next.push(entry);
                }
            }
        }
        side.frontier = next;
        side.level += 1;
        hop.set_attribute("edges_expanded", edges_expanded as i64);
        hop.set_attribute("next_frontier", side.frontier.len() as i64);
        Ok(calls)
    }
}

impl Cluster {
    /// Cheapest path by edge weight (Dijkstra): settles one vertex at a time,
    /// reading its edges from the owning shard. Weights must be ≥ 0. The
    /// visited and time budgets bound it; `max_depth` does not apply (a hop
    /// limit would make Dijkstra inexact). Returns the path and its cost, and
    /// the shard calls made.
    pub async fn weighted_path(
        &self,
        ns: &str,
        graph: &str,
        spec: PathSpec,
    ) -> Result<(Option<(Vec<String>, f64)>, u32)> {
        let budgets = self.graph.clone();
        let deadline = Instant::now() + budgets.deadline;
        // Non-negative f64s order like their bit patterns, which are Ord.
        let mut queue = BinaryHeap::from([Reverse((0f64.to_bits(), spec.from.clone()))]);
        let mut dist: HashMap<String, f64> = HashMap::from([(spec.from.clone(), 0.0)]);
        let mut prev: HashMap<String, String> = HashMap::new();
        let mut settled: HashSet<String> = HashSet::new();
        let mut round_trips = 0u32;
        while let Some(Reverse((bits, id))) = queue.pop() {
            if !settled.insert(id.clone()) {
                continue;
            }
            let cost = f64::from_bits(bits);
            if id == spec.to {
                let mut path = vec![id.clone()];
                while let Some(p) = prev.get(path.last().map(String::as_str).unwrap_or_default()) {
                    path.push(p.clone());
                }
                path.reverse();
                return Ok((Some((path, cost)), round_trips));
            }
            if settled.len() > budgets.max_visited {
                return Err(Error::Budget {
                    budget: "max_visited",
                    detail: format!("settled more than {} vertices (graph.max_visited)", budgets.max_visited),
                });
            }
            if Instant::now() > deadline {
                return Err(Error::Budget {
                    budget: "deadline",
                    detail: format!("took longer than {:?} (graph.deadline)", budgets.deadline),
                });
            }
            let fanout = budgets.max_fanout.min(self.limits.max_scan_page);
            let page = self
                .neighbors(ns, graph, id.clone(), spec.direction, spec.edge_labels.clone(), fanout as u32, &[])
                .await?;
            round_trips += 1;
            // Settling on the first edges only could miss the cheapest path without saying so.
            if !page.next_cursor.is_empty() {
                return Err(Error::Budget {
                    budget: "max_fanout",
                    detail: format!(
                        "vertex {:?} has more than {fanout} edges (graph.max_fanout)",
                        super::excerpt(&id, ID_EXCERPT)
                    ),
                });
            }
            for edge in page.edges {
                if edge.weight < 0.0 {
                    return Err(omnishard_common::Error::invalid(
                        "weighted",
                        format!(
                            "edge {} -[{}]-> {} has weight {}; weighted paths need weights >= 0",
                            edge.from, edge.label, edge.to, edge.weight
                        ),
                    )
                    .into());
                }
                let next = if edge.from == id { edge.to } else { edge.from };
                let candidate = cost + edge.weight;
                if dist.get(&next).is_none_or(|&d| candidate < d) {
                    // The queue is this search's frontier; `dist` holds at most it and the settled.
                    if queue.len() >= budgets.max_frontier {
                        let (budget, detail) = frontier_over(&budgets, queue.len() + 1);
                        return Err(Error::Budget { budget, detail });
                    }
                    dist.insert(next.clone(), candidate);
                    prev.insert(next.clone(), id.clone());
                    queue.push(Reverse((candidate.to_bits(), next)));
                }
            }
        }
        Ok((None, round_trips))
    }
}

/// A traversal depth must be 1..=`limit` (`graph.max_depth`).
/// The span of one round of shard expansions: `frontier` vertices sent to `shards` shards.
fn hop_span(hop: u32, frontier: usize, shards: usize) -> tracing::Span {
    tracing::info_span!(target: "omnishard::graph", "hop", otel.name = "graph.hop", hop, frontier, shards)
}

fn check_depth(depth: u32, limit: u32) -> Result<()> {
    if depth == 0 || depth > limit {
        return Err(omnishard_common::Error::invalid(
            "max_depth",
            format!("is {depth}; it must be between 1 and {limit} (graph.max_depth)"),
        )
        .into());
    }
    Ok(())
}

fn vertex_id(r: &Reached) -> &str {
    r.vertex.as_ref().map(|v| v.id.as_str()).unwrap_or_default()
}

/// The frontier budget, run over with `vertices` to expand.
fn frontier_over(budgets: &crate::config::GraphBudgets, vertices: usize) -> (&'static str, String) {
    (
        "max_frontier",
        format!("{vertices} vertices to expand; the limit is {} (graph.max_frontier)", budgets.max_frontier),
    )
}

/// The first budget the traversal has run over, with a message.
fn over_budget(
    budgets: &crate::config::GraphBudgets,
    best: &HashMap<String, Best>,
    frontier: &[FrontierEntry],
    deadline: Instant,
) -> Option<(&'static str, String)> {
    if best.len() >= budgets.max_visited {
        return Some((
            "max_visited",
            format!("visited {} vertices; the limit is {} (graph.max_visited)", best.len(), budgets.max_visited),
        ));
    }
    if frontier.len() > budgets.max_frontier {
        return Some(frontier_over(budgets, frontier.len()));
    }
    if Instant::now() > deadline {
        return Some(("deadline", format!("took longer than {:?} (graph.deadline)", budgets.deadline)));
    }
    None
}

/// Characters of a vertex id quoted in a message.
const ID_EXCERPT: usize = 64;

/// Most property filters of each kind in one traversal: each is tested on
/// every vertex or edge the traversal meets.
pub const MAX_FILTERS: usize = 64;

/// Characters of a filter's operator quoted in a message.
const OP_EXCERPT: usize = 16;

/// Checks and parses property filters. Sizes are checked before parsing,
/// and the JSON is parsed here so no message quotes client text
/// (serde_json refuses values nested deeper than 128 levels).
fn parse_filters(
    limits: &omnishard_common::limits::Limits,
    field: &'static str,
    filters: &[PropertyFilter],
) -> Result<Vec<(String, omnishard_common::predicate::Predicate)>> {
    let invalid = |field, reason: String| -> Error { omnishard_common::Error::invalid(field, reason).into() };
    if filters.len() > MAX_FILTERS {
        return Err(invalid(field, format!("has {} filters; the limit is {MAX_FILTERS}", filters.len())));
    }
    let mut parsed = Vec::with_capacity(filters.len());
    for f in filters {
        limits.check_key_len("key", f.key.len())?;
        if !matches!(f.op.as_str(), "" | "eq" | "neq" | "gt" | "gte" | "lt" | "lte" | "within") {
            return Err(invalid(
                "op",
                format!("{:?} is not eq, neq, gt, gte, lt, lte or within", super::excerpt(&f.op, OP_EXCERPT)),
            ));
        }
        if f.value_json.len() > limits.max_value_bytes {
            return Err(invalid(
                "value_json",
                format!(
                    "is {} bytes; the limit is {} (limits.max_value_bytes)",
                    f.value_json.len(),
                    limits.max_value_bytes
                ),
            ));
        }
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&f.value_json) {
            return Err(invalid("value_json", format!("is not valid JSON: {e}")));
        }
        parsed.push((f.key.clone(), omnishard_common::predicate::Predicate::parse(&f.op, &f.value_json)?));
    }
    Ok(parsed)
}

/// A `FindVertices` request names a label, and a property whenever it gives a value.
fn check_find(limits: &omnishard_common::limits::Limits, req: &FindVerticesRequest) -> Result<()> {
    let invalid = |field, reason: &str| -> Error { omnishard_common::Error::invalid(field, reason).into() };
    // The label index is the only way in: an empty label would ask for unlabelled
    // vertices, which the API does not offer (as g.V() offers no full scan).
    if req.label.is_empty() {
        return Err(invalid("label", "must not be empty: FindVertices lists the vertices of one label"));
    }
    if req.property.is_empty() && !req.value_json.is_empty() {
        return Err(invalid("property", "must not be empty when value_json is given: name the property to compare"));
    }
    limits.check_key_len("property", req.property.len())?;
    if req.value_json.len() > limits.max_value_bytes {
        return Err(omnishard_common::Error::invalid(
            "value_json",
            format!(
                "is {} bytes; the limit is {} (limits.max_value_bytes)",
                req.value_json.len(),
                limits.max_value_bytes
            ),
        )
        .into());
    }
    if !req.property.is_empty() {
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&req.value_json) {
            return Err(omnishard_common::Error::invalid("value_json", format!("is not valid JSON: {e}")).into());
        }
    }
    Ok(())
}
