//! File mutations as the apply path stages them: claims, lease changes,
//! releases, manifest commits, and chunk bytes. Chunks are content-addressed
//! and immutable; they are written in a proposal of their own, always
//! *after* their claim committed.
//!
//! Why that order makes collection safe against concurrent uploads: a chunk
//! is deleted only here, by a release that finds no other claim on it; an
//! upload that claims the chunk afterwards then sees it missing and writes it
//! again, and one that claimed it before keeps it alive.

use prost::Message;
use rocksdb::WriteBatch;

use omnishard_proto::v1::{ChunkData, FileManifest, GarbageManifest};

use super::chunk;
use super::keys::{self, UploadRecord};
use super::ops::Stored;
use crate::error::{Error, Result};
use crate::store::{Store, CF_CHUNKS, CF_FILES};

/// One file mutation; each commits alone under the next sequence.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum FilesTxn {
    /// Records the upload (or moves its deadline later) and claims `hashes` for it.
    Claim { upload_id: Vec<u8>, record: UploadRecord, hashes: Vec<Vec<u8>> },
    /// Moves the upload's lease deadline.
    Renew { upload_id: Vec<u8>, deadline_ms: u64 },
    /// The upload's manifest committed: its claims stay, its record goes.
    Seal { upload_id: Vec<u8> },
    /// Drops every claim of the upload and every chunk left unclaimed.
    Release { upload_id: Vec<u8> },
    /// Makes `manifest` the file's current version, refused after `deadline_ms`.
    Commit {
        ns: String,
        key: Vec<u8>,
        #[serde(with = "crate::raft::wire::proto")]
        manifest: FileManifest,
        deadline_ms: u64,
    },
    /// Removes the file's current version.
    Delete { ns: String, key: Vec<u8> },
    /// Drops a garbage record whose claims were released everywhere.
    Forget { upload_id: Vec<u8> },
}

/// What a committed file mutation reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilesCommitted {
    pub seq: u64,
    /// Commit: the replaced version's upload id. Delete: the deleted one's.
    pub previous: Option<Vec<u8>>,
    /// Release: chunks deleted because nothing claimed them any more.
    pub chunks_deleted: u64,
}

/// Adds the chunks not stored yet to `batch`, reporting how many were new.
pub fn stage_chunks(
    store: &Store,
    ns: &str,
    compress: bool,
    chunks: &[ChunkData],
    batch: &mut WriteBatch,
) -> Result<Stored> {
    let info_keys: Vec<Vec<u8>> = chunks.iter().map(|c| keys::info(ns, &c.sha256)).collect();
    let present = store.multi_get_cf(CF_CHUNKS, &info_keys)?;
    let cf = store.cf(CF_CHUNKS)?;
    let mut done = Stored::default();
    let mut staged = std::collections::HashSet::new();
    for (c, present) in chunks.iter().zip(present) {
        if present.is_some() || !staged.insert(c.sha256.as_slice()) {
            done.deduplicated += 1;
            continue;
        }
        let (stored, info) = chunk::encode(&c.data, compress);
        batch.put_cf(cf, keys::data(ns, &c.sha256), stored);
        batch.put_cf(cf, keys::info(ns, &c.sha256), info.encode());
        done.stored += 1;
    }
    Ok(done)
}

/// Checks `txn` against the store and adds its writes to `batch` under `seq`.
pub fn stage(store: &Store, txn: &FilesTxn, seq: u64, now_ms: u64, batch: &mut WriteBatch) -> Result<FilesCommitted> {
    let files = store.cf(CF_FILES)?;
    let mut done = FilesCommitted { seq, ..Default::default() };
    match txn {
        FilesTxn::Claim { upload_id, record, hashes } => {
            let key = keys::upload(upload_id);
            let mut record = record.clone();
            if let Some(old) = store.get_cf(CF_FILES, &key)?.as_deref().and_then(UploadRecord::decode) {
                record.deadline_ms = record.deadline_ms.max(old.deadline_ms);
            }
            batch.put_cf(files, key, record.encode());
            for hash in hashes {
                batch.put_cf(files, keys::claim(&record.namespace, hash, upload_id), []);
                batch.put_cf(files, keys::claim_by_upload(upload_id, &record.namespace, hash), []);
            }
        }
        FilesTxn::Renew { upload_id, deadline_ms } => {
            let key = keys::upload(upload_id);
            if let Some(mut record) = store.get_cf(CF_FILES, &key)?.as_deref().and_then(UploadRecord::decode) {
                record.deadline_ms = *deadline_ms;
                batch.put_cf(files, key, record.encode());
            }
        }
        FilesTxn::Seal { upload_id } => batch.delete_cf(files, keys::upload(upload_id)),
        FilesTxn::Release { upload_id } => done.chunks_deleted = stage_release(store, upload_id, batch)?,
        FilesTxn::Commit { ns, key, manifest, deadline_ms } => {
            if now_ms > *deadline_ms {
                return Err(Error::FailedPrecondition(format!(
                    "upload lease expired {} ms ago; its chunks may already be collected (raise files.upload_lease)",
                    now_ms - deadline_ms
                )));
            }
            let stored_key = keys::manifest(ns, key);
            let previous = read_manifest(store, &stored_key)?;
            let mut manifest = manifest.clone();
            manifest.version = seq;
            batch.put_cf(files, &stored_key, manifest.encode_to_vec());
            if let Some(previous) = previous.filter(|p| p.upload_id != manifest.upload_id) {
                done.previous = Some(previous.upload_id.clone());
                put_garbage(batch, files, ns, previous);
            }
        }
        FilesTxn::Delete { ns, key } => {
            let stored_key = keys::manifest(ns, key);
            if let Some(previous) = read_manifest(store, &stored_key)? {
                batch.delete_cf(files, &stored_key);
                done.previous = Some(previous.upload_id.clone());
                put_garbage(batch, files, ns, previous);
            }
        }
        FilesTxn::Forget { upload_id } => batch.delete_cf(files, keys::garbage(upload_id)),
    }
    Ok(done)
}

/// Deletes the upload's claims, and the bytes of each chunk no other upload claims.
fn stage_release(store: &Store, upload_id: &[u8], batch: &mut WriteBatch) -> Result<u64> {
    let files = store.cf(CF_FILES)?;
    let chunks = store.cf(CF_CHUNKS)?;
    let mut claimed = Vec::new();
    store.scan_prefix(CF_FILES, &keys::upload_claims(upload_id), &[], None, |key, _| {
        claimed.push(key.to_vec());
        Ok(true)
    })?;
    let mut deleted = 0;
    for by_upload in claimed {
        let Some((ns, hash)) = keys::parse_claim_by_upload(&by_upload) else { continue };
        let own = keys::claim(ns, hash, upload_id);
        let mut others = false;
        store.scan_prefix(CF_FILES, &keys::claims_of(ns, hash), &[], None, |key, _| {
            others = key != own.as_slice();
            Ok(!others)
        })?;
        if !others {
            batch.delete_cf(chunks, keys::data(ns, hash));
            batch.delete_cf(chunks, keys::info(ns, hash));
            deleted += 1;
        }
        batch.delete_cf(files, own);
        batch.delete_cf(files, &by_upload);
    }
    batch.delete_cf(files, keys::upload(upload_id));
    Ok(deleted)
}

fn put_garbage(batch: &mut WriteBatch, files: &rocksdb::ColumnFamily, ns: &str, manifest: FileManifest) {
    let key = keys::garbage(&manifest.upload_id);
    let record = GarbageManifest { namespace: ns.to_string(), manifest: Some(manifest) };
    batch.put_cf(files, key, record.encode_to_vec());
}

/// The manifest stored under `stored_key`, if any.
pub fn read_manifest(store: &Store, stored_key: &[u8]) -> Result<Option<FileManifest>> {
    let Some(raw) = store.get_cf(CF_FILES, stored_key)? else { return Ok(None) };
    FileManifest::decode(raw.as_slice())
        .map(Some)
        .map_err(|e| Error::Corrupt { key: crate::error::show_key(stored_key), reason: e.to_string() })
}
