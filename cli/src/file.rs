//! `omnishard file ...`: upload, download (whole or a byte range), list,
//! stat, delete and copy files, with progress bars for large transfers.

use std::path::Path;

use anyhow::Context;
use omnishard_client::{Client, FileInfo, UploadHeader};
use omnishard_proto::v1::{CopyFileRequest, DeleteFileRequest, ListFilesRequest, StatFileRequest, VerifyFilesRequest};
use ring::digest::SHA256;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::args::{FileCommand, Global};
use crate::output;

/// Bytes per upload message.
const PIECE: usize = 1 << 20;

pub async fn run(global: &Global, cmd: FileCommand) -> anyhow::Result<()> {
    let client = Client::connect(&global.gateway).await?.with_namespace(global.namespace.clone());
    match cmd {
        FileCommand::Put { local, key, content_type, metadata, compress } => {
            let header = UploadHeader {
                key: key.into_bytes(),
                content_type,
                metadata: metadata.into_iter().collect(),
                compress: compress.then_some(true),
                ..Default::default()
            };
            put(global, &client, &local, header).await
        }
        FileCommand::Get { key, local, range } => get(global, &client, &key, &local, range).await,
        FileCommand::Ls { prefix } => list(global, &client, prefix).await,
        FileCommand::Stat { key, chunks } => {
            let req = StatFileRequest { namespace: global.namespace.clone(), key: key.into_bytes(), chunks };
            let info = client.files().stat(req).await.map_err(omnishard_client::Error::from)?.into_inner();
            print_info(global, &info, chunks);
            Ok(())
        }
        FileCommand::Rm { key } => {
            let req = DeleteFileRequest { namespace: global.namespace.clone(), key: key.clone().into_bytes() };
            let deleted = client.files().delete(req).await.map_err(omnishard_client::Error::from)?.into_inner().deleted;
            if global.json {
                output::print_json(&json!({ "deleted": deleted }));
            } else if deleted {
                println!("deleted {key}");
            } else {
                println!("{key} did not exist");
            }
            Ok(())
        }
        FileCommand::Cp { source, destination } => {
            let req = CopyFileRequest {
                namespace: global.namespace.clone(),
                source: source.into_bytes(),
                destination: destination.into_bytes(),
            };
            let copied = client.files().copy(req).await.map_err(omnishard_client::Error::from)?.into_inner();
            print_info(global, &copied.file.unwrap_or_default(), false);
            Ok(())
        }
    }
}

async fn put(global: &Global, client: &Client, local: &Path, mut header: UploadHeader) -> anyhow::Result<()> {
    let (reader, size): (Box<dyn tokio::io::AsyncRead + Unpin + Send>, Option<u64>) = if local == Path::new("-") {
        (Box::new(tokio::io::stdin()), None)
    } else {
        let file = tokio::fs::File::open(local).await.with_context(|| format!("opening {}", local.display()))?;
        let size = file.metadata().await?.len();
        (Box::new(file), Some(size))
    };
    header.size = size;
    let bar = output::byte_bar(size, global.json);
    let progress = bar.clone();
    let pieces = futures::stream::unfold(reader, move |mut reader| {
        let progress = progress.clone();
        async move {
            let mut piece = vec![0u8; PIECE];
            let mut filled = 0;
            while filled < PIECE {
                match reader.read(&mut piece[filled..]).await {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    // The gateway sees the stream end short of the declared size and refuses it.
                    Err(_) => break,
                }
            }
            (filled > 0).then(|| {
                piece.truncate(filled);
                progress.inc(filled as u64);
                (piece, reader)
            })
        }
    });
    let done = client.upload(header, pieces).await?;
    bar.finish_and_clear();
    let info = done.file.unwrap_or_default();
    if global.json {
        let mut value = info_json(&info, false);
        value["chunks_stored"] = json!(done.chunks_stored);
        value["chunks_deduplicated"] = json!(done.chunks_deduplicated);
        output::print_json(&value);
    } else {
        println!(
            "stored {} ({} bytes, {} chunks: {} new, {} already stored) sha256 {}",
            output::text(&info.key),
            info.size,
            info.chunk_count,
            done.chunks_stored,
            done.chunks_deduplicated,
            hex::encode(&info.sha256)
        );
    }
    Ok(())
}

async fn get(
    global: &Global,
    client: &Client,
    key: &str,
    local: &Path,
    range: Option<(u64, Option<u64>)>,
) -> anyhow::Result<()> {
    let (offset, length) = match range {
        None => (0, 0),
        Some((start, end)) => (start, end.map_or(0, |end| end - start + 1)),
    };
    let mut reader = client.download(key.as_bytes(), offset, length).await?;
    let whole = range.is_none();
    let expected = if length == 0 { reader.info.size - offset } else { length.min(reader.info.size - offset) };
    let to_stdout = local == Path::new("-");
    let bar = output::byte_bar(Some(expected), global.json || to_stdout);
    // Written beside the target and renamed at the end, so an interrupted
    // download never leaves a truncated file under the real name.
    let partial = local.with_extension("omnishard-partial");
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = if to_stdout {
        Box::new(tokio::io::stdout())
    } else {
        Box::new(tokio::fs::File::create(&partial).await.with_context(|| format!("creating {}", partial.display()))?)
    };
    let mut hasher = ring::digest::Context::new(&SHA256);
    let mut received = 0u64;
    while let Some(piece) = reader.next_bytes().await? {
        if whole {
            hasher.update(&piece);
        }
        received += piece.len() as u64;
        out.write_all(&piece).await?;
        bar.inc(piece.len() as u64);
    }
    out.flush().await?;
    drop(out);
    bar.finish_and_clear();
    if received != expected {
        anyhow::bail!("the download ended after {received} of {expected} bytes");
    }
    if whole && hasher.finish().as_ref()[..] != reader.info.sha256[..] {
        anyhow::bail!("data loss: the downloaded bytes do not match the file's SHA-256");
    }
    if !to_stdout {
        tokio::fs::rename(&partial, local).await.with_context(|| format!("renaming to {}", local.display()))?;
        if global.json {
            output::print_json(&json!({"key": key, "bytes": received, "path": local.display().to_string()}));
        } else {
            println!("wrote {received} bytes to {}", local.display());
        }
    }
    Ok(())
}

async fn list(global: &Global, client: &Client, prefix: String) -> anyhow::Result<()> {
    let mut cursor = Vec::new();
    loop {
        let req = ListFilesRequest {
            namespace: global.namespace.clone(),
            prefix: prefix.clone().into_bytes(),
            cursor,
            limit: 1000,
        };
        let page = client.files().list(req).await.map_err(omnishard_client::Error::from)?.into_inner();
        for info in &page.files {
            if global.json {
                output::print_json(&info_json(info, false));
            } else {
                println!("{:>14}  {}  {}", info.size, hex::encode(&info.sha256), output::text(&info.key));
            }
        }
        if page.next_cursor.is_empty() {
            return Ok(());
        }
        cursor = page.next_cursor;
    }
}

pub async fn verify(global: &Global, client: &Client) -> anyhow::Result<()> {
    let report =
        client.files().verify(VerifyFilesRequest {}).await.map_err(omnishard_client::Error::from)?.into_inner();
    if global.json {
        let corrupt: Vec<Value> = report
            .corrupt
            .iter()
            .map(|c| json!({"shard_id": c.shard_id, "namespace": c.namespace, "sha256": hex::encode(&c.sha256), "reason": c.reason}))
            .collect();
        let missing: Vec<Value> = report
            .missing
            .iter()
            .map(|m| json!({"namespace": m.namespace, "key": output::bytes_json(&m.key), "sha256": hex::encode(&m.sha256)}))
            .collect();
        output::print_json(&json!({
            "files": report.files, "chunks": report.chunks, "bytes": report.bytes,
            "unreferenced": report.unreferenced, "corrupt": corrupt, "missing": missing,
            "ok": report.corrupt.is_empty() && report.missing.is_empty(),
        }));
    } else {
        println!(
            "checked {} files, {} chunks, {} bytes; {} corrupt, {} missing, {} unreferenced",
            report.files,
            report.chunks,
            report.bytes,
            report.corrupt.len(),
            report.missing.len(),
            report.unreferenced
        );
        for c in &report.corrupt {
            println!("corrupt: shard {} chunk {} ({}): {}", c.shard_id, hex::encode(&c.sha256), c.namespace, c.reason);
        }
        for m in &report.missing {
            println!("missing: chunk {} of file {} ({})", hex::encode(&m.sha256), output::text(&m.key), m.namespace);
        }
    }
    if !report.corrupt.is_empty() || !report.missing.is_empty() {
        anyhow::bail!("data loss: {} corrupt and {} missing chunks", report.corrupt.len(), report.missing.len());
    }
    Ok(())
}

fn info_json(info: &FileInfo, chunks: bool) -> Value {
    let mut value = json!({
        "key": output::bytes_json(&info.key),
        "size": info.size,
        "sha256": hex::encode(&info.sha256),
        "content_type": info.content_type,
        "metadata": info.metadata,
        "chunk_count": info.chunk_count,
        "version": info.version,
        "created_ms": info.created_ms,
    });
    if chunks {
        value["chunks"] =
            info.chunks.iter().map(|c| json!({"sha256": hex::encode(&c.sha256), "size": c.size})).collect();
    }
    value
}

fn print_info(global: &Global, info: &FileInfo, chunks: bool) {
    if global.json {
        output::print_json(&info_json(info, chunks));
        return;
    }
    println!("key:          {}", output::text(&info.key));
    println!("size:         {} bytes", info.size);
    println!("sha256:       {}", hex::encode(&info.sha256));
    println!("content type: {}", info.content_type);
    println!("chunks:       {}", info.chunk_count);
    println!("version:      {}", info.version);
    let mut metadata: Vec<_> = info.metadata.iter().collect();
    metadata.sort();
    for (k, v) in metadata {
        println!("meta:         {k}={v}");
    }
    for c in chunks.then_some(&info.chunks).into_iter().flatten() {
        println!("  {} {:>10}", hex::encode(&c.sha256), c.size);
    }
}
