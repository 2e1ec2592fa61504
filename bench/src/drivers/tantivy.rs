//! Single-process Tantivy, the search engine's limit without a network or a
//! cluster: one on-disk index with omnishard's schema and analyzers (`title`
//! with the default tokenizer, `body` stemmed), 2 indexing threads and
//! 128 MiB, one commit after the last document; queries in process.

use std::sync::Arc;

use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, Value, FAST, STORED, STRING,
};
use tantivy::{doc, Index, IndexReader, TantivyDocument};

use crate::kv::DriverResult;
use crate::search::{Doc, Hit, Query, SearchClient, SearchSystem};

/// The index's fields.
#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    title: Field,
    body: Field,
    pos: Field,
    lexfile: Field,
}

/// An index in a folder of its own.
pub struct TantivySearch {
    index: Index,
    fields: Fields,
    reader: std::sync::OnceLock<IndexReader>,
}

impl TantivySearch {
    /// Creates an empty index in `dir`.
    pub fn create(dir: &std::path::Path) -> DriverResult<TantivySearch> {
        let mut builder = Schema::builder();
        let text = |analyzer: &str| {
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(analyzer)
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            )
        };
        let fields = Fields {
            id: builder.add_text_field("_id", STRING | STORED),
            title: builder.add_text_field("title", text("default")),
            body: builder.add_text_field("body", text("en_stem")),
            pos: builder.add_text_field("pos", STRING | FAST),
            lexfile: builder.add_i64_field("lexfile", NumericOptions::default().set_indexed().set_fast()),
        };
        let index = Index::create_in_dir(dir, builder.build()).map_err(|e| format!("creating the index: {e}"))?;
        Ok(TantivySearch { index, fields, reader: std::sync::OnceLock::new() })
    }
}

/// Adds every document (parsing the JSON every system is given) and commits once.
fn index_all(index: &Index, fields: Fields, docs: &[Doc]) -> tantivy::Result<()> {
    let mut writer = index.writer_with_num_threads(2, 128 * 1024 * 1024)?;
    for d in docs {
        let value: serde_json::Value = serde_json::from_str(&d.json())?;
        writer.add_document(doc!(
            fields.id => d.id.as_str(),
            fields.title => value["title"].as_str().unwrap_or_default(),
            fields.body => value["body"].as_str().unwrap_or_default(),
            fields.pos => value["pos"].as_str().unwrap_or_default(),
            fields.lexfile => value["lexfile"].as_i64().unwrap_or_default(),
        ))?;
    }
    writer.commit()?;
    Ok(())
}

impl SearchSystem for TantivySearch {
    type Client = TantivyClient;

    fn name(&self) -> String {
        "tantivy (in-process)".into()
    }

    async fn index(&self, docs: Arc<Vec<Doc>>, _loaders: usize, _batch: usize) -> DriverResult<()> {
        let (index, fields) = (self.index.clone(), self.fields);
        tokio::task::spawn_blocking(move || index_all(&index, fields, &docs))
            .await
            .map_err(|e| format!("indexing task failed: {e}"))?
            .map_err(|e| format!("indexing: {e}"))?;
        let reader = self.index.reader().map_err(|e| format!("opening a reader: {e}"))?;
        let _ = self.reader.set(reader);
        Ok(())
    }

    async fn client(&self) -> DriverResult<TantivyClient> {
        let reader = self.reader.get().ok_or("the index has not been built yet")?.clone();
        let parser = QueryParser::for_index(&self.index, vec![self.fields.title, self.fields.body]);
        Ok(TantivyClient { reader, parser: Arc::new(parser), id: self.fields.id })
    }
}

/// A searcher on the committed index (queries run on the calling thread).
pub struct TantivyClient {
    reader: IndexReader,
    parser: Arc<QueryParser>,
    id: Field,
}

impl SearchClient for TantivyClient {
    async fn search(&mut self, query: &Query) -> DriverResult<Vec<Hit>> {
        let parsed = self.parser.parse_query(&query.tantivy()).map_err(|e| e.to_string())?;
        let searcher = self.reader.searcher();
        let top = searcher.search(&parsed, &TopDocs::with_limit(10).order_by_score()).map_err(|e| e.to_string())?;
        top.into_iter()
            .map(|(score, address)| {
                let doc: TantivyDocument = searcher.doc(address).map_err(|e| e.to_string())?;
                let id = doc.get_first(self.id).and_then(|v| v.as_str()).unwrap_or_default().to_string();
                Ok(Hit { id, score })
            })
            .collect()
    }
}
