//! Running a shard's part of a search against one view: parsing the query
//! string, building filters, gathering BM25 statistics (phase 1), scoring
//! with global statistics (phase 2) and highlighting (phase 3).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::time::Instant;

use omnishard_common::query_text::{self, excerpt, MAX_TERM_BYTES};
use omnishard_common::Error as InputError;
use omnishard_proto::v1::{FieldTokens, HighlightRequest, SearchFilter, SearchStatistics, TermStat};
use serde_json::Value;
use tantivy::query::{
    AllQuery, Bm25StatisticsProvider, BooleanQuery, ConstScoreQuery, EnableScoring, Occur, Query, QueryParser,
    QueryParserError, RangeQuery, TermQuery,
};
use tantivy::query_grammar::{UserInputAst, UserInputBound, UserInputLeaf};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::snippet::SnippetGenerator;
use tantivy::time::format_description::well_known::Rfc3339;
use tantivy::time::OffsetDateTime;
use tantivy::{DateTime, Score, TantivyError, Term};

use super::collector::{Harvest, TopCollector};
use super::index::{tantivy_error, View};
use super::schema::{parse_date, quote, DateError, FieldDef, IndexSchema, Kind};
use crate::error::{Error, Result};

fn invalid(field: &'static str, reason: String) -> Error {
    Error::InvalidArgument(InputError::invalid(field, reason))
}

/// Parses a query string against a view. Empty matches everything; syntax
/// errors name their position. Messages quote at most an excerpt of the
/// query: a status message travels in an HTTP/2 header, which has a size limit.
pub fn parse(view: &View, text: &str) -> Result<Box<dyn Query>> {
    // Before any parser: Tantivy's grammar recurses once per nesting level.
    query_text::check(text)?;
    if text.trim().is_empty() {
        return Ok(Box::new(AllQuery));
    }
    let (ast, errors) = tantivy::query_grammar::parse_query_lenient(text);
    if let Some(first) = errors.first() {
        // Most messages are fixed; a regex error quotes the rest of the query.
        let message = excerpt(&first.message, 120);
        return Err(invalid("query", format!("syntax error at position {}: {message}", first.pos)));
    }
    check_values(&view.schema, &ast)?;
    let schema = view.index.schema();
    let defaults: Vec<Field> = view
        .schema
        .fields
        .iter()
        .filter(|f| f.kind == Kind::Text)
        .filter_map(|f| schema.get_field(&f.name).ok())
        .collect();
    let parser = QueryParser::for_index(&view.index, defaults);
    parser.parse_query(text).map_err(|e| invalid("query", parse_error(text, &e)))
}

/// Refuses values in the query text that a field would read as another
/// value, as filters do: Tantivy clamps a date past its range to the end of
/// it (`at:"2299-01-01T00:00:00Z"` would match a document at 2262-04-11),
/// and `NaN` or an inexact whole number would compare as something else.
fn check_values(schema: &IndexSchema, ast: &UserInputAst) -> Result<()> {
    // A loop, not recursion: the tree is as deep as the check allowed.
    let mut pending = vec![ast];
    while let Some(node) = pending.pop() {
        let leaf = match node {
            UserInputAst::Clause(clauses) => {
                pending.extend(clauses.iter().map(|(_, clause)| clause));
                continue;
            }
            UserInputAst::Boost(inner, _) => {
                pending.push(inner);
                continue;
            }
            UserInputAst::Leaf(leaf) => leaf.as_ref(),
        };
        let bound = |b: &'_ UserInputBound| match b {
            UserInputBound::Inclusive(text) | UserInputBound::Exclusive(text) => Some(text.clone()),
            UserInputBound::Unbounded => None,
        };
        let (field, values): (&Option<String>, Vec<String>) = match leaf {
            UserInputLeaf::Literal(literal) => (&literal.field_name, vec![literal.phrase.clone()]),
            UserInputLeaf::Range { field, lower, upper } => {
                (field, [lower, upper].into_iter().filter_map(bound).collect())
            }
            UserInputLeaf::Set { field, elements } => (field, elements.clone()),
            _ => continue,
        };
        let Some(def) = field.as_deref().and_then(|name| schema.field(name)) else { continue };
        for value in &values {
            check_query_value(def, value)?;
        }
    }
    Ok(())
}

/// One value of the query text, for the field it names (Tantivy reports
/// values it cannot read at all itself).
fn check_query_value(def: &FieldDef, text: &str) -> Result<()> {
    match def.kind {
        Kind::Date => {
            let parsed = OffsetDateTime::parse(text, &Rfc3339).ok();
            if parsed.is_some_and(|date| DateTime::try_from_utc(date).is_none()) {
                return Err(invalid("query", def.date_out_of_range(&text)));
            }
        }
        Kind::F64 => {
            if let Ok(value) = text.parse::<f64>() {
                if !value.is_finite() {
                    return Err(invalid(
                        "query",
                        format!("field {:?}: {} is not a finite number", def.name, quote(text)),
                    ));
                }
                if let Ok(whole) = text.parse::<i128>() {
                    def.check_exact(whole, value).map_err(|reason| invalid("query", reason))?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// A bounded message for a query Tantivy refused.
fn parse_error(text: &str, err: &QueryParserError) -> String {
    match err {
        // Tantivy's syntax error is the whole query.
        QueryParserError::SyntaxError(_) => format!("syntax error in {}", quote(text)),
        // Others may quote field names and terms from the query.
        other => excerpt(&other.to_string(), 200),
    }
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
        .ok_or_else(|| invalid("filters", format!("unknown field {}", quote(&filter.field))))?;
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

/// The term of one filter value, parsed by the field's kind. Values the
/// index could not hold as given are refused, as they are in documents: a
/// rounded bound would answer another question.
fn filter_term(def: &FieldDef, field: Field, text: &str, exact: bool) -> Result<Term> {
    let wrong = |what: &str| {
        invalid("filters", format!("field {:?} is {what} but the filter value is {}", def.name, quote(text)))
    };
    Ok(match def.kind {
        Kind::Text | Kind::Keyword => {
            if text.len() > MAX_TERM_BYTES {
                return Err(invalid(
                    "filters",
                    format!(
                        "field {:?}: value is {} bytes; the limit is {MAX_TERM_BYTES} (longer terms are not indexed)",
                        def.name,
                        text.len()
                    ),
                ));
            }
            Term::from_field_text(field, text)
        }
        Kind::I64 => Term::from_field_i64(field, text.parse().map_err(|_| wrong("an i64"))?),
        Kind::F64 => {
            let value: f64 = text.parse().map_err(|_| wrong("an f64"))?;
            if !value.is_finite() {
                return Err(wrong("an f64 (a finite number)"));
            }
            if let Ok(whole) = text.parse::<i128>() {
                def.check_exact(whole, value).map_err(|reason| invalid("filters", reason))?;
            }
            Term::from_field_f64(field, value)
        }
        Kind::Date => {
            let date = parse_date(text).map_err(|e| match e {
                DateError::NotADate => wrong("a date (RFC 3339 or epoch milliseconds)"),
                DateError::OutOfRange => invalid("filters", def.date_out_of_range(&text)),
            })?;
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
        let def = view
            .schema
            .field(name)
            .ok_or_else(|| invalid("highlight.fields", format!("unknown field {}", quote(name))))?;
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
    use std::sync::{Arc, OnceLock};
    use std::time::Duration;

    use omnishard_common::query_text::MAX_QUERY_DEPTH;
    use omnishard_proto::v1::{FieldSpec, FieldType};
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use tantivy::query_grammar::UserInputAst;
    use tantivy::Index;

    use super::super::collector::SortBy;
    use super::super::schema::IndexSchema;
    use super::*;

    #[test]
    fn test_tags_wrap_ranges() {
        assert_eq!(tag("the quick fox", &[4..9, 10..13], "[", "]"), "the [quick] [fox]");
        assert_eq!(tag("abc", &[], "[", "]"), "abc");
    }

    /// A stack far smaller than a search thread's (2 MiB): a query whose
    /// nesting the check misjudged would overflow it and abort the tests.
    const SMALL_STACK: usize = 256 * 1024;

    /// A view of a small in-memory index: text `title` and `body`, keyword
    /// `tag`, i64 `n`, f64 `r`, date `at`.
    fn view() -> &'static View {
        static VIEW: OnceLock<View> = OnceLock::new();
        VIEW.get_or_init(|| {
            let field = |name: &str, kind: FieldType| FieldSpec {
                name: name.into(),
                r#type: kind as i32,
                analyzer: String::new(),
            };
            let schema = IndexSchema::from_proto(&[
                field("title", FieldType::Text),
                field("body", FieldType::Text),
                field("tag", FieldType::Keyword),
                field("n", FieldType::I64),
                field("r", FieldType::F64),
                field("at", FieldType::Date),
            ])
            .unwrap();
            let index = Index::create_in_ram(schema.tantivy());
            let mut writer = index.writer_with_num_threads(1, 15_000_000).unwrap();
            for (id, json) in [
                ("1", r#"{"title":"hello world","body":"a b x","tag":"t1","n":1,"r":1.5,"at":"2024-01-01T00:00:00Z"}"#),
                ("2", r#"{"title":"x","body":"hello","tag":"t2","n":2,"r":2.5,"at":0}"#),
            ] {
                let object = schema.check_document(id, json).unwrap();
                writer.add_document(schema.to_tantivy(&index.schema(), id, &object).unwrap()).unwrap();
            }
            writer.commit().unwrap();
            let searcher = index.reader().unwrap().searcher();
            View { id: 1, searcher, index, schema: Arc::new(schema) }
        })
    }

    /// Everything a shard does with a query string: check, parse, filter,
    /// gather statistics, score and collect.
    fn search(text: &str) -> Result<u64> {
        let view = view();
        let query = parse(view, text)?;
        let filter = SearchFilter { field: "n".into(), gte: "0".into(), ..Default::default() };
        let query = with_filters(view, query, &[filter])?;
        statistics(view, query.as_ref())?;
        let collector = TopCollector {
            limit: 10,
            sort: SortBy::Score,
            after: None,
            min_score: None,
            facets: vec!["tag".into()],
            deadline: Instant::now() + Duration::from_secs(60),
        };
        Ok(run(view, query.as_ref(), &collector, None)?.total)
    }

    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new().stack_size(SMALL_STACK).spawn(f).unwrap().join().unwrap()
    }

    /// Levels of the parsed tree (each nesting level adds at most three:
    /// a clause, a sub-clause of mixed AND/OR, a boost).
    fn ast_depth(ast: &UserInputAst) -> usize {
        match ast {
            UserInputAst::Clause(clauses) => 1 + clauses.iter().map(|(_, c)| ast_depth(c)).max().unwrap_or(0),
            UserInputAst::Boost(inner, _) => 1 + ast_depth(inner),
            UserInputAst::Leaf(_) => 0,
        }
    }

    /// Searches `text` on a small stack; for text the check lets through,
    /// also checks that neither grammar built a deeper tree than it allows.
    fn survives(text: String) -> std::result::Result<(), String> {
        on_small_stack(move || {
            let _ = search(&text);
            if query_text::check(&text).is_ok() {
                let limit = 3 * (MAX_QUERY_DEPTH + 1);
                let (lenient, _) = tantivy::query_grammar::parse_query_lenient(&text);
                if ast_depth(&lenient) > limit {
                    return Err(format!("{text:?} passed the check but nests {} levels", ast_depth(&lenient)));
                }
                if let Ok(strict) = tantivy::query_grammar::parse_query(&text) {
                    if ast_depth(&strict) > limit {
                        return Err(format!("{text:?} passed the check but nests {} levels", ast_depth(&strict)));
                    }
                }
            }
            Ok(())
        })
    }

    #[test]
    fn test_deep_nesting_is_refused_before_parsing() {
        for open in ["(", "body:(", "(hello AND ", "NOT ", "+(", "x a(", "NOT ("] {
            let deep = format!("{}x{}", open.repeat(850), ")".repeat(850));
            let err = on_small_stack(move || search(&deep).map(|_| ()).unwrap_err().to_string());
            assert!(err.contains("levels deep; the limit is 32"), "{open}: {err}");
            // The deepest accepted query runs through every step on the small stack.
            let ok = format!("{}hello{}", open.repeat(MAX_QUERY_DEPTH / 2), ")".repeat(MAX_QUERY_DEPTH / 2));
            on_small_stack(move || search(&ok).map(|_| ()).map_err(|e| e.to_string())).ok();
        }
        let at_limit = format!("{}hello{}", "(".repeat(MAX_QUERY_DEPTH), ")".repeat(MAX_QUERY_DEPTH));
        assert_eq!(on_small_stack(move || search(&at_limit).unwrap()), 2);
        // Tantivy may refuse a query of only negations; it must not overflow doing so.
        let nots = format!("hello {}x", "NOT ".repeat(MAX_QUERY_DEPTH));
        on_small_stack(move || search(&nots).map(|_| ()).map_err(|e| e.to_string())).ok();
    }

    #[test]
    fn test_nesting_hidden_by_quotes_one_grammar_misreads_is_refused() {
        // Each text nests 100 levels to one of the grammars, behind quotes the
        // other grammar pairs differently; none may pass the check. The strict
        // grammar runs when the lenient one finds no error; it may fail after
        // recursing, so its depth is measured on the prefix it recurses into.
        let nested = format!("{}z{}", "(x y ".repeat(100), ")".repeat(100));
        let cases = [
            // (text, prefix the strict grammar nests in, if the lenient one does not)
            (format!("x a\"b \"{nested}\" c\"d"), Some(String::new())),
            (format!("x a'b '{nested}' c'd"), Some(String::new())),
            (format!("x >=a\\\" \"{nested}\" y >=b\\\""), Some(format!("x >=a\\\" \"{nested}"))),
            (format!("f:+\"x {nested} \" g:+\"y"), None),
            (format!("x a(\"b {nested} \" c(\"d"), None),
            (format!("x it's\" {nested} \""), None),
        ];
        for (text, strict_prefix) in cases {
            assert!(query_text::check(&text).is_err(), "{text}");
            let depth = std::thread::Builder::new()
                .stack_size(64 * 1024 * 1024)
                .spawn(move || {
                    let (lenient, errors) = tantivy::query_grammar::parse_query_lenient(&text);
                    let depth = match strict_prefix {
                        None => ast_depth(&lenient),
                        Some(prefix) => {
                            assert!(errors.is_empty(), "{text:?}: the strict grammar would not run: {errors:?}");
                            let probe = if prefix.is_empty() { &text } else { &prefix };
                            tantivy::query_grammar::parse_query(probe).map_or(0, |ast| ast_depth(&ast))
                        }
                    };
                    (text, depth)
                })
                .unwrap()
                .join()
                .unwrap();
            assert!(depth.1 >= 100, "{:?} nests only {} levels", depth.0, depth.1);
        }
    }

    #[test]
    fn test_flat_chains_do_not_recurse() {
        // The grammar parses operand lists in loops: no clause cap is needed.
        for chain in
            ["hello AND ".repeat(6_000), "+hello ".repeat(9_000), "hello OR ".repeat(7_000), "(x) ".repeat(15_000)]
        {
            let text = format!("{chain}hello");
            assert!(text.len() <= query_text::MAX_QUERY_BYTES);
            on_small_stack(move || search(&text).unwrap());
        }
    }

    #[test]
    fn test_query_errors_quote_only_an_excerpt() {
        let long = "word ".repeat(4_000);
        // Lenient-clean but strict-invalid: Tantivy's own error is the whole query.
        let strict_only = format!("{long}a(b");
        assert!(tantivy::query_grammar::parse_query_lenient(&strict_only).1.is_empty());
        let schema = view().index.schema();
        let parser = QueryParser::for_index(&view().index, vec![schema.get_field("body").unwrap()]);
        assert!(parser.parse_query(&strict_only).unwrap_err().to_string().len() > strict_only.len());
        for text in [
            format!("{long}a(b"),
            format!("{long}plant AND ("),
            format!("{long} /unclosed"),
            format!("{}:x", "f".repeat(20_000)),
        ] {
            let err = search(&text).unwrap_err();
            let message = err.to_string();
            assert!(matches!(err, Error::InvalidArgument(_)), "{message}");
            assert!(message.len() < 400, "{} bytes: {}", message.len(), &message[..200]);
        }
        let err = parse_error(&long, &QueryParserError::SyntaxError(long.clone()));
        assert!(err.len() < 200 && err.contains("20000 bytes"), "{err}");
    }

    #[test]
    fn test_query_values_the_index_cannot_hold_are_refused() {
        for text in [
            "at:>=2299-01-01T00:00:00Z",
            "at:[* TO 1600-01-01T00:00:00Z]",
            "at:\"2299-01-01T00:00:00Z\"",
            "body:(x at:>2299-01-01T00:00:00Z)",
            "r:>=NaN",
            "r:inf",
            "r:9007199254740993",
            "hello AND (r:[1 TO 9007199254740993] OR x)",
        ] {
            let err = search(text).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{text}: {err}");
            let field = if text.contains("at:") { "\"at\"" } else { "\"r\"" };
            assert!(err.to_string().contains(field), "{text}: {err}");
        }
        assert_eq!(search("at:>=2024-01-01T00:00:00Z").unwrap(), 1);
        assert_eq!(search("r:[1 TO 9007199254740992]").unwrap(), 2);
        assert_eq!(search("at:<=2262-04-11T23:47:16.854Z").unwrap(), 2);
    }

    #[test]
    fn test_filter_values_the_index_cannot_hold_are_refused() {
        let view = view();
        let filter =
            |field: &str, gte: &str| SearchFilter { field: field.into(), gte: gte.into(), ..Default::default() };
        let refused =
            |f: SearchFilter| with_filters(view, Box::new(AllQuery), &[f]).map(|_| ()).unwrap_err().to_string();
        for value in ["2299-01-01T00:00:00Z", "9223372036854775807", "-9223372036854775808"] {
            let err = refused(filter("at", value));
            assert!(err.contains("\"at\"") && err.contains("2262-04-11"), "{err}");
        }
        for value in ["NaN", "inf", "9007199254740993"] {
            assert!(refused(filter("r", value)).contains("\"r\""), "{value}");
        }
        let long = "k".repeat(70_000);
        let err = refused(SearchFilter { field: "tag".into(), any_of: vec![long], ..Default::default() });
        assert!(err.contains("65530") && err.len() < 300, "{err}");
        let err = refused(filter("n", &"9".repeat(70_000)));
        assert!(err.len() < 300, "{err}");
        // Values in range still filter.
        with_filters(view, Box::new(AllQuery), &[filter("at", "2262-04-11T23:47:16.854Z")]).unwrap();
        with_filters(view, Box::new(AllQuery), &[filter("r", "9007199254740992")]).unwrap();
    }

    /// Fragments that stress the places the grammars read differently.
    #[rustfmt::skip]
    const FRAGMENTS: &[&str] = &[
        "(", "(", "(", "(", ")", ")", "\"", "'", "\\", " ", " ", "a", "title:", "body:(", "NOT ", "AND ", "OR ", "+",
        "-", ">=", "<", "*", "^2", "~1", ":", "\t", "é", "\u{3000}", "]", "}", "`", "x(", "NOT", "^", "~", "[", "{",
        "/", "a\"", "\\(", "\\\"", "IN [", " TO ", "*\"", "((((((((((((((((", "))))))))))))))))", " \"", "' ", "a'",
        "f:+", ">=a\\",
    ];

    /// A piece of a query: a closed group around a fragment, an open group, a
    /// close, or a fragment. Such queries hold many parentheses yet nest
    /// little, so they pass only when the check reads their phrases.
    fn unit() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(FRAGMENTS).prop_map(|f| format!("({f} x)")),
            2 => prop::sample::select(FRAGMENTS).prop_map(|f| format!("({f}")),
            2 => Just(")".to_string()),
            2 => prop::sample::select(FRAGMENTS).prop_map(str::to_string),
        ]
    }

    #[test]
    fn test_the_phrase_aware_reading_is_exercised() {
        // Queries with more parentheses than the limit that pass anyway: the
        // cases where a misread phrase could hide real nesting.
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = prop::collection::vec(unit(), 0..300);
        let mut phrase_aware = 0;
        for _ in 0..5_000 {
            let text = strategy.new_tree(&mut runner).unwrap().current().concat();
            if text.matches('(').count() > MAX_QUERY_DEPTH && query_text::check(&text).is_ok() {
                phrase_aware += 1;
                assert_eq!(survives(text), Ok(()));
            }
        }
        assert!(phrase_aware > 60, "only {phrase_aware} queries took the phrase-aware reading");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn test_checked_queries_parse_on_a_small_stack(
            parts in prop::collection::vec(prop::sample::select(FRAGMENTS), 0..300)
        ) {
            let text: String = parts.concat();
            prop_assert_eq!(survives(text), Ok(()));
        }

        #[test]
        fn test_balanced_queries_with_tricks_parse_on_a_small_stack(
            units in prop::collection::vec(unit(), 0..300)
        ) {
            prop_assert_eq!(survives(units.concat()), Ok(()));
        }

        #[test]
        fn test_any_text_is_checked_without_panicking(text in "\\PC{0,200}") {
            prop_assert_eq!(survives(text), Ok(()));
        }
    }
}
