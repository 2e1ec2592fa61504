//! Generates the tonic/prost code for `omnishard.v1` with a vendored `protoc`,
//! so building needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build finds the compiler through PROTOC.
    std::env::set_var("PROTOC", protoc);
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "proto/omnishard/v1/kv.proto",
        "proto/omnishard/v1/admin.proto",
        "proto/omnishard/v1/graph.proto",
        "proto/omnishard/v1/search.proto",
        "proto/omnishard/v1/files.proto",
        "proto/omnishard/v1/shard_files.proto",
        "proto/omnishard/v1/shard.proto",
        "proto/omnishard/v1/shard_raft.proto",
    ];
    // File bytes as `Bytes`: a chunk is cut, sent, received and sliced into
    // messages without being copied at every hand-over.
    let file_bytes = [
        ".omnishard.v1.UploadRequest.data",
        ".omnishard.v1.DownloadResponse.data",
        ".omnishard.v1.ChunkData.data",
        ".omnishard.v1.ShardChunkGetResponse.data",
    ];
    file_bytes
        .iter()
        .fold(tonic_prost_build::configure(), |config, path| config.bytes(path))
        // Decode failures are the caller's fault: INVALID_ARGUMENT, not INTERNAL.
        .codec_path("crate::codec::Codec")
        .file_descriptor_set_path(out_dir.join("omnishard_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
