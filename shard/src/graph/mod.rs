//! The graph model inside a shard: vertices of this shard's ids, and the
//! edge halves stored with them (out-halves with the source, in-halves with
//! the target).
//!
//! Layout:
//! * [`keys`] — on-disk keys of vertices, edge halves and the label index.
//! * [`write`] — staging graph mutations for the apply path.
//! * [`read`] — vertex reads, edge listing and local multi-hop expansion.
//! * [`ops`] — validation and ownership checks; the shard's graph API.

pub mod keys;
pub mod ops;
pub mod read;
pub mod write;

/// Longest vertex label or edge label, in bytes.
pub const MAX_LABEL_BYTES: usize = 256;
