//! The replica's gRPC service: openraft's messages from other replicas, and
//! the group's administration (initialize, status, add/remove replica,
//! leadership transfer).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use omnishard_proto::v1::shard_raft_service_client::ShardRaftServiceClient;
use omnishard_proto::v1::shard_raft_service_server::ShardRaftService;
use omnishard_proto::v1::*;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::ServerState;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::{fatal, not_leader, wire, BasicNode, NodeId, TypeConfig};
use crate::error::Error;
use crate::node::Shard;

/// How long a transfer waits for the target to catch up, then to win.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);

/// The tonic adapter of a replica's Raft.
pub struct ShardRaftGrpc {
    pub shard: Arc<Shard>,
}

fn decode<T: DeserializeOwned>(what: &str, message: RaftMessage) -> Result<T, Status> {
    wire::decode(what, &message.data).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftMessage>, Status> {
    wire::encode(value).map(|data| Response::new(RaftMessage { data })).map_err(|e| Status::internal(e.to_string()))
}

impl ShardRaftGrpc {
    fn status(&self, e: Error) -> Status {
        e.to_status(self.shard.id())
    }

    fn raft(&self) -> &openraft::Raft<TypeConfig> {
        self.shard.replication.raft()
    }

    /// The replica's view of its group.
    /// Waits until the leader's progress shows `target` holding its whole log.
    async fn wait_caught_up(&self, target: NodeId, deadline: Instant) -> Result<(), Status> {
        loop {
            let caught_up = self.report().replicas.iter().any(|r| r.node_id == target && r.lag == 0);
            if caught_up {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Status::deadline_exceeded(format!(
                    "replica {target} did not catch up in {TRANSFER_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One transfer attempt: silences this leader's heartbeats (followers
    /// refuse to vote while they hear from a leader: its lease), has the
    /// target (`client`) campaign, and waits up to `wait` for a leader other than this one.
    /// Returns the leader this replica knows at the end. Heartbeats come
    /// back whatever happens.
    async fn campaign_round(
        &self,
        client: &mut ShardRaftServiceClient<tonic::transport::Channel>,
        wait: Duration,
    ) -> Result<Option<NodeId>, Status> {
        let own = self.shard.replication.node_id();
        self.raft().runtime_config().heartbeat(false);
        let outcome = async {
            client.campaign(CampaignRequest {}).await?;
            let mut metrics = self.raft().metrics();
            let _ = tokio::time::timeout(wait, metrics.wait_for(|m| m.current_leader.is_some_and(|l| l != own))).await;
            // Mid-election (no leader known yet): wait for its outcome.
            let _ = tokio::time::timeout(wait, metrics.wait_for(|m| m.current_leader.is_some())).await;
            let leader = metrics.borrow().current_leader;
            Ok(leader)
        }
        .await;
        self.raft().runtime_config().heartbeat(true);
        outcome
    }

    fn report(&self) -> RaftStatusResponse {
        let metrics = self.raft().metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let addr_of = |id: &NodeId| membership.get_node(id).map(|n| n.addr.clone()).unwrap_or_default();
        let last = metrics.last_log_index.unwrap_or(0);
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let replicas = metrics
            .replication
            .as_ref()
            .map(|progress| {
                progress
                    .iter()
                    .map(|(id, matched)| {
                        let matched = matched.map(|l| l.index).unwrap_or(0);
                        ReplicaProgress {
                            node_id: *id,
                            addr: addr_of(id),
                            voter: voters.contains(id),
                            matched_index: matched,
                            lag: last.saturating_sub(matched),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        RaftStatusResponse {
            node_id: metrics.id,
            role: role_name(metrics.state).into(),
            term: metrics.current_term,
            leader_id: metrics.current_leader.unwrap_or(0),
            leader_addr: metrics.current_leader.as_ref().map(addr_of).unwrap_or_default(),
            last_log_index: last,
            applied_index: metrics.last_applied.map(|l| l.index).unwrap_or(0),
            snapshot_index: metrics.snapshot.map(|l| l.index).unwrap_or(0),
            seq: self.shard.applier.last_seq(),
            replicas,
            members: membership
                .nodes()
                .map(|(id, node)| RaftMember { node_id: *id, addr: node.addr.clone() })
                .collect(),
        }
    }

    /// Replaces the voter set (joint consensus inside openraft).
    async fn set_voters(&self, voters: BTreeSet<NodeId>) -> Result<(), Status> {
        match self.raft().change_membership(voters, false).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(self.status(not_leader(&f))),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => Err(membership_status(e)),
            Err(RaftError::Fatal(e)) => Err(self.status(fatal(e))),
        }
    }

    fn require_leader(&self) -> Result<(), Status> {
        if self.shard.replication.is_leader() {
            Ok(())
        } else {
            Err(self.status(self.shard.replication.not_leader_here()))
        }
    }
}

fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

fn membership_status(e: ChangeMembershipError<NodeId>) -> Status {
    match e {
        ChangeMembershipError::InProgress(_) => Status::failed_precondition(format!("{e}; retry when it finished")),
        ChangeMembershipError::EmptyMembership(_) => {
            Status::invalid_argument("node_id: removing it would leave the group without voters")
        }
        ChangeMembershipError::LearnerNotFound(_) => Status::not_found(e.to_string()),
    }
}

fn check_addr(addr: &str) -> Result<(), Status> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(Status::invalid_argument(format!("addr: {addr:?} is not host:port"))),
    }
}

#[tonic::async_trait]
impl ShardRaftService for ShardRaftGrpc {
    async fn append_entries(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode("append entries", request.into_inner())?;
        encode(&self.raft().append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: VoteRequest<NodeId> = decode("vote", request.into_inner())?;
        encode(&self.raft().vote(rpc).await)
    }

    async fn install_snapshot(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode("install snapshot", request.into_inner())?;
        encode(&self.raft().install_snapshot(rpc).await)
    }

    async fn initialize(
        &self,
        request: Request<RaftInitializeRequest>,
    ) -> Result<Response<RaftStatusResponse>, Status> {
        let members = request.into_inner().members;
        if members.is_empty() {
            return Err(Status::invalid_argument("members: at least one replica is needed"));
        }
        let mut map = BTreeMap::new();
        for (i, m) in members.into_iter().enumerate() {
            if m.node_id == 0 {
                return Err(Status::invalid_argument(format!("members[{i}].node_id: must be at least 1")));
            }
            check_addr(&m.addr).map_err(|s| Status::invalid_argument(format!("members[{i}].{}", s.message())))?;
            if map.insert(m.node_id, m.addr).is_some() {
                return Err(Status::invalid_argument(format!("members[{i}].node_id: {} appears twice", m.node_id)));
            }
        }
        self.shard.replication.initialize(map).await.map_err(|e| self.status(e))?;
        Ok(Response::new(self.report()))
    }

    async fn status(&self, _request: Request<RaftStatusRequest>) -> Result<Response<RaftStatusResponse>, Status> {
        Ok(Response::new(self.report()))
    }

    async fn add_replica(&self, request: Request<AddReplicaRequest>) -> Result<Response<RaftStatusResponse>, Status> {
        let req = request.into_inner();
        if req.node_id == 0 {
            return Err(Status::invalid_argument("node_id: must be at least 1"));
        }
        check_addr(&req.addr)?;
        self.require_leader()?;
        // As a learner first, waiting until it caught up (by snapshot, then
        // log), so the new voter never slows the quorum down.
        match self.raft().add_learner(req.node_id, BasicNode { addr: req.addr }, true).await {
            Ok(_) => {}
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => return Err(self.status(not_leader(&f))),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => return Err(membership_status(e)),
            Err(RaftError::Fatal(e)) => return Err(self.status(fatal(e))),
        }
        let mut voters = self.shard.replication.voters();
        voters.insert(req.node_id);
        self.set_voters(voters).await?;
        Ok(Response::new(self.report()))
    }

    async fn remove_replica(
        &self,
        request: Request<RemoveReplicaRequest>,
    ) -> Result<Response<RaftStatusResponse>, Status> {
        let node_id = request.into_inner().node_id;
        self.require_leader()?;
        let mut voters = self.shard.replication.voters();
        if !voters.remove(&node_id) {
            return Err(Status::not_found(format!("node_id: replica {node_id} is not a voter of this group")));
        }
        self.set_voters(voters).await?;
        Ok(Response::new(self.report()))
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<RaftStatusResponse>, Status> {
        let target = request.into_inner().node_id;
        self.require_leader()?;
        if target == self.shard.replication.node_id() {
            return Ok(Response::new(self.report()));
        }
        if !self.shard.replication.voters().contains(&target) {
            return Err(Status::not_found(format!("node_id: replica {target} is not a voter of this group")));
        }
        let addr = self.report().members.into_iter().find(|m| m.node_id == target).map(|m| m.addr).unwrap_or_default();
        let mut client = ShardRaftServiceClient::connect(format!("http://{addr}"))
            .await
            .map_err(|e| Status::unavailable(format!("replica {target} at {addr}: {e}")))?;
        // Raft's leadership transfer (thesis §3.10): wait until the target
        // holds the whole log, then have it start an election at once; its
        // log is up to date, so it wins, and this leader steps down. A round
        // can fail without anyone else winning (the leader appended an entry
        // after the check, or a voter's lease outlived the campaign): then
        // this replica still leads and tries again until the deadline.
        let deadline = Instant::now() + TRANSFER_TIMEOUT;
        let round = Duration::from_millis(self.raft().config().election_timeout_max * 3);
        let own = self.shard.replication.node_id();
        loop {
            self.wait_caught_up(target, deadline).await?;
            let wait = round.min(deadline.saturating_duration_since(Instant::now()));
            match self.campaign_round(&mut client, wait).await? {
                Some(leader) if leader == target => return Ok(Response::new(self.report())),
                Some(leader) if leader != own => {
                    return Err(Status::aborted(format!(
                        "replica {leader} won the election instead of {target}; ask again"
                    )))
                }
                _ if Instant::now() >= deadline => {
                    return Err(Status::deadline_exceeded(format!(
                        "replica {target} did not take over in {TRANSFER_TIMEOUT:?}"
                    )))
                }
                _ => tracing::info!(target, "leadership transfer round failed; trying again"),
            }
        }
    }

    async fn campaign(&self, _request: Request<CampaignRequest>) -> Result<Response<CampaignResponse>, Status> {
        self.raft().trigger().elect().await.map_err(|e| self.status(fatal(e)))?;
        Ok(Response::new(CampaignResponse {}))
    }
}
