//! An omnishard shard: owns one part of the placement ring, stores it in one
//! RocksDB, and serves it over gRPC to gateways.
//!
//! Layout:
//! * [`config`] — shard settings.
//! * [`store`] — opening RocksDB with bounded memory; every read.
//! * [`codec`] — on-disk layout of keys and values.
//! * [`apply`] — the single write path: requests grouped into Raft proposals.
//! * [`execute`] — what every replica does with a committed proposal: CAS checks, sequence numbers.
//! * [`raft`] — replication: the shard as a Raft group of replicas (openraft).
//! * [`consistency`] — reads: leader reads confirmed with a quorum, follower reads by request.
//! * [`ownership`] — the installed ring and the misrouting checks.
//! * [`node`] — the [`Shard`] itself and its capacity pools.
//! * [`kv`] — key-value operations.
//! * [`migrate`] — scale-out: marks, fence, export and ingest of moving KV ranges.
//! * [`metrics`] — RocksDB, Tantivy and disk figures for `/metrics`.
//! * [`graph`] — the graph model: keys, writes, reads, local expansion.
//! * [`search`] — full-text search: documents, outbox, Tantivy indexes, queries.
//! * [`files`] — files: content-addressed chunks, manifests, claims and collection.
//! * [`file_server`] — the tonic adapter of the shard's file service.
//! * [`server`] — the tonic adapter, health, reflection and `serve`.
//! * [`error`] — the error enum and its gRPC mapping.

#![forbid(unsafe_code)]

pub mod apply;
pub mod codec;
pub mod config;
pub mod consistency;
pub mod error;
pub mod execute;
pub mod file_server;
pub mod files;
pub mod graph;
pub mod kv;
pub mod metrics;
pub mod migrate;
pub mod node;
pub mod ownership;
pub mod raft;
pub mod search;
pub mod server;
pub mod store;

pub use config::ShardConfig;
pub use error::{Error, Result};
pub use node::Shard;
pub use server::{serve, serve_shard};
