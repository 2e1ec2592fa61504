//! Full-text search on a shard. Documents live in RocksDB (the source of
//! truth), written with an outbox entry in the same batch; Tantivy indexes
//! are derived from that outbox by the [`indexer`] thread.
//!
//! * [`schema`] — index definitions, Tantivy schemas, document checks.
//! * [`keys`] — layout of the `search` column family.
//! * [`write`] — document writes and definition changes as the apply thread stages them.
//! * [`index`] — one index's generations, views and searchable sequence; the registry.
//! * [`indexer`] — outbox → Tantivy commits, rebuilds.
//! * [`collector`] — top hits ordered by (sort value, id), counts and facets in one pass.
//! * [`query`] — query parsing, filters, statistics, scoring, highlights.
//! * [`ops`] — the shard's search operations.

pub mod collector;
pub mod index;
pub mod indexer;
pub mod keys;
pub mod ops;
pub mod query;
pub mod schema;
pub mod write;

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// Search settings of a shard (`[search]` in its config).
///
/// * `refresh_interval` — how often pending writes become searchable (default 1s).
/// * `writer_memory` — Tantivy indexing budget of the shard (default 64MiB).
/// * `concurrency` — searches running at once, apart from point reads and scans (default 4).
/// * `deadline` — longest a search may run (default 10s).
/// * `max_facet_values` — distinct values a shard reports per facet (default 10,000).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchSettings {
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    pub writer_memory: ByteSize,
    pub concurrency: usize,
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    pub max_facet_values: usize,
}

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings {
            refresh_interval: Duration::from_secs(1),
            writer_memory: ByteSize::mib(64),
            concurrency: 4,
            deadline: Duration::from_secs(10),
            max_facet_values: 10_000,
        }
    }
}
