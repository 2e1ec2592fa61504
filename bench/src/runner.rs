//! Timed runs of pre-generated operations (graph traversals, search
//! queries): every client works through the same list from its own offset,
//! back to back, for a warm-up and then a measured period. Also the
//! parallel loader the drivers share ([`in_parallel`]).

use std::future::Future;
use std::sync::{Arc, Mutex};
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

/// Works through `items` with one task per worker (a connection and what was
/// prepared on it), each taking the next item as soon as it is done with
/// the last; `work` hands the worker back with its result. Returns the
/// first error.
pub async fn in_parallel<W, T, F, Fut>(workers: Vec<W>, items: Vec<T>, work: F) -> DriverResult<()>
where
    W: Send + 'static,
    T: Send + 'static,
    F: Fn(W, T) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = DriverResult<W>> + Send,
{
    let queue = Arc::new(Mutex::new(items));
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut worker| {
            let (queue, work) = (queue.clone(), work.clone());
            tokio::spawn(async move {
                loop {
                    let Some(item) = queue.lock().map_err(|_| "a loader panicked".to_string())?.pop() else {
                        return Ok::<_, String>(());
                    };
                    worker = work(worker, item).await?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| format!("loader task failed: {e}"))??;
    }
    Ok(())
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
    async fn test_in_parallel_handles_every_item_once_and_reports_an_error() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        in_parallel(vec![0u32, 1, 2], (0..50u32).collect(), move |worker, item| {
            let sink = sink.clone();
            async move {
                tokio::task::yield_now().await;
                sink.lock().unwrap().push(item);
                Ok(worker)
            }
        })
        .await
        .unwrap();
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        let failed = in_parallel(vec![(), ()], (0..10u32).collect(), |worker, item| async move {
            if item == 4 {
                return Err(format!("item {item} failed"));
            }
            Ok(worker)
        });
        assert_eq!(failed.await.unwrap_err(), "item 4 failed");
    }

    #[tokio::test]
    async fn test_a_failing_operation_fails_the_run() {
        let error = drive(vec![Counter { fail: Some(3) }], Arc::new((0..5).collect()), "op", timing()).await;
        assert_eq!(error.unwrap_err(), "op: op 3 failed");
    }
}
