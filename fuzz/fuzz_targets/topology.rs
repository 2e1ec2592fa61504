//! Cluster descriptions in TOML: a topology file (`Topology::from_toml`,
//! parse then `validate`) and a whole gateway config
//! (`GatewayConfig::from_toml`, parse then `validate`). What validates must
//! build its placement ring, place keys on its shards, and (a topology)
//! render to TOML that parses back to the same topology.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omnishard_common::topology::Topology;
use omnishard_fuzz::text;
use omnishard_gateway::GatewayConfig;

/// Largest ring built per input (shards × vnodes): building one is quadratic
/// in its size, and a slow input only wastes the fuzzer's time.
const MAX_RING_NODES: u64 = 4096;

fn check_ring(topology: &Topology) {
    let nodes = topology.shards.len() as u64 * u64::from(topology.vnodes);
    if nodes > MAX_RING_NODES {
        return;
    }
    let ring = topology.ring().expect("a validated topology builds its ring");
    assert_eq!(ring.shard_ids().len(), topology.shards.len());
    for key in [&b""[..], b"k", b"{tag}key", b"\xff\x00"] {
        let owner = ring.owner_index("default", key);
        assert!(owner < topology.shards.len(), "owner {owner} of {} shards", topology.shards.len());
    }
}

/// Every shard's replica list, as the gateway builds its clients: `addr` first, no repeats.
fn check_replicas(topology: &Topology) {
    for shard in &topology.shards {
        let addrs = shard.replica_addrs();
        assert_eq!(addrs.first(), Some(&shard.addr), "the first replica is addr");
        assert!(addrs.len() <= 1 + shard.replicas.len());
    }
}

fuzz_target!(init: omnishard_fuzz::init(), |data: &[u8]| {
    let Some(text) = text(data) else { return };

    if let Ok(topology) = Topology::from_toml(text) {
        check_ring(&topology);
        let rendered = topology.to_toml();
        let again = Topology::from_toml(&rendered).expect("a rendered topology parses and validates again");
        assert_eq!(again, topology, "TOML round trip");
        check_replicas(&topology);
    }

    if let Ok(config) = GatewayConfig::from_toml(text) {
        let topology = config.topology();
        topology.validate().expect("a validated config has a valid topology");
        check_ring(&topology);
        check_replicas(&topology);
        if let Some(meta) = &config.meta {
            let _ = meta.replica_addrs();
        }
    }
});
