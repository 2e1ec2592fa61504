//! The typed error a shard sends when a request was routed with a stale ring
//! or to the wrong shard. It travels as a `FAILED_PRECONDITION` status with
//! gRPC metadata, so a gateway can tell it from a version conflict without
//! parsing messages and refresh its ring.

/// Metadata key naming the rejection kind: `wrong-epoch`, `not-owner`,
/// `not-leader` or `moving`.
pub const REJECTION_HEADER: &str = "x-omnishard-rejection";
/// Metadata key carrying the epoch the shard enforces.
pub const SHARD_EPOCH_HEADER: &str = "x-omnishard-shard-epoch";
/// Metadata key carrying the address of the replica believed to lead.
pub const LEADER_HEADER: &str = "x-omnishard-leader";

/// Why a shard refused to serve a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The caller routed with another ring epoch than the shard's.
    WrongEpoch { request_epoch: u64, shard_epoch: u64 },
    /// Under the same epoch, the key belongs to another shard.
    NotOwner { shard_epoch: u64, owner: String },
    /// This replica does not lead its group; `leader` is the leader's address when known.
    NotLeader { leader: Option<String> },
    /// The key's range is being handed to another shard (the short fence
    /// before the switch): nothing was written; retry shortly.
    Moving { shard_epoch: u64 },
}

impl Rejection {
    /// Encodes the rejection as a gRPC status.
    pub fn to_status(&self, shard_id: &str) -> tonic::Status {
        let (kind, epoch, message) = match self {
            Rejection::NotLeader { leader } => return not_leader_status(shard_id, leader.as_deref()),
            Rejection::WrongEpoch { request_epoch, shard_epoch } => (
                "wrong-epoch",
                *shard_epoch,
                format!(
                    "shard {shard_id} enforces ring epoch {shard_epoch}, request was routed with epoch {request_epoch}; refresh the topology"
                ),
            ),
            Rejection::NotOwner { shard_epoch, owner } => (
                "not-owner",
                *shard_epoch,
                format!("shard {shard_id} does not own this key under epoch {shard_epoch}; its owner is {owner}"),
            ),
            Rejection::Moving { shard_epoch } => (
                "moving",
                *shard_epoch,
                format!("shard {shard_id} is handing this key's range to another shard (epoch {shard_epoch}); retry"),
            ),
        };
        let mut status = match self {
            Rejection::Moving { .. } => tonic::Status::unavailable(message),
            _ => tonic::Status::failed_precondition(message),
        };
        let md = status.metadata_mut();
        md.insert(REJECTION_HEADER, tonic::metadata::MetadataValue::from_static(kind));
        if let Ok(value) = epoch.to_string().parse() {
            md.insert(SHARD_EPOCH_HEADER, value);
        }
        status
    }

    /// If `status` says "not the leader": the leader's address when the replica knew it.
    pub fn leader_hint(status: &tonic::Status) -> Option<Option<String>> {
        let kind = status.metadata().get(REJECTION_HEADER)?.to_str().ok()?;
        if kind != "not-leader" {
            return None;
        }
        Some(status.metadata().get(LEADER_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string))
    }

    /// The kind this rejection travels as (`x-omnishard-rejection`).
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::WrongEpoch { .. } => "wrong-epoch",
            Rejection::NotOwner { .. } => "not-owner",
            Rejection::NotLeader { .. } => "not-leader",
            Rejection::Moving { .. } => "moving",
        }
    }

    /// Reads the rejection kind and shard epoch back from a status, if it is one.
    pub fn kind_of(status: &tonic::Status) -> Option<(&str, u64)> {
        let kind = status.metadata().get(REJECTION_HEADER)?.to_str().ok()?;
        let epoch = status.metadata().get(SHARD_EPOCH_HEADER)?.to_str().ok()?.parse().ok()?;
        Some((kind, epoch))
    }
}

/// `UNAVAILABLE` with the `not-leader` kind and, when known, the leader's address.
fn not_leader_status(shard_id: &str, leader: Option<&str>) -> tonic::Status {
    let message = match leader {
        Some(addr) => format!("this replica of shard {shard_id} is not its leader; the leader is at {addr}"),
        None => {
            format!("this replica of shard {shard_id} is not its leader and knows no leader (election in progress)")
        }
    };
    let mut status = tonic::Status::unavailable(message);
    let md = status.metadata_mut();
    md.insert(REJECTION_HEADER, tonic::metadata::MetadataValue::from_static("not-leader"));
    if let Some(value) = leader.and_then(|addr| addr.parse().ok()) {
        md.insert(LEADER_HEADER, value);
    }
    status
}
