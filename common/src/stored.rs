//! Where a *stored* record belongs: the `(namespace, placement key)` that
//! the ring hashes, read back from a shard's RocksDB key. Shards use it to
//! find the records a new ring moves away; the rebalancer to send each
//! record to its new owner.
//!
//! Two spaces move between shards:
//! * [`Space::Kv`] — `namespace 0x00 key`: placed by the key.
//! * [`Space::Graph`] — `namespace 0x00 graph 0x00 tag …` (and edge intents
//!   `0x01 namespace 0x00 graph 0x00 …`): placed by the vertex the record
//!   belongs to, so a vertex, its label entry and its edge halves move together.

/// Tag of vertex keys: `v id`.
pub const GRAPH_VERTEX: u8 = b'v';
/// Tag of out-half keys: `o len(from) from len(label) label to`.
pub const GRAPH_OUT: u8 = b'o';
/// Tag of in-half keys: `i len(to) to len(label) label from`.
pub const GRAPH_IN: u8 = b'i';
/// Tag of label-index keys: `l len(label) label id`.
pub const GRAPH_LABEL: u8 = b'l';
/// First byte of edge-intent keys (namespaces never start with 0x01).
pub const GRAPH_PENDING: u8 = 0x01;

/// The key spaces that migrate, with their wire number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Space {
    #[default]
    Kv = 0,
    Graph = 1,
}

impl Space {
    /// Every space, in export order.
    pub const ALL: [Space; 2] = [Space::Kv, Space::Graph];

    /// The space with wire number `n`.
    pub fn from_wire(n: u32) -> Option<Space> {
        match n {
            0 => Some(Space::Kv),
            1 => Some(Space::Graph),
            _ => None,
        }
    }

    /// `(namespace, placement key)` of stored `key`; `None` if it is not one.
    pub fn owner_of(self, key: &[u8]) -> Option<(&str, &[u8])> {
        match self {
            Space::Kv => split_kv(key),
            Space::Graph => graph_owner(key),
        }
    }
}

/// Splits a stored KV key into namespace and user key.
pub fn split_kv(stored: &[u8]) -> Option<(&str, &[u8])> {
    let zero = stored.iter().position(|&b| b == 0)?;
    let ns = std::str::from_utf8(&stored[..zero]).ok()?;
    Some((ns, &stored[zero + 1..]))
}

/// The namespace and vertex id a stored graph key belongs to.
pub fn graph_owner(stored: &[u8]) -> Option<(&str, &[u8])> {
    let (pending, rest) = match stored.split_first() {
        Some((&GRAPH_PENDING, rest)) => (true, rest),
        _ => (false, stored),
    };
    let (ns, rest) = split_kv(rest)?;
    let graph_end = rest.iter().position(|&b| b == 0)?;
    let rest = &rest[graph_end + 1..];
    if pending {
        // An intent of an out-half: placed with `from`, its first part.
        return Some((ns, length_prefixed(rest)?.0));
    }
    let (&tag, rest) = rest.split_first()?;
    let id = match tag {
        GRAPH_VERTEX => rest,
        GRAPH_OUT | GRAPH_IN => length_prefixed(rest)?.0,
        GRAPH_LABEL => length_prefixed(rest)?.1,
        _ => return None,
    };
    Some((ns, id))
}

/// Splits `len u16 BE | bytes | rest` into `(bytes, rest)`.
fn length_prefixed(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u16::from_be_bytes(raw.get(..2)?.try_into().ok()?) as usize;
    let part = raw.get(2..2 + len)?;
    Some((part, &raw[2 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp(out: &mut Vec<u8>, part: &str) {
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }

    #[test]
    fn test_every_graph_key_belongs_to_its_vertex() {
        let prefix = b"ns\0g\0".to_vec();
        let mut vertex = prefix.clone();
        vertex.push(GRAPH_VERTEX);
        vertex.extend_from_slice(b"a\0b");
        assert_eq!(graph_owner(&vertex), Some(("ns", &b"a\0b"[..])));

        let mut out = prefix.clone();
        out.push(GRAPH_OUT);
        lp(&mut out, "from");
        lp(&mut out, "knows");
        out.extend_from_slice(b"to");
        assert_eq!(graph_owner(&out), Some(("ns", &b"from"[..])));

        let mut inn = prefix.clone();
        inn.push(GRAPH_IN);
        lp(&mut inn, "to");
        lp(&mut inn, "knows");
        inn.extend_from_slice(b"from");
        assert_eq!(graph_owner(&inn), Some(("ns", &b"to"[..])));

        let mut label = prefix.clone();
        label.push(GRAPH_LABEL);
        lp(&mut label, "person");
        label.extend_from_slice(b"id7");
        assert_eq!(graph_owner(&label), Some(("ns", &b"id7"[..])));

        let mut pending = vec![GRAPH_PENDING];
        pending.extend_from_slice(&prefix);
        lp(&mut pending, "from");
        lp(&mut pending, "knows");
        pending.extend_from_slice(b"to");
        assert_eq!(graph_owner(&pending), Some(("ns", &b"from"[..])));

        // Truncated or unknown keys belong to nobody.
        assert_eq!(graph_owner(&out[..9]), None);
        assert_eq!(graph_owner(b"ns\0g\0zid"), None);
        assert_eq!(graph_owner(b"no-separator"), None);
        assert_eq!(Space::Kv.owner_of(b"ns\0key"), Some(("ns", &b"key"[..])));
        assert_eq!(Space::from_wire(1), Some(Space::Graph));
        assert_eq!(Space::from_wire(7), None);
    }
}
