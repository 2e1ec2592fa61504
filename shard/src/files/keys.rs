//! Layout of the file column families.
//!
//! `chunks` (RocksDB blob files hold the chunk bytes):
//! * `d ns 0x00 sha256` → a stored chunk (see [`super::chunk`]).
//! * `i ns 0x00 sha256` → chunk info: codec (u8), stored length (u32 BE),
//!   raw length (u32 BE). Small, so it stays in the SST: presence checks
//!   never read a blob. Written in the same batch as the data, in the same
//!   column family, so the two are flushed and lost together.
//!
//! `files` (always written with the WAL, through the apply path):
//! * `m ns 0x00 key` → the file's current [`FileManifest`](omnishard_proto::v1::FileManifest).
//! * `g upload_id` → a replaced or deleted version waiting for collection
//!   ([`GarbageManifest`](omnishard_proto::v1::GarbageManifest)).
//! * `u upload_id` → an upload in progress: lease deadline (u64 BE),
//!   namespace length (u8), namespace, file key.
//! * `r ns 0x00 sha256 upload_id` → a claim: the upload keeps the chunk alive.
//! * `x upload_id ns 0x00 sha256` → the same claim, found by upload.
//!
//! Upload ids are 16 random bytes chosen by the gateway.

/// Bytes of a SHA-256.
pub const HASH_LEN: usize = 32;
/// Bytes of an upload id.
pub const UPLOAD_ID_LEN: usize = 16;

fn ns_hash(tag: u8, ns: &str, hash: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + ns.len() + hash.len() + UPLOAD_ID_LEN);
    key.push(tag);
    key.extend_from_slice(ns.as_bytes());
    key.push(0);
    key.extend_from_slice(hash);
    key
}

/// Key of a chunk's bytes.
pub fn data(ns: &str, hash: &[u8]) -> Vec<u8> {
    ns_hash(b'd', ns, hash)
}

/// Key of a chunk's info.
pub fn info(ns: &str, hash: &[u8]) -> Vec<u8> {
    ns_hash(b'i', ns, hash)
}

/// Prefix of every chunk info key.
pub const INFO_PREFIX: &[u8] = b"i";

/// Namespace and hash of an info key.
pub fn parse_info(key: &[u8]) -> Option<(&str, &[u8])> {
    let rest = key.strip_prefix(INFO_PREFIX)?;
    let at = rest.iter().position(|b| *b == 0)?;
    let hash = &rest[at + 1..];
    (hash.len() == HASH_LEN).then_some((std::str::from_utf8(&rest[..at]).ok()?, hash))
}

/// Key of a file's manifest.
pub fn manifest(ns: &str, key: &[u8]) -> Vec<u8> {
    ns_hash(b'm', ns, key)
}

/// Namespace and file key of a manifest key.
pub fn parse_manifest(key: &[u8]) -> Option<(&str, &[u8])> {
    let rest = key.strip_prefix(b"m")?;
    let at = rest.iter().position(|b| *b == 0)?;
    Some((std::str::from_utf8(&rest[..at]).ok()?, &rest[at + 1..]))
}

/// Key of a garbage record.
pub fn garbage(upload_id: &[u8]) -> Vec<u8> {
    [b"g", upload_id].concat()
}

/// Prefix of every garbage record.
pub const GARBAGE_PREFIX: &[u8] = b"g";

/// Key of an upload record.
pub fn upload(upload_id: &[u8]) -> Vec<u8> {
    [b"u", upload_id].concat()
}

/// Prefix of every upload record.
pub const UPLOAD_PREFIX: &[u8] = b"u";

/// Key of a claim, by chunk.
pub fn claim(ns: &str, hash: &[u8], upload_id: &[u8]) -> Vec<u8> {
    let mut key = claims_of(ns, hash);
    key.extend_from_slice(upload_id);
    key
}

/// Prefix of every claim on one chunk.
pub fn claims_of(ns: &str, hash: &[u8]) -> Vec<u8> {
    ns_hash(b'r', ns, hash)
}

/// Key of a claim, by upload.
pub fn claim_by_upload(upload_id: &[u8], ns: &str, hash: &[u8]) -> Vec<u8> {
    let mut key = upload_claims(upload_id);
    key.extend_from_slice(ns.as_bytes());
    key.push(0);
    key.extend_from_slice(hash);
    key
}

/// Prefix of every claim of one upload.
pub fn upload_claims(upload_id: &[u8]) -> Vec<u8> {
    [b"x", upload_id].concat()
}

/// Namespace and hash of a by-upload claim key.
pub fn parse_claim_by_upload(key: &[u8]) -> Option<(&str, &[u8])> {
    let rest = key.get(1 + UPLOAD_ID_LEN..)?;
    let at = rest.iter().position(|b| *b == 0)?;
    let hash = &rest[at + 1..];
    (hash.len() == HASH_LEN).then_some((std::str::from_utf8(&rest[..at]).ok()?, hash))
}

/// An upload in progress, as recorded on a chunk shard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadRecord {
    pub deadline_ms: u64,
    pub namespace: String,
    pub key: Vec<u8>,
}

impl UploadRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.namespace.len() + self.key.len());
        out.extend_from_slice(&self.deadline_ms.to_be_bytes());
        out.push(self.namespace.len() as u8);
        out.extend_from_slice(self.namespace.as_bytes());
        out.extend_from_slice(&self.key);
        out
    }

    pub fn decode(raw: &[u8]) -> Option<UploadRecord> {
        let deadline_ms = u64::from_be_bytes(raw.get(..8)?.try_into().ok()?);
        let ns_len = *raw.get(8)? as usize;
        let namespace = std::str::from_utf8(raw.get(9..9 + ns_len)?).ok()?.to_string();
        Some(UploadRecord { deadline_ms, namespace, key: raw[9 + ns_len..].to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_keys_round_trip() {
        let hash = [7u8; HASH_LEN];
        let id = [9u8; UPLOAD_ID_LEN];
        assert_eq!(parse_info(&info("ns", &hash)), Some(("ns", &hash[..])));
        assert_eq!(parse_claim_by_upload(&claim_by_upload(&id, "ns", &hash)), Some(("ns", &hash[..])));
        assert!(claim("ns", &hash, &id).starts_with(&claims_of("ns", &hash)));
        assert_eq!(parse_manifest(&manifest("ns", b"a/b")), Some(("ns", &b"a/b"[..])));
        let record = UploadRecord { deadline_ms: 42, namespace: "ns".into(), key: b"k\0ey".to_vec() };
        assert_eq!(UploadRecord::decode(&record.encode()), Some(record));
        assert_eq!(UploadRecord::decode(b"short"), None);
    }
}
