//! The shard's file operations: validation, ownership checks, then the
//! apply path (claims, manifests) or the file budget (chunk bytes).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use omnishard_common::namespace;
use omnishard_common::placement::chunk_key;
use omnishard_proto::v1::{ChunkData, CorruptChunk, ExpiredUpload, FileManifest, GarbageManifest, UploadTicket};
use prost::Message;

use super::chunk::{self, Info, MAX_CHUNK_BYTES};
use super::keys::{self, UploadRecord, HASH_LEN, UPLOAD_ID_LEN};
use super::write::{read_manifest, FilesCommitted, FilesTxn};
use crate::codec;
use crate::error::{Error, Result};
use crate::execute::ChunkWrite;
use crate::node::Shard;
use crate::store::{CF_CHUNKS, CF_FILES};

/// What storing a batch of chunks did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    pub stored: u64,
    pub deduplicated: u64,
}

/// One page of chunk verification.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verified {
    pub chunks: u64,
    pub bytes: u64,
    pub corrupt: Vec<CorruptChunk>,
    pub unreferenced: u64,
    pub next: Vec<u8>,
}

/// What the sweeper should look at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pending {
    pub expired: Vec<ExpiredUpload>,
    pub garbage: Vec<GarbageManifest>,
}

/// Upload-control actions (see `UploadAction` in shard_files.proto).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadAction {
    Renew(u64),
    Durable,
    Seal,
    Release,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument(omnishard_common::Error::invalid(field, reason))
}

fn check_hash(field: &'static str, hash: &[u8]) -> Result<()> {
    if hash.len() != HASH_LEN {
        return Err(invalid(field, format!("is {} bytes; a SHA-256 is {HASH_LEN}", hash.len())));
    }
    Ok(())
}

fn check_upload_id(id: &[u8]) -> Result<()> {
    if id.len() != UPLOAD_ID_LEN {
        return Err(invalid("upload_id", format!("is {} bytes; upload ids are {UPLOAD_ID_LEN}", id.len())));
    }
    Ok(())
}

impl Shard {
    /// Checks that every chunk of `hashes` in `ns` is this shard's under `epoch`.
    fn check_chunk_owner<'a>(&self, epoch: u64, ns: &str, hashes: impl Iterator<Item = &'a [u8]>) -> Result<()> {
        let installed = self.ownership.ring_for(epoch)?;
        let placement: Vec<Vec<u8>> = hashes.map(chunk_key).collect();
        self.ownership.check_keys(&installed, ns, placement.iter().map(Vec::as_slice))
    }

    /// Checks that the file `key` of `ns` is this shard's under `epoch`.
    fn check_file_owner(&self, epoch: u64, ns: &str, key: &[u8]) -> Result<()> {
        self.config.limits.check_key(key)?;
        let installed = self.ownership.ring_for(epoch)?;
        self.ownership.check_keys(&installed, ns, [key])
    }

    /// Verifies and stores `chunks`, claiming each for the upload in `ticket`.
    /// Stored chunks are durable on every replica when this returns.
    pub async fn chunk_put(
        self: &Arc<Self>,
        epoch: u64,
        ns: &str,
        ticket: UploadTicket,
        compress: bool,
        chunks: Vec<ChunkData>,
    ) -> Result<Stored> {
        let ns = namespace::resolve(ns)?.to_string();
        check_upload_id(&ticket.id)?;
        self.config.limits.check_key(&ticket.key)?;
        self.config.limits.check_batch("chunks", chunks.len())?;
        for c in &chunks {
            check_hash("chunks.sha256", &c.sha256)?;
            if c.data.len() > MAX_CHUNK_BYTES {
                return Err(invalid(
                    "chunks.data",
                    format!("is {} bytes; the limit is {MAX_CHUNK_BYTES}", c.data.len()),
                ));
            }
        }
        self.check_chunk_owner(epoch, &ns, chunks.iter().map(|c| c.sha256.as_slice()))?;
        // Damaged bytes are refused before anything is claimed. A CRC, not the
        // SHA-256: hashing is most of an upload's CPU time, the gateway has
        // just computed the address, and every read re-checks it (a chunk
        // stored under a wrong address is DATA_LOSS, never served).
        // Hardware CRC runs at several GB/s, so this stays on the reactor.
        for c in &chunks {
            if crc32fast::hash(&c.data) != c.crc32 {
                return Err(invalid(
                    "chunks.crc32",
                    format!("does not match the data of chunk {}: damaged in transit", hex::encode(&c.sha256)),
                ));
            }
        }
        let record = UploadRecord { deadline_ms: ticket.deadline_ms, namespace: ns.clone(), key: ticket.key };
        let hashes = chunks.iter().map(|c| c.sha256.clone()).collect();
        self.applier.apply_files(FilesTxn::Claim { upload_id: ticket.id, record, hashes }).await?;
        // Claimed first, then written: see `files::write` for why. A file
        // permit bounds the chunk batches in flight (and so the memory).
        let _permit = self.file_permits.acquire().await.map_err(|_| Error::ShuttingDown)?;
        self.applier.apply_chunks(ChunkWrite { namespace: ns, compress, chunks }).await
    }

    /// Claims chunks that are already stored (a server-side copy).
    /// `NOT_FOUND` names the first chunk that is not.
    pub async fn chunk_claim(
        self: &Arc<Self>,
        epoch: u64,
        ns: &str,
        ticket: UploadTicket,
        hashes: Vec<Vec<u8>>,
    ) -> Result<()> {
        let ns = namespace::resolve(ns)?.to_string();
        check_upload_id(&ticket.id)?;
        self.config.limits.check_key(&ticket.key)?;
        self.config.limits.check_batch("hashes", hashes.len())?;
        for hash in &hashes {
            check_hash("hashes", hash)?;
        }
        self.check_chunk_owner(epoch, &ns, hashes.iter().map(Vec::as_slice))?;
        let record = UploadRecord { deadline_ms: ticket.deadline_ms, namespace: ns.clone(), key: ticket.key };
        self.applier.apply_files(FilesTxn::Claim { upload_id: ticket.id, record, hashes: hashes.clone() }).await?;
        let lookup_ns = ns.clone();
        let missing = self.blocking_light(move |shard| shard.missing_chunks(&lookup_ns, &hashes)).await?;
        match missing.first() {
            None => Ok(()),
            Some(hash) => Err(Error::NotFound { what: chunk::name(&ns, hash) }),
        }
    }

    /// The raw bytes of one chunk, verified against its hash.
    pub async fn chunk_get(self: &Arc<Self>, epoch: u64, ns: &str, hash: Vec<u8>) -> Result<Bytes> {
        let ns = namespace::resolve(ns)?.to_string();
        check_hash("sha256", &hash)?;
        self.check_chunk_owner(epoch, &ns, std::iter::once(hash.as_slice()))?;
        self.blocking_files(move |shard| shard.read_chunk(&ns, &hash)).await
    }

    fn read_chunk(&self, ns: &str, hash: &[u8]) -> Result<Bytes> {
        let stored = match self.store.get_cf(CF_CHUNKS, &keys::data(ns, hash)) {
            Ok(Some(stored)) => stored,
            Ok(None) => return Err(Error::NotFound { what: chunk::name(ns, hash) }),
            // RocksDB checks its own block and blob checksums on the way.
            Err(Error::Storage(e)) if e.kind() == rocksdb::ErrorKind::Corruption => {
                return Err(Error::Corrupt { key: chunk::name(ns, hash), reason: e.to_string() })
            }
            Err(e) => return Err(e),
        };
        chunk::decode(ns, hash, stored)
    }

    /// Renews, makes durable, seals or releases an upload on this shard.
    pub async fn upload_control(self: &Arc<Self>, upload_id: Vec<u8>, action: UploadAction) -> Result<FilesCommitted> {
        check_upload_id(&upload_id)?;
        let txn = match action {
            // Acknowledged chunk writes are already durable (in the Raft log of
            // a majority); this moves the leader's chunk memtable into blob
            // files, so a finished upload stops holding memory and WAL.
            UploadAction::Durable => {
                self.blocking_files(|shard| {
                    let cf = shard.store.cf(CF_CHUNKS)?;
                    Ok(shard.store.db().flush_cf(cf)?)
                })
                .await?;
                return Ok(FilesCommitted::default());
            }
            UploadAction::Renew(deadline_ms) => FilesTxn::Renew { upload_id, deadline_ms },
            UploadAction::Seal => FilesTxn::Seal { upload_id },
            UploadAction::Release => FilesTxn::Release { upload_id },
        };
        self.applier.apply_files(txn).await
    }

    /// Makes `manifest` the current version of `key`; refused after `deadline_ms`.
    pub async fn manifest_commit(
        self: &Arc<Self>,
        epoch: u64,
        ns: &str,
        key: Vec<u8>,
        manifest: FileManifest,
        deadline_ms: u64,
    ) -> Result<FilesCommitted> {
        let ns = namespace::resolve(ns)?.to_string();
        self.check_file_owner(epoch, &ns, &key)?;
        check_upload_id(&manifest.upload_id)?;
        check_hash("manifest.sha256", &manifest.sha256)?;
        for c in &manifest.chunks {
            check_hash("manifest.chunks.sha256", &c.sha256)?;
        }
        self.applier.apply_files(FilesTxn::Commit { ns, key, manifest, deadline_ms }).await
    }

    /// The current manifest of `key`; with `lease` > 0, a read lease on it too.
    pub async fn manifest_get(
        self: &Arc<Self>,
        epoch: u64,
        ns: &str,
        key: Vec<u8>,
        lease: Duration,
    ) -> Result<Option<(FileManifest, u64)>> {
        let ns = namespace::resolve(ns)?.to_string();
        self.check_file_owner(epoch, &ns, &key)?;
        let manifest =
            self.blocking_light(move |shard| read_manifest(&shard.store, &keys::manifest(&ns, &key))).await?;
        Ok(manifest.map(|m| {
            let lease_id = if lease.is_zero() { 0 } else { self.read_leases.take(&m.upload_id, lease) };
            (m, lease_id)
        }))
    }

    /// Deletes the current version of `key`; returns its upload id if there was one.
    pub async fn manifest_delete(self: &Arc<Self>, epoch: u64, ns: &str, key: Vec<u8>) -> Result<Option<Vec<u8>>> {
        let ns = namespace::resolve(ns)?.to_string();
        self.check_file_owner(epoch, &ns, &key)?;
        Ok(self.applier.apply_files(FilesTxn::Delete { ns, key }).await?.previous)
    }

    /// Up to `limit` manifests of `ns` whose key starts with `prefix`, after
    /// `start_after`, in key order, as (namespace, key, manifest); the flag
    /// says whether more follow. With `all_namespaces`, every manifest of
    /// the shard, and `start_after` is a position `namespace 0x00 key`.
    pub async fn manifest_list(
        self: &Arc<Self>,
        ns: &str,
        prefix: Vec<u8>,
        start_after: Vec<u8>,
        limit: usize,
        omit_chunks: bool,
        all_namespaces: bool,
    ) -> Result<(Vec<(String, Vec<u8>, FileManifest)>, bool)> {
        let ns = if all_namespaces { String::new() } else { namespace::resolve(ns)?.to_string() };
        self.config.limits.check_key_len("prefix", prefix.len())?;
        // With all_namespaces the cursor is `namespace 0x00 key`: a key plus at most a namespace.
        let cursor_len = if all_namespaces {
            start_after.len().saturating_sub(namespace::MAX_NAMESPACE_LEN + 1)
        } else {
            start_after.len()
        };
        self.config.limits.check_key_len("start_after", cursor_len)?;
        let limit = self.config.limits.scan_page(limit as u32)?;
        self.blocking_heavy(move |shard| {
            let (prefix_key, mut start) = if all_namespaces {
                (b"m".to_vec(), [b"m", start_after.as_slice()].concat())
            } else {
                (keys::manifest(&ns, &prefix), keys::manifest(&ns, &start_after))
            };
            start.push(0); // just past the cursor
            let mut out = Vec::new();
            let mut more = false;
            shard.store.scan_prefix(CF_FILES, &prefix_key, &start, None, |key, value| {
                if out.len() == limit {
                    more = true;
                    return Ok(false);
                }
                let Some((ns, file_key)) = keys::parse_manifest(key) else { return Ok(true) };
                let mut manifest = FileManifest::decode(value)
                    .map_err(|e| Error::Corrupt { key: crate::error::show_key(key), reason: e.to_string() })?;
                if omit_chunks {
                    manifest.chunks = Vec::new();
                }
                out.push((ns.to_string(), file_key.to_vec(), manifest));
                Ok(true)
            })?;
            Ok((out, more))
        })
        .await
    }

    /// Renews (or, with a zero length, ends) a read lease.
    pub fn read_lease(&self, upload_id: &[u8], lease_id: u64, length: Duration) {
        self.read_leases.renew(upload_id, lease_id, length);
    }

    /// Uploads whose lease ran out (plus the grace) and garbage no reader holds.
    pub async fn files_pending(self: &Arc<Self>, limit: usize) -> Result<Pending> {
        let limit = limit.clamp(1, 10_000);
        self.blocking_heavy(move |shard| {
            let cutoff = codec::now_ms().saturating_sub(shard.config.files.upload_grace.as_millis() as u64);
            let mut pending = Pending::default();
            shard.store.scan_prefix(CF_FILES, keys::UPLOAD_PREFIX, &[], None, |key, value| {
                if let Some(record) = UploadRecord::decode(value).filter(|r| r.deadline_ms < cutoff) {
                    let upload_id = key[keys::UPLOAD_PREFIX.len()..].to_vec();
                    pending.expired.push(ExpiredUpload { upload_id, namespace: record.namespace, key: record.key });
                }
                Ok(pending.expired.len() < limit)
            })?;
            shard.store.scan_prefix(CF_FILES, keys::GARBAGE_PREFIX, &[], None, |key, value| {
                let upload_id = &key[keys::GARBAGE_PREFIX.len()..];
                if !shard.read_leases.held(upload_id) {
                    let record = GarbageManifest::decode(value)
                        .map_err(|e| Error::Corrupt { key: crate::error::show_key(key), reason: e.to_string() })?;
                    pending.garbage.push(record);
                }
                Ok(pending.garbage.len() < limit)
            })?;
            Ok(pending)
        })
        .await
    }

    /// Forgets a garbage record once its claims are released everywhere.
    pub async fn garbage_forget(self: &Arc<Self>, upload_id: Vec<u8>) -> Result<()> {
        check_upload_id(&upload_id)?;
        self.applier.apply_files(FilesTxn::Forget { upload_id }).await.map(|_| ())
    }

    /// Re-reads and hashes up to `limit` stored chunks after `start_after`.
    pub async fn chunk_verify(self: &Arc<Self>, start_after: Vec<u8>, limit: usize) -> Result<Verified> {
        let limit = limit.clamp(1, 1_000);
        self.blocking_files(move |shard| {
            let mut infos = Vec::new();
            let mut start = if start_after.is_empty() { keys::INFO_PREFIX.to_vec() } else { start_after };
            start.push(0);
            shard.store.scan_prefix(CF_CHUNKS, keys::INFO_PREFIX, &start, None, |key, value| {
                infos.push((key.to_vec(), Info::decode(value)));
                Ok(infos.len() <= limit)
            })?;
            let more = infos.len() > limit;
            infos.truncate(limit);
            let mut page = Verified::default();
            for (info_key, info) in &infos {
                let Some((ns, hash)) = keys::parse_info(info_key) else { continue };
                page.chunks += 1;
                let checked = match info {
                    None => Err(Error::Corrupt { key: chunk::name(ns, hash), reason: "unreadable chunk info".into() }),
                    Some(_) => shard.read_chunk(ns, hash),
                };
                match checked {
                    Ok(raw) => page.bytes += raw.len() as u64,
                    Err(e) => page.corrupt.push(CorruptChunk {
                        shard_id: shard.config.id.clone(),
                        namespace: ns.to_string(),
                        sha256: hash.to_vec(),
                        reason: e.to_string(),
                    }),
                }
                let mut claimed = false;
                shard.store.scan_prefix(CF_FILES, &keys::claims_of(ns, hash), &[], None, |_, _| {
                    claimed = true;
                    Ok(false)
                })?;
                page.unreferenced += u64::from(!claimed);
            }
            if more {
                page.next = infos.last().map(|(k, _)| k.clone()).unwrap_or_default();
            }
            Ok(page)
        })
        .await
    }

    /// The hashes of `hashes` with no chunk stored in `ns`.
    pub async fn chunks_missing(self: &Arc<Self>, ns: &str, hashes: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        let ns = namespace::resolve(ns)?.to_string();
        self.config.limits.check_batch("hashes", hashes.len())?;
        self.blocking_light(move |shard| shard.missing_chunks(&ns, &hashes)).await
    }

    fn missing_chunks(&self, ns: &str, hashes: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
        let info_keys: Vec<Vec<u8>> = hashes.iter().map(|h| keys::info(ns, h)).collect();
        let found = self.store.multi_get_cf(CF_CHUNKS, &info_keys)?;
        Ok(hashes.iter().zip(found).filter(|(_, f)| f.is_none()).map(|(h, _)| h.clone()).collect())
    }
}
