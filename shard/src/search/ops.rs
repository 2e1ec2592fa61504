//! Search operations of a shard, as its gRPC adapter calls them: index
//! definitions, document writes and reads, and the three search phases.

use std::sync::Arc;
use std::time::{Duration, Instant};

use omnishard_common::query_text::MAX_TERM_BYTES;
use omnishard_common::{namespace, Error as InputError};
use omnishard_proto::v1::*;
use serde_json::{Map, Value};

use super::collector::{SortBy, SortValue as Sort, TopCollector};
use super::index::{SearchIndex, View};
use super::keys::{self, IndexMeta};
use super::query::{self, GlobalStatistics};
use super::schema::{quote, IndexSchema, Kind};
use super::write::{AdminOp, DocOp, SearchTxn};
use crate::error::{Error, Result};
use crate::node::Shard;
use crate::store::CF_SEARCH;

fn invalid(field: &'static str, reason: String) -> Error {
    Error::InvalidArgument(InputError::invalid(field, reason))
}

/// Checks an index name (the rules of namespace names; empty is refused).
pub fn index_name(name: &str) -> Result<&str> {
    if name.is_empty() {
        return Err(invalid("index", "is empty; name the index".into()));
    }
    Ok(namespace::resolve_name("index", name)?)
}

impl Shard {
    fn search_index(&self, ns: &str, name: &str) -> Result<(String, Arc<SearchIndex>)> {
        let ns = namespace::resolve(ns)?.to_string();
        let index = self.search.get(&ns, index_name(name)?)?;
        Ok((ns, index))
    }

    /// Creates an index (mode CREATE) or grows its schema (mode UPDATE,
    /// which rebuilds the index before answering). Returns whether anything changed.
    pub async fn search_define(self: &Arc<Self>, req: ShardSearchDefineRequest) -> Result<bool> {
        let ns = namespace::resolve(&req.namespace)?.to_string();
        let name = index_name(&req.index)?.to_string();
        let schema = IndexSchema::from_proto(&req.fields)?;
        if req.mode == DefineMode::Update as i32 {
            let index = self.search.get(&ns, &name)?;
            let current = index.meta();
            if current.schema == schema {
                return Ok(false);
            }
            current.schema.check_growth(&schema)?;
            let meta = IndexMeta { uid: index.uid, schema };
            let op = AdminOp::Update { namespace: ns, index: name, meta };
            // Applying it set the new schema and queued a rebuild (on every
            // replica); a refresh queued behind it returns once it is done.
            self.applier.apply_search_admin(op).await?;
            self.indexer.refresh(index).await?;
            return Ok(true);
        }
        if req.uid == 0 {
            return Err(invalid("uid", "must be set by the gateway".into()));
        }
        let meta = IndexMeta { uid: req.uid, schema };
        let op = AdminOp::Create { namespace: ns.clone(), index: name.clone(), meta };
        // Applying it opened the index (on every replica).
        self.applier.apply_search_admin(op).await?;
        self.search.get(&ns, &name)?;
        Ok(true)
    }

    /// Drops an index with its documents and files.
    pub async fn search_drop(self: &Arc<Self>, ns: &str, name: &str) -> Result<()> {
        let (ns, index) = self.search_index(ns, name)?;
        let op = AdminOp::Drop { namespace: ns.clone(), index: index.name.clone(), uid: index.uid };
        // Applying it closed the index and queued its files' removal (on every replica).
        self.applier.apply_search_admin(op).await
    }

    /// Indexes of a namespace (or just `name`) with this shard's figures.
    pub async fn search_list(self: &Arc<Self>, ns: &str, name: &str) -> Result<Vec<IndexInfo>> {
        let ns = namespace::resolve(ns)?.to_string();
        let indexes = if name.is_empty() { self.search.list(Some(&ns)) } else { vec![self.search_index(&ns, name)?.1] };
        let seq = self.applier.last_seq();
        let shard_id = self.config.id.clone();
        self.blocking_heavy(move |shard| {
            indexes.iter().map(|index| shard.index_info(index, &shard_id, seq)).collect::<Result<Vec<_>>>()
        })
        .await
    }

    fn index_info(&self, index: &SearchIndex, shard_id: &str, seq: u64) -> Result<IndexInfo> {
        let mut documents = 0;
        self.store.scan_prefix(CF_SEARCH, &keys::doc_prefix(index.uid), b"", None, |_, _| {
            documents += 1;
            Ok(true)
        })?;
        let view = index.current_view()?;
        Ok(IndexInfo {
            namespace: index.namespace.clone(),
            index: index.name.clone(),
            fields: index.meta().schema.to_proto(),
            documents,
            shards: vec![ShardIndexInfo {
                shard_id: shard_id.to_string(),
                documents,
                searchable_documents: view.searcher.num_docs(),
                segments: view.searcher.segment_readers().len() as u64,
                searchable_seq: index.searchable_seq(),
                seq,
            }],
        })
    }

    /// Applies document writes of one index as one transaction.
    pub async fn search_write(self: &Arc<Self>, req: ShardSearchWriteRequest) -> Result<(u64, u64)> {
        let (ns, index) = self.search_index(&req.namespace, &req.index)?;
        let limits = self.config.limits;
        limits.check_batch("documents", req.ops.len())?;
        let installed = self.ownership.ring_for(req.epoch)?;
        self.ownership.check_keys(&installed, &ns, req.ops.iter().map(|op| op.id.as_bytes()))?;
        let schema = index.meta().schema;
        let ops = req.ops.into_iter().map(|op| doc_op(&schema, op, &limits)).collect::<Result<Vec<_>>>()?;
        if ops.is_empty() {
            return Ok((0, self.applier.last_seq()));
        }
        let written = ops.len() as u64;
        let txn = SearchTxn { namespace: ns, index: index.name.clone(), uid: index.uid, ops };
        let committed = self.applier.apply_search(txn).await?;
        Ok((written, committed.seq))
    }

    /// Documents by id, from RocksDB.
    pub async fn search_get(self: &Arc<Self>, req: ShardSearchGetRequest) -> Result<Vec<MaybeDocument>> {
        let (ns, index) = self.search_index(&req.namespace, &req.index)?;
        self.config.limits.check_batch("ids", req.ids.len())?;
        let installed = self.ownership.ring_for(req.epoch)?;
        self.ownership.check_keys(&installed, &ns, req.ids.iter().map(|id| id.as_bytes()))?;
        let uid = index.uid;
        self.blocking_light(move |shard| shard.read_documents(uid, &req.ids)).await
    }

    fn read_documents(&self, uid: u64, ids: &[String]) -> Result<Vec<MaybeDocument>> {
        let doc_keys: Vec<Vec<u8>> = ids.iter().map(|id| keys::doc(uid, id)).collect();
        let values = self.store.multi_get_cf(CF_SEARCH, &doc_keys)?;
        ids.iter()
            .zip(values)
            .map(|(id, value)| {
                let Some(value) = value else { return Ok(MaybeDocument::default()) };
                let (version, json) = keys::decode_doc(&value)
                    .ok_or_else(|| Error::Corrupt { key: format!("document {id:?}"), reason: "short value".into() })?;
                let json = String::from_utf8_lossy(json).into_owned();
                Ok(MaybeDocument { found: true, document: Some(Document { id: id.clone(), json, version }) })
            })
            .collect()
    }

    /// Waits (nudging the indexer) until writes up to `min_seq` — or all
    /// this shard has, if its sequence is lower — are searchable.
    async fn wait_searchable(&self, index: &Arc<SearchIndex>, min_seq: u64, deadline: Instant) -> Result<()> {
        if min_seq == 0 {
            return Ok(());
        }
        let target = min_seq.min(self.applier.last_seq());
        if index.searchable_seq() >= target {
            return Ok(());
        }
        let waited = async {
            self.indexer.refresh(index.clone()).await?;
            index.wait_searchable(target).await
        };
        tokio::time::timeout_at(deadline.into(), waited).await.map_err(|_| {
            Error::DeadlineExceeded(format!("writes up to seq {target} were not searchable before the deadline"))
        })?
    }

    fn deadline(&self, timeout_ms: u32) -> Instant {
        let limit = self.config.search.deadline;
        let asked = if timeout_ms == 0 { limit } else { Duration::from_millis(timeout_ms.into()).min(limit) };
        Instant::now() + asked
    }

    /// Phase 1: statistics of the query's terms on the current view.
    pub async fn search_stats(self: &Arc<Self>, req: ShardSearchStatsRequest) -> Result<ShardSearchStatsResponse> {
        let (_, index) = self.search_index(&req.namespace, &req.index)?;
        self.wait_searchable(&index, req.min_seq, self.deadline(0)).await?;
        let view = index.current_view()?;
        self.blocking_search(move |_| {
            let parsed = query::parse(&view, &req.query)?;
            let statistics = query::statistics(&view, parsed.as_ref())?;
            Ok(ShardSearchStatsResponse { statistics: Some(statistics), view: view.id })
        })
        .await
    }

    /// Phase 2: this shard's top hits, total and facets.
    pub async fn search_query(self: &Arc<Self>, req: ShardSearchQueryRequest) -> Result<ShardSearchQueryResponse> {
        let (_, index) = self.search_index(&req.namespace, &req.index)?;
        let deadline = self.deadline(req.timeout_ms);
        self.wait_searchable(&index, req.min_seq, deadline).await?;
        let current = index.current_view()?;
        let view = match req.view {
            0 => current,
            id if req.require_current_view && id != current.id => return Ok(stale()),
            id => match index.view(id) {
                Some(view) => view,
                None => return Ok(stale()),
            },
        };
        let max_facet_values = self.config.search.max_facet_values;
        self.blocking_search(move |_| run_query(&view, &req, deadline, max_facet_values)).await
    }

    /// Phase 3: documents (from RocksDB) and highlights of the winning hits.
    pub async fn search_fetch(self: &Arc<Self>, req: ShardSearchFetchRequest) -> Result<ShardSearchFetchResponse> {
        let (_, index) = self.search_index(&req.namespace, &req.index)?;
        self.config.limits.check_batch("ids", req.ids.len())?;
        let view = index.current_view()?;
        let uid = index.uid;
        self.blocking_search(move |shard| {
            let found = shard.read_documents(uid, &req.ids)?;
            let highlight = req.highlight.clone().filter(|h| !h.fields.is_empty());
            let global = req.statistics.as_ref().map(GlobalStatistics::new).transpose()?;
            let parsed = match &highlight {
                Some(_) => Some(query::parse(&view, &req.query)?),
                None => None,
            };
            let documents = found
                .into_iter()
                .map(|maybe| {
                    let mut fetched =
                        FetchedDocument { found: maybe.found, document: maybe.document, ..Default::default() };
                    if let (Some(request), Some(parsed), Some(doc)) = (&highlight, &parsed, &fetched.document) {
                        let object: Map<String, Value> = serde_json::from_str(&doc.json).unwrap_or_default();
                        fetched.highlights =
                            query::highlights(&view, parsed.as_ref(), global.as_ref(), request, &object)?;
                    }
                    Ok(fetched)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(ShardSearchFetchResponse { documents })
        })
        .await
    }

    /// Commits pending writes now; returns the searchable sequence.
    pub async fn search_refresh(self: &Arc<Self>, ns: &str, name: &str) -> Result<u64> {
        let (_, index) = self.search_index(ns, name)?;
        self.indexer.refresh(index).await
    }

    /// Rebuilds the index from RocksDB; returns the documents indexed.
    pub async fn search_reindex(self: &Arc<Self>, ns: &str, name: &str) -> Result<u64> {
        let (_, index) = self.search_index(ns, name)?;
        self.indexer.rebuild(index).await
    }
}

fn stale() -> ShardSearchQueryResponse {
    ShardSearchQueryResponse { stale: true, ..Default::default() }
}

/// Checks one document op from the wire.
fn doc_op(schema: &IndexSchema, op: SearchDocOp, limits: &omnishard_common::limits::Limits) -> Result<DocOp> {
    if op.id.is_empty() {
        return Err(invalid("documents.id", "is empty; every document needs an id".into()));
    }
    limits.check_key_len("documents.id", op.id.len())?;
    // The id is a term of the index too; a longer one would not be indexed.
    if op.id.len() > MAX_TERM_BYTES {
        return Err(invalid(
            "documents.id",
            format!("is {} bytes; the limit is {MAX_TERM_BYTES} (the index's term limit)", op.id.len()),
        ));
    }
    match op.op {
        Some(search_doc_op::Op::Upsert(json)) => {
            limits.check_value(json.as_bytes())?;
            schema.check_document(&op.id, &json)?;
            Ok(DocOp::Upsert { id: op.id, json })
        }
        Some(search_doc_op::Op::Merge(json)) => {
            limits.check_value(json.as_bytes())?;
            // Null values pass the check; they mean "remove the field".
            let fields = schema.check_document(&op.id, &json)?;
            Ok(DocOp::Merge { id: op.id, fields })
        }
        Some(search_doc_op::Op::Delete(_)) => Ok(DocOp::Delete { id: op.id }),
        None => Err(invalid("documents", format!("{}: no operation", quote(&op.id)))),
    }
}

/// The sort the request asks for, checked against the view's schema.
fn sort_of(view: &View, sort: Option<&SearchSort>) -> Result<SortBy> {
    let Some(sort) = sort.filter(|s| !s.field.is_empty()) else { return Ok(SortBy::Score) };
    let def = view
        .schema
        .field(&sort.field)
        .ok_or_else(|| invalid("sort.field", format!("unknown field {}", quote(&sort.field))))?;
    if !def.kind.is_numeric() {
        return Err(invalid("sort.field", format!("field {:?} is not an i64, f64 or date field", def.name)));
    }
    Ok(SortBy::Field { name: def.name.clone(), kind: def.kind, descending: sort.order == SortOrder::Desc as i32 })
}

/// The position after which hits start, checked against the sort: a value
/// of another kind would compare as before or after every hit, silently
/// restarting (or ending) the paging.
fn cursor_of(sort: &SortBy, cursor: &SearchCursor) -> Result<(Sort, String)> {
    let value = sort_from_proto(cursor.value.as_ref());
    let fits = match sort {
        SortBy::Score => matches!(value, Sort::Score(_)),
        SortBy::Field { kind: Kind::I64 | Kind::Date, .. } => matches!(value, Sort::Int(_) | Sort::Missing),
        SortBy::Field { kind: Kind::F64, .. } => matches!(value, Sort::Float(_) | Sort::Missing),
        SortBy::Field { .. } => false,
    };
    if !fits {
        let wanted = match sort {
            SortBy::Score => "score".to_string(),
            SortBy::Field { name, .. } => format!("field {name:?}"),
        };
        return Err(invalid(
            "search_after",
            format!("the cursor was made for another sort than this search's (by {wanted}); start again without it"),
        ));
    }
    Ok((value, cursor.id.clone()))
}

fn sort_from_proto(value: Option<&SortValue>) -> Sort {
    match value.and_then(|v| v.value) {
        Some(sort_value::Value::Score(s)) => Sort::Score(s),
        Some(sort_value::Value::Int(i)) => Sort::Int(i),
        Some(sort_value::Value::Float(f)) => Sort::Float(f),
        None => Sort::Missing,
    }
}

/// The wire form of a sort value.
pub fn sort_to_proto(value: Sort) -> Option<SortValue> {
    let value = match value {
        Sort::Score(s) => sort_value::Value::Score(s),
        Sort::Int(i) => sort_value::Value::Int(i),
        Sort::Float(f) => sort_value::Value::Float(f),
        Sort::Missing => return None,
    };
    Some(SortValue { value: Some(value) })
}

fn run_query(
    view: &View,
    req: &ShardSearchQueryRequest,
    deadline: Instant,
    max_facet_values: usize,
) -> Result<ShardSearchQueryResponse> {
    let parsed = query::parse(view, &req.query)?;
    let filtered = query::with_filters(view, parsed, &req.filters)?;
    for facet in &req.facets {
        match view.schema.field(facet) {
            Some(def) if def.kind == Kind::Keyword => {}
            Some(_) => return Err(invalid("facets", format!("field {facet:?} is not a keyword field"))),
            None => return Err(invalid("facets", format!("unknown field {}", quote(facet)))),
        }
    }
    let sort = sort_of(view, req.sort.as_ref())?;
    let after = req.after.as_ref().map(|a| cursor_of(&sort, a)).transpose()?;
    let collector = TopCollector {
        limit: req.limit as usize,
        sort,
        after,
        min_score: req.min_score,
        facets: req.facets.clone(),
        deadline,
    };
    let global = req.statistics.as_ref().map(GlobalStatistics::new).transpose()?;
    let harvest = query::run(view, filtered.as_ref(), &collector, global.as_ref())?;
    let facets = harvest
        .facets
        .into_iter()
        .map(|(field, counts)| {
            let mut counts: Vec<FacetCount> =
                counts.into_iter().map(|(value, count)| FacetCount { value, count }).collect();
            counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
            counts.truncate(max_facet_values);
            ShardFacet { field, counts }
        })
        .collect();
    let hits = harvest
        .hits
        .into_iter()
        .map(|hit| ShardHit { id: hit.id, score: hit.score, sort: sort_to_proto(hit.sort) })
        .collect();
    Ok(ShardSearchQueryResponse { stale: false, hits, total: harvest.total, facets })
}
