//! The omnishard gRPC API, package `omnishard.v1`.
//!
//! Layout:
//! * `proto/omnishard/v1/kv.proto` — `KvService`, the public key-value API.
//! * `proto/omnishard/v1/admin.proto` — `AdminService`, the operator API.
//! * `proto/omnishard/v1/graph.proto` — `GraphService`, vertices, edges and traversals.
//! * `proto/omnishard/v1/search.proto` — `SearchService`, indexes, documents and ranked queries.
//! * `proto/omnishard/v1/files.proto` — `FileService`, streamed, chunked, deduplicated files.
//! * `proto/omnishard/v1/shard.proto` — `ShardService`, gateway → shard only.
//! * `proto/omnishard/v1/shard_files.proto` — `ShardFileService`, chunks and manifests, gateway → shard only.
//!
//! [`FILE_DESCRIPTOR_SET`] feeds server reflection so `grpcurl` works;
//! [`codec`] is the prost codec every service uses, with decode failures as
//! `INVALID_ARGUMENT`.

#![forbid(unsafe_code)]

pub mod codec;

/// Generated messages and services of `omnishard.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("omnishard.v1");
}

/// Encoded descriptors of every omnishard service, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("omnishard_descriptor");

/// Scan cursors (`ScanRequest.cursor`, `ScanResponse.next_cursor`): a
/// version byte and the last key returned. Clients normally pass back the
/// cursor a page gave them; [`scan_cursor::after`] starts a scan right after
/// a key of the caller's choosing.
pub mod scan_cursor {
    /// First byte of every cursor; bump it when the format changes.
    const V1: u8 = 1;

    /// The cursor that continues a scan after `key`.
    pub fn after(key: &[u8]) -> Vec<u8> {
        let mut cursor = Vec::with_capacity(key.len() + 1);
        cursor.push(V1);
        cursor.extend_from_slice(key);
        cursor
    }

    /// The key a cursor continues after (empty: from the start), or `None`
    /// when it is not a cursor.
    pub fn decode(cursor: &[u8]) -> Option<&[u8]> {
        match cursor.split_first() {
            None => Some(&[]),
            Some((&V1, key)) if !key.is_empty() => Some(key),
            _ => None,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn test_cursor_round_trip_and_garbage() {
            assert_eq!(decode(&after(b"k1")), Some(&b"k1"[..]));
            assert_eq!(decode(b""), Some(&b""[..]));
            assert_eq!(decode(b"\x07junk"), None);
            assert_eq!(decode(b"\x01"), None);
        }
    }
}
