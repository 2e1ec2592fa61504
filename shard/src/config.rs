//! Shard settings, loadable from TOML (`omnishard shard --config FILE`).

use std::path::PathBuf;

use bytesize::ByteSize;
use omnishard_common::limits::Limits;
use serde::{Deserialize, Serialize};

use crate::files::FileSettings;
use crate::raft::RaftSettings;
use crate::search::SearchSettings;

/// Everything a shard process needs to know.
///
/// * `id` — the shard id the topology uses for this shard.
/// * `data_dir` — where RocksDB lives; created when missing.
/// * `limits` — request size limits (checked again after the gateway).
/// * `block_cache` — one shared RocksDB block cache (default 256MiB).
/// * `write_buffers` — total memtable budget, enforced by a write-buffer manager (default 128MiB).
/// * `sync_writes` — fsync the Raft log before a replica acknowledges an append (default true).
/// * `max_group_commit` — most transactions in one proposal (one log entry) (default 512).
/// * `apply_queue` — transactions waiting for the apply thread before callers get RESOURCE_EXHAUSTED (default 4096).
/// * `point_read_concurrency` — blocking threads for point reads (default 64).
/// * `scan_concurrency` — blocking threads for scans, kept apart so scans never starve point reads (default 4).
/// * `search` — full-text search settings ([`SearchSettings`]).
/// * `files` — file chunk settings ([`FileSettings`]).
/// * `raft` — replication settings ([`RaftSettings`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShardConfig {
    pub id: String,
    pub data_dir: PathBuf,
    pub limits: Limits,
    pub block_cache: ByteSize,
    pub write_buffers: ByteSize,
    pub sync_writes: bool,
    pub max_group_commit: usize,
    pub apply_queue: usize,
    pub point_read_concurrency: usize,
    pub scan_concurrency: usize,
    pub search: SearchSettings,
    pub files: FileSettings,
    pub raft: RaftSettings,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            id: "shard-1".into(),
            data_dir: PathBuf::from("data/shard-1"),
            limits: Limits::default(),
            block_cache: ByteSize::mib(256),
            write_buffers: ByteSize::mib(128),
            sync_writes: true,
            max_group_commit: 512,
            apply_queue: 4096,
            point_read_concurrency: 64,
            scan_concurrency: 4,
            search: SearchSettings::default(),
            files: FileSettings::default(),
            raft: RaftSettings::default(),
        }
    }
}
