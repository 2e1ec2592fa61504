//! Tonic adapter for `GraphService`: convert, call the [`Cluster`], map errors.

use std::sync::Arc;

use omnishard_proto::v1::graph_service_server::GraphService;
use omnishard_proto::v1::*;
use omnishard_telemetry::record;
use tonic::{Request, Response, Status};

use crate::graph::traverse::{PathSpec, TraverseSpec};
use crate::live::LiveCluster;

/// Adapter for `GraphService`.
pub struct GraphGrpc {
    pub(crate) cluster: Arc<LiveCluster>,
}

fn status(err: crate::Error) -> Status {
    err.to_status()
}

/// A direction from the wire; unspecified means out.
fn direction(raw: i32) -> Result<Direction, Status> {
    match Direction::try_from(raw) {
        Ok(Direction::Unspecified) => Ok(Direction::Out),
        Ok(d) => Ok(d),
        Err(_) => Err(Status::invalid_argument(format!("direction: {raw} is not one of OUT, IN, BOTH"))),
    }
}

#[tonic::async_trait]
impl GraphService for GraphGrpc {
    async fn write_vertices(
        &self,
        request: Request<WriteVerticesRequest>,
    ) -> Result<Response<WriteVerticesResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        // Parts refused by a moving range are re-sent on their own.
        let vertices = self.cluster.write_vertices(&req.namespace, &req.graph, req.vertices).await.map_err(status)?;
        Ok(Response::new(WriteVerticesResponse { vertices }))
    }

    async fn get_vertices(
        &self,
        request: Request<GetVerticesRequest>,
    ) -> Result<Response<GetVerticesResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let found = self
            .cluster
            .retry(|c| {
                let req = &req;
                async move { c.get_vertices(&req.namespace, &req.graph, &req.ids).await }
            })
            .await
            .map_err(status)?;
        let vertices = found.into_iter().map(|v| MaybeVertex { found: v.is_some(), vertex: v }).collect();
        Ok(Response::new(GetVerticesResponse { vertices }))
    }

    async fn delete_vertices(
        &self,
        request: Request<DeleteVerticesRequest>,
    ) -> Result<Response<DeleteVerticesResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let (vertices_deleted, edges_deleted) =
            self.cluster.current().delete_vertices(&req.namespace, &req.graph, req.ids).await.map_err(status)?;
        Ok(Response::new(DeleteVerticesResponse { vertices_deleted, edges_deleted }))
    }

    async fn write_edges(&self, request: Request<WriteEdgesRequest>) -> Result<Response<WriteEdgesResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let edges = self.cluster.current().write_edges(&req.namespace, &req.graph, req.edges).await.map_err(status)?;
        Ok(Response::new(WriteEdgesResponse { edges }))
    }

    async fn delete_edges(
        &self,
        request: Request<DeleteEdgesRequest>,
    ) -> Result<Response<DeleteEdgesResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let edges_deleted =
            self.cluster.current().delete_edges(&req.namespace, &req.graph, req.edges).await.map_err(status)?;
        Ok(Response::new(DeleteEdgesResponse { edges_deleted }))
    }

    async fn neighbors(&self, request: Request<NeighborsRequest>) -> Result<Response<NeighborsResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let direction = direction(req.direction)?;
        let page = self
            .cluster
            .retry(|c| {
                let req = &req;
                async move {
                    c.neighbors(
                        &req.namespace,
                        &req.graph,
                        req.id.clone(),
                        direction,
                        req.labels.clone(),
                        req.limit,
                        &req.cursor,
                    )
                    .await
                }
            })
            .await
            .map_err(status)?;
        Ok(Response::new(page))
    }

    async fn find_vertices(
        &self,
        request: Request<FindVerticesRequest>,
    ) -> Result<Response<FindVerticesResponse>, Status> {
        let req = request.into_inner();
        let found = self
            .cluster
            .retry(|c| {
                let req = req.clone();
                async move { c.find_vertices(req).await }
            })
            .await
            .map_err(status)?;
        Ok(Response::new(found))
    }

    async fn traverse(&self, request: Request<TraverseRequest>) -> Result<Response<TraverseResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        if TraversalOrder::try_from(req.order).is_err() {
            return Err(Status::invalid_argument(format!("order: {} is not BFS or DFS", req.order)));
        }
        let (namespace, graph, dfs) =
            (req.namespace.clone(), req.graph.clone(), req.order == TraversalOrder::Dfs as i32);
        let spec = TraverseSpec {
            start: req.start,
            direction: direction(req.direction)?,
            edge_labels: req.edge_labels,
            vertex_labels: req.vertex_labels,
            max_depth: req.max_depth,
            with_paths: req.return_paths,
            allow_partial: req.allow_partial,
            vertex_filters: req.vertex_filters,
            edge_filters: req.edge_filters,
        };
        let found = self
            .cluster
            .retry(|c| {
                let (ns, graph, spec) = (&namespace, &graph, spec.clone());
                async move {
                    if dfs {
                        c.traverse_dfs(ns, graph, spec).await
                    } else {
                        c.traverse(ns, graph, spec).await
                    }
                }
            })
            .await
            .map_err(status)?;
        Ok(Response::new(TraverseResponse {
            reached: found.reached,
            shard_round_trips: found.shard_round_trips,
            truncated: found.truncated_by.is_some(),
            truncated_by: found.truncated_by.unwrap_or_default(),
        }))
    }

    async fn query(&self, request: Request<QueryRequest>) -> Result<Response<QueryResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let out = self
            .cluster
            .retry(|c| {
                let req = &req;
                async move { c.query(&req.namespace, &req.graph, &req.query).await }
            })
            .await
            .map_err(status)?;
        Ok(Response::new(QueryResponse {
            results_json: out.results.iter().map(|v| v.to_string()).collect(),
            shard_round_trips: out.shard_round_trips,
        }))
    }

    async fn shortest_path(
        &self,
        request: Request<ShortestPathRequest>,
    ) -> Result<Response<ShortestPathResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let (namespace, graph) = (req.namespace.clone(), req.graph.clone());
        let spec = PathSpec {
            from: req.from,
            to: req.to,
            direction: direction(req.direction)?,
            edge_labels: req.edge_labels,
            max_depth: req.max_depth,
        };
        let (found, shard_round_trips) = if req.weighted {
            self.cluster
                .retry(|c| {
                    let (ns, graph, spec) = (&namespace, &graph, spec.clone());
                    async move { c.weighted_path(ns, graph, spec).await }
                })
                .await
                .map_err(status)?
        } else {
            let (path, trips) = self
                .cluster
                .retry(|c| {
                    let (ns, graph, spec) = (&namespace, &graph, spec.clone());
                    async move { c.shortest_path(ns, graph, spec).await }
                })
                .await
                .map_err(status)?;
            (
                path.map(|p| {
                    let hops = p.len().saturating_sub(1) as f64;
                    (p, hops)
                }),
                trips,
            )
        };
        let (path, cost) = found.clone().unwrap_or_default();
        Ok(Response::new(ShortestPathResponse { found: found.is_some(), path, cost, shard_round_trips }))
    }
}
