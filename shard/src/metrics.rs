//! The shard's storage figures on `/metrics`: RocksDB (memtables, block
//! cache, pending compaction, SST and blob sizes per column family), Tantivy
//! (documents, segments, index lag in sequence numbers per index), the apply
//! sequence and the data folder's disk. Read at scrape time, never on the
//! request path.

use std::sync::{Arc, Weak};

use omnishard_telemetry::Metrics;
use prometheus::IntGaugeVec;

use crate::node::Shard;
use crate::store::{CF_CHUNKS, CF_FILES, CF_GRAPH, CF_KV, CF_META, CF_SEARCH};

const FAMILIES: [&str; 6] = [CF_KV, CF_GRAPH, CF_SEARCH, CF_FILES, CF_CHUNKS, CF_META];

struct Gauges {
    rocksdb: IntGaugeVec,
    search: IntGaugeVec,
    seq: prometheus::IntGauge,
    disk_free: prometheus::IntGauge,
    disk_total: prometheus::IntGauge,
}

/// Registers the shard's gauges on `metrics`, refreshed from `shard` at every scrape.
pub fn register(shard: &Arc<Shard>, metrics: &Metrics) {
    let gauges = Gauges {
        rocksdb: metrics.gauge_vec(
            "rocksdb_bytes",
            "RocksDB sizes by column family: memtable, block_cache, pending_compaction, sst, blob",
            &["cf", "kind"],
        ),
        search: metrics.gauge_vec(
            "search_index",
            "Tantivy figures by index: docs, segments, lag (shard sequence numbers not yet searchable)",
            &["namespace", "index", "kind"],
        ),
        seq: metrics.gauge("shard_applied_seq", "Last sequence number the shard applied"),
        disk_free: metrics.gauge("disk_free_bytes", "Free bytes on the data folder's filesystem"),
        disk_total: metrics.gauge("disk_total_bytes", "Size of the data folder's filesystem"),
    };
    let shard: Weak<Shard> = Arc::downgrade(shard);
    metrics.on_scrape(move || {
        if let Some(shard) = shard.upgrade() {
            refresh(&shard, &gauges);
        }
    });
}

fn refresh(shard: &Shard, gauges: &Gauges) {
    let db = shard.store.db();
    for name in FAMILIES {
        let Ok(cf) = shard.store.cf(name) else { continue };
        for (kind, property) in [
            ("memtable", "rocksdb.cur-size-all-mem-tables"),
            ("pending_compaction", "rocksdb.estimate-pending-compaction-bytes"),
            ("sst", "rocksdb.total-sst-files-size"),
            ("blob", "rocksdb.live-blob-file-size"),
        ] {
            if let Ok(Some(value)) = db.property_int_value_cf(cf, property) {
                gauges.rocksdb.with_label_values(&[name, kind]).set(clamp(value));
            }
        }
    }
    // One block cache serves every column family.
    if let Ok(Some(value)) = db.property_int_value("rocksdb.block-cache-usage") {
        gauges.rocksdb.with_label_values(&["all", "block_cache"]).set(clamp(value));
    }
    let seq = shard.applier.last_seq();
    gauges.seq.set(clamp(seq));
    gauges.search.reset(); // dropped indexes must disappear
    for index in shard.search.list(None) {
        let labels = |kind| [index.namespace.clone(), index.name.clone(), String::from(kind)];
        if let Ok(view) = index.current_view() {
            let segments = view.searcher.segment_readers().len() as u64;
            gauges.search.with_label_values(&labels("docs")).set(clamp(view.searcher.num_docs()));
            gauges.search.with_label_values(&labels("segments")).set(clamp(segments));
        }
        let lag = seq.saturating_sub(index.searchable_seq());
        gauges.search.with_label_values(&labels("lag")).set(clamp(lag));
    }
    if let Ok(stat) = nix::sys::statvfs::statvfs(&shard.config.data_dir) {
        let fragment = stat.fragment_size();
        gauges.disk_free.set(clamp(stat.blocks_available() * fragment));
        gauges.disk_total.set(clamp(stat.blocks() * fragment));
    }
}

fn clamp(value: u64) -> i64 {
    value.min(i64::MAX as u64) as i64
}
