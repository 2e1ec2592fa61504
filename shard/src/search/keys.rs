//! Layout of the `search` column family.
//!
//! * `m ns 0x00 name` → index metadata (JSON [`IndexMeta`]).
//! * `d uid id` → a document: version (u64 BE) then its JSON.
//! * `o uid seq n` → outbox: a flag byte then the id of a document written
//!   at shard sequence `seq` (u64 BE; `n`, u32 BE, orders ids of one
//!   transaction). The flag is [`OUTBOX_NEW`] when no document with that id
//!   existed before the write (the indexer then needs no delete), else
//!   [`OUTBOX_CHANGED`]. The indexer reads the outbox in order; the index
//!   records the last sequence it applied.
//! * `g uid` → the active generation (u32 BE) of the index's Tantivy directory.
//!
//! `uid` (u64 BE) is chosen when an index is created, so a dropped and
//! re-created index never sees the old one's documents.

use serde::{Deserialize, Serialize};

use super::schema::IndexSchema;

/// What is stored about an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexMeta {
    pub uid: u64,
    pub schema: IndexSchema,
}

/// Key of an index's metadata.
pub fn meta(ns: &str, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + ns.len() + name.len());
    key.push(b'm');
    key.extend_from_slice(ns.as_bytes());
    key.push(0);
    key.extend_from_slice(name.as_bytes());
    key
}

/// Prefix of every index metadata key of a namespace.
pub fn meta_prefix(ns: &str) -> Vec<u8> {
    let mut key = meta(ns, "");
    key.truncate(ns.len() + 2);
    key
}

/// The index name of a metadata key.
pub fn name_of_meta(key: &[u8]) -> Option<&str> {
    let at = key.iter().position(|b| *b == 0)?;
    std::str::from_utf8(&key[at + 1..]).ok()
}

fn with_uid(tag: u8, uid: u64, extra: usize) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + extra);
    key.push(tag);
    key.extend_from_slice(&uid.to_be_bytes());
    key
}

/// Key of a document.
pub fn doc(uid: u64, id: &str) -> Vec<u8> {
    let mut key = with_uid(b'd', uid, id.len());
    key.extend_from_slice(id.as_bytes());
    key
}

/// Prefix of every document of an index.
pub fn doc_prefix(uid: u64) -> Vec<u8> {
    with_uid(b'd', uid, 0)
}

/// The id of a document key.
pub fn id_of_doc(key: &[u8]) -> Option<&str> {
    key.get(9..).and_then(|id| std::str::from_utf8(id).ok())
}

/// Key of one outbox entry.
pub fn outbox(uid: u64, seq: u64, n: u32) -> Vec<u8> {
    let mut key = with_uid(b'o', uid, 12);
    key.extend_from_slice(&seq.to_be_bytes());
    key.extend_from_slice(&n.to_be_bytes());
    key
}

/// Outbox flag: the write created the document.
pub const OUTBOX_NEW: u8 = b'n';
/// Outbox flag: the write replaced, changed or deleted a document.
pub const OUTBOX_CHANGED: u8 = b'c';

/// An outbox value: flag then id.
pub fn encode_outbox(new: bool, id: &str) -> Vec<u8> {
    let mut value = Vec::with_capacity(1 + id.len());
    value.push(if new { OUTBOX_NEW } else { OUTBOX_CHANGED });
    value.extend_from_slice(id.as_bytes());
    value
}

/// Splits an outbox value into (created, id).
pub fn decode_outbox(value: &[u8]) -> Option<(bool, &[u8])> {
    let (flag, id) = value.split_first()?;
    Some((*flag == OUTBOX_NEW, id))
}

/// Prefix of an index's outbox.
pub fn outbox_prefix(uid: u64) -> Vec<u8> {
    with_uid(b'o', uid, 0)
}

/// The sequence number of an outbox key.
pub fn seq_of_outbox(key: &[u8]) -> Option<u64> {
    key.get(9..17).map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
}

/// Key of an index's active generation.
pub fn generation(uid: u64) -> Vec<u8> {
    with_uid(b'g', uid, 0)
}

/// A stored document value: version then JSON.
pub fn encode_doc(version: u64, json: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + json.len());
    value.extend_from_slice(&version.to_be_bytes());
    value.extend_from_slice(json);
    value
}

/// Splits a stored document into version and JSON.
pub fn decode_doc(value: &[u8]) -> Option<(u64, &[u8])> {
    let (version, json) = value.split_at_checked(8)?;
    Some((u64::from_be_bytes(version.try_into().ok()?), json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_keys_decode_back() {
        assert_eq!(name_of_meta(&meta("ns", "books")), Some("books"));
        assert!(meta("ns", "books").starts_with(&meta_prefix("ns")));
        assert!(!meta("ns2", "x").starts_with(&meta_prefix("ns")));
        assert_eq!(id_of_doc(&doc(7, "a/b")), Some("a/b"));
        assert_eq!(seq_of_outbox(&outbox(7, 42, 3)), Some(42));
        assert!(outbox(7, 1, 9) < outbox(7, 2, 0));
        assert_eq!(decode_doc(&encode_doc(5, b"{}")), Some((5, &b"{}"[..])));
        assert_eq!(decode_outbox(&encode_outbox(true, "x")), Some((true, &b"x"[..])));
        assert_eq!(decode_outbox(&encode_outbox(false, "n1")), Some((false, &b"n1"[..])));
    }
}
