//! `omnishard bench failover`: what replication costs and how fast it heals,
//! on an embedded shard of three replicas (separate processes) behind a gateway.
//!
//! * Failover: a writer puts keys back to back; the leader is killed with
//!   SIGKILL; the time from the kill to the writer's next acknowledged put
//!   (detection + election + the gateway finding the new leader). Repeated
//!   `--rounds` times, the killed replica restarted in between.
//! * Catch-up: a follower is killed and its folder wiped; `--catch-up-mb` of
//!   values are written; the follower is restarted and timed until it has
//!   applied everything (snapshot, then log): MB written / seconds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use omnishard_client::Client;
use omnishard_proto::v1::shard_raft_service_client::ShardRaftServiceClient;
use omnishard_proto::v1::{RaftStatusRequest, RaftStatusResponse};
use serde_json::json;

use crate::args::{BenchFailoverArgs, Global};
use crate::bench::{EmbeddedCluster, Replica};
use crate::output;

pub async fn run(global: &Global, args: BenchFailoverArgs) -> anyhow::Result<()> {
    let mut cluster = EmbeddedCluster::start_replicated(1, 3, |_| {}).await?;
    let result = measure(&mut cluster, &args).await;
    cluster.stop().await;
    let (failovers, catch_up) = result?;
    let secs: Vec<f64> = failovers.iter().map(Duration::as_secs_f64).collect();
    let rate = args.catch_up_mb as f64 / catch_up.as_secs_f64();
    if global.json {
        output::print_json(&json!({"kill_to_write_seconds": secs, "catch_up_seconds": catch_up.as_secs_f64(),
                                   "catch_up_mb": args.catch_up_mb, "catch_up_mb_per_s": rate}));
    } else {
        for (i, s) in secs.iter().enumerate() {
            println!("failover {}: leader killed -> first acknowledged write {:.2} s", i + 1, s);
        }
        println!(
            "catch-up: wiped replica applied {} MB in {:.2} s ({rate:.1} MB/s)",
            args.catch_up_mb,
            catch_up.as_secs_f64()
        );
    }
    Ok(())
}

async fn measure(cluster: &mut EmbeddedCluster, args: &BenchFailoverArgs) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let client = Client::connect(&cluster.url).await?;
    let mut failovers = Vec::new();
    for _ in 0..args.rounds.max(1) {
        let leader = leader_of(&cluster.groups[0]).await?;
        let writer = Writer::start(client.clone());
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.groups[0][leader].kill().await;
        let killed_at = Instant::now();
        failovers.push(writer.first_success_after(killed_at, Duration::from_secs(30)).await?);
        writer.stop();
        cluster.groups[0][leader].start(true).await?;
        wait_caught_up(&cluster.groups[0], 3).await?;
    }
    let leader = leader_of(&cluster.groups[0]).await?;
    let follower = (leader + 1) % 3;
    cluster.groups[0][follower].kill().await;
    std::fs::remove_dir_all(&cluster.groups[0][follower].data).context("wiping the follower")?;
    write_bulk(&client, args.catch_up_mb, args.value_size).await?;
    let started = Instant::now();
    cluster.groups[0][follower].start(true).await?;
    wait_caught_up(&cluster.groups[0], 3).await?;
    Ok((failovers, started.elapsed()))
}

/// Puts back to back, remembering when each acknowledged one was sent and answered.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(Instant, Instant)>>>,
}

impl Writer {
    fn start(client: Client) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                n += 1;
                let sent = Instant::now();
                if client.put(format!("failover-{}", n % 1000).as_bytes(), b"x", Default::default()).await.is_ok() {
                    a.lock().unwrap_or_else(|e| e.into_inner()).push((sent, Instant::now()));
                }
            }
        });
        Writer { stop, acked }
    }

    /// Time from `after` to the answer of the first acknowledged put sent after it.
    async fn first_success_after(&self, after: Instant, timeout: Duration) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            let first = {
                let acked = self.acked.lock().unwrap_or_else(|e| e.into_inner());
                acked.iter().find(|(sent, _)| *sent > after).map(|(_, answered)| *answered)
            };
            if let Some(t) = first {
                return Ok(t - after);
            }
            if Instant::now() > deadline {
                bail!("no write succeeded within {timeout:?} of the leader kill");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Writes `mb` MB of values of `size` bytes, 16 writers at once.
async fn write_bulk(client: &Client, mb: u64, size: usize) -> anyhow::Result<()> {
    let count = (mb * 1_000_000).div_ceil(size.max(1) as u64);
    let value = Arc::new(vec![7u8; size]);
    let mut tasks = Vec::new();
    for w in 0..16u64 {
        let (client, value) = (client.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..count).step_by(16) {
                client.put(format!("bulk-{i}").as_bytes(), &value, Default::default()).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

async fn status(addr: &str) -> anyhow::Result<RaftStatusResponse> {
    let mut client = ShardRaftServiceClient::connect(format!("http://{addr}")).await?;
    Ok(client.status(RaftStatusRequest {}).await?.into_inner())
}

/// The index of the replica that leads (waiting up to 30 s for one).
async fn leader_of(group: &[Replica]) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (i, replica) in group.iter().enumerate() {
            if replica.child.is_some() && status(&replica.addr).await.is_ok_and(|s| s.role == "leader") {
                return Ok(i);
            }
        }
        if Instant::now() > deadline {
            bail!("no leader after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the first `n` replicas applied as far as the leader.
async fn wait_caught_up(group: &[Replica], n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let leader = leader_of(group).await?;
        let target = status(&group[leader].addr).await?.applied_index;
        let mut behind = false;
        for replica in &group[..n] {
            behind |= status(&replica.addr).await.map(|s| s.applied_index < target).unwrap_or(true);
        }
        if !behind {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("replicas did not catch up in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
