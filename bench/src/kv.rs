//! The key-value driver interface every system implements, and the YCSB
//! runner that drives any of them with the same clients, operations, key
//! distribution and timing.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use crate::stats::{Measurement, Recorder};
use crate::workload::{key, value, OpGenerator, Operation, Workload};

/// Failures are reported as text: each driver's library has its own error type.
pub type DriverResult<T> = Result<T, String>;

/// A key-value store under test: hands out one connection per client.
pub trait KvSystem: Send + Sync + 'static {
    type Client: KvClient;

    /// How the report names it, with its durability setting.
    fn name(&self) -> String;

    /// A new connection (or in-process handle) for one client task.
    fn client(&self) -> impl Future<Output = DriverResult<Self::Client>> + Send;
}

/// One client's connection. Writes are acknowledged only once durable, in
/// each system's own sense (stated in the report).
pub trait KvClient: Send + 'static {
    /// Whether the key exists (its value is read in full).
    fn read(&mut self, key: &str) -> impl Future<Output = DriverResult<bool>> + Send;
    /// Reads many keys in one call; returns how many exist.
    fn read_batch(&mut self, keys: Vec<String>) -> impl Future<Output = DriverResult<usize>> + Send;
    /// Overwrites an existing key.
    fn write(&mut self, key: &str, value: Vec<u8>) -> impl Future<Output = DriverResult<()>> + Send;
    /// Creates a new key (a store that keeps a separate key index adds to it).
    fn insert(&mut self, key: &str, value: Vec<u8>) -> impl Future<Output = DriverResult<()>> + Send {
        self.write(key, value)
    }
    /// Writes many keys at once (loading).
    fn write_batch(&mut self, records: Vec<(String, Vec<u8>)>) -> impl Future<Output = DriverResult<()>> + Send;
    /// Reads up to `len` records in key order from record `start`'s key on
    /// (see [`key`]); returns how many.
    fn scan(&mut self, start: u64, len: usize) -> impl Future<Output = DriverResult<usize>> + Send;
}

/// How a YCSB run is shaped; the same for every system in one comparison.
#[derive(Debug, Clone, Serialize)]
pub struct YcsbConfig {
    pub records: u64,
    pub value_size: usize,
    pub clients: usize,
    #[serde(with = "secs")]
    pub warmup: Duration,
    #[serde(with = "secs")]
    pub duration: Duration,
    /// Records per batch while loading.
    pub load_batch: usize,
}

mod secs {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

impl Default for YcsbConfig {
    fn default() -> Self {
        YcsbConfig {
            records: 100_000,
            value_size: 1024,
            clients: 32,
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(10),
            load_batch: 500,
        }
    }
}

/// Checks that `system` behaves like a key-value store before it is
/// measured: batch writes land, reads tell present from absent keys, scans
/// run in key order from their start, overwrites stick. Leaves records
/// 0..20 written.
pub async fn check<S: KvSystem>(system: &S) -> DriverResult<()> {
    let mut client = system.client().await?;
    client.write_batch((0..20).map(|n| (key(n), value(n, 0, 100))).collect()).await?;
    if !client.read(&key(7)).await? {
        return Err(format!("{}: record 7 was written but reads as absent", system.name()));
    }
    if client.read("absent-key").await? {
        return Err(format!("{}: a key never written reads as present", system.name()));
    }
    let found = client.read_batch(vec![key(1), "absent-key".into(), key(19), key(2)]).await?;
    if found != 3 {
        return Err(format!("{}: a batch of 3 written keys and 1 absent one found {found}", system.name()));
    }
    client.write(&key(3), value(3, 1, 100)).await?;
    client.insert(&key(20), value(20, 0, 100)).await?;
    let scanned = client.scan(15, 10).await?;
    if scanned != 6 {
        return Err(format!("{}: a scan from record 15 of 0..=20 returned {scanned} records, not 6", system.name()));
    }
    Ok(())
}

/// Loads `config.records` records into `system` with `config.clients` loaders in parallel.
pub async fn load<S: KvSystem>(system: &S, config: &YcsbConfig) -> DriverResult<Duration> {
    let started = Instant::now();
    let loaders = config.clients.clamp(1, 16) as u64;
    let per_loader = config.records.div_ceil(loaders);
    let mut tasks = Vec::new();
    for loader in 0..loaders {
        let mut client = system.client().await?;
        let (from, to) = (loader * per_loader, ((loader + 1) * per_loader).min(config.records));
        let (batch, size) = (config.load_batch.max(1) as u64, config.value_size);
        tasks.push(tokio::spawn(async move {
            let mut next = from;
            while next < to {
                let end = (next + batch).min(to);
                client.write_batch((next..end).map(|n| (key(n), value(n, 0, size))).collect()).await?;
                next = end;
            }
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| format!("loader task failed: {e}"))??;
    }
    Ok(started.elapsed())
}

/// Runs `workload` on already loaded `system`: warm-up, then the measured
/// period; every client issues operations back to back.
pub async fn run<S: KvSystem>(system: &S, workload: Workload, config: &YcsbConfig) -> DriverResult<Measurement> {
    let generator = Arc::new(OpGenerator::new(workload, config.records));
    let started = Instant::now();
    let measure_from = started + config.warmup;
    let deadline = measure_from + config.duration;
    let mut tasks = Vec::new();
    for n in 0..config.clients.max(1) {
        let client = system.client().await?;
        let generator = generator.clone();
        let size = config.value_size;
        tasks.push(tokio::spawn(drive(client, generator, n as u64, size, measure_from, deadline)));
    }
    let mut recorder = Recorder::new();
    for task in tasks {
        recorder.merge(&task.await.map_err(|e| format!("client task failed: {e}"))?);
    }
    let workload = generator.workload();
    Ok(Measurement::of(
        &system.name(),
        workload.describe(),
        &recorder,
        config.duration,
        workload.batch as f64,
        "records",
    ))
}

/// One client: operations until `deadline`, recorded from `measure_from` on.
async fn drive<C: KvClient>(
    mut client: C,
    generator: Arc<OpGenerator>,
    seed: u64,
    size: usize,
    measure_from: Instant,
    deadline: Instant,
) -> Recorder {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9) ^ 0x5eed);
    let mut recorder = Recorder::new();
    let mut version = 1;
    loop {
        let op = generator.next(&mut rng);
        let kind = op.kind();
        let t = Instant::now();
        if t >= deadline {
            break;
        }
        version += 1;
        let ok = execute(&mut client, op, version, size).await;
        if t >= measure_from {
            recorder.record(kind.name(), t.elapsed(), ok);
        }
    }
    recorder
}

async fn execute<C: KvClient>(client: &mut C, op: Operation, version: u64, size: usize) -> bool {
    match op {
        Operation::Read(n) => client.read(&key(n)).await.is_ok(),
        Operation::BatchRead(records) => client.read_batch(records.into_iter().map(key).collect()).await.is_ok(),
        Operation::Update(n) => client.write(&key(n), value(n, version, size)).await.is_ok(),
        Operation::Insert(n) => client.insert(&key(n), value(n, version, size)).await.is_ok(),
        Operation::Scan { start, len } => client.scan(start, len).await.is_ok(),
        Operation::ReadModifyWrite(n) => {
            let k = key(n);
            client.read(&k).await.is_ok() && client.write(&k, value(n, version, size)).await.is_ok()
        }
    }
}
