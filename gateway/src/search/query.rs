//! A search across shards with exact global BM25:
//!
//! 1. **statistics** — every shard reports, for the query's terms, document
//!    frequencies, its document count and token counts per field, plus the
//!    id of the index snapshot (view) they describe; the gateway sums them.
//! 2. **query** — every shard scores its documents in that view with the
//!    summed statistics and returns only its top `from + size` as
//!    (id, score, sort value), with its total and facet counts.
//! 3. **fetch** — the gateway merges, keeps `[from, from + size)` and asks
//!    only the owners of those winners for documents and highlights.
//!
//! Summed statistics are exactly those of one index holding every document,
//! so ids, order and scores do not depend on the number of shards. Phase 1
//! is skipped when the statistics of the same query are cached and every
//! shard still serves the view they were computed on (a shard answers
//! "stale" otherwise and the search starts over with fresh statistics).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use omnishard_common::query_text::{self, excerpt, MAX_TERM_BYTES};
use omnishard_proto::v1::*;
use serde::{Deserialize, Serialize};

use super::names;
use crate::cluster::Cluster;
use crate::error::{Error, Result};
use omnishard_telemetry::record;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    omnishard_common::Error::invalid(field, reason).into()
}

/// Hits returned when a request leaves `size` at 0.
pub const DEFAULT_SIZE: u32 = 10;
/// Facet values returned when a facet request leaves `size` at 0.
pub const DEFAULT_FACET_SIZE: u32 = 10;
/// Longest query string, in bytes.
pub const MAX_QUERY_BYTES: usize = query_text::MAX_QUERY_BYTES;
/// Most filters in one request.
pub const MAX_FILTERS: usize = 64;
/// Most values one filter may list (`any_of`).
pub const MAX_FILTER_VALUES: usize = 1024;
/// Longest `search_after` cursor, in bytes (a cursor holds a document id).
pub const MAX_CURSOR_BYTES: usize = 16 * 1024;
/// Most highlighted fields, and the longest tag and fragment.
pub const MAX_HIGHLIGHT_FIELDS: usize = 16;
pub const MAX_TAG_BYTES: usize = 64;
pub const MAX_FRAGMENT_CHARS: u32 = 10_000;
/// Times a search restarts when a shard's view changed under it.
const MAX_STALE_RETRIES: usize = 3;

/// Global statistics of one query and the views (per shard) they describe.
struct Cached {
    statistics: SearchStatistics,
    views: Vec<u64>,
}

/// A cached query: (namespace, index, query string).
type CacheKey = (String, String, String);

/// Bounded LRU of global statistics by query.
pub struct StatisticsCache {
    entries: Option<Mutex<lru::LruCache<CacheKey, Arc<Cached>>>>,
}

impl StatisticsCache {
    /// A cache of `capacity` queries (0 turns it off).
    pub fn new(capacity: usize) -> StatisticsCache {
        StatisticsCache { entries: NonZeroUsize::new(capacity).map(|c| Mutex::new(lru::LruCache::new(c))) }
    }

    fn get(&self, key: &CacheKey) -> Option<Arc<Cached>> {
        let entries = self.entries.as_ref()?;
        entries.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    fn put(&self, key: CacheKey, value: Cached) {
        if let Some(entries) = &self.entries {
            entries.lock().unwrap_or_else(|e| e.into_inner()).put(key, Arc::new(value));
        }
    }

    fn forget(&self, key: &CacheKey) {
        if let Some(entries) = &self.entries {
            entries.lock().unwrap_or_else(|e| e.into_inner()).pop(key);
        }
    }
}

/// The checked shape of a request.
struct Plan {
    ns: String,
    index: String,
    from: usize,
    size: usize,
    after: Option<SearchCursor>,
    /// The sort, as cursors name it (see [`sort_key`]).
    sort_key: String,
    facets: Vec<(String, usize)>,
    by_score: bool,
    descending: bool,
}

/// A shard hit, tagged with the shard that holds it.
struct Candidate {
    shard: usize,
    hit: ShardHit,
}

/// What phase 2 gathered from every shard.
struct Gathered {
    candidates: Vec<Candidate>,
    total: u64,
    facets: HashMap<String, HashMap<String, u64>>,
}

impl Cluster {
    /// Runs a search; see the module documentation for the phases.
    pub async fn search(&self, req: SearchRequest) -> Result<SearchResponse> {
        let plan = self.plan(&req)?;
        let limit = self.search.deadline;
        let deadline = match req.timeout_ms {
            0 => limit,
            ms => Duration::from_millis(ms.into()).min(limit),
        };
        match tokio::time::timeout(deadline, self.search_within(&req, &plan, deadline)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Deadline(format!("search did not finish within {}ms", deadline.as_millis()))),
        }
    }

    fn plan(&self, req: &SearchRequest) -> Result<Plan> {
        let (ns, index) = names(&req.namespace, &req.index)?;
        let limits = &self.search;
        check_shape(req)?;
        let size = if req.size == 0 { DEFAULT_SIZE } else { req.size };
        if size > limits.max_size {
            return Err(invalid("size", format!("{size} exceeds the limit of {}", limits.max_size)));
        }
        let window = u64::from(req.from) + u64::from(size);
        if window > u64::from(limits.result_window) {
            return Err(invalid(
                "from",
                format!(
                    "from + size = {window} exceeds the result window of {}; page deeper with search_after",
                    limits.result_window
                ),
            ));
        }
        if req.facets.len() > limits.max_facets {
            return Err(invalid("facets", format!("{} facets; the limit is {}", req.facets.len(), limits.max_facets)));
        }
        let mut facets = Vec::with_capacity(req.facets.len());
        for facet in &req.facets {
            let size = if facet.size == 0 { DEFAULT_FACET_SIZE } else { facet.size };
            if size > limits.max_facet_size {
                return Err(invalid("facets.size", format!("{size} exceeds the limit of {}", limits.max_facet_size)));
            }
            facets.push((facet.field.clone(), size as usize));
        }
        let sort = req.sort.clone().unwrap_or_default();
        let by_score = sort.field.is_empty();
        let descending = match SortOrder::try_from(sort.order) {
            Ok(SortOrder::Default) => by_score,
            Ok(SortOrder::Asc) => false,
            Ok(SortOrder::Desc) => true,
            Err(_) => return Err(invalid("sort.order", format!("{} is not DEFAULT, ASC or DESC", sort.order))),
        };
        if by_score && !descending {
            return Err(invalid("sort.order", "scores sort descending only"));
        }
        let sort_key = sort_key(&sort.field, descending);
        let after = match req.search_after.as_str() {
            "" => None,
            cursor => Some(decode_cursor(cursor, &sort_key)?),
        };
        Ok(Plan {
            ns,
            index,
            from: req.from as usize,
            size: size as usize,
            after,
            sort_key,
            facets,
            by_score,
            descending,
        })
    }

    async fn search_within(&self, req: &SearchRequest, plan: &Plan, deadline: Duration) -> Result<SearchResponse> {
        let mut round_trips = 0u32;
        let key = (plan.ns.clone(), plan.index.clone(), req.query.clone());
        let mut use_cache = req.min_seq == 0 && !req.skip_statistics_cache;
        let mut outcome = None;
        for _ in 0..=MAX_STALE_RETRIES {
            let (statistics, views, cached) = if req.local_statistics {
                (None, vec![0; self.shards.len()], false)
            } else if let Some(hit) = use_cache.then(|| self.statistics_cache.get(&key)).flatten() {
                (Some(hit.statistics.clone()), hit.views.clone(), true)
            } else {
                round_trips += self.shards.len() as u32;
                let phase = phase_span("search.statistics", self.shards.len());
                let (statistics, views) = self.gather_statistics(req, plan).instrument(phase).await?;
                (Some(statistics), views, false)
            };
            round_trips += self.shards.len() as u32;
            let phase = phase_span("search.query", self.shards.len());
            phase.set_attribute("statistics_cached", cached);
            let queried =
                self.query_shards(req, plan, statistics.as_ref(), &views, cached, deadline).instrument(phase.clone());
            let queried = queried.await?;
            if let Some(gathered) = &queried {
                phase.set_attribute("docs_scored", gathered.total as i64);
                phase.set_attribute("candidates", gathered.candidates.len() as i64);
            }
            match queried {
                Some(gathered) => {
                    if let (Some(statistics), false) = (&statistics, cached || req.local_statistics) {
                        self.statistics_cache.put(key.clone(), Cached { statistics: statistics.clone(), views });
                    }
                    outcome = Some((gathered, statistics, cached));
                    break;
                }
                None => {
                    // A view moved on: statistics must be gathered again.
                    self.statistics_cache.forget(&key);
                    use_cache = false;
                }
            }
        }
        let (gathered, statistics, cached) =
            outcome.ok_or_else(|| Error::Deadline("the index kept changing under the search; try again".into()))?;
        self.finish(req, plan, gathered, statistics, cached, round_trips).await
    }

    /// Phase 1: sums every shard's statistics for the query's terms.
    async fn gather_statistics(&self, req: &SearchRequest, plan: &Plan) -> Result<(SearchStatistics, Vec<u64>)> {
        let shard_req = ShardSearchStatsRequest {
            namespace: plan.ns.clone(),
            index: plan.index.clone(),
            query: req.query.clone(),
            min_seq: req.min_seq,
        };
        let answers = self.on_all_shards(|c| c.search_stats(shard_req.clone())).await?;
        let mut total_docs = 0;
        let mut tokens: BTreeMap<u32, u64> = BTreeMap::new();
        let mut terms: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        let mut views = Vec::with_capacity(answers.len());
        for answer in answers {
            views.push(answer.view);
            let stats = answer.statistics.unwrap_or_default();
            total_docs += stats.total_docs;
            for field in stats.field_tokens {
                *tokens.entry(field.field).or_default() += field.tokens;
            }
            for term in stats.terms {
                *terms.entry(term.term).or_default() += term.doc_freq;
            }
        }
        let statistics = SearchStatistics {
            total_docs,
            field_tokens: tokens.into_iter().map(|(field, tokens)| FieldTokens { field, tokens }).collect(),
            terms: terms.into_iter().map(|(term, doc_freq)| TermStat { term, doc_freq }).collect(),
        };
        Ok((statistics, views))
    }

    /// Phase 2: every shard's top hits; `None` when a shard's view is stale.
    async fn query_shards(
        &self,
        req: &SearchRequest,
        plan: &Plan,
        statistics: Option<&SearchStatistics>,
        views: &[u64],
        require_current: bool,
        deadline: Duration,
    ) -> Result<Option<Gathered>> {
        let base = ShardSearchQueryRequest {
            namespace: plan.ns.clone(),
            index: plan.index.clone(),
            query: req.query.clone(),
            filters: req.filters.clone(),
            limit: (plan.from + plan.size) as u32,
            sort: req.sort.clone(),
            after: plan.after.clone(),
            facets: plan.facets.iter().map(|(f, _)| f.clone()).collect(),
            min_score: req.min_score,
            statistics: statistics.cloned(),
            view: 0,
            require_current_view: require_current,
            min_seq: req.min_seq,
            timeout_ms: deadline.as_millis().min(u128::from(u32::MAX)) as u32,
        };
        let calls = self.shards.iter().zip(views).map(|(handle, view)| {
            let shard_req = ShardSearchQueryRequest { view: *view, ..base.clone() };
            async move { handle.call(|c| c.search_query(shard_req.clone())).await }
        });
        let mut gathered = Gathered { candidates: Vec::new(), total: 0, facets: HashMap::new() };
        for (shard, answer) in futures::future::join_all(calls).await.into_iter().enumerate() {
            let answer = answer?;
            if answer.stale {
                return Ok(None);
            }
            gathered.total += answer.total;
            gathered.candidates.extend(answer.hits.into_iter().map(|hit| Candidate { shard, hit }));
            for facet in answer.facets {
                let into = gathered.facets.entry(facet.field).or_default();
                for count in facet.counts {
                    *into.entry(count.value).or_default() += count.count;
                }
            }
        }
        Ok(Some(gathered))
    }

    /// Merge, phase 3, and the response.
    async fn finish(
        &self,
        req: &SearchRequest,
        plan: &Plan,
        mut gathered: Gathered,
        statistics: Option<SearchStatistics>,
        statistics_cached: bool,
        mut round_trips: u32,
    ) -> Result<SearchResponse> {
        gathered.candidates.sort_by(|a, b| compare(plan, &a.hit, &b.hit));
        let winners: Vec<Candidate> = gathered.candidates.into_iter().skip(plan.from).take(plan.size).collect();
        let next_cursor = match winners.last() {
            Some(last) if winners.len() == plan.size => encode_cursor(&last.hit, &plan.sort_key),
            _ => String::new(),
        };
        let highlight = req.highlight.clone().filter(|h| !h.fields.is_empty());
        let mut fetched: HashMap<(usize, String), FetchedDocument> = HashMap::new();
        if !req.omit_documents || highlight.is_some() {
            let mut by_shard: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for winner in &winners {
                by_shard.entry(winner.shard).or_default().push(winner.hit.id.clone());
            }
            round_trips += by_shard.len() as u32;
            let phase = phase_span("search.fetch", by_shard.len());
            phase.set_attribute("docs_fetched", winners.len() as i64);
            let calls = by_shard.into_iter().map(|(shard, ids)| {
                let handle = &self.shards[shard];
                let shard_req = ShardSearchFetchRequest {
                    namespace: plan.ns.clone(),
                    index: plan.index.clone(),
                    ids: ids.clone(),
                    query: req.query.clone(),
                    highlight: highlight.clone(),
                    statistics: statistics.clone(),
                };
                async move { (shard, ids, handle.call(|c| c.search_fetch(shard_req.clone())).await) }
            });
            for (shard, ids, answer) in futures::future::join_all(calls).instrument(phase).await {
                for (id, doc) in ids.into_iter().zip(answer?.documents) {
                    fetched.insert((shard, id), doc);
                }
            }
        }
        let hits: Vec<SearchHit> = winners
            .into_iter()
            .map(|winner| {
                let doc = fetched.remove(&(winner.shard, winner.hit.id.clone())).unwrap_or_default();
                let document = doc.document.filter(|_| !req.omit_documents);
                SearchHit {
                    sort_value: if plan.by_score { String::new() } else { show_sort(winner.hit.sort.as_ref()) },
                    id: winner.hit.id,
                    score: winner.hit.score,
                    version: document.as_ref().map_or(0, |d| d.version),
                    json: document.map(|d| d.json).unwrap_or_default(),
                    highlights: doc.highlights,
                }
            })
            .collect();
        let facets = plan
            .facets
            .iter()
            .map(|(field, size)| facet_result(field, *size, gathered.facets.remove(field).unwrap_or_default()))
            .collect();
        record("docs_scored", gathered.total as i64);
        record("rows", hits.len() as i64);
        record("shard_round_trips", round_trips as i64);
        Ok(SearchResponse {
            total: gathered.total,
            hits,
            facets,
            next_cursor,
            statistics_cached,
            shard_round_trips: round_trips,
        })
    }
}

/// The span of one search phase across `shards` shards.
fn phase_span(name: &'static str, shards: usize) -> tracing::Span {
    tracing::info_span!(target: "omnishard::search", "phase", otel.name = name, shards)
}

/// Bounds on the parts of a request that cost work before any deadline applies.
fn check_shape(req: &SearchRequest) -> Result<()> {
    // Size and nesting, before any shard's recursive parser sees the text.
    query_text::check(&req.query)?;
    if req.filters.len() > MAX_FILTERS {
        return Err(invalid("filters", format!("{} filters; the limit is {MAX_FILTERS}", req.filters.len())));
    }
    for filter in &req.filters {
        let field = || format!("{:?}", excerpt(&filter.field, 64));
        if filter.any_of.len() > MAX_FILTER_VALUES {
            return Err(invalid(
                "filters.any_of",
                format!("{} values for field {}; the limit is {MAX_FILTER_VALUES}", filter.any_of.len(), field()),
            ));
        }
        let bounds = [&filter.gte, &filter.gt, &filter.lte, &filter.lt];
        if let Some(value) = filter.any_of.iter().chain(bounds).find(|v| v.len() > MAX_TERM_BYTES) {
            // No value of any field type is longer: a longer keyword is not indexed.
            return Err(invalid(
                "filters",
                format!("value for field {} is {} bytes; the limit is {MAX_TERM_BYTES}", field(), value.len()),
            ));
        }
    }
    if req.search_after.len() > MAX_CURSOR_BYTES {
        return Err(invalid(
            "search_after",
            format!("is {} bytes; the limit is {MAX_CURSOR_BYTES}", req.search_after.len()),
        ));
    }
    if let Some(h) = &req.highlight {
        if h.fields.len() > MAX_HIGHLIGHT_FIELDS {
            return Err(invalid(
                "highlight.fields",
                format!("{} fields; the limit is {MAX_HIGHLIGHT_FIELDS}", h.fields.len()),
            ));
        }
        if h.pre_tag.len().max(h.post_tag.len()) > MAX_TAG_BYTES {
            return Err(invalid("highlight.pre_tag", format!("tags are limited to {MAX_TAG_BYTES} bytes")));
        }
        if h.max_chars > MAX_FRAGMENT_CHARS {
            return Err(invalid(
                "highlight.max_chars",
                format!("{} exceeds the limit of {MAX_FRAGMENT_CHARS}", h.max_chars),
            ));
        }
    }
    Ok(())
}

/// The same order the shards use: sort value (missing last), then id.
fn compare(plan: &Plan, a: &ShardHit, b: &ShardHit) -> Ordering {
    let value = |h: &ShardHit| h.sort.as_ref().and_then(|s| s.value);
    let natural = match (value(a), value(b)) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => return Ordering::Greater,
        (Some(_), None) => return Ordering::Less,
        (Some(x), Some(y)) => compare_values(&x, &y),
    };
    let ordered = if plan.descending { natural.reverse() } else { natural };
    ordered.then_with(|| a.id.cmp(&b.id))
}

fn compare_values(a: &sort_value::Value, b: &sort_value::Value) -> Ordering {
    use sort_value::Value::*;
    match (a, b) {
        (Score(x), Score(y)) => x.total_cmp(y),
        (Int(x), Int(y)) => x.cmp(y),
        (Float(x), Float(y)) => x.total_cmp(y),
        _ => Ordering::Equal,
    }
}

fn show_sort(value: Option<&SortValue>) -> String {
    match value.and_then(|v| v.value) {
        Some(sort_value::Value::Score(s)) => s.to_string(),
        Some(sort_value::Value::Int(i)) => i.to_string(),
        Some(sort_value::Value::Float(f)) => f.to_string(),
        None => String::new(),
    }
}

/// The most frequent `size` values of a facet; `other` counts the rest.
fn facet_result(field: &str, size: usize, counts: HashMap<String, u64>) -> FacetResult {
    let all: u64 = counts.values().sum();
    let mut counts: Vec<FacetCount> = counts.into_iter().map(|(value, count)| FacetCount { value, count }).collect();
    counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
    counts.truncate(size);
    let shown: u64 = counts.iter().map(|c| c.count).sum();
    FacetResult { field: field.to_string(), counts, other: all - shown }
}

/// The cursor's content: the last hit's sort value and id, and the sort it
/// belongs to: a position in one order means nothing in another.
#[derive(Serialize, Deserialize)]
struct CursorBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    score: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    int: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    float: Option<f64>,
    id: String,
    /// [`sort_key`] of the search that made the cursor; absent from cursors
    /// of older gateways, which are checked by the kind of their value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sort: Option<String>,
}

/// A sort as cursors name it: `_score`, or the field and its direction.
fn sort_key(field: &str, descending: bool) -> String {
    match (field, descending) {
        ("", _) => "_score".to_string(),
        (field, true) => format!("{field}:desc"),
        (field, false) => format!("{field}:asc"),
    }
}

fn encode_cursor(hit: &ShardHit, sort_key: &str) -> String {
    let mut body =
        CursorBody { score: None, int: None, float: None, id: hit.id.clone(), sort: Some(sort_key.to_string()) };
    match hit.sort.as_ref().and_then(|s| s.value) {
        Some(sort_value::Value::Score(s)) => body.score = Some(s),
        Some(sort_value::Value::Int(i)) => body.int = Some(i),
        Some(sort_value::Value::Float(f)) => body.float = Some(f),
        None => {}
    }
    let json = serde_json::to_vec(&body).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

/// Reads a cursor for a search sorted by `sort_key`; a cursor of another
/// sort is refused (it would silently restart or end the paging).
fn decode_cursor(cursor: &str, sort_key: &str) -> Result<SearchCursor> {
    let bad = || invalid("search_after", "is not a cursor returned by a previous search");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let body: CursorBody = serde_json::from_slice(&json).map_err(|_| bad())?;
    let value = match (body.score, body.int, body.float) {
        (Some(s), None, None) => Some(sort_value::Value::Score(s)),
        (None, Some(i), None) => Some(sort_value::Value::Int(i)),
        (None, None, Some(f)) => Some(sort_value::Value::Float(f)),
        (None, None, None) => None,
        _ => return Err(bad()),
    };
    let by_score = sort_key == "_score";
    let matches = match &body.sort {
        Some(made_for) => made_for == sort_key,
        // An older cursor: its value must at least be of the sort's kind.
        None => matches!(value, Some(sort_value::Value::Score(_))) == by_score,
    };
    if !matches {
        let made_for = match &body.sort {
            Some(made_for) => format!("{:?}", excerpt(made_for, 80)),
            None if by_score => "a field".to_string(),
            None => "score".to_string(),
        };
        return Err(invalid(
            "search_after",
            format!(
                "the cursor was made for sort {made_for}, not {:?}; start again without search_after",
                excerpt(sort_key, 80)
            ),
        ));
    }
    Ok(SearchCursor { value: Some(SortValue { value }), id: body.id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cursor_round_trip_and_garbage() {
        let hit = ShardHit {
            id: "doc-7".into(),
            score: 1.5,
            sort: Some(SortValue { value: Some(sort_value::Value::Score(1.5)) }),
        };
        let cursor = decode_cursor(&encode_cursor(&hit, "_score"), "_score").unwrap();
        assert_eq!(cursor.id, "doc-7");
        assert_eq!(cursor.value.unwrap().value, Some(sort_value::Value::Score(1.5)));
        assert!(decode_cursor("not a cursor", "_score").is_err());
    }

    #[test]
    fn test_cursors_of_another_sort_are_refused() {
        let hit = |value| ShardHit { id: "d".into(), score: 1.0, sort: Some(SortValue { value: Some(value) }) };
        let by_year = encode_cursor(&hit(sort_value::Value::Int(1999)), &sort_key("year", true));
        decode_cursor(&by_year, "year:desc").unwrap();
        for other in ["_score", "year:asc", "month:desc"] {
            let err = decode_cursor(&by_year, other).unwrap_err().to_string();
            assert!(err.contains("search_after") && err.contains("year:desc"), "{err}");
        }
        // Cursors of older gateways carry no sort: their value's kind must fit.
        let old = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        decode_cursor(&old(r#"{"score":1.5,"id":"d"}"#), "_score").unwrap();
        decode_cursor(&old(r#"{"int":7,"id":"d"}"#), "year:asc").unwrap();
        decode_cursor(&old(r#"{"id":"d"}"#), "year:asc").unwrap();
        assert!(decode_cursor(&old(r#"{"score":1.5,"id":"d"}"#), "year:asc").is_err());
        assert!(decode_cursor(&old(r#"{"int":7,"id":"d"}"#), "_score").is_err());
        // Messages stay short whatever the cursor holds.
        let long = old(&format!(r#"{{"int":7,"id":"d","sort":"{}"}}"#, "s".repeat(5000)));
        assert!(decode_cursor(&long, "year:asc").unwrap_err().to_string().len() < 300);
    }

    #[test]
    fn test_facets_keep_the_most_frequent_and_count_the_rest() {
        let counts = HashMap::from([("a".to_string(), 5), ("b".to_string(), 3), ("c".to_string(), 3)]);
        let result = facet_result("tag", 2, counts);
        let shown: Vec<_> = result.counts.iter().map(|c| (c.value.as_str(), c.count)).collect();
        assert_eq!(shown, vec![("a", 5), ("b", 3)]);
        assert_eq!(result.other, 3);
    }
}
