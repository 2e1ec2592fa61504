//! The benchmark harness behind `omnishard bench ycsb` and
//! `bench/run-peers.sh`: one runner and interchangeable drivers, so
//! omnishard, PostgreSQL, Redis and in-process RocksDB are all driven by the
//! same client code, concurrency, operations and key distribution.
//!
//! Layout:
//! * [`distribution`] — uniform, zipfian and latest key choice.
//! * [`workload`] — the YCSB core workloads A–F, keys and values.
//! * [`stats`] — per-operation latency histograms and their percentiles.
//! * [`kv`] — the driver interface and the YCSB load and run loops.
//! * [`graph`], [`search`], [`files`] — the other data models' workloads,
//!   each with its own driver interface; [`runner`] times their operations.
//! * [`drivers`] — omnishard (gateway), PostgreSQL, Redis, RocksDB, Tantivy.
//! * [`echo`] — the RPC floor: gRPC echo, direct and through one relay hop.
//! * [`report`] — Markdown and JSON reports; [`chart`] — the same as PNG charts.

#![forbid(unsafe_code)]

pub mod chart;
pub mod distribution;
pub mod drivers;
pub mod echo;
pub mod files;
pub mod graph;
pub mod kv;
pub mod report;
pub mod runner;
pub mod search;
pub mod stats;
pub mod workload;
