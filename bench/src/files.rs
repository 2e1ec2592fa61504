//! The file workloads: uploads and downloads of large files of random
//! bytes through omnishard, against the raw disk under the same folder
//! (`dd`-style: sequential 1 MiB writes, then `fdatasync`; then a
//! sequential read back). Every file has its own content, so nothing
//! deduplicates; every download is checked against the stored SHA-256.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use omnishard_client::{Client, UploadHeader};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use ring::digest::{Context, SHA256};

use crate::kv::DriverResult;
use crate::stats::{Measurement, Recorder};

const MIB: u64 = 1 << 20;

/// The shape of the file workloads; the same for every system in one run.
#[derive(Debug, Clone, Copy)]
pub struct FilesConfig {
    /// Bytes per file (rounded up to whole MiB).
    pub size: u64,
    /// Files written and read, one after another.
    pub files: usize,
}

impl FilesConfig {
    fn mib(&self) -> u64 {
        self.size.div_ceil(MIB).max(1)
    }

    fn bytes(&self) -> u64 {
        self.mib() * MIB
    }
}

/// The `n`-th MiB of file `file`: random, and different for every file.
fn piece(file: usize, n: u64) -> Vec<u8> {
    let mut rng = SmallRng::seed_from_u64((file as u64) << 32 | n);
    let mut piece = vec![0u8; MIB as usize];
    rng.fill_bytes(&mut piece);
    piece
}

/// Transfers of one direction: each one's time, and their sum.
#[derive(Default)]
struct Transfers {
    recorder: Recorder,
    total: Duration,
}

impl Transfers {
    fn record(&mut self, op: &'static str, took: Duration) {
        self.recorder.record(op, took, true);
        self.total += took;
    }
}

/// The write and the read measurement: MB/s over the time spent transferring.
fn measurements(system: &str, config: &FilesConfig, write: Transfers, read: Transfers) -> Vec<Measurement> {
    let mb = config.bytes() as f64 / 1e6;
    [("files-write", "sequential write, durable", write), ("files-read", "sequential read, checked", read)]
        .into_iter()
        .map(|(label, what, transfers)| {
            let workload = format!("{label} ({} files of {} MiB, {what}, 1 client)", config.files, config.mib());
            Measurement::of(system, workload, &transfers.recorder, transfers.total, mb, "MB")
        })
        .collect()
}

/// The disk's limit in `dir`: each file written in 1 MiB blocks and
/// `fdatasync`ed, then read back sequentially and compared.
pub async fn disk(dir: &Path, config: FilesConfig) -> DriverResult<Vec<Measurement>> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let (mut write, mut read) = (Transfers::default(), Transfers::default());
        for file in 0..config.files {
            let path = dir.join(format!("dd-{file}"));
            let t = Instant::now();
            let mut out = std::fs::File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
            for n in 0..config.mib() {
                out.write_all(&piece(file, n)).map_err(|e| format!("writing {}: {e}", path.display()))?;
            }
            out.sync_data().map_err(|e| format!("fdatasync {}: {e}", path.display()))?;
            write.record("write", t.elapsed());
            let t = Instant::now();
            let mut input = std::fs::File::open(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
            let mut buffer = vec![0u8; MIB as usize];
            for n in 0..config.mib() {
                input.read_exact(&mut buffer).map_err(|e| format!("reading {}: {e}", path.display()))?;
                if buffer != piece(file, n) {
                    return Err(format!("{} reads back different bytes", path.display()));
                }
            }
            read.record("read", t.elapsed());
            std::fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
        }
        Ok(measurements("disk (dd-style)", &config, write, read))
    })
    .await
    .map_err(|e| format!("disk task failed: {e}"))?
}

/// Uploads then downloads each file through the gateway `client`.
pub async fn omnishard(client: &Client, config: FilesConfig) -> DriverResult<Vec<Measurement>> {
    let (mut uploads, mut downloads) = (Transfers::default(), Transfers::default());
    for file in 0..config.files {
        let key = format!("bench/file-{file}");
        let t = Instant::now();
        upload(client, &key, file, config).await?;
        uploads.record("upload", t.elapsed());
        let t = Instant::now();
        download(client, &key, config.bytes()).await?;
        downloads.record("download", t.elapsed());
    }
    Ok(measurements("omnishard", &config, uploads, downloads))
}

/// Streams file `file`'s bytes, generated on another thread while they are sent.
async fn upload(client: &Client, key: &str, file: usize, config: FilesConfig) -> DriverResult<()> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let pieces = config.mib();
    let producer = tokio::task::spawn_blocking(move || {
        for n in 0..pieces {
            if tx.blocking_send(piece(file, n)).is_err() {
                break;
            }
        }
    });
    let header = UploadHeader { key: key.as_bytes().to_vec(), size: Some(config.bytes()), ..Default::default() };
    let done = client
        .upload(header, tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|e| format!("uploading {key}: {e}"))?;
    producer.await.map_err(|e| format!("producer failed: {e}"))?;
    match done.file.map(|f| f.size) {
        Some(size) if size == config.bytes() => Ok(()),
        other => Err(format!("uploading {key} stored {other:?} bytes, not {}", config.bytes())),
    }
}

/// Downloads `key` and checks its size and SHA-256.
async fn download(client: &Client, key: &str, size: u64) -> DriverResult<()> {
    let mut reader = client.download(key.as_bytes(), 0, 0).await.map_err(|e| format!("downloading {key}: {e}"))?;
    let mut hasher = Context::new(&SHA256);
    let mut received = 0u64;
    while let Some(piece) = reader.next_bytes().await.map_err(|e| format!("downloading {key}: {e}"))? {
        received += piece.len() as u64;
        hasher.update(&piece);
    }
    if received != size {
        return Err(format!("downloaded {received} of {size} bytes of {key}"));
    }
    if hasher.finish().as_ref()[..] != reader.info.sha256[..] {
        return Err(format!("the download of {key} does not match its SHA-256"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_pieces_differ_between_files_and_repeat_within_one() {
        assert_eq!(piece(0, 0), piece(0, 0));
        assert_ne!(piece(0, 0), piece(1, 0));
        assert_ne!(piece(0, 0), piece(0, 1));
        assert_eq!(piece(3, 2).len(), MIB as usize);
    }

    #[tokio::test]
    async fn test_disk_baseline_writes_reads_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let config = FilesConfig { size: 3 * MIB - 5, files: 2 };
        let results = disk(dir.path(), config).await.unwrap();
        let labels: Vec<&str> = results.iter().map(Measurement::label).collect();
        assert_eq!(labels, ["files-write", "files-read"]);
        for m in &results {
            assert_eq!((m.ops[0].ops, m.unit.as_str()), (2, "MB"));
            assert!(m.records_per_sec > 0.0, "{m:?}");
            // Each file moved 3 MiB.
            assert!((m.records_per_sec / m.ops_per_sec - 3.0 * 1.048576).abs() < 1e-9, "{m:?}");
            assert_eq!(m.ops[0].op, if m.label() == "files-write" { "write" } else { "read" });
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
