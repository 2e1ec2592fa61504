//! Runs parsed Gremlin-style steps ([`super::gremlin`]) on the cluster.
//!
//! Traversers carry the current element (vertex or edge) and the ids walked
//! so far. Each expansion step sends one `GraphEdgesMany` call per shard that
//! owns some current vertices (all shards in parallel), then fetches the new
//! vertices batched per shard. As in Gremlin, duplicates are kept until `dedup()`. The number of
//! traversers is bounded by `graph.max_visited`, edges per vertex by
//! `graph.max_fanout`, and the whole query by `graph.deadline`.

use std::collections::HashSet;
use std::time::Instant;

use omnishard_proto::v1::{Direction, Edge, FindVerticesRequest, Vertex};
use serde_json::{json, Value};

use omnishard_common::predicate::Predicate;

use super::gremlin::{self, Direction as GDir, Step};
use crate::cluster::Cluster;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
enum Element {
    Vertex(Vertex),
    Edge(Edge),
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
                Step::Values(keys) => return Ok(run.done(values(&travs, keys))),
                Step::Path => return Ok(run.done(travs.iter().map(|t| json!(t.path)).collect())),
                _ => travs = run.step(step, travs).await?,
            }
        }
        Ok(run.done(travs.iter().map(element_json).collect()))
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
            return Ok(found.into_iter().flatten().map(vertex_traverser).collect());
        }
        let Some(Step::HasLabel(labels)) = rest.first() else {
            return Err(omnishard_common::Error::invalid(
                "query",
                "g.V() without ids must be followed by hasLabel(...): a full scan is not allowed",
            )
            .into());
        };
        let mut out = Vec::new();
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
                out.extend(page.vertices.into_iter().map(vertex_traverser));
                self.check_budget(out.len())?;
                if page.next_cursor.is_empty() {
                    break;
                }
                cursor = page.next_cursor;
            }
        }
        Ok(out)
    }

    fn check_budget(&self, traversers: usize) -> Result<()> {
        if traversers > self.cluster.graph.max_visited {
            return Err(Error::Budget {
                budget: "max_visited",
                detail: format!(
                    "{traversers} traversers; the limit is {} (graph.max_visited)",
                    self.cluster.graph.max_visited
                ),
            });
        }
        if Instant::now() > self.deadline {
            return Err(Error::Budget {
                budget: "deadline",
                detail: format!("the query took longer than {:?}", self.cluster.graph.deadline),
            });
        }
        Ok(())
    }

    async fn step(&mut self, step: &Step, travs: Vec<Traverser>) -> Result<Vec<Traverser>> {
        let out = match step {
            Step::HasLabel(labels) => travs.into_iter().filter(|t| labels.contains(&label(&t.element))).collect(),
            Step::Has(key, pred) => travs.into_iter().filter(|t| matches(&t.element, key, pred)).collect(),
            Step::Dedup => {
                let mut seen = HashSet::new();
                travs.into_iter().filter(|t| seen.insert(element_key(&t.element))).collect()
            }
            Step::Limit(n) => travs.into_iter().take(*n as usize).collect(),
            Step::Vertices(dir, labels) => self.expand(travs, *dir, labels, false).await?,
            Step::Edges(dir, labels) => self.expand(travs, *dir, labels, true).await?,
            Step::Repeat(inner, times) => {
                let mut travs = travs;
                for _ in 0..*times {
                    for s in inner {
                        travs = Box::pin(self.step(s, travs)).await?;
                    }
                }
                travs
            }
            Step::V(_) | Step::Count | Step::Values(_) | Step::Path => {
                return Err(omnishard_common::Error::invalid("query", format!("{step:?} can only end a query")).into())
            }
        };
        self.check_budget(out.len())?;
        Ok(out)
    }

    /// The edges of every distinct current vertex: one `GraphEdgesMany` call
    /// per shard that owns some of them, all shards in parallel.
    async fn edges_of(
        &mut self,
        travs: &[Traverser],
        direction: Direction,
        labels: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<Edge>>> {
        let mut by_shard: std::collections::BTreeMap<usize, Vec<String>> = std::collections::BTreeMap::new();
        let mut seen = HashSet::new();
        for t in travs {
            if let Element::Vertex(v) = &t.element {
                if seen.insert(v.id.clone()) {
                    by_shard.entry(self.cluster.vertex_owner(self.ns, &v.id)).or_default().push(v.id.clone());
                }
            }
        }
        self.round_trips += by_shard.len() as u32;
        let fanout = self.cluster.graph.max_fanout.min(self.cluster.limits.max_scan_page) as u32;
        let calls = by_shard.into_iter().map(|(shard, ids)| {
            let handle = &self.cluster.shards[shard];
            let req = omnishard_proto::v1::ShardGraphEdgesManyRequest {
                epoch: handle.epoch(),
                namespace: self.ns.to_string(),
                graph: self.graph.to_string(),
                ids,
                direction: direction as i32,
                labels: labels.to_vec(),
                max_per_vertex: fanout,
            };
            async move { handle.call(|c| c.graph_edges_many(req.clone())).await }
        });
        let mut out = std::collections::HashMap::new();
        for result in futures::future::join_all(calls).await {
            for list in result?.lists {
                if list.truncated {
                    return Err(Error::Budget {
                        budget: "max_fanout",
                        detail: format!("vertex {:?} has more than {fanout} edges (graph.max_fanout)", list.id),
                    });
                }
                out.insert(list.id, list.edges);
            }
        }
        Ok(out)
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
        let edges = self.edges_of(&travs, direction, labels).await?;
        let mut hops = Vec::new();
        for t in &travs {
            if let Element::Vertex(v) = &t.element {
                for e in edges.get(&v.id).map(Vec::as_slice).unwrap_or_default() {
                    hops.push((t, e.clone()));
                }
            }
        }
        self.check_budget(hops.len())?;
        if to_edges {
            return Ok(hops
                .into_iter()
                .map(|(t, e)| Traverser { path: t.path.clone(), element: Element::Edge(e) })
                .collect());
        }
        let next_ids: Vec<String> = hops
            .iter()
            .map(|(t, e)| {
                let here = element_key(&t.element);
                if e.from == here {
                    e.to.clone()
                } else {
                    e.from.clone()
                }
            })
            .collect();
        let mut unique: Vec<String> = next_ids.clone();
        unique.sort();
        unique.dedup();
        let mut vertices = std::collections::HashMap::new();
        for chunk in unique.chunks(self.cluster.limits.max_batch_ops) {
            let found = self.cluster.get_vertices(self.ns, self.graph, chunk).await?;
            self.round_trips += 1;
            vertices.extend(chunk.iter().cloned().zip(found));
        }
        Ok(hops
            .into_iter()
            .zip(next_ids)
            .filter_map(|((t, _), id)| {
                let v = vertices.get(&id).cloned().flatten()?;
                let mut path = t.path.clone();
                path.push(id);
                Some(Traverser { element: Element::Vertex(v), path })
            })
            .collect())
    }
}

fn vertex_traverser(v: Vertex) -> Traverser {
    Traverser { path: vec![v.id.clone()], element: Element::Vertex(v) }
}

fn label(e: &Element) -> String {
    match e {
        Element::Vertex(v) => v.label.clone(),
        Element::Edge(e) => e.label.clone(),
    }
}

fn element_key(e: &Element) -> String {
    match e {
        Element::Vertex(v) => v.id.clone(),
        Element::Edge(e) => format!("{}\u{0}{}\u{0}{}", e.from, e.label, e.to),
    }
}

fn properties(e: &Element) -> Value {
    let text = match e {
        Element::Vertex(v) => &v.properties_json,
        Element::Edge(e) => &e.properties_json,
    };
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn element_json(t: &Traverser) -> Value {
    match &t.element {
        Element::Vertex(v) => json!({"id": v.id, "label": v.label, "properties": properties(&t.element)}),
        Element::Edge(e) => {
            json!({"from": e.from, "to": e.to, "label": e.label, "weight": e.weight, "properties": properties(&t.element)})
        }
    }
}

fn values(travs: &[Traverser], keys: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for t in travs {
        let props = properties(&t.element);
        for key in keys {
            if let Some(v) = props.get(key) {
                out.push(v.clone());
            }
        }
        if keys.is_empty() {
            if let Value::Object(map) = &props {
                out.extend(map.values().cloned());
            }
        }
    }
    out
}

/// Whether the element's property `key` satisfies `pred`.
fn matches(e: &Element, key: &str, pred: &Predicate) -> bool {
    pred.test(properties(e).get(key))
}
