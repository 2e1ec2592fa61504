//! The search workloads: a real-language corpus (WordNet's English glosses)
//! indexed into any [`SearchSystem`], then term, phrase and boolean queries
//! drawn from the corpus, timed one client at a time (latency) and from many
//! clients (throughput). Each system's top 10 per query is kept, so the
//! report can say how often omnishard's equal single-process Tantivy's.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::kv::DriverResult;
use crate::runner::{self, OpClient, Timing};
use crate::stats::{Measurement, Recorder};

/// One corpus document: a WordNet synset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Doc {
    pub id: String,
    /// Its words, comma-separated.
    pub title: String,
    /// Its gloss: definition and examples.
    pub body: String,
    /// Part of speech: noun, verb, adj, adv.
    pub pos: String,
    /// Lexicographer file number.
    pub lexfile: i64,
}

impl Doc {
    /// The document as the JSON object every system is given.
    pub fn json(&self) -> String {
        serde_json::json!({"title": self.title, "body": self.body, "pos": self.pos, "lexfile": self.lexfile})
            .to_string()
    }
}

/// Reads every synset of WordNet's data files in `dir` (Debian's
/// `wordnet-base`: `/usr/share/wordnet`) and keeps `limit` of them, evenly
/// spread over the parts of speech.
pub fn wordnet(dir: &Path, limit: usize) -> DriverResult<Vec<Doc>> {
    let mut docs = Vec::new();
    // WordNet's own part-of-speech letters keep ids unique across files.
    for (pos, letter, file) in
        [("noun", 'n', "data.noun"), ("verb", 'v', "data.verb"), ("adj", 'a', "data.adj"), ("adv", 'r', "data.adv")]
    {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).map_err(|e| {
            format!("reading {}: {e} (install the corpus: apt-get install wordnet-base)", path.display())
        })?;
        docs.extend(String::from_utf8_lossy(&bytes).lines().filter_map(|line| synset(line, pos, letter)));
    }
    if docs.len() < limit {
        return Err(format!("the corpus has {} documents; asked for {limit}", docs.len()));
    }
    let step = docs.len() as f64 / limit as f64;
    Ok((0..limit).map(|i| docs[(i as f64 * step) as usize].clone()).collect())
}

/// One line of a WordNet data file: `offset lexfile pos count word lexid … | gloss`.
fn synset(line: &str, pos: &str, letter: char) -> Option<Doc> {
    if line.starts_with("  ") {
        return None; // licence header
    }
    let (head, gloss) = line.split_once(" | ")?;
    let parts: Vec<&str> = head.split_whitespace().collect();
    let count = usize::from_str_radix(parts.get(3)?, 16).ok()?;
    let words: Vec<String> = (0..count).filter_map(|i| parts.get(4 + 2 * i)).map(|w| w.replace('_', " ")).collect();
    Some(Doc {
        id: format!("{letter}{}", parts.first()?),
        title: words.join(", "),
        body: gloss.trim().to_string(),
        pos: pos.to_string(),
        lexfile: parts.get(1)?.parse().ok()?,
    })
}

/// The kinds of query timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// One word.
    Term,
    /// Two adjacent words.
    Phrase,
    /// `a AND (b OR c)`.
    Boolean,
}

impl QueryKind {
    pub const ALL: [QueryKind; 3] = [QueryKind::Term, QueryKind::Phrase, QueryKind::Boolean];

    pub fn name(self) -> &'static str {
        match self {
            QueryKind::Term => "term",
            QueryKind::Phrase => "phrase",
            QueryKind::Boolean => "boolean",
        }
    }
}

/// One query: its kind and its lower-case alphabetic words.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub kind: QueryKind,
    pub words: Vec<String>,
}

impl Query {
    /// The query in Tantivy's query language (omnishard's too).
    pub fn tantivy(&self) -> String {
        match (self.kind, self.words.as_slice()) {
            (QueryKind::Phrase, [a, b]) => format!("\"{a} {b}\""),
            (QueryKind::Boolean, [a, b, c]) => format!("{a} AND ({b} OR {c})"),
            _ => self.words.join(" "),
        }
    }

    /// The query as PostgreSQL's `to_tsquery` text.
    pub fn tsquery(&self) -> String {
        match (self.kind, self.words.as_slice()) {
            (QueryKind::Phrase, [a, b]) => format!("{a} <-> {b}"),
            (QueryKind::Boolean, [a, b, c]) => format!("{a} & ({b} | {c})"),
            _ => self.words.join(" & "),
        }
    }
}

/// `n` queries of `kind`: words of at least 4 letters drawn from the
/// bodies of random documents (two adjacent ones for phrases), so they
/// match something.
pub fn sample_queries(docs: &[Doc], kind: QueryKind, n: usize) -> Vec<Query> {
    let mut rng = StdRng::seed_from_u64(7 + kind as u64);
    let mut queries = Vec::with_capacity(n);
    while queries.len() < n && !docs.is_empty() {
        let doc = &docs[rng.random_range(0..docs.len())];
        // Every word in order, so a phrase's two words are really adjacent.
        let words: Vec<String> = doc
            .body
            .split(|c: char| !c.is_ascii_alphabetic())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        let long = |i: usize| words.get(i).is_some_and(|w| w.len() >= 4);
        let picked: Vec<String> = match kind {
            QueryKind::Phrase => {
                let starts: Vec<usize> = (0..words.len()).filter(|&i| long(i) && long(i + 1)).collect();
                let Some(&i) = starts.get(rng.random_range(0..starts.len().max(1))) else { continue };
                words[i..i + 2].to_vec()
            }
            QueryKind::Term | QueryKind::Boolean => {
                let long_words: Vec<&String> = (0..words.len()).filter(|&i| long(i)).map(|i| &words[i]).collect();
                let wanted = if kind == QueryKind::Term { 1 } else { 3 };
                if long_words.len() < wanted {
                    continue;
                }
                let start = rng.random_range(0..=long_words.len() - wanted);
                long_words[start..start + wanted].iter().map(|w| w.to_string()).collect()
            }
        };
        queries.push(Query { kind, words: picked });
    }
    queries
}

/// `len` documents cut into ranges of `batch` (at least 1), for loading.
pub fn batches(len: usize, batch: usize) -> Vec<std::ops::Range<usize>> {
    let batch = batch.max(1);
    (0..len).step_by(batch).map(|start| start..(start + batch).min(len)).collect()
}

/// One hit of a top 10.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: String,
    pub score: f32,
}

/// A full-text search system under test.
pub trait SearchSystem: Send + Sync + 'static {
    type Client: SearchClient;

    fn name(&self) -> String;

    /// Indexes every document with `loaders` connections, `batch` documents
    /// per call, and returns once all of them are durable and searchable.
    fn index(&self, docs: Arc<Vec<Doc>>, loaders: usize, batch: usize)
        -> impl Future<Output = DriverResult<()>> + Send;

    /// A new connection for one client task.
    fn client(&self) -> impl Future<Output = DriverResult<Self::Client>> + Send;
}

/// One client's connection to a search system.
pub trait SearchClient: Send + 'static {
    /// The 10 best documents for `query` by the system's own relevance
    /// ranking (fetched where the system stores them), best first.
    fn search(&mut self, query: &Query) -> impl Future<Output = DriverResult<Vec<Hit>>> + Send;
}

/// Adapts a [`SearchClient`] to the timed runner.
struct Driven<C>(C);

impl<C: SearchClient> OpClient for Driven<C> {
    type Op = Query;

    async fn execute(&mut self, query: &Query) -> DriverResult<()> {
        self.0.search(query).await.map(drop)
    }
}

/// The shape of the search workloads; the same for every system in one run.
#[derive(Debug, Clone, Copy)]
pub struct SearchConfig {
    pub loaders: usize,
    pub batch: usize,
    /// Queries of each kind.
    pub queries: usize,
    /// Clients of the concurrent run (the per-kind runs use one).
    pub clients: usize,
    pub timing: Timing,
}

/// What a search run measured, and each query's top 10 for comparison.
pub struct SearchRun {
    pub measurements: Vec<Measurement>,
    /// Per kind (in [`QueryKind::ALL`] order), the top 10 of every query.
    pub answers: Vec<Vec<Vec<Hit>>>,
}

/// Indexes `docs` into `system`, then times each kind of query from one
/// client and all kinds mixed from `config.clients` clients.
pub async fn run<S: SearchSystem>(system: &S, docs: Arc<Vec<Doc>>, config: &SearchConfig) -> DriverResult<SearchRun> {
    let name = system.name();
    let started = Instant::now();
    system.index(docs.clone(), config.loaders, config.batch).await?;
    let took = started.elapsed();
    let mut measurements = vec![index_measurement(&name, docs.len(), took)];
    let mut answers = Vec::new();
    let mut mixed = Vec::new();
    for kind in QueryKind::ALL {
        let queries = sample_queries(&docs, kind, config.queries);
        let mut client = system.client().await?;
        let mut tops = Vec::with_capacity(queries.len());
        for query in &queries {
            tops.push(client.search(query).await?);
        }
        if tops.iter().all(Vec::is_empty) {
            return Err(format!("{name}: no {} query matched anything", kind.name()));
        }
        answers.push(tops);
        let recorder = runner::drive(vec![Driven(client)], Arc::new(queries.clone()), "query", config.timing).await?;
        let workload = format!("search-{} ({} queries from the corpus, top 10, 1 client)", kind.name(), queries.len());
        measurements.push(Measurement::of(&name, workload, &recorder, config.timing.duration, 1.0, "queries"));
        mixed.extend(queries);
    }
    let mut clients = Vec::new();
    for _ in 0..config.clients {
        clients.push(Driven(system.client().await?));
    }
    let recorder = runner::drive(clients, Arc::new(mixed), "query", config.timing).await?;
    let workload = format!("search-concurrent (term, phrase and boolean queries, {} clients)", config.clients);
    measurements.push(Measurement::of(&name, workload, &recorder, config.timing.duration, 1.0, "queries"));
    Ok(SearchRun { measurements, answers })
}

fn index_measurement(name: &str, docs: usize, took: Duration) -> Measurement {
    let mut recorder = Recorder::new();
    recorder.record("index", took, true);
    let workload = format!("search-index (index {docs} WordNet glosses until durable and searchable)");
    Measurement::of(name, workload, &recorder, took, docs as f64, "docs")
}

/// Relative difference under which two scores count as tied (float sums in
/// a different order differ in the last bits).
const SCORE_TOLERANCE: f32 = 1e-4;

/// Hits per query compared.
pub const TOP: usize = 10;

/// Whether two top-10 lists are the same ranking: the same ids at the same
/// scores, where documents tied on a score may come in either order, and
/// in a full list the last tied group (which the cut at 10 may split
/// differently) only needs the same score and size.
pub fn same_ranking(a: &[Hit], b: &[Hit]) -> bool {
    let (groups_a, groups_b) = (tie_groups(a), tie_groups(b));
    if groups_a.len() != groups_b.len() {
        return false;
    }
    let cut = a.len() == TOP && b.len() == TOP;
    let last = groups_a.len().saturating_sub(1);
    groups_a.iter().zip(&groups_b).enumerate().all(|(i, ((score_a, ids_a), (score_b, ids_b)))| {
        let same_score = (score_a - score_b).abs() <= SCORE_TOLERANCE * score_a.abs().max(1.0);
        same_score && ids_a.len() == ids_b.len() && ((cut && i == last) || ids_a == ids_b)
    })
}

/// Hits grouped by (nearly) equal score, ids sorted within a group.
fn tie_groups(hits: &[Hit]) -> Vec<(f32, Vec<&str>)> {
    let mut groups: Vec<(f32, Vec<&str>)> = Vec::new();
    for hit in hits {
        match groups.last_mut() {
            Some((score, ids)) if (*score - hit.score).abs() <= SCORE_TOLERANCE * score.abs().max(1.0) => {
                ids.push(&hit.id)
            }
            _ => groups.push((hit.score, vec![&hit.id])),
        }
    }
    for (_, ids) in &mut groups {
        ids.sort_unstable();
    }
    groups
}

/// The share of queries whose top 10 is the same ranking in `ours` as in `theirs`.
pub fn agreement(ours: &[Vec<Vec<Hit>>], theirs: &[Vec<Vec<Hit>>]) -> f64 {
    let pairs: Vec<(&Vec<Hit>, &Vec<Hit>)> = ours.iter().flatten().zip(theirs.iter().flatten()).collect();
    if pairs.is_empty() {
        return 0.0;
    }
    pairs.iter().filter(|(a, b)| same_ranking(a, b)).count() as f64 / pairs.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(list: &[(&str, f32)]) -> Vec<Hit> {
        list.iter().map(|&(id, score)| Hit { id: id.into(), score }).collect()
    }

    #[test]
    fn test_a_wordnet_line_becomes_a_document() {
        let line = "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived or known";
        let doc = synset(line, "noun", 'n').unwrap();
        assert_eq!((doc.id.as_str(), doc.title.as_str(), doc.lexfile), ("n00001740", "entity", 3));
        assert_eq!(doc.body, "that which is perceived or known");
        let line = "01234567 29 v 02 take_off 0 depart 1 000 | leave";
        assert_eq!(synset(line, "verb", 'v').unwrap().title, "take off, depart");
        assert!(synset("  1 This software and database is being provided", "noun", 'n').is_none());
    }

    #[test]
    fn test_queries_render_in_each_language() {
        let q = |kind, words: &[&str]| Query { kind, words: words.iter().map(|w| w.to_string()).collect() };
        assert_eq!(q(QueryKind::Term, &["whale"]).tantivy(), "whale");
        assert_eq!(q(QueryKind::Phrase, &["sperm", "whale"]).tantivy(), "\"sperm whale\"");
        assert_eq!(q(QueryKind::Phrase, &["sperm", "whale"]).tsquery(), "sperm <-> whale");
        assert_eq!(q(QueryKind::Boolean, &["a", "b", "c"]).tantivy(), "a AND (b OR c)");
        assert_eq!(q(QueryKind::Boolean, &["a", "b", "c"]).tsquery(), "a & (b | c)");
    }

    #[test]
    fn test_sampled_queries_come_from_the_documents() {
        let docs = vec![Doc {
            id: "n1".into(),
            title: "whale".into(),
            body: "a very large marine mammal; \"whales breathe air\"".into(),
            pos: "noun".into(),
            lexfile: 5,
        }];
        for kind in QueryKind::ALL {
            let queries = sample_queries(&docs, kind, 20);
            assert_eq!(queries.len(), 20);
            let tokens: Vec<&str> =
                docs[0].body.split(|c: char| !c.is_ascii_alphabetic()).filter(|w| !w.is_empty()).collect();
            for query in queries {
                assert!(query.words.iter().all(|w| w.len() >= 4 && tokens.contains(&w.as_str())), "{query:?}");
                if kind == QueryKind::Phrase {
                    let pair = [query.words[0].as_str(), query.words[1].as_str()];
                    assert!(tokens.windows(2).any(|w| w == pair), "{query:?}");
                }
            }
        }
    }

    #[test]
    fn test_rankings_agree_up_to_the_order_of_ties() {
        let a = hits(&[("x", 3.0), ("y", 2.0), ("z", 2.0), ("w", 1.0)]);
        assert!(same_ranking(&a, &hits(&[("x", 3.0), ("z", 2.0), ("y", 2.0), ("w", 1.0)])));
        assert!(same_ranking(&a, &hits(&[("x", 3.00001), ("y", 2.0), ("z", 2.0), ("w", 1.0)])));
        // Fewer than 10 hits: nothing was cut, so every id must match.
        assert!(!same_ranking(&a, &hits(&[("x", 3.0), ("y", 2.0), ("z", 2.0), ("v", 1.0)])));
        assert!(!same_ranking(&a, &hits(&[("x", 3.0), ("y", 2.0), ("v", 2.0), ("w", 1.0)])));
        // A full top 10 may cut its last tied group at a different member.
        let full = |last: &str| {
            let mut list: Vec<(String, f32)> = (0..8).map(|i| (format!("d{i}"), 10.0 - i as f32)).collect();
            list.push(("t1".into(), 1.0));
            list.push((last.into(), 1.0));
            list.into_iter().map(|(id, score)| Hit { id, score }).collect::<Vec<_>>()
        };
        assert!(same_ranking(&full("t2"), &full("t3")));
        assert!(!same_ranking(&a, &hits(&[("x", 3.5), ("y", 2.0), ("z", 2.0), ("w", 1.0)])));
        assert!(!same_ranking(&a, &hits(&[("x", 3.0), ("y", 2.0), ("z", 2.0)])));
        assert!(same_ranking(&[], &[]));
    }

    #[test]
    fn test_agreement_is_the_share_of_identical_rankings() {
        let same = hits(&[("x", 1.0)]);
        let ours = vec![vec![same.clone(), same.clone()], vec![same.clone(), hits(&[("y", 1.0)])]];
        let theirs = vec![vec![same.clone(), same.clone()], vec![same.clone(), same]];
        assert_eq!(agreement(&ours, &theirs), 0.75);
    }
}
