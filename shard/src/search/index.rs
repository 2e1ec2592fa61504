//! One search index on one shard: its definition, its active Tantivy
//! generation, the recent searchable views and the sequence number up to
//! which writes are searchable. The registry maps names to indexes.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tantivy::{Index, IndexReader, ReloadPolicy, Searcher};
use tokio::sync::watch;

use super::keys::{self, IndexMeta};
use super::schema::IndexSchema;
use crate::error::{Error, Result};
use crate::store::{Store, CF_SEARCH};

/// How many recent views a shard keeps, so phase 2 of a search reads the
/// same snapshot phase 1 described even if a refresh happened in between.
const KEPT_VIEWS: usize = 8;

/// A searchable snapshot of an index.
#[derive(Clone)]
pub struct View {
    pub id: u64,
    pub searcher: Searcher,
    /// The Tantivy index (tokenizers, query parser) the searcher belongs to.
    pub index: Index,
    /// The definition the generation was built with.
    pub schema: Arc<IndexSchema>,
}

/// The Tantivy directory currently answering searches.
pub(crate) struct Generation {
    pub number: u32,
    pub index: Index,
    pub reader: IndexReader,
    pub schema: Arc<IndexSchema>,
}

/// One index of one shard.
pub struct SearchIndex {
    pub namespace: String,
    pub name: String,
    pub uid: u64,
    meta: RwLock<IndexMeta>,
    pub(crate) generation: RwLock<Generation>,
    views: Mutex<VecDeque<View>>,
    next_view: AtomicU64,
    /// Highest outbox sequence number applied to the active generation.
    pub(crate) applied: AtomicU64,
    /// Every write up to this shard sequence number is searchable.
    searchable: watch::Sender<u64>,
}

impl SearchIndex {
    /// Opens generation `number` of the index under `root`, creating it when
    /// missing; its commit payload says which outbox sequence it reached.
    pub(crate) fn open(root: &Path, namespace: &str, name: &str, meta: IndexMeta, number: u32) -> Result<SearchIndex> {
        let generation = open_generation(root, &meta, number)?;
        let applied = committed_seq(&generation.index)?;
        let index = SearchIndex {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: meta.uid,
            meta: RwLock::new(meta),
            generation: RwLock::new(generation),
            views: Mutex::new(VecDeque::new()),
            next_view: AtomicU64::new(1),
            applied: AtomicU64::new(applied),
            searchable: watch::channel(applied).0,
        };
        index.publish_view();
        Ok(index)
    }

    /// The current definition.
    pub fn meta(&self) -> IndexMeta {
        self.meta.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set_meta(&self, meta: IndexMeta) {
        *self.meta.write().unwrap_or_else(|e| e.into_inner()) = meta;
    }

    /// Whether the active generation was built from the current definition.
    pub(crate) fn generation_is_current(&self) -> bool {
        let generation = self.generation.read().unwrap_or_else(|e| e.into_inner());
        *generation.schema == self.meta().schema
    }

    /// The newest view.
    pub fn current_view(&self) -> Result<View> {
        let views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        views.back().cloned().ok_or_else(|| Error::Internal(format!("index {} has no view", self.name)))
    }

    /// A recent view by id, if still kept.
    pub fn view(&self, id: u64) -> Option<View> {
        let views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        views.iter().find(|v| v.id == id).cloned()
    }

    /// Makes the active generation's latest commit the current view.
    pub(crate) fn publish_view(&self) {
        let generation = self.generation.read().unwrap_or_else(|e| e.into_inner());
        let view = View {
            id: self.next_view.fetch_add(1, Ordering::Relaxed),
            searcher: generation.reader.searcher(),
            index: generation.index.clone(),
            schema: generation.schema.clone(),
        };
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        views.push_back(view);
        while views.len() > KEPT_VIEWS {
            views.pop_front();
        }
    }

    /// Every write up to this sequence number is searchable.
    pub fn searchable_seq(&self) -> u64 {
        *self.searchable.borrow()
    }

    pub(crate) fn set_searchable(&self, seq: u64) {
        self.searchable.send_if_modified(|current| {
            let newer = seq > *current;
            if newer {
                *current = seq;
            }
            newer
        });
    }

    /// Waits until writes up to `seq` are searchable.
    pub async fn wait_searchable(&self, seq: u64) -> Result<()> {
        let mut changes = self.searchable.subscribe();
        changes.wait_for(|s| *s >= seq).await.map(|_| ()).map_err(|_| Error::ShuttingDown)
    }
}

/// The directory of one generation of an index.
pub(crate) fn generation_dir(root: &Path, uid: u64, number: u32) -> PathBuf {
    root.join(format!("{uid:016x}.{number}"))
}

/// Opens (or creates) a generation directory with the schema of `meta`.
pub(crate) fn open_generation(root: &Path, meta: &IndexMeta, number: u32) -> Result<Generation> {
    let dir = generation_dir(root, meta.uid, number);
    std::fs::create_dir_all(&dir).map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
    let wanted = meta.schema.tantivy();
    let index = if Index::exists(&tantivy::directory::MmapDirectory::open(&dir).map_err(tantivy_error)?)
        .map_err(tantivy_error)?
    {
        Index::open_in_dir(&dir).map_err(tantivy_error)?
    } else {
        Index::create_in_dir(&dir, wanted.clone()).map_err(tantivy_error)?
    };
    // A generation built before the schema grew keeps its old schema until rebuilt.
    let schema = if index.schema() == wanted {
        Arc::new(meta.schema.clone())
    } else {
        let fields = meta.schema.fields.iter().filter(|f| index.schema().get_field(&f.name).is_ok()).cloned();
        Arc::new(IndexSchema { fields: fields.collect() })
    };
    let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(tantivy_error)?;
    Ok(Generation { number, index, reader, schema })
}

/// The outbox sequence number recorded by the index's last commit.
fn committed_seq(index: &Index) -> Result<u64> {
    let metas = index.load_metas().map_err(tantivy_error)?;
    Ok(metas.payload.and_then(|p| p.parse().ok()).unwrap_or(0))
}

/// Maps a Tantivy failure to an internal error.
pub(crate) fn tantivy_error(err: impl std::fmt::Display) -> Error {
    Error::Internal(format!("search index: {err}"))
}

/// Every index of a shard, by namespace and name.
pub struct Registry {
    root: PathBuf,
    indexes: RwLock<HashMap<(String, String), Arc<SearchIndex>>>,
}

impl Registry {
    /// Opens every index defined in `store`, and deletes directories of
    /// indexes that no longer exist or of rebuilds that never finished.
    pub fn open(store: &Store, root: PathBuf) -> Result<Registry> {
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::Internal(format!("cannot create {}: {e}", root.display())))?;
        let mut indexes = HashMap::new();
        let mut keep = Vec::new();
        let mut defined = Vec::new();
        store.scan_prefix(CF_SEARCH, b"m", b"m", None, |key, value| {
            defined.push((key.to_vec(), value.to_vec()));
            Ok(true)
        })?;
        for (key, value) in defined {
            let meta: IndexMeta = serde_json::from_slice(&value)
                .map_err(|e| Error::Corrupt { key: "search index meta".into(), reason: e.to_string() })?;
            let (ns, name) = split_meta_key(&key)?;
            let number = active_generation(store, meta.uid)?;
            keep.push(generation_dir(&root, meta.uid, number));
            let index = SearchIndex::open(&root, &ns, &name, meta, number)?;
            indexes.insert((ns, name), Arc::new(index));
        }
        remove_other_dirs(&root, &keep);
        Ok(Registry { root, indexes: RwLock::new(indexes) })
    }

    /// Where generation directories live.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The index `name` of `ns`.
    pub fn get(&self, ns: &str, name: &str) -> Result<Arc<SearchIndex>> {
        let indexes = self.indexes.read().unwrap_or_else(|e| e.into_inner());
        indexes
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| Error::NotFound { what: format!("search index {name:?} in namespace {ns:?}") })
    }

    /// Every index, or those of one namespace.
    pub fn list(&self, ns: Option<&str>) -> Vec<Arc<SearchIndex>> {
        let indexes = self.indexes.read().unwrap_or_else(|e| e.into_inner());
        let mut found: Vec<_> = indexes.values().filter(|i| ns.is_none_or(|ns| i.namespace == ns)).cloned().collect();
        found.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        found
    }

    /// Every index definition in `store` as `(namespace, name, meta)`.
    pub fn defined(store: &Store) -> Result<Vec<(String, String, IndexMeta)>> {
        let mut defined = Vec::new();
        store.scan_prefix(CF_SEARCH, b"m", b"m", None, |key, value| {
            defined.push((key.to_vec(), value.to_vec()));
            Ok(true)
        })?;
        defined
            .into_iter()
            .map(|(key, value)| {
                let meta: IndexMeta = serde_json::from_slice(&value)
                    .map_err(|e| Error::Corrupt { key: "search index meta".into(), reason: e.to_string() })?;
                let (ns, name) = split_meta_key(&key)?;
                Ok((ns, name, meta))
            })
            .collect()
    }

    pub(crate) fn insert(&self, index: Arc<SearchIndex>) {
        let mut indexes = self.indexes.write().unwrap_or_else(|e| e.into_inner());
        indexes.insert((index.namespace.clone(), index.name.clone()), index);
    }

    pub(crate) fn remove(&self, ns: &str, name: &str) -> Option<Arc<SearchIndex>> {
        let mut indexes = self.indexes.write().unwrap_or_else(|e| e.into_inner());
        indexes.remove(&(ns.to_string(), name.to_string()))
    }
}

fn split_meta_key(key: &[u8]) -> Result<(String, String)> {
    let corrupt = || Error::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason: "bad index key".into() };
    let name = keys::name_of_meta(key).ok_or_else(corrupt)?;
    let ns = std::str::from_utf8(&key[1..key.len() - name.len() - 1]).map_err(|_| corrupt())?;
    Ok((ns.to_string(), name.to_string()))
}

/// The generation number recorded for an index (0 before any rebuild).
pub(crate) fn active_generation(store: &Store, uid: u64) -> Result<u32> {
    Ok(store
        .get_cf(CF_SEARCH, &keys::generation(uid))?
        .and_then(|v| v.as_slice().try_into().ok().map(u32::from_be_bytes))
        .unwrap_or(0))
}

fn remove_other_dirs(root: &Path, keep: &[PathBuf]) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if !keep.contains(&path) {
            tracing::info!(dir = %path.display(), "removing search directory of a dropped index or unfinished rebuild");
            if let Err(e) = std::fs::remove_dir_all(&path) {
                tracing::warn!(dir = %path.display(), error = %e, "cannot remove search directory");
            }
        }
    }
}
