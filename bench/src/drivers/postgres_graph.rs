//! The graph workloads on PostgreSQL: an adjacency table with its indexes in
//! place before the load (`bench_edges (src, dst)` primary key plus an index
//! on `dst`), loaded with `COPY`, traversed with recursive CTEs.

use std::sync::Arc;

use bytes::Bytes;
use futures::SinkExt;
use tokio_postgres::{Client, Statement};

use crate::drivers::postgres::{connect, prepare};
use crate::graph::{GraphClient, GraphSystem, SyntheticGraph};
use crate::kv::DriverResult;

/// Rows per `COPY` message.
const COPY_ROWS: usize = 10_000;

/// A PostgreSQL server named by a connection string.
pub struct PostgresGraph {
    url: String,
}

impl PostgresGraph {
    /// (Re)creates the empty, indexed vertex and edge tables.
    pub async fn create(url: &str) -> DriverResult<PostgresGraph> {
        let client = connect(url).await?;
        client
            .batch_execute(
                "DROP TABLE IF EXISTS bench_edges, bench_vertices;
                 CREATE TABLE bench_vertices (id bigint PRIMARY KEY, label text NOT NULL, properties jsonb NOT NULL);
                 CREATE TABLE bench_edges (src bigint NOT NULL, dst bigint NOT NULL, label text NOT NULL,
                                           weight float8 NOT NULL, PRIMARY KEY (src, dst));
                 CREATE INDEX bench_edges_dst ON bench_edges (dst);",
            )
            .await
            .map_err(|e| format!("creating the graph tables: {e}"))?;
        Ok(PostgresGraph { url: url.to_string() })
    }
}

/// Streams `rows` (already in COPY's text format) into `table` on one connection.
async fn copy(url: String, table: &'static str, rows: Vec<String>) -> DriverResult<()> {
    let client = connect(&url).await?;
    let sink = client.copy_in(&format!("COPY {table} FROM STDIN")).await.map_err(|e| format!("COPY {table}: {e}"))?;
    futures::pin_mut!(sink);
    for chunk in rows.chunks(COPY_ROWS) {
        sink.send(Bytes::from(chunk.concat())).await.map_err(|e| format!("COPY {table}: {e}"))?;
    }
    sink.finish().await.map(drop).map_err(|e| format!("COPY {table}: {e}"))
}

/// Runs one `COPY` per loader, each with its share of `rows`.
async fn copy_parallel(url: &str, table: &'static str, rows: Vec<String>, loaders: usize) -> DriverResult<()> {
    let per_loader = rows.len().div_ceil(loaders.max(1)).max(1);
    let mut tasks = Vec::new();
    for part in rows.chunks(per_loader) {
        tasks.push(tokio::spawn(copy(url.to_string(), table, part.to_vec())));
    }
    for task in tasks {
        task.await.map_err(|e| format!("COPY task failed: {e}"))??;
    }
    Ok(())
}

impl GraphSystem for PostgresGraph {
    type Client = PostgresGraphClient;

    fn name(&self) -> String {
        "postgres".into()
    }

    async fn load(&self, graph: Arc<SyntheticGraph>, loaders: usize) -> DriverResult<()> {
        let vertices = (0..graph.vertices).map(|v| format!("{v}\tdep\t{{\"n\": {v}}}\n")).collect();
        copy_parallel(&self.url, "bench_vertices", vertices, loaders).await?;
        let edges = graph.edge_list().map(|(from, to)| format!("{from}\t{to}\tdepends\t1\n")).collect();
        copy_parallel(&self.url, "bench_edges", edges, loaders).await?;
        // Fresh planner statistics, as after any bulk load.
        connect(&self.url)
            .await?
            .batch_execute("ANALYZE bench_vertices; ANALYZE bench_edges;")
            .await
            .map_err(|e| e.to_string())
    }

    async fn client(&self) -> DriverResult<PostgresGraphClient> {
        let client = connect(&self.url).await?;
        let neighbors = prepare(&client, "SELECT dst, label, weight FROM bench_edges WHERE src = $1").await?;
        // UNION (not UNION ALL) drops repeated (vertex, depth) rows, so each
        // level is expanded once per distinct vertex.
        let reach = prepare(
            &client,
            "WITH RECURSIVE reach(v, d) AS (
                 SELECT $1::bigint, 0
                 UNION
                 SELECT e.dst, r.d + 1 FROM reach r JOIN bench_edges e ON e.src = r.v WHERE r.d < $2)
             SELECT count(DISTINCT v) - 1 FROM reach",
        )
        .await?;
        let path = prepare(
            &client,
            "WITH RECURSIVE bfs(v, d) AS (
                 SELECT $1::bigint, 0
                 UNION
                 SELECT e.dst, b.d + 1 FROM bfs b JOIN bench_edges e ON e.src = b.v WHERE b.d < $3)
             SELECT min(d) FROM bfs WHERE v = $2",
        )
        .await?;
        Ok(PostgresGraphClient { client, neighbors, reach, path })
    }
}

/// One connection with its prepared statements.
pub struct PostgresGraphClient {
    client: Client,
    neighbors: Statement,
    reach: Statement,
    path: Statement,
}

impl GraphClient for PostgresGraphClient {
    async fn neighbors(&mut self, v: u64) -> DriverResult<usize> {
        let rows = self.client.query(&self.neighbors, &[&(v as i64)]).await.map_err(|e| e.to_string())?;
        Ok(rows.len())
    }

    async fn reach(&mut self, v: u64, depth: u32) -> DriverResult<usize> {
        let row =
            self.client.query_one(&self.reach, &[&(v as i64), &(depth as i32)]).await.map_err(|e| e.to_string())?;
        Ok(row.get::<_, i64>(0) as usize)
    }

    async fn shortest_path(&mut self, from: u64, to: u64, max_depth: u32) -> DriverResult<Option<u32>> {
        let row = self
            .client
            .query_one(&self.path, &[&(from as i64), &(to as i64), &(max_depth as i32)])
            .await
            .map_err(|e| e.to_string())?;
        Ok(row.get::<_, Option<i32>>(0).map(|d| d as u32))
    }
}
