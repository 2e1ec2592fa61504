//! The snapshot file: a point-in-time dump of every data column family,
//! read from one RocksDB snapshot so it matches the Raft position recorded
//! with it. Loading one replaces the replica's data; Tantivy indexes are
//! then rebuilt from RocksDB (they are derived data).
//!
//! Format: magic, then records `[cf u8][key len u32][key][value len u32][value]`,
//! an end record `[0xFF]`, and the CRC-32 of everything before it.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use rocksdb::{IteratorMode, WriteBatch, WriteOptions};

use crate::error::{Error, Result};
use crate::store::{Store, CF_CHUNKS, CF_FILES, CF_GRAPH, CF_KV, CF_META, CF_SEARCH};

const MAGIC: &[u8; 8] = b"OMNISNP1";
const END: u8 = 0xFF;

/// Column families a snapshot carries, by their number in the file.
const DATA_CFS: [&str; 6] = [CF_KV, CF_GRAPH, CF_SEARCH, CF_FILES, CF_CHUNKS, CF_META];

/// Bytes of records written per batch while loading.
const LOAD_BATCH_BYTES: usize = 8 << 20;

/// A writer that keeps the CRC of what went through it.
struct Crc<W> {
    inner: W,
    hasher: crc32fast::Hasher,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("snapshot {}: {e}", path.display()))
}

/// Writes every data column family as of one RocksDB snapshot to `path`
/// (synced), and returns the `meta` value of `position_key` in that snapshot.
pub fn dump(store: &Store, path: &Path, position_key: &[u8]) -> Result<Option<Vec<u8>>> {
    let snapshot = store.db().snapshot();
    let position = snapshot.get_cf(store.cf(CF_META)?, position_key)?;
    let file = File::create(path).map_err(|e| io(path, e))?;
    let mut out = Crc { inner: BufWriter::with_capacity(1 << 20, file), hasher: crc32fast::Hasher::new() };
    out.write_all(MAGIC).map_err(|e| io(path, e))?;
    for (number, name) in DATA_CFS.iter().enumerate() {
        for item in snapshot.iterator_cf(store.cf(name)?, IteratorMode::Start) {
            let (key, value) = item?;
            out.write_all(&[number as u8]).map_err(|e| io(path, e))?;
            for part in [&key[..], &value[..]] {
                out.write_all(&(part.len() as u32).to_be_bytes()).map_err(|e| io(path, e))?;
                out.write_all(part).map_err(|e| io(path, e))?;
            }
        }
    }
    out.write_all(&[END]).map_err(|e| io(path, e))?;
    let crc = out.hasher.clone().finalize();
    let mut inner = out.inner;
    inner.write_all(&crc.to_be_bytes()).map_err(|e| io(path, e))?;
    let file = inner.into_inner().map_err(|e| io(path, e.error()))?;
    file.sync_all().map_err(|e| io(path, e))?;
    Ok(position)
}

/// Checks the file's CRC, then replaces every data column family with its records.
pub fn load(store: &Store, path: &Path) -> Result<u64> {
    verify(path)?;
    wipe(store)?;
    let mut input = BufReader::with_capacity(1 << 20, File::open(path).map_err(|e| io(path, e))?);
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic).map_err(|e| io(path, e))?;
    let mut batch = WriteBatch::default();
    let mut records = 0u64;
    loop {
        let mut number = [0u8; 1];
        input.read_exact(&mut number).map_err(|e| io(path, e))?;
        if number[0] == END {
            break;
        }
        let name = DATA_CFS.get(number[0] as usize).ok_or_else(|| Error::Corrupt {
            key: path.display().to_string(),
            reason: "unknown column family".into(),
        })?;
        let key = read_part(&mut input, path)?;
        let value = read_part(&mut input, path)?;
        batch.put_cf(store.cf(name)?, key, value);
        records += 1;
        if batch.size_in_bytes() >= LOAD_BATCH_BYTES {
            write(store, std::mem::take(&mut batch))?;
        }
    }
    write(store, batch)?;
    store.db().flush_wal(true)?;
    Ok(records)
}

fn read_part(input: &mut impl Read, path: &Path) -> Result<Vec<u8>> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len).map_err(|e| io(path, e))?;
    let mut part = vec![0u8; u32::from_be_bytes(len) as usize];
    input.read_exact(&mut part).map_err(|e| io(path, e))?;
    Ok(part)
}

/// Refuses a file whose trailing CRC does not match its contents.
fn verify(path: &Path) -> Result<()> {
    let mut input = BufReader::with_capacity(1 << 20, File::open(path).map_err(|e| io(path, e))?);
    let len = input.get_ref().metadata().map_err(|e| io(path, e))?.len();
    if len < (MAGIC.len() + 5) as u64 {
        return Err(Error::Corrupt { key: path.display().to_string(), reason: format!("{len} bytes is too short") });
    }
    let mut hasher = crc32fast::Hasher::new();
    let mut left = len - 4;
    let mut buf = vec![0u8; 1 << 20];
    let mut first = true;
    while left > 0 {
        let n = input.read(&mut buf[..left.min(1 << 20) as usize]).map_err(|e| io(path, e))?;
        if n == 0 {
            return Err(io(path, "ends early"));
        }
        if first && (n < MAGIC.len() || &buf[..MAGIC.len()] != MAGIC) {
            return Err(Error::Corrupt { key: path.display().to_string(), reason: "not a snapshot file".into() });
        }
        first = false;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let mut crc = [0u8; 4];
    input.read_exact(&mut crc).map_err(|e| io(path, e))?;
    if hasher.finalize() != u32::from_be_bytes(crc) {
        return Err(Error::Corrupt { key: path.display().to_string(), reason: "CRC mismatch".into() });
    }
    Ok(())
}

/// Deletes every key of the data column families.
fn wipe(store: &Store) -> Result<()> {
    for name in DATA_CFS {
        let cf = store.cf(name)?;
        let first = store.db().iterator_cf(cf, IteratorMode::Start).next().transpose()?;
        let last = store.db().iterator_cf(cf, IteratorMode::End).next().transpose()?;
        if let (Some((first, _)), Some((last, _))) = (first, last) {
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(cf, &first[..], &last[..]);
            batch.delete_cf(cf, &last[..]);
            write(store, batch)?;
        }
    }
    Ok(())
}

fn write(store: &Store, batch: WriteBatch) -> Result<()> {
    let mut opts = WriteOptions::default();
    opts.set_sync(false);
    store.db().write_opt(batch, &opts)?;
    Ok(())
}
