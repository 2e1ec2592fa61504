//! Paging cursors that clients send back: `ScanRequest.cursor` and
//! `ListFilesRequest.cursor` (both `omnishard_proto::scan_cursor`, which the
//! gateway's `kv::decode_cursor` wraps). A cursor that decodes names the key
//! it continues after, and re-encoding that key gives the cursor back.
//!
//! The gateway's other cursor decoders are not public, so they are not
//! reached from here: `search_after` (`search::query::decode_cursor`,
//! base64 + JSON), and the inline ones of `Cluster::neighbors` (a side byte
//! and the shard's cursor) and `Cluster::find_vertices` (UTF-8 of the last id).
#![no_main]

use libfuzzer_sys::fuzz_target;
use omnishard_proto::scan_cursor;

fuzz_target!(init: omnishard_fuzz::init(), |data: &[u8]| {
    match scan_cursor::decode(data) {
        Some(key) if data.is_empty() => assert!(key.is_empty(), "the empty cursor starts from the beginning"),
        Some(key) => {
            assert!(!key.is_empty(), "a non-empty cursor names a key");
            assert_eq!(scan_cursor::after(key), data, "re-encoding the key gives the cursor back");
        }
        None => {}
    }
    // Any key, as the cursor a page ends with, decodes back to itself.
    if !data.is_empty() {
        let cursor = scan_cursor::after(data);
        assert_eq!(scan_cursor::decode(&cursor), Some(data), "a cursor made from a key decodes to it");
    }
});
