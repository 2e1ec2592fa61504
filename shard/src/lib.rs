//! An omnishard shard: owns one part of the placement ring, stores it in one
//! RocksDB, and serves it over gRPC to gateways.
//!
//! Layout:
//! * [`config`] — shard settings.
//! * [`store`] — opening RocksDB with bounded memory; every read.
//! * [`codec`] — on-disk layout of keys and values.
//! * [`apply`] — the single write path: CAS checks, sequence numbers, group commit.
//! * [`ownership`] — the installed ring and the misrouting checks.
//! * [`node`] — the [`Shard`] itself and its capacity pools.
//! * [`kv`] — key-value operations.
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
pub mod error;
pub mod file_server;
pub mod files;
pub mod graph;
pub mod kv;
pub mod metrics;
pub mod node;
pub mod ownership;
pub mod search;
pub mod server;
pub mod store;

pub use config::ShardConfig;
pub use error::{Error, Result};
pub use node::Shard;
pub use server::{serve, serve_shard};
