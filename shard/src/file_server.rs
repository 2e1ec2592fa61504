//! The tonic adapter of `ShardFileService`: convert, call [`Shard`]'s file
//! operations, map the error.

use std::sync::Arc;
use std::time::Duration;

use omnishard_proto::v1::shard_file_service_server::ShardFileService;
use omnishard_proto::v1::*;
use omnishard_telemetry::record;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::files::ops::UploadAction as Action;
use crate::node::Shard;

/// Adapter for `ShardFileService`.
pub struct ShardFileGrpc {
    pub(crate) shard: Arc<Shard>,
}

impl ShardFileGrpc {
    fn status(&self, err: Error) -> Status {
        err.to_status(self.shard.id())
    }
}

fn ticket(upload: Option<UploadTicket>) -> Result<UploadTicket, Status> {
    upload.ok_or_else(|| Status::invalid_argument("upload: missing"))
}

#[tonic::async_trait]
impl ShardFileService for ShardFileGrpc {
    async fn chunk_put(
        &self,
        request: Request<ShardChunkPutRequest>,
    ) -> Result<Response<ShardChunkPutResponse>, Status> {
        let req = request.into_inner();
        let upload = ticket(req.upload)?;
        record("chunks", req.chunks.len() as i64);
        record("bytes_written", req.chunks.iter().map(|c| c.data.len() as i64).sum::<i64>());
        let stored = self
            .shard
            .chunk_put(req.epoch, &req.namespace, upload, req.compress, req.chunks)
            .await
            .map_err(|e| self.status(e))?;
        Ok(Response::new(ShardChunkPutResponse { stored: stored.stored, deduplicated: stored.deduplicated }))
    }

    async fn chunk_claim(
        &self,
        request: Request<ShardChunkClaimRequest>,
    ) -> Result<Response<ShardChunkClaimResponse>, Status> {
        let req = request.into_inner();
        let upload = ticket(req.upload)?;
        self.shard.chunk_claim(req.epoch, &req.namespace, upload, req.hashes).await.map_err(|e| self.status(e))?;
        Ok(Response::new(ShardChunkClaimResponse {}))
    }

    async fn chunk_get(
        &self,
        request: Request<ShardChunkGetRequest>,
    ) -> Result<Response<ShardChunkGetResponse>, Status> {
        let req = request.into_inner();
        let data = self.shard.chunk_get(req.epoch, &req.namespace, req.sha256).await.map_err(|e| self.status(e))?;
        record("bytes_read", data.len() as i64);
        Ok(Response::new(ShardChunkGetResponse { data }))
    }

    async fn upload_control(
        &self,
        request: Request<ShardUploadControlRequest>,
    ) -> Result<Response<ShardUploadControlResponse>, Status> {
        let req = request.into_inner();
        let action = match UploadAction::try_from(req.action) {
            Ok(UploadAction::Renew) => Action::Renew(req.deadline_ms),
            Ok(UploadAction::Durable) => Action::Durable,
            Ok(UploadAction::Seal) => Action::Seal,
            Ok(UploadAction::Release) => Action::Release,
            _ => return Err(Status::invalid_argument("action: must be RENEW, DURABLE, SEAL or RELEASE")),
        };
        let done = self.shard.upload_control(req.upload_id, action).await.map_err(|e| self.status(e))?;
        Ok(Response::new(ShardUploadControlResponse { chunks_deleted: done.chunks_deleted }))
    }

    async fn manifest_commit(
        &self,
        request: Request<ShardManifestCommitRequest>,
    ) -> Result<Response<ShardManifestCommitResponse>, Status> {
        let req = request.into_inner();
        let manifest = req.manifest.ok_or_else(|| Status::invalid_argument("manifest: missing"))?;
        let done = self
            .shard
            .manifest_commit(req.epoch, &req.namespace, req.key, manifest, req.deadline_ms)
            .await
            .map_err(|e| self.status(e))?;
        Ok(Response::new(ShardManifestCommitResponse {
            version: done.seq,
            replaced: done.previous.unwrap_or_default(),
        }))
    }

    async fn manifest_get(
        &self,
        request: Request<ShardManifestGetRequest>,
    ) -> Result<Response<ShardManifestGetResponse>, Status> {
        let req = request.into_inner();
        let lease = Duration::from_millis(req.lease_ms);
        let found =
            self.shard.manifest_get(req.epoch, &req.namespace, req.key, lease).await.map_err(|e| self.status(e))?;
        Ok(Response::new(match found {
            Some((manifest, lease_id)) => ShardManifestGetResponse { found: true, manifest: Some(manifest), lease_id },
            None => ShardManifestGetResponse::default(),
        }))
    }

    async fn manifest_delete(
        &self,
        request: Request<ShardManifestDeleteRequest>,
    ) -> Result<Response<ShardManifestDeleteResponse>, Status> {
        let req = request.into_inner();
        let deleted =
            self.shard.manifest_delete(req.epoch, &req.namespace, req.key).await.map_err(|e| self.status(e))?;
        Ok(Response::new(ShardManifestDeleteResponse {
            deleted: deleted.is_some(),
            upload_id: deleted.unwrap_or_default(),
        }))
    }

    async fn manifest_list(
        &self,
        request: Request<ShardManifestListRequest>,
    ) -> Result<Response<ShardManifestListResponse>, Status> {
        let req = request.into_inner();
        let (found, more) = self
            .shard
            .manifest_list(
                &req.namespace,
                req.prefix,
                req.start_after,
                req.limit as usize,
                req.omit_chunks,
                req.all_namespaces,
            )
            .await
            .map_err(|e| self.status(e))?;
        let manifests =
            found.into_iter().map(|(namespace, key, m)| StoredManifest { key, manifest: Some(m), namespace }).collect();
        Ok(Response::new(ShardManifestListResponse { manifests, more }))
    }

    async fn read_lease(
        &self,
        request: Request<ShardReadLeaseRequest>,
    ) -> Result<Response<ShardReadLeaseResponse>, Status> {
        let req = request.into_inner();
        self.shard.read_lease(&req.upload_id, req.lease_id, Duration::from_millis(req.lease_ms));
        Ok(Response::new(ShardReadLeaseResponse {}))
    }

    async fn files_pending(
        &self,
        request: Request<ShardFilesPendingRequest>,
    ) -> Result<Response<ShardFilesPendingResponse>, Status> {
        let pending = self.shard.files_pending(request.get_ref().limit as usize).await.map_err(|e| self.status(e))?;
        Ok(Response::new(ShardFilesPendingResponse { expired: pending.expired, garbage: pending.garbage }))
    }

    async fn garbage_forget(
        &self,
        request: Request<ShardGarbageForgetRequest>,
    ) -> Result<Response<ShardGarbageForgetResponse>, Status> {
        self.shard.garbage_forget(request.into_inner().upload_id).await.map_err(|e| self.status(e))?;
        Ok(Response::new(ShardGarbageForgetResponse {}))
    }

    async fn chunk_verify(
        &self,
        request: Request<ShardChunkVerifyRequest>,
    ) -> Result<Response<ShardChunkVerifyResponse>, Status> {
        let req = request.into_inner();
        let page = self.shard.chunk_verify(req.start_after, req.limit as usize).await.map_err(|e| self.status(e))?;
        Ok(Response::new(ShardChunkVerifyResponse {
            chunks: page.chunks,
            bytes: page.bytes,
            corrupt: page.corrupt,
            unreferenced: page.unreferenced,
            next: page.next,
        }))
    }

    async fn chunks_present(
        &self,
        request: Request<ShardChunksPresentRequest>,
    ) -> Result<Response<ShardChunksPresentResponse>, Status> {
        let req = request.into_inner();
        let missing = self.shard.chunks_missing(&req.namespace, req.hashes).await.map_err(|e| self.status(e))?;
        Ok(Response::new(ShardChunksPresentResponse { missing }))
    }
}
