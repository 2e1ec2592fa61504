//! `omnishard kv ...`: key-value commands against a gateway.

use std::io::Read;

use anyhow::Context;
use omnishard_client::{Client, PutOptions, ReadMode};
use serde_json::json;

use crate::args::{Global, KvCommand};
use crate::output;

/// Most keys fetched per scan call while listing.
const SCAN_PAGE: usize = 1000;

pub async fn run(global: &Global, cmd: KvCommand) -> anyhow::Result<()> {
    let client = Client::connect(&global.gateway).await?.with_namespace(global.namespace.clone());
    match cmd {
        KvCommand::Put { key, value, ttl, expected_version } => {
            let value = if value == "-" { read_stdin()? } else { value.into_bytes() };
            let written = client.put(key.as_bytes(), &value, PutOptions { ttl, expected_version }).await?;
            if global.json {
                output::print_json(
                    &json!({"shard_id": written.shard_id, "version": written.version, "seq": written.seq}),
                );
            } else {
                println!("OK version={} shard={}", written.version, written.shard_id);
            }
        }
        KvCommand::Get { key, follower, min_seq } => {
            let mode = match follower {
                true => ReadMode::Follower { min_seq: min_seq.unwrap_or(0) },
                false => ReadMode::Linearizable,
            };
            let kv = client.get_with(key.as_bytes(), mode).await?;
            if global.json {
                output::print_json(&output::kv_json(&kv));
            } else {
                output::write_raw(&kv.value)?;
            }
        }
        KvCommand::Del { key, expected_version } => {
            let deleted = client.delete(key.as_bytes(), expected_version).await?;
            if global.json {
                output::print_json(&json!({ "deleted": deleted }));
            } else {
                println!("{}", if deleted { "deleted" } else { "not found (nothing deleted)" });
            }
        }
        KvCommand::Scan { prefix, limit } => scan(global, &client, prefix.as_bytes(), limit).await?,
    }
    Ok(())
}

/// Lists up to `limit` keys, following cursors page by page.
async fn scan(global: &Global, client: &Client, prefix: &[u8], limit: usize) -> anyhow::Result<()> {
    let mut cursor: Option<Vec<u8>> = None;
    let mut listed = Vec::new();
    while listed.len() < limit {
        let page_size = (limit - listed.len()).min(SCAN_PAGE) as u32;
        let page = client.scan(prefix, cursor.as_deref(), page_size).await?;
        for kv in page.entries {
            if !global.json {
                println!("{}\t{}", output::text(&kv.key), output::text(&kv.value));
            }
            listed.push(kv);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => {
                cursor = None;
                break;
            }
        }
    }
    if global.json {
        let entries: Vec<_> = listed.iter().map(output::kv_json).collect();
        output::print_json(&json!({ "entries": entries, "more": cursor.is_some() }));
    }
    Ok(())
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut value = Vec::new();
    std::io::stdin().read_to_end(&mut value).context("reading the value from stdin")?;
    Ok(value)
}
