//! The cluster description: which shards exist, where they listen, how many
//! virtual nodes each gets and the ring epoch. Loaded from TOML by a gateway,
//! pushed to shards so they can check ownership.
//!
//! ```toml
//! epoch = 1
//! vnodes = 256
//!
//! [[shards]]
//! id = "shard-1"
//! addr = "127.0.0.1:7401"
//! ```

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::placement::{Ring, DEFAULT_VNODES};

/// One shard as the topology knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardAddr {
    /// Stable shard id; placement depends on it, not on the address.
    pub id: String,
    /// `host:port` the shard's gRPC server listens on (for a replicated
    /// shard: the replica tried first).
    pub addr: String,
    /// For a shard replicated as a Raft group: every replica's `host:port`
    /// (`addr` included or not). Gateways send work to the group's leader
    /// and follow "not leader" answers among these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<String>,
}

impl ShardAddr {
    /// A shard of one replica.
    pub fn new(id: impl Into<String>, addr: impl Into<String>) -> ShardAddr {
        ShardAddr { id: id.into(), addr: addr.into(), replicas: Vec::new() }
    }

    /// Every replica address, `addr` first, without repeats.
    pub fn replica_addrs(&self) -> Vec<String> {
        let mut all = vec![self.addr.clone()];
        for addr in &self.replicas {
            if !all.contains(addr) {
                all.push(addr.clone());
            }
        }
        all
    }
}

/// The ring's inputs.
///
/// * `epoch` — increases on every change of the shard set (≥ 1).
/// * `vnodes` — virtual nodes per shard (default 256).
/// * `shards` — at least one, ids unique.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub epoch: u64,
    #[serde(default = "default_vnodes")]
    pub vnodes: u32,
    pub shards: Vec<ShardAddr>,
}

fn default_vnodes() -> u32 {
    DEFAULT_VNODES
}

/// Checks a shard id: 1–64 characters of `A-Za-z0-9_-.`.
pub fn check_shard_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("shard id", format!("{id:?} must be 1-64 characters of A-Z, a-z, 0-9, '_', '-', '.'")))
    }
}

impl Topology {
    /// Rejects an unusable topology with a message naming the entry.
    pub fn validate(&self) -> Result<()> {
        if self.epoch == 0 {
            return Err(Error::Topology("epoch must be at least 1".into()));
        }
        if self.vnodes == 0 || self.vnodes > 65_536 {
            return Err(Error::Topology(format!("vnodes is {}; it must be between 1 and 65536", self.vnodes)));
        }
        if self.shards.is_empty() {
            return Err(Error::Topology("no shards: add at least one [[shards]] entry".into()));
        }
        let mut seen = HashSet::new();
        for (i, shard) in self.shards.iter().enumerate() {
            check_shard_id(&shard.id).map_err(|e| Error::Topology(format!("shards[{i}].id: {e}")))?;
            if !seen.insert(shard.id.as_str()) {
                return Err(Error::Topology(format!("duplicate shard id {:?} (shards[{i}].id)", shard.id)));
            }
            check_addr(&shard.addr).map_err(|reason| Error::Topology(format!("shards[{i}].addr: {reason}")))?;
            for (j, addr) in shard.replicas.iter().enumerate() {
                check_addr(addr).map_err(|reason| Error::Topology(format!("shards[{i}].replicas[{j}]: {reason}")))?;
            }
        }
        Ok(())
    }

    /// Builds the placement ring of this topology.
    pub fn ring(&self) -> Result<Ring> {
        self.validate()?;
        let ids: Vec<String> = self.shards.iter().map(|s| s.id.clone()).collect();
        Ring::new(self.epoch, self.vnodes, &ids)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Topology> {
        let topology: Topology = toml::from_str(text).map_err(|e| Error::Topology(e.to_string()))?;
        topology.validate()?;
        Ok(topology)
    }

    /// Renders the topology as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// The shard with `id`, if the topology has it.
    pub fn shard(&self, id: &str) -> Option<&ShardAddr> {
        self.shards.iter().find(|s| s.id == id)
    }
}

/// An address must be `host:port` with a numeric port.
fn check_addr(addr: &str) -> std::result::Result<(), String> {
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("{addr:?} is not host:port"))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("{addr:?} is not host:port"));
    }
    Ok(())
}

impl From<&Topology> for omnishard_proto::v1::InstallTopologyRequest {
    fn from(t: &Topology) -> Self {
        omnishard_proto::v1::InstallTopologyRequest {
            epoch: t.epoch,
            vnodes: t.vnodes,
            shards: t
                .shards
                .iter()
                .map(|s| omnishard_proto::v1::TopologyShard {
                    id: s.id.clone(),
                    addr: s.addr.clone(),
                    replicas: s.replicas.clone(),
                })
                .collect(),
        }
    }
}

impl From<&omnishard_proto::v1::InstallTopologyRequest> for Topology {
    fn from(t: &omnishard_proto::v1::InstallTopologyRequest) -> Self {
        Topology {
            epoch: t.epoch,
            vnodes: t.vnodes,
            shards: t
                .shards
                .iter()
                .map(|s| ShardAddr { id: s.id.clone(), addr: s.addr.clone(), replicas: s.replicas.clone() })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
epoch = 3
[[shards]]
id = "s1"
addr = "127.0.0.1:7401"
[[shards]]
id = "s2"
addr = "localhost:7402"
"#;

    #[test]
    fn test_topology_parses_with_default_vnodes() {
        let t = Topology::from_toml(GOOD).unwrap();
        assert_eq!(t.vnodes, 256);
        assert_eq!(t.ring().unwrap().epoch(), 3);
        let back = Topology::from_toml(&t.to_toml()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn test_topology_errors_name_the_entry() {
        let dup = GOOD.replace("\"s2\"", "\"s1\"");
        assert_eq!(
            Topology::from_toml(&dup).unwrap_err().to_string(),
            "topology: duplicate shard id \"s1\" (shards[1].id)"
        );
        let bad_addr = GOOD.replace("localhost:7402", "localhost");
        assert!(Topology::from_toml(&bad_addr).unwrap_err().to_string().contains("shards[1].addr"));
        let unknown = format!("{GOOD}\ncolour = 3\n");
        assert!(Topology::from_toml(&unknown).unwrap_err().to_string().contains("unknown field"));
        assert!(Topology::from_toml("epoch = 1\nshards = []").unwrap_err().to_string().contains("no shards"));
        let bad_replica = format!("{GOOD}\nreplicas = [\"localhost:7402\", \"nowhere\"]\n");
        assert!(Topology::from_toml(&bad_replica).unwrap_err().to_string().contains("shards[1].replicas[1]"));
    }

    #[test]
    fn test_replicas_list_every_address_once_addr_first() {
        let text = format!("{GOOD}\nreplicas = [\"localhost:7403\", \"localhost:7402\"]\n");
        let t = Topology::from_toml(&text).unwrap();
        assert_eq!(t.shards[1].replica_addrs(), vec!["localhost:7402", "localhost:7403"]);
        assert_eq!(t.shards[0].replica_addrs(), vec![t.shards[0].addr.clone()]);
        assert_eq!(Topology::from_toml(&t.to_toml()).unwrap(), t);
    }
}
