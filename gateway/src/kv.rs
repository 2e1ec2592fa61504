//! Key-value operations of the gateway: validate, route by the ring, call
//! the owning shards (coalesced or directly, in parallel), merge, answer.

use std::collections::BTreeMap;
use std::time::Duration;

use omnishard_common::namespace;
use omnishard_common::read_mode::ReadMode;
use omnishard_proto::v1::{
    shard_op, KeyValue, ShardDelete, ShardOp, ShardPut, ShardReadRequest, ShardScanRequest, ShardTxn, ShardValue,
    TxnOutcome,
};

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::live::PartsAttempt;

/// Longest accepted TTL: 100 years.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// One write of a [`Cluster::write`] batch.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    Put { key: Vec<u8>, value: Vec<u8>, ttl: Option<Duration>, expected_version: Option<u64> },
    Delete { key: Vec<u8>, expected_version: Option<u64> },
}

impl WriteOp {
    fn key(&self) -> &[u8] {
        match self {
            WriteOp::Put { key, .. } | WriteOp::Delete { key, .. } => key,
        }
    }
}

/// Where a write landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub shard_id: String,
    /// Version of the written value (the shard sequence of its transaction).
    pub version: u64,
    pub seq: u64,
    /// For deletes: whether the key existed.
    pub existed: bool,
}

/// One answer of [`Cluster::batch_get`]: the values of the first
/// `values.len()` keys, and whether that is fewer than were asked.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPage {
    pub values: Vec<Option<KeyValue>>,
    pub truncated: bool,
}

/// One page of a scan.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanPage {
    pub entries: Vec<KeyValue>,
    pub next_cursor: Vec<u8>,
}

impl Cluster {
    /// Reads one key; `NotFound` when absent or expired.
    pub async fn get(&self, ns: &str, key: Vec<u8>, mode: ReadMode) -> Result<KeyValue> {
        let ns = namespace::resolve(ns)?;
        self.limits.check_key(&key)?;
        let shard = self.ring.owner_index(ns, &key);
        let value = self.with_read_retries(|| self.read_one(shard, ns, key.clone(), mode)).await?;
        if !value.found {
            return Err(Error::NotFound { what: format!("key {:?}", show(&key)) });
        }
        Ok(KeyValue { key, value: value.value, version: value.version, expires_at_ms: value.expires_at_ms })
    }

    /// Reads many keys; the answer is in request order, absent keys as
    /// `None`. It covers every key, or — when the values reach the page
    /// byte budget (`limits.max_page_bytes`, on each shard and here) — the
    /// first ones only, with `truncated` set: the caller asks again for the rest.
    pub async fn batch_get(&self, ns: &str, keys: Vec<Vec<u8>>, mode: ReadMode) -> Result<BatchPage> {
        let ns = namespace::resolve(ns)?;
        self.limits.check_batch("keys", keys.len())?;
        for key in &keys {
            self.limits.check_key(key)?;
        }
        let groups = self.group_by_shard(ns, keys.iter().map(Vec::as_slice));
        let calls = groups.into_iter().map(|(shard, indexes)| {
            let shard_keys: Vec<Vec<u8>> = indexes.iter().map(|&i| keys[i].clone()).collect();
            async move {
                let values = self.with_read_retries(|| self.read_many(shard, ns, shard_keys.clone(), mode)).await?;
                Ok::<_, Error>((indexes, values))
            }
        });
        let mut out: Vec<Option<KeyValue>> = vec![None; keys.len()];
        // Keys from `answered` on were not read by some shard (its budget ran out).
        let mut answered = keys.len();
        for result in futures::future::join_all(calls).await {
            let (indexes, values) = result?;
            if let Some(&first_unread) = indexes.get(values.len()) {
                answered = answered.min(first_unread);
            }
            for (i, v) in indexes.into_iter().zip(values) {
                if v.found {
                    out[i] = Some(KeyValue {
                        key: keys[i].clone(),
                        value: v.value,
                        version: v.version,
                        expires_at_ms: v.expires_at_ms,
                    });
                }
            }
        }
        // The gateway's own budget: the whole answer, not each shard's part.
        let mut bytes = 0usize;
        let within = out[..answered]
            .iter()
            .position(|kv| {
                bytes += kv.as_ref().map_or(0, |kv| kv.value.len());
                bytes > self.limits.max_page_bytes
            })
            .map_or(answered, |over| over.max(1));
        out.truncate(within);
        Ok(BatchPage { truncated: out.len() < keys.len(), values: out })
    }

    /// Writes one key.
    pub async fn put(
        &self,
        ns: &str,
        key: Vec<u8>,
        value: Vec<u8>,
        ttl: Option<Duration>,
        expected_version: Option<u64>,
    ) -> Result<Written> {
        let mut written = self.write(ns, vec![WriteOp::Put { key, value, ttl, expected_version }]).await?;
        Ok(written.remove(0))
    }

    /// Deletes one key; `existed` says whether it was there.
    pub async fn delete(&self, ns: &str, key: Vec<u8>, expected_version: Option<u64>) -> Result<Written> {
        let mut written = self.write(ns, vec![WriteOp::Delete { key, expected_version }]).await?;
        Ok(written.remove(0))
    }

    /// Applies many writes: one transaction per owning shard, all shards in
    /// parallel. Each shard's part commits entirely or not at all; when
    /// every key shares one `{tag}` there is one part, so the whole batch is
    /// atomic. Results come back in request order.
    pub async fn write(&self, ns: &str, ops: Vec<WriteOp>) -> Result<Vec<Written>> {
        self.write_attempt(ns, &ops).await?.finish()
    }

    /// Sends each shard its part of `ops` once and reports what each part
    /// did; an error only for input that no shard was sent.
    pub(crate) async fn write_attempt(&self, ns: &str, ops: &[WriteOp]) -> Result<WriteAttempt> {
        let ns = namespace::resolve(ns)?;
        self.limits.check_batch("ops", ops.len())?;
        let now_ms = now_ms();
        let mut shard_ops = Vec::with_capacity(ops.len());
        for op in ops {
            shard_ops.push(self.to_shard_op(op, now_ms)?);
        }
        let groups = self.group_by_shard(ns, ops.iter().map(WriteOp::key));
        let calls = groups.into_iter().map(|(shard, indexes)| {
            let txn =
                ShardTxn { namespace: ns.to_string(), ops: indexes.iter().map(|&i| shard_ops[i].clone()).collect() };
            async move { (shard, indexes, self.apply_txn(shard, txn).await) }
        });
        let mut attempt = WriteAttempt::new(ops.len());
        for (shard, indexes, result) in futures::future::join_all(calls).await {
            let shard_id = self.shards[shard].client.id().to_string();
            match result {
                Ok(outcome) => {
                    for (n, i) in indexes.into_iter().enumerate() {
                        let existed = outcome.existed.get(n).copied().unwrap_or(false);
                        let version = if matches!(ops[i], WriteOp::Put { .. }) { outcome.seq } else { 0 };
                        let written = Written { shard_id: shard_id.clone(), version, seq: outcome.seq, existed };
                        attempt.results[i] = Some(written);
                    }
                    attempt.committed.push(shard_id);
                }
                Err(e) => attempt.failures.push(e),
            }
        }
        Ok(attempt)
    }

    /// One page of keys starting with `prefix`, merged across every shard in
    /// key order. Each shard returns its first `limit` matches after the
    /// cursor, or fewer when it reaches its byte budget; the page is the
    /// first `limit` of their union up to the smallest last key of a shard
    /// that has more (see DESIGN.md, "Gateway → shard calls").
    pub async fn scan(&self, ns: &str, prefix: Vec<u8>, cursor: &[u8], limit: u32) -> Result<ScanPage> {
        let ns = namespace::resolve(ns)?;
        let limit = self.limits.scan_page(limit)?;
        self.limits.check_key_len("prefix", prefix.len())?;
        let start_after = decode_cursor(cursor)?;
        let calls = (0..self.shards.len()).map(|shard| {
            let req = ShardScanRequest {
                epoch: self.epoch(),
                namespace: ns.to_string(),
                prefix: prefix.clone(),
                start_after: start_after.clone(),
                limit: limit as u32,
            };
            self.with_read_retries(move || {
                let req = req.clone();
                async move {
                    self.shards[shard]
                        .call(|c| {
                            let req = req.clone();
                            async move { c.scan(req).await }
                        })
                        .await
                }
            })
        });
        let mut merged = BTreeMap::new();
        let mut more = false;
        // A shard with more to give vouches only for keys up to its last
        // one (a page may end early at its byte budget): the merged page
        // stops at the smallest such key, or keys of that shard between it
        // and the next page's start would be skipped.
        let mut bound: Option<Vec<u8>> = None;
        for result in futures::future::join_all(calls).await {
            let page = result?;
            more |= page.more;
            if let (true, Some(last)) = (page.more, page.entries.last()) {
                if bound.as_ref().is_none_or(|b| last.key < *b) {
                    bound = Some(last.key.clone());
                }
            }
            for e in page.entries {
                merged.insert(
                    e.key.clone(),
                    KeyValue { key: e.key, value: e.value, version: e.version, expires_at_ms: e.expires_at_ms },
                );
            }
        }
        if let Some(bound) = &bound {
            let beyond = merged.split_off(bound.as_slice()).into_iter();
            // `split_off` moved the bound itself; it belongs to the page.
            for (key, kv) in beyond.take(1).filter(|(key, _)| key == bound) {
                merged.insert(key, kv);
            }
        }
        more |= merged.len() > limit;
        let mut bytes = 0usize;
        let mut entries: Vec<KeyValue> = Vec::with_capacity(merged.len().min(limit));
        for kv in merged.into_values().take(limit) {
            // The gateway's own byte budget for the whole page.
            if !entries.is_empty() && bytes + kv.value.len() > self.limits.max_page_bytes {
                more = true;
                break;
            }
            bytes += kv.value.len();
            entries.push(kv);
        }
        let next_cursor = match entries.last() {
            Some(last) if more => encode_cursor(&last.key),
            _ => Vec::new(),
        };
        Ok(ScanPage { entries, next_cursor })
    }

    fn to_shard_op(&self, op: &WriteOp, now_ms: u64) -> Result<ShardOp> {
        self.limits.check_key(op.key())?;
        let op = match op {
            WriteOp::Put { key, value, ttl, expected_version } => {
                self.limits.check_value(value)?;
                let expires_at_ms = match ttl {
                    None => 0,
                    Some(ttl) => now_ms + check_ttl(*ttl)?.as_millis() as u64,
                };
                shard_op::Op::Put(ShardPut {
                    key: key.clone(),
                    value: value.clone(),
                    expires_at_ms,
                    expected_version: *expected_version,
                })
            }
            WriteOp::Delete { key, expected_version } => {
                shard_op::Op::Delete(ShardDelete { key: key.clone(), expected_version: *expected_version })
            }
        };
        Ok(ShardOp { op: Some(op) })
    }

    /// Groups key positions by owning shard, keeping request order inside a group.
    fn group_by_shard<'a>(&self, ns: &str, keys: impl Iterator<Item = &'a [u8]>) -> BTreeMap<usize, Vec<usize>> {
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, key) in keys.enumerate() {
            groups.entry(self.ring.owner_index(ns, key)).or_default().push(i);
        }
        groups
    }

    async fn read_one(&self, shard: usize, ns: &str, key: Vec<u8>, mode: ReadMode) -> Result<ShardValue> {
        match &self.coalescers {
            // Coalesced reads share one leader read; follower reads go alone.
            Some(coalescers) if mode == ReadMode::Linearizable => coalescers[shard].read(ns.to_string(), key).await,
            _ => Ok(self.read_many(shard, ns, vec![key], mode).await?.into_iter().next().unwrap_or_default()),
        }
    }

    async fn read_many(&self, shard: usize, ns: &str, keys: Vec<Vec<u8>>, mode: ReadMode) -> Result<Vec<ShardValue>> {
        let handle = &self.shards[shard];
        let req = ShardReadRequest { epoch: handle.epoch(), namespace: ns.to_string(), keys };
        let values = handle
            .call(|c| {
                let req = req.clone();
                async move { c.read(req, mode).await }
            })
            .await?
            .values;
        Ok(values)
    }

    /// Sends one transaction to its shard and turns a failed outcome into an error.
    async fn apply_txn(&self, shard: usize, txn: ShardTxn) -> Result<TxnOutcome> {
        let handle = &self.shards[shard];
        let outcome = match &self.coalescers {
            Some(coalescers) => coalescers[shard].apply(txn).await?,
            None => {
                let req = omnishard_proto::v1::ShardApplyRequest { epoch: handle.epoch(), txns: vec![txn] };
                let mut outcomes = handle
                    .call(|c| {
                        let req = req.clone();
                        async move { c.apply(req).await }
                    })
                    .await?
                    .outcomes;
                outcomes.pop().unwrap_or_default()
            }
        };
        if outcome.code == 0 {
            return Ok(outcome);
        }
        let code = tonic::Code::from_i32(outcome.code);
        let mut status = tonic::Status::new(code, outcome.message);
        match outcome.rejection.parse() {
            // A typed rejection of this transaction alone (a fenced moving key).
            Ok(kind) if !outcome.rejection.is_empty() => {
                status.metadata_mut().insert(omnishard_common::rejection::REJECTION_HEADER, kind);
                status.metadata_mut().insert(omnishard_common::rejection::SHARD_EPOCH_HEADER, handle.epoch().into());
            }
            _ => {}
        }
        Err(handle.client.error(status))
    }

    /// Retries an idempotent read while the error is transient.
    pub(crate) async fn with_read_retries<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Err(e) if e.is_retryable() && attempt < self.settings.read_retries => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                }
                other => return other,
            }
        }
    }
}

/// What one pass of a batch write did.
pub(crate) type WriteAttempt = PartsAttempt<Written>;

impl WriteAttempt {
    /// Every result, or the failure; when some parts committed and another
    /// failed, a [`Error::PartialWrite`] naming the shards that committed.
    pub fn finish(mut self) -> Result<Vec<Written>> {
        match self.take_failure() {
            None => Ok(self.results.into_iter().flatten().collect()),
            Some(e) => Err(partial(self.committed, e)),
        }
    }
}

/// `failed` alone when nothing committed, else a partial write naming what did.
pub(crate) fn partial(mut committed: Vec<String>, failed: Error) -> Error {
    if committed.is_empty() {
        return failed;
    }
    committed.sort();
    committed.dedup();
    Error::PartialWrite { committed, failed: Box::new(failed) }
}

/// A TTL must be positive and at most [`MAX_TTL`].
pub fn check_ttl(ttl: Duration) -> Result<Duration> {
    if ttl.is_zero() {
        return Err(omnishard_common::Error::invalid("ttl", "must be positive; omit it for no expiry").into());
    }
    if ttl > MAX_TTL {
        return Err(omnishard_common::Error::invalid(
            "ttl",
            format!("is {}s; the limit is {}s (100 years)", ttl.as_secs(), MAX_TTL.as_secs()),
        )
        .into());
    }
    Ok(ttl)
}

pub(crate) fn encode_cursor(last_key: &[u8]) -> Vec<u8> {
    omnishard_proto::scan_cursor::after(last_key)
}

pub(crate) fn decode_cursor(cursor: &[u8]) -> Result<Vec<u8>> {
    match omnishard_proto::scan_cursor::decode(cursor) {
        Some(key) => Ok(key.to_vec()),
        None => Err(omnishard_common::Error::invalid("cursor", "is not a cursor returned by a previous scan").into()),
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub(crate) fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(&key[..key.len().min(128)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cursor_roundtrip_and_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(b"k1")).unwrap(), b"k1");
        assert!(decode_cursor(b"").unwrap().is_empty());
        assert!(decode_cursor(b"\x07junk").unwrap_err().to_string().starts_with("cursor:"));
    }

    #[test]
    fn test_ttl_bounds() {
        assert!(check_ttl(Duration::ZERO).is_err());
        assert!(check_ttl(Duration::from_secs(30)).is_ok());
        assert!(check_ttl(MAX_TTL + Duration::from_secs(1)).unwrap_err().to_string().contains("limit"));
    }
}
