//! PostgreSQL through `tokio-postgres`: one table `usertable (ycsb_key text
//! primary key, field0 bytea)`, one connection per client (a pool sized to
//! the client count), prepared statements, and the server's default
//! `synchronous_commit = on`, so every acknowledged write is in its synced WAL.

use tokio_postgres::{Client, NoTls, Statement};

use crate::kv::{DriverResult, KvClient, KvSystem};
use crate::workload::key;

/// A PostgreSQL server named by a connection string
/// (`host=127.0.0.1 port=5432 user=postgres dbname=postgres`).
pub struct Postgres {
    url: String,
}

impl Postgres {
    /// Connects once to check the server and (re)creates the empty table.
    pub async fn create(url: &str) -> DriverResult<Postgres> {
        let client = connect(url).await?;
        client
            .batch_execute(
                "DROP TABLE IF EXISTS usertable;
                 CREATE TABLE usertable (ycsb_key text PRIMARY KEY, field0 bytea NOT NULL);",
            )
            .await
            .map_err(|e| format!("creating usertable: {e}"))?;
        Ok(Postgres { url: url.to_string() })
    }

    /// Reports a server setting (`synchronous_commit`), for the report's fine print.
    pub async fn setting(&self, name: &str) -> DriverResult<String> {
        setting(&self.url, name).await
    }
}

/// A setting of the server at `url`.
pub async fn setting(url: &str, name: &str) -> DriverResult<String> {
    let client = connect(url).await?;
    let row = client.query_one("SELECT current_setting($1)", &[&name]).await.map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

/// A connection whose background task runs on the current runtime.
pub async fn connect(url: &str) -> DriverResult<Client> {
    let (client, connection) =
        tokio_postgres::connect(url, NoTls).await.map_err(|e| format!("connecting to PostgreSQL ({url}): {e}"))?;
    tokio::spawn(async move {
        // Ends when the client is dropped; an error here shows up in the client's calls.
        let _ = connection.await;
    });
    Ok(client)
}

/// Prepares `sql` on `client`; the error names the statement.
pub async fn prepare(client: &Client, sql: &str) -> DriverResult<Statement> {
    client.prepare(sql).await.map_err(|e| format!("preparing {sql:?}: {e}"))
}

/// One connection with its prepared statements.
pub struct PostgresClient {
    client: Client,
    read: Statement,
    read_batch: Statement,
    write: Statement,
    load: Statement,
    scan: Statement,
}

impl KvSystem for Postgres {
    type Client = PostgresClient;

    fn name(&self) -> String {
        "postgres".into()
    }

    async fn client(&self) -> DriverResult<PostgresClient> {
        let client = connect(&self.url).await?;
        let read = prepare(&client, "SELECT field0 FROM usertable WHERE ycsb_key = $1").await?;
        let read_batch = prepare(&client, "SELECT ycsb_key, field0 FROM usertable WHERE ycsb_key = ANY($1)").await?;
        let write = prepare(
            &client,
            "INSERT INTO usertable (ycsb_key, field0) VALUES ($1, $2)
             ON CONFLICT (ycsb_key) DO UPDATE SET field0 = EXCLUDED.field0",
        )
        .await?;
        let load = prepare(
            &client,
            "INSERT INTO usertable (ycsb_key, field0) SELECT * FROM UNNEST($1::text[], $2::bytea[])
             ON CONFLICT (ycsb_key) DO UPDATE SET field0 = EXCLUDED.field0",
        )
        .await?;
        let scan =
            prepare(&client, "SELECT ycsb_key, field0 FROM usertable WHERE ycsb_key >= $1 ORDER BY ycsb_key LIMIT $2")
                .await?;
        Ok(PostgresClient { client, read, read_batch, write, load, scan })
    }
}

impl KvClient for PostgresClient {
    async fn read(&mut self, key: &str) -> DriverResult<bool> {
        let row = self.client.query_opt(&self.read, &[&key]).await.map_err(|e| e.to_string())?;
        Ok(row.is_some())
    }

    async fn read_batch(&mut self, keys: Vec<String>) -> DriverResult<usize> {
        let rows = self.client.query(&self.read_batch, &[&keys]).await.map_err(|e| e.to_string())?;
        Ok(rows.len())
    }

    async fn write(&mut self, key: &str, value: Vec<u8>) -> DriverResult<()> {
        self.client.execute(&self.write, &[&key, &value]).await.map(drop).map_err(|e| e.to_string())
    }

    async fn write_batch(&mut self, records: Vec<(String, Vec<u8>)>) -> DriverResult<()> {
        let (keys, values): (Vec<String>, Vec<Vec<u8>>) = records.into_iter().unzip();
        self.client.execute(&self.load, &[&keys, &values]).await.map(drop).map_err(|e| e.to_string())
    }

    async fn scan(&mut self, start: u64, len: usize) -> DriverResult<usize> {
        let rows = self.client.query(&self.scan, &[&key(start), &(len as i64)]).await.map_err(|e| e.to_string())?;
        Ok(rows.len())
    }
}
