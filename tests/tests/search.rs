//! Full-text search end to end: rankings that do not depend on the number
//! of shards (and equal one Tantivy index), recovery from the outbox after
//! a crash, read-your-writes, updates, deletes, highlights, facets, paging,
//! schema growth, reindex, the CLI and bad input.
//!
//! The corpus is a sample of WordNet glosses (`tests/data`, WordNet licence).

use std::collections::HashMap;

use omnishard_client::Transport as Channel;
use omnishard_proto::v1::search_service_client::SearchServiceClient;
use omnishard_proto::v1::*;
use omnishard_tests::Cluster;
use serde_json::Value;
use tonic::Code;

const CORPUS: &str = include_str!("../data/wordnet-sample.jsonl");
const INDEX: &str = "glosses";

/// (id, JSON object without the id) of every corpus document.
fn corpus() -> Vec<(String, Value)> {
    CORPUS
        .lines()
        .map(|line| {
            let mut value: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
            let id = value.remove("id").unwrap().as_str().unwrap().to_string();
            (id, Value::Object(value))
        })
        .collect()
}

fn field(name: &str, kind: FieldType, analyzer: &str) -> FieldSpec {
    FieldSpec { name: name.into(), r#type: kind as i32, analyzer: analyzer.into() }
}

fn schema() -> Vec<FieldSpec> {
    vec![
        field("title", FieldType::Text, ""),
        field("body", FieldType::Text, "en_stem"),
        field("pos", FieldType::Keyword, ""),
        field("lexfile", FieldType::I64, ""),
    ]
}

async fn api(cluster: &Cluster) -> SearchServiceClient<Channel> {
    cluster.client().await.unwrap().search()
}

async fn create(api: &mut SearchServiceClient<Channel>) {
    let req = CreateIndexRequest { namespace: String::new(), index: INDEX.into(), fields: schema() };
    api.create_index(req).await.unwrap();
}

/// Indexes `docs` in batches; returns the highest sequence number written.
async fn index_all(api: &mut SearchServiceClient<Channel>, docs: &[(String, Value)]) -> u64 {
    let mut seq = 0;
    for chunk in docs.chunks(500) {
        let documents =
            chunk.iter().map(|(id, v)| Document { id: id.clone(), json: v.to_string(), version: 0 }).collect();
        let req = IndexDocumentsRequest { namespace: String::new(), index: INDEX.into(), documents };
        seq = seq.max(api.index_documents(req).await.unwrap().into_inner().seq);
    }
    seq
}

fn query(text: &str, size: u32) -> SearchRequest {
    SearchRequest { index: INDEX.into(), query: text.into(), size, ..Default::default() }
}

async fn search(api: &mut SearchServiceClient<Channel>, req: SearchRequest) -> SearchResponse {
    api.search(req).await.unwrap().into_inner()
}

/// A loaded cluster of `shards` shards, everything searchable.
async fn loaded(shards: usize, docs: &[(String, Value)]) -> (Cluster, SearchServiceClient<Channel>) {
    let cluster = Cluster::builder().shards(shards).start().await.unwrap();
    let mut api = api(&cluster).await;
    create(&mut api).await;
    index_all(&mut api, docs).await;
    api.refresh(RefreshRequest { namespace: String::new(), index: INDEX.into() }).await.unwrap();
    (cluster, api)
}

/// Queries of every kind the issue names: terms, several terms, phrases,
/// boolean operators, fields, ranges.
const QUERIES: &[&str] = &[
    "organism",
    "plant animal",
    "\"living organism\"",
    "small AND plant",
    "+water -sea",
    "title:light OR body:light",
    "body:(musical instrument)",
    "act OR process OR state",
    "lexfile:[5 TO 10] AND body:person",
];

fn hits(res: &SearchResponse) -> Vec<(String, f32)> {
    res.hits.iter().map(|h| (h.id.clone(), h.score)).collect()
}

fn assert_same_ranking(context: &str, a: &[(String, f32)], b: &[(String, f32)]) {
    assert_eq!(a.len(), b.len(), "{context}: hit counts differ");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.0, y.0, "{context}: ids differ: {a:?} vs {b:?}");
        assert!((x.1 - y.1).abs() < 1e-4, "{context}: scores differ for {}: {} vs {}", x.0, x.1, y.1);
    }
}

/// The top 20 of a single in-process Tantivy index over the whole corpus.
fn reference_top20(docs: &[(String, Value)], text: &str) -> Vec<(String, f32)> {
    use tantivy::collector::TopDocs;
    use tantivy::query::QueryParser;
    use tantivy::schema::{
        IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, FAST, STORED, STRING,
    };
    use tantivy::{doc, Index, TantivyDocument};

    let mut builder = Schema::builder();
    let id = builder.add_text_field("_id", STRING | FAST | STORED);
    let text_field = |analyzer: &str| {
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(analyzer)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
    };
    let title = builder.add_text_field("title", text_field("default"));
    let body = builder.add_text_field("body", text_field("en_stem"));
    let pos = builder.add_text_field("pos", STRING | FAST);
    let lexfile = builder.add_i64_field("lexfile", NumericOptions::default().set_indexed().set_fast());
    let index = Index::create_in_ram(builder.build());
    let mut writer = index.writer_with_num_threads(1, 50_000_000).unwrap();
    for (doc_id, v) in docs {
        writer
            .add_document(doc!(
                id => doc_id.as_str(),
                title => v["title"].as_str().unwrap(),
                body => v["body"].as_str().unwrap(),
                pos => v["pos"].as_str().unwrap(),
                lexfile => v["lexfile"].as_i64().unwrap(),
            ))
            .unwrap();
    }
    writer.commit().unwrap();
    let searcher = index.reader().unwrap().searcher();
    let parsed = QueryParser::for_index(&index, vec![title, body]).parse_query(text).unwrap();
    let top = searcher.search(&parsed, &TopDocs::with_limit(20).order_by_score()).unwrap();
    top.into_iter()
        .map(|(score, address)| {
            let stored: TantivyDocument = searcher.doc(address).unwrap();
            let value = stored.get_first(id).and_then(|v| tantivy::schema::Value::as_str(&v).map(str::to_string));
            (value.unwrap(), score)
        })
        .collect()
}

/// Compares with the reference, where ties at equal scores may be ordered
/// differently (Tantivy breaks them by internal address, omnishard by id).
fn assert_matches_reference(context: &str, ours: &[(String, f32)], reference: &[(String, f32)]) {
    assert_eq!(ours.len(), reference.len(), "{context}: hit counts differ");
    for (x, y) in ours.iter().zip(reference) {
        assert!((x.1 - y.1).abs() < 1e-4, "{context}: scores differ: {ours:?} vs {reference:?}");
    }
    let Some(last) = reference.last() else { return };
    let above = |list: &[(String, f32)]| {
        let mut ids: Vec<String> = list.iter().filter(|h| h.1 > last.1 + 1e-4).map(|h| h.0.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(above(ours), above(reference), "{context}: ids above the cut differ");
}

#[tokio::test(flavor = "multi_thread")]
async fn test_rankings_are_identical_on_1_and_4_shards_and_equal_one_tantivy_index() {
    let docs = corpus();
    assert!(docs.len() >= 4000);
    let (_one, mut one) = loaded(1, &docs).await;
    let (_four, mut four) = loaded(4, &docs).await;
    for text in QUERIES {
        let a = search(&mut one, query(text, 20)).await;
        let b = search(&mut four, query(text, 20)).await;
        assert!(!a.hits.is_empty(), "{text}: no hits");
        assert_eq!(a.total, b.total, "{text}: totals differ");
        assert_same_ranking(text, &hits(&a), &hits(&b));
        assert_matches_reference(text, &hits(&b), &reference_top20(&docs, text));
        // Cached statistics give the same answer without the statistics round.
        let again = search(&mut four, query(text, 20)).await;
        assert!(again.statistics_cached, "{text}: statistics not cached on a static index");
        assert_same_ranking(text, &hits(&b), &hits(&again));
    }
    // Filtered queries: filters select without changing scores.
    let filtered = |text: &str| SearchRequest {
        filters: vec![
            SearchFilter { field: "pos".into(), any_of: vec!["noun".into()], ..Default::default() },
            SearchFilter { field: "lexfile".into(), gte: "5".into(), lte: "20".into(), ..Default::default() },
        ],
        ..query(text, 20)
    };
    for text in ["organism", "plant animal", "\"living organism\""] {
        let a = search(&mut one, filtered(text)).await;
        let b = search(&mut four, filtered(text)).await;
        assert_same_ranking(&format!("filtered {text}"), &hits(&a), &hits(&b));
        let unfiltered = search(&mut four, query(text, 1000)).await;
        let scores: HashMap<String, f32> = hits(&unfiltered).into_iter().collect();
        for hit in &b.hits {
            let doc = docs.iter().find(|(id, _)| *id == hit.id).unwrap();
            assert_eq!(doc.1["pos"], "noun");
            let lexfile = doc.1["lexfile"].as_i64().unwrap();
            assert!((5..=20).contains(&lexfile));
            assert!((scores[&hit.id] - hit.score).abs() < 1e-6, "a filter changed a score");
        }
    }
    // Sorted by a field: the same order everywhere, ties broken by id.
    let sorted = SearchRequest {
        sort: Some(SearchSort { field: "lexfile".into(), order: SortOrder::Desc as i32 }),
        ..query("water", 30)
    };
    let a = search(&mut one, sorted.clone()).await;
    let b = search(&mut four, sorted).await;
    let order = |r: &SearchResponse| r.hits.iter().map(|h| (h.sort_value.clone(), h.id.clone())).collect::<Vec<_>>();
    assert_eq!(order(&a), order(&b));
    let values: Vec<i64> = b.hits.iter().map(|h| h.sort_value.parse().unwrap()).collect();
    assert!(values.windows(2).all(|w| w[0] >= w[1]), "not sorted descending: {values:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn test_search_after_pages_equal_one_deep_page() {
    let docs = corpus();
    let (_cluster, mut api) = loaded(3, &docs).await;
    let deep = search(&mut api, query("act OR state OR person", 90)).await;
    let mut paged = Vec::new();
    let mut cursor = String::new();
    for _ in 0..3 {
        let page =
            search(&mut api, SearchRequest { search_after: cursor.clone(), ..query("act OR state OR person", 30) })
                .await;
        paged.extend(hits(&page));
        cursor = page.next_cursor;
    }
    assert_same_ranking("search_after", &hits(&deep), &paged);
    let from = search(&mut api, SearchRequest { from: 30, ..query("act OR state OR person", 30) }).await;
    assert_same_ranking("from", &hits(&deep)[30..60], &hits(&from));

    // min_score drops hits below it, and the total counts only those above.
    let cut = deep.hits[9].score;
    let above = deep.hits.iter().filter(|h| h.score >= cut).count() as u64;
    let res = search(&mut api, SearchRequest { min_score: Some(cut), ..query("act OR state OR person", 100) }).await;
    assert_eq!(res.total, above);
    assert!(res.hits.iter().all(|h| h.score >= cut));
}

#[tokio::test(flavor = "multi_thread")]
async fn test_bulk_index_stream_writes_every_batch() {
    let cluster = Cluster::builder().shards(3).start().await.unwrap();
    let mut api = api(&cluster).await;
    create(&mut api).await;
    let docs = corpus();
    let batches: Vec<IndexDocumentsRequest> = docs
        .chunks(700)
        .map(|chunk| IndexDocumentsRequest {
            namespace: String::new(),
            index: INDEX.into(),
            documents: chunk
                .iter()
                .map(|(id, v)| Document { id: id.clone(), json: v.to_string(), version: 0 })
                .collect(),
        })
        .collect();
    let done = api.bulk_index(tokio_stream::iter(batches)).await.unwrap().into_inner();
    assert_eq!(done.written, docs.len() as u64);
    let res = search(&mut api, SearchRequest { min_seq: done.seq, ..query("", 1) }).await;
    assert_eq!(res.total, docs.len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn test_acknowledged_writes_are_searchable_after_a_crash_before_the_index_commit() {
    // A refresh interval of an hour: nothing reaches Tantivy on its own.
    let mut cluster =
        Cluster::builder().shards(2).shard_toml("[search]\nrefresh_interval = \"1h\"\n").start().await.unwrap();
    let mut api = api(&cluster).await;
    create(&mut api).await;
    let docs: Vec<_> = corpus().into_iter().take(300).collect();
    let seq = index_all(&mut api, &docs).await;
    assert_eq!(search(&mut api, query("", 10)).await.total, 0, "documents were indexed before any refresh");
    for shard in 0..2 {
        cluster.kill_shard(shard).await.unwrap();
        cluster.restart_shard(shard).await.unwrap();
    }
    // The restarted shards catch up from the outbox when asked for min_seq.
    let mut api = wait_for_shards(&cluster).await;
    let res = search(&mut api, SearchRequest { min_seq: seq, ..query("", 10) }).await;
    assert_eq!(res.total, 300);
    let info =
        api.describe_index(DescribeIndexRequest { namespace: String::new(), index: INDEX.into() }).await.unwrap();
    let info = info.into_inner();
    assert_eq!(info.documents, 300);
    assert_eq!(info.shards.iter().map(|s| s.searchable_documents).sum::<u64>(), 300);
}

/// A search client once the gateway reaches the restarted shards again.
async fn wait_for_shards(cluster: &Cluster) -> SearchServiceClient<Channel> {
    let mut api = api(cluster).await;
    for _ in 0..100 {
        let req = DescribeIndexRequest { namespace: String::new(), index: INDEX.into() };
        if api.describe_index(req).await.is_ok() {
            return api;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("shards did not come back");
}

#[tokio::test(flavor = "multi_thread")]
async fn test_min_seq_reads_writes_and_updates_deletes_highlights_facets() {
    // A long refresh interval: only min_seq can make writes searchable in time.
    let cluster =
        Cluster::builder().shards(3).shard_toml("[search]\nrefresh_interval = \"1h\"\n").start().await.unwrap();
    let mut api = api(&cluster).await;
    create(&mut api).await;
    let docs = corpus();
    let seq = index_all(&mut api, &docs).await;
    let all = search(&mut api, SearchRequest { min_seq: seq, ..query("", 1) }).await;
    assert_eq!(all.total, docs.len() as u64);

    // Update: the new text is found, the old one is gone.
    let doc = |json: &str| Document { id: "n00001740".into(), json: json.into(), version: 0 };
    let req = IndexDocumentsRequest {
        namespace: String::new(),
        index: INDEX.into(),
        documents: vec![doc(r#"{"title":"entity","body":"zyzzyva weevils everywhere","pos":"noun","lexfile":3}"#)],
    };
    let seq = api.index_documents(req).await.unwrap().into_inner().seq;
    let found = search(&mut api, SearchRequest { min_seq: seq, ..query("zyzzyva", 10) }).await;
    assert_eq!(hits(&found).iter().map(|h| h.0.as_str()).collect::<Vec<_>>(), vec!["n00001740"]);
    let old = search(&mut api, query("\"inferred to have its own distinct existence\"", 10)).await;
    assert_eq!(old.total, 0, "the old text is still searchable");

    // Partial update keeps other fields and is searchable.
    let req = UpdateDocumentRequest {
        namespace: String::new(),
        index: INDEX.into(),
        id: "n00001740".into(),
        json: r#"{"lexfile": 42}"#.into(),
    };
    let seq = api.update_document(req).await.unwrap().into_inner().seq;
    let res = search(&mut api, SearchRequest { min_seq: seq, ..query("lexfile:42 AND zyzzyva", 10) }).await;
    assert_eq!(res.total, 1);
    let got = serde_json::from_str::<Value>(&res.hits[0].json).unwrap();
    assert_eq!(got["body"], "zyzzyva weevils everywhere");

    // Delete: gone from results and from reads.
    let req = DeleteDocumentsRequest { namespace: String::new(), index: INDEX.into(), ids: vec!["n00001740".into()] };
    let seq = api.delete_documents(req).await.unwrap().into_inner().seq;
    assert_eq!(search(&mut api, SearchRequest { min_seq: seq, ..query("zyzzyva", 10) }).await.total, 0);
    let req = GetDocumentsRequest { namespace: String::new(), index: INDEX.into(), ids: vec!["n00001740".into()] };
    assert!(!api.get_documents(req).await.unwrap().into_inner().documents[0].found);

    // Highlights wrap the matched terms (stemmed forms too) in the asked tags.
    let req = SearchRequest {
        highlight: Some(HighlightRequest {
            fields: vec!["body".into()],
            pre_tag: "[[".into(),
            post_tag: "]]".into(),
            max_chars: 80,
        }),
        ..query("body:organisms", 5)
    };
    let res = search(&mut api, req).await;
    assert!(!res.hits.is_empty());
    for hit in &res.hits {
        let fragment = &hit.highlights["body"];
        assert!(fragment.to_lowercase().contains("[[organism"), "{fragment}");
        assert!(fragment.chars().count() <= 80 + 4 * 8, "{fragment}");
    }

    // Facets: counts over every match, equal to counting the corpus.
    let remaining: Vec<_> = docs.iter().filter(|(id, _)| id != "n00001740").collect();
    let mut expected: HashMap<String, u64> = HashMap::new();
    for (_, v) in &remaining {
        *expected.entry(v["pos"].as_str().unwrap().to_string()).or_default() += 1;
    }
    let req = SearchRequest { facets: vec![FacetRequest { field: "pos".into(), size: 10 }], ..query("", 0) };
    let res = search(&mut api, SearchRequest { size: 1, ..req }).await;
    let got: HashMap<String, u64> = res.facets[0].counts.iter().map(|c| (c.value.clone(), c.count)).collect();
    assert_eq!(got, expected);
    assert_eq!(res.facets[0].other, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn test_schema_growth_reindex_and_bad_input() {
    let cluster = Cluster::builder().shards(2).start().await.unwrap();
    let mut api = api(&cluster).await;
    create(&mut api).await;
    let docs: Vec<_> = corpus().into_iter().take(500).collect();
    let seq = index_all(&mut api, &docs).await;
    let before = search(&mut api, SearchRequest { min_seq: seq, ..query("plant", 20) }).await;

    let code_of = |r: Result<tonic::Response<SearchResponse>, tonic::Status>| r.unwrap_err();
    // Syntax error names the position.
    let err = code_of(api.search(query("plant AND (", 10)).await);
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("position"), "{}", err.message());
    // Unknown field.
    let err = code_of(api.search(query("nope:plant", 10)).await);
    assert!(err.code() == Code::InvalidArgument && err.message().contains("nope"), "{}", err.message());
    // Query too long.
    let err = code_of(api.search(query(&"plant ".repeat(20_000), 10)).await);
    assert!(err.code() == Code::InvalidArgument && err.message().contains("65536"), "{}", err.message());
    // Window too large.
    let err = code_of(api.search(SearchRequest { from: 9_995, ..query("plant", 10) }).await);
    assert!(err.code() == Code::InvalidArgument && err.message().contains("10000"), "{}", err.message());
    // Missing index.
    let err = code_of(api.search(SearchRequest { index: "missing".into(), ..query("plant", 10) }).await);
    assert_eq!(err.code(), Code::NotFound);
    // Duplicate index name.
    let req = CreateIndexRequest { namespace: String::new(), index: INDEX.into(), fields: schema() };
    assert_eq!(api.create_index(req).await.unwrap_err().code(), Code::AlreadyExists);
    // Documents that do not match the schema: unknown field, wrong type, not an object.
    for (json, needle) in [(r#"{"colour":"red"}"#, "colour"), (r#"{"lexfile":"x"}"#, "lexfile"), ("[1]", "object")] {
        let req = IndexDocumentsRequest {
            namespace: String::new(),
            index: INDEX.into(),
            documents: vec![Document { id: "bad".into(), json: json.into(), version: 0 }],
        };
        let err = api.index_documents(req).await.unwrap_err();
        assert!(err.code() == Code::InvalidArgument && err.message().contains(needle), "{}", err.message());
    }
    // Filters and sorts of the wrong type.
    let bad_filter = SearchFilter { field: "lexfile".into(), any_of: vec!["ten".into()], ..Default::default() };
    let err = code_of(api.search(SearchRequest { filters: vec![bad_filter], ..query("plant", 10) }).await);
    assert!(err.code() == Code::InvalidArgument && err.message().contains("lexfile"), "{}", err.message());
    let sort = SearchSort { field: "title".into(), order: 0 };
    let err = code_of(api.search(SearchRequest { sort: Some(sort), ..query("plant", 10) }).await);
    assert_eq!(err.code(), Code::InvalidArgument);

    // Unsafe schema change: rejected, nothing changes.
    let mut changed = schema();
    changed[1].analyzer = "raw".into();
    let req = UpdateIndexRequest { namespace: String::new(), index: INDEX.into(), fields: changed };
    let err = api.update_index(req).await.unwrap_err();
    assert!(err.code() == Code::FailedPrecondition && err.message().contains("body"), "{}", err.message());

    // Safe change: a new field, usable at once; old results unchanged.
    let mut grown = schema();
    grown.push(field("rating", FieldType::F64, ""));
    let req = UpdateIndexRequest { namespace: String::new(), index: INDEX.into(), fields: grown };
    api.update_index(req).await.unwrap();
    let after = search(&mut api, query("plant", 20)).await;
    assert_same_ranking("after growth", &hits(&before), &hits(&after));
    // (An update re-adds a document; until segments merge, Tantivy counts
    // the old copy in its statistics, as one index would.)
    let req = UpdateDocumentRequest {
        namespace: String::new(),
        index: INDEX.into(),
        id: docs[0].0.clone(),
        json: r#"{"rating": 4.5}"#.into(),
    };
    let seq = api.update_document(req).await.unwrap().into_inner().seq;
    let rated = search(&mut api, SearchRequest { min_seq: seq, ..query("rating:[4 TO 5]", 10) }).await;
    assert_eq!(hits(&rated).iter().map(|h| h.0.clone()).collect::<Vec<_>>(), vec![docs[0].0.clone()]);

    // Reindex from RocksDB through the CLI: the same results as before the
    // update (the rebuilt index holds no deleted copies).
    let (code, out, err) = cluster.cli(&["admin", "reindex", INDEX]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("500 documents"), "{out}");
    let rebuilt = search(&mut api, query("plant", 20)).await;
    assert_same_ranking("after reindex", &hits(&before), &hits(&rebuilt));
}

#[tokio::test(flavor = "multi_thread")]
async fn test_cli_creates_indexes_loads_and_queries() {
    let cluster = Cluster::builder().shards(2).start().await.unwrap();
    let run = |args: Vec<String>| {
        let cluster = &cluster;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cluster.cli(&args).await.unwrap()
        }
    };
    let strings = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (code, _, err) = run(strings(&[
        "search",
        "create",
        "notes",
        "--field",
        "title:text",
        "--field",
        "body:text:en_stem",
        "--field",
        "tag:keyword",
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    let file = cluster.data_dir().join("notes.jsonl");
    std::fs::write(
        &file,
        "{\"id\":\"1\",\"title\":\"Rust\",\"body\":\"Engines written in Rust run fast\",\"tag\":\"tech\"}\n\
         {\"id\":\"2\",\"title\":\"Foxes\",\"body\":\"The quick brown fox runs\",\"tag\":\"animals\"}\n",
    )
    .unwrap();
    let (code, out, err) = run(strings(&["--json", "search", "index", "notes", &file.to_string_lossy()])).await;
    assert_eq!(code, 0, "{err}");
    let seq = serde_json::from_str::<Value>(&out).unwrap()["seq"].as_u64().unwrap().to_string();
    let (code, out, err) = run(strings(&[
        "--json",
        "search",
        "query",
        "notes",
        "running",
        "--min-seq",
        &seq,
        "--facet",
        "tag",
        "--highlight",
        "body",
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    let res: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(res["total"], 2, "{out}");
    assert!(res["hits"][0]["score"].as_f64().unwrap() > 0.0);
    assert!(res["hits"][0]["highlights"]["body"].as_str().unwrap().contains("<b>"), "{out}");
    assert_eq!(res["facets"][0]["counts"].as_array().unwrap().len(), 2);
    let (code, out, _) = run(strings(&["search", "query", "notes", "fox", "--filter", "tag=animals"])).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("1 hits") && out.contains("  2  "), "{out}");
    let (code, _, err) = run(strings(&["search", "query", "notes", "title:"])).await;
    assert_eq!(code, 1);
    assert!(err.contains("invalid_argument") && err.contains("position"), "{err}");
    let (code, out, _) = run(strings(&["search", "describe", "notes"])).await;
    assert_eq!(code, 0);
    assert!(out.contains("2 documents"), "{out}");
    let (code, _, _) = run(strings(&["search", "drop", "notes"])).await;
    assert_eq!(code, 0);
    let (code, _, err) = run(strings(&["search", "describe", "notes"])).await;
    assert_eq!(code, 3, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn test_recreated_and_rebuilt_documents_are_indexed_once() {
    let cluster =
        Cluster::builder().shards(1).shard_toml("[search]\nrefresh_interval = \"1h\"\n").start().await.unwrap();
    let mut api = api(&cluster).await;
    create(&mut api).await;
    let put = |id: &str, body: &str| IndexDocumentsRequest {
        namespace: String::new(),
        index: INDEX.into(),
        documents: vec![Document {
            id: id.into(),
            json: format!(r#"{{"title":"t","body":"{body}","pos":"noun","lexfile":1}}"#),
            version: 0,
        }],
    };
    let delete =
        |id: &str| DeleteDocumentsRequest { namespace: String::new(), index: INDEX.into(), ids: vec![id.into()] };
    let count = |api: &mut SearchServiceClient<Channel>, seq: u64| {
        let mut api = api.clone();
        async move { search(&mut api, SearchRequest { min_seq: seq, ..query("title:t", 10) }).await.total }
    };
    // Created, then re-created after a delete within one refresh.
    let seq = api.index_documents(put("x", "first")).await.unwrap().into_inner().seq;
    assert_eq!(count(&mut api, seq).await, 1);
    api.delete_documents(delete("x")).await.unwrap();
    let seq = api.index_documents(put("x", "second")).await.unwrap().into_inner().seq;
    assert_eq!(count(&mut api, seq).await, 1);
    // Overwritten in place, and written twice in one refresh.
    api.index_documents(put("x", "third")).await.unwrap();
    let seq = api.index_documents(put("x", "fourth")).await.unwrap().into_inner().seq;
    assert_eq!(count(&mut api, seq).await, 1);
    let res = search(&mut api, query("body:fourth", 10)).await;
    assert_eq!(res.total, 1);
    // Created just before a rebuild: the rebuild and the outbox replay must not both add it.
    let seq = api.index_documents(put("y", "fifth")).await.unwrap().into_inner().seq;
    api.reindex(ReindexRequest { namespace: String::new(), index: INDEX.into() }).await.unwrap();
    assert_eq!(count(&mut api, seq).await, 2);
    let info =
        api.describe_index(DescribeIndexRequest { namespace: String::new(), index: INDEX.into() }).await.unwrap();
    assert_eq!(info.into_inner().shards[0].searchable_documents, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn test_deep_and_broken_queries_are_refused_and_every_shard_keeps_serving() {
    use omnishard_proto::v1::shard_service_client::ShardServiceClient;

    let docs: Vec<_> = corpus().into_iter().take(300).collect();
    let (cluster, mut api) = loaded(2, &docs).await;
    let before = search(&mut api, query("plant OR water OR act", 10)).await.total;
    assert!(before > 0);
    let deep = |open: &str| format!("{}x{}", open.repeat(850), ")".repeat(850));
    for text in [deep("("), deep("body:("), deep("(hello AND ")] {
        let err = api.search(query(&text, 10)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().contains("850 levels deep; the limit is 32"), "{}", err.message());
        // Shards check too, before their parser sees the text.
        for shard in 0..2 {
            let mut direct = ShardServiceClient::connect(cluster.shard_url(shard)).await.unwrap();
            let req = ShardSearchStatsRequest {
                namespace: String::new(),
                index: INDEX.into(),
                query: text.clone(),
                min_seq: 0,
            };
            let err = direct.search_stats(req).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "shard {shard}: {}", err.message());
        }
    }
    // A 20 KB query that only the strict grammar refuses: Tantivy's error
    // would quote all of it, more than an HTTP/2 header holds.
    let broken = format!("{}a(b", "plant ".repeat(3_400));
    assert!(broken.len() > 20_000);
    let err = api.search(query(&broken, 10)).await.unwrap_err();
    let message = err.message();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", &message[..message.len().min(300)]);
    assert!(message.len() < 1024, "{} bytes: {}", message.len(), &message[..300]);
    // Every shard still answers, with the same documents as before.
    assert_eq!(search(&mut api, query("plant OR water OR act", 10)).await.total, before);
    let info =
        api.describe_index(DescribeIndexRequest { namespace: String::new(), index: INDEX.into() }).await.unwrap();
    assert_eq!(info.into_inner().shards.iter().map(|s| s.searchable_documents).sum::<u64>(), 300);
}

#[tokio::test(flavor = "multi_thread")]
async fn test_dates_and_keywords_the_index_cannot_hold_are_refused_in_documents_and_filters() {
    let cluster = Cluster::builder().shards(2).start().await.unwrap();
    let mut api = api(&cluster).await;
    let fields = vec![field("at", FieldType::Date, ""), field("tag", FieldType::Keyword, "")];
    api.create_index(CreateIndexRequest { namespace: String::new(), index: "events".into(), fields }).await.unwrap();
    let put = |id: &str, json: String| IndexDocumentsRequest {
        namespace: String::new(),
        index: "events".into(),
        documents: vec![Document { id: id.into(), json, version: 0 }],
    };
    let ok = put("ok", r#"{"at":"2024-05-01T00:00:00Z","tag":"t"}"#.into());
    let seq = api.index_documents(ok).await.unwrap().into_inner().seq;
    let long_tag = "k".repeat(70_000);
    for (json, needle) in [
        (r#"{"at":"2299-01-01T00:00:00Z"}"#.to_string(), "2262-04-11"),
        (format!(r#"{{"at":{}}}"#, i64::MAX), "2262-04-11"),
        (format!(r#"{{"tag":"{long_tag}"}}"#), "65530"),
    ] {
        let err = api.index_documents(put("bad", json)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().contains(needle) && err.message().len() < 1024, "{}", err.message());
    }
    let req = GetDocumentsRequest { namespace: String::new(), index: "events".into(), ids: vec!["bad".into()] };
    assert!(!api.get_documents(req).await.unwrap().into_inner().documents[0].found, "a refused document was stored");

    let events = |filter: SearchFilter| SearchRequest {
        index: "events".into(),
        filters: vec![filter],
        min_seq: seq,
        size: 10,
        ..Default::default()
    };
    let at_least = |gte: &str| SearchFilter { field: "at".into(), gte: gte.into(), ..Default::default() };
    for gte in ["2299-01-01T00:00:00Z".to_string(), i64::MAX.to_string()] {
        let err = api.search(events(at_least(&gte))).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{gte}: {}", err.message());
        assert!(err.message().contains("\"at\"") && err.message().contains("2262-04-11"), "{}", err.message());
    }
    let long = SearchFilter { field: "tag".into(), any_of: vec![long_tag], ..Default::default() };
    let err = api.search(events(long)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("\"tag\"") && err.message().contains("65530"), "{}", err.message());
    // Values in range still filter as before.
    assert_eq!(search(&mut api, events(at_least("2024-01-01T00:00:00Z"))).await.total, 1);
    assert_eq!(search(&mut api, events(at_least("2262-04-11T23:47:16.854Z"))).await.total, 0);
    let tagged = SearchFilter { field: "tag".into(), any_of: vec!["t".into()], ..Default::default() };
    assert_eq!(search(&mut api, events(tagged)).await.total, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn test_search_after_cursor_of_another_sort_is_refused() {
    let docs: Vec<_> = corpus().into_iter().take(300).collect();
    let (_cluster, mut api) = loaded(2, &docs).await;
    let by_lexfile = |order: SortOrder| SearchRequest {
        sort: Some(SearchSort { field: "lexfile".into(), order: order as i32 }),
        ..query("", 5)
    };
    let by_score = search(&mut api, query("", 5)).await;
    let lexfile_page = search(&mut api, by_lexfile(SortOrder::Desc)).await;
    assert!(!by_score.next_cursor.is_empty() && !lexfile_page.next_cursor.is_empty());
    // A cursor pages the sort it was made for...
    let next = SearchRequest { search_after: lexfile_page.next_cursor.clone(), ..by_lexfile(SortOrder::Desc) };
    let next = search(&mut api, next).await;
    assert_eq!(next.hits.len(), 5);
    assert!(next.hits.iter().all(|h| lexfile_page.hits.iter().all(|p| p.id != h.id)), "the page repeated hits");
    // ...and no other (it used to restart at page 1, so a paging client looped forever).
    for (cursor, req) in [
        (by_score.next_cursor.clone(), by_lexfile(SortOrder::Desc)),
        (lexfile_page.next_cursor.clone(), query("", 5)),
        (lexfile_page.next_cursor.clone(), by_lexfile(SortOrder::Asc)),
        ("not-a-cursor".to_string(), query("", 5)),
    ] {
        let err = api.search(SearchRequest { search_after: cursor, ..req }).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().contains("search_after"), "{}", err.message());
    }
}
