//! Forms batches from a queue of requests bound for one shard, so that
//! concurrent point operations share one call: the gateway's coalescing and
//! the SDK's direct mode both use it.
//!
//! The task takes the first waiting request, waits for a free in-flight slot,
//! then gathers whatever else queued up meanwhile — up to `max_batch`,
//! optionally waiting `window` for more — and hands the batch to the sender
//! on a task of its own. Under light load a batch is one request and adds no
//! delay; under heavy load batches grow, so throughput is no longer capped by
//! per-call overhead.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// How batches are formed.
#[derive(Clone)]
pub struct Batching {
    max_batch: usize,
    window: Duration,
    inflight: Arc<Semaphore>,
}

impl Batching {
    /// Batches of at most `max_batch` (at least 1), waiting up to `window`
    /// for company, with at most `inflight` (at least 1) batches in flight.
    pub fn new(max_batch: usize, window: Duration, inflight: usize) -> Batching {
        Batching { max_batch: max_batch.max(1), window, inflight: Arc::new(Semaphore::new(inflight.max(1))) }
    }

    /// Forms batches from `queue` until it closes, handing each to `send`
    /// on its own task.
    pub async fn run<T, F, Fut>(self, mut queue: mpsc::Receiver<T>, send: F)
    where
        T: Send + 'static,
        F: Fn(Vec<T>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        while let Some(first) = queue.recv().await {
            // Waiting for a slot is what lets a batch fill up under load.
            let Ok(permit) = self.inflight.clone().acquire_owned().await else { return };
            let batch = self.gather(first, &mut queue).await;
            let call = send(batch);
            tokio::spawn(release_after(call, permit));
        }
    }

    async fn gather<T>(&self, first: T, queue: &mut mpsc::Receiver<T>) -> Vec<T> {
        let mut batch = vec![first];
        while batch.len() < self.max_batch {
            match queue.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) if self.window.is_zero() => break,
                Err(_) => match tokio::time::timeout(self.window, queue.recv()).await {
                    Ok(Some(item)) => batch.push(item),
                    _ => break,
                },
            }
        }
        batch
    }
}

async fn release_after(call: impl Future<Output = ()>, permit: OwnedSemaphorePermit) {
    call.await;
    drop(permit);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn test_queued_requests_share_a_batch_while_the_slot_is_busy() {
        let (tx, rx) = mpsc::channel(100);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (release, hold) = tokio::sync::watch::channel(false);
        let sink = seen.clone();
        tokio::spawn(Batching::new(3, Duration::ZERO, 1).run(rx, move |batch: Vec<u32>| {
            let (sink, mut hold) = (sink.clone(), hold.clone());
            async move {
                sink.lock().unwrap().push(batch);
                // The first batch holds the only slot until released.
                let _ = hold.wait_for(|released| *released).await;
            }
        }));
        tx.send(1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        for n in 2..=6 {
            tx.send(n).await.unwrap();
        }
        release.send(true).unwrap();
        drop(tx);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*seen.lock().unwrap(), vec![vec![1], vec![2, 3, 4], vec![5, 6]]);
    }
}
