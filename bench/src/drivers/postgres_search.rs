//! The search workloads on PostgreSQL's full-text search: a stored
//! `tsvector` of title and body (English configuration) with a GIN index in
//! place before the load, batched inserts, `@@` matches ranked by `ts_rank`.

use std::sync::Arc;

use tokio_postgres::{Client, Statement};

use crate::drivers::postgres::{connect, prepare};
use crate::kv::DriverResult;
use crate::runner::in_parallel;
use crate::search::{batches, Doc, Hit, Query, SearchClient, SearchSystem};

/// A PostgreSQL server named by a connection string.
pub struct PostgresSearch {
    url: String,
}

impl PostgresSearch {
    /// (Re)creates the empty documents table and its GIN index.
    pub async fn create(url: &str) -> DriverResult<PostgresSearch> {
        connect(url)
            .await?
            .batch_execute(
                "DROP TABLE IF EXISTS bench_docs;
                 CREATE TABLE bench_docs (
                     id text PRIMARY KEY, title text NOT NULL, body text NOT NULL, pos text NOT NULL,
                     lexfile bigint NOT NULL,
                     tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', title || ' ' || body)) STORED);
                 CREATE INDEX bench_docs_tsv ON bench_docs USING GIN (tsv);",
            )
            .await
            .map_err(|e| format!("creating bench_docs: {e}"))?;
        Ok(PostgresSearch { url: url.to_string() })
    }
}

const INSERT: &str = "INSERT INTO bench_docs (id, title, body, pos, lexfile)
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])";

impl SearchSystem for PostgresSearch {
    type Client = PostgresSearchClient;

    fn name(&self) -> String {
        "postgres".into()
    }

    async fn index(&self, docs: Arc<Vec<Doc>>, loaders: usize, batch: usize) -> DriverResult<()> {
        let mut workers = Vec::new();
        for _ in 0..loaders.max(1) {
            let client = connect(&self.url).await?;
            let insert = prepare(&client, INSERT).await?;
            workers.push((client, insert));
        }
        let all_docs = docs.clone();
        in_parallel(workers, batches(docs.len(), batch), move |(client, insert), range| {
            let part = &all_docs[range];
            let column = |f: fn(&Doc) -> String| part.iter().map(f).collect::<Vec<String>>();
            let (ids, titles, bodies, pos) = (
                column(|d| d.id.clone()),
                column(|d| d.title.clone()),
                column(|d| d.body.clone()),
                column(|d| d.pos.clone()),
            );
            let lexfiles: Vec<i64> = part.iter().map(|d| d.lexfile).collect();
            async move {
                client
                    .execute(&insert, &[&ids, &titles, &bodies, &pos, &lexfiles])
                    .await
                    .map_err(|e| format!("inserting documents: {e}"))?;
                Ok((client, insert))
            }
        })
        .await?;
        connect(&self.url).await?.batch_execute("ANALYZE bench_docs").await.map_err(|e| e.to_string())
    }

    async fn client(&self) -> DriverResult<PostgresSearchClient> {
        let client = connect(&self.url).await?;
        let search = prepare(
            &client,
            "SELECT id, title, body, ts_rank(tsv, q) AS rank
             FROM bench_docs, to_tsquery('english', $1) AS q
             WHERE tsv @@ q ORDER BY rank DESC LIMIT 10",
        )
        .await?;
        Ok(PostgresSearchClient { client, search })
    }
}

/// One connection with its prepared search.
pub struct PostgresSearchClient {
    client: Client,
    search: Statement,
}

impl SearchClient for PostgresSearchClient {
    async fn search(&mut self, query: &Query) -> DriverResult<Vec<Hit>> {
        let rows = self.client.query(&self.search, &[&query.tsquery()]).await.map_err(|e| e.to_string())?;
        Ok(rows.iter().map(|row| Hit { id: row.get(0), score: row.get(3) }).collect())
    }
}
