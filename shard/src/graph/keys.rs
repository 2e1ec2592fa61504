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

/// Tag of vertex keys.
pub const VERTEX: u8 = b'v';
/// Tag of out-half keys.
pub const OUT: u8 = b'o';
/// Tag of in-half keys.
pub const IN: u8 = b'i';
/// Tag of label-index keys.
pub const LABEL: u8 = b'l';

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
    }
}
