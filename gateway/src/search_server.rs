//! Tonic adapter for `SearchService`: convert, call the [`Cluster`], map errors.

use std::sync::Arc;

use omnishard_proto::v1::search_service_server::SearchService;
use omnishard_proto::v1::*;
use omnishard_telemetry::record;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::live::LiveCluster;
use crate::search::documents::DocsWritten;

/// Adapter for `SearchService`.
pub struct SearchGrpc {
    pub(crate) cluster: Arc<LiveCluster>,
}

fn status(err: crate::Error) -> Status {
    err.to_status()
}

fn written(done: DocsWritten) -> Response<IndexDocumentsResponse> {
    Response::new(IndexDocumentsResponse { written: done.written, seq: done.seq })
}

#[tonic::async_trait]
impl SearchService for SearchGrpc {
    async fn create_index(&self, request: Request<CreateIndexRequest>) -> Result<Response<IndexInfo>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let info = self.cluster.current().create_index(&req.namespace, &req.index, req.fields).await.map_err(status)?;
        Ok(Response::new(info))
    }

    async fn update_index(&self, request: Request<UpdateIndexRequest>) -> Result<Response<IndexInfo>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let info = self.cluster.current().update_index(&req.namespace, &req.index, req.fields).await.map_err(status)?;
        Ok(Response::new(info))
    }

    async fn drop_index(&self, request: Request<DropIndexRequest>) -> Result<Response<DropIndexResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        self.cluster.current().drop_index(&req.namespace, &req.index).await.map_err(status)?;
        Ok(Response::new(DropIndexResponse {}))
    }

    async fn describe_index(&self, request: Request<DescribeIndexRequest>) -> Result<Response<IndexInfo>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        Ok(Response::new(self.cluster.current().describe_index(&req.namespace, &req.index).await.map_err(status)?))
    }

    async fn list_indexes(
        &self,
        request: Request<ListIndexesRequest>,
    ) -> Result<Response<ListIndexesResponse>, Status> {
        let indexes = self.cluster.current().list_indexes(&request.into_inner().namespace).await.map_err(status)?;
        Ok(Response::new(ListIndexesResponse { indexes }))
    }

    async fn index_documents(
        &self,
        request: Request<IndexDocumentsRequest>,
    ) -> Result<Response<IndexDocumentsResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let done =
            self.cluster.current().index_documents(&req.namespace, &req.index, req.documents).await.map_err(status)?;
        Ok(written(done))
    }

    async fn bulk_index(
        &self,
        request: Request<Streaming<IndexDocumentsRequest>>,
    ) -> Result<Response<IndexDocumentsResponse>, Status> {
        let mut stream = request.into_inner();
        let mut total = DocsWritten::default();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let done =
                self.cluster.current().index_documents(&batch.namespace, &batch.index, batch.documents).await.map_err(
                    |e| {
                        // Say how far the stream got: earlier batches are stored.
                        Status::new(e.code(), format!("after {} documents were written: {e}", total.written))
                    },
                )?;
            total.written += done.written;
            total.seq = total.seq.max(done.seq);
        }
        Ok(written(total))
    }

    async fn update_document(
        &self,
        request: Request<UpdateDocumentRequest>,
    ) -> Result<Response<IndexDocumentsResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let done = self
            .cluster
            .current()
            .update_document(&req.namespace, &req.index, req.id, req.json)
            .await
            .map_err(status)?;
        Ok(written(done))
    }

    async fn delete_documents(
        &self,
        request: Request<DeleteDocumentsRequest>,
    ) -> Result<Response<IndexDocumentsResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let done =
            self.cluster.current().delete_documents(&req.namespace, &req.index, req.ids).await.map_err(status)?;
        Ok(written(done))
    }

    async fn get_documents(
        &self,
        request: Request<GetDocumentsRequest>,
    ) -> Result<Response<GetDocumentsResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let documents =
            self.cluster.current().get_documents(&req.namespace, &req.index, req.ids).await.map_err(status)?;
        Ok(Response::new(GetDocumentsResponse { documents }))
    }

    async fn search(&self, request: Request<SearchRequest>) -> Result<Response<SearchResponse>, Status> {
        Ok(Response::new(self.cluster.current().search(request.into_inner()).await.map_err(status)?))
    }

    async fn refresh(&self, request: Request<RefreshRequest>) -> Result<Response<RefreshResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let searchable_seq = self.cluster.current().refresh_index(&req.namespace, &req.index).await.map_err(status)?;
        Ok(Response::new(RefreshResponse { searchable_seq }))
    }

    async fn reindex(&self, request: Request<ReindexRequest>) -> Result<Response<ReindexResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let documents = self.cluster.current().reindex(&req.namespace, &req.index).await.map_err(status)?;
        Ok(Response::new(ReindexResponse { documents }))
    }
}
