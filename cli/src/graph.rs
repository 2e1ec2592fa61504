//! `omnishard graph ...`: vertices, edges, bulk load and traversals.

use std::io::BufRead;

use anyhow::{bail, Context};
use omnishard_client::Client;
use omnishard_proto::v1::*;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::args::{DirectionArg, EdgeCommand, Global, GraphArgs, GraphCommand, VertexCommand};
use crate::output;

/// Vertices or edges per request while loading.
const LOAD_BATCH: usize = 1000;

pub async fn run(global: &Global, args: GraphArgs) -> anyhow::Result<()> {
    let client = Client::connect(&global.gateway).await?;
    let ctx = Ctx { api: client.graph(), namespace: global.namespace.clone(), graph: args.graph, json: global.json };
    match args.command {
        GraphCommand::Vertex(cmd) => vertex(ctx, cmd).await,
        GraphCommand::Edge(cmd) => edge(ctx, cmd).await,
        GraphCommand::Load { file } => load(ctx, &file).await,
        GraphCommand::Neighbors { id, direction, label, limit } => neighbors(ctx, id, direction, label, limit).await,
        GraphCommand::Traverse { start, direction, depth, label, paths, dfs } => {
            let order = if dfs { TraversalOrder::Dfs } else { TraversalOrder::Bfs };
            traverse(
                ctx,
                TraverseRequest {
                    start,
                    direction: direction_of(direction),
                    max_depth: depth,
                    edge_labels: label,
                    return_paths: paths,
                    order: order as i32,
                    ..Default::default()
                },
            )
            .await
        }
        GraphCommand::Path { from, to, direction, max_depth } => path(ctx, from, to, direction, max_depth).await,
        GraphCommand::Find { label, property, value, limit } => find(ctx, label, property, value, limit).await,
        GraphCommand::Query { query } => run_query(ctx, query).await,
    }
}

struct Ctx {
    api: graph_service_client::GraphServiceClient<omnishard_client::Transport>,
    namespace: String,
    graph: String,
    json: bool,
}

fn vertex_json(v: &Vertex) -> Value {
    json!({"id": v.id, "label": v.label, "properties": props(&v.properties_json), "version": v.version,
           "created_ms": v.created_ms, "updated_ms": v.updated_ms})
}

fn edge_json(e: &Edge) -> Value {
    json!({"from": e.from, "to": e.to, "label": e.label, "properties": props(&e.properties_json),
           "weight": e.weight, "version": e.version})
}

fn props(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn direction_of(d: DirectionArg) -> i32 {
    match d {
        DirectionArg::Out => Direction::Out as i32,
        DirectionArg::In => Direction::In as i32,
        DirectionArg::Both => Direction::Both as i32,
    }
}

async fn vertex(mut ctx: Ctx, cmd: VertexCommand) -> anyhow::Result<()> {
    match cmd {
        VertexCommand::Put { id, label, props, mode, expected_version } => {
            let mode = match mode.as_str() {
                "upsert" => WriteMode::Upsert,
                "create" => WriteMode::Create,
                "merge" => WriteMode::Merge,
                "replace" => WriteMode::Replace,
                other => bail!("--mode: {other:?} is not upsert, create, merge or replace"),
            };
            let write = VertexWrite { id, label, properties_json: props, mode: mode as i32, expected_version };
            let req = WriteVerticesRequest { namespace: ctx.namespace, graph: ctx.graph, vertices: vec![write] };
            let v = ctx.api.write_vertices(req).await.map_err(omnishard_client::Error::from)?.into_inner().vertices;
            let v = v.first().context("gateway returned no vertex")?;
            if ctx.json {
                output::print_json(&vertex_json(v));
            } else {
                println!("OK version={}", v.version);
            }
        }
        VertexCommand::Get { id } => {
            let req = GetVerticesRequest { namespace: ctx.namespace, graph: ctx.graph, ids: vec![id.clone()] };
            let found = ctx.api.get_vertices(req).await.map_err(omnishard_client::Error::from)?.into_inner().vertices;
            let Some(v) = found.into_iter().next().and_then(|m| m.vertex.filter(|_| m.found)) else {
                return Err(omnishard_client::Error::from(tonic::Status::not_found(format!(
                    "vertex {id:?} not found"
                )))
                .into());
            };
            if ctx.json {
                output::print_json(&vertex_json(&v));
            } else {
                println!("{}\t{}\t{}", v.id, v.label, v.properties_json);
            }
        }
        VertexCommand::Del { id } => {
            let req = DeleteVerticesRequest { namespace: ctx.namespace, graph: ctx.graph, ids: vec![id] };
            let r = ctx.api.delete_vertices(req).await.map_err(omnishard_client::Error::from)?.into_inner();
            if ctx.json {
                output::print_json(&json!({"vertices_deleted": r.vertices_deleted, "edges_deleted": r.edges_deleted}));
            } else {
                println!("deleted {} vertex, {} edges", r.vertices_deleted, r.edges_deleted);
            }
        }
    }
    Ok(())
}

async fn edge(mut ctx: Ctx, cmd: EdgeCommand) -> anyhow::Result<()> {
    match cmd {
        EdgeCommand::Put { from, to, label, props, weight } => {
            let write = EdgeWrite { from, to, label, properties_json: props, weight, ..Default::default() };
            let req = WriteEdgesRequest { namespace: ctx.namespace, graph: ctx.graph, edges: vec![write] };
            let e = ctx.api.write_edges(req).await.map_err(omnishard_client::Error::from)?.into_inner().edges;
            let e = e.first().context("gateway returned no edge")?;
            if ctx.json {
                output::print_json(&edge_json(e));
            } else {
                println!("OK version={}", e.version);
            }
        }
        EdgeCommand::Del { from, to, label } => {
            let req = DeleteEdgesRequest {
                namespace: ctx.namespace,
                graph: ctx.graph,
                edges: vec![EdgeRef { from, to, label }],
            };
            let n = ctx.api.delete_edges(req).await.map_err(omnishard_client::Error::from)?.into_inner().edges_deleted;
            if ctx.json {
                output::print_json(&json!({ "edges_deleted": n }));
            } else {
                println!("deleted {n} edges");
            }
        }
    }
    Ok(())
}

/// One line of a load file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadLine {
    vertex: Option<LoadVertex>,
    edge: Option<LoadEdge>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadVertex {
    id: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    properties: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadEdge {
    from: String,
    to: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    properties: Option<Value>,
    #[serde(default = "one")]
    weight: f64,
}

fn one() -> f64 {
    1.0
}

/// Loads JSON lines: vertices are flushed before any edge batch, so edges
/// always find their endpoints.
async fn load(mut ctx: Ctx, file: &std::path::Path) -> anyhow::Result<()> {
    let size = std::fs::metadata(file).with_context(|| format!("reading {}", file.display()))?.len();
    let reader = std::io::BufReader::new(std::fs::File::open(file)?);
    let bar = output::byte_bar(Some(size), false);
    let (mut vertices, mut edges) = (Vec::new(), Vec::new());
    let (mut nv, mut ne) = (0usize, 0usize);
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        bar.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        let parsed: LoadLine =
            serde_json::from_str(&line).with_context(|| format!("{}:{}: bad line", file.display(), n + 1))?;
        match (parsed.vertex, parsed.edge) {
            (Some(v), None) => vertices.push(VertexWrite {
                id: v.id,
                label: v.label,
                properties_json: v.properties.map(|p| p.to_string()).unwrap_or_default(),
                ..Default::default()
            }),
            (None, Some(e)) => edges.push(EdgeWrite {
                from: e.from,
                to: e.to,
                label: e.label,
                properties_json: e.properties.map(|p| p.to_string()).unwrap_or_default(),
                weight: e.weight,
                ..Default::default()
            }),
            _ => bail!("{}:{}: a line holds either \"vertex\" or \"edge\"", file.display(), n + 1),
        }
        if vertices.len() >= LOAD_BATCH {
            nv += flush_vertices(&mut ctx, &mut vertices).await?;
        }
        if edges.len() >= LOAD_BATCH {
            nv += flush_vertices(&mut ctx, &mut vertices).await?;
            ne += flush_edges(&mut ctx, &mut edges).await?;
        }
        bar.set_message(format!("{nv} vertices, {ne} edges"));
    }
    nv += flush_vertices(&mut ctx, &mut vertices).await?;
    ne += flush_edges(&mut ctx, &mut edges).await?;
    bar.finish_and_clear();
    if ctx.json {
        output::print_json(&json!({"vertices": nv, "edges": ne}));
    } else {
        println!("loaded {nv} vertices and {ne} edges");
    }
    Ok(())
}

async fn flush_vertices(ctx: &mut Ctx, batch: &mut Vec<VertexWrite>) -> anyhow::Result<usize> {
    if batch.is_empty() {
        return Ok(0);
    }
    let vertices = std::mem::take(batch);
    let n = vertices.len();
    let req = WriteVerticesRequest { namespace: ctx.namespace.clone(), graph: ctx.graph.clone(), vertices };
    ctx.api.write_vertices(req).await.map_err(omnishard_client::Error::from)?;
    Ok(n)
}

async fn flush_edges(ctx: &mut Ctx, batch: &mut Vec<EdgeWrite>) -> anyhow::Result<usize> {
    if batch.is_empty() {
        return Ok(0);
    }
    let edges = std::mem::take(batch);
    let n = edges.len();
    let req = WriteEdgesRequest { namespace: ctx.namespace.clone(), graph: ctx.graph.clone(), edges };
    ctx.api.write_edges(req).await.map_err(omnishard_client::Error::from)?;
    Ok(n)
}

async fn neighbors(mut ctx: Ctx, id: String, dir: DirectionArg, labels: Vec<String>, limit: u32) -> anyhow::Result<()> {
    let req = NeighborsRequest {
        namespace: ctx.namespace,
        graph: ctx.graph,
        id,
        direction: direction_of(dir),
        labels,
        limit,
        cursor: Vec::new(),
    };
    let page = ctx.api.neighbors(req).await.map_err(omnishard_client::Error::from)?.into_inner();
    if ctx.json {
        output::print_json(
            &json!({"edges": page.edges.iter().map(edge_json).collect::<Vec<_>>(), "more": !page.next_cursor.is_empty()}),
        );
    } else {
        for e in &page.edges {
            println!("{} -[{}]-> {}", e.from, e.label, e.to);
        }
    }
    Ok(())
}

async fn traverse(mut ctx: Ctx, mut req: TraverseRequest) -> anyhow::Result<()> {
    let paths = req.return_paths;
    req.namespace = ctx.namespace;
    req.graph = ctx.graph;
    let r = ctx.api.traverse(req).await.map_err(omnishard_client::Error::from)?.into_inner();
    if ctx.json {
        let reached: Vec<Value> = r
            .reached
            .iter()
            .map(|x| json!({"id": x.vertex.as_ref().map(|v| v.id.clone()), "depth": x.depth, "path": x.path}))
            .collect();
        output::print_json(
            &json!({"reached": reached, "shard_round_trips": r.shard_round_trips, "truncated": r.truncated}),
        );
    } else {
        for x in &r.reached {
            let id = x.vertex.as_ref().map(|v| v.id.as_str()).unwrap_or_default();
            if paths {
                println!("{}\t{}\t{}", x.depth, id, x.path.join(" -> "));
            } else {
                println!("{}\t{}", x.depth, id);
            }
        }
        eprintln!("{} vertices, {} shard round trips", r.reached.len(), r.shard_round_trips);
    }
    Ok(())
}

async fn path(mut ctx: Ctx, from: String, to: String, dir: DirectionArg, max_depth: u32) -> anyhow::Result<()> {
    let req = ShortestPathRequest {
        namespace: ctx.namespace,
        graph: ctx.graph,
        from,
        to,
        direction: direction_of(dir),
        max_depth,
        ..Default::default()
    };
    let r = ctx.api.shortest_path(req).await.map_err(omnishard_client::Error::from)?.into_inner();
    if ctx.json {
        output::print_json(&json!({"found": r.found, "path": r.path, "shard_round_trips": r.shard_round_trips}));
    } else if r.found {
        println!("{}", r.path.join(" -> "));
    } else {
        println!("no path");
    }
    Ok(())
}

async fn find(
    mut ctx: Ctx,
    label: String,
    property: Option<String>,
    value: Option<String>,
    limit: u32,
) -> anyhow::Result<()> {
    let req = FindVerticesRequest {
        namespace: ctx.namespace,
        graph: ctx.graph,
        label,
        property: property.unwrap_or_default(),
        value_json: value.unwrap_or_default(),
        limit,
        cursor: Vec::new(),
    };
    let page = ctx.api.find_vertices(req).await.map_err(omnishard_client::Error::from)?.into_inner();
    if ctx.json {
        output::print_json(
            &json!({"vertices": page.vertices.iter().map(vertex_json).collect::<Vec<_>>(), "more": !page.next_cursor.is_empty()}),
        );
    } else {
        for v in &page.vertices {
            println!("{}\t{}\t{}", v.id, v.label, v.properties_json);
        }
    }
    Ok(())
}

async fn run_query(mut ctx: Ctx, query: String) -> anyhow::Result<()> {
    let req = QueryRequest { namespace: ctx.namespace, graph: ctx.graph, query };
    let r = ctx.api.query(req).await.map_err(omnishard_client::Error::from)?.into_inner();
    let results: Vec<Value> = r.results_json.iter().map(|j| serde_json::from_str(j).unwrap_or(Value::Null)).collect();
    if ctx.json {
        output::print_json(&json!({"results": results, "shard_round_trips": r.shard_round_trips}));
    } else {
        for value in &results {
            println!("{value}");
        }
    }
    Ok(())
}
