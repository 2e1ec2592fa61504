//! Runs parsed Gremlin-style steps ([`super::gremlin`]) on the cluster.
//!
//! Traversers carry the current element (vertex or edge, shared by every
//! traverser standing on it) and the ids walked so far. Each expansion step
//! asks the shards owning the current vertices for their edges
//! (`GraphEdgesMany`, all shards in parallel), then fetches the new vertices
//! batched per shard. As in Gremlin, duplicates are kept until `dedup()`.
//!
//! Budgets are checked while the work is done, never after it: an expansion
//! counts the traversers it will make as each edge list arrives and stops at
//! the first one over `graph.max_visited`; the distinct vertices of one hop
//! are bounded by `graph.max_frontier`, edges per vertex by
//! `graph.max_fanout`, the approximate bytes the query holds (traversers and
//! paths, fetched elements, results) by `graph.max_query_bytes`, and the
//! whole query by `graph.deadline`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::mem::size_of;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use omnishard_proto::v1::{Direction, Edge, FindVerticesRequest, ShardGraphEdgesManyRequest, Vertex};
use serde_json::{json, Value};

use omnishard_common::predicate::Predicate;

use super::excerpt;
use super::gremlin::{self, Direction as GDir, Step};
use crate::cluster::Cluster;
use crate::error::{Error, Result};

/// Edges per vertex and side asked for in a first look at a hop's vertices:
/// enough for most vertices, so one call covers thousands of them. Vertices
/// with more are asked again with the full fan-out, a few per call.
const FIRST_LOOK_EDGES: usize = 32;
/// Most edges one `GraphEdgesMany` answer can hold (ids × per-vertex cap ×
/// sides): bounds the memory of an answer before its edges are counted.
const EDGES_PER_CALL: usize = 262_144;
/// Items handled between deadline checks in loops that make no shard calls.
const DEADLINE_STRIDE: usize = 1024;
/// Characters of a vertex id quoted in a message.
const ID_EXCERPT: usize = 64;

#[derive(Debug, Clone)]
enum Element {
    Vertex(Arc<Vertex>),
    Edge(Arc<Edge>),
}

impl Element {
    /// Identity of the shared element, to count and test it once.
    fn address(&self) -> usize {
        match self {
            Element::Vertex(v) => Arc::as_ptr(v) as usize,
            Element::Edge(e) => Arc::as_ptr(e) as usize,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Element::Vertex(v) => vertex_bytes(v),
            Element::Edge(e) => edge_bytes(e),
        }
    }

    fn label(&self) -> &str {
        match self {
            Element::Vertex(v) => &v.label,
            Element::Edge(e) => &e.label,
        }
    }

    fn properties_text(&self) -> &str {
        match self {
            Element::Vertex(v) => &v.properties_json,
            Element::Edge(e) => &e.properties_json,
        }
    }
}

#[derive(Debug, Clone)]
struct Traverser {
    element: Element,
    path: Vec<String>,
}

/// Results of a query and the shard calls it took.
pub struct QueryOutput {
    pub results: Vec<Value>,
    pub shard_round_trips: u32,
}

struct Run<'a> {
    cluster: &'a Cluster,
    ns: &'a str,
    graph: &'a str,
    deadline: Instant,
    round_trips: u32,
    /// Approximate bytes of the current traversers and the elements they stand on.
    held: usize,
}

/// The edges of one hop's vertices, by vertex id.
#[derive(Default)]
struct HopEdges {
    lists: HashMap<String, Vec<Arc<Edge>>>,
    bytes: usize,
    /// Traversers the hop makes: for each vertex, its traversers times its edges.
    traversers: usize,
}

impl HopEdges {
    /// The vertex `t` stands on and its edges; `None` for a traverser on an edge.
    fn edges_from<'h>(&'h self, t: &'h Traverser) -> Option<(&'h Vertex, &'h [Arc<Edge>])> {
        let Element::Vertex(v) = &t.element else { return None };
        Some((v.as_ref(), self.lists.get(&v.id).map(Vec::as_slice).unwrap_or_default()))
    }
}

impl Cluster {
    /// Parses and runs `query`.
    pub async fn query(&self, ns: &str, graph: &str, query: &str) -> Result<QueryOutput> {
        let steps = gremlin::parse(query).map_err(|e| omnishard_common::Error::invalid("query", e.to_string()))?;
        let (ns, graph) = self.graph_names(ns, graph)?;
        let mut run = Run {
            cluster: self,
            ns: &ns,
            graph: &graph,
            deadline: Instant::now() + self.graph.deadline,
            round_trips: 0,
            held: 0,
        };
        let (first, rest) = steps.split_first().ok_or_else(|| omnishard_common::Error::invalid("query", "is empty"))?;
        let mut travs = run.start(first, rest).await?;
        let mut rest = rest;
        // `g.V().hasLabel(l)` was answered by the label index in `start`.
        if matches!(first, Step::V(ids) if ids.is_empty()) {
            rest = &rest[1..];
        }
        for step in rest {
            match step {
                Step::Count => return Ok(run.done(vec![json!(travs.len())])),
                Step::Values(keys) => {
                    let results = run.values(&travs, keys)?;
                    return Ok(run.done(results));
                }
                Step::Path => {
                    let results = run.results(&travs, |t| path_bytes(&t.path), |t| json!(t.path))?;
                    return Ok(run.done(results));
                }
                _ => travs = run.step(step, travs).await?,
            }
        }
        let results = run.results(&travs, |t| t.element.bytes(), element_json)?;
        Ok(run.done(results))
    }
}

impl Run<'_> {
    fn done(&self, results: Vec<Value>) -> QueryOutput {
        QueryOutput { results, shard_round_trips: self.round_trips }
    }

    async fn start(&mut self, first: &Step, rest: &[Step]) -> Result<Vec<Traverser>> {
        let Step::V(ids) = first else {
            return Err(omnishard_common::Error::invalid("query", "must start with g.V(...)").into());
        };
        if !ids.is_empty() {
            let found = self.cluster.get_vertices(self.ns, self.graph, ids).await?;
            self.round_trips += 1;
            let travs: Vec<Traverser> = found.into_iter().flatten().map(vertex_traverser).collect();
            self.check_visited(travs.len())?;
            self.held = held_bytes(&travs);
            self.check_bytes(self.held, "the start vertices")?;
            return Ok(travs);
        }
        let Some(Step::HasLabel(labels)) = rest.first() else {
            return Err(omnishard_common::Error::invalid(
                "query",
                "g.V() without ids must be followed by hasLabel(...): a full scan is not allowed",
            )
            .into());
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        for label in labels {
            let mut cursor = Vec::new();
            loop {
                let req = FindVerticesRequest {
                    namespace: self.ns.to_string(),
                    graph: self.graph.to_string(),
                    label: label.clone(),
                    limit: 1000,
                    cursor,
                    ..Default::default()
                };
                let page = self.cluster.find_vertices(req).await?;
                self.round_trips += self.cluster.shards.len() as u32;
                // Counted before the page joins the traversers.
                self.check_visited(out.len() + page.vertices.len())?;
                bytes += page.vertices.iter().map(|v| vertex_bytes(v) + traverser_overhead(&v.id)).sum::<usize>();
                self.check_bytes(bytes, "the start vertices")?;
                self.check_deadline()?;
                out.extend(page.vertices.into_iter().map(vertex_traverser));
                if page.next_cursor.is_empty() {
                    break;
                }
                cursor = page.next_cursor;
            }
        }
        self.held = bytes;
        Ok(out)
    }

    fn check_visited(&self, traversers: usize) -> Result<()> {
        let limit = self.cluster.graph.max_visited;
        if traversers > limit {
            return Err(Error::Budget {
                budget: "max_visited",
                detail: format!("{traversers} traversers; the limit is {limit} (graph.max_visited)"),
            });
        }
        Ok(())
    }

    /// `what` holds about `bytes`; more than `graph.max_query_bytes` stops the query.
    fn check_bytes(&self, bytes: usize, what: &str) -> Result<()> {
        let limit = usize::try_from(self.cluster.graph.max_query_bytes.as_u64()).unwrap_or(usize::MAX);
        if bytes > limit {
            return Err(Error::Budget {
                budget: "max_query_bytes",
                detail: format!("{what} hold about {bytes} bytes; the limit is {limit} (graph.max_query_bytes)"),
            });
        }
        Ok(())
    }

    fn check_deadline(&self) -> Result<()> {
        if Instant::now() > self.deadline {
            return Err(Error::Budget {
                budget: "deadline",
                detail: format!("the query took longer than {:?} (graph.deadline)", self.cluster.graph.deadline),
            });
        }
        Ok(())
    }

    async fn step(&mut self, step: &Step, travs: Vec<Traverser>) -> Result<Vec<Traverser>> {
        let out = match step {
            Step::HasLabel(labels) => self.filter(travs, |e| labels.iter().any(|l| l == e.label()))?,
            Step::Has(key, pred) => self.filter(travs, |e| matches(e, key, pred))?,
            Step::Dedup => {
                let mut seen = HashSet::new();
                let mut out = Vec::new();
                for (i, t) in travs.into_iter().enumerate() {
                    if i.is_multiple_of(DEADLINE_STRIDE) {
                        self.check_deadline()?;
                    }
                    if seen.insert(element_key(&t.element)) {
                        out.push(t);
                    }
                }
                out
            }
            Step::Limit(n) => travs.into_iter().take(usize::try_from(*n).unwrap_or(usize::MAX)).collect(),
            Step::Vertices(dir, labels) => self.expand(travs, *dir, labels, false).await?,
            Step::Edges(dir, labels) => self.expand(travs, *dir, labels, true).await?,
            Step::Repeat(inner, times) => {
                let mut travs = travs;
                for _ in 0..*times {
                    // Nothing left to walk from: the remaining rounds would do nothing.
                    if travs.is_empty() {
                        break;
                    }
                    for s in inner {
                        travs = Box::pin(self.step(s, travs)).await?;
                    }
                }
                travs
            }
            Step::V(_) | Step::Count | Step::Values(_) | Step::Path => {
                return Err(
                    omnishard_common::Error::invalid("query", format!("{} can only end a query", step.name())).into()
                )
            }
        };
        self.held = held_bytes(&out);
        self.check_deadline()?;
        Ok(out)
    }

    /// The traversers whose element passes `keep`, tested once per distinct element.
    fn filter(&self, travs: Vec<Traverser>, keep: impl Fn(&Element) -> bool) -> Result<Vec<Traverser>> {
        let mut verdicts: HashMap<usize, bool> = HashMap::new();
        let mut out = Vec::new();
        for (i, t) in travs.into_iter().enumerate() {
            let known = verdicts.get(&t.element.address()).copied();
            let pass = match known {
                Some(pass) => pass,
                None => {
                    // A test may parse a large properties text: check the time before each.
                    self.check_deadline()?;
                    let pass = keep(&t.element);
                    verdicts.insert(t.element.address(), pass);
                    pass
                }
            };
            if i.is_multiple_of(DEADLINE_STRIDE) {
                self.check_deadline()?;
            }
            if pass {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// The edges of every distinct current vertex, counting the traversers
    /// they will make as each list arrives (see the module docs).
    async fn edges_of(&mut self, travs: &[Traverser], direction: Direction, labels: &[String]) -> Result<HopEdges> {
        let cluster = self.cluster;
        let budgets = &cluster.graph;
        // How many traversers stand on each distinct vertex, and which shard owns it.
        let mut standing: HashMap<&str, usize> = HashMap::new();
        let mut by_shard: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for t in travs {
            let Element::Vertex(v) = &t.element else { continue };
            match standing.get_mut(v.id.as_str()) {
                Some(n) => *n += 1,
                None => {
                    if standing.len() == budgets.max_frontier {
                        return Err(Error::Budget {
                            budget: "max_frontier",
                            detail: format!(
                                "more than {} distinct vertices to expand in one hop; the limit is {} \
                                 (graph.max_frontier)",
                                budgets.max_frontier, budgets.max_frontier
                            ),
                        });
                    }
                    standing.insert(v.id.as_str(), 1);
                    by_shard.entry(cluster.vertex_owner(self.ns, &v.id)).or_default().push(v.id.clone());
                }
            }
        }
        let fanout = budgets.max_fanout.min(cluster.limits.max_scan_page).max(1);
        // A vertex with more edges than the visited budget overruns it alone.
        let full = fanout.min(budgets.max_visited.saturating_add(1));
        let first = full.min(FIRST_LOOK_EDGES);
        let mut hop = HopEdges::default();
        let truncated = self.fetch_edge_lists(by_shard, direction, labels, first, &standing, &mut hop).await?;
        let truncated = if truncated.is_empty() || first == full {
            truncated
        } else {
            let mut again: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for id in truncated {
                again.entry(cluster.vertex_owner(self.ns, &id)).or_default().push(id);
            }
            self.fetch_edge_lists(again, direction, labels, full, &standing, &mut hop).await?
        };
        if let Some(id) = truncated.first() {
            let id = excerpt(id, ID_EXCERPT);
            return Err(if full == fanout {
                Error::Budget {
                    budget: "max_fanout",
                    detail: format!("vertex {id:?} has more than {fanout} edges (graph.max_fanout)"),
                }
            } else {
                Error::Budget {
                    budget: "max_visited",
                    detail: format!(
                        "vertex {id:?} has more than {} edges, more traversers than the limit of {} \
                         (graph.max_visited)",
                        full - 1,
                        budgets.max_visited
                    ),
                }
            });
        }
        Ok(hop)
    }

    /// Asks the owners of `by_shard` for at most `per_vertex` edges per
    /// vertex and side, in calls small enough that one answer stays bounded,
    /// at most one call in flight per shard on average. Complete lists join
    /// `hop` as they arrive, checked against the budgets; returns the ids
    /// whose list was cut at `per_vertex`.
    async fn fetch_edge_lists(
        &mut self,
        by_shard: BTreeMap<usize, Vec<String>>,
        direction: Direction,
        labels: &[String],
        per_vertex: usize,
        standing: &HashMap<&str, usize>,
        hop: &mut HopEdges,
    ) -> Result<Vec<String>> {
        let cluster = self.cluster;
        let sides = if direction == Direction::Both { 2 } else { 1 };
        let ids_per_call = (EDGES_PER_CALL / (per_vertex * sides)).clamp(1, cluster.limits.max_batch_ops.max(1));
        // Futures are lazy: none runs before the stream polls it.
        let mut calls = Vec::new();
        for (shard, ids) in by_shard {
            for chunk in ids.chunks(ids_per_call) {
                let handle = &cluster.shards[shard];
                let req = ShardGraphEdgesManyRequest {
                    epoch: handle.epoch(),
                    namespace: self.ns.to_string(),
                    graph: self.graph.to_string(),
                    ids: chunk.to_vec(),
                    direction: direction as i32,
                    labels: labels.to_vec(),
                    max_per_vertex: per_vertex as u32,
                };
                calls.push(async move { handle.call(|c| c.graph_edges_many(req.clone())).await });
            }
        }
        self.round_trips += calls.len() as u32;
        let mut answers = futures::stream::iter(calls).buffer_unordered(cluster.shards.len().max(1));
        let mut truncated = Vec::new();
        while let Some(answer) = answers.next().await {
            for list in answer?.lists {
                if list.truncated {
                    truncated.push(list.id);
                    continue;
                }
                let on_it = standing.get(list.id.as_str()).copied().unwrap_or(0);
                hop.traversers = hop.traversers.saturating_add(on_it.saturating_mul(list.edges.len()));
                self.check_visited(hop.traversers)?;
                hop.bytes += list.edges.iter().map(edge_bytes).sum::<usize>();
                self.check_bytes(self.held + hop.bytes, "the traversers and the edges of their next hop")?;
                hop.lists.insert(list.id, list.edges.into_iter().map(Arc::new).collect());
            }
            self.check_deadline()?;
        }
        Ok(truncated)
    }

    /// One hop from every vertex traverser: to edges (`to_edges`) or to the vertices at their other end.
    async fn expand(
        &mut self,
        travs: Vec<Traverser>,
        dir: GDir,
        labels: &[String],
        to_edges: bool,
    ) -> Result<Vec<Traverser>> {
        let direction = match dir {
            GDir::Out => Direction::Out,
            GDir::In => Direction::In,
            GDir::Both => Direction::Both,
        };
        let hop = self.edges_of(&travs, direction, labels).await?;
        let mut bytes = self.held + hop.bytes;
        let mut vertices: HashMap<String, Arc<Vertex>> = HashMap::new();
        if !to_edges {
            let mut unique: Vec<String> = Vec::new();
            let mut seen: HashSet<&str> = HashSet::new();
            for (v, edges) in travs.iter().filter_map(|t| hop.edges_from(t)) {
                for e in edges {
                    let next = other_end(e, &v.id);
                    if seen.insert(next) {
                        unique.push(next.to_string());
                    }
                }
            }
            unique.sort();
            for chunk in unique.chunks(self.cluster.limits.max_batch_ops.max(1)) {
                let found = self.cluster.get_vertices(self.ns, self.graph, chunk).await?;
                self.round_trips += 1;
                for (id, v) in chunk.iter().zip(found) {
                    if let Some(v) = v {
                        bytes += vertex_bytes(&v);
                        vertices.insert(id.clone(), Arc::new(v));
                    }
                }
                self.check_bytes(bytes, "the traversers and the vertices of their next hop")?;
                self.check_deadline()?;
            }
        }
        let mut out: Vec<Traverser> = Vec::new();
        for t in &travs {
            let Some((v, edges)) = hop.edges_from(t) else { continue };
            for e in edges {
                let (element, new_id) = if to_edges {
                    (Element::Edge(e.clone()), None)
                } else {
                    let next = other_end(e, &v.id);
                    let Some(vertex) = vertices.get(next) else { continue };
                    (Element::Vertex(vertex.clone()), Some(next))
                };
                // Counted before the path is copied.
                self.check_visited(out.len() + 1)?;
                bytes += size_of::<Traverser>() + path_bytes(&t.path) + new_id.map_or(0, path_entry_bytes);
                self.check_bytes(bytes, "the traversers of the next hop")?;
                if out.len().is_multiple_of(DEADLINE_STRIDE) {
                    self.check_deadline()?;
                }
                let mut path = Vec::with_capacity(t.path.len() + 1);
                path.extend(t.path.iter().cloned());
                path.extend(new_id.map(str::to_string));
                out.push(Traverser { element, path });
            }
        }
        Ok(out)
    }

    /// Result values made by `make`, each checked against the memory budget
    /// with its `estimate` before it is made.
    fn results(
        &self,
        travs: &[Traverser],
        estimate: impl Fn(&Traverser) -> usize,
        make: impl Fn(&Traverser) -> Value,
    ) -> Result<Vec<Value>> {
        let mut out = Vec::with_capacity(travs.len());
        let mut bytes = self.held;
        for (i, t) in travs.iter().enumerate() {
            bytes += size_of::<Value>() + estimate(t);
            self.check_bytes(bytes, "the results")?;
            if i.is_multiple_of(DEADLINE_STRIDE) {
                self.check_deadline()?;
            }
            out.push(make(t));
        }
        Ok(out)
    }

    /// `values(keys…)` of every traverser (every property when no key is given).
    fn values(&self, travs: &[Traverser], keys: &[String]) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut bytes = self.held;
        for (i, t) in travs.iter().enumerate() {
            // The values taken from one element are parts of its properties text.
            bytes += size_of::<Value>() + t.element.properties_text().len();
            self.check_bytes(bytes, "the results")?;
            if i.is_multiple_of(DEADLINE_STRIDE) {
                self.check_deadline()?;
            }
            let props = properties(&t.element);
            for key in keys {
                if let Some(v) = props.get(key) {
                    out.push(v.clone());
                }
            }
            if keys.is_empty() {
                if let Value::Object(map) = props {
                    out.extend(map.into_iter().map(|(_, v)| v));
                }
            }
        }
        Ok(out)
    }
}

fn vertex_traverser(v: Vertex) -> Traverser {
    Traverser { path: vec![v.id.clone()], element: Element::Vertex(Arc::new(v)) }
}

/// The end of `e` that is not `here` (either, for a self-loop).
fn other_end<'e>(e: &'e Edge, here: &str) -> &'e str {
    if e.from == here {
        &e.to
    } else {
        &e.from
    }
}

fn vertex_bytes(v: &Vertex) -> usize {
    size_of::<Vertex>() + v.id.len() + v.label.len() + v.properties_json.len()
}

fn edge_bytes(e: &Edge) -> usize {
    size_of::<Edge>() + e.from.len() + e.to.len() + e.label.len() + e.properties_json.len()
}

fn path_entry_bytes(id: &str) -> usize {
    size_of::<String>() + id.len()
}

fn path_bytes(path: &[String]) -> usize {
    path.iter().map(|id| path_entry_bytes(id)).sum()
}

/// A start traverser's own bytes, its element aside.
fn traverser_overhead(id: &str) -> usize {
    size_of::<Traverser>() + path_entry_bytes(id)
}

/// Approximate bytes of `travs`: each traverser and path, each shared element once.
fn held_bytes(travs: &[Traverser]) -> usize {
    let mut elements = HashSet::new();
    travs
        .iter()
        .map(|t| {
            let element = if elements.insert(t.element.address()) { t.element.bytes() } else { 0 };
            size_of::<Traverser>() + path_bytes(&t.path) + element
        })
        .sum()
}

fn element_key(e: &Element) -> String {
    match e {
        Element::Vertex(v) => v.id.clone(),
        Element::Edge(e) => format!("{}\u{0}{}\u{0}{}", e.from, e.label, e.to),
    }
}

/// The element's properties; stored text was checked when written, so
/// anything unreadable counts as none.
fn properties(e: &Element) -> Value {
    serde_json::from_str(e.properties_text()).unwrap_or(Value::Null)
}

fn element_json(t: &Traverser) -> Value {
    match &t.element {
        Element::Vertex(v) => json!({"id": v.id, "label": v.label, "properties": properties(&t.element)}),
        Element::Edge(e) => {
            json!({"from": e.from, "to": e.to, "label": e.label, "weight": e.weight, "properties": properties(&t.element)})
        }
    }
}

/// Whether the element's property `key` satisfies `pred`.
fn matches(e: &Element, key: &str, pred: &Predicate) -> bool {
    pred.test(properties(e).get(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vertex(id: &str, props: &str) -> Element {
        Element::Vertex(Arc::new(Vertex { id: id.into(), properties_json: props.into(), ..Default::default() }))
    }

    #[test]
    fn test_held_bytes_count_shared_elements_once() {
        let hub = vertex("hub", &"x".repeat(10_000));
        let one = Traverser { element: hub.clone(), path: vec!["hub".into()] };
        let single = held_bytes(std::slice::from_ref(&one));
        assert!(single > 10_000);
        let many = held_bytes(&std::iter::repeat_n(one.clone(), 100).collect::<Vec<_>>());
        // 100 traversers on one vertex: the vertex once, the paths 100 times.
        assert_eq!(many, single + 99 * (size_of::<Traverser>() + path_bytes(&one.path)));
        let other = Traverser { element: vertex("hub", &"x".repeat(10_000)), path: vec!["hub".into()] };
        assert_eq!(held_bytes(&[one, other]), 2 * single);
    }

    #[test]
    fn test_other_end_of_an_edge() {
        let e = Edge { from: "a".into(), to: "b".into(), ..Default::default() };
        assert_eq!(other_end(&e, "a"), "b");
        assert_eq!(other_end(&e, "b"), "a");
        let self_loop = Edge { from: "a".into(), to: "a".into(), ..Default::default() };
        assert_eq!(other_end(&self_loop, "a"), "a");
    }
}
