//! `omnishard bench search`: indexes WordNet glosses (a real-language
//! corpus from Debian's `wordnet-base`) into single-process Tantivy and,
//! through the gateway, into a cluster of shards; then times term, phrase
//! and boolean queries single-client and with many clients, with the
//! statistics round (fresh and cached) and without it (local statistics).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use omnishard_bench::search::Doc;
use omnishard_client::Client;
use omnishard_proto::v1::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::args::{BenchSearchArgs, Global};
use crate::bench::EmbeddedCluster;
use crate::bench_graph::{histogram, ms};
use crate::output;

/// Reads `limit` WordNet synsets from `dir` (the harness's corpus reader).
fn read_corpus(dir: &Path, limit: usize) -> anyhow::Result<Vec<Doc>> {
    omnishard_bench::search::wordnet(dir, limit).map_err(anyhow::Error::msg)
}

pub async fn run(global: &Global, args: BenchSearchArgs) -> anyhow::Result<()> {
    let docs = Arc::new(read_corpus(&args.corpus, args.docs)?);
    let queries = Queries::sample(&docs, 200);
    let mut lines = vec![format!(
        "docs={} shards={} loaders={} batch={} clients={} duration={:?}",
        docs.len(),
        args.shards,
        args.loaders,
        args.batch,
        args.clients,
        args.duration
    )];
    let baseline = tantivy_baseline(&docs, &queries)?;
    // The statistics cache is on; runs that measure the round skip it per request.
    let cluster = EmbeddedCluster::start_configured(args.shards, |_| {}).await?;
    let client = Client::connect(&cluster.url).await?;
    let (acked, searchable) = load(&client, &docs, &args).await?;
    lines.push("| indexing | docs/s |".into());
    lines.push("|---|---|".into());
    lines.push(format!("| single-process Tantivy (2 threads, 128 MiB, one commit) | {:.0} |", baseline.docs_per_sec));
    lines.push(format!(
        "| omnishard, {} shards, acknowledged (durable in RocksDB) | {:.0} ({:.0}% of Tantivy) |",
        args.shards,
        acked,
        100.0 * acked / baseline.docs_per_sec
    ));
    lines.push(format!(
        "| omnishard, {} shards, searchable (after refresh) | {:.0} ({:.0}% of Tantivy) |",
        args.shards,
        searchable,
        100.0 * searchable / baseline.docs_per_sec
    ));
    lines.push(String::new());
    lines.push("| query | mode | 1 client p50 ms | 1 client p99 ms | clients | ops/s | p50 ms | p99 ms |".into());
    lines.push("|---|---|---|---|---|---|---|---|".into());
    for (kind, set) in queries.kinds() {
        let (p50, p99) = baseline.latency[kind];
        lines.push(format!("| {kind} | single-process Tantivy, in process | {p50:.2} | {p99:.2} | - | - | - | - |"));
        for mode in [Mode::Fresh, Mode::Cached, Mode::Local] {
            let single = time_queries(&client, set, mode, 1, args.duration).await?;
            let many = time_queries(&client, set, mode, args.clients, args.duration).await?;
            lines.push(format!(
                "| {kind} | {} | {:.2} | {:.2} | {} | {:.0} | {:.2} | {:.2} |",
                mode.describe(),
                ms(&single.latency, 0.5),
                ms(&single.latency, 0.99),
                args.clients,
                many.ops_per_sec,
                ms(&many.latency, 0.5),
                ms(&many.latency, 0.99)
            ));
        }
    }
    cluster.stop().await;
    if global.json {
        output::print_json(&json!({"report": lines}));
    } else {
        for line in lines {
            println!("{line}");
        }
    }
    Ok(())
}

/// Query strings of each kind, taken from the corpus so they match.
struct Queries {
    term: Vec<String>,
    phrase: Vec<String>,
    boolean: Vec<String>,
}

impl Queries {
    fn sample(docs: &[Doc], n: usize) -> Queries {
        let mut rng = StdRng::seed_from_u64(7);
        let mut words = || loop {
            let doc = &docs[rng.random_range(0..docs.len())];
            let words: Vec<String> =
                doc.body.split(|c: char| !c.is_alphabetic()).filter(|w| w.len() >= 4).map(str::to_lowercase).collect();
            if words.len() >= 3 {
                return words;
            }
        };
        let mut queries = Queries { term: Vec::new(), phrase: Vec::new(), boolean: Vec::new() };
        for _ in 0..n {
            queries.term.push(words()[0].clone());
            let w = words();
            queries.phrase.push(format!("\"{} {}\"", w[0], w[1]));
            let w = words();
            queries.boolean.push(format!("{} AND ({} OR {})", w[0], w[1], w[2]));
        }
        queries
    }

    fn kinds(&self) -> [(&'static str, &Vec<String>); 3] {
        [("term", &self.term), ("phrase", &self.phrase), ("boolean", &self.boolean)]
    }
}

/// How a timed search gets its statistics.
#[derive(Clone, Copy)]
enum Mode {
    /// Exact: a statistics round on every search.
    Fresh,
    /// Exact: statistics from the gateway's cache (index unchanged).
    Cached,
    /// Approximate: each shard's own statistics, no round.
    Local,
}

impl Mode {
    fn describe(self) -> &'static str {
        match self {
            Mode::Fresh => "omnishard exact, statistics round",
            Mode::Cached => "omnishard exact, cached statistics",
            Mode::Local => "omnishard local statistics (no round)",
        }
    }
}

struct Baseline {
    docs_per_sec: f64,
    latency: std::collections::HashMap<&'static str, (f64, f64)>,
}

/// Indexes the corpus into one on-disk Tantivy index and times the queries in process.
fn tantivy_baseline(docs: &[Doc], queries: &Queries) -> anyhow::Result<Baseline> {
    use tantivy::collector::TopDocs;
    use tantivy::query::QueryParser;
    use tantivy::schema::{IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, FAST, STRING};
    use tantivy::{doc, Index};

    let dir = tempfile::tempdir()?;
    let mut builder = Schema::builder();
    let id = builder.add_text_field("_id", STRING | FAST);
    let text = |analyzer: &str| {
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(analyzer)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
    };
    let title = builder.add_text_field("title", text("default"));
    let body = builder.add_text_field("body", text("en_stem"));
    let pos = builder.add_text_field("pos", STRING | FAST);
    let lexfile = builder.add_i64_field("lexfile", NumericOptions::default().set_indexed().set_fast());
    let index = Index::create_in_dir(dir.path(), builder.build())?;
    let started = Instant::now();
    let mut writer = index.writer_with_num_threads(2, 128 * 1024 * 1024)?;
    for d in docs {
        // Parse the same JSON the cluster receives, so both pay for it.
        let value: serde_json::Value = serde_json::from_str(&d.json())?;
        writer.add_document(doc!(
            id => d.id.as_str(),
            title => value["title"].as_str().unwrap_or_default(),
            body => value["body"].as_str().unwrap_or_default(),
            pos => value["pos"].as_str().unwrap_or_default(),
            lexfile => value["lexfile"].as_i64().unwrap_or_default(),
        ))?;
    }
    writer.commit()?;
    let docs_per_sec = docs.len() as f64 / started.elapsed().as_secs_f64();
    let searcher = index.reader()?.searcher();
    let parser = QueryParser::for_index(&index, vec![title, body]);
    let mut latency = std::collections::HashMap::new();
    for (kind, set) in queries.kinds() {
        let mut h = histogram();
        for text in set.iter().chain(set.iter()) {
            let t = Instant::now();
            let query = parser.parse_query(text)?;
            searcher.search(&query, &TopDocs::with_limit(10).order_by_score())?;
            h.record(t.elapsed().as_micros() as u64)?;
        }
        latency.insert(kind, (ms(&h, 0.5), ms(&h, 0.99)));
    }
    Ok(Baseline { docs_per_sec, latency })
}

/// Indexes every document through the gateway; returns docs/s until every
/// write was acknowledged and until every write was searchable.
async fn load(client: &Client, docs: &Arc<Vec<Doc>>, args: &BenchSearchArgs) -> anyhow::Result<(f64, f64)> {
    let mut api = client.search();
    let field = |name: &str, kind: FieldType, analyzer: &str| FieldSpec {
        name: name.into(),
        r#type: kind as i32,
        analyzer: analyzer.into(),
    };
    let fields = vec![
        field("title", FieldType::Text, ""),
        field("body", FieldType::Text, "en_stem"),
        field("pos", FieldType::Keyword, ""),
        field("lexfile", FieldType::I64, ""),
    ];
    api.create_index(CreateIndexRequest { index: "bench".into(), fields, ..Default::default() }).await?;
    let batches: Vec<(usize, usize)> =
        (0..docs.len()).step_by(args.batch.max(1)).map(|s| (s, (s + args.batch.max(1)).min(docs.len()))).collect();
    let batches = Arc::new(Mutex::new(batches));
    let started = Instant::now();
    let loaders: Vec<_> = (0..args.loaders.max(1))
        .map(|_| {
            let (batches, docs, mut api) = (batches.clone(), docs.clone(), client.search());
            tokio::spawn(async move {
                loop {
                    let Some((from, to)) = batches.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.pop() else {
                        return anyhow::Ok(());
                    };
                    let documents = docs[from..to]
                        .iter()
                        .map(|d| Document { id: d.id.clone(), json: d.json(), version: 0 })
                        .collect();
                    api.index_documents(IndexDocumentsRequest {
                        index: "bench".into(),
                        documents,
                        ..Default::default()
                    })
                    .await?;
                }
            })
        })
        .collect();
    for loader in loaders {
        loader.await??;
    }
    let acked = docs.len() as f64 / started.elapsed().as_secs_f64();
    api.refresh(RefreshRequest { index: "bench".into(), ..Default::default() }).await?;
    let searchable = docs.len() as f64 / started.elapsed().as_secs_f64();
    let all = api.search(SearchRequest { index: "bench".into(), size: 1, ..Default::default() }).await?.into_inner();
    if all.total != docs.len() as u64 {
        bail!("{} of {} documents searchable after refresh", all.total, docs.len());
    }
    Ok((acked, searchable))
}

struct Timed {
    latency: Histogram<u64>,
    ops_per_sec: f64,
}

/// Runs `set` round-robin from `clients` tasks for `duration`.
async fn time_queries(
    client: &Client,
    set: &[String],
    mode: Mode,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Timed> {
    let set = Arc::new(set.to_vec());
    let request = move |text: &str| SearchRequest {
        index: "bench".into(),
        query: text.to_string(),
        size: 10,
        local_statistics: matches!(mode, Mode::Local),
        skip_statistics_cache: matches!(mode, Mode::Fresh),
        ..Default::default()
    };
    if matches!(mode, Mode::Cached) {
        // Warm the cache: one pass over the set.
        let mut api = client.search();
        for text in set.iter() {
            api.search(request(text)).await?;
        }
    }
    let started = Instant::now();
    let end = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|n| {
            let (set, mut api) = (set.clone(), client.search());
            tokio::spawn(async move {
                let mut h = histogram();
                let mut i = n * 7;
                while Instant::now() < end {
                    let t = Instant::now();
                    api.search(request(&set[i % set.len()])).await?;
                    h.record(t.elapsed().as_micros() as u64)?;
                    i += 1;
                }
                anyhow::Ok(h)
            })
        })
        .collect();
    let mut latency = histogram();
    for task in tasks {
        latency.add(task.await??)?;
    }
    let ops_per_sec = latency.len() as f64 / started.elapsed().as_secs_f64();
    Ok(Timed { latency, ops_per_sec })
}
