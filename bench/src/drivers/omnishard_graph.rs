//! The graph workloads on omnishard through its gateway: vertices and edges
//! written in batches (acknowledged once both halves of each edge are in
//! their shards' synced WALs), traversals and shortest paths run by the
//! gateway across shards.

use std::sync::Arc;

use omnishard_client::Client;
use omnishard_proto::v1::*;

use crate::graph::{GraphClient, GraphSystem, SyntheticGraph, MAX_OUT_DEGREE};
use crate::kv::DriverResult;
use crate::runner::in_parallel;

/// The benchmark graph's namespace and name.
const NAMESPACE: &str = "bench";
const GRAPH: &str = "deps";
/// Vertices or edges per write request while loading.
const BATCH: usize = 1_000;

/// A gateway; clients share its connection.
pub struct OmnishardGraph {
    client: Client,
}

impl OmnishardGraph {
    pub async fn connect(url: &str) -> DriverResult<OmnishardGraph> {
        let client = Client::connect(url).await.map_err(|e| format!("connecting to {url}: {e}"))?;
        Ok(OmnishardGraph { client })
    }
}

fn id(v: u64) -> String {
    format!("v{v}")
}

fn number(id: &str) -> DriverResult<u64> {
    id.strip_prefix('v').and_then(|n| n.parse().ok()).ok_or_else(|| format!("unexpected vertex id {id:?}"))
}

impl GraphSystem for OmnishardGraph {
    type Client = Client;

    fn name(&self) -> String {
        "omnishard".into()
    }

    async fn load(&self, graph: Arc<SyntheticGraph>, loaders: usize) -> DriverResult<()> {
        let vertices: Vec<Vec<VertexWrite>> = (0..graph.vertices)
            .map(|v| VertexWrite {
                id: id(v),
                label: "dep".into(),
                properties_json: format!(r#"{{"n": {v}}}"#),
                ..Default::default()
            })
            .collect::<Vec<_>>()
            .chunks(BATCH)
            .map(<[VertexWrite]>::to_vec)
            .collect();
        let workers = vec![self.client.graph(); loaders.max(1)];
        in_parallel(workers.clone(), vertices, |mut api, vertices| async move {
            let req = WriteVerticesRequest { namespace: NAMESPACE.into(), graph: GRAPH.into(), vertices };
            api.write_vertices(req).await.map_err(|e| e.message().to_string())?;
            Ok(api)
        })
        .await?;
        let edges: Vec<EdgeWrite> = graph
            .edge_list()
            .map(|(from, to)| EdgeWrite {
                from: id(from),
                to: id(to),
                label: "depends".into(),
                weight: 1.0,
                ..Default::default()
            })
            .collect();
        let edges = edges.chunks(BATCH).map(<[EdgeWrite]>::to_vec).collect();
        in_parallel(workers, edges, |mut api, edges| async move {
            let req = WriteEdgesRequest { namespace: NAMESPACE.into(), graph: GRAPH.into(), edges };
            api.write_edges(req).await.map_err(|e| e.message().to_string())?;
            Ok(api)
        })
        .await
    }

    async fn client(&self) -> DriverResult<Client> {
        Ok(self.client.clone())
    }
}

impl GraphClient for Client {
    async fn neighbors(&mut self, v: u64) -> DriverResult<usize> {
        let req = NeighborsRequest {
            namespace: NAMESPACE.into(),
            graph: GRAPH.into(),
            id: id(v),
            direction: Direction::Out as i32,
            limit: MAX_OUT_DEGREE as u32,
            ..Default::default()
        };
        let edges = self.graph().neighbors(req).await.map_err(|e| e.message().to_string())?.into_inner().edges;
        Ok(edges.len())
    }

    async fn reach(&mut self, v: u64, depth: u32) -> DriverResult<usize> {
        let req = TraverseRequest {
            namespace: NAMESPACE.into(),
            graph: GRAPH.into(),
            start: vec![id(v)],
            direction: Direction::Out as i32,
            max_depth: depth,
            ..Default::default()
        };
        let reached = self.graph().traverse(req).await.map_err(|e| e.message().to_string())?.into_inner().reached;
        Ok(reached.iter().filter(|r| r.depth > 0).count())
    }

    async fn shortest_path(&mut self, from: u64, to: u64, max_depth: u32) -> DriverResult<Option<u32>> {
        let req = ShortestPathRequest {
            namespace: NAMESPACE.into(),
            graph: GRAPH.into(),
            from: id(from),
            to: id(to),
            direction: Direction::Out as i32,
            max_depth,
            ..Default::default()
        };
        let path = self.graph().shortest_path(req).await.map_err(|e| e.message().to_string())?.into_inner();
        if !path.found {
            return Ok(None);
        }
        // Both ends are in the path; checking them keeps a wrong answer from passing.
        let ends = (path.path.first().map(|s| number(s)), path.path.last().map(|s| number(s)));
        match ends {
            (Some(Ok(a)), Some(Ok(b))) if a == from && b == to => Ok(Some(path.path.len() as u32 - 1)),
            _ => Err(format!("a path {from} → {to} came back as {:?}", path.path)),
        }
    }
}
