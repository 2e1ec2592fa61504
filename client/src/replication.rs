//! Replica groups: forming a new one (as `omnishard dev --replicas`, the
//! benchmarks and the test harness do) by asking its first replica.

use std::time::{Duration, Instant};

use omnishard_proto::v1::shard_raft_service_client::ShardRaftServiceClient;
use omnishard_proto::v1::{RaftInitializeRequest, RaftMember, RaftStatusRequest};

use crate::Error;

/// Initializes a new group of replicas `addrs` (ids 1, 2, …) and waits until
/// it has a leader; `DEADLINE_EXCEEDED` after `timeout` without one.
pub async fn form_group(addrs: &[String], timeout: Duration) -> Result<(), Error> {
    let first = addrs.first().ok_or_else(|| tonic::Status::invalid_argument("addrs: no replica"))?;
    let url = format!("http://{first}");
    let mut client = ShardRaftServiceClient::connect(url.clone())
        .await
        .map_err(|e| Error::Connect { url, reason: e.to_string() })?;
    let members =
        addrs.iter().enumerate().map(|(i, addr)| RaftMember { node_id: i as u64 + 1, addr: addr.clone() }).collect();
    client.initialize(RaftInitializeRequest { members }).await?;
    let deadline = Instant::now() + timeout;
    while client.status(RaftStatusRequest {}).await?.into_inner().leader_id == 0 {
        if Instant::now() > deadline {
            return Err(tonic::Status::deadline_exceeded(format!("no leader elected in {timeout:?}")).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
