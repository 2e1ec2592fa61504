//! Request coalescing: concurrent point reads and single-key writes bound for
//! the same shard share one shard call.
//!
//! Each shard gets two queues (reads, writes) and a task per queue that forms
//! batches ([`omnishard_common::batching`]: `coalesce_inflight` calls in
//! flight per shard, up to `coalesce_max_batch` requests, optionally waiting
//! `coalesce_window`) and sends each as one `Read` or `Apply`. Every write
//! stays its own transaction on the shard, with its own result.

use std::sync::Arc;

use omnishard_common::batching::Batching;
use omnishard_common::read_mode::ReadMode;
use omnishard_proto::v1::{ShardApplyRequest, ShardReadRequest, ShardTxn, ShardValue, TxnOutcome};
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::cluster::ShardHandle;
use crate::config::GatewaySettings;
use crate::error::{Error, Result};

/// Queue length per shard and kind before callers wait.
const QUEUE_LEN: usize = 8192;

struct PendingRead {
    namespace: String,
    key: Vec<u8>,
    reply: oneshot::Sender<Result<ShardValue>>,
    /// The request's span: a batch is traced inside its first request's trace.
    span: Span,
}

struct PendingWrite {
    txn: ShardTxn,
    reply: oneshot::Sender<Result<TxnOutcome>>,
    span: Span,
}

/// The coalescing queues of one shard.
#[derive(Clone)]
pub struct Coalescer {
    reads: mpsc::Sender<PendingRead>,
    writes: mpsc::Sender<PendingWrite>,
    shard_id: Arc<str>,
}

impl Coalescer {
    /// Starts the batching tasks for `shard`.
    pub fn start(shard: ShardHandle, settings: &GatewaySettings) -> Coalescer {
        let (reads, read_queue) = mpsc::channel(QUEUE_LEN);
        let (writes, write_queue) = mpsc::channel(QUEUE_LEN);
        let batching = Batching::new(settings.coalesce_max_batch, settings.coalesce_window, settings.coalesce_inflight);
        let read_shard = shard.clone();
        tokio::spawn(batching.clone().run(read_queue, move |batch| send_reads(read_shard.clone(), batch)));
        let write_shard = shard.clone();
        tokio::spawn(batching.run(write_queue, move |batch| send_writes(write_shard.clone(), batch)));
        Coalescer { reads, writes, shard_id: Arc::from(shard.client.id()) }
    }

    /// Reads one key through the next read batch.
    pub async fn read(&self, namespace: String, key: Vec<u8>) -> Result<ShardValue> {
        let (reply, answer) = oneshot::channel();
        self.reads
            .send(PendingRead { namespace, key, reply, span: Span::current() })
            .await
            .map_err(|_| self.closed())?;
        answer.await.map_err(|_| self.closed())?
    }

    /// Applies one transaction through the next write batch.
    pub async fn apply(&self, txn: ShardTxn) -> Result<TxnOutcome> {
        let (reply, answer) = oneshot::channel();
        self.writes.send(PendingWrite { txn, reply, span: Span::current() }).await.map_err(|_| self.closed())?;
        answer.await.map_err(|_| self.closed())?
    }

    fn closed(&self) -> Error {
        Error::ShardUnavailable {
            shard_id: self.shard_id.to_string(),
            addr: String::new(),
            reason: "gateway is shutting down".into(),
        }
    }
}

/// The span a batch's shard call runs in: its first request's span (the
/// others see their wait in their own span's duration). The batch size is
/// recorded on it rather than in a span of its own, which would cost as
/// much again as the request's span.
fn batch_span(first: Option<&Span>, size: usize) -> Span {
    let span = first.cloned().unwrap_or_else(Span::none);
    span.set_attribute("coalesced.batch_size", size as i64);
    span
}

/// One `Read` per namespace present in the batch, answers fanned back out.
async fn send_reads(shard: ShardHandle, batch: Vec<PendingRead>) {
    let span = batch_span(batch.first().map(|p| &p.span), batch.len());
    send_reads_in_span(shard, batch).instrument(span).await
}

async fn send_reads_in_span(shard: ShardHandle, batch: Vec<PendingRead>) {
    let mut by_namespace: Vec<(String, Vec<PendingRead>)> = Vec::new();
    for item in batch {
        match by_namespace.iter_mut().find(|(ns, _)| *ns == item.namespace) {
            Some((_, items)) => items.push(item),
            None => by_namespace.push((item.namespace.clone(), vec![item])),
        }
    }
    let calls = by_namespace.into_iter().map(|(namespace, items)| read_namespace(&shard, namespace, items));
    futures::future::join_all(calls).await;
}

async fn read_namespace(shard: &ShardHandle, namespace: String, mut items: Vec<PendingRead>) {
    let epoch = shard.epoch();
    // A shard answers a prefix of the keys when their values reach its page
    // byte budget: those are answered, and the rest go again.
    while !items.is_empty() {
        let keys: Vec<Vec<u8>> = items.iter().map(|i| i.key.clone()).collect();
        let result = shard
            .call(|client| {
                let req = ShardReadRequest { epoch, namespace: namespace.clone(), keys: keys.clone() };
                async move { client.read(req, ReadMode::Linearizable).await }
            })
            .await;
        match result {
            Ok(response) if !response.values.is_empty() && response.values.len() <= items.len() => {
                let rest = items.split_off(response.values.len());
                for (item, value) in items.into_iter().zip(response.values) {
                    let _ = item.reply.send(Ok(value));
                }
                items = rest;
            }
            Ok(response) => return fail_all(items, protocol_error(shard, items_len_msg(response.values.len()))),
            Err(e) => return fail_all(items, e),
        }
    }
}

/// One `Apply` carrying every transaction of the batch.
async fn send_writes(shard: ShardHandle, batch: Vec<PendingWrite>) {
    let span = batch_span(batch.first().map(|p| &p.span), batch.len());
    let (txns, replies): (Vec<ShardTxn>, Vec<_>) = batch.into_iter().map(|p| (p.txn, p.reply)).unzip();
    apply_batch(shard, txns, replies).instrument(span).await
}

async fn apply_batch(shard: ShardHandle, txns: Vec<ShardTxn>, replies: Vec<oneshot::Sender<Result<TxnOutcome>>>) {
    let epoch = shard.epoch();
    let result = shard
        .call(|client| {
            let req = ShardApplyRequest { epoch, txns: txns.clone() };
            async move { client.apply(req).await }
        })
        .await;
    match result {
        Ok(response) if response.outcomes.len() == replies.len() => {
            for (reply, outcome) in replies.into_iter().zip(response.outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Ok(response) => {
            let e = protocol_error(&shard, items_len_msg(response.outcomes.len()));
            replies.into_iter().for_each(|r| drop(r.send(Err(e.clone()))));
        }
        Err(e) => replies.into_iter().for_each(|r| drop(r.send(Err(e.clone())))),
    }
}

fn fail_all(items: Vec<PendingRead>, e: Error) {
    for item in items {
        let _ = item.reply.send(Err(e.clone()));
    }
}

fn items_len_msg(n: usize) -> String {
    format!("shard answered with {n} results for a different number of requests")
}

fn protocol_error(shard: &ShardHandle, message: String) -> Error {
    Error::Shard { shard_id: shard.client.id().to_string(), code: tonic::Code::Internal, message }
}
