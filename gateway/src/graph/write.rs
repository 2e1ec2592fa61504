//! Graph writes. Vertices go to the shard of their id. An edge is written
//! twice: the out-half on the source's shard, then the in-half on the
//! target's shard (copying the out-half's timestamps). Both endpoints must
//! exist (edges to missing vertices are rejected with `NOT_FOUND`). The
//! out-half is written with an intent record in the same shard transaction;
//! once the in-half is stored the intent is dropped. If the in-half fails the
//! out-half is removed again; if the writer dies in between, the repair pass
//! ([`super::repair`]) finishes the edge from the intent.

use std::collections::{BTreeMap, HashSet};

use omnishard_proto::v1::{
    graph_op, Edge, EdgeHalf, EdgeRef, EdgeWrite, GraphOp, ShardEdgeHalf, ShardEdgeHalfRef, Vertex, VertexWrite,
};

use super::excerpt;
use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::live::PartsAttempt;

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    omnishard_common::Error::invalid(field, reason).into()
}

/// Characters of an id or label quoted in a message.
const ID_EXCERPT: usize = 64;

impl Cluster {
    /// Creates or updates vertices; atomic per shard.
    pub async fn write_vertices(&self, ns: &str, graph: &str, vertices: Vec<VertexWrite>) -> Result<Vec<Vertex>> {
        let mut attempt = self.write_vertices_attempt(ns, graph, &vertices).await?;
        match attempt.take_failure() {
            None => Ok(attempt.results.into_iter().flatten().collect()),
            Some(e) => Err(e),
        }
    }

    /// Sends each shard its part of `vertices` once and reports what each
    /// part did; an error only for input that no shard was sent.
    pub(crate) async fn write_vertices_attempt(
        &self,
        ns: &str,
        graph: &str,
        vertices: &[VertexWrite],
    ) -> Result<PartsAttempt<Vertex>> {
        let (ns, graph) = self.graph_names(ns, graph)?;
        self.limits.check_batch("vertices", vertices.len())?;
        let mut seen = HashSet::new();
        for v in vertices {
            if !seen.insert(v.id.as_str()) {
                return Err(invalid(
                    "vertices",
                    format!("vertex id {:?} appears twice in one batch", excerpt(&v.id, ID_EXCERPT)),
                ));
            }
            self.check_properties(&v.properties_json)?;
        }
        let mut groups: BTreeMap<usize, Vec<GraphOp>> = BTreeMap::new();
        let mut order: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, v) in vertices.iter().enumerate() {
            let shard = self.vertex_owner(&ns, &v.id);
            groups.entry(shard).or_default().push(GraphOp { op: Some(graph_op::Op::PutVertex(v.clone())) });
            order.entry(shard).or_default().push(i);
        }
        let mut attempt = PartsAttempt::new(vertices.len());
        for (shard, result) in self.graph_apply_groups(&ns, &graph, groups).await {
            match result {
                Ok(written) => {
                    for (i, v) in order[&shard].iter().zip(written.vertices) {
                        attempt.results[*i] = Some(v);
                    }
                    attempt.committed.push(self.shards[shard].client.id().to_string());
                }
                Err(e) => attempt.failures.push(e),
            }
        }
        Ok(attempt)
    }

    /// Properties are checked for size here, before they are copied into
    /// shard calls; each shard checks them again and parses them (serde_json
    /// refuses nesting deeper than 128 levels).
    fn check_properties(&self, json: &str) -> Result<()> {
        if json.len() > self.limits.max_value_bytes {
            return Err(invalid(
                "properties_json",
                format!(
                    "is {} bytes; the limit is {} (limits.max_value_bytes)",
                    json.len(),
                    self.limits.max_value_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Reads vertices by id; `None` for missing ones, in request order.
    pub async fn get_vertices(&self, ns: &str, graph: &str, ids: &[String]) -> Result<Vec<Option<Vertex>>> {
        let (ns, graph) = self.graph_names(ns, graph)?;
        self.limits.check_batch("ids", ids.len())?;
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, id) in ids.iter().enumerate() {
            groups.entry(self.vertex_owner(&ns, id)).or_default().push(i);
        }
        let calls = groups.into_iter().map(|(shard, idx)| {
            let handle = &self.shards[shard];
            let req = omnishard_proto::v1::ShardGraphGetRequest {
                epoch: handle.epoch(),
                namespace: ns.clone(),
                graph: graph.clone(),
                ids: idx.iter().map(|&i| ids[i].clone()).collect(),
            };
            async move {
                let got = handle
                    .call(|c| {
                        let req = req.clone();
                        async move { c.graph_get(req).await }
                    })
                    .await;
                (idx, got)
            }
        });
        let mut out = vec![None; ids.len()];
        for (idx, got) in futures::future::join_all(calls).await {
            for (i, v) in idx.into_iter().zip(got?.vertices) {
                out[i] = v.vertex.filter(|_| v.found);
            }
        }
        Ok(out)
    }

    /// Deletes vertices and every edge touching them, both halves.
    /// Returns (vertices deleted, edges deleted).
    pub async fn delete_vertices(&self, ns: &str, graph: &str, ids: Vec<String>) -> Result<(u64, u64)> {
        let (ns_r, graph_r) = self.graph_names(ns, graph)?;
        self.limits.check_batch("ids", ids.len())?;
        let mut existing = 0;
        let mut groups: BTreeMap<usize, Vec<GraphOp>> = BTreeMap::new();
        for id in &ids {
            groups
                .entry(self.vertex_owner(&ns_r, id))
                .or_default()
                .push(GraphOp { op: Some(graph_op::Op::DeleteVertex(id.clone())) });
        }
        let deleted: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut other_halves: BTreeMap<usize, Vec<GraphOp>> = BTreeMap::new();
        let mut edges = HashSet::new();
        for (_, result) in self.graph_apply_groups(&ns_r, &graph_r, groups).await {
            let done = result?;
            existing += done.vertices_deleted;
            for e in done.removed_edges {
                // The half stored with the vertex is gone; remove the one stored with the other end.
                if deleted.contains(e.from.as_str()) {
                    other_halves
                        .entry(self.vertex_owner(&ns_r, &e.to))
                        .or_default()
                        .push(delete_half(EdgeHalf::In, &e));
                }
                if deleted.contains(e.to.as_str()) {
                    other_halves
                        .entry(self.vertex_owner(&ns_r, &e.from))
                        .or_default()
                        .push(delete_half(EdgeHalf::Out, &e));
                }
                edges.insert((e.from, e.to, e.label));
            }
        }
        for (_, result) in self.graph_apply_groups(&ns_r, &graph_r, other_halves).await {
            result?;
        }
        Ok((existing, edges.len() as u64))
    }

    /// Creates or updates edges; both endpoints must exist.
    pub async fn write_edges(&self, ns: &str, graph: &str, edges: Vec<EdgeWrite>) -> Result<Vec<Edge>> {
        let (ns_r, graph_r) = self.graph_names(ns, graph)?;
        self.limits.check_batch("edges", edges.len())?;
        let mut seen = HashSet::new();
        for e in &edges {
            let short = |s: &str| excerpt(s, ID_EXCERPT);
            if !seen.insert((e.from.as_str(), e.to.as_str(), e.label.as_str())) {
                let (from, label, to) = (short(&e.from), short(&e.label), short(&e.to));
                return Err(invalid("edges", format!("edge {from} -[{label}]-> {to} appears twice in one batch")));
            }
            if !e.weight.is_finite() {
                let (from, to) = (short(&e.from), short(&e.to));
                return Err(invalid("weight", format!("edge {from} -> {to}: must be a finite number")));
            }
            self.check_properties(&e.properties_json)?;
        }
        self.require_vertices(ns, graph, &edges).await?;
        // Out-halves first, with their sources.
        let mut out_groups: BTreeMap<usize, Vec<GraphOp>> = BTreeMap::new();
        for e in &edges {
            let mut op = put_half(EdgeHalf::Out, &edge_of(e), true);
            if let Some(graph_op::Op::PutEdgeHalf(half)) = op.op.as_mut() {
                half.mode = e.mode;
                half.expected_version = e.expected_version;
            }
            out_groups.entry(self.vertex_owner(&ns_r, &e.from)).or_default().push(op);
        }
        let mut written = Vec::new();
        for (_, result) in self.graph_apply_groups(&ns_r, &graph_r, out_groups).await {
            written.extend(result?.edges);
        }
        // Then in-halves, with their targets, carrying the out-halves' timestamps.
        let mut in_groups: BTreeMap<usize, Vec<GraphOp>> = BTreeMap::new();
        for e in &written {
            in_groups.entry(self.vertex_owner(&ns_r, &e.to)).or_default().push(put_half(EdgeHalf::In, e, false));
        }
        let mut failure = None;
        for (shard, result) in self.graph_apply_groups(&ns_r, &graph_r, in_groups.clone()).await {
            if let Err(e) = result {
                // Undo the out-halves whose in-halves did not land.
                let undo = self.undo_out_halves(&ns_r, &graph_r, &in_groups[&shard]).await;
                if let Err(undo_err) = undo {
                    tracing::warn!(error = %undo_err, "could not undo out-halves; repair will");
                }
                failure = failure.or(Some(e));
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        // Both halves are stored: drop the intents. If this fails, the repair
        // pass finds the intents, rewrites the (present) in-halves and drops them.
        let mut clears: BTreeMap<usize, Vec<GraphOp>> = BTreeMap::new();
        for e in &written {
            clears.entry(self.vertex_owner(&ns_r, &e.from)).or_default().push(clear_pending(e));
        }
        for (_, result) in self.graph_apply_groups(&ns_r, &graph_r, clears).await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "could not clear edge intents; the repair pass will");
            }
        }
        Ok(written)
    }

    /// Deletes edges, both halves; returns how many existed.
    pub async fn delete_edges(&self, ns: &str, graph: &str, edges: Vec<EdgeRef>) -> Result<u64> {
        let (ns, graph) = self.graph_names(ns, graph)?;
        self.limits.check_batch("edges", edges.len())?;
        let mut groups: BTreeMap<usize, Vec<GraphOp>> = BTreeMap::new();
        for e in &edges {
            groups.entry(self.vertex_owner(&ns, &e.from)).or_default().push(delete_half(EdgeHalf::Out, e));
        }
        let mut deleted = 0;
        for (_, result) in self.graph_apply_groups(&ns, &graph, groups).await {
            deleted += result?.edge_halves_deleted;
        }
        let mut groups: BTreeMap<usize, Vec<GraphOp>> = BTreeMap::new();
        for e in &edges {
            groups.entry(self.vertex_owner(&ns, &e.to)).or_default().push(delete_half(EdgeHalf::In, e));
        }
        for (_, result) in self.graph_apply_groups(&ns, &graph, groups).await {
            result?;
        }
        Ok(deleted)
    }

    /// Fails with `NOT_FOUND` naming the first endpoint that does not exist.
    async fn require_vertices(&self, ns: &str, graph: &str, edges: &[EdgeWrite]) -> Result<()> {
        let mut ids: Vec<String> = edges.iter().flat_map(|e| [e.from.clone(), e.to.clone()]).collect();
        ids.sort();
        ids.dedup();
        for chunk in ids.chunks(self.limits.max_batch_ops) {
            let found = self.get_vertices(ns, graph, chunk).await?;
            if let Some((id, _)) = chunk.iter().zip(&found).find(|(_, v)| v.is_none()) {
                let id = excerpt(id, ID_EXCERPT);
                return Err(Error::NotFound { what: format!("vertex {id:?} (an edge endpoint; create it first)") });
            }
        }
        Ok(())
    }

    async fn undo_out_halves(&self, ns: &str, graph: &str, in_ops: &[GraphOp]) -> Result<()> {
        let mut groups: BTreeMap<usize, Vec<GraphOp>> = BTreeMap::new();
        for op in in_ops {
            if let Some(graph_op::Op::PutEdgeHalf(ShardEdgeHalf { edge: Some(e), .. })) = &op.op {
                let r = EdgeRef { from: e.from.clone(), to: e.to.clone(), label: e.label.clone() };
                groups.entry(self.vertex_owner(ns, &e.from)).or_default().push(delete_half(EdgeHalf::Out, &r));
            }
        }
        for (_, result) in self.graph_apply_groups(ns, graph, groups).await {
            result?;
        }
        Ok(())
    }
}

fn edge_of(e: &EdgeWrite) -> Edge {
    Edge {
        from: e.from.clone(),
        to: e.to.clone(),
        label: e.label.clone(),
        properties_json: e.properties_json.clone(),
        weight: e.weight,
        ..Default::default()
    }
}

/// Writes one half; an out-half written `pending` leaves an intent for the repair pass.
pub(crate) fn put_half(half: EdgeHalf, edge: &Edge, pending: bool) -> GraphOp {
    GraphOp {
        op: Some(graph_op::Op::PutEdgeHalf(ShardEdgeHalf {
            half: half as i32,
            edge: Some(edge.clone()),
            pending,
            ..Default::default()
        })),
    }
}

/// Drops the intent of an out-half whose in-half is stored.
pub(crate) fn clear_pending(edge: &Edge) -> GraphOp {
    GraphOp {
        op: Some(graph_op::Op::ClearPending(EdgeRef {
            from: edge.from.clone(),
            to: edge.to.clone(),
            label: edge.label.clone(),
        })),
    }
}

pub(crate) fn delete_half(half: EdgeHalf, edge: &EdgeRef) -> GraphOp {
    GraphOp { op: Some(graph_op::Op::DeleteEdgeHalf(ShardEdgeHalfRef { half: half as i32, edge: Some(edge.clone()) })) }
}
