//! Timed runs of pre-generated operations (graph traversals, search
//! queries): every client works through the same list from its own offset,
//! back to back, for a warm-up and then a measured period.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::kv::DriverResult;
use crate::stats::Recorder;

/// One client connection that can run operations of type `Op`.
pub trait OpClient: Send + 'static {
    type Op: Send + Sync + 'static;

    /// Runs `op`; an error is counted, not timed.
    fn execute(&mut self, op: &Self::Op) -> impl Future<Output = DriverResult<()>> + Send;
}

/// How long a timed run warms up and then measures.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub duration: Duration,
}

/// Runs `ops` from every client in `clients` until the measured period
/// ends; latencies are recorded under `name`. Returns them with the first
/// error seen (if any), so a failing system is reported, not silently slow.
pub async fn drive<C: OpClient>(
    clients: Vec<C>,
    ops: Arc<Vec<C::Op>>,
    name: &'static str,
    timing: Timing,
) -> DriverResult<Recorder> {
    if ops.is_empty() {
        return Err(format!("{name}: no operations to run"));
    }
    let measure_from = Instant::now() + timing.warmup;
    let deadline = measure_from + timing.duration;
    let stride = (ops.len() / clients.len().max(1)).max(1);
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(n, mut client)| {
            let ops = ops.clone();
            tokio::spawn(async move {
                let mut recorder = Recorder::new();
                let mut first_error = None;
                let mut i = n * stride;
                loop {
                    let t = Instant::now();
                    if t >= deadline {
                        break;
                    }
                    let result = client.execute(&ops[i % ops.len()]).await;
                    if t >= measure_from {
                        recorder.record(name, t.elapsed(), result.is_ok());
                    }
                    if let Err(e) = result {
                        first_error.get_or_insert(e);
                    }
                    i += 1;
                }
                (recorder, first_error)
            })
        })
        .collect();
    let mut all = Recorder::new();
    let mut first_error = None;
    for task in tasks {
        let (recorder, error) = task.await.map_err(|e| format!("{name}: client task failed: {e}"))?;
        all.merge(&recorder);
        first_error = first_error.or(error);
    }
    match first_error {
        Some(e) => Err(format!("{name}: {e}")),
        None => Ok(all),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Succeeds on every op but `fail`.
    struct Counter {
        fail: Option<u32>,
    }

    impl OpClient for Counter {
        type Op = u32;

        async fn execute(&mut self, op: &u32) -> DriverResult<()> {
            tokio::task::yield_now().await;
            if Some(*op) == self.fail {
                return Err(format!("op {op} failed"));
            }
            Ok(())
        }
    }

    fn timing() -> Timing {
        Timing { warmup: Duration::from_millis(10), duration: Duration::from_millis(50) }
    }

    #[tokio::test]
    async fn test_every_client_records_its_operations() {
        let clients = vec![Counter { fail: None }, Counter { fail: None }];
        let recorder = drive(clients, Arc::new((0..10).collect()), "op", timing()).await.unwrap();
        assert!(recorder.total_ops() > 10, "{}", recorder.total_ops());
        assert_eq!(recorder.summarize(Duration::from_secs(1))[0].op, "op");
    }

    #[tokio::test]
    async fn test_a_failing_operation_fails_the_run() {
        let error = drive(vec![Counter { fail: Some(3) }], Arc::new((0..5).collect()), "op", timing()).await;
        assert_eq!(error.unwrap_err(), "op: op 3 failed");
    }
}
