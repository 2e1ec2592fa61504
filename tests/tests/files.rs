//! Files end to end: round trips of every size class with byte ranges,
//! chunks spread over every shard and stored once, a 1 GiB upload in bounded
//! memory, interrupted uploads that leave nothing behind (client gone, or
//! gateway killed), corrupt chunks reported as DATA_LOSS, collection after
//! overwrite and delete while readers keep their version, bad input, the CLI,
//! and clients that stall, trickle or send oversized messages.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use omnishard_client::{Client, UploadHeader};
use omnishard_proto::v1::*;
use omnishard_tests::Cluster;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tonic::Code;

const MIB: usize = 1 << 20;

/// Deterministic incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    SmallRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

fn header(key: &str) -> UploadHeader {
    UploadHeader { key: key.as_bytes().to_vec(), ..Default::default() }
}

/// Uploads `data` in 256 KiB messages.
async fn put(client: &Client, key: &str, data: &[u8]) -> Result<UploadResponse, omnishard_client::Error> {
    let pieces: Vec<Vec<u8>> = data.chunks(256 * 1024).map(<[u8]>::to_vec).collect();
    let mut h = header(key);
    h.size = Some(data.len() as u64);
    client.upload(h, futures::stream::iter(pieces)).await
}

async fn get(client: &Client, key: &str, offset: u64, length: u64) -> Result<Vec<u8>, omnishard_client::Error> {
    let mut reader = client.download(key.as_bytes(), offset, length).await?;
    let mut out = Vec::new();
    while let Some(piece) = reader.next_bytes().await? {
        out.extend_from_slice(&piece);
    }
    Ok(out)
}

async fn verify(client: &Client) -> VerifyFilesResponse {
    client.files().verify(VerifyFilesRequest {}).await.unwrap().into_inner()
}

/// Waits until the stored chunk count is `want` (collection runs in the background).
async fn wait_for_chunks(client: &Client, want: u64, within: Duration) -> VerifyFilesResponse {
    let start = Instant::now();
    loop {
        let report = verify(client).await;
        if report.chunks == want || start.elapsed() > within {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Blob files of one shard's RocksDB and their total size.
fn blob_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "blob"))
                .map(|e| (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// Peak resident memory of a process, in bytes (Linux `VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

const FIXED_64K: &str = "\n[files]\nchunking = \"fixed\"\nchunk_size = \"64KiB\"\n";

#[tokio::test]
async fn test_round_trip_of_every_size_class_with_ranges() {
    let cluster = Cluster::builder().shards(3).gateway_toml(FIXED_64K).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let chunk = 64 * 1024;
    for (i, len) in [0, 1, chunk - 1, chunk, chunk + 1, 5 * chunk, 3 * MIB + 17].into_iter().enumerate() {
        let data = noise(len, i as u64);
        let key = format!("sizes/{len}");
        let done = put(&client, &key, &data).await.unwrap();
        let info = done.file.unwrap();
        assert_eq!(info.size, len as u64);
        assert_eq!(info.sha256, Sha256::digest(&data).to_vec(), "{key}");
        assert_eq!(info.chunk_count, len.div_ceil(chunk) as u64, "{key}");
        let back = get(&client, &key, 0, 0).await.unwrap();
        assert_eq!(Sha256::digest(&back), Sha256::digest(&data), "{key}");
    }

    // Ranges at and across chunk boundaries of a 5-chunk file (the sixth size, seed 5).
    let data = noise(5 * chunk, 5);
    for (offset, length) in
        [(0, 1), (chunk - 1, 2), (chunk, chunk), (chunk - 1, 3 * chunk + 2), (5 * chunk - 1, 0), (7, 0)]
    {
        let got = get(&client, &format!("sizes/{}", 5 * chunk), offset as u64, length as u64).await.unwrap();
        let end = if length == 0 { data.len() } else { offset + length };
        assert_eq!(got, data[offset..end], "range {offset}+{length}");
    }
    // A length past the end is clamped; an offset at or past the end is OUT_OF_RANGE.
    let tail = get(&client, "sizes/1", 0, 100).await.unwrap();
    assert_eq!(tail.len(), 1);
    for (key, offset) in [("sizes/1", 1), ("sizes/0", 1), ("sizes/1", 1 << 40)] {
        let err = client.download(key.as_bytes(), offset, 0).await.err().unwrap();
        assert_eq!(err.code(), Code::OutOfRange, "{err}");
        assert!(err.to_string().contains("offset"), "{err}");
    }
    assert!(get(&client, "sizes/0", 0, 0).await.unwrap().is_empty());

    // Stat with chunks, list by prefix in pages, copy, delete.
    let req = StatFileRequest { key: b"sizes/65537".to_vec(), chunks: true, ..Default::default() };
    let stat = client.files().stat(req).await.unwrap().into_inner();
    assert_eq!(stat.chunks.iter().map(|c| c.size).collect::<Vec<_>>(), vec![65536, 1]);
    let mut keys = Vec::new();
    let mut cursor = Vec::new();
    loop {
        let req = ListFilesRequest { prefix: b"sizes/".to_vec(), cursor, limit: 3, ..Default::default() };
        let page = client.files().list(req).await.unwrap().into_inner();
        keys.extend(page.files.into_iter().map(|f| String::from_utf8(f.key).unwrap()));
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    let mut expected: Vec<String> =
        [0, 1, chunk - 1, chunk, chunk + 1, 5 * chunk, 3 * MIB + 17].iter().map(|l| format!("sizes/{l}")).collect();
    expected.sort();
    assert_eq!(keys, expected);
    let copy = CopyFileRequest { source: b"sizes/65537".to_vec(), destination: b"copy".to_vec(), ..Default::default() };
    let copied = client.files().copy(copy).await.unwrap().into_inner().file.unwrap();
    assert_eq!(copied.sha256, stat.sha256);
    assert_eq!(get(&client, "copy", 0, 0).await.unwrap(), noise(chunk + 1, 4));
    let del = DeleteFileRequest { key: b"copy".to_vec(), ..Default::default() };
    assert!(client.files().delete(del.clone()).await.unwrap().into_inner().deleted);
    assert!(!client.files().delete(del).await.unwrap().into_inner().deleted);
    let err = client.download(b"copy", 0, 0).await.err().unwrap();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    // The source still reads after its copy is gone (the copy's claims were its own).
    assert_eq!(get(&client, "sizes/65537", 0, 0).await.unwrap(), noise(chunk + 1, 4));
}

#[tokio::test]
async fn test_one_gib_upload_spreads_over_every_shard_in_bounded_memory() {
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    const TOTAL: usize = 1 << 30;
    // Generated while streaming: the test itself never holds the file.
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let producer = tokio::spawn(async move {
        let mut rng = SmallRng::seed_from_u64(42);
        let mut hasher = Sha256::new();
        for _ in 0..TOTAL / MIB {
            let mut piece = vec![0u8; MIB];
            rng.fill_bytes(&mut piece);
            hasher.update(&piece);
            if tx.send(piece).await.is_err() {
                break;
            }
        }
        hasher.finalize().to_vec()
    });
    let mut h = header("big/one-gib");
    h.size = Some(TOTAL as u64);
    let done = client.upload(h, tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap();
    let sha = producer.await.unwrap();
    let info = done.file.unwrap();
    assert_eq!(info.size, TOTAL as u64);
    assert_eq!(info.sha256, sha);
    assert!(info.chunk_count > 500, "{} chunks of ~1 MiB expected", info.chunk_count);

    // Memory: the peak of every process during the upload stayed bounded.
    let limit = 200 * MIB as u64;
    let gateway_peak = peak_rss(cluster.gateway_pid().unwrap());
    assert!(gateway_peak < limit, "gateway peak RSS {} MiB", gateway_peak >> 20);
    for i in 0..3 {
        let peak = peak_rss(cluster.shard_pid(i).unwrap());
        assert!(peak < limit, "shard {i} peak RSS {} MiB", peak >> 20);
    }

    // Spread: every shard holds a fair part of the bytes in its blob files.
    for id in cluster.shard_ids() {
        let stored: u64 = blob_files(&cluster.data_dir().join(&id)).iter().map(|(_, len)| len).sum();
        assert!(stored > (TOTAL as u64) / 6, "{id} holds only {} MiB of chunk data", stored >> 20);
    }

    // Download: the same bytes, streamed.
    let mut reader = client.download(b"big/one-gib", 0, 0).await.unwrap();
    let mut hasher = Sha256::new();
    let mut received = 0usize;
    while let Some(piece) = reader.next_bytes().await.unwrap() {
        received += piece.len();
        hasher.update(&piece);
    }
    assert_eq!(received, TOTAL);
    assert_eq!(hasher.finalize().to_vec(), sha);
}

#[tokio::test]
async fn test_same_content_is_stored_once() {
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let data = noise(24 * MIB, 9);
    let first = put(&client, "a", &data).await.unwrap();
    assert!(first.chunks_stored > 5);
    assert_eq!(first.chunks_deduplicated, 0);
    let second = put(&client, "b", &data).await.unwrap();
    assert_eq!(second.chunks_stored, 0);
    assert_eq!(second.chunks_deduplicated, first.chunks_stored);
    // A shifted copy shares all but the chunks around the edit (content-defined chunking).
    let mut edited = b"a few new bytes at the front".to_vec();
    edited.extend_from_slice(&data);
    let third = put(&client, "c", &edited).await.unwrap();
    assert!(third.chunks_deduplicated + 2 >= first.chunks_stored, "{third:?}");
    let report = verify(&client).await;
    assert_eq!(report.chunks, first.chunks_stored + third.chunks_stored);
    assert_eq!(report.files, 3);
    assert!(report.corrupt.is_empty() && report.missing.is_empty() && report.unreferenced == 0, "{report:?}");
    assert_eq!(get(&client, "c", 0, 0).await.unwrap(), edited);
}

#[tokio::test]
async fn test_client_gone_mid_upload_leaves_nothing() {
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
    let uploader = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut h = header("partial");
            h.size = Some(64 * MIB as u64);
            client.upload(h, tokio_stream::wrappers::ReceiverStream::new(rx)).await
        })
    };
    for i in 0..20 {
        tx.send(noise(MIB, 100 + i)).await.unwrap();
    }
    // Wait until chunks were stored, then vanish without ending the stream.
    let start = Instant::now();
    while verify(&client).await.chunks < 5 && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    uploader.abort();
    drop(tx);
    let report = wait_for_chunks(&client, 0, Duration::from_secs(30)).await;
    assert_eq!(report.chunks, 0, "orphan chunks were not collected: {report:?}");
    let err = client.download(b"partial", 0, 0).await.err().unwrap();
    assert_eq!(err.code(), Code::NotFound, "{err}");
}

#[tokio::test]
async fn test_gateway_killed_mid_upload_orphans_are_swept() {
    let mut cluster = Cluster::builder()
        .shards(3)
        .shard_toml("[files]\nupload_grace = \"1s\"\nread_lease_max = \"1s\"\n")
        .gateway_toml("\n[files]\nupload_lease = \"2s\"\nsweep_interval = \"300ms\"\n")
        .start()
        .await
        .unwrap();
    let client = cluster.client().await.unwrap();
    let kept = noise(3 * MIB, 1);
    put(&client, "kept", &kept).await.unwrap();
    let kept_chunks = verify(&client).await.chunks;
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
    let uploader = {
        let client = client.clone();
        tokio::spawn(
            async move { client.upload(header("orphan"), tokio_stream::wrappers::ReceiverStream::new(rx)).await },
        )
    };
    for i in 0..12 {
        tx.send(noise(MIB, 200 + i)).await.unwrap();
    }
    let start = Instant::now();
    while verify(&client).await.chunks < kept_chunks + 4 && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The gateway dies with the upload's claims on the shards and nobody to release them.
    cluster.restart_gateway().await.unwrap();
    uploader.abort();
    let client = cluster.client().await.unwrap();
    let report = wait_for_chunks(&client, kept_chunks, Duration::from_secs(30)).await;
    assert_eq!(report.chunks, kept_chunks, "{report:?}");
    assert_eq!(get(&client, "kept", 0, 0).await.unwrap(), kept);
    assert_eq!(client.download(b"orphan", 0, 0).await.err().unwrap().code(), Code::NotFound);
}

#[tokio::test]
async fn test_corrupt_chunk_is_data_loss_naming_the_chunk() {
    let mut cluster = Cluster::builder().shards(2).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let data = noise(16 * MIB, 5);
    put(&client, "victim", &data).await.unwrap();
    // Flip bytes in the middle of every blob file (the upload flushed them).
    for i in 0..2 {
        cluster.kill_shard(i).await.unwrap();
    }
    let mut flipped = 0;
    for id in cluster.shard_ids() {
        for (path, len) in blob_files(&cluster.data_dir().join(&id)) {
            if len > 1024 {
                let mut bytes = std::fs::read(&path).unwrap();
                let at = bytes.len() / 2;
                bytes[at] ^= 0xff;
                std::fs::write(&path, bytes).unwrap();
                flipped += 1;
            }
        }
    }
    assert!(flipped > 0, "no blob files found");
    for i in 0..2 {
        cluster.restart_shard(i).await.unwrap();
    }
    let err = get(&client, "victim", 0, 0).await.unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err}");
    assert!(err.to_string().contains("chunk"), "{err}");
    let report = verify(&client).await;
    assert!(!report.corrupt.is_empty(), "{report:?}");
    let (exit, stdout, stderr) = cluster.cli(&["admin", "verify-files"]).await.unwrap();
    assert_ne!(exit, 0, "{stdout}");
    assert!(stdout.contains("corrupt: shard"), "{stdout}");
    assert!(stderr.contains("data loss"), "{stderr}");
}

#[tokio::test]
async fn test_chunk_damaged_in_transit_is_refused_by_its_shard() {
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let data = noise(64 * 1024, 11);
    let mut damaged = data.clone();
    damaged[100] ^= 0x10;
    let chunk =
        ChunkData { sha256: Sha256::digest(&data).to_vec(), crc32: crc32fast::hash(&data), data: damaged.into() };
    // Sent to every shard: the one that owns the chunk checks its CRC, the
    // others refuse it as not theirs.
    let mut refused_as_damaged = 0;
    for index in 0..3 {
        let mut shard =
            shard_file_service_client::ShardFileServiceClient::connect(cluster.shard_url(index)).await.unwrap();
        let req = ShardChunkPutRequest {
            epoch: 1,
            namespace: "default".into(),
            upload: Some(UploadTicket { id: vec![7; 16], key: b"k".to_vec(), deadline_ms: u64::MAX / 2 }),
            compress: false,
            bulk: false,
            chunks: vec![chunk.clone()],
        };
        let err = shard.chunk_put(req).await.unwrap_err();
        if err.code() == Code::InvalidArgument {
            assert!(err.message().starts_with("chunks.crc32:"), "{err:?}");
            refused_as_damaged += 1;
        }
    }
    assert_eq!(refused_as_damaged, 1);
    assert_eq!(verify(&client).await.chunks, 0, "a damaged chunk was stored");
}

#[tokio::test]
async fn test_overwrite_and_delete_collect_chunks_while_readers_finish() {
    let cluster = Cluster::builder()
        .shards(3)
        .shard_toml("[files]\nread_lease_max = \"3s\"\n")
        .gateway_toml("\n[files]\nread_lease = \"3s\"\nsweep_interval = \"200ms\"\nwindow = 1\n")
        .start()
        .await
        .unwrap();
    let client = cluster.client().await.unwrap();
    // Shards refuse to collect for read_lease_max after start.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let old = noise(40 * MIB, 1);
    let new = noise(4 * MIB, 2);
    put(&client, "doc", &old).await.unwrap();
    let old_chunks = verify(&client).await.chunks;

    // A reader starts on the old version and pauses.
    let mut reader = client.download(b"doc", 0, 0).await.unwrap();
    let mut read_back = reader.next_bytes().await.unwrap().unwrap().to_vec();
    put(&client, "doc", &new).await.unwrap();
    put(&client, "same-as-new", &new).await.unwrap();
    // Past the read lease and many sweeps: renewals keep the reader's version.
    // (The lease is 3 s, renewed every second: slack for a loaded machine.)
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(verify(&client).await.chunks > old_chunks, "the old version was collected under its reader");
    while let Some(piece) = reader.next_bytes().await.unwrap() {
        read_back.extend_from_slice(&piece);
    }
    assert_eq!(Sha256::digest(&read_back), Sha256::digest(&old));
    assert_eq!(get(&client, "doc", 0, 0).await.unwrap(), new);

    // With the reader gone the old chunks go; the new ones are shared by two files.
    let req = StatFileRequest { key: b"doc".to_vec(), ..Default::default() };
    let new_chunks = client.files().stat(req).await.unwrap().into_inner().chunk_count;
    let report = wait_for_chunks(&client, new_chunks, Duration::from_secs(20)).await;
    assert_eq!(report.chunks, new_chunks, "{report:?}");
    let del = DeleteFileRequest { key: b"doc".to_vec(), ..Default::default() };
    client.files().delete(del).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(verify(&client).await.chunks, new_chunks, "chunks still claimed by same-as-new were deleted");
    assert_eq!(get(&client, "same-as-new", 0, 0).await.unwrap(), new);
    let del = DeleteFileRequest { key: b"same-as-new".to_vec(), ..Default::default() };
    client.files().delete(del).await.unwrap();
    let report = wait_for_chunks(&client, 0, Duration::from_secs(20)).await;
    assert_eq!(report.chunks, 0, "{report:?}");
    assert_eq!(report.files, 0);
}

#[tokio::test]
async fn test_bad_uploads_are_refused_and_store_nothing() {
    let cluster =
        Cluster::builder().shards(3).gateway_toml("\n[files]\nmax_file_size = \"8MiB\"\n").start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let mut raw = client.files();

    // No header: data first, or nothing at all.
    let data_first =
        futures::stream::iter(vec![UploadRequest { part: Some(upload_request::Part::Data(vec![1].into())) }]);
    let err = raw.upload(data_first).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("header:"), "{}", err.message());
    let err = raw.upload(futures::stream::iter(Vec::<UploadRequest>::new())).await.unwrap_err();
    assert!(err.message().starts_with("header:"), "{}", err.message());

    let cases: Vec<(UploadHeader, Vec<u8>, &str)> = vec![
        (header(""), vec![1], "key:"),
        (header(&"k".repeat(5000)), vec![1], "key:"),
        (UploadHeader { size: Some(9 * MIB as u64), ..header("big") }, vec![1], "size:"),
        (header("big"), noise(9 * MIB, 1), "data:"),
        (UploadHeader { size: Some(10), ..header("short") }, vec![1; 9], "size:"),
        (UploadHeader { size: Some(10), ..header("long") }, vec![1; 11], "data:"),
        (UploadHeader { sha256: vec![0; 32], ..header("sum") }, vec![1; 100], "sha256:"),
        (UploadHeader { sha256: vec![0; 3], ..header("sum") }, vec![1], "sha256:"),
        (UploadHeader { namespace: "Bad NS".into(), ..header("k") }, vec![1], "namespace:"),
    ];
    for (h, data, field) in cases {
        let pieces: Vec<Vec<u8>> = data.chunks(MIB).map(<[u8]>::to_vec).collect();
        let err = client.upload(h, futures::stream::iter(pieces)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    // Nothing of any refused upload is visible or stored.
    let report = wait_for_chunks(&client, 0, Duration::from_secs(20)).await;
    assert_eq!((report.files, report.chunks), (0, 0), "{report:?}");

    // A client that disconnects mid-download harms nothing.
    put(&client, "file", &noise(6 * MIB, 3)).await.unwrap();
    let mut reader = client.download(b"file", 0, 0).await.unwrap();
    reader.next_bytes().await.unwrap();
    drop(reader);
    assert_eq!(get(&client, "file", 0, 0).await.unwrap(), noise(6 * MIB, 3));
}

#[tokio::test]
async fn test_cli_put_get_range_ls_stat_rm() {
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("report.bin");
    let data = noise(3 * MIB + 5, 8);
    std::fs::write(&local, &data).unwrap();
    let local_s = local.to_string_lossy().into_owned();

    let (exit, out, err) = cluster
        .cli(&[
            "--json",
            "file",
            "put",
            &local_s,
            "reports/q3.bin",
            "--content-type",
            "application/octet-stream",
            "--meta",
            "team=data",
        ])
        .await
        .unwrap();
    assert_eq!(exit, 0, "{err}");
    let put: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(put["size"], data.len() as u64);
    assert_eq!(put["sha256"], hex::encode(Sha256::digest(&data)));

    let back = dir.path().join("back.bin");
    let (exit, _, err) = cluster.cli(&["file", "get", "reports/q3.bin", &back.to_string_lossy()]).await.unwrap();
    assert_eq!(exit, 0, "{err}");
    assert_eq!(std::fs::read(&back).unwrap(), data);

    let part = dir.path().join("part.bin");
    let (exit, _, err) = cluster
        .cli(&["file", "get", "reports/q3.bin", &part.to_string_lossy(), "--range", "1048570-1048585"])
        .await
        .unwrap();
    assert_eq!(exit, 0, "{err}");
    assert_eq!(std::fs::read(&part).unwrap(), data[1_048_570..=1_048_585]);
    let (exit, _, err) = cluster.cli(&["file", "get", "reports/q3.bin", "-", "--range", "99999999-"]).await.unwrap();
    assert_ne!(exit, 0);
    assert!(err.contains("out_of_range") && err.contains("offset"), "{err}");

    let (exit, out, _) = cluster.cli(&["--json", "file", "stat", "reports/q3.bin"]).await.unwrap();
    assert_eq!(exit, 0);
    let stat: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(stat["metadata"]["team"], "data");
    assert_eq!(stat["content_type"], "application/octet-stream");
    assert!(stat["chunk_count"].as_u64().unwrap() >= 1);

    let (_, out, _) = cluster.cli(&["file", "ls", "reports/"]).await.unwrap();
    assert!(out.contains("reports/q3.bin") && out.contains(&hex::encode(Sha256::digest(&data))), "{out}");
    let (exit, out, _) = cluster.cli(&["--json", "file", "rm", "reports/q3.bin"]).await.unwrap();
    assert_eq!(exit, 0);
    assert!(out.contains("\"deleted\":true"), "{out}");
    let (exit, _, err) = cluster.cli(&["file", "stat", "reports/q3.bin"]).await.unwrap();
    assert_eq!(exit, 3, "{err}");
    assert!(err.contains("not_found"), "{err}");
}

/// An upload's first message: its header.
fn header_message(key: &str) -> UploadRequest {
    UploadRequest { part: Some(upload_request::Part::Header(header(key))) }
}

fn data_message(data: Vec<u8>) -> UploadRequest {
    UploadRequest { part: Some(upload_request::Part::Data(data.into())) }
}

/// `messages`, then nothing, without ever ending: a client that stalls.
fn then_silence(messages: Vec<UploadRequest>) -> impl futures::Stream<Item = UploadRequest> + Send + 'static {
    use futures::StreamExt;
    futures::stream::iter(messages).chain(futures::stream::pending())
}

#[tokio::test]
async fn test_uploads_without_a_header_hold_no_slot_and_time_out() {
    let toml = "\n[files]\nmax_transfers = 4\nheader_timeout = \"3s\"\n";
    let cluster = Cluster::builder().shards(1).gateway_toml(toml).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let kept = noise(300 * 1024, 31);
    put(&client, "kept", &kept).await.unwrap();

    // 70 uploads (far over max_transfers) that open their stream and send nothing.
    let silent_client = cluster.client().await.unwrap();
    let silent: Vec<_> = (0..70)
        .map(|_| {
            let mut raw = silent_client.files();
            tokio::spawn(async move { raw.upload(futures::stream::pending::<UploadRequest>()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // While they wait, uploads and downloads go on.
    let data = noise(200 * 1024, 32);
    put(&client, "during", &data).await.unwrap();
    assert_eq!(get(&client, "during", 0, 0).await.unwrap(), data);
    assert_eq!(get(&client, "kept", 0, 0).await.unwrap(), kept);
    assert!(silent.iter().all(|t| !t.is_finished()), "the silent uploads ended before the normal transfers ran");

    // Past files.header_timeout every silent upload is ended by the gateway.
    for task in silent {
        let answer = tokio::time::timeout(Duration::from_secs(15), task).await;
        let err = answer.expect("an upload without a header outlived files.header_timeout").unwrap().unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
        assert!(err.message().contains("header: not received within 3s (files.header_timeout)"), "{err:?}");
    }
}

#[tokio::test]
async fn test_stalled_and_trickling_uploads_time_out_and_free_their_slots() {
    let toml = r#"
[files]
chunking = "fixed"
chunk_size = "64KiB"
max_transfers = 4
idle_timeout = "3s"
min_rate = "64KiB"
"#;
    let cluster = Cluster::builder().shards(2).gateway_toml(toml).start().await.unwrap();
    let client = cluster.client().await.unwrap();

    // Three uploads stall: one after its header, two after 6 chunks of data
    // (more than files.window, so some of their chunks are stored and claimed).
    let mut stalled = Vec::new();
    for i in 0..3u64 {
        let mut messages = vec![header_message(&format!("stalled/{i}"))];
        if i > 0 {
            messages.push(data_message(noise(6 * 64 * 1024, 40 + i)));
        }
        let mut raw = client.files();
        stalled.push(tokio::spawn(async move { raw.upload(then_silence(messages)).await }));
    }
    // A fourth trickles 1 KiB every 100 ms: never idle, but far below files.min_rate.
    let trickle = {
        let mut raw = client.files();
        let pieces = (0..300u64).map(|i| data_message(noise(1024, 1000 + i)));
        let paced = futures::StreamExt::then(futures::stream::iter(pieces), |m| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            m
        });
        let messages = futures::StreamExt::chain(futures::stream::iter(vec![header_message("trickle")]), paced);
        tokio::spawn(async move { raw.upload(messages).await })
    };

    // All four slots are held (and chunks claimed) while they wait. (The
    // pause lets the four reach the gateway before a probe can take a slot.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let (mut exhausted, mut claimed) = (false, 0);
    while !(exhausted && claimed > 0) && start.elapsed() < Duration::from_secs(3) {
        match put(&client, "probe", b"").await {
            Err(e) if e.code() == Code::ResourceExhausted => {
                assert!(e.to_string().contains("files.max_transfers"), "{e}");
                exhausted = true;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        claimed = verify(&client).await.chunks;
    }
    assert!(exhausted && claimed > 0, "the stalled uploads held no slot ({exhausted}) or no chunk ({claimed})");

    // Past files.idle_timeout the stalled ones end; the trickle ends on files.min_rate.
    for (i, task) in stalled.into_iter().enumerate() {
        let answer = tokio::time::timeout(Duration::from_secs(15), task).await;
        let err = answer.expect("a stalled upload outlived files.idle_timeout").unwrap().unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "stalled/{i}: {err:?}");
        assert!(err.message().contains("data: the client sent no message within 3s (files.idle_timeout)"), "{err:?}");
    }
    let answer = tokio::time::timeout(Duration::from_secs(15), trickle).await;
    let err = answer.expect("a trickling upload outlived files.min_rate").unwrap().unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("(files.min_rate)"), "{err:?}");

    // Their claims are released: no chunk of theirs stays stored, no file appears.
    let report = wait_for_chunks(&client, 0, Duration::from_secs(10)).await;
    assert_eq!(report.chunks, 0, "chunks of timed-out uploads remain: {report:?}");
    for key in ["stalled/1", "trickle"] {
        assert_eq!(client.download(key.as_bytes(), 0, 0).await.err().unwrap().code(), Code::NotFound, "{key}");
    }
    // And every slot is back: max_transfers uploads run at once.
    let data = noise(300 * 1024, 50);
    let uploads = (0..4).map(|i| {
        let (client, data) = (client.clone(), data.clone());
        async move { put(&client, &format!("after/{i}"), &data).await }
    });
    for done in futures::future::join_all(uploads).await {
        done.unwrap();
    }
}

#[tokio::test]
async fn test_download_whose_client_stops_reading_frees_its_slot() {
    let toml = "\n[files]\nchunking = \"fixed\"\nchunk_size = \"256KiB\"\nmax_transfers = 1\nidle_timeout = \"1s\"\n";
    let cluster = Cluster::builder().shards(2).gateway_toml(toml).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    // Far more than the HTTP/2 window and the gateway's queue can hold.
    let data = noise(24 * MIB, 60);
    put(&client, "big", &data).await.unwrap();

    // A reader on its own connection takes the first message, then stops.
    let idle_client = cluster.client().await.unwrap();
    let mut stalled = idle_client.download(b"big", 0, 0).await.unwrap();
    let err = client.download(b"big", 0, 0).await.err().unwrap();
    assert_eq!(err.code(), Code::ResourceExhausted, "the stalled download holds no slot: {err}");

    // Past files.idle_timeout the gateway drops it, and the only slot is free.
    let start = Instant::now();
    loop {
        match get(&client, "big", 0, 0).await {
            Ok(back) => {
                assert!(back == data, "the second download returned other bytes");
                break;
            }
            Err(e) if e.code() == Code::ResourceExhausted && start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the stalled download still holds the slot after {:?}: {e}", start.elapsed()),
        }
    }
    // Reading on, the stalled reader gets the error, not a short file.
    let mut received = 0;
    let err = loop {
        match stalled.next_bytes().await {
            Ok(Some(piece)) => received += piece.len(),
            Ok(None) => panic!("the dropped download ended cleanly after {received} of {} bytes", data.len()),
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(err.to_string().contains("files.idle_timeout"), "{err}");
    assert!(received < data.len());
}

#[tokio::test]
async fn test_data_message_over_16_mib_is_refused_naming_the_limit() {
    let cluster = Cluster::builder().shards(1).start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let mut raw = client.files();
    let data = noise(16 * MIB + 1, 70);
    let messages = vec![header_message("huge"), data_message(data.clone())];
    let err = raw.upload(futures::stream::iter(messages)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("data: a message is "), "{err:?}");
    assert!(err.message().contains("the limit is 16777216 bytes (16 MiB) per message"), "{err:?}");
    assert!(err.message().contains("send the data in smaller messages"), "{err:?}");
    assert_eq!(client.download(b"huge", 0, 0).await.err().unwrap().code(), Code::NotFound);
    // The same bytes in smaller messages are stored.
    put(&client, "huge", &data).await.unwrap();
}
