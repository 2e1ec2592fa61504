//! Redis through the `redis` crate: one connection per client, `GET`/`SET`
//! on plain string keys. Redis has no ordered scan, so, like YCSB's own
//! Redis binding, inserts also add the key to a sorted set (`ycsb:index`,
//! all scores 0 so members sort by key) and a scan reads a range of it with
//! `ZRANGE … BYLEX` and then the values with `MGET`.
//!
//! Durability is the server's `appendonly yes` with `appendfsync` either
//! `always` (every write synced before the reply, like the others) or
//! `everysec` (up to a second of acknowledged writes can be lost); the
//! report names which.

use redis::aio::MultiplexedConnection;

use crate::kv::{DriverResult, KvClient, KvSystem};
use crate::workload::key;

const INDEX: &str = "ycsb:index";

/// A Redis server at `url` (`redis://127.0.0.1:6379`).
pub struct Redis {
    client: redis::Client,
    fsync: String,
}

impl Redis {
    /// Empties the server's database, turns on the append-only file with
    /// `appendfsync` = `fsync` (`always` or `everysec`).
    pub async fn create(url: &str, fsync: &str) -> DriverResult<Redis> {
        let client = redis::Client::open(url).map_err(|e| format!("redis url {url:?}: {e}"))?;
        let mut conn = connect(&client).await?;
        for (name, args) in [
            ("FLUSHALL", vec![]),
            ("CONFIG", vec!["SET", "appendonly", "yes"]),
            ("CONFIG", vec!["SET", "appendfsync", fsync]),
        ] {
            redis::cmd(name)
                .arg(&args)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| format!("{name} {args:?}: {e}"))?;
        }
        Ok(Redis { client, fsync: fsync.to_string() })
    }
}

async fn connect(client: &redis::Client) -> DriverResult<MultiplexedConnection> {
    client.get_multiplexed_async_connection().await.map_err(|e| format!("connecting to Redis: {e}"))
}

impl KvSystem for Redis {
    type Client = MultiplexedConnection;

    fn name(&self) -> String {
        format!("redis (appendfsync {})", self.fsync)
    }

    async fn client(&self) -> DriverResult<MultiplexedConnection> {
        connect(&self.client).await
    }
}

impl KvClient for MultiplexedConnection {
    async fn read(&mut self, key: &str) -> DriverResult<bool> {
        let value: Option<Vec<u8>> = redis::cmd("GET").arg(key).query_async(self).await.map_err(|e| e.to_string())?;
        Ok(value.is_some())
    }

    async fn read_batch(&mut self, keys: Vec<String>) -> DriverResult<usize> {
        let values: Vec<Option<Vec<u8>>> =
            redis::cmd("MGET").arg(&keys).query_async(self).await.map_err(|e| e.to_string())?;
        Ok(values.iter().filter(|v| v.is_some()).count())
    }

    async fn write(&mut self, key: &str, value: Vec<u8>) -> DriverResult<()> {
        redis::cmd("SET").arg(key).arg(value).query_async::<()>(self).await.map_err(|e| e.to_string())
    }

    async fn insert(&mut self, key: &str, value: Vec<u8>) -> DriverResult<()> {
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(key)
            .arg(value)
            .ignore()
            .cmd("ZADD")
            .arg(INDEX)
            .arg(0)
            .arg(key)
            .ignore()
            .query_async::<()>(self)
            .await
            .map_err(|e| e.to_string())
    }

    async fn write_batch(&mut self, records: Vec<(String, Vec<u8>)>) -> DriverResult<()> {
        let mut pipe = redis::pipe();
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(INDEX);
        for (key, value) in records {
            zadd.arg(0).arg(&key);
            pipe.cmd("SET").arg(key).arg(value).ignore();
        }
        pipe.add_command(zadd).ignore();
        pipe.query_async::<()>(self).await.map_err(|e| e.to_string())
    }

    async fn scan(&mut self, start: u64, len: usize) -> DriverResult<usize> {
        let keys: Vec<String> = redis::cmd("ZRANGE")
            .arg(INDEX)
            .arg(format!("[{}", key(start)))
            .arg("+")
            .arg("BYLEX")
            .arg("LIMIT")
            .arg(0)
            .arg(len)
            .query_async(self)
            .await
            .map_err(|e| e.to_string())?;
        if keys.is_empty() {
            return Ok(0);
        }
        let values: Vec<Option<Vec<u8>>> =
            redis::cmd("MGET").arg(&keys).query_async(self).await.map_err(|e| e.to_string())?;
        Ok(values.len())
    }
}
