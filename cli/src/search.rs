//! `omnishard search ...`: indexes, documents and queries.

use std::io::BufRead;

use anyhow::{bail, Context};
use omnishard_client::Transport as Channel;
use omnishard_client::{Client, Error as ClientError};
use omnishard_proto::v1::search_service_client::SearchServiceClient;
use omnishard_proto::v1::*;
use serde_json::{json, Value};

use crate::args::{Global, SearchCommand};
use crate::output;

pub async fn run(global: &Global, cmd: SearchCommand) -> anyhow::Result<()> {
    let client = Client::connect(&global.gateway).await?;
    let ctx = Ctx { api: client.search(), ns: global.namespace.clone(), json: global.json };
    match cmd {
        SearchCommand::Create { index, fields } => create(ctx, index, &fields).await,
        SearchCommand::AddFields { index, fields } => add_fields(ctx, index, &fields).await,
        SearchCommand::Drop { index } => drop_index(ctx, index).await,
        SearchCommand::Describe { index } => describe(ctx, index).await,
        SearchCommand::List => list(ctx).await,
        SearchCommand::Index { index, file, batch } => index_file(ctx, index, &file, batch).await,
        SearchCommand::Get { index, ids } => get(ctx, index, ids).await,
        SearchCommand::Delete { index, ids } => delete(ctx, index, ids).await,
        SearchCommand::Update { index, id, fields } => update(ctx, index, id, fields).await,
        SearchCommand::Refresh { index } => refresh(ctx, index).await,
        SearchCommand::Query {
            index,
            query,
            filters,
            facets,
            highlight,
            sort,
            from,
            size,
            after,
            min_score,
            min_seq,
            local_stats,
        } => {
            let req = SearchRequest {
                namespace: ctx.ns.clone(),
                index,
                query,
                filters: filters.iter().map(|f| parse_filter(f)).collect::<anyhow::Result<_>>()?,
                from,
                size,
                sort: sort.map(|s| parse_sort(&s)),
                search_after: after.unwrap_or_default(),
                facets: facets.iter().map(|f| parse_facet(f)).collect::<anyhow::Result<_>>()?,
                highlight: (!highlight.is_empty())
                    .then(|| HighlightRequest { fields: highlight, ..Default::default() }),
                min_score,
                min_seq,
                local_statistics: local_stats,
                ..Default::default()
            };
            run_query(ctx, req).await
        }
    }
}

struct Ctx {
    api: SearchServiceClient<Channel>,
    ns: String,
    json: bool,
}

/// `omnishard admin reindex INDEX`.
pub async fn reindex(global: &Global, client: &Client, index: String) -> anyhow::Result<()> {
    let req = ReindexRequest { namespace: global.namespace.clone(), index: index.clone() };
    let done = client.search().reindex(req).await.map_err(ClientError::from)?.into_inner();
    if global.json {
        output::print_json(&json!({"index": index, "documents": done.documents}));
    } else {
        println!("reindexed {index}: {} documents", done.documents);
    }
    Ok(())
}

/// `NAME:TYPE` or `NAME:text:ANALYZER`.
fn parse_field(spec: &str) -> anyhow::Result<FieldSpec> {
    let mut parts = spec.splitn(3, ':');
    let name = parts.next().unwrap_or_default().to_string();
    let kind = parts.next().with_context(|| format!("--field {spec:?}: expected NAME:TYPE"))?;
    let analyzer = parts.next().unwrap_or_default().to_string();
    let r#type = match kind {
        "text" => FieldType::Text,
        "keyword" => FieldType::Keyword,
        "i64" => FieldType::I64,
        "f64" => FieldType::F64,
        "date" => FieldType::Date,
        other => bail!("--field {spec:?}: unknown type {other:?}; use text, keyword, i64, f64 or date"),
    };
    Ok(FieldSpec { name, r#type: r#type as i32, analyzer })
}

fn show_field(f: &FieldSpec) -> String {
    let kind = match FieldType::try_from(f.r#type) {
        Ok(FieldType::Text) => "text",
        Ok(FieldType::Keyword) => "keyword",
        Ok(FieldType::I64) => "i64",
        Ok(FieldType::F64) => "f64",
        Ok(FieldType::Date) => "date",
        _ => "?",
    };
    if f.analyzer.is_empty() {
        format!("{}:{kind}", f.name)
    } else {
        format!("{}:{kind}:{}", f.name, f.analyzer)
    }
}

fn info_json(info: &IndexInfo) -> Value {
    let shards: Vec<Value> = info
        .shards
        .iter()
        .map(|s| {
            json!({"shard": s.shard_id, "documents": s.documents, "searchable_documents": s.searchable_documents,
                   "segments": s.segments, "searchable_seq": s.searchable_seq, "seq": s.seq})
        })
        .collect();
    json!({"index": info.index, "namespace": info.namespace, "documents": info.documents,
           "fields": info.fields.iter().map(show_field).collect::<Vec<_>>(), "shards": shards})
}

fn print_info(ctx: &Ctx, info: &IndexInfo) {
    if ctx.json {
        output::print_json(&info_json(info));
        return;
    }
    println!("index {} ({} documents)", info.index, info.documents);
    println!("fields: {}", info.fields.iter().map(show_field).collect::<Vec<_>>().join(" "));
    println!(
        "{:<12} {:>10} {:>10} {:>9} {:>12} {:>10}",
        "SHARD", "DOCS", "SEARCHABLE", "SEGMENTS", "SEARCH_SEQ", "SEQ"
    );
    for s in &info.shards {
        println!(
            "{:<12} {:>10} {:>10} {:>9} {:>12} {:>10}",
            s.shard_id, s.documents, s.searchable_documents, s.segments, s.searchable_seq, s.seq
        );
    }
}

async fn create(mut ctx: Ctx, index: String, fields: &[String]) -> anyhow::Result<()> {
    let fields = fields.iter().map(|f| parse_field(f)).collect::<anyhow::Result<_>>()?;
    let req = CreateIndexRequest { namespace: ctx.ns.clone(), index, fields };
    let info = ctx.api.create_index(req).await.map_err(ClientError::from)?.into_inner();
    print_info(&ctx, &info);
    Ok(())
}

async fn add_fields(mut ctx: Ctx, index: String, fields: &[String]) -> anyhow::Result<()> {
    let current = ctx
        .api
        .describe_index(DescribeIndexRequest { namespace: ctx.ns.clone(), index: index.clone() })
        .await
        .map_err(ClientError::from)?
        .into_inner();
    let mut all = current.fields;
    for field in fields {
        all.push(parse_field(field)?);
    }
    let req = UpdateIndexRequest { namespace: ctx.ns.clone(), index, fields: all };
    let info = ctx.api.update_index(req).await.map_err(ClientError::from)?.into_inner();
    print_info(&ctx, &info);
    Ok(())
}

async fn drop_index(mut ctx: Ctx, index: String) -> anyhow::Result<()> {
    ctx.api
        .drop_index(DropIndexRequest { namespace: ctx.ns.clone(), index: index.clone() })
        .await
        .map_err(ClientError::from)?;
    if ctx.json {
        output::print_json(&json!({"dropped": index}));
    } else {
        println!("dropped {index}");
    }
    Ok(())
}

async fn describe(mut ctx: Ctx, index: String) -> anyhow::Result<()> {
    let req = DescribeIndexRequest { namespace: ctx.ns.clone(), index };
    let info = ctx.api.describe_index(req).await.map_err(ClientError::from)?.into_inner();
    print_info(&ctx, &info);
    Ok(())
}

async fn list(mut ctx: Ctx) -> anyhow::Result<()> {
    let req = ListIndexesRequest { namespace: ctx.ns.clone() };
    let indexes = ctx.api.list_indexes(req).await.map_err(ClientError::from)?.into_inner().indexes;
    if ctx.json {
        output::print_json(&Value::Array(indexes.iter().map(info_json).collect()));
        return Ok(());
    }
    for info in &indexes {
        println!(
            "{:<24} {:>10} docs  {}",
            info.index,
            info.documents,
            info.fields.iter().map(show_field).collect::<Vec<_>>().join(" ")
        );
    }
    Ok(())
}

/// Splits a JSON-lines document into its id and the rest.
fn document_of(line: &str) -> anyhow::Result<Document> {
    let mut value: serde_json::Map<String, Value> = serde_json::from_str(line).context("not a JSON object")?;
    let id = match value.remove("id") {
        Some(Value::String(id)) => id,
        Some(Value::Number(n)) => n.to_string(),
        _ => bail!("no \"id\" string"),
    };
    Ok(Document { id, json: Value::Object(value).to_string(), version: 0 })
}

async fn index_file(mut ctx: Ctx, index: String, file: &std::path::Path, batch: usize) -> anyhow::Result<()> {
    let size = std::fs::metadata(file).with_context(|| format!("reading {}", file.display()))?.len();
    let reader = std::io::BufReader::new(std::fs::File::open(file)?);
    let bar = output::byte_bar(Some(size), ctx.json);
    let (mut pending, mut written, mut seq) = (Vec::new(), 0u64, 0u64);
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        bar.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        pending.push(document_of(&line).with_context(|| format!("{}:{}", file.display(), n + 1))?);
        if pending.len() >= batch.max(1) {
            let done = flush(&mut ctx, &index, &mut pending).await?;
            written += done.written;
            seq = seq.max(done.seq);
            bar.set_message(format!("{written} documents"));
        }
    }
    let done = flush(&mut ctx, &index, &mut pending).await?;
    written += done.written;
    seq = seq.max(done.seq);
    bar.finish_and_clear();
    if ctx.json {
        output::print_json(&json!({"indexed": written, "seq": seq}));
    } else {
        println!("indexed {written} documents into {index} (seq {seq}; searchable within the refresh interval, or query with --min-seq {seq})");
    }
    Ok(())
}

async fn flush(ctx: &mut Ctx, index: &str, pending: &mut Vec<Document>) -> anyhow::Result<IndexDocumentsResponse> {
    if pending.is_empty() {
        return Ok(IndexDocumentsResponse::default());
    }
    let req = IndexDocumentsRequest {
        namespace: ctx.ns.clone(),
        index: index.to_string(),
        documents: std::mem::take(pending),
    };
    Ok(ctx.api.index_documents(req).await.map_err(ClientError::from)?.into_inner())
}

async fn get(mut ctx: Ctx, index: String, ids: Vec<String>) -> anyhow::Result<()> {
    let req = GetDocumentsRequest { namespace: ctx.ns.clone(), index, ids: ids.clone() };
    let docs = ctx.api.get_documents(req).await.map_err(ClientError::from)?.into_inner().documents;
    let mut missing = Vec::new();
    for (id, doc) in ids.iter().zip(docs) {
        match doc.document.filter(|_| doc.found) {
            Some(d) if ctx.json => {
                output::print_json(&json!({"id": d.id, "version": d.version, "document": parse(&d.json)}))
            }
            Some(d) => println!("{}\t{}", d.id, d.json),
            None => missing.push(id.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(ClientError::from(tonic::Status::not_found(format!(
            "documents not found: {}",
            missing.join(", ")
        )))
        .into());
    }
    Ok(())
}

async fn delete(mut ctx: Ctx, index: String, ids: Vec<String>) -> anyhow::Result<()> {
    let req = DeleteDocumentsRequest { namespace: ctx.ns.clone(), index, ids };
    let done = ctx.api.delete_documents(req).await.map_err(ClientError::from)?.into_inner();
    print_written(&ctx, "deleted", &done);
    Ok(())
}

async fn update(mut ctx: Ctx, index: String, id: String, json: String) -> anyhow::Result<()> {
    let req = UpdateDocumentRequest { namespace: ctx.ns.clone(), index, id, json };
    let done = ctx.api.update_document(req).await.map_err(ClientError::from)?.into_inner();
    print_written(&ctx, "updated", &done);
    Ok(())
}

fn print_written(ctx: &Ctx, what: &str, done: &IndexDocumentsResponse) {
    if ctx.json {
        output::print_json(&json!({what: done.written, "seq": done.seq}));
    } else {
        println!("{what} {} (seq {})", done.written, done.seq);
    }
}

async fn refresh(mut ctx: Ctx, index: String) -> anyhow::Result<()> {
    let req = RefreshRequest { namespace: ctx.ns.clone(), index };
    let done = ctx.api.refresh(req).await.map_err(ClientError::from)?.into_inner();
    if ctx.json {
        output::print_json(&json!({"searchable_seq": done.searchable_seq}));
    } else {
        println!("searchable up to seq {}", done.searchable_seq);
    }
    Ok(())
}

fn parse(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or(Value::Null)
}

async fn run_query(mut ctx: Ctx, req: SearchRequest) -> anyhow::Result<()> {
    let res = ctx.api.search(req).await.map_err(ClientError::from)?.into_inner();
    if ctx.json {
        let hits: Vec<Value> = res
            .hits
            .iter()
            .map(|h| {
                json!({"id": h.id, "score": h.score, "sort": h.sort_value, "document": parse(&h.json),
                       "highlights": h.highlights})
            })
            .collect();
        let facets: Vec<Value> = res
            .facets
            .iter()
            .map(|f| {
                let counts: Vec<Value> = f.counts.iter().map(|c| json!({"value": c.value, "count": c.count})).collect();
                json!({"field": f.field, "counts": counts, "other": f.other})
            })
            .collect();
        output::print_json(&json!({"total": res.total, "hits": hits, "facets": facets, "next": res.next_cursor}));
        return Ok(());
    }
    println!("{} hits", res.total);
    for hit in &res.hits {
        let sort = if hit.sort_value.is_empty() { String::new() } else { format!("  [{}]", hit.sort_value) };
        println!("{:>9.4}  {}{}  {}", hit.score, hit.id, sort, hit.json);
        let mut fields: Vec<_> = hit.highlights.iter().collect();
        fields.sort();
        for (field, fragment) in fields {
            println!("           {field}: {fragment}");
        }
    }
    for facet in &res.facets {
        let counts: Vec<String> = facet.counts.iter().map(|c| format!("{} ({})", c.value, c.count)).collect();
        println!(
            "facet {}: {}{}",
            facet.field,
            counts.join(", "),
            if facet.other > 0 { format!(", other ({})", facet.other) } else { String::new() }
        );
    }
    if !res.next_cursor.is_empty() {
        println!("next page: --after {}", res.next_cursor);
    }
    Ok(())
}

/// `FIELD=V1,V2`, `FIELD=A..B`, `FIELD>=X`, `FIELD>X`, `FIELD<=X`, `FIELD<X`.
fn parse_filter(text: &str) -> anyhow::Result<SearchFilter> {
    for op in [">=", "<=", ">", "<", "="] {
        let Some((field, value)) = text.split_once(op) else { continue };
        let mut filter = SearchFilter { field: field.trim().to_string(), ..Default::default() };
        let value = value.trim().to_string();
        match op {
            ">=" => filter.gte = value,
            "<=" => filter.lte = value,
            ">" => filter.gt = value,
            "<" => filter.lt = value,
            _ => match value.split_once("..") {
                Some((lo, hi)) => {
                    filter.gte = lo.to_string();
                    filter.lte = hi.to_string();
                }
                None => filter.any_of = value.split(',').map(str::to_string).collect(),
            },
        }
        return Ok(filter);
    }
    bail!("--filter {text:?}: expected FIELD=V, FIELD=A..B, FIELD>=X, FIELD>X, FIELD<=X or FIELD<X")
}

fn parse_facet(text: &str) -> anyhow::Result<FacetRequest> {
    match text.split_once(':') {
        Some((field, size)) => Ok(FacetRequest {
            field: field.to_string(),
            size: size.parse().with_context(|| format!("--facet {text:?}: size must be a number"))?,
        }),
        None => Ok(FacetRequest { field: text.to_string(), size: 0 }),
    }
}

fn parse_sort(text: &str) -> SearchSort {
    let (field, order) = match text.rsplit_once(':') {
        Some((field, "desc")) => (field, SortOrder::Desc),
        Some((field, "asc")) => (field, SortOrder::Asc),
        _ => (text, SortOrder::Default),
    };
    SearchSort { field: field.to_string(), order: order as i32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_filters_parse() {
        let f = parse_filter("year>=2000").unwrap();
        assert_eq!((f.field.as_str(), f.gte.as_str()), ("year", "2000"));
        let f = parse_filter("tag=a,b").unwrap();
        assert_eq!(f.any_of, vec!["a", "b"]);
        let f = parse_filter("n=1..5").unwrap();
        assert_eq!((f.gte.as_str(), f.lte.as_str()), ("1", "5"));
        assert!(parse_filter("nonsense").is_err());
    }

    #[test]
    fn test_fields_parse() {
        let f = parse_field("body:text:en_stem").unwrap();
        assert_eq!((f.name.as_str(), f.analyzer.as_str()), ("body", "en_stem"));
        assert!(parse_field("x:blob").is_err());
        assert!(parse_field("x").is_err());
    }
}
