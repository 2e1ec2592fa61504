//! The shard's RocksDB: opening it with bounded memory, and every read.
//!
//! Column families:
//! * `kv` — KV entries (layout in [`crate::codec`]), with a TTL compaction filter.
//! * `graph` — vertices, edge halves and the label index (layout in [`crate::graph::keys`]).
//! * `search` — index definitions, documents and the indexing outbox (layout in [`crate::search::keys`]).
//! * `files` — file manifests, uploads, chunk claims and garbage (layout in [`crate::files::keys`]).
//! * `chunks` — file chunk bytes in RocksDB blob files, and their info.
//! * `meta` — the last applied sequence, the installed topology and the Raft position.
//! * `raft_log`, `raft_state` — the replica's Raft log and vote ([`crate::raft::log_store`]).
//!
//! Writes do not happen here: they go through [`crate::apply`], the only door
//! (and the Raft log's own store).

use std::sync::Arc;

use rocksdb::compaction_filter::Decision;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode,
    Options, ReadOptions, WriteBufferManager, DB,
};

use crate::codec::{self, Stored};
use crate::config::ShardConfig;
use crate::error::{show_key, Error, Result};

/// Column family of KV entries.
pub const CF_KV: &str = "kv";
/// Column family of graph vertices, edge halves and label index.
pub const CF_GRAPH: &str = "graph";
/// Column family of search indexes: definitions, documents, outbox.
pub const CF_SEARCH: &str = "search";
/// Column family of file manifests, uploads and chunk claims.
pub const CF_FILES: &str = "files";
/// Column family of file chunks (values in blob files).
pub const CF_CHUNKS: &str = "chunks";
/// Column family of shard metadata.
pub const CF_META: &str = "meta";
/// Column family of the Raft log (entries by index, u64 BE).
pub const CF_RAFT_LOG: &str = "raft_log";
/// Column family of the Raft vote, committed and purged positions.
pub const CF_RAFT_STATE: &str = "raft_state";
/// `meta` key holding the last applied sequence (u64 BE).
pub const META_LAST_SEQ: &[u8] = b"last_seq";
/// `meta` key holding the installed topology (protobuf).
pub const META_TOPOLOGY: &[u8] = b"topology";

/// Keys read per multi-get of a batch read: small enough that the last
/// group overshoots the page's byte budget by at most a few values.
const GET_GROUP: usize = 8;

/// A live KV entry as read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub version: u64,
    pub expires_at_ms: u64,
}

/// The opened RocksDB of one shard. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
}

impl Store {
    /// Opens (or creates) the database under `config.data_dir`.
    pub fn open(config: &ShardConfig) -> Result<Store> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| Error::Internal(format!("cannot create {}: {e}", config.data_dir.display())))?;
        // One cache for every column family and one memtable budget charged
        // to that cache: memory stays bounded however much data there is.
        let cache = Cache::new_lru_cache(config.block_cache.as_u64() as usize);
        let buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            config.write_buffers.as_u64() as usize,
            true,
            cache.clone(),
        );
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_write_buffer_manager(&buffers);
        db_opts.increase_parallelism(2);
        db_opts.set_max_open_files(1024);

        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_KV, kv_options(&cache)),
            ColumnFamilyDescriptor::new(CF_GRAPH, table_options(&cache)),
            ColumnFamilyDescriptor::new(CF_SEARCH, table_options(&cache)),
            ColumnFamilyDescriptor::new(CF_FILES, table_options(&cache)),
            ColumnFamilyDescriptor::new(CF_CHUNKS, chunk_options(&cache, config)),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
            ColumnFamilyDescriptor::new(CF_RAFT_LOG, raft_log_options(&cache)),
            ColumnFamilyDescriptor::new(CF_RAFT_STATE, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&db_opts, &config.data_dir, cfs)?;
        Ok(Store { db: Arc::new(db) })
    }

    /// The raw database, for the apply path.
    pub fn db(&self) -> &DB {
        &self.db
    }

    /// A column family handle; both exist from `open` on.
    pub fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        self.db.cf_handle(name).ok_or_else(|| Error::Internal(format!("column family {name} is missing")))
    }

    /// One raw value of a column family.
    pub fn get_cf(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(cf)?, key)?)
    }

    /// Raw values of many keys of one column family.
    pub fn multi_get_cf(&self, cf: &str, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let handle = self.cf(cf)?;
        self.db
            .batched_multi_get_cf(handle, keys.iter(), false)
            .into_iter()
            .map(|r| Ok(r?.map(|v| v.to_vec())))
            .collect()
    }

    /// Calls `visit` on every entry of `cf` whose key starts with `prefix`,
    /// from `start` (at or after the prefix) on, until it returns false.
    /// With `snapshot`, reads that point in time.
    pub fn scan_prefix(
        &self,
        cf: &str,
        prefix: &[u8],
        start: &[u8],
        snapshot: Option<&rocksdb::Snapshot<'_>>,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let mut opts = ReadOptions::default();
        if let Some(end) = codec::prefix_end(prefix) {
            opts.set_iterate_upper_bound(end);
        }
        if let Some(snapshot) = snapshot {
            opts.set_snapshot(snapshot);
        }
        let from = if start > prefix { start } else { prefix };
        for item in self.db.iterator_cf_opt(self.cf(cf)?, opts, IteratorMode::From(from, Direction::Forward)) {
            let (key, value) = item?;
            if !visit(&key, &value)? {
                break;
            }
        }
        Ok(())
    }

    /// Reads `keys` of `namespace`; expired entries read as absent. Stops
    /// once the values read reach `max_bytes` (after at least one key), so
    /// the answer may cover only a prefix of `keys`: keys are read a few at
    /// a time, and a group starts only while the budget is not yet spent.
    pub fn get_many(&self, namespace: &str, keys: &[Vec<u8>], max_bytes: usize) -> Result<Vec<Option<Entry>>> {
        let cf = self.cf(CF_KV)?;
        let now = codec::now_ms();
        let mut out = Vec::with_capacity(keys.len());
        let mut bytes = 0usize;
        // Every group reads one point in time, as a single multi-get would:
        // an atomic write is seen whole or not at all.
        let snapshot = self.db.snapshot();
        for group in keys.chunks(GET_GROUP) {
            if bytes >= max_bytes && !out.is_empty() {
                break;
            }
            let stored: Vec<Vec<u8>> = group.iter().map(|k| codec::encode_key(namespace, k)).collect();
            let mut read = ReadOptions::default();
            read.set_snapshot(&snapshot);
            let results = self.db.batched_multi_get_cf_opt(cf, stored.iter(), false, &read);
            for (key, result) in group.iter().zip(results) {
                let found = match result? {
                    None => None,
                    Some(raw) => {
                        let stored = decode(key, &raw)?;
                        (!stored.is_expired(now)).then(|| entry(key.clone(), stored))
                    }
                };
                bytes += found.as_ref().map_or(0, |e| e.value.len());
                out.push(found);
            }
        }
        Ok(out)
    }

    /// The current live version of one stored key, for compare-and-set.
    /// Returns `(version, existed)`; expired entries count as absent (version 0).
    pub fn current_version(&self, stored_key: &[u8], now_ms: u64) -> Result<u64> {
        let cf = self.cf(CF_KV)?;
        match self.db.get_pinned_cf(cf, stored_key)? {
            None => Ok(0),
            Some(raw) => {
                let stored = decode(stored_key, &raw)?;
                Ok(if stored.is_expired(now_ms) { 0 } else { stored.version })
            }
        }
    }

    /// Up to `limit` live entries of `namespace` whose key starts with
    /// `prefix` and is greater than `start_after`, in key order, ending
    /// early once their values reach `max_bytes`. The flag says whether
    /// more entries follow. Keys `owned` rejects are skipped (copies a
    /// migration left behind that another shard now serves).
    pub fn scan(
        &self,
        namespace: &str,
        prefix: &[u8],
        start_after: &[u8],
        (limit, max_bytes): (usize, usize),
        owned: impl Fn(&[u8]) -> bool,
    ) -> Result<(Vec<Entry>, bool)> {
        let cf = self.cf(CF_KV)?;
        let lower = codec::encode_key(namespace, prefix);
        let mut opts = ReadOptions::default();
        if let Some(end) = codec::prefix_end(&lower) {
            opts.set_iterate_upper_bound(end);
        }
        // Start at the later of the prefix and just past the cursor key.
        let mut start = lower.clone();
        if !start_after.is_empty() {
            let mut after = codec::encode_key(namespace, start_after);
            after.push(0); // the smallest key greater than start_after
            if after > start {
                start = after;
            }
        }
        let now = codec::now_ms();
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        let iter = self.db.iterator_cf_opt(cf, opts, IteratorMode::From(&start, Direction::Forward));
        for item in iter {
            let (stored_key, raw) = item?;
            let key = codec::user_key(namespace, &stored_key);
            let stored = decode(key, &raw)?;
            if stored.is_expired(now) || !owned(key) {
                continue;
            }
            if entries.len() == limit || (bytes >= max_bytes && !entries.is_empty()) {
                return Ok((entries, true));
            }
            bytes += stored.value.len();
            entries.push(entry(key.to_vec(), stored));
        }
        Ok((entries, false))
    }

    /// The last sequence number committed to disk (0 for a new shard).
    pub fn last_seq(&self) -> Result<u64> {
        let cf = self.cf(CF_META)?;
        match self.db.get_pinned_cf(cf, META_LAST_SEQ)? {
            None => Ok(0),
            Some(raw) => raw
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| Error::Corrupt { key: "meta/last_seq".into(), reason: format!("{} bytes", raw.len()) }),
        }
    }

    /// The persisted topology message, if one was installed.
    pub fn topology_bytes(&self) -> Result<Option<Vec<u8>>> {
        let cf = self.cf(CF_META)?;
        Ok(self.db.get_cf(cf, META_TOPOLOGY)?)
    }

    /// RocksDB's estimate of the number of KV entries (all namespaces).
    pub fn estimated_keys(&self) -> Result<u64> {
        let cf = self.cf(CF_KV)?;
        Ok(self.db.property_int_value_cf(cf, "rocksdb.estimate-num-keys")?.unwrap_or(0))
    }

    /// Forces a full compaction of the KV and graph column families (after
    /// a migration deleted ranges, and in tests).
    pub fn compact(&self) -> Result<()> {
        for name in [CF_KV, CF_GRAPH] {
            let cf = self.cf(name)?;
            self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// Counts every stored KV entry, live or expired-but-not-yet-compacted (tests and admin).
    pub fn count_raw_entries(&self) -> Result<u64> {
        let cf = self.cf(CF_KV)?;
        let mut n = 0;
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            item?;
            n += 1;
        }
        Ok(n)
    }
}

/// Options every data family shares: the shared cache, bloom filters for
/// point reads, LZ4 compression.
fn table_options(cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    let mut opts = Options::default();
    opts.set_block_based_table_factory(&table);
    opts.set_compression_type(DBCompressionType::Lz4);
    opts
}

/// Options of the `kv` family: the shared table options, zstd at the
/// bottom, and the TTL compaction filter.
fn kv_options(cache: &Cache) -> Options {
    let mut opts = table_options(cache);
    opts.set_bottommost_compression_type(DBCompressionType::Zstd);
    // Expired entries are already invisible to reads; compaction reclaims
    // their space. RocksDB turns a removal into a tombstone, so an older
    // version in a lower level can never resurface.
    opts.set_compaction_filter("omnishard-ttl", |_level: u32, _key: &[u8], value: &[u8]| {
        match codec::decode_value(value) {
            Some(stored) if stored.is_expired(codec::now_ms()) => Decision::Remove,
            _ => Decision::Keep,
        }
    });
    opts
}

/// Options of the `chunks` family. Chunk bytes go to blob files (written
/// once at flush, never rewritten by compaction of the small SSTs that
/// point at them); blob garbage collection reclaims deleted chunks. No
/// RocksDB compression: chunks are compressed (or not) by the shard itself.
fn chunk_options(cache: &Cache, config: &ShardConfig) -> Options {
    let mut opts = table_options(cache);
    opts.set_compression_type(DBCompressionType::None);
    opts.set_enable_blob_files(true);
    opts.set_min_blob_size(1024);
    opts.set_blob_file_size(256 << 20);
    opts.set_blob_compression_type(DBCompressionType::None);
    opts.set_enable_blob_gc(true);
    opts.set_blob_gc_age_cutoff(0.5);
    // Uploads flush it before their manifest commits, so this memtable
    // bounds how much chunk data sits in memory.
    opts.set_write_buffer_size(config.files.chunk_buffer.as_u64() as usize);
    opts.set_max_write_buffer_number(2);
    opts
}

/// The Raft log: written once, read back rarely (lagging replicas), deleted
/// by range after snapshots. Small memtables: entries can carry file chunks.
fn raft_log_options(cache: &Cache) -> Options {
    let mut opts = table_options(cache);
    opts.set_compression_type(DBCompressionType::None);
    opts.set_write_buffer_size(8 << 20);
    opts.set_max_write_buffer_number(2);
    opts
}

fn decode<'a>(key: &[u8], raw: &'a [u8]) -> Result<Stored<'a>> {
    codec::decode_value(raw).ok_or_else(|| Error::Corrupt {
        key: show_key(key),
        reason: format!("value of {} bytes is shorter than the {}-byte header", raw.len(), codec::HEADER_LEN),
    })
}

fn entry(key: Vec<u8>, stored: Stored<'_>) -> Entry {
    Entry { key, value: stored.value.to_vec(), version: stored.version, expires_at_ms: stored.expires_at_ms }
}
