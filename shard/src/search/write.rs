//! Search writes as the apply thread stages them: each document write puts
//! the document and an outbox entry in the same batch, so the Tantivy index
//! (derived from the outbox) can always catch up with RocksDB.

use std::collections::HashMap;

use rocksdb::WriteBatch;
use serde_json::{Map, Value};

use super::keys::{self, IndexMeta};
use crate::codec::prefix_end;
use crate::error::{Error, Result};
use crate::store::{Store, CF_SEARCH};

/// One document operation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum DocOp {
    /// The whole document, already checked against the schema.
    Upsert {
        id: String,
        json: String,
    },
    /// Fields to set (null removes one); the document must exist.
    Merge {
        id: String,
        #[serde(with = "crate::raft::wire::json")]
        fields: Map<String, Value>,
    },
    Delete {
        id: String,
    },
}

impl DocOp {
    /// The document id the op touches.
    pub fn id(&self) -> &str {
        match self {
            DocOp::Upsert { id, .. } | DocOp::Merge { id, .. } | DocOp::Delete { id } => id,
        }
    }
}

/// Document operations on one index that commit together or not at all.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SearchTxn {
    pub namespace: String,
    pub index: String,
    /// The index the ops were checked against; a re-created index refuses them.
    pub uid: u64,
    pub ops: Vec<DocOp>,
}

/// Index definition changes; each commits alone.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum AdminOp {
    /// Stores a new index; fails when the name is taken.
    Create {
        namespace: String,
        index: String,
        #[serde(with = "crate::raft::wire::json")]
        meta: IndexMeta,
    },
    /// Replaces the schema of index `meta.uid`.
    Update {
        namespace: String,
        index: String,
        #[serde(with = "crate::raft::wire::json")]
        meta: IndexMeta,
    },
    /// Removes the index and everything stored for it.
    Drop { namespace: String, index: String, uid: u64 },
}

/// Documents staged but not yet written, by key (None = deleted).
pub type Overlay = HashMap<Vec<u8>, Option<Vec<u8>>>;

/// Reads the metadata of an index.
pub fn read_meta(store: &Store, ns: &str, index: &str) -> Result<Option<IndexMeta>> {
    let Some(bytes) = store.get_cf(CF_SEARCH, &keys::meta(ns, index))? else { return Ok(None) };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Corrupt { key: format!("search index {ns}/{index}"), reason: e.to_string() })
}

fn not_found(ns: &str, index: &str) -> Error {
    Error::NotFound { what: format!("search index {index:?} in namespace {ns:?}") }
}

/// Checks `txn` against the stored state and `overlay`, then adds its
/// documents and outbox entries to `batch` under sequence `seq`.
pub fn stage(store: &Store, txn: &SearchTxn, seq: u64, overlay: &mut Overlay, batch: &mut WriteBatch) -> Result<u64> {
    let meta = read_meta(store, &txn.namespace, &txn.index)?.ok_or_else(|| not_found(&txn.namespace, &txn.index))?;
    if meta.uid != txn.uid {
        return Err(Error::FailedPrecondition(format!(
            "search index {:?} was dropped and re-created while the write was in flight; retry it",
            txn.index
        )));
    }
    // Compute every new value first, so a failing op leaves no trace.
    let mut staged: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(txn.ops.len());
    let mut created: Vec<bool> = Vec::with_capacity(txn.ops.len());
    for op in &txn.ops {
        let key = keys::doc(meta.uid, op.id());
        let is_upsert = matches!(op, DocOp::Upsert { .. });
        created.push(is_upsert && !may_exist(store, &key, &staged, overlay)?);
        let value = match op {
            DocOp::Upsert { json, .. } => Some(keys::encode_doc(seq, json.as_bytes())),
            DocOp::Delete { .. } => None,
            DocOp::Merge { id, fields } => {
                let current = match staged.iter().rev().find(|(k, _)| *k == key) {
                    Some((_, v)) => v.clone(),
                    None => match overlay.get(&key) {
                        Some(v) => v.clone(),
                        None => store.get_cf(CF_SEARCH, &key)?,
                    },
                };
                let current = current.ok_or_else(|| Error::NotFound { what: format!("document {id:?}") })?;
                let merged = merge(&meta, id, &current, fields)?;
                Some(keys::encode_doc(seq, merged.as_bytes()))
            }
        };
        staged.push((key, value));
    }
    let cf = store.cf(CF_SEARCH)?;
    for (n, ((op, (key, value)), new)) in txn.ops.iter().zip(staged).zip(created).enumerate() {
        match &value {
            Some(bytes) => batch.put_cf(cf, &key, bytes),
            None => batch.delete_cf(cf, &key),
        }
        batch.put_cf(cf, keys::outbox(meta.uid, seq, n as u32), keys::encode_outbox(new, op.id()));
        overlay.insert(key, value);
    }
    Ok(txn.ops.len() as u64)
}

/// Whether a document may exist before this write: staged in this
/// transaction or group, or possibly in RocksDB (bloom filters and
/// memtables; a false "maybe" only costs the indexer a needless delete).
fn may_exist(store: &Store, key: &[u8], staged: &[(Vec<u8>, Option<Vec<u8>>)], overlay: &Overlay) -> Result<bool> {
    if let Some((_, value)) = staged.iter().rev().find(|(k, _)| k == key) {
        return Ok(value.is_some());
    }
    if let Some(value) = overlay.get(key) {
        return Ok(value.is_some());
    }
    Ok(store.db().key_may_exist_cf(store.cf(CF_SEARCH)?, key))
}

/// Applies `fields` to a stored document and checks the result.
fn merge(meta: &IndexMeta, id: &str, current: &[u8], fields: &Map<String, Value>) -> Result<String> {
    let corrupt = |reason: String| Error::Corrupt { key: format!("document {id:?}"), reason };
    let (_, json) = keys::decode_doc(current).ok_or_else(|| corrupt("shorter than its header".into()))?;
    let mut object: Map<String, Value> = serde_json::from_slice(json).map_err(|e| corrupt(e.to_string()))?;
    for (name, value) in fields {
        if value.is_null() {
            object.remove(name);
        } else {
            object.insert(name.clone(), value.clone());
        }
    }
    let merged = Value::Object(object).to_string();
    meta.schema.check_document(id, &merged)?;
    Ok(merged)
}

/// Checks an index definition change against the stored state and stages it.
pub fn stage_admin(store: &Store, op: &AdminOp, batch: &mut WriteBatch) -> Result<()> {
    let cf = store.cf(CF_SEARCH)?;
    match op {
        AdminOp::Create { namespace, index, meta } => {
            if read_meta(store, namespace, index)?.is_some() {
                return Err(Error::AlreadyExists {
                    what: format!("search index {index:?} in namespace {namespace:?}"),
                });
            }
            batch.put_cf(cf, keys::meta(namespace, index), encode_meta(meta));
        }
        AdminOp::Update { namespace, index, meta } => {
            let current = read_meta(store, namespace, index)?.ok_or_else(|| not_found(namespace, index))?;
            if current.uid != meta.uid {
                return Err(Error::FailedPrecondition(format!("search index {index:?} was re-created; retry")));
            }
            current.schema.check_growth(&meta.schema)?;
            batch.put_cf(cf, keys::meta(namespace, index), encode_meta(meta));
        }
        AdminOp::Drop { namespace, index, uid } => {
            batch.delete_cf(cf, keys::meta(namespace, index));
            for prefix in [keys::doc_prefix(*uid), keys::outbox_prefix(*uid), keys::generation(*uid)] {
                // These prefixes start with a letter tag, so they always have an end.
                if let Some(end) = prefix_end(&prefix) {
                    batch.delete_range_cf(cf, &prefix, &end);
                }
            }
        }
    }
    Ok(())
}

fn encode_meta(meta: &IndexMeta) -> Vec<u8> {
    serde_json::to_vec(meta).unwrap_or_default()
}
