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
//! [`FILE_DESCRIPTOR_SET`] feeds server reflection so `grpcurl` works.

#![forbid(unsafe_code)]

/// Generated messages and services of `omnishard.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("omnishard.v1");
}

/// Encoded descriptors of every omnishard service, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("omnishard_descriptor");
