//! Graph reads of one shard: vertices by id, the edge halves stored with a
//! vertex, and local breadth-first expansion.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use omnishard_common::predicate::{properties_pass, Predicate};
use omnishard_proto::v1::{Direction as Dir, Edge, EdgeHalf, FrontierEntry, Reached, Vertex};
use rocksdb::{Direction, IteratorMode, ReadOptions};

use super::keys;
use super::write::{decode_edge, decode_vertex, ends, half_tag};
use crate::codec::prefix_end;
use crate::error::Result;
use crate::store::{Store, CF_GRAPH};

/// Reads vertices by id; `None` for missing ones.
pub fn get_vertices(store: &Store, namespace: &str, graph: &str, ids: &[String]) -> Result<Vec<Option<Vertex>>> {
    let prefix = keys::graph_prefix(namespace, graph);
    let cf = store.cf(CF_GRAPH)?;
    let stored: Vec<Vec<u8>> = ids.iter().map(|id| keys::vertex(&prefix, id)).collect();
    let results = store.db().batched_multi_get_cf(cf, stored.iter(), false);
    ids.iter().zip(results).map(|(id, r)| r?.map(|raw| decode_vertex(id, &raw)).transpose()).collect()
}

/// The version a stored graph record carries (vertices and edge halves;
/// 0 for label entries and undecodable values).
pub fn stored_version(key: &[u8], value: &[u8]) -> u64 {
    use prost::Message;
    if key.first() == Some(&keys::PENDING) {
        return Edge::decode(value).map(|e| e.version).unwrap_or(0);
    }
    // The tag follows `namespace 0x00 graph 0x00`.
    let tag = key.iter().enumerate().filter(|(_, &b)| b == 0).nth(1).and_then(|(i, _)| key.get(i + 1));
    match tag {
        Some(&keys::VERTEX) => Vertex::decode(value).map(|v| v.version).unwrap_or(0),
        Some(&keys::OUT) | Some(&keys::IN) => Edge::decode(value).map(|e| e.version).unwrap_or(0),
        _ => 0,
    }
}

/// Up to `limit` vertices with `label` (and `property` equal to `value`, when
/// given) whose id is greater than `start_after`, in id order, among those
/// `owned` accepts (a copy taken in or left behind by a migration is not
/// this shard's to answer for); the flag says whether the label index has more entries.
#[allow(clippy::too_many_arguments)]
pub fn find(
    store: &Store,
    namespace: &str,
    graph: &str,
    label: &str,
    property: Option<(&str, &serde_json::Value)>,
    start_after: &str,
    limit: usize,
    owned: impl Fn(&str) -> bool,
) -> Result<(Vec<Vertex>, bool)> {
    let prefix = keys::graph_prefix(namespace, graph);
    let index = keys::label_prefix(&prefix, label);
    let mut start = index.clone();
    if !start_after.is_empty() {
        start.extend_from_slice(start_after.as_bytes());
        start.push(0);
    }
    let mut opts = ReadOptions::default();
    if let Some(end) = prefix_end(&index) {
        opts.set_iterate_upper_bound(end);
    }
    let cf = store.cf(CF_GRAPH)?;
    let mut found = Vec::new();
    for item in store.db().iterator_cf_opt(cf, opts, IteratorMode::From(&start, Direction::Forward)) {
        let (key, _) = item?;
        let id = String::from_utf8_lossy(&key[index.len()..]).into_owned();
        if !owned(&id) {
            continue;
        }
        let Some(vertex) = get_vertices(store, namespace, graph, std::slice::from_ref(&id))?.pop().flatten() else {
            continue;
        };
        if let Some((name, value)) = property {
            let props: serde_json::Value = serde_json::from_str(&vertex.properties_json).unwrap_or_default();
            if props.get(name) != Some(value) {
                continue;
            }
        }
        if found.len() == limit {
            return Ok((found, true));
        }
        found.push(vertex);
    }
    Ok((found, false))
}

/// Intents of pending out-halves last written at or before `older_than_ms`.
pub fn pending(store: &Store, older_than_ms: u64, limit: usize) -> Result<Vec<(String, String, Edge)>> {
    let mut opts = ReadOptions::default();
    opts.set_iterate_upper_bound(vec![keys::PENDING + 1]);
    let cf = store.cf(CF_GRAPH)?;
    let mut out = Vec::new();
    for item in store.db().iterator_cf_opt(cf, opts, IteratorMode::From(&[keys::PENDING], Direction::Forward)) {
        let (key, raw) = item?;
        let Some((ns, graph)) = keys::parse_pending(&key) else { continue };
        let edge = decode_edge(&raw)?;
        if edge.updated_ms <= older_than_ms {
            out.push((ns, graph, edge));
            if out.len() == limit {
                break;
            }
        }
    }
    Ok(out)
}

/// One page of edge halves stored with `id`.
pub struct EdgePage {
    pub edges: Vec<Edge>,
    /// The last key suffix returned, when more may follow.
    pub next: Option<Vec<u8>>,
}

/// Edge halves of `id` on side `half`, optionally only `labels`, after `start_after`, at most `limit`.
#[allow(clippy::too_many_arguments)]
pub fn edges(
    store: &Store,
    namespace: &str,
    graph: &str,
    id: &str,
    half: EdgeHalf,
    labels: &[String],
    start_after: &[u8],
    limit: usize,
) -> Result<EdgePage> {
    let prefix = keys::graph_prefix(namespace, graph);
    let all = keys::halves_prefix(&prefix, half_tag(half), id, None);
    let mut found: Vec<(Vec<u8>, Edge)> = Vec::new();
    // One contiguous range per label (or one for all); results ordered by (label, other id).
    let mut ranges: Vec<Vec<u8>> = if labels.is_empty() {
        vec![all.clone()]
    } else {
        labels.iter().map(|l| keys::halves_prefix(&prefix, half_tag(half), id, Some(l))).collect()
    };
    ranges.sort();
    ranges.dedup();
    let cf = store.cf(CF_GRAPH)?;
    for range in ranges {
        let mut start = range.clone();
        let mut after = all.clone();
        after.extend_from_slice(start_after);
        if !start_after.is_empty() && after >= start {
            after.push(0);
            start = after;
        }
        let mut opts = ReadOptions::default();
        if let Some(end) = prefix_end(&range) {
            opts.set_iterate_upper_bound(end);
        }
        for item in store.db().iterator_cf_opt(cf, opts, IteratorMode::From(&start, Direction::Forward)) {
            let (key, raw) = item?;
            if found.len() == limit {
                // More follow: the cursor is the key suffix of the last edge returned.
                let next = found.last().map(|(suffix, _)| suffix.clone());
                return Ok(EdgePage { edges: found.into_iter().map(|(_, e)| e).collect(), next });
            }
            found.push((key[all.len()..].to_vec(), decode_edge(&raw)?));
        }
    }
    Ok(EdgePage { edges: found.into_iter().map(|(_, e)| e).collect(), next: None })
}

/// Parameters of a local expansion.
pub struct Expand<'a> {
    pub namespace: &'a str,
    pub graph: &'a str,
    pub direction: Dir,
    pub edge_labels: &'a [String],
    pub vertex_labels: &'a [String],
    pub max_depth: u32,
    pub max_visited: usize,
    pub max_fanout: usize,
    pub with_paths: bool,
    /// Every visited vertex (but the start) must pass these.
    pub vertex_filters: &'a [(String, Predicate)],
    /// Every followed edge must pass these.
    pub edge_filters: &'a [(String, Predicate)],
}

fn passes(properties: &str, filters: &[(String, Predicate)]) -> bool {
    filters.is_empty() || filters.iter().all(|(key, p)| properties_pass(properties, key, p))
}

/// What a local expansion found.
#[derive(Default)]
pub struct Expanded {
    pub reached: Vec<Reached>,
    pub remote: Vec<FrontierEntry>,
    pub truncated_by: String,
    pub edges_read: u64,
}

/// Breadth-first (by depth) expansion from `frontier`, following edges as
/// long as the next vertex is local (`owns`), returning the entries that
/// leave the shard. Stops at `max_depth`; budgets flag the result truncated.
pub fn expand(
    store: &Store,
    params: &Expand,
    frontier: Vec<FrontierEntry>,
    owns: impl Fn(&str) -> bool,
) -> Result<Expanded> {
    let mut out = Expanded::default();
    let mut best: HashMap<String, u32> = HashMap::new();
    let mut remote: HashMap<String, FrontierEntry> = HashMap::new();
    let mut queue = BinaryHeap::new();
    for (n, entry) in frontier.into_iter().enumerate() {
        queue.push(Reverse((entry.depth, n, entry.id, entry.path)));
    }
    let mut pushed = queue.len();
    let halves: &[EdgeHalf] = match params.direction {
        Dir::In => &[EdgeHalf::In],
        Dir::Both => &[EdgeHalf::Out, EdgeHalf::In],
        _ => &[EdgeHalf::Out],
    };
    while let Some(Reverse((depth, _, id, path))) = queue.pop() {
        if best.get(&id).is_some_and(|&d| d <= depth) {
            continue;
        }
        let Some(vertex) =
            get_vertices(store, params.namespace, params.graph, std::slice::from_ref(&id))?.pop().flatten()
        else {
            continue; // deleted meanwhile, or a dangling half being repaired
        };
        let filtered_out = (!params.vertex_labels.is_empty() && !params.vertex_labels.contains(&vertex.label))
            || !passes(&vertex.properties_json, params.vertex_filters);
        if depth > 0 && filtered_out {
            continue;
        }
        best.insert(id.clone(), depth);
        out.reached.push(Reached { vertex: Some(vertex), depth, path: path.clone() });
        if out.reached.len() >= params.max_visited {
            out.truncated_by = "max_visited".into();
            break;
        }
        if depth >= params.max_depth {
            continue;
        }
        for &half in halves {
            let page =
                edges(store, params.namespace, params.graph, &id, half, params.edge_labels, b"", params.max_fanout)?;
            if page.next.is_some() {
                out.truncated_by = "max_fanout".into();
            }
            out.edges_read += page.edges.len() as u64;
            for edge in page.edges.into_iter().filter(|e| passes(&e.properties_json, params.edge_filters)) {
                let (_, next) = ends(half, &edge.from, &edge.to);
                let mut next_path = Vec::new();
                if params.with_paths {
                    next_path = path.clone();
                    next_path.push(next.to_string());
                }
                if owns(next) {
                    pushed += 1;
                    queue.push(Reverse((depth + 1, pushed, next.to_string(), next_path)));
                } else {
                    let better = remote.get(next).is_none_or(|e| e.depth > depth + 1);
                    if better {
                        remote.insert(
                            next.to_string(),
                            FrontierEntry { id: next.to_string(), depth: depth + 1, path: next_path },
                        );
                    }
                }
            }
        }
    }
    out.remote = remote.into_values().collect();
    Ok(out)
}
