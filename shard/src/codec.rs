//! How KV data is laid out in RocksDB.
//!
//! * Key: `namespace 0x00 user-key`. Namespace names never contain 0x00
//!   (see `omnishard_common::namespace`), so one namespace is one contiguous
//!   key range and byte order inside it is the user key order.
//! * Value: `version: u64 BE | expires_at_ms: u64 BE | user value`. The
//!   header lets reads hide expired entries and lets the compaction filter drop
//!   them without any other lookup.

use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes of the value header.
pub const HEADER_LEN: usize = 16;

/// The stored form of `key` in `namespace`.
pub fn encode_key(namespace: &str, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(namespace.len() + 1 + key.len());
    out.extend_from_slice(namespace.as_bytes());
    out.push(0);
    out.extend_from_slice(key);
    out
}

/// The user key of a stored key that starts with `namespace 0x00`.
pub fn user_key<'a>(namespace: &str, stored: &'a [u8]) -> &'a [u8] {
    stored.get(namespace.len() + 1..).unwrap_or_default()
}

/// A decoded stored value, borrowing the user bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored<'a> {
    pub version: u64,
    pub expires_at_ms: u64,
    pub value: &'a [u8],
}

impl Stored<'_> {
    /// Whether the value has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms != 0 && self.expires_at_ms <= now_ms
    }
}

/// Encodes a stored value.
pub fn encode_value(version: u64, expires_at_ms: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + value.len());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&expires_at_ms.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Decodes a stored value; `None` when it is shorter than the header.
pub fn decode_value(raw: &[u8]) -> Option<Stored<'_>> {
    let version = u64::from_be_bytes(raw.get(0..8)?.try_into().ok()?);
    let expires_at_ms = u64::from_be_bytes(raw.get(8..16)?.try_into().ok()?);
    Some(Stored { version, expires_at_ms, value: &raw[HEADER_LEN..] })
}

/// Milliseconds since the unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The smallest key greater than every key starting with `prefix`, if any.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn test_value_roundtrip(version in any::<u64>(), exp in any::<u64>(), value in proptest::collection::vec(any::<u8>(), 0..64)) {
            let raw = encode_value(version, exp, &value);
            let got = decode_value(&raw).unwrap();
            prop_assert_eq!(got, Stored { version, expires_at_ms: exp, value: &value });
        }

        #[test]
        fn test_namespaces_never_overlap(a in "[a-z]{1,5}", b in "[a-z]{1,5}", k1 in proptest::collection::vec(any::<u8>(), 0..8)) {
            prop_assume!(a != b);
            let ka = encode_key(&a, &k1);
            let prefix_b = encode_key(&b, b"");
            prop_assert!(!ka.starts_with(&prefix_b));
        }

        #[test]
        fn test_prefix_end_bounds_prefix(prefix in proptest::collection::vec(any::<u8>(), 0..6), suffix in proptest::collection::vec(any::<u8>(), 0..6)) {
            let mut key = prefix.clone();
            key.extend_from_slice(&suffix);
            if let Some(end) = prefix_end(&prefix) {
                prop_assert!(key < end);
            }
        }
    }

    #[test]
    fn test_short_value_is_rejected() {
        assert!(decode_value(&[0; 15]).is_none());
        assert_eq!(user_key("ns", b"ns\0key"), b"key");
    }
}
