//! The graph model at the gateway: writes split into per-shard transactions
//! (both halves of every edge), reads routed to owners, and traversals run
//! hop by hop with one batched call per shard.
//!
//! Layout:
//! * [`write`] — vertex and edge writes and deletes, keeping both halves in step.
//! * [`traverse`] — neighbours, vertices by label, k-hop traversal and shortest paths.
//! * [`gremlin`] — the Gremlin-style query language: parser.
//! * [`query`] — running parsed queries.
//! * [`repair`] — finishing edges whose writer died between the two halves.

pub mod gremlin;
pub mod query;
pub mod repair;
pub mod traverse;
pub mod write;

use std::collections::BTreeMap;

use omnishard_common::namespace;
use omnishard_proto::v1::{GraphOp, ShardGraphApplyRequest, ShardGraphApplyResponse};

use crate::cluster::Cluster;
use crate::error::Result;

/// Messages quote client text only through this, never whole.
pub(crate) use omnishard_common::query_text::excerpt;

impl Cluster {
    /// Resolved `(namespace, graph)` names.
    pub(crate) fn graph_names(&self, ns: &str, graph: &str) -> Result<(String, String)> {
        Ok((namespace::resolve(ns)?.to_string(), namespace::resolve_name("graph", graph)?.to_string()))
    }

    /// Index of the shard owning vertex `id`.
    pub(crate) fn vertex_owner(&self, ns: &str, id: &str) -> usize {
        self.ring.owner_index(ns, id.as_bytes())
    }

    /// Sends each shard its ops as one transaction, all shards in parallel.
    pub(crate) async fn graph_apply_groups(
        &self,
        ns: &str,
        graph: &str,
        groups: BTreeMap<usize, Vec<GraphOp>>,
    ) -> Vec<(usize, Result<ShardGraphApplyResponse>)> {
        let calls = groups.into_iter().map(|(shard, ops)| {
            let handle = &self.shards[shard];
            let req = ShardGraphApplyRequest {
                epoch: handle.epoch(),
                namespace: ns.to_string(),
                graph: graph.to_string(),
                ops,
            };
            async move {
                let result = handle
                    .call(|c| {
                        let req = req.clone();
                        async move { c.graph_apply(req).await }
                    })
                    .await;
                (shard, result)
            }
        });
        futures::future::join_all(calls).await
    }
}
