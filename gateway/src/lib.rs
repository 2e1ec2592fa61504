//! The omnishard gateway: the only public endpoint. It validates requests,
//! routes them by the placement ring, calls the owning shards (coalescing
//! concurrent point operations), merges fan-out results and answers.
//! It holds no data; run as many as you like.
//!
//! Layout:
//! * [`config`] — the config file: topology plus gateway settings and limits.
//! * [`cluster`] — ring, per-shard handles, start-up checks, epoch repair.
//! * [`replicas`] — a shard as a group of replicas: leader routing and failover.
//! * [`shard_client`] — one shard's channel and tower layers (breaker, limit, timeout).
//! * [`coalesce`] — batching concurrent point operations per shard.
//! * [`kv`] — key-value operations: routing, fan-out, scan merge.
//! * [`graph`] — graph writes (both edge halves) and distributed traversals.
//! * [`search`] — full-text search: index definitions, documents, exact global BM25.
//! * [`files`] — files: chunking, upload and download pipelines, collection, verification.
//! * [`admin`] — cluster status.
//! * [`topology_store`] — the shared cluster document in the metadata group.
//! * [`live`] — the current cluster view, swapped when the topology changes; redirect retries.
//! * [`rebalance`] — adding and removing shards: planning and driving migrations.
//! * [`server`] — tonic adapters (KV, admin), health, reflection and `serve`.
//! * [`graph_server`] — the tonic adapter of `GraphService`.
//! * [`search_server`] — the tonic adapter of `SearchService`.
//! * [`file_server`] — the tonic adapter of `FileService`.
//! * [`deadline`] — the outer request deadline (file transfers exempt).
//! * [`error`] — the error enum and its gRPC mapping.

#![forbid(unsafe_code)]

pub mod admin;
pub mod cluster;
pub mod coalesce;
pub mod config;
pub mod deadline;
pub mod error;
pub mod file_server;
pub mod files;
pub mod graph;
pub mod graph_server;
pub mod kv;
pub mod live;
pub mod rebalance;
pub mod replicas;
pub mod search;
pub mod search_server;
pub mod server;
pub mod shard_client;
pub mod topology_store;

pub use cluster::Cluster;
pub use config::{GatewayConfig, GatewaySettings};
pub use error::{Error, Result};
pub use server::{connect, serve, serve_cluster};
