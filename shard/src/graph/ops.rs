//! Graph operations of a shard: validation and ownership checks in front of
//! the apply path (writes) and the heavy read pool (expansion).

use std::sync::Arc;

use omnishard_common::namespace;
use omnishard_proto::v1::{graph_op, EdgeHalf, FrontierEntry, GraphOp, Vertex};

use super::read::{self, EdgePage, Expand, Expanded};
use super::write::{ends, GraphCommitted, GraphTxn};
use super::MAX_LABEL_BYTES;
use crate::error::{Error, Result};
use crate::node::Shard;

/// A validated `(namespace, graph)` pair.
fn names(ns: &str, graph: &str) -> Result<(String, String)> {
    Ok((namespace::resolve(ns)?.to_string(), namespace::resolve_name("graph", graph)?.to_string()))
}

fn check_label(field: &'static str, label: &str) -> Result<()> {
    if label.len() > MAX_LABEL_BYTES {
        return Err(Error::InvalidArgument(omnishard_common::Error::invalid(
            field,
            format!("is {} bytes; the limit is {MAX_LABEL_BYTES}", label.len()),
        )));
    }
    Ok(())
}

impl Shard {
    fn check_id(&self, id: &str) -> Result<()> {
        self.config.limits.check_key(id.as_bytes()).map_err(|e| match e {
            omnishard_common::Error::InvalidArgument { reason, .. } => {
                Error::InvalidArgument(omnishard_common::Error::InvalidArgument { field: "id", reason })
            }
            other => Error::InvalidArgument(other),
        })
    }

    fn check_properties(&self, json: &str) -> Result<()> {
        self.config.limits.check_value(json.as_bytes()).map_err(|_| {
            Error::InvalidArgument(omnishard_common::Error::invalid(
                "properties_json",
                format!(
                    "is {} bytes; the limit is {} (limits.max_value_bytes)",
                    json.len(),
                    self.config.limits.max_value_bytes
                ),
            ))
        })
    }

    /// The id whose shard must hold `op`, after checking its fields.
    fn validate_op<'a>(&self, op: &'a GraphOp) -> Result<&'a str> {
        let missing = |f| Error::InvalidArgument(omnishard_common::Error::invalid(f, "is missing"));
        match &op.op {
            Some(graph_op::Op::PutVertex(v)) => {
                self.check_id(&v.id)?;
                check_label("label", &v.label)?;
                self.check_properties(&v.properties_json)?;
                Ok(&v.id)
            }
            Some(graph_op::Op::DeleteVertex(id)) => {
                self.check_id(id)?;
                Ok(id)
            }
            Some(graph_op::Op::PutEdgeHalf(h)) => {
                let e = h.edge.as_ref().ok_or_else(|| missing("edge"))?;
                self.check_id(&e.from)?;
                self.check_id(&e.to)?;
                check_label("label", &e.label)?;
                self.check_properties(&e.properties_json)?;
                Ok(ends(EdgeHalf::try_from(h.half).unwrap_or(EdgeHalf::Out), &e.from, &e.to).0)
            }
            Some(graph_op::Op::ClearPending(e)) => Ok(&e.from),
            Some(graph_op::Op::DeleteEdgeHalf(h)) => {
                let e = h.edge.as_ref().ok_or_else(|| missing("edge"))?;
                Ok(ends(EdgeHalf::try_from(h.half).unwrap_or(EdgeHalf::Out), &e.from, &e.to).0)
            }
            None => Err(missing("op")),
        }
    }

    /// Applies graph mutations of one graph as one transaction.
    pub async fn graph_apply(
        self: &Arc<Self>,
        epoch: u64,
        ns: &str,
        graph: &str,
        ops: Vec<GraphOp>,
    ) -> Result<GraphCommitted> {
        let (namespace, graph) = names(ns, graph)?;
        self.config.limits.check_batch("ops", ops.len())?;
        let installed = self.ownership.ring_for(epoch)?;
        let mut owners = Vec::with_capacity(ops.len());
        for op in &ops {
            owners.push(self.validate_op(op)?.to_string());
        }
        self.ownership.check_keys(&installed, &namespace, owners.iter().map(|id| id.as_bytes()))?;
        self.applier.apply_graph(GraphTxn { namespace, graph, ops }).await
    }

    /// Reads vertices by id.
    pub async fn graph_get(
        self: &Arc<Self>,
        epoch: u64,
        ns: &str,
        graph: &str,
        ids: Vec<String>,
    ) -> Result<Vec<Option<Vertex>>> {
        let (namespace, graph) = names(ns, graph)?;
        self.config.limits.check_batch("ids", ids.len())?;
        for id in &ids {
            self.check_id(id)?;
        }
        let installed = self.ownership.ring_for(epoch)?;
        self.ownership.check_keys(&installed, &namespace, ids.iter().map(|id| id.as_bytes()))?;
        self.check_not_fenced(&namespace, ids.iter().map(|id| id.as_bytes()))?;
        self.blocking_light(move |shard| read::get_vertices(&shard.store, &namespace, &graph, &ids)).await
    }

    /// One page of the edge halves stored with `id`.
    #[allow(clippy::too_many_arguments)]
    pub async fn graph_edges(
        self: &Arc<Self>,
        epoch: u64,
        ns: &str,
        graph: &str,
        id: String,
        half: EdgeHalf,
        labels: Vec<String>,
        start_after: Vec<u8>,
        limit: u32,
    ) -> Result<EdgePage> {
        let (namespace, graph) = names(ns, graph)?;
        self.check_id(&id)?;
        let limit = self.config.limits.scan_page(limit)?;
        let installed = self.ownership.ring_for(epoch)?;
        self.ownership.check_keys(&installed, &namespace, [id.as_bytes()])?;
        self.check_not_fenced(&namespace, [id.as_bytes()])?;
        self.blocking_heavy(move |shard| {
            read::edges(&shard.store, &namespace, &graph, &id, half, &labels, &start_after, limit)
        })
        .await
    }

    /// Edges of many vertices (all owned here), per vertex at most `max_per_vertex` per side.
    pub async fn graph_edges_many(
        self: &Arc<Self>,
        req: omnishard_proto::v1::ShardGraphEdgesManyRequest,
    ) -> Result<Vec<omnishard_proto::v1::EdgeList>> {
        let (namespace, graph) = names(&req.namespace, &req.graph)?;
        self.config.limits.check_batch("ids", req.ids.len())?;
        let installed = self.ownership.ring_for(req.epoch)?;
        self.ownership.check_keys(&installed, &namespace, req.ids.iter().map(|id| id.as_bytes()))?;
        self.check_not_fenced(&namespace, req.ids.iter().map(|id| id.as_bytes()))?;
        let halves: Vec<EdgeHalf> = match omnishard_proto::v1::Direction::try_from(req.direction).unwrap_or_default() {
            omnishard_proto::v1::Direction::In => vec![EdgeHalf::In],
            omnishard_proto::v1::Direction::Both => vec![EdgeHalf::Out, EdgeHalf::In],
            _ => vec![EdgeHalf::Out],
        };
        let limit = (req.max_per_vertex as usize).clamp(1, self.config.limits.max_scan_page);
        self.blocking_heavy(move |shard| {
            let mut lists = Vec::with_capacity(req.ids.len());
            for id in req.ids {
                let mut list = omnishard_proto::v1::EdgeList { id: id.clone(), ..Default::default() };
                for &half in &halves {
                    let page = read::edges(&shard.store, &namespace, &graph, &id, half, &req.labels, b"", limit)?;
                    list.truncated |= page.next.is_some();
                    list.edges.extend(page.edges);
                }
                lists.push(list);
            }
            Ok(lists)
        })
        .await
    }

    /// Pending out-half intents older than a cutoff, for the repair pass.
    pub async fn graph_pending(
        self: &Arc<Self>,
        epoch: u64,
        older_than_ms: u64,
        limit: u32,
    ) -> Result<Vec<(String, String, omnishard_proto::v1::Edge)>> {
        let limit = self.config.limits.scan_page(limit)?;
        let installed = self.ownership.ring_for(epoch)?;
        let mut intents = self.blocking_heavy(move |shard| read::pending(&shard.store, older_than_ms, limit)).await?;
        // Intents copied in (or left behind) by a migration belong to another shard's repair pass.
        intents.retain(|(ns, _, edge)| installed.ring.owner(ns, edge.from.as_bytes()) == self.id());
        Ok(intents)
    }

    /// Vertices of a label on this shard, optionally filtered by one property value.
    pub async fn graph_find(
        self: &Arc<Self>,
        req: omnishard_proto::v1::ShardGraphFindRequest,
    ) -> Result<(Vec<Vertex>, bool)> {
        let (namespace, graph) = names(&req.namespace, &req.graph)?;
        let invalid = |field, reason: &str| Error::InvalidArgument(omnishard_common::Error::invalid(field, reason));
        // Checked again here (the gateway checks first): a value without a
        // property would be ignored, and an empty label is not a label.
        if req.label.is_empty() {
            return Err(invalid("label", "must not be empty: FindVertices lists the vertices of one label"));
        }
        if req.property.is_empty() && !req.value_json.is_empty() {
            return Err(invalid(
                "property",
                "must not be empty when value_json is given: name the property to compare",
            ));
        }
        check_label("label", &req.label)?;
        let limit = self.config.limits.scan_page(req.limit)?;
        let value: Option<serde_json::Value> = if req.property.is_empty() {
            None
        } else {
            Some(serde_json::from_str(&req.value_json).map_err(|e| {
                Error::InvalidArgument(omnishard_common::Error::invalid(
                    "value_json",
                    format!("is not valid JSON: {e}"),
                ))
            })?)
        };
        let installed = self.ownership.ring_for(req.epoch)?;
        self.blocking_heavy(move |shard| {
            let property = value.as_ref().map(|v| (req.property.as_str(), v));
            let owned = |id: &str| installed.ring.owner(&namespace, id.as_bytes()) == shard.id();
            read::find(&shard.store, &namespace, &graph, &req.label, property, &req.start_after, limit, owned)
        })
        .await
    }

    /// Expands `frontier` (all owned here) locally; see [`read::expand`].
    pub async fn graph_expand(
        self: &Arc<Self>,
        epoch: u64,
        req: omnishard_proto::v1::ShardGraphExpandRequest,
    ) -> Result<Expanded> {
        let (namespace, graph) = names(&req.namespace, &req.graph)?;
        let installed = self.ownership.ring_for(epoch)?;
        self.ownership.check_keys(&installed, &namespace, req.frontier.iter().map(|f| f.id.as_bytes()))?;
        self.check_not_fenced(&namespace, req.frontier.iter().map(|f| f.id.as_bytes()))?;
        let parse = |filters: &[omnishard_proto::v1::PropertyFilter]| {
            filters
                .iter()
                .map(|f| Ok((f.key.clone(), omnishard_common::predicate::Predicate::parse(&f.op, &f.value_json)?)))
                .collect::<Result<Vec<_>>>()
        };
        let vertex_filters = parse(&req.vertex_filters)?;
        let edge_filters = parse(&req.edge_filters)?;
        let shard_id = self.config.id.clone();
        self.blocking_heavy(move |shard| {
            let direction = omnishard_proto::v1::Direction::try_from(req.direction).unwrap_or_default();
            let params = Expand {
                namespace: &namespace,
                graph: &graph,
                direction,
                edge_labels: &req.edge_labels,
                vertex_labels: &req.vertex_labels,
                max_depth: req.max_depth,
                max_visited: req.max_visited.max(1) as usize,
                max_fanout: req.max_fanout.max(1) as usize,
                with_paths: req.with_paths,
                vertex_filters: &vertex_filters,
                edge_filters: &edge_filters,
            };
            let frontier: Vec<FrontierEntry> = req.frontier;
            read::expand(&shard.store, &params, frontier, |id| {
                installed.ring.owner(&namespace, id.as_bytes()) == shard_id
            })
        })
        .await
    }
}
