//! The command line of `omnishard`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Default gateway port of `omnishard dev`.
pub const DEV_PORT: u16 = 7400;

/// omnishard: sharded key-value storage behind one gRPC gateway.
#[derive(Debug, Parser)]
#[command(name = "omnishard", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every client command understands.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Gateway to talk to.
    #[arg(long, global = true, env = "OMNISHARD_GATEWAY", default_value = "http://127.0.0.1:7400")]
    pub gateway: String,
    /// Namespace of every key-value command.
    #[arg(long, global = true, env = "OMNISHARD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print the trace id of each request on stderr (see `omnishard admin trace`).
    #[arg(long, global = true)]
    pub trace: bool,
    /// Log lines as readable `text` or one JSON object per line (`json`).
    #[arg(long, global = true, env = "OMNISHARD_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// Observability flags of the server roles.
#[derive(Debug, Clone, Args)]
pub struct ObserveArgs {
    /// HTTP address of /metrics, /healthz and /readyz; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub metrics_listen: String,
    /// Requests at least this long are slow: logged, counted, and all their spans kept in memory.
    #[arg(long, env = "OMNISHARD_SLOW_THRESHOLD", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub slow_threshold: Duration,
    /// Log level when RUST_LOG is unset [default: info; warn for `dev`].
    #[arg(long)]
    pub log_level: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one shard process.
    Shard(ShardArgs),
    /// Run a gateway in front of the shards of a topology file.
    Gateway(GatewayArgs),
    /// Run a gateway and N shards on loopback, data in a local folder.
    Dev(DevArgs),
    /// Key-value commands.
    #[command(subcommand)]
    Kv(KvCommand),
    /// Graph commands: vertices, edges, bulk load, traversals.
    Graph(GraphArgs),
    /// Full-text search: indexes, documents, queries.
    #[command(subcommand)]
    Search(SearchCommand),
    /// Files: streamed, chunked, deduplicated blobs.
    #[command(subcommand)]
    File(FileCommand),
    /// Operator commands.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Benchmarks against a running gateway.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Args)]
pub struct ShardArgs {
    /// Shard id, as the topology names it.
    #[arg(long)]
    pub id: String,
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long)]
    pub listen: String,
    /// Data folder of this shard's RocksDB.
    #[arg(long)]
    pub data: PathBuf,
    /// Optional TOML file with further shard settings.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This replica's id in the shard's Raft group (overrides `raft.node_id`).
    #[arg(long)]
    pub replica_id: Option<u64>,
    /// Start without a group and wait to be initialized or added by a leader
    /// (`omnishard admin replica init|add`); sets `raft.join`.
    #[arg(long)]
    pub join: bool,
    /// A member of a new group, `ID=HOST:PORT`; repeat for each replica
    /// (sets `raft.initial_members`).
    #[arg(long = "member", value_name = "ID=HOST:PORT")]
    pub members: Vec<String>,
    /// Shut down when process PID exits, even if it is killed (`omnishard
    /// dev` sets it on the shards it supervises); refuse to start if PID is
    /// no longer this process's parent.
    #[arg(long, value_name = "PID")]
    pub parent_pid: Option<u32>,
    #[command(flatten)]
    pub observe: ObserveArgs,
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Topology and settings file (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long)]
    pub listen: String,
    #[command(flatten)]
    pub observe: ObserveArgs,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Data folder; each shard gets a sub-folder, and the topology is written here.
    #[arg(long, default_value = "./data")]
    pub data: PathBuf,
    /// Number of shards.
    #[arg(long, default_value_t = 3)]
    pub shards: usize,
    /// Replicas per shard, each its own process, replicated with Raft (1-7).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Gateway port on 127.0.0.1.
    #[arg(long, default_value_t = DEV_PORT)]
    pub port: u16,
    /// The gateway's observability flags (shards get a free metrics port each).
    #[command(flatten)]
    pub observe: ObserveArgs,
}

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Write KEY = VALUE (VALUE `-` reads stdin).
    Put {
        key: String,
        value: String,
        /// Time to live, e.g. 30s, 5m, 1h.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
        /// Only write if the current version is V (0 = the key must not exist).
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Print the raw value of KEY.
    Get {
        key: String,
        /// Let any replica answer (a follower read) instead of the leader.
        #[arg(long)]
        follower: bool,
        /// With --follower: only from a replica that applied this sequence
        /// (the version of your last write, for read-your-writes).
        #[arg(long, requires = "follower")]
        min_seq: Option<u64>,
    },
    /// Delete KEY.
    Del {
        key: String,
        /// Only delete if the current version is V.
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// List keys starting with PREFIX, in key order.
    Scan {
        #[arg(default_value = "")]
        prefix: String,
        /// Most keys to list.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Shards, addresses, health, ring epoch and key counts; for replicated
    /// shards each group's leader, term, applied index and replica lag.
    Cluster,
    /// Replicas of a shard's Raft group: add, remove, hand leadership over.
    Replica {
        #[command(subcommand)]
        command: ReplicaCommand,
    },
    /// Rebuild a search index on every shard from the documents in RocksDB.
    Reindex { index: String },
    /// Re-read and hash every stored file chunk and check every file's chunks exist.
    VerifyFiles,
    /// Show one request's trace as a waterfall, gathered from the gateway and every shard.
    Trace {
        /// The trace id (32 hex digits), as `--trace` or `x-trace-id` shows it.
        trace_id: String,
    },
    /// List the slowest recent requests with their trace ids.
    Slow {
        /// Most requests to list.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Add a running shard (`omnishard shard --id ID --listen ADDR --data DIR`)
    /// to the ring; its ranges move to it while the cluster serves.
    AddShard {
        #[arg(long)]
        id: String,
        /// host:port the shard listens on.
        #[arg(long)]
        addr: String,
        /// Migration throttle, e.g. 50MiB/s (the default).
        #[arg(long, value_parser = parse_rate)]
        rate: Option<u64>,
    },
    /// Move a shard's ranges to the others, then take it out of the ring.
    RemoveShard {
        #[arg(long)]
        id: String,
        /// Migration throttle, e.g. 50MiB/s (the default).
        #[arg(long, value_parser = parse_rate)]
        rate: Option<u64>,
    },
    /// Watch, pause, resume, throttle or abort the running migration.
    Rebalance {
        #[command(subcommand)]
        command: RebalanceCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum RebalanceCommand {
    /// Per moving range: keys and bytes moved, rate, ETA; `--json` has a
    /// top-level `state` that reads `done` once nothing is moving.
    Status {
        /// Keep redrawing a progress bar until the migration is done.
        #[arg(long)]
        watch: bool,
    },
    /// Pause the migration (moving ranges keep being served by their old owner).
    Pause,
    /// Resume a paused migration.
    Resume {
        /// New throttle, e.g. 100MiB/s.
        #[arg(long, value_parser = parse_rate)]
        rate: Option<u64>,
    },
    /// Change the throttle while the migration runs.
    Throttle {
        /// e.g. 50MiB/s or 200MB/s.
        #[arg(long, value_parser = parse_rate)]
        rate: u64,
    },
    /// Abort the migration before its ring switches: sources forget it,
    /// targets delete what they copied, the topology stays as it was.
    Abort,
}

/// Parses a rate such as `50MiB/s`, `200MB/s` or `1GiB` (per second) into bytes per second.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let size = text.trim().strip_suffix("/s").unwrap_or(text.trim());
    let bytes =
        size.parse::<bytesize::ByteSize>().map_err(|e| format!("{text:?} is not a rate like 50MiB/s: {e}"))?.as_u64();
    if bytes == 0 {
        return Err(format!("{text:?}: the rate must be more than 0 bytes/s"));
    }
    Ok(bytes)
}

#[derive(Debug, Subcommand)]
pub enum ReplicaCommand {
    /// Add a replica (started with `omnishard shard --replica-id N --join`):
    /// it catches up as a learner, then becomes a voter.
    Add {
        /// Shard id, as `admin cluster` shows it.
        #[arg(long)]
        shard: String,
        /// The new replica's id in the group.
        #[arg(long)]
        node: u64,
        /// host:port the new replica listens on.
        #[arg(long)]
        addr: String,
    },
    /// Remove a replica from the group.
    Remove {
        #[arg(long)]
        shard: String,
        #[arg(long)]
        node: u64,
    },
    /// Hand leadership to a caught-up voter.
    TransferLeader {
        #[arg(long)]
        shard: String,
        #[arg(long)]
        node: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum FileCommand {
    /// Upload LOCAL (a path, or - for stdin) as KEY.
    Put {
        local: PathBuf,
        key: String,
        /// Content type stored with the file.
        #[arg(long, default_value = "")]
        content_type: String,
        /// Metadata entry KEY=VALUE (repeatable).
        #[arg(long = "meta", value_parser = parse_meta)]
        metadata: Vec<(String, String)>,
        /// Store chunks zstd-compressed (default: the gateway's setting).
        #[arg(long)]
        compress: bool,
    },
    /// Download KEY to LOCAL (a path, or - for stdout).
    Get {
        key: String,
        local: PathBuf,
        /// Inclusive byte range START-END (or START- for the rest), as in HTTP ranges.
        #[arg(long, value_parser = parse_range)]
        range: Option<(u64, Option<u64>)>,
    },
    /// List files whose key starts with PREFIX.
    Ls {
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Size, SHA-256, chunks and metadata of KEY.
    Stat {
        key: String,
        /// List the chunks too.
        #[arg(long)]
        chunks: bool,
    },
    /// Delete KEY.
    Rm { key: String },
    /// Copy SOURCE to DESTINATION on the server, sharing chunks.
    Cp { source: String, destination: String },
}

fn parse_meta(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

/// `START-END` (inclusive) or `START-`.
pub fn parse_range(text: &str) -> Result<(u64, Option<u64>), String> {
    let bad = || format!("{text:?} is not START-END or START- (inclusive byte offsets)");
    let (start, end) = text.split_once('-').ok_or_else(bad)?;
    let start: u64 = start.trim().parse().map_err(|_| bad())?;
    let end = match end.trim() {
        "" => None,
        end => Some(end.parse::<u64>().map_err(|_| bad())?),
    };
    if end.is_some_and(|e| e < start) {
        return Err(format!("{text:?}: END is before START"));
    }
    Ok((start, end))
}

#[derive(Debug, Subcommand)]
pub enum SearchCommand {
    /// Create an index: --field NAME:TYPE, TYPE one of text, keyword, i64, f64, date;
    /// text:ANALYZER picks default, en_stem, raw or whitespace.
    Create {
        index: String,
        #[arg(long = "field", required = true)]
        fields: Vec<String>,
    },
    /// Add fields to an existing index (online; the index is rebuilt).
    AddFields {
        index: String,
        #[arg(long = "field", required = true)]
        fields: Vec<String>,
    },
    /// Drop an index and its documents.
    Drop { index: String },
    /// Schema and per-shard figures of an index.
    Describe { index: String },
    /// Indexes of the namespace.
    List,
    /// Index documents from a JSON-lines file; each line an object with an "id".
    Index {
        index: String,
        file: std::path::PathBuf,
        /// Documents per request.
        #[arg(long, default_value_t = 500)]
        batch: usize,
    },
    /// Documents by id.
    Get { index: String, ids: Vec<String> },
    /// Delete documents by id.
    Delete { index: String, ids: Vec<String> },
    /// Set (or with null remove) fields of one document: a JSON object.
    Update { index: String, id: String, fields: String },
    /// Make every acknowledged write searchable now.
    Refresh { index: String },
    /// Search an index.
    Query {
        index: String,
        /// Query string: terms, "phrases", AND/OR/NOT, field:term, field:[a TO b].
        query: String,
        /// FIELD=V1,V2 (any of), FIELD>=X, FIELD>X, FIELD<=X, FIELD<X, or FIELD=A..B.
        #[arg(long = "filter")]
        filters: Vec<String>,
        /// Keyword field to count values of: FIELD or FIELD:SIZE.
        #[arg(long = "facet")]
        facets: Vec<String>,
        /// Text field to highlight.
        #[arg(long = "highlight")]
        highlight: Vec<String>,
        /// Sort by FIELD or FIELD:desc (default: score).
        #[arg(long)]
        sort: Option<String>,
        #[arg(long, default_value_t = 0)]
        from: u32,
        #[arg(long, default_value_t = 10)]
        size: u32,
        /// Cursor printed by a previous page.
        #[arg(long)]
        after: Option<String>,
        #[arg(long)]
        min_score: Option<f32>,
        /// Wait until writes up to this sequence number are searchable.
        #[arg(long, default_value_t = 0)]
        min_seq: u64,
        /// Score with each shard's own statistics (skips a round; scores then depend on placement).
        #[arg(long)]
        local_stats: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Drive the gateway with concurrent puts and gets; report ops/s and latency.
    Kv(BenchKvArgs),
    /// A local OTLP trace receiver that counts spans (for the tracing overhead benchmark).
    OtlpSink(OtlpSinkArgs),
    /// Load a power-law graph, then time neighbour reads and 3-hop traversals.
    Graph(BenchGraphArgs),
    /// Index a real-language corpus (WordNet glosses) next to single-process
    /// Tantivy, then time term, phrase and boolean queries.
    Search(BenchSearchArgs),
    /// Upload and download one large file next to dd's sequential write
    /// speed, with KV get latency during the transfers.
    Files(BenchFilesArgs),
    /// omnishard against the systems users would otherwise pick: YCSB on
    /// PostgreSQL, Redis and in-process RocksDB next to the gRPC echo floor;
    /// graphs on PostgreSQL; search on PostgreSQL and in-process Tantivy;
    /// files against the raw disk. Markdown, JSON and PNG reports
    /// (`bench/run-peers.sh` runs it all).
    #[command(alias = "ycsb")]
    Compare(Box<BenchCompareArgs>),
    /// Leader kill to first acknowledged write, and a wiped replica's
    /// catch-up rate, on an embedded shard of three replicas.
    Failover(BenchFailoverArgs),
    /// A gRPC echo server (the RPC floor), or with --upstream a relay to one.
    EchoServer(EchoServerArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BenchCompareArgs {
    /// Systems to drive, in order: echo, omnishard, omnishard-uncoalesced,
    /// omnishard-direct (the SDK's direct mode), postgres, redis-always,
    /// redis-everysec, rocksdb, tantivy, disk. Each runs the suites it has
    /// drivers for.
    #[arg(long, value_delimiter = ',', default_value = "echo,omnishard,rocksdb")]
    pub systems: Vec<String>,
    /// Suites to run: kv (YCSB), graph, search, files.
    #[arg(long, value_delimiter = ',', default_value = "kv")]
    pub suites: Vec<String>,
    /// YCSB core workloads to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "A,B,C,D,E,F")]
    pub workloads: Vec<char>,
    /// Also run workload C with reads of this many records per call
    /// (`BatchGet`, `MGET`, `multi_get`, `= ANY`); 0 or 1: not at all.
    #[arg(long, default_value_t = 0)]
    pub batch_reads: usize,
    /// Key distribution for every workload instead of each one's own (zipfian; latest for D).
    #[arg(long)]
    pub distribution: Option<omnishard_bench::distribution::Distribution>,
    /// Records loaded before the workloads run.
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub value_size: usize,
    /// Concurrent clients (PostgreSQL: one connection each).
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Warm-up before each measured period (not recorded).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub warmup: Duration,
    /// Measured period of each workload.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// PostgreSQL connection string (the postgres system).
    #[arg(long, default_value = "host=127.0.0.1 port=5432 user=postgres dbname=postgres")]
    pub postgres: String,
    /// Redis URL (the redis-* systems).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// Shards of the embedded omnishard cluster.
    #[arg(long, default_value_t = 3)]
    pub shards: usize,
    /// HTTP/2 connections the omnishard and echo clients share.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Folder for report.md, report.json and the PNG charts.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Graph suite: vertices of the synthetic power-law graph.
    #[arg(long, default_value_t = 68_000)]
    pub graph_vertices: u64,
    /// Graph suite: mean out-degree.
    #[arg(long, default_value_t = 4.0)]
    pub graph_degree: f64,
    /// Search suite: WordNet database folder (Debian package wordnet-base).
    #[arg(long, default_value = "/usr/share/wordnet")]
    pub corpus: PathBuf,
    /// Search suite: documents indexed (WordNet has 117,659).
    #[arg(long, default_value_t = 100_000)]
    pub search_docs: usize,
    /// Search suite: queries of each kind.
    #[arg(long, default_value_t = 200)]
    pub search_queries: usize,
    /// Files suite: size of each file, e.g. 256MiB.
    #[arg(long, default_value = "256MiB")]
    pub file_size: bytesize::ByteSize,
    /// Files suite: files written and read.
    #[arg(long, default_value_t = 2)]
    pub files: usize,
    /// Graph and search suites: connections loading in parallel.
    #[arg(long, default_value_t = 4)]
    pub loaders: usize,
    /// Graph and search suites: measured period of each timed workload.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub model_duration: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct EchoServerArgs {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Relay every call to this echo server (`http://ADDR`) instead of answering.
    #[arg(long)]
    pub upstream: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct BenchFilesArgs {
    #[arg(long, default_value_t = 3)]
    pub shards: usize,
    /// File size, e.g. 1GiB.
    #[arg(long, default_value = "1GiB")]
    pub size: bytesize::ByteSize,
    /// Clients reading KV keys (one get every 2 ms each) during every phase.
    #[arg(long, default_value_t = 4)]
    pub probes: usize,
    /// How long the idle KV probe runs.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub idle: Duration,
    /// Chunk calls in flight per transfer (the gateway's `files.window`).
    #[arg(long, default_value_t = 4)]
    pub window: usize,
}

#[derive(Debug, Clone, Args)]
pub struct BenchSearchArgs {
    #[arg(long, default_value_t = 3)]
    pub shards: usize,
    /// Documents to index (at most the corpus size).
    #[arg(long, default_value_t = 100_000)]
    pub docs: usize,
    /// WordNet database folder (Debian package wordnet-base).
    #[arg(long, default_value = "/usr/share/wordnet")]
    pub corpus: std::path::PathBuf,
    /// Concurrent indexing requests.
    #[arg(long, default_value_t = 4)]
    pub loaders: usize,
    /// Documents per indexing request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Concurrent clients of the throughput runs.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Length of each query run.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
}

#[derive(Debug, Clone, Args)]
pub struct BenchGraphArgs {
    #[arg(long, default_value_t = 3)]
    pub shards: usize,
    #[arg(long, default_value_t = 100_000)]
    pub vertices: usize,
    #[arg(long, default_value_t = 1_000_000)]
    pub edges: usize,
    /// Concurrent loaders.
    #[arg(long, default_value_t = 8)]
    pub loaders: usize,
    /// Concurrent clients of the throughput phase.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Length of each timed phase.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,
}

#[derive(Debug, Args)]
pub struct OtlpSinkArgs {
    /// gRPC address to receive OTLP exports on.
    #[arg(long, default_value = "127.0.0.1:4317")]
    pub listen: String,
}

#[derive(Debug, Clone, Args)]
pub struct BenchFailoverArgs {
    /// Leader kills to time.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// MB written while a wiped replica is down, then timed catching up.
    #[arg(long, default_value_t = 200)]
    pub catch_up_mb: u64,
    /// Value size of the catch-up writes, in bytes.
    #[arg(long, default_value_t = 65536)]
    pub value_size: usize,
}

#[derive(Debug, Args)]
pub struct BenchKvArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Length of each phase.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub value_size: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Phases to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "put,get")]
    pub phases: Vec<String>,
    /// Shards of the embedded cluster.
    #[arg(long, default_value_t = 3)]
    pub shards: usize,
    /// Replicas per shard of the embedded cluster (Raft groups when more than one).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Whether the embedded cluster's gateway coalesces requests.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub coalesce: bool,
    /// Coalesced shard calls in flight per shard in the embedded gateway (default: the gateway's own).
    #[arg(long)]
    pub coalesce_inflight: Option<usize>,
    /// Drive the gateway at --gateway instead of starting a cluster.
    #[arg(long)]
    pub external: bool,
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration like 30s or 5m: {e}"))?;
    if ttl.is_zero() {
        return Err("must be positive".into());
    }
    Ok(ttl)
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Named graph inside the namespace.
    #[arg(long, global = true, default_value = "default")]
    pub graph: String,
    #[command(subcommand)]
    pub command: GraphCommand,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DirectionArg {
    Out,
    In,
    Both,
}

#[derive(Debug, Subcommand)]
pub enum GraphCommand {
    /// Create, read or delete a vertex.
    #[command(subcommand)]
    Vertex(VertexCommand),
    /// Create or delete an edge.
    #[command(subcommand)]
    Edge(EdgeCommand),
    /// Bulk-load JSON lines: {"vertex": {"id", "label", "properties"}} or {"edge": {"from", "to", "label", "properties", "weight"}}.
    Load { file: PathBuf },
    /// Edges around a vertex.
    Neighbors {
        id: String,
        #[arg(long, value_enum, default_value = "out")]
        direction: DirectionArg,
        /// Only edges with this label (repeatable).
        #[arg(long)]
        label: Vec<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Every vertex reachable within --depth hops, with its depth.
    Traverse {
        #[arg(required = true)]
        start: Vec<String>,
        #[arg(long, value_enum, default_value = "out")]
        direction: DirectionArg,
        #[arg(long, default_value_t = 2)]
        depth: u32,
        /// Only edges with this label (repeatable).
        #[arg(long)]
        label: Vec<String>,
        /// Print one path to each vertex.
        #[arg(long)]
        paths: bool,
        /// Depth-first preorder instead of breadth-first.
        #[arg(long)]
        dfs: bool,
    },
    /// Shortest path between two vertices (fewest hops).
    Path {
        from: String,
        to: String,
        #[arg(long, value_enum, default_value = "out")]
        direction: DirectionArg,
        /// Longest path considered; 0 = the gateway's graph.max_depth.
        #[arg(long, default_value_t = 0)]
        max_depth: u32,
    },
    /// Run a Gremlin-style query, e.g. "g.V('a').out('knows').values('name')".
    Query { query: String },
    /// Vertices with a label, optionally with --property NAME --value JSON.
    Find {
        label: String,
        #[arg(long, requires = "value")]
        property: Option<String>,
        #[arg(long, requires = "property")]
        value: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum VertexCommand {
    /// Create or update a vertex.
    Put {
        id: String,
        #[arg(long, default_value = "")]
        label: String,
        /// Properties as a JSON object.
        #[arg(long, default_value = "{}")]
        props: String,
        /// upsert, create (fail if it exists), merge or replace (fail if it does not).
        #[arg(long, default_value = "upsert")]
        mode: String,
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Print a vertex.
    Get { id: String },
    /// Delete a vertex and all its edges.
    Del { id: String },
}

#[derive(Debug, Subcommand)]
pub enum EdgeCommand {
    /// Create or update an edge; both vertices must exist.
    Put {
        from: String,
        to: String,
        #[arg(long, default_value = "")]
        label: String,
        #[arg(long, default_value = "{}")]
        props: String,
        #[arg(long, default_value_t = 1.0)]
        weight: f64,
    },
    /// Delete an edge (both halves).
    Del {
        from: String,
        to: String,
        #[arg(long, default_value = "")]
        label: String,
    },
}
