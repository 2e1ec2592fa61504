//! openraft's messages to the other replicas of a group, over gRPC
//! (`ShardRaftService`), one lazily connected channel per peer.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use omnishard_proto::v1::shard_raft_service_client::ShardRaftServiceClient;
use omnishard_proto::v1::RaftMessage;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::{wire, BasicNode, NodeId, TypeConfig};
use crate::server::MAX_MESSAGE_BYTES;

/// Creates a [`Peer`] per replica openraft talks to.
///
/// Connections to other replicas leave from the address this replica
/// listens on, when that is a specific one: on a multi-homed host peers
/// (and firewalls) then see the replica's own address.
#[derive(Clone, Default)]
pub struct NetworkFactory {
    pub source: Arc<OnceLock<IpAddr>>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        let source = self.source.get().copied().filter(|ip| !ip.is_unspecified());
        let client = Endpoint::from_shared(format!("http://{}", node.addr))
            .map(|endpoint| {
                let channel = endpoint
                    .local_address(source)
                    .connect_timeout(Duration::from_secs(1))
                    .tcp_nodelay(true)
                    .initial_stream_window_size(8 << 20)
                    .initial_connection_window_size(32 << 20)
                    .connect_lazy();
                ShardRaftServiceClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            })
            .map_err(|e| format!("replica {target} address {:?}: {e}", node.addr));
        Peer { target, client }
    }
}

/// The connection to one replica.
pub struct Peer {
    target: NodeId,
    client: Result<ShardRaftServiceClient<Channel>, String>,
}

/// Why a call did not get an answer from the peer's Raft.
enum Failure {
    Unreachable(tonic::Status),
    Network(tonic::Status),
}

impl Failure {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<NodeId, BasicNode, E> {
        match self {
            Failure::Unreachable(status) => RPCError::Unreachable(Unreachable::new(&status)),
            Failure::Network(status) => RPCError::Network(NetworkError::new(&status)),
        }
    }
}

#[derive(Clone, Copy)]
enum Method {
    Append,
    Vote,
    Snapshot,
}

impl Peer {
    /// Sends `request` and decodes the peer's `Result<A, E>` answer.
    async fn call<Q: Serialize, A: DeserializeOwned>(
        &mut self,
        method: Method,
        request: &Q,
        option: &RPCOption,
    ) -> Result<A, Failure> {
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(reason) => return Err(Failure::Unreachable(tonic::Status::invalid_argument(reason.clone()))),
        };
        let data = wire::encode(request).map_err(|e| Failure::Network(tonic::Status::internal(e.to_string())))?;
        let mut grpc = tonic::Request::new(RaftMessage { data });
        grpc.set_timeout(option.hard_ttl());
        let mut client = client;
        let answer = match method {
            Method::Append => client.append_entries(grpc).await,
            Method::Vote => client.vote(grpc).await,
            Method::Snapshot => client.install_snapshot(grpc).await,
        };
        let answer = answer.map_err(|status| match status.code() {
            tonic::Code::Unavailable => Failure::Unreachable(status),
            _ => Failure::Network(status),
        })?;
        wire::decode(&format!("answer of replica {}", self.target), &answer.into_inner().data)
            .map_err(|e| Failure::Network(tonic::Status::internal(e.to_string())))
    }

    /// A remote Raft error, typed for openraft.
    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let answer: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
            self.call(Method::Append, &rpc, &option).await.map_err(Failure::into_rpc)?;
        answer.map_err(|e| self.remote(e))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        let answer: Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> =
            self.call(Method::Snapshot, &rpc, &option).await.map_err(Failure::into_rpc)?;
        answer.map_err(|e| self.remote(e))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let answer: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
            self.call(Method::Vote, &rpc, &option).await.map_err(Failure::into_rpc)?;
        answer.map_err(|e| self.remote(e))
    }

    /// Retry an unreachable replica soon: a restarted replica should catch up fast.
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
