//! Every public request message of `omnishard.v1` (KvService, GraphService,
//! SearchService, FileService, AdminService), decoded with prost as the
//! gateway's codec does. The first byte picks the message; the rest is its
//! wire bytes. A message that decodes, from a slice or from `Bytes` (the
//! zero-copy path tonic takes), decodes the same both ways and survives
//! an encode/decode round trip. The gateway's first checks on the text it
//! carries (namespace and index names, Gremlin and full-text queries, filter
//! JSON, scan cursors, shard ids) then run on it, as a request would meet them.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use omnishard_common::namespace;
use omnishard_common::predicate::Predicate;
use omnishard_common::query_text;
use omnishard_common::topology;
use omnishard_fuzz::on_small_stack;
use omnishard_gateway::graph::gremlin;
use omnishard_proto::scan_cursor;
use omnishard_proto::v1::*;
use prost::Message;

/// Decodes `data` as `M` both ways and round-trips it; returns the message.
fn decode<M: Message + Default>(data: &[u8]) -> Option<M> {
    let from_slice = M::decode(data);
    let from_bytes = M::decode(Bytes::copy_from_slice(data));
    let message = match (from_slice, from_bytes) {
        (Ok(a), Ok(b)) => {
            // Lengths, not equality: maps re-encode in any order and NaN != NaN.
            assert_eq!(a.encoded_len(), b.encoded_len(), "slice and Bytes decode differently");
            a
        }
        (Err(_), Err(_)) => return None,
        (a, b) => panic!("slice decode ok: {}, Bytes decode ok: {}", a.is_ok(), b.is_ok()),
    };
    let encoded = message.encode_to_vec();
    assert_eq!(encoded.len(), message.encoded_len(), "encoded_len is the encoded size");
    let again = M::decode(encoded.as_slice()).expect("a re-encoded message decodes");
    assert_eq!(again.encoded_len(), encoded.len(), "round trip changed the size");
    Some(message)
}

fn names(ns: &str, name: &str) {
    let _ = namespace::resolve(ns);
    let _ = namespace::resolve_name("name", name);
}

fn filters(filters: &[PropertyFilter]) {
    for f in filters.iter().take(64) {
        let _ = Predicate::parse(&f.op, &f.value_json);
    }
}

macro_rules! requests {
    ($selector:expr, $data:expr, { $($ty:ty => $check:expr,)* }) => {{
        const COUNT: usize = [$(stringify!($ty)),*].len();
        let mut index = usize::from($selector) % COUNT;
        $(
            if index == 0 {
                if let Some(req) = decode::<$ty>($data) {
                    let check: fn($ty) = $check;
                    check(req);
                }
                return;
            }
            index -= 1;
        )*
        let _ = index;
    }};
}

fuzz_target!(init: omnishard_fuzz::init(), |data: &[u8]| {
    let Some((&selector, data)) = data.split_first() else { return };
    requests!(selector, data, {
        // KvService
        GetRequest => |r| names(&r.namespace, ""),
        PutRequest => |r| names(&r.namespace, ""),
        DeleteRequest => |r| names(&r.namespace, ""),
        BatchGetRequest => |r| names(&r.namespace, ""),
        WriteRequest => |r| names(&r.namespace, ""),
        ScanRequest => |r| {
            names(&r.namespace, "");
            let _ = scan_cursor::decode(&r.cursor);
        },
        // GraphService
        WriteVerticesRequest => |r| names(&r.namespace, &r.graph),
        GetVerticesRequest => |r| names(&r.namespace, &r.graph),
        DeleteVerticesRequest => |r| names(&r.namespace, &r.graph),
        WriteEdgesRequest => |r| names(&r.namespace, &r.graph),
        DeleteEdgesRequest => |r| names(&r.namespace, &r.graph),
        NeighborsRequest => |r| names(&r.namespace, &r.graph),
        FindVerticesRequest => |r| {
            names(&r.namespace, &r.graph);
            if !r.property.is_empty() {
                let _ = Predicate::parse("eq", &r.value_json);
            }
        },
        TraverseRequest => |r| {
            names(&r.namespace, &r.graph);
            filters(&r.vertex_filters);
            filters(&r.edge_filters);
        },
        ShortestPathRequest => |r| names(&r.namespace, &r.graph),
        QueryRequest => |r| {
            names(&r.namespace, &r.graph);
            on_small_stack(move || {
                let _ = gremlin::parse(&r.query);
            });
        },
        // SearchService
        CreateIndexRequest => |r| names(&r.namespace, &r.index),
        UpdateIndexRequest => |r| names(&r.namespace, &r.index),
        DropIndexRequest => |r| names(&r.namespace, &r.index),
        DescribeIndexRequest => |r| names(&r.namespace, &r.index),
        ListIndexesRequest => |r| names(&r.namespace, ""),
        IndexDocumentsRequest => |r| names(&r.namespace, &r.index),
        UpdateDocumentRequest => |r| names(&r.namespace, &r.index),
        DeleteDocumentsRequest => |r| names(&r.namespace, &r.index),
        GetDocumentsRequest => |r| names(&r.namespace, &r.index),
        SearchRequest => |r| {
            let _ = omnishard_gateway::search::names(&r.namespace, &r.index);
            let _ = query_text::check(&r.query);
        },
        RefreshRequest => |r| names(&r.namespace, &r.index),
        ReindexRequest => |r| names(&r.namespace, &r.index),
        // FileService
        UploadRequest => |r| {
            if let Some(upload_request::Part::Header(h)) = r.part {
                names(&h.namespace, "");
            }
        },
        DownloadRequest => |r| names(&r.namespace, ""),
        StatFileRequest => |r| names(&r.namespace, ""),
        ListFilesRequest => |r| {
            names(&r.namespace, "");
            let _ = scan_cursor::decode(&r.cursor);
        },
        DeleteFileRequest => |r| names(&r.namespace, ""),
        CopyFileRequest => |r| names(&r.namespace, ""),
        VerifyFilesRequest => |_| {},
        // AdminService
        ClusterRequest => |_| {},
        TraceRequest => |_| {},
        SlowRequestsRequest => |_| {},
        AddShardRequest => |r| {
            let _ = topology::check_shard_id(&r.id);
        },
        RemoveShardRequest => |r| {
            let _ = topology::check_shard_id(&r.id);
        },
        RebalanceStatusRequest => |_| {},
        RebalanceControlRequest => |_| {},
    });
});
