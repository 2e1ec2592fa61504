//! Key-value operations of a shard: validation, ownership checks, then the
//! store (reads) or the apply path (writes).

use std::sync::Arc;

use omnishard_common::namespace;

use crate::apply::{Committed, Op, Txn};
use crate::error::Result;
use crate::node::Shard;
use crate::store::Entry;

impl Shard {
    /// Point reads of `keys` in `namespace`, routed under `epoch`. The
    /// answer covers a prefix of `keys` when their values reach
    /// `limits.max_page_bytes`; the caller asks again for the rest.
    pub async fn read(self: &Arc<Self>, epoch: u64, ns: &str, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Entry>>> {
        let ns = namespace::resolve(ns)?.to_string();
        let limits = self.config.limits;
        limits.check_batch("keys", keys.len())?;
        for key in &keys {
            limits.check_key(key)?;
        }
        let installed = self.ownership.ring_for(epoch)?;
        self.ownership.check_keys(&installed, &ns, keys.iter().map(Vec::as_slice))?;
        self.check_not_fenced(&ns, keys.iter().map(Vec::as_slice))?;
        let max_bytes = limits.max_page_bytes;
        self.blocking_light(move |shard| shard.store.get_many(&ns, &keys, max_bytes)).await
    }

    /// Applies independent transactions routed under `epoch`. The outer
    /// error rejects the whole request (misrouted, overloaded); the inner
    /// results say, per transaction, whether it committed.
    pub async fn apply(self: &Arc<Self>, epoch: u64, txns: Vec<Txn>) -> Result<Vec<Result<Committed>>> {
        let installed = self.ownership.ring_for(epoch)?;
        let mut valid = Vec::with_capacity(txns.len());
        let mut results: Vec<Option<Result<Committed>>> = Vec::with_capacity(txns.len());
        for mut txn in txns {
            match self.validate(&mut txn) {
                Ok(()) => {
                    self.ownership.check_keys(&installed, &txn.namespace, txn.ops.iter().map(Op::key))?;
                    valid.push(txn);
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let mut committed = if valid.is_empty() { Vec::new() } else { self.applier.apply(valid).await? }.into_iter();
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| committed.next().unwrap_or(Err(crate::Error::ShuttingDown))))
            .collect())
    }

    /// Entries of `namespace` with `prefix` after `start_after`, in key
    /// order, at most `limit`, and whether more follow. Every shard returns
    /// exactly its first `limit` matches, which is what lets the gateway
    /// merge pages by taking the first `limit` of the union.
    pub async fn scan(
        self: &Arc<Self>,
        epoch: u64,
        ns: &str,
        prefix: Vec<u8>,
        start_after: Vec<u8>,
        limit: u32,
    ) -> Result<(Vec<Entry>, bool)> {
        let ns = namespace::resolve(ns)?.to_string();
        let limit = self.config.limits.scan_page(limit)?;
        let max_bytes = self.config.limits.max_page_bytes;
        self.config.limits.check_key_len("prefix", prefix.len())?;
        self.config.limits.check_key_len("start_after", start_after.len())?;
        let installed = self.ownership.ring_for(epoch)?;
        self.blocking_heavy(move |shard| {
            let owned = |key: &[u8]| shard.ownership.owns(&installed, &ns, key);
            shard.store.scan(&ns, &prefix, &start_after, (limit, max_bytes), owned)
        })
        .await
    }

    /// While a migration's fence is up, reads of moving keys (or graph
    /// vertices) wait too: the new owner may take writes as soon as the ring
    /// switches, so the old owner must not answer for those keys any more.
    pub(crate) fn check_not_fenced<'a>(&self, ns: &str, keys: impl IntoIterator<Item = &'a [u8]>) -> Result<()> {
        let Some(moving) = self.migration.current().filter(|m| m.persisted.fenced) else { return Ok(()) };
        for key in keys {
            self.migration.check_write(Some(&moving), ns, key)?;
        }
        Ok(())
    }

    fn validate(&self, txn: &mut Txn) -> Result<()> {
        txn.namespace = namespace::resolve(&txn.namespace)?.to_string();
        let limits = self.config.limits;
        limits.check_batch("ops", txn.ops.len())?;
        for op in &txn.ops {
            limits.check_key(op.key())?;
            if let Op::Put { value, .. } = op {
                limits.check_value(value)?;
            }
        }
        Ok(())
    }
}
