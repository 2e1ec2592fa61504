//! The search workloads on omnishard through its gateway: documents indexed
//! in batches (acknowledged once durable in RocksDB), a refresh that makes
//! every one searchable on every shard, then searches with exact global
//! BM25 statistics and the top 10 documents fetched.

use std::sync::Arc;

use omnishard_client::Client;
use omnishard_proto::v1::*;

use crate::kv::DriverResult;
use crate::runner::in_parallel;
use crate::search::{batches, Doc, Hit, Query, SearchClient, SearchSystem};

const NAMESPACE: &str = "bench";
const INDEX: &str = "glosses";

/// A gateway; clients share its connection.
pub struct OmnishardSearch {
    client: Client,
}

impl OmnishardSearch {
    pub async fn connect(url: &str) -> DriverResult<OmnishardSearch> {
        let client = Client::connect(url).await.map_err(|e| format!("connecting to {url}: {e}"))?;
        Ok(OmnishardSearch { client })
    }
}

fn field(name: &str, kind: FieldType, analyzer: &str) -> FieldSpec {
    FieldSpec { name: name.into(), r#type: kind as i32, analyzer: analyzer.into() }
}

impl SearchSystem for OmnishardSearch {
    type Client = Client;

    fn name(&self) -> String {
        "omnishard".into()
    }

    async fn index(&self, docs: Arc<Vec<Doc>>, loaders: usize, batch: usize) -> DriverResult<()> {
        let fields = vec![
            field("title", FieldType::Text, "default"),
            field("body", FieldType::Text, "en_stem"),
            field("pos", FieldType::Keyword, ""),
            field("lexfile", FieldType::I64, ""),
        ];
        let create = CreateIndexRequest { namespace: NAMESPACE.into(), index: INDEX.into(), fields };
        self.client.search().create_index(create).await.map_err(|e| e.message().to_string())?;
        let workers = vec![self.client.search(); loaders.max(1)];
        let all_docs = docs.clone();
        in_parallel(workers, batches(docs.len(), batch), move |mut api, range| {
            let documents =
                all_docs[range].iter().map(|d| Document { id: d.id.clone(), json: d.json(), version: 0 }).collect();
            async move {
                let req = IndexDocumentsRequest { namespace: NAMESPACE.into(), index: INDEX.into(), documents };
                api.index_documents(req).await.map_err(|e| e.message().to_string())?;
                Ok(api)
            }
        })
        .await?;
        let mut api = self.client.search();
        let refresh = RefreshRequest { namespace: NAMESPACE.into(), index: INDEX.into() };
        api.refresh(refresh).await.map_err(|e| e.message().to_string())?;
        let all = SearchRequest { namespace: NAMESPACE.into(), index: INDEX.into(), size: 1, ..Default::default() };
        let total = api.search(all).await.map_err(|e| e.message().to_string())?.into_inner().total;
        if total != docs.len() as u64 {
            return Err(format!("{total} of {} documents searchable after refresh", docs.len()));
        }
        Ok(())
    }

    async fn client(&self) -> DriverResult<Client> {
        Ok(self.client.clone())
    }
}

impl SearchClient for Client {
    async fn search(&mut self, query: &Query) -> DriverResult<Vec<Hit>> {
        let req = SearchRequest {
            namespace: NAMESPACE.into(),
            index: INDEX.into(),
            query: query.tantivy(),
            size: 10,
            ..Default::default()
        };
        let hits = Client::search(self).search(req).await.map_err(|e| e.message().to_string())?.into_inner().hits;
        Ok(hits.into_iter().map(|h| Hit { id: h.id, score: h.score }).collect())
    }
}
