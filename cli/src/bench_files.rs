//! `omnishard bench files`: upload and download throughput of one large
//! file through the gateway, next to the disk's raw sequential write speed
//! (`dd ... conv=fdatasync` on the same folder) as the physical limit, and
//! KV get latency measured while the transfers run versus idle.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use omnishard_client::{Client, PutOptions, UploadHeader};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use ring::digest::{Context, SHA256};
use serde_json::json;

use crate::args::{BenchFilesArgs, Global};
use crate::bench::EmbeddedCluster;
use crate::bench_graph::{histogram, ms};
use crate::output;

const MIB: u64 = 1 << 20;
/// Keys the KV probes read.
const PROBE_KEYS: u64 = 1_000;

pub async fn run(global: &Global, args: BenchFilesArgs) -> anyhow::Result<()> {
    let size = args.size.as_u64().div_ceil(MIB) * MIB;
    let cluster = EmbeddedCluster::start_configured(args.shards, |config| config.files.window = args.window).await?;
    let dd = dd_write(cluster.dir(), size)?;
    let sha = sha256_speed();
    let client = Client::connect(&cluster.url).await?;
    for i in 0..PROBE_KEYS {
        client.put(format!("probe-{i}").as_bytes(), &[7u8; 100], PutOptions::default()).await?;
    }
    let idle = probe_while(&client, args.probes, async {
        tokio::time::sleep(args.idle).await;
        Ok(())
    })
    .await?
    .0;

    let (upload_kv, upload_time) = probe_while(&client, args.probes, upload(&client, size)).await?;
    let (download_kv, download_time) = probe_while(&client, args.probes, download(&client, size)).await?;
    let usage = cluster.usage();
    cluster.stop().await;

    let mbps = |d: Duration| size as f64 / 1e6 / d.as_secs_f64();
    let report = json!({
        "size_bytes": size,
        "shards": args.shards,
        "dd_mb_s": mbps(dd),
        "upload_mb_s": mbps(upload_time),
        "download_mb_s": mbps(download_time),
        "upload_vs_dd": mbps(upload_time) / mbps(dd),
        "sha256_one_core_mb_s": sha,
        "kv_get_ms": {
            "idle": {"p50": ms(&idle, 0.5), "p99": ms(&idle, 0.99), "n": idle.len()},
            "during_upload": {"p50": ms(&upload_kv, 0.5), "p99": ms(&upload_kv, 0.99), "n": upload_kv.len()},
            "during_download": {"p50": ms(&download_kv, 0.5), "p99": ms(&download_kv, 0.99), "n": download_kv.len()},
        },
        "processes": usage.iter().map(|(name, bytes, cpu)| json!({"process": name, "peak_rss_mib": bytes / MIB, "cpu_s": cpu})).collect::<Vec<_>>(),
    });
    if global.json {
        output::print_json(&report);
        return Ok(());
    }
    println!("file of {} MiB through the gateway over {} shards", size / MIB, args.shards);
    println!("{:<28} {:>10}", "dd conv=fdatasync (MB/s)", format!("{:.0}", mbps(dd)));
    println!(
        "{:<28} {:>10}  ({:.0}% of dd)",
        "upload (MB/s)",
        format!("{:.0}", mbps(upload_time)),
        100.0 * mbps(upload_time) / mbps(dd)
    );
    println!("{:<28} {:>10}", "download (MB/s)", format!("{:.0}", mbps(download_time)));
    println!("{:<28} {:>10}", "SHA-256, one core (MB/s)", format!("{sha:.0}"));
    for (name, h) in
        [("KV get idle", &idle), ("KV get during upload", &upload_kv), ("KV get during download", &download_kv)]
    {
        println!("{name:<28} p50 {:.2} ms  p99 {:.2} ms  ({} gets)", ms(h, 0.5), ms(h, 0.99), h.len());
    }
    for (name, bytes, cpu) in usage {
        println!("{name:<28} peak RSS {:>4} MiB, CPU {cpu:.1} s", bytes / MIB);
    }
    Ok(())
}

/// SHA-256 speed of one core in MB/s: an upload hashes every byte twice on
/// the gateway (chunk addresses and the whole file), so on CPUs without SHA
/// instructions this, not the disk, is the upload's ceiling.
fn sha256_speed() -> f64 {
    let data = vec![0x5au8; 64 * MIB as usize];
    let start = Instant::now();
    let mut context = Context::new(&SHA256);
    for _ in 0..4 {
        context.update(&data);
    }
    std::hint::black_box(context.finish());
    (4 * data.len()) as f64 / 1e6 / start.elapsed().as_secs_f64()
}

/// Seconds `dd` takes to write `size` bytes to `dir` and fdatasync them.
fn dd_write(dir: &Path, size: u64) -> anyhow::Result<Duration> {
    let target = dir.join("dd-probe");
    let start = Instant::now();
    let status = std::process::Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", target.display()))
        .arg("bs=1M")
        .arg(format!("count={}", size / MIB))
        .arg("conv=fdatasync")
        .stderr(std::process::Stdio::null())
        .status()?;
    let took = start.elapsed();
    std::fs::remove_file(&target)?;
    anyhow::ensure!(status.success(), "dd failed: {status}");
    Ok(took)
}

/// Uploads `size` random bytes (generated while streaming); returns the time.
async fn upload(client: &Client, size: u64) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let producer = tokio::task::spawn_blocking(move || {
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..size / MIB {
            let mut piece = vec![0u8; MIB as usize];
            rng.fill_bytes(&mut piece);
            if tx.blocking_send(piece).is_err() {
                break;
            }
        }
    });
    let header = UploadHeader { key: b"bench/large".to_vec(), size: Some(size), ..Default::default() };
    let done = client.upload(header, tokio_stream::wrappers::ReceiverStream::new(rx)).await?;
    producer.await?;
    anyhow::ensure!(done.file.map(|f| f.size) == Some(size), "the upload stored a different size");
    Ok(())
}

/// Downloads the file and checks its SHA-256.
async fn download(client: &Client, size: u64) -> anyhow::Result<()> {
    let mut reader = client.download(b"bench/large", 0, 0).await?;
    let mut hasher = Context::new(&SHA256);
    let mut received = 0u64;
    while let Some(piece) = reader.next_bytes().await? {
        received += piece.len() as u64;
        hasher.update(&piece);
    }
    anyhow::ensure!(received == size, "downloaded {received} of {size} bytes");
    anyhow::ensure!(hasher.finish().as_ref()[..] == reader.info.sha256[..], "the download's SHA-256 differs");
    Ok(())
}

/// Runs `work` while `probes` clients read KV keys one at a time; returns
/// their latency histogram and how long `work` took.
async fn probe_while(
    client: &Client,
    probes: usize,
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<(Histogram<u64>, Duration)> {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..probes)
        .map(|p| {
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let mut h = histogram();
                let mut i = p as u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("probe-{}", i % PROBE_KEYS);
                    let start = Instant::now();
                    if client.get(key.as_bytes()).await.is_ok() {
                        h.record(start.elapsed().as_micros() as u64).ok();
                    }
                    i += 7;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                h
            })
        })
        .collect();
    let start = Instant::now();
    let result = work.await;
    let took = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut all = histogram();
    for task in tasks {
        all.add(task.await?).ok();
    }
    result.map(|()| (all, took))
}
