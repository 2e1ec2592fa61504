//! The systems under test, each behind the interface of the workloads it runs:
//! [`crate::kv`] (omnishard, PostgreSQL, Redis, RocksDB), [`crate::graph`]
//! (omnishard, PostgreSQL), [`crate::search`] (omnishard, PostgreSQL, Tantivy).

pub mod omnishard;
pub mod omnishard_graph;
pub mod omnishard_search;
pub mod postgres;
pub mod postgres_graph;
pub mod postgres_search;
pub mod redis;
pub mod rocksdb;
pub mod tantivy;
