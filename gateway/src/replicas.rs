//! A shard as a group of replicas: the gateway sends each call to the
//! replica it believes leads, follows typed "not leader" answers (with the
//! leader's address when the replica knows it) and, when a replica cannot be
//! reached, tries the others until a leader answers or the failover budget
//! runs out. Callers see a short stall during an election, not errors.
//!
//! Retried: "not leader" rejections (the replica did nothing) and
//! unreachable replicas (connection refused or circuit open). A write whose
//! leader died after it was sent may therefore apply twice; puts and
//! deletes are idempotent, compare-and-set ones then report a conflict.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use omnishard_common::read_mode::ReadMode;
use omnishard_common::topology::ShardAddr;
use omnishard_proto::v1::*;

use crate::config::GatewaySettings;
use crate::error::{Error, Result};
use crate::shard_client::ReplicaClient;

/// Longest a call keeps looking for a leader (an election takes about a second).
pub const FAILOVER_BUDGET: Duration = Duration::from_secs(10);

/// Pause before asking again when no replica knows a leader yet.
const ELECTION_PAUSE: Duration = Duration::from_millis(50);

/// A cheap-to-clone handle for calling one shard, whatever replica leads it.
#[derive(Clone)]
pub struct ShardClient {
    id: Arc<str>,
    /// The replicas known: the topology's, plus leaders learnt from hints
    /// (a replica added online with `admin replica add`).
    replicas: Arc<ArcSwap<Vec<ReplicaClient>>>,
    /// Index of the replica believed to lead.
    leader: Arc<AtomicUsize>,
    /// Turn of the next follower read.
    next_reader: Arc<AtomicUsize>,
    /// For clients of replicas learnt later.
    settings: Arc<GatewaySettings>,
}

macro_rules! on_leader {
    ($($name:ident($req:ty) -> $resp:ty;)*) => {
        $(
            pub async fn $name(self, req: $req) -> Result<$resp> {
                self.call(req, |replica, req| replica.$name(req)).await
            }
        )*
    };
}

impl ShardClient {
    /// Clients for every replica of `shard`; connects nothing yet.
    pub fn new(shard: &ShardAddr, settings: &GatewaySettings) -> Result<ShardClient> {
        let replicas = shard
            .replica_addrs()
            .into_iter()
            .map(|addr| ReplicaClient::new(&ShardAddr::new(shard.id.clone(), addr), settings))
            .collect::<Result<Vec<_>>>()?;
        Ok(ShardClient {
            id: Arc::from(shard.id.as_str()),
            replicas: Arc::new(ArcSwap::from_pointee(replicas)),
            leader: Arc::new(AtomicUsize::new(0)),
            next_reader: Arc::new(AtomicUsize::new(0)),
            settings: Arc::new(settings.clone()),
        })
    }

    /// The shard's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The address of the replica believed to lead.
    pub fn addr(&self) -> String {
        self.current().addr().to_string()
    }

    /// Every replica's address.
    pub fn replica_addrs(&self) -> Vec<String> {
        self.replicas.load().iter().map(|r| r.addr().to_string()).collect()
    }

    fn current(&self) -> ReplicaClient {
        let replicas = self.replicas.load();
        replicas[self.leader.load(Ordering::Relaxed) % replicas.len()].clone()
    }

    /// The index of the replica at `addr`, adding a client for it when the
    /// topology does not list it (a leader hint naming a replica added
    /// online). `None` when no client can be made for the address.
    fn index_of(&self, addr: &str) -> Option<usize> {
        if let Some(i) = self.replicas.load().iter().position(|r| r.addr() == addr) {
            return Some(i);
        }
        let client = ReplicaClient::new(&ShardAddr::new(self.id.to_string(), addr.to_string()), &self.settings)
            .inspect_err(|e| tracing::warn!(shard_id = %self.id, addr, error = %e, "unusable leader hint"))
            .ok()?;
        tracing::info!(shard_id = %self.id, addr, "learnt a replica from a leader hint");
        let mut index = 0;
        self.replicas.rcu(|replicas| {
            let mut replicas = Vec::clone(replicas);
            index = replicas.iter().position(|r| r.addr() == addr).unwrap_or_else(|| {
                replicas.push(client.clone());
                replicas.len() - 1
            });
            replicas
        });
        Some(index)
    }

    /// Translates a status from the shard (see [`ReplicaClient::error`]).
    pub fn error(&self, status: tonic::Status) -> Error {
        self.current().error(status)
    }

    /// Runs `call` on the leader, following redirects and failing over.
    async fn call<Q, T, F, Fut>(&self, req: Q, call: F) -> Result<T>
    where
        Q: Clone,
        F: Fn(ReplicaClient, Q) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        if self.replicas.load().len() == 1 {
            // One known replica: no copy of the request for a retry. A hint
            // naming another replica is learnt for the next call.
            let outcome = call(self.current(), req).await;
            if let Err(Error::NotLeader { leader: Some(addr), .. }) = &outcome {
                if let Some(index) = self.index_of(addr) {
                    self.leader.store(index, Ordering::Relaxed);
                }
            }
            return outcome;
        }
        let deadline = Instant::now() + FAILOVER_BUDGET;
        loop {
            let (tried, replica) = {
                let replicas = self.replicas.load();
                let tried = self.leader.load(Ordering::Relaxed) % replicas.len();
                (tried, replicas[tried].clone())
            };
            let outcome = call(replica, req.clone()).await;
            let next = match &outcome {
                Err(Error::NotLeader { leader: Some(addr), .. }) => self.index_of(addr).unwrap_or(tried + 1),
                Err(Error::NotLeader { leader: None, .. }) | Err(Error::ShardUnavailable { .. }) => tried + 1,
                _ => return outcome,
            };
            if Instant::now() >= deadline {
                return outcome;
            }
            let next = next % self.replicas.load().len();
            // Compare-and-swap: concurrent calls that saw the same failure move once.
            let _ = self.leader.compare_exchange(tried, next, Ordering::Relaxed, Ordering::Relaxed);
            if matches!(outcome, Err(Error::NotLeader { leader: None, .. })) || next == 0 {
                tokio::time::sleep(ELECTION_PAUSE).await;
            }
        }
    }

    pub async fn stats(self) -> Result<ShardStatsResponse> {
        self.call((), |replica, ()| replica.stats()).await
    }

    /// Reads keys: from the leader, or — for a follower read — from the
    /// replicas in turn (the next one when a replica cannot be reached), so
    /// the replicas share the reads.
    pub async fn read(self, req: ShardReadRequest, mode: ReadMode) -> Result<ShardReadResponse> {
        if mode == ReadMode::Linearizable {
            return self.call(req, |replica, req| replica.read(req, ReadMode::Linearizable)).await;
        }
        let first = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let replicas = self.replicas.load_full();
        let mut outcome = Err(Error::ShardUnavailable {
            shard_id: self.id().to_string(),
            addr: self.addr(),
            reason: "no replica".into(),
        });
        for turn in 0..replicas.len() {
            let replica = replicas[(first + turn) % replicas.len()].clone();
            outcome = replica.read(req.clone(), mode).await;
            if !matches!(outcome, Err(Error::ShardUnavailable { .. })) {
                break;
            }
        }
        outcome
    }

    on_leader! {
        apply(ShardApplyRequest) -> ShardApplyResponse;
        scan(ShardScanRequest) -> ShardScanResponse;
        graph_apply(ShardGraphApplyRequest) -> ShardGraphApplyResponse;
        graph_get(ShardGraphGetRequest) -> GetVerticesResponse;
        graph_edges(ShardGraphEdgesRequest) -> NeighborsResponse;
        graph_edges_many(ShardGraphEdgesManyRequest) -> ShardGraphEdgesManyResponse;
        graph_pending(ShardGraphPendingRequest) -> ShardGraphPendingResponse;
        graph_find(ShardGraphFindRequest) -> FindVerticesResponse;
        graph_expand(ShardGraphExpandRequest) -> ShardGraphExpandResponse;
        search_define(ShardSearchDefineRequest) -> ShardSearchDefineResponse;
        search_drop(DropIndexRequest) -> DropIndexResponse;
        search_list(ShardSearchListRequest) -> ShardSearchListResponse;
        search_write(ShardSearchWriteRequest) -> IndexDocumentsResponse;
        search_get(ShardSearchGetRequest) -> GetDocumentsResponse;
        search_stats(ShardSearchStatsRequest) -> ShardSearchStatsResponse;
        search_query(ShardSearchQueryRequest) -> ShardSearchQueryResponse;
        search_fetch(ShardSearchFetchRequest) -> ShardSearchFetchResponse;
        search_refresh(RefreshRequest) -> RefreshResponse;
        search_reindex(ReindexRequest) -> ReindexResponse;
        chunk_put(ShardChunkPutRequest) -> ShardChunkPutResponse;
        chunk_claim(ShardChunkClaimRequest) -> ShardChunkClaimResponse;
        chunk_get(ShardChunkGetRequest) -> ShardChunkGetResponse;
        upload_control(ShardUploadControlRequest) -> ShardUploadControlResponse;
        manifest_commit(ShardManifestCommitRequest) -> ShardManifestCommitResponse;
        manifest_get(ShardManifestGetRequest) -> ShardManifestGetResponse;
        manifest_delete(ShardManifestDeleteRequest) -> ShardManifestDeleteResponse;
        manifest_list(ShardManifestListRequest) -> ShardManifestListResponse;
        read_lease(ShardReadLeaseRequest) -> ShardReadLeaseResponse;
        files_pending(ShardFilesPendingRequest) -> ShardFilesPendingResponse;
        garbage_forget(ShardGarbageForgetRequest) -> ShardGarbageForgetResponse;
        chunk_verify(ShardChunkVerifyRequest) -> ShardChunkVerifyResponse;
        chunks_present(ShardChunksPresentRequest) -> ShardChunksPresentResponse;
        trace_spans(TraceRequest) -> TraceResponse;
        install_topology(InstallTopologyRequest) -> u64;
        migrate_begin(MigrateBeginRequest) -> MigrateBeginResponse;
        migrate_export(MigrateExportRequest) -> MigrateRecords;
        migrate_dirty(MigrateDirtyRequest) -> MigrateRecords;
        migrate_ack(MigrateAckRequest) -> MigrateAckResponse;
        migrate_ingest(MigrateIngestRequest) -> MigrateIngestResponse;
        migrate_drop(MigrateDropRequest) -> MigrateDropResponse;
    }
}
