//! Files on a shard: chunks addressed by their SHA-256 and the manifests of
//! the files whose key this shard owns.
//!
//! * [`keys`] — layout of the `files` and `chunks` column families.
//! * [`chunk`] — the stored form of a chunk, compression, verification.
//! * [`write`] — claims, leases, releases and manifest commits as the apply thread stages them.
//! * [`leases`] — in-memory read leases that keep a version's chunks while it is downloaded.
//! * [`ops`] — the shard's file operations.

pub mod chunk;
pub mod keys;
pub mod leases;
pub mod ops;
pub mod write;

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// File settings of a shard (`[files]` in its config).
///
/// * `concurrency` — chunk reads and writes running at once, on threads apart
///   from point reads, scans and searches, so transfers never starve them (default 4).
/// * `chunk_buffer` — memtable of the `chunks` column family; twice this is the
///   most chunk data held in memory before it reaches blob files (default 32MiB).
/// * `read_lease_max` — longest read lease a gateway may take; after a restart
///   no garbage is collected for this long (default 60s).
/// * `upload_grace` — how long after its lease deadline an unfinished upload is
///   released; covers clock differences between processes (default 60s).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSettings {
    pub concurrency: usize,
    pub chunk_buffer: ByteSize,
    #[serde(with = "humantime_serde")]
    pub read_lease_max: Duration,
    #[serde(with = "humantime_serde")]
    pub upload_grace: Duration,
}

impl Default for FileSettings {
    fn default() -> Self {
        FileSettings {
            concurrency: 4,
            chunk_buffer: ByteSize::mib(32),
            read_lease_max: Duration::from_secs(60),
            upload_grace: Duration::from_secs(60),
        }
    }
}
