//! How a chunk is stored and checked.
//!
//! Stored form: codec (u8: 0 raw, 1 zstd), raw length (u32 BE), bytes. A
//! chunk is compressed only when asked and only when that saves at least a
//! sixteenth of it, so incompressible data (media, archives) costs no CPU on
//! reads. Every read recomputes the SHA-256 of the raw bytes: a mismatch is
//! [`Error::Corrupt`] naming the chunk (`DATA_LOSS`), never wrong bytes.

use bytes::Bytes;
use omnishard_common::digest::sha256;

use crate::error::{Error, Result};

/// Largest chunk a shard accepts (FastCDC's largest maximum, 16 MiB).
pub const MAX_CHUNK_BYTES: usize = 16 * 1024 * 1024;

/// Bytes of the stored header.
pub const HEADER_LEN: usize = 5;

const RAW: u8 = 0;
const ZSTD: u8 = 1;

/// zstd level: the fastest, because chunks are compressed on the write path.
const ZSTD_LEVEL: i32 = 1;

/// What the info key records about a stored chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    pub compressed: bool,
    pub stored_len: u32,
    pub raw_len: u32,
}

impl Info {
    pub fn encode(&self) -> [u8; 9] {
        let mut out = [0u8; 9];
        out[0] = if self.compressed { ZSTD } else { RAW };
        out[1..5].copy_from_slice(&self.stored_len.to_be_bytes());
        out[5..9].copy_from_slice(&self.raw_len.to_be_bytes());
        out
    }

    pub fn decode(raw: &[u8]) -> Option<Info> {
        let raw: &[u8; 9] = raw.try_into().ok()?;
        Some(Info {
            compressed: raw[0] == ZSTD,
            stored_len: u32::from_be_bytes(raw[1..5].try_into().ok()?),
            raw_len: u32::from_be_bytes(raw[5..9].try_into().ok()?),
        })
    }
}

/// Names a chunk in messages.
pub fn name(ns: &str, hash: &[u8]) -> String {
    format!("chunk {} of namespace {ns}", hex::encode(hash))
}

/// The stored form of `raw` and its info; compressed when asked and worth it.
pub fn encode(raw: &[u8], compress: bool) -> (Vec<u8>, Info) {
    let raw_len = raw.len() as u32;
    if compress {
        if let Ok(packed) = zstd::bulk::compress(raw, ZSTD_LEVEL) {
            if packed.len() < raw.len() - raw.len() / 16 {
                return (
                    framed(ZSTD, raw_len, &packed),
                    Info { compressed: true, stored_len: packed.len() as u32, raw_len },
                );
            }
        }
    }
    (framed(RAW, raw_len, raw), Info { compressed: false, stored_len: raw_len, raw_len })
}

fn framed(codec: u8, raw_len: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + bytes.len());
    out.push(codec);
    out.extend_from_slice(&raw_len.to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

/// The raw bytes of a stored chunk, checked against `hash`. A raw chunk is
/// returned in place, without a copy.
pub fn decode(ns: &str, hash: &[u8], stored: Vec<u8>) -> Result<Bytes> {
    let corrupt = |reason: String| Error::Corrupt { key: name(ns, hash), reason };
    if stored.len() < HEADER_LEN {
        return Err(corrupt(format!("stored form is {} bytes, shorter than its header", stored.len())));
    }
    let raw_len = u32::from_be_bytes([stored[1], stored[2], stored[3], stored[4]]) as usize;
    if raw_len > MAX_CHUNK_BYTES {
        return Err(corrupt(format!("header claims {raw_len} bytes, over the {MAX_CHUNK_BYTES}-byte chunk limit")));
    }
    let raw = match stored[0] {
        RAW => Bytes::from(stored).slice(HEADER_LEN..),
        ZSTD => {
            zstd::bulk::decompress(&stored[HEADER_LEN..], raw_len).map_err(|e| corrupt(format!("zstd: {e}")))?.into()
        }
        codec => return Err(corrupt(format!("unknown codec {codec}"))),
    };
    let actual = sha256(&raw);
    if actual[..] != *hash {
        return Err(corrupt(format!("SHA-256 of the stored bytes is {}", hex::encode(actual))));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_round_trip_raw_and_compressed() {
        let text = b"all work and no play ".repeat(1000);
        let hash = sha256(&text);
        let (stored, info) = encode(&text, true);
        assert!(info.compressed && (info.stored_len as usize) < text.len() / 4);
        assert_eq!(decode("ns", &hash, stored).unwrap(), text);
        assert_eq!(Info::decode(&info.encode()), Some(info));
        let (stored, info) = encode(&text, false);
        assert!(!info.compressed);
        assert_eq!(decode("ns", &hash, stored).unwrap(), text);
    }

    #[test]
    fn test_incompressible_data_stays_raw() {
        let noise: Vec<u8> = (0..2048u32).flat_map(|i| sha256(&i.to_be_bytes())).collect();
        let (stored, info) = encode(&noise, true);
        assert!(!info.compressed);
        assert_eq!(stored.len(), HEADER_LEN + noise.len());
        let (_, info) = encode(&[], true);
        assert!(!info.compressed);
    }

    #[test]
    fn test_flipped_byte_is_data_loss_naming_the_chunk() {
        let data = vec![42u8; 4096];
        let hash = sha256(&data);
        for compress in [false, true] {
            let (mut stored, _) = encode(&data, compress);
            let at = stored.len() - 1;
            stored[at] ^= 1;
            let err = decode("ns", &hash, stored).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains(&hex::encode(hash)), "{err}");
        }
        assert!(decode("ns", &hash, vec![0, 0]).is_err());
    }
}
