//! Full-text search through the gateway. Documents are placed by id (or
//! `{tag}`) like keys; index definitions live on every shard; a search
//! fans out to every shard in up to three phases (statistics, query,
//! fetch) so scores are those of one index holding every document.
//!
//! * [`admin`] — create, grow, drop, describe, list, refresh, reindex.
//! * [`documents`] — index, update, delete and get documents by id.
//! * [`query`] — the search phases, the merge and the statistics cache.

pub mod admin;
pub mod documents;
pub mod query;

use omnishard_common::namespace;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::replicas::ShardClient;

/// Checks a namespace and an index name; returns them resolved.
pub fn names(ns: &str, index: &str) -> Result<(String, String)> {
    let ns = namespace::resolve(ns)?.to_string();
    if index.is_empty() {
        return Err(omnishard_common::Error::invalid("index", "is empty; name the index").into());
    }
    let index = namespace::resolve_name("index", index)?.to_string();
    Ok((ns, index))
}

impl Cluster {
    /// Calls every shard at once; results come back in shard order.
    pub(crate) async fn on_every_shard<T, F, Fut>(&self, call: F) -> Vec<Result<T>>
    where
        F: Fn(ShardClient) -> Fut + Clone,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let calls = self.shards.iter().map(|handle| {
            let call = call.clone();
            async move { handle.call(call).await }
        });
        futures::future::join_all(calls).await
    }

    /// Like [`Cluster::on_every_shard`], failing with the first error.
    pub(crate) async fn on_all_shards<T, F, Fut>(&self, call: F) -> Result<Vec<T>>
    where
        F: Fn(ShardClient) -> Fut + Clone,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.on_every_shard(call).await.into_iter().collect()
    }
}

/// Whether an error means "this index does not exist".
pub(crate) fn is_not_found(err: &Error) -> bool {
    matches!(err, Error::Shard { code: tonic::Code::NotFound, .. })
}
