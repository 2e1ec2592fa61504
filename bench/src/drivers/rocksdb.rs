//! RocksDB in-process, no network: the storage engine's own limit on this
//! machine. Writes are synced to its write-ahead log like a shard's.
//! Reads run on the client's task (they take microseconds); synced writes
//! run on the blocking pool so concurrent writers can share one WAL sync
//! (RocksDB's group commit), as a shard's concurrent requests do.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{Options, WriteBatch, WriteOptions, DB};

use crate::kv::{DriverResult, KvClient, KvSystem};
use crate::workload::key;

/// One RocksDB database in a folder of the caller's.
#[derive(Clone)]
pub struct RocksDb {
    db: Arc<DB>,
}

impl RocksDb {
    /// Opens (creating) a database in `dir` with a 256 MiB block cache.
    pub fn open(dir: &Path) -> DriverResult<RocksDb> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.increase_parallelism(2);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&rocksdb::Cache::new_lru_cache(256 << 20));
        table.set_bloom_filter(10.0, false);
        options.set_block_based_table_factory(&table);
        let db = DB::open(&options, dir).map_err(|e| format!("opening RocksDB in {}: {e}", dir.display()))?;
        Ok(RocksDb { db: Arc::new(db) })
    }

    /// Reads `key` on the calling thread; for drivers of their own (batched reads).
    pub fn get(&self, key: &[u8]) -> DriverResult<bool> {
        self.db.get_pinned(key).map(|v| v.is_some()).map_err(|e| e.to_string())
    }
}

impl KvSystem for RocksDb {
    type Client = RocksDb;

    fn name(&self) -> String {
        "rocksdb (in-process)".into()
    }

    async fn client(&self) -> DriverResult<RocksDb> {
        Ok(self.clone())
    }
}

fn synced() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

impl KvClient for RocksDb {
    async fn read(&mut self, key: &str) -> DriverResult<bool> {
        self.get(key.as_bytes())
    }

    async fn read_batch(&mut self, keys: Vec<String>) -> DriverResult<usize> {
        let mut found = 0;
        for value in self.db.multi_get(keys) {
            found += usize::from(value.map_err(|e| e.to_string())?.is_some());
        }
        Ok(found)
    }

    async fn write(&mut self, key: &str, value: Vec<u8>) -> DriverResult<()> {
        let (db, key) = (self.db.clone(), key.to_string());
        tokio::task::spawn_blocking(move || db.put_opt(key, value, &synced()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    async fn write_batch(&mut self, records: Vec<(String, Vec<u8>)>) -> DriverResult<()> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut batch = WriteBatch::default();
            for (key, value) in records {
                batch.put(key, value);
            }
            db.write_opt(batch, &synced())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }

    async fn scan(&mut self, start: u64, len: usize) -> DriverResult<usize> {
        let from = key(start);
        let mut iter = self.db.raw_iterator();
        iter.seek(from.as_bytes());
        let mut n = 0;
        while n < len && iter.valid() {
            // Read the value too, as the other systems return it.
            std::hint::black_box(iter.value());
            n += 1;
            iter.next();
        }
        iter.status().map_err(|e| e.to_string())?;
        Ok(n)
    }
}
