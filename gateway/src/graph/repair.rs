//! The repair pass for edges whose writer died between the two halves.
//!
//! Every out-half is written together with an intent record; the intent is
//! dropped once the in-half is stored. Any gateway periodically asks every
//! shard for intents older than one interval and finishes those edges: it
//! writes the in-half again (idempotent) and drops the intent, or — when the
//! target vertex is gone — deletes the out-half. An in-direction is therefore
//! stale for at most about two repair intervals (default 2 s each) after a
//! crash, plus the time the target shard is down.

use std::time::Duration;

use omnishard_proto::v1::{EdgeHalf, EdgeRef, PendingEdge, ShardGraphPendingRequest};

use super::write::{clear_pending, delete_half, put_half};
use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::kv::now_ms;

/// Intents handled per shard and pass.
const BATCH: u32 = 1000;

impl Cluster {
    /// One repair pass over every shard; returns how many edges it finished.
    pub async fn repair_pending_edges(&self, older_than: Duration) -> Result<usize> {
        let cutoff = now_ms().saturating_sub(older_than.as_millis() as u64);
        let mut repaired = 0;
        for handle in &self.shards {
            let req = ShardGraphPendingRequest { epoch: handle.epoch(), older_than_ms: cutoff, limit: BATCH };
            let pending = handle.call(|c| c.graph_pending(req)).await?;
            for item in pending.edges {
                self.finish_edge(item).await?;
                repaired += 1;
            }
        }
        Ok(repaired)
    }

    async fn finish_edge(&self, item: PendingEdge) -> Result<()> {
        let Some(edge) = item.edge else { return Ok(()) };
        let (ns, graph) = (item.namespace, item.graph);
        let target = self.vertex_owner(&ns, &edge.to);
        let source = self.vertex_owner(&ns, &edge.from);
        let in_half = std::collections::BTreeMap::from([(target, vec![put_half(EdgeHalf::In, &edge, false)])]);
        let result = self.graph_apply_groups(&ns, &graph, in_half).await.pop().map(|(_, r)| r);
        let fix = match result {
            Some(Ok(_)) => clear_pending(&edge),
            // The target vertex was deleted meanwhile: the edge must go.
            Some(Err(Error::Shard { code: tonic::Code::NotFound, .. })) => {
                let r = EdgeRef { from: edge.from.clone(), to: edge.to.clone(), label: edge.label.clone() };
                delete_half(EdgeHalf::Out, &r)
            }
            Some(Err(e)) => return Err(e),
            None => return Ok(()),
        };
        let source_op = std::collections::BTreeMap::from([(source, vec![fix])]);
        if let Some((_, Err(e))) = self.graph_apply_groups(&ns, &graph, source_op).await.pop() {
            return Err(e);
        }
        tracing::info!(from = %edge.from, to = %edge.to, label = %edge.label, "repaired edge");
        Ok(())
    }
}
