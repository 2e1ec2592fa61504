//! Running a shard's part of a search against one view: parsing the query
//! string, building filters, gathering BM25 statistics (phase 1), scoring
//! with global statistics (phase 2) and highlighting (phase 3).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::time::Instant;

use omnishard_common::Error as InputError;
use omnishard_proto::v1::{FieldTokens, HighlightRequest, SearchFilter, SearchStatistics, TermStat};
use serde_json::Value;
use tantivy::query::{
    AllQuery, Bm25StatisticsProvider, BooleanQuery, ConstScoreQuery, EnableScoring, Occur, Query, QueryParser,
    RangeQuery, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::snippet::SnippetGenerator;
use tantivy::{Score, TantivyError, Term};

use super::collector::{Harvest, TopCollector};
use super::index::{tantivy_error, View};
use super::schema::{parse_date, FieldDef, Kind};
use crate::error::{Error, Result};

fn invalid(field: &'static str, reason: String) -> Error {
    Error::InvalidArgument(InputError::invalid(field, reason))
}

/// Parses a query string against a view. Empty matches everything; syntax
/// errors name their position.
pub fn parse(view: &View, text: &str) -> Result<Box<dyn Query>> {
    if text.trim().is_empty() {
        return Ok(Box::new(AllQuery));
    }
    let (_, errors) = tantivy::query_grammar::parse_query_lenient(text);
    if let Some(first) = errors.first() {
        return Err(invalid("query", format!("syntax error at position {}: {}", first.pos, first.message)));
    }
    let schema = view.index.schema();
    let defaults: Vec<Field> = view
        .schema
        .fields
        .iter()
        .filter(|f| f.kind == Kind::Text)
        .filter_map(|f| schema.get_field(&f.name).ok())
        .collect();
    let parser = QueryParser::for_index(&view.index, defaults);
    parser.parse_query(text).map_err(|e| invalid("query", e.to_string()))
}

/// Adds filters to `query` as constant-zero clauses: they select documents
/// without changing any score.
pub fn with_filters(view: &View, query: Box<dyn Query>, filters: &[SearchFilter]) -> Result<Box<dyn Query>> {
    if filters.is_empty() {
        return Ok(query);
    }
    let mut clauses = vec![(Occur::Must, query)];
    for filter in filters {
        let selector = filter_query(view, filter)?;
        clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(selector, 0.0)) as Box<dyn Query>));
    }
    Ok(Box::new(BooleanQuery::new(clauses)))
}

fn filter_query(view: &View, filter: &SearchFilter) -> Result<Box<dyn Query>> {
    let def = view
        .schema
        .field(&filter.field)
        .ok_or_else(|| invalid("filters", format!("unknown field {:?}", filter.field)))?;
    if def.kind == Kind::Text {
        return Err(invalid(
            "filters",
            format!("field {:?} is text; filter on keyword, i64, f64 or date fields", def.name),
        ));
    }
    let field = view.index.schema().get_field(&def.name).map_err(tantivy_error)?;
    let mut clauses: Vec<Box<dyn Query>> = Vec::new();
    if !filter.any_of.is_empty() {
        let mut options = Vec::with_capacity(filter.any_of.len());
        for value in &filter.any_of {
            let term = filter_term(def, field, value, true)?;
            options.push((Occur::Should, Box::new(TermQuery::new(term, IndexRecordOption::Basic)) as Box<dyn Query>));
        }
        clauses.push(Box::new(BooleanQuery::new(options)));
    }
    let bound = |text: &str, inclusive: bool| -> Result<Bound<Term>> {
        if text.is_empty() {
            return Ok(Bound::Unbounded);
        }
        let term = filter_term(def, field, text, false)?;
        Ok(if inclusive { Bound::Included(term) } else { Bound::Excluded(term) })
    };
    let lower = if filter.gt.is_empty() { bound(&filter.gte, true)? } else { bound(&filter.gt, false)? };
    let upper = if filter.lt.is_empty() { bound(&filter.lte, true)? } else { bound(&filter.lt, false)? };
    if !matches!((&lower, &upper), (Bound::Unbounded, Bound::Unbounded)) {
        if def.kind == Kind::Keyword {
            return Err(invalid("filters", format!("field {:?} is a keyword; ranges need i64, f64 or date", def.name)));
        }
        clauses.push(Box::new(RangeQuery::new(lower, upper)));
    }
    match clauses.len() {
        0 => Err(invalid("filters", format!("filter on {:?} has no values and no bounds", def.name))),
        1 => Ok(clauses.remove(0)),
        _ => Ok(Box::new(BooleanQuery::new(clauses.into_iter().map(|q| (Occur::Must, q)).collect()))),
    }
}

/// The term of one filter value, parsed by the field's kind.
fn filter_term(def: &FieldDef, field: Field, text: &str, exact: bool) -> Result<Term> {
    let wrong =
        |what: &str| invalid("filters", format!("field {:?} is {what} but the filter value is {text:?}", def.name));
    Ok(match def.kind {
        Kind::Text | Kind::Keyword => Term::from_field_text(field, text),
        Kind::I64 => Term::from_field_i64(field, text.parse().map_err(|_| wrong("an i64"))?),
        Kind::F64 => Term::from_field_f64(field, text.parse().map_err(|_| wrong("an f64"))?),
        Kind::Date => {
            let date = parse_date(text).ok_or_else(|| wrong("a date (RFC 3339 or epoch milliseconds)"))?;
            if exact {
                Term::from_field_date_for_search(field, date)
            } else {
                Term::from_field_date(field, date)
            }
        }
    })
}

/// Phase 1: this view's statistics for every term `query` scores.
pub fn statistics(view: &View, query: &dyn Query) -> Result<SearchStatistics> {
    let mut terms: BTreeSet<Term> = BTreeSet::new();
    query.query_terms(&mut |term, _| {
        terms.insert(term.clone());
    });
    let searcher = &view.searcher;
    let fields: BTreeSet<Field> = terms.iter().map(Term::field).collect();
    let mut stats = SearchStatistics {
        total_docs: Bm25StatisticsProvider::total_num_docs(searcher).map_err(tantivy_error)?,
        ..Default::default()
    };
    for field in fields {
        let tokens = Bm25StatisticsProvider::total_num_tokens(searcher, field).map_err(tantivy_error)?;
        stats.field_tokens.push(FieldTokens { field: field.field_id(), tokens });
    }
    for term in terms {
        let doc_freq = searcher.doc_freq(&term).map_err(tantivy_error)?;
        stats.terms.push(TermStat { term: term_key(&term), doc_freq });
    }
    Ok(stats)
}

/// A term's identity on the wire: field id, value type, value bytes.
/// Field ids agree across shards because schemas only ever append fields.
pub fn term_key(term: &Term) -> Vec<u8> {
    let value = term.serialized_value_bytes();
    let mut key = Vec::with_capacity(5 + value.len());
    key.extend_from_slice(&term.field().field_id().to_be_bytes());
    key.push(term.typ().to_code());
    key.extend_from_slice(value);
    key
}

/// Statistics of the whole cluster, as Tantivy's scorer asks for them.
pub struct GlobalStatistics {
    total_docs: u64,
    tokens: HashMap<u32, u64>,
    doc_freqs: HashMap<Vec<u8>, u64>,
}

impl GlobalStatistics {
    /// Checks the gathered statistics (a document frequency above the
    /// document count would break the idf formula).
    pub fn new(stats: &SearchStatistics) -> Result<GlobalStatistics> {
        let mut doc_freqs = HashMap::with_capacity(stats.terms.len());
        for term in &stats.terms {
            if term.doc_freq > stats.total_docs {
                return Err(invalid(
                    "statistics",
                    format!("document frequency {} exceeds the {} documents", term.doc_freq, stats.total_docs),
                ));
            }
            doc_freqs.insert(term.term.clone(), term.doc_freq);
        }
        let tokens = stats.field_tokens.iter().map(|f| (f.field, f.tokens)).collect();
        Ok(GlobalStatistics { total_docs: stats.total_docs, tokens, doc_freqs })
    }

    /// The global document frequency of a term, if known.
    pub fn doc_freq_of(&self, term: &Term) -> Option<u64> {
        self.doc_freqs.get(&term_key(term)).copied()
    }
}

impl Bm25StatisticsProvider for GlobalStatistics {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        self.tokens.get(&field.field_id()).copied().ok_or_else(|| {
            TantivyError::InvalidArgument(format!("no global statistics for field {}", field.field_id()))
        })
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.total_docs)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        self.doc_freq_of(term)
            .ok_or_else(|| TantivyError::InvalidArgument(format!("no global statistics for term {term:?}")))
    }
}

/// Phase 2: runs `query` on `view` with `collector`, scoring with `global`
/// statistics when given and the view's own otherwise.
pub fn run(
    view: &View,
    query: &dyn Query,
    collector: &TopCollector,
    global: Option<&GlobalStatistics>,
) -> Result<Harvest> {
    let searcher = &view.searcher;
    let scoring = match global {
        Some(stats) => EnableScoring::enabled_from_statistics_provider(stats, searcher),
        None => EnableScoring::enabled_from_searcher(searcher),
    };
    let harvest = searcher
        .search_with_executor(query, collector, searcher.index().search_executor(), scoring)
        .map_err(|e| match e {
            TantivyError::InvalidArgument(reason) => invalid("statistics", reason),
            other => tantivy_error(other),
        })?;
    if harvest.expired {
        return Err(Error::DeadlineExceeded(format!(
            "search did not finish within its deadline ({}ms past it)",
            Instant::now().saturating_duration_since(collector.deadline).as_millis()
        )));
    }
    Ok(harvest)
}

/// Phase 3: the best fragment of each highlighted field of `doc`, with the
/// query's terms wrapped in tags. Terms are weighted by global document
/// frequency, so the chosen fragment does not depend on the shard.
pub fn highlights(
    view: &View,
    query: &dyn Query,
    global: Option<&GlobalStatistics>,
    request: &HighlightRequest,
    doc: &serde_json::Map<String, Value>,
) -> Result<HashMap<String, String>> {
    let schema = view.index.schema();
    let (pre, post) = tags(request);
    let max_chars = if request.max_chars == 0 { 150 } else { request.max_chars as usize };
    let mut out = HashMap::new();
    for name in &request.fields {
        let def =
            view.schema.field(name).ok_or_else(|| invalid("highlight.fields", format!("unknown field {name:?}")))?;
        if def.kind != Kind::Text {
            return Err(invalid("highlight.fields", format!("field {name:?} is not a text field")));
        }
        let field = schema.get_field(name).map_err(tantivy_error)?;
        let generator = snippet_generator(view, query, global, field, max_chars)?;
        let text = field_text(doc.get(name));
        let snippet = generator.snippet(&text);
        if snippet.is_empty() {
            continue;
        }
        out.insert(name.clone(), tag(snippet.fragment(), snippet.highlighted(), pre, post));
    }
    Ok(out)
}

fn tags(request: &HighlightRequest) -> (&str, &str) {
    let pre = if request.pre_tag.is_empty() { "<b>" } else { request.pre_tag.as_str() };
    let post = if request.post_tag.is_empty() { "</b>" } else { request.post_tag.as_str() };
    (pre, post)
}

fn snippet_generator(
    view: &View,
    query: &dyn Query,
    global: Option<&GlobalStatistics>,
    field: Field,
    max_chars: usize,
) -> Result<SnippetGenerator> {
    let mut weights: BTreeMap<String, Score> = BTreeMap::new();
    let mut terms: Vec<Term> = Vec::new();
    query.query_terms(&mut |term, _| {
        if term.field() == field {
            terms.push(term.clone());
        }
    });
    for term in terms {
        let Some(text) = term.value().as_str().map(str::to_string) else { continue };
        let doc_freq = match global.and_then(|g| g.doc_freq_of(&term)) {
            Some(df) => df,
            None => view.searcher.doc_freq(&term).map_err(tantivy_error)?,
        };
        // Rarer terms make better fragments (Tantivy's own weighting).
        weights.insert(text, 1.0 / (1.0 + doc_freq as Score));
    }
    let tokenizer = view.index.tokenizer_for_field(field).map_err(tantivy_error)?;
    Ok(SnippetGenerator::new(weights, tokenizer, field, max_chars))
}

/// The text of a field value: strings joined by spaces.
fn field_text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "),
        _ => String::new(),
    }
}

/// Wraps the highlighted ranges of `fragment` in tags (no HTML escaping:
/// the caller chose the tags and knows its output format).
fn tag(fragment: &str, ranges: &[std::ops::Range<usize>], pre: &str, post: &str) -> String {
    let mut out = String::with_capacity(fragment.len() + ranges.len() * (pre.len() + post.len()));
    let mut at = 0;
    for range in ranges {
        let (Some(before), Some(inner)) = (fragment.get(at..range.start), fragment.get(range.clone())) else {
            continue;
        };
        out.push_str(before);
        out.push_str(pre);
        out.push_str(inner);
        out.push_str(post);
        at = range.end;
    }
    out.push_str(fragment.get(at..).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_tags_wrap_ranges() {
        assert_eq!(tag("the quick fox", &[4..9, 10..13], "[", "]"), "the [quick] [fox]");
        assert_eq!(tag("abc", &[], "[", "]"), "abc");
    }
}
