//! Staging graph mutations: called by the apply thread (the only writer), so
//! reads of the current state here are consistent with the batch being built.
//! A transaction either stages completely or fails without touching the batch.

use std::collections::BTreeMap;

use omnishard_proto::v1::{graph_op, Edge, EdgeHalf, EdgeRef, GraphOp, Vertex, VertexWrite, WriteMode};
use prost::Message;
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use super::keys;
use crate::codec::prefix_end;
use crate::error::{Error, Result};
use crate::store::{Store, CF_GRAPH};

/// Graph mutations of one graph that commit together or not at all.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GraphTxn {
    pub namespace: String,
    pub graph: String,
    #[serde(with = "crate::raft::wire::protos")]
    pub ops: Vec<GraphOp>,
}

/// What a committed graph transaction wrote and removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GraphCommitted {
    pub seq: u64,
    pub vertices: Vec<Vertex>,
    pub edges: Vec<Edge>,
    pub removed_edges: Vec<EdgeRef>,
    pub edge_halves_deleted: u64,
    pub vertices_deleted: u64,
}

/// Pending writes of one transaction, read before the database.
struct Staged<'a> {
    store: &'a Store,
    changes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Staged<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(change) = self.changes.get(key) {
            return Ok(change.clone());
        }
        Ok(self.store.db().get_cf(self.store.cf(CF_GRAPH)?, key)?)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.changes.insert(key, Some(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.changes.insert(key, None);
    }

    /// Live keys and values under `prefix`: the database merged with staged changes.
    fn scan(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut found: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut opts = ReadOptions::default();
        if let Some(end) = prefix_end(prefix) {
            opts.set_iterate_upper_bound(end);
        }
        let cf = self.store.cf(CF_GRAPH)?;
        for item in self.store.db().iterator_cf_opt(cf, opts, IteratorMode::From(prefix, Direction::Forward)) {
            let (k, v) = item?;
            found.insert(k.to_vec(), v.to_vec());
        }
        for (k, change) in self.changes.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            match change {
                Some(v) => found.insert(k.clone(), v.clone()),
                None => found.remove(k),
            };
        }
        Ok(found.into_iter().collect())
    }
}

/// Stages `txn` under sequence `seq` into `batch`; also returns every
/// stored key it changes (a running migration marks the moving ones).
pub fn stage(
    store: &Store,
    txn: &GraphTxn,
    seq: u64,
    now_ms: u64,
    batch: &mut WriteBatch,
) -> Result<(GraphCommitted, Vec<Vec<u8>>)> {
    let prefix = keys::graph_prefix(&txn.namespace, &txn.graph);
    let mut staged = Staged { store, changes: BTreeMap::new() };
    let mut out = GraphCommitted { seq, ..Default::default() };
    for op in &txn.ops {
        match &op.op {
            Some(graph_op::Op::PutVertex(w)) => out.vertices.push(put_vertex(&mut staged, &prefix, w, seq, now_ms)?),
            Some(graph_op::Op::DeleteVertex(id)) => delete_vertex(&mut staged, &prefix, id, &mut out)?,
            Some(graph_op::Op::PutEdgeHalf(h)) => {
                let edge = h.edge.as_ref().ok_or_else(|| missing("put_edge_half.edge"))?;
                let half = half_of(h.half)?;
                let written = put_half(&mut staged, &prefix, half, edge, (h.mode, h.expected_version), seq, now_ms)?;
                if h.pending && half == EdgeHalf::Out {
                    staged.put(keys::pending(&prefix, &edge.from, &edge.label, &edge.to), written.encode_to_vec());
                }
                out.edges.push(written);
            }
            Some(graph_op::Op::ClearPending(e)) => staged.delete(keys::pending(&prefix, &e.from, &e.label, &e.to)),
            Some(graph_op::Op::DeleteEdgeHalf(h)) => {
                let edge = h.edge.as_ref().ok_or_else(|| missing("delete_edge_half.edge"))?;
                let (owner, other) = ends(half_of(h.half)?, &edge.from, &edge.to);
                let key = keys::half(&prefix, half_tag(half_of(h.half)?), owner, &edge.label, other);
                if half_of(h.half)? == EdgeHalf::Out {
                    staged.delete(keys::pending(&prefix, &edge.from, &edge.label, &edge.to));
                }
                if staged.get(&key)?.is_some() {
                    staged.delete(key);
                    out.edge_halves_deleted += 1;
                }
            }
            None => return Err(missing("ops[].op")),
        }
    }
    let cf = store.cf(CF_GRAPH)?;
    let mut changed = Vec::with_capacity(staged.changes.len());
    for (key, change) in staged.changes {
        match change {
            Some(value) => batch.put_cf(cf, &key, value),
            None => batch.delete_cf(cf, &key),
        }
        changed.push(key);
    }
    Ok((out, changed))
}

fn put_vertex(staged: &mut Staged, prefix: &[u8], w: &VertexWrite, seq: u64, now: u64) -> Result<Vertex> {
    let key = keys::vertex(prefix, &w.id);
    let current = staged.get(&key)?.map(|raw| decode_vertex(&w.id, &raw)).transpose()?;
    let mode = WriteMode::try_from(w.mode).unwrap_or(WriteMode::Upsert);
    let current_version = current.as_ref().map(|v| v.version).unwrap_or(0);
    if let Some(expected) = w.expected_version {
        if expected != current_version {
            return Err(Error::VersionConflict { key: format!("vertex {}", w.id), expected, actual: current_version });
        }
    }
    let properties = parse_object(&w.properties_json)?;
    let (label, properties_json, created_ms) = match (&current, mode) {
        (Some(_), WriteMode::Create) => return Err(Error::AlreadyExists { what: format!("vertex {:?}", w.id) }),
        (None, WriteMode::Merge | WriteMode::Replace) => {
            return Err(Error::NotFound { what: format!("vertex {:?}", w.id) })
        }
        (Some(old), WriteMode::Merge) => {
            let mut merged = parse_object(&old.properties_json)?;
            merged.extend(properties);
            let label = if w.label.is_empty() { old.label.clone() } else { w.label.clone() };
            (label, serde_json::Value::Object(merged).to_string(), old.created_ms)
        }
        (old, _) => {
            let label = match old {
                Some(old) if w.label.is_empty() => old.label.clone(),
                _ => w.label.clone(),
            };
            (
                label,
                serde_json::Value::Object(properties).to_string(),
                old.as_ref().map(|o| o.created_ms).unwrap_or(now),
            )
        }
    };
    if let Some(old) = &current {
        if old.label != label {
            staged.delete(keys::label_entry(prefix, &old.label, &w.id));
        }
    }
    let vertex = Vertex { id: w.id.clone(), label, properties_json, version: seq, created_ms, updated_ms: now };
    staged.put(keys::label_entry(prefix, &vertex.label, &vertex.id), Vec::new());
    staged.put(key, vertex.encode_to_vec());
    Ok(vertex)
}

fn delete_vertex(staged: &mut Staged, prefix: &[u8], id: &str, out: &mut GraphCommitted) -> Result<()> {
    let key = keys::vertex(prefix, id);
    let Some(raw) = staged.get(&key)? else { return Ok(()) };
    let vertex = decode_vertex(id, &raw)?;
    out.vertices_deleted += 1;
    staged.delete(keys::label_entry(prefix, &vertex.label, id));
    staged.delete(key);
    for (intent, _) in staged.scan(&keys::pending_prefix(prefix, id))? {
        staged.delete(intent);
    }
    for tag in [keys::OUT, keys::IN] {
        for (half_key, raw) in staged.scan(&keys::halves_prefix(prefix, tag, id, None))? {
            let edge = decode_edge(&raw)?;
            out.removed_edges.push(EdgeRef { from: edge.from, to: edge.to, label: edge.label });
            staged.delete(half_key);
            out.edge_halves_deleted += 1;
        }
    }
    Ok(())
}

fn put_half(
    staged: &mut Staged,
    prefix: &[u8],
    half: EdgeHalf,
    e: &Edge,
    (mode, expected_version): (i32, Option<u64>),
    seq: u64,
    now: u64,
) -> Result<Edge> {
    let (owner, other) = ends(half, &e.from, &e.to);
    // The half lives with `owner`, which must exist here: no dangling edges.
    if staged.get(&keys::vertex(prefix, owner))?.is_none() {
        return Err(Error::NotFound { what: format!("vertex {owner:?} (edge {} -[{}]-> {})", e.from, e.label, e.to) });
    }
    parse_object(&e.properties_json)?;
    if !e.weight.is_finite() {
        return Err(Error::InvalidArgument(omnishard_common::Error::invalid("weight", "must be a finite number")));
    }
    let key = keys::half(prefix, half_tag(half), owner, &e.label, other);
    let current = staged.get(&key)?.map(|raw| decode_edge(&raw)).transpose()?;
    let mut edge = Edge { version: seq, updated_ms: now, ..e.clone() };
    if half == EdgeHalf::Out {
        // The out-half decides; the gateway copies its result into the in-half.
        let what = || format!("edge {} -[{}]-> {}", e.from, e.label, e.to);
        let current_version = current.as_ref().map(|c| c.version).unwrap_or(0);
        if let Some(expected) = expected_version {
            if expected != current_version {
                return Err(Error::VersionConflict { key: what(), expected, actual: current_version });
            }
        }
        match (WriteMode::try_from(mode).unwrap_or(WriteMode::Upsert), &current) {
            (WriteMode::Create, Some(_)) => return Err(Error::AlreadyExists { what: what() }),
            (WriteMode::Merge | WriteMode::Replace, None) => return Err(Error::NotFound { what: what() }),
            (WriteMode::Merge, Some(old)) => {
                let mut merged = parse_object(&old.properties_json)?;
                merged.extend(parse_object(&e.properties_json)?);
                edge.properties_json = serde_json::Value::Object(merged).to_string();
                if e.weight == 0.0 {
                    edge.weight = old.weight;
                }
            }
            _ => {}
        }
    }
    // Keep the first creation time; the in-half copies the out-half's.
    edge.created_ms = match &current {
        Some(old) => old.created_ms,
        None if e.created_ms != 0 => e.created_ms,
        None => now,
    };
    staged.put(key, edge.encode_to_vec());
    Ok(edge)
}

/// `(owner, other)` of an edge for the given half.
pub fn ends<'a>(half: EdgeHalf, from: &'a str, to: &'a str) -> (&'a str, &'a str) {
    match half {
        EdgeHalf::Out => (from, to),
        EdgeHalf::In => (to, from),
    }
}

/// The key tag of a half.
pub fn half_tag(half: EdgeHalf) -> u8 {
    match half {
        EdgeHalf::Out => keys::OUT,
        EdgeHalf::In => keys::IN,
    }
}

fn half_of(raw: i32) -> Result<EdgeHalf> {
    EdgeHalf::try_from(raw).map_err(|_| {
        Error::InvalidArgument(omnishard_common::Error::invalid("half", format!("{raw} is not OUT or IN")))
    })
}

/// Parses a JSON object; empty text is an empty object.
pub fn parse_object(text: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
    if text.trim().is_empty() {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => {
            Err(Error::InvalidArgument(omnishard_common::Error::invalid("properties_json", "must be a JSON object")))
        }
        Err(e) => Err(Error::InvalidArgument(omnishard_common::Error::invalid(
            "properties_json",
            format!("is not valid JSON: {e}"),
        ))),
    }
}

/// Decodes a stored vertex.
pub fn decode_vertex(id: &str, raw: &[u8]) -> Result<Vertex> {
    Vertex::decode(raw).map_err(|e| Error::Corrupt { key: format!("vertex {id}"), reason: e.to_string() })
}

/// Decodes a stored edge half.
pub fn decode_edge(raw: &[u8]) -> Result<Edge> {
    Edge::decode(raw).map_err(|e| Error::Corrupt { key: "edge".into(), reason: e.to_string() })
}

fn missing(field: &'static str) -> Error {
    Error::InvalidArgument(omnishard_common::Error::invalid(field, "is missing"))
}
