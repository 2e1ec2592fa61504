//! Which keys this shard serves: the installed ring and its epoch.
//!
//! A gateway installs its topology on every shard; the shard persists it (so
//! a restart keeps enforcing it) and then checks every request: the caller's
//! epoch must equal the installed one, and every key must map to this shard.
//! Misrouted work is refused with a typed [`Rejection`], never served.

use std::sync::{Arc, RwLock};

use omnishard_common::placement::Ring;
use omnishard_common::rejection::Rejection;
use omnishard_common::topology::Topology;

use crate::error::{Error, Result};

/// The ring a shard enforces; `None` until a gateway installs one.
pub struct Ownership {
    shard_id: String,
    current: RwLock<Option<Arc<Installed>>>,
}

/// An installed topology with its ring.
pub struct Installed {
    pub topology: Topology,
    pub ring: Ring,
}

impl Ownership {
    /// Starts from a persisted topology, if any.
    pub fn new(shard_id: String, persisted: Option<Topology>) -> Result<Ownership> {
        let current = match persisted {
            Some(topology) => {
                let ring = topology.ring()?;
                Some(Arc::new(Installed { topology, ring }))
            }
            None => None,
        };
        Ok(Ownership { shard_id, current: RwLock::new(current) })
    }

    /// The installed topology, if any.
    pub fn installed(&self) -> Option<Arc<Installed>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The enforced epoch; 0 before any install.
    pub fn epoch(&self) -> u64 {
        self.installed().map(|i| i.ring.epoch()).unwrap_or(0)
    }

    /// The ring to serve `request_epoch` with, or a wrong-epoch rejection.
    pub fn ring_for(&self, request_epoch: u64) -> Result<Arc<Installed>> {
        match self.installed() {
            Some(installed) if installed.ring.epoch() == request_epoch => Ok(installed),
            other => Err(Error::Rejected(Rejection::WrongEpoch {
                request_epoch,
                shard_epoch: other.map(|i| i.ring.epoch()).unwrap_or(0),
            })),
        }
    }

    /// Fails with not-owner unless every key of `namespace` maps to this shard.
    pub fn check_keys<'a>(
        &self,
        installed: &Installed,
        namespace: &str,
        keys: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<()> {
        for key in keys {
            let owner = installed.ring.owner(namespace, key);
            if owner != self.shard_id {
                return Err(Error::Rejected(Rejection::NotOwner {
                    shard_epoch: installed.ring.epoch(),
                    owner: owner.to_string(),
                }));
            }
        }
        Ok(())
    }

    /// Whether this shard owns `key` under `installed`.
    pub fn owns(&self, installed: &Installed, namespace: &str, key: &[u8]) -> bool {
        installed.ring.owner(namespace, key) == self.shard_id
    }

    /// Checks that `topology` may replace the installed one: valid, names
    /// this shard, and newer — or the very same topology again.
    pub fn admit(&self, topology: &Topology) -> Result<Ring> {
        let ring = topology.ring()?;
        if topology.shard(&self.shard_id).is_none() {
            return Err(Error::InvalidArgument(omnishard_common::Error::Topology(format!(
                "epoch {} does not list shard {}; check the shard ids in the topology file",
                topology.epoch, self.shard_id
            ))));
        }
        if let Some(current) = self.installed() {
            let epoch = current.ring.epoch();
            let same = current.topology == *topology;
            if topology.epoch < epoch || (topology.epoch == epoch && !same) {
                return Err(Error::Rejected(Rejection::WrongEpoch {
                    request_epoch: topology.epoch,
                    shard_epoch: epoch,
                }));
            }
        }
        Ok(ring)
    }

    /// Makes `topology` (already admitted and persisted) the enforced one.
    pub fn set(&self, topology: Topology, ring: Ring) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(Installed { topology, ring }));
    }
}
