//! Gateway settings: the topology plus optional `[gateway]`, `[limits]`,
//! `[graph]`, `[search]` and `[files]` tables, in one TOML file
//! (`omnishard gateway --config FILE`).
//!
//! ```toml
//! epoch = 1
//! vnodes = 256
//! [[shards]]
//! id = "shard-1"
//! addr = "127.0.0.1:7401"
//!
//! [gateway]
//! request_timeout = "5s"
//!
//! [limits]
//! max_value_bytes = 4194304
//!
//! [search]
//! result_window = 10000
//! statistics_cache = 4096
//! ```

use std::path::Path;
use std::time::Duration;

use omnishard_common::limits::Limits;
use omnishard_common::topology::{ShardAddr, Topology};
use omnishard_common::{Error, Result};
use serde::{Deserialize, Serialize};

/// The whole gateway config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Ring epoch; see [`Topology`].
    pub epoch: u64,
    /// Virtual nodes per shard (default 256).
    #[serde(default = "default_vnodes")]
    pub vnodes: u32,
    /// The shards.
    pub shards: Vec<ShardAddr>,
    /// Gateway behaviour.
    #[serde(default)]
    pub gateway: GatewaySettings,
    /// Request size limits.
    #[serde(default)]
    pub limits: Limits,
    /// Graph traversal budgets.
    #[serde(default)]
    pub graph: GraphBudgets,
    /// Search limits.
    #[serde(default)]
    pub search: SearchLimits,
    /// File transfer settings.
    #[serde(default)]
    pub files: FileSettings,
    /// The metadata group that holds the shared topology (a shard group
    /// outside the ring). When set, the shards above only seed it on first
    /// start; afterwards the stored topology wins and every gateway follows
    /// it (see [`crate::topology_store`]). Needed to add or remove shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<ShardAddr>,
}

/// How files are chunked, stored and collected.
///
/// * `chunking` — `"content-defined"` (FastCDC: cut points follow the content,
///   so an insertion shifts no later chunk and they deduplicate) or `"fixed"`
///   (default content-defined).
/// * `chunk_size` — exact size of fixed chunks; average of content-defined
///   ones, which range from a quarter to four times it (default 1MiB).
/// * `max_file_size` — largest file; a larger declared size is refused before
///   any data is stored, a stream that grows past it is cut off (default 16GiB).
/// * `max_transfers` — uploads and downloads running at once on this gateway;
///   more get RESOURCE_EXHAUSTED (default 64).
/// * `window` — chunk calls in flight per transfer; with the chunk size this
///   bounds a transfer's memory (default 4).
/// * `compress` — zstd-compress chunks when the upload does not say (default false).
/// * `bulk_threshold` — uploads past this size write chunks without the WAL and
///   flush them once before the manifest commits (default 8MiB).
/// * `upload_lease` — how long an upload's chunks are kept without a commit;
///   renewed while the upload runs (default `10m`).
/// * `read_lease` — how long a download holds the version it reads; renewed
///   while it runs (default `30s`).
/// * `sweep_interval` — how often this gateway collects garbage and the chunks
///   of abandoned uploads (default `30s`).
/// * `header_timeout` — the first message of an upload (its header) must
///   arrive within it, or the upload ends with DEADLINE_EXCEEDED; an upload
///   takes no transfer slot before its header (default `10s`).
/// * `idle_timeout` — longest an upload waits for the client's next data
///   message, and longest a download waits for its client to take the next
///   one; past it the transfer ends with DEADLINE_EXCEEDED (default `30s`).
/// * `min_rate` — bytes per second a transfer must average over the time it
///   spent waiting for its client (time spent storing or fetching chunks does
///   not count), once it has waited `idle_timeout` in all; a slower transfer
///   ends with DEADLINE_EXCEEDED so a trickle cannot hold a slot (default `16KiB`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSettings {
    pub chunking: Chunking,
    pub chunk_size: bytesize::ByteSize,
    pub max_file_size: bytesize::ByteSize,
    pub max_transfers: usize,
    pub window: usize,
    pub compress: bool,
    pub bulk_threshold: bytesize::ByteSize,
    #[serde(with = "humantime_serde")]
    pub upload_lease: Duration,
    #[serde(with = "humantime_serde")]
    pub read_lease: Duration,
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    pub min_rate: bytesize::ByteSize,
}

/// How a file is cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Chunking {
    ContentDefined,
    Fixed,
}

impl Default for FileSettings {
    fn default() -> Self {
        FileSettings {
            chunking: Chunking::ContentDefined,
            chunk_size: bytesize::ByteSize::mib(1),
            max_file_size: bytesize::ByteSize::gib(16),
            max_transfers: 64,
            window: 4,
            compress: false,
            bulk_threshold: bytesize::ByteSize::mib(8),
            upload_lease: Duration::from_secs(600),
            read_lease: Duration::from_secs(30),
            sweep_interval: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            min_rate: bytesize::ByteSize::kib(16),
        }
    }
}

impl FileSettings {
    /// Chunk sizes FastCDC accepts: an even average from 1KiB to 4MiB (so the
    /// largest chunk, four times it, stays within a shard's 16MiB limit);
    /// windows, slots, leases and the client timeouts must be non-zero.
    fn validate(&self) -> Result<()> {
        let size = self.chunk_size.as_u64();
        if !(1024..=4 << 20).contains(&size) || !size.is_multiple_of(2) {
            return Err(Error::invalid(
                "files.chunk_size",
                format!("is {size} bytes; use an even size from 1KiB to 4MiB"),
            ));
        }
        if self.window == 0 || self.max_transfers == 0 {
            return Err(Error::invalid("files", "window and max_transfers must be at least 1"));
        }
        if self.upload_lease < Duration::from_secs(1) || self.read_lease < Duration::from_millis(100) {
            return Err(Error::invalid("files", "upload_lease must be at least 1s and read_lease at least 100ms"));
        }
        // Zero would end every transfer at its first wait for the client.
        let timeouts = [("files.header_timeout", self.header_timeout), ("files.idle_timeout", self.idle_timeout)];
        for (name, value) in timeouts {
            if value.is_zero() {
                return Err(Error::invalid(name, "must be greater than 0s"));
            }
        }
        if self.min_rate.as_u64() == 0 {
            return Err(Error::invalid("files.min_rate", "must be at least 1B (bytes per second)"));
        }
        Ok(())
    }
}

/// Limits of one search.
///
/// * `result_window` — largest `from + size`; deeper pages use `search_after` (default 10,000).
/// * `max_size` — most hits in one response (default 1,000).
/// * `max_facets` — facet fields per request (default 16); `max_facet_size` — values per facet (default 1,000).
/// * `deadline` — longest a search may take, statistics and fetch included (default `10s`).
/// * `statistics_cache` — queries whose global statistics are cached (default 4,096; 0 = off).
///   A cached entry is used only while every shard still serves the index
///   snapshot it was computed on, so results stay exact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchLimits {
    pub result_window: u32,
    pub max_size: u32,
    pub max_facets: usize,
    pub max_facet_size: u32,
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    pub statistics_cache: usize,
}

impl Default for SearchLimits {
    fn default() -> Self {
        SearchLimits {
            result_window: 10_000,
            max_size: 1_000,
            max_facets: 16,
            max_facet_size: 1_000,
            deadline: Duration::from_secs(10),
            statistics_cache: 4_096,
        }
    }
}

/// Budgets of one graph traversal; exceeding one is `RESOURCE_EXHAUSTED`
/// naming it, or a truncated result when the request allows partial results.
///
/// * `max_depth` — deepest traversal a request may ask for (default 10).
/// * `max_visited` — vertices a traversal may visit (default 100,000).
/// * `max_frontier` — vertices waiting to be expanded at once (default 100,000).
/// * `max_fanout` — edges read per vertex and hop; protects against super-nodes (default 10,000).
/// * `max_query_bytes` — approximate memory one Gremlin query may hold: its
///   traversers with their paths, the vertices and edges fetched for them, and
///   its results; checked as they are built (default `256MiB`).
/// * `deadline` — wall-clock budget (default `10s`).
/// * `repair_interval` — how often the gateway finishes edges whose writer died between the halves (default `2s`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphBudgets {
    pub max_depth: u32,
    pub max_visited: usize,
    pub max_frontier: usize,
    pub max_fanout: usize,
    pub max_query_bytes: bytesize::ByteSize,
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    #[serde(with = "humantime_serde")]
    pub repair_interval: Duration,
}

impl Default for GraphBudgets {
    fn default() -> Self {
        GraphBudgets {
            max_depth: 10,
            max_visited: 100_000,
            max_frontier: 100_000,
            max_fanout: 10_000,
            max_query_bytes: bytesize::ByteSize::mib(256),
            deadline: Duration::from_secs(10),
            repair_interval: Duration::from_secs(2),
        }
    }
}

fn default_vnodes() -> u32 {
    omnishard_common::placement::DEFAULT_VNODES
}

/// How the gateway talks to shards.
///
/// * `request_timeout` — deadline of one shard call (default `5s`).
/// * `connect_timeout` — TCP connect deadline to a shard (default `1s`).
/// * `shard_concurrency` — in-flight calls per shard before callers wait (default 512).
/// * `breaker_failures` — consecutive failed calls that open a shard's circuit (default 5).
/// * `breaker_backoff` — first open period of a circuit; doubles up to `breaker_max_backoff` (defaults `250ms`, `2s`).
/// * `read_retries` — extra attempts for idempotent reads on an unavailable shard (default 1).
/// * `coalesce` — merge concurrent point operations bound for one shard into one shard call (default true).
/// * `coalesce_max_batch` — most operations in one coalesced call (default 256).
/// * `coalesce_window` — how long a batch waits for company; `0s` sends whatever is queued at once (default `0s`).
/// * `coalesce_inflight` — coalesced calls in flight per shard; more requests queue and join the next batch (default 4).
/// * `startup_timeout` — how long start-up waits for every shard (default `10s`).
/// * `allow_unavailable_shards` — start even when a shard cannot be reached (default false).
/// * `handshake_timeout` — a client connection that sends nothing for this long after
///   connecting is closed (default `10s`).
/// * `idle_timeout` — a client connection with no request open for this long is
///   closed; clients reconnect on their next call (default `5m`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    pub shard_concurrency: usize,
    pub breaker_failures: u32,
    #[serde(with = "humantime_serde")]
    pub breaker_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub breaker_max_backoff: Duration,
    pub read_retries: u32,
    pub coalesce: bool,
    pub coalesce_max_batch: usize,
    #[serde(with = "humantime_serde")]
    pub coalesce_window: Duration,
    pub coalesce_inflight: usize,
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
    pub allow_unavailable_shards: bool,
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            shard_concurrency: 512,
            breaker_failures: 5,
            breaker_backoff: Duration::from_millis(250),
            breaker_max_backoff: Duration::from_secs(2),
            read_retries: 1,
            coalesce: true,
            coalesce_max_batch: 256,
            coalesce_window: Duration::ZERO,
            coalesce_inflight: 2,
            startup_timeout: Duration::from_secs(10),
            allow_unavailable_shards: false,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

impl GatewayConfig {
    /// A config for `topology` with default settings.
    pub fn new(topology: Topology) -> GatewayConfig {
        GatewayConfig {
            epoch: topology.epoch,
            vnodes: topology.vnodes,
            shards: topology.shards,
            gateway: GatewaySettings::default(),
            limits: Limits::default(),
            graph: GraphBudgets::default(),
            search: SearchLimits::default(),
            files: FileSettings::default(),
            meta: None,
        }
    }

    /// The topology part.
    pub fn topology(&self) -> Topology {
        Topology { epoch: self.epoch, vnodes: self.vnodes, shards: self.shards.clone() }
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<GatewayConfig> {
        let config: GatewayConfig = toml::from_str(text).map_err(|e| Error::Topology(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<GatewayConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Topology(format!("cannot read {}: {e}", path.display())))?;
        GatewayConfig::from_toml(&text).map_err(|e| Error::Topology(format!("{}: {e}", path.display())))
    }

    /// Checks the topology and settings.
    pub fn validate(&self) -> Result<()> {
        self.topology().validate()?;
        if let Some(meta) = &self.meta {
            let as_topology = Topology { epoch: 1, vnodes: 1, shards: vec![meta.clone()] };
            as_topology.validate().map_err(|e| Error::Topology(format!("meta: {e}")))?;
            if self.shards.iter().any(|s| s.id == meta.id) {
                return Err(Error::Topology(format!("meta.id {:?} is also a shard of the ring", meta.id)));
            }
        }
        let g = &self.gateway;
        if g.shard_concurrency == 0 || g.coalesce_max_batch == 0 || g.coalesce_inflight == 0 {
            return Err(Error::invalid(
                "gateway",
                "shard_concurrency, coalesce_max_batch and coalesce_inflight must be at least 1",
            ));
        }
        if g.request_timeout.is_zero() {
            return Err(Error::invalid("gateway.request_timeout", "must be greater than 0s"));
        }
        if g.handshake_timeout.is_zero() || g.idle_timeout.is_zero() {
            return Err(Error::invalid("gateway", "handshake_timeout and idle_timeout must be greater than 0s"));
        }
        self.files.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_config_with_settings_parses() {
        let text = r#"
epoch = 2
[[shards]]
id = "a"
addr = "127.0.0.1:1"
[gateway]
request_timeout = "250ms"
coalesce = false
[limits]
max_key_bytes = 100
"#;
        let config = GatewayConfig::from_toml(text).unwrap();
        assert_eq!(config.gateway.request_timeout, Duration::from_millis(250));
        assert!(!config.gateway.coalesce);
        assert_eq!(config.limits.max_key_bytes, 100);
        assert_eq!(config.limits.max_value_bytes, 4 << 20);
    }

    #[test]
    fn test_unknown_setting_is_refused() {
        let text = "epoch = 1\n[[shards]]\nid = \"a\"\naddr = \"h:1\"\n[gateway]\ntimeout = \"1s\"\n";
        assert!(GatewayConfig::from_toml(text).unwrap_err().to_string().contains("unknown field"));
    }
}
