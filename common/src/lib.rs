//! Everything the omnishard processes agree on: where a key lives, what the
//! cluster looks like, which inputs are acceptable, and how logs are written.
//!
//! Layout:
//! * [`digest`] — SHA-256, the address of a file chunk.
//! * [`placement`] — hash tags, the stable placement hash and the vnode ring.
//! * [`topology`] — the cluster description loaded from TOML, and its checks.
//! * [`limits`] — size limits on keys, values, batches and pages, with checks.
//! * [`namespace`] — namespace names and their rules.
//! * [`predicate`] — property comparisons used by traversals and queries.
//! * [`query_text`] — size and nesting checks on full-text query strings; message excerpts.
//! * [`rejection`] — the typed "wrong shard / wrong epoch" error shards send.
//! * [`process`] — starting role processes on port 0 and reading their address.
//! * [`batching`] — forming batches of queued point requests (coalescing).
//! * [`stored`] — the namespace and placement key of a stored record (scale-out).
//! * [`error`] — this crate's error enum.

#![forbid(unsafe_code)]

pub mod batching;
pub mod digest;
pub mod error;
pub mod limits;
pub mod namespace;
pub mod placement;
pub mod predicate;
pub mod process;
pub mod query_text;
pub mod read_mode;
pub mod rejection;
pub mod stored;
pub mod topology;

pub use error::{Error, Result};
