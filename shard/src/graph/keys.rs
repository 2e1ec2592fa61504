//! Keys of the `graph` column family.
//!
//! Every key starts with `namespace 0x00 graph 0x00` and a tag byte:
//! * `v id` — a vertex (value: protobuf `Vertex`);
//! * `o len(from) from len(label) label to` — an out-half (value: `Edge`);
//! * `i len(to) to len(label) label from` — an in-half (value: `Edge`);
//! * `l len(label) label id` — the label index (no value).
//!
//! `len` is a u16 big-endian length, so all halves of one vertex (and of one
//! vertex and label) form one contiguous, prefix-scannable range.

// The tags are shared with `omnishard_common::stored`, which reads keys back
// to the vertex they belong to when ranges move between shards.
pub use omnishard_common::stored::{
    GRAPH_IN as IN, GRAPH_LABEL as LABEL, GRAPH_OUT as OUT, GRAPH_PENDING as PENDING, GRAPH_VERTEX as VERTEX,
};

/// Key of the intent of a pending out-half:
/// `0x01 namespace 0x00 graph 0x00 len(from) from len(label) label to`.
pub fn pending(prefix: &[u8], from: &str, label: &str, to: &str) -> Vec<u8> {
    let mut out = pending_prefix(prefix, from);
    push_lp(&mut out, label);
    out.extend_from_slice(to.as_bytes());
    out
}

/// Start of the intents of out-halves of `from`.
pub fn pending_prefix(prefix: &[u8], from: &str) -> Vec<u8> {
    let mut out = vec![PENDING];
    out.extend_from_slice(prefix);
    push_lp(&mut out, from);
    out
}

/// The `(namespace, graph)` of an intent key.
pub fn parse_pending(key: &[u8]) -> Option<(String, String)> {
    let rest = key.strip_prefix(&[PENDING])?;
    let ns_end = rest.iter().position(|&b| b == 0)?;
    let graph_part = &rest[ns_end + 1..];
    let graph_end = graph_part.iter().position(|&b| b == 0)?;
    let ns = std::str::from_utf8(&rest[..ns_end]).ok()?;
    let graph = std::str::from_utf8(&graph_part[..graph_end]).ok()?;
    Some((ns.to_string(), graph.to_string()))
}

/// `namespace 0x00 graph 0x00`: the start of every key of one graph.
pub fn graph_prefix(namespace: &str, graph: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(namespace.len() + graph.len() + 2);
    out.extend_from_slice(namespace.as_bytes());
    out.push(0);
    out.extend_from_slice(graph.as_bytes());
    out.push(0);
    out
}

fn push_lp(out: &mut Vec<u8>, part: &str) {
    out.extend_from_slice(&(part.len() as u16).to_be_bytes());
    out.extend_from_slice(part.as_bytes());
}

/// Key of a vertex.
pub fn vertex(prefix: &[u8], id: &str) -> Vec<u8> {
    let mut out = prefix.to_vec();
    out.push(VERTEX);
    out.extend_from_slice(id.as_bytes());
    out
}

/// Start of the halves of `id` in one direction (`tag` = [`OUT`] or [`IN`]), optionally of one label.
pub fn halves_prefix(prefix: &[u8], tag: u8, id: &str, label: Option<&str>) -> Vec<u8> {
    let mut out = prefix.to_vec();
    out.push(tag);
    push_lp(&mut out, id);
    if let Some(label) = label {
        push_lp(&mut out, label);
    }
    out
}

/// Key of one edge half: stored with `owner`, pointing at `other`.
pub fn half(prefix: &[u8], tag: u8, owner: &str, label: &str, other: &str) -> Vec<u8> {
    let mut out = halves_prefix(prefix, tag, owner, Some(label));
    out.extend_from_slice(other.as_bytes());
    out
}

/// Key of a label-index entry.
pub fn label_entry(prefix: &[u8], label: &str, id: &str) -> Vec<u8> {
    let mut out = label_prefix(prefix, label);
    out.extend_from_slice(id.as_bytes());
    out
}

/// Start of the label index of one label.
pub fn label_prefix(prefix: &[u8], label: &str) -> Vec<u8> {
    let mut out = prefix.to_vec();
    out.push(LABEL);
    push_lp(&mut out, label);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_halves_of_a_vertex_are_one_range() {
        let p = graph_prefix("ns", "g");
        let all = halves_prefix(&p, OUT, "a", None);
        let knows = halves_prefix(&p, OUT, "a", Some("knows"));
        let key = half(&p, OUT, "a", "knows", "b");
        assert!(key.starts_with(&knows) && knows.starts_with(&all));
        // "a" must not be a prefix range of "ab".
        assert!(!half(&p, OUT, "ab", "knows", "b").starts_with(&all));
        assert!(!vertex(&p, "x").starts_with(&graph_prefix("ns", "g2")));
        assert_eq!(parse_pending(&pending(&p, "a", "l", "b")), Some(("ns".into(), "g".into())));
    }

    #[test]
    fn test_every_key_reads_back_to_its_vertex() {
        use omnishard_common::stored::graph_owner;
        let p = graph_prefix("ns", "g");
        let a = Some(("ns", &b"a"[..]));
        assert_eq!(graph_owner(&vertex(&p, "a")), a);
        assert_eq!(graph_owner(&half(&p, OUT, "a", "knows", "b")), a);
        assert_eq!(graph_owner(&half(&p, IN, "a", "knows", "b")), a);
        assert_eq!(graph_owner(&label_entry(&p, "person", "a")), a);
        assert_eq!(graph_owner(&pending(&p, "a", "knows", "b")), a);
    }
}
