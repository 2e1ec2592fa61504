//! Index definitions, kept on every shard: create, grow, drop, describe,
//! list, plus refresh and reindex.

use std::collections::BTreeMap;

use omnishard_proto::v1::*;

use super::{is_not_found, names};
use crate::cluster::Cluster;
use crate::error::{Error, Result};

impl Cluster {
    /// Creates an index on every shard. A shard that fails leaves the index
    /// on the others; the error says so (drop it and create it again).
    pub async fn create_index(&self, ns: &str, index: &str, fields: Vec<FieldSpec>) -> Result<IndexInfo> {
        let (ns, index) = names(ns, index)?;
        // One uid for every shard: the index's identity on disk.
        let uid = rand::random::<u64>().max(1);
        let req = ShardSearchDefineRequest {
            namespace: ns.clone(),
            index: index.clone(),
            fields,
            mode: DefineMode::Create as i32,
            uid,
        };
        let results = self.on_every_shard(|c| c.search_define(req.clone())).await;
        let created: Vec<String> = self
            .shards
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(h, _)| h.client.id().to_string())
            .collect();
        if let Some(err) = results.into_iter().find_map(|r| r.err()) {
            if created.is_empty() || matches!(err, Error::Shard { code: tonic::Code::AlreadyExists, .. }) {
                return Err(err);
            }
            return Err(Error::PartialWrite { committed: created, failed: Box::new(err) });
        }
        self.describe_index(&ns, &index).await
    }

    /// Replaces the schema; only appending fields is accepted. Every shard
    /// rebuilds its part before this returns.
    pub async fn update_index(&self, ns: &str, index: &str, fields: Vec<FieldSpec>) -> Result<IndexInfo> {
        let (ns, index) = names(ns, index)?;
        let req = ShardSearchDefineRequest {
            namespace: ns.clone(),
            index: index.clone(),
            fields,
            mode: DefineMode::Update as i32,
            uid: 0,
        };
        self.on_all_shards(|c| c.search_define(req.clone())).await?;
        self.describe_index(&ns, &index).await
    }

    /// Drops an index everywhere; NOT_FOUND only when no shard had it.
    pub async fn drop_index(&self, ns: &str, index: &str) -> Result<()> {
        let (ns, index) = names(ns, index)?;
        let req = DropIndexRequest { namespace: ns, index };
        let results = self.on_every_shard(|c| c.search_drop(req.clone())).await;
        let mut found = false;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(_) => found = true,
                Err(e) if is_not_found(&e) => {}
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        match (first_error, found) {
            (Some(e), _) => Err(e),
            (None, true) => Ok(()),
            (None, false) => Err(Error::NotFound { what: format!("search index {:?}", req.index) }),
        }
    }

    /// Schema and per-shard figures of one index.
    pub async fn describe_index(&self, ns: &str, index: &str) -> Result<IndexInfo> {
        let (ns, index) = names(ns, index)?;
        let mut merged = self.list_on_shards(&ns, &index).await?;
        merged.pop().ok_or_else(|| Error::NotFound { what: format!("search index {index:?}") })
    }

    /// Every index of a namespace.
    pub async fn list_indexes(&self, ns: &str) -> Result<Vec<IndexInfo>> {
        let ns = omnishard_common::namespace::resolve(ns)?.to_string();
        self.list_on_shards(&ns, "").await
    }

    async fn list_on_shards(&self, ns: &str, index: &str) -> Result<Vec<IndexInfo>> {
        let req = ShardSearchListRequest { namespace: ns.to_string(), index: index.to_string() };
        let answers = self.on_all_shards(|c| c.search_list(req.clone())).await?;
        let mut merged: BTreeMap<String, IndexInfo> = BTreeMap::new();
        for info in answers.into_iter().flat_map(|a| a.indexes) {
            match merged.get_mut(&info.index) {
                Some(into) => {
                    into.documents += info.documents;
                    into.shards.extend(info.shards);
                }
                None => {
                    merged.insert(info.index.clone(), info);
                }
            }
        }
        Ok(merged.into_values().collect())
    }

    /// Makes every acknowledged write searchable; returns the lowest
    /// searchable sequence over the shards.
    pub async fn refresh_index(&self, ns: &str, index: &str) -> Result<u64> {
        let (ns, index) = names(ns, index)?;
        let req = RefreshRequest { namespace: ns, index };
        let answers = self.on_all_shards(|c| c.search_refresh(req.clone())).await?;
        Ok(answers.iter().map(|a| a.searchable_seq).min().unwrap_or(0))
    }

    /// Rebuilds the index from RocksDB on every shard; returns the documents indexed.
    pub async fn reindex(&self, ns: &str, index: &str) -> Result<u64> {
        let (ns, index) = names(ns, index)?;
        let req = ReindexRequest { namespace: ns, index };
        let answers = self.on_all_shards(|c| c.search_reindex(req.clone())).await?;
        Ok(answers.iter().map(|a| a.documents).sum())
    }
}
