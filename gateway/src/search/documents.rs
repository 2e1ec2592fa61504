//! Documents by id: each goes to the shard that owns its id (or `{tag}`),
//! where it is stored with an outbox entry; each shard's part of a batch
//! commits atomically.

use std::collections::BTreeMap;

use omnishard_proto::v1::*;

use super::names;
use crate::cluster::Cluster;
use crate::error::{Error, Result};

/// What a batch of document writes did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DocsWritten {
    pub written: u64,
    /// Highest shard sequence of the writes (the `min_seq` that reads them).
    pub seq: u64,
}

impl Cluster {
    /// Upserts whole documents.
    pub async fn index_documents(&self, ns: &str, index: &str, documents: Vec<Document>) -> Result<DocsWritten> {
        let ops = documents
            .into_iter()
            .map(|d| SearchDocOp { id: d.id, op: Some(search_doc_op::Op::Upsert(d.json)) })
            .collect();
        self.write_documents(ns, index, ops).await
    }

    /// Sets (or with null removes) fields of an existing document.
    pub async fn update_document(&self, ns: &str, index: &str, id: String, json: String) -> Result<DocsWritten> {
        let op = SearchDocOp { id, op: Some(search_doc_op::Op::Merge(json)) };
        self.write_documents(ns, index, vec![op]).await
    }

    /// Deletes documents; missing ids are ignored.
    pub async fn delete_documents(&self, ns: &str, index: &str, ids: Vec<String>) -> Result<DocsWritten> {
        let ops = ids.into_iter().map(|id| SearchDocOp { id, op: Some(search_doc_op::Op::Delete(true)) }).collect();
        self.write_documents(ns, index, ops).await
    }

    async fn write_documents(&self, ns: &str, index: &str, ops: Vec<SearchDocOp>) -> Result<DocsWritten> {
        let (ns, index) = names(ns, index)?;
        self.limits.check_batch("documents", ops.len())?;
        let mut groups: BTreeMap<usize, Vec<SearchDocOp>> = BTreeMap::new();
        for op in ops {
            if op.id.is_empty() {
                return Err(
                    omnishard_common::Error::invalid("documents.id", "is empty; every document needs an id").into()
                );
            }
            self.limits.check_key_len("documents.id", op.id.len())?;
            groups.entry(self.ring.owner_index(&ns, op.id.as_bytes())).or_default().push(op);
        }
        let calls = groups.into_iter().map(|(shard, ops)| {
            let handle = &self.shards[shard];
            let req =
                ShardSearchWriteRequest { epoch: handle.epoch(), namespace: ns.clone(), index: index.clone(), ops };
            async move { (handle.client.id().to_string(), handle.call(|c| c.search_write(req.clone())).await) }
        });
        let mut total = DocsWritten::default();
        let mut committed = Vec::new();
        let mut failure = None;
        for (shard_id, result) in futures::future::join_all(calls).await {
            match result {
                Ok(done) => {
                    total.written += done.written;
                    total.seq = total.seq.max(done.seq);
                    committed.push(shard_id);
                }
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        match failure {
            None => Ok(total),
            Some(e) if committed.is_empty() => Err(e),
            Some(e) => Err(Error::PartialWrite { committed, failed: Box::new(e) }),
        }
    }

    /// Documents by id, in request order (`found` false for missing ones).
    pub async fn get_documents(&self, ns: &str, index: &str, ids: Vec<String>) -> Result<Vec<MaybeDocument>> {
        let (ns, index) = names(ns, index)?;
        self.limits.check_batch("ids", ids.len())?;
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, id) in ids.iter().enumerate() {
            groups.entry(self.ring.owner_index(&ns, id.as_bytes())).or_default().push(i);
        }
        let calls = groups.into_iter().map(|(shard, positions)| {
            let handle = &self.shards[shard];
            let req = ShardSearchGetRequest {
                epoch: handle.epoch(),
                namespace: ns.clone(),
                index: index.clone(),
                ids: positions.iter().map(|&i| ids[i].clone()).collect(),
            };
            async move { (positions, self.with_read_retries(|| handle.call(|c| c.search_get(req.clone()))).await) }
        });
        let mut out = vec![MaybeDocument::default(); ids.len()];
        for (positions, result) in futures::future::join_all(calls).await {
            for (i, doc) in positions.into_iter().zip(result?.documents) {
                out[i] = doc;
            }
        }
        Ok(out)
    }
}
