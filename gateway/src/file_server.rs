//! The tonic adapter of `FileService`: the upload's header and data
//! messages in, the download's info and data messages out.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use omnishard_proto::v1::file_service_server::FileService;
use omnishard_proto::v1::*;
use omnishard_telemetry::record;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::Error;
use crate::live::LiveCluster;

/// Adapter for `FileService`.
pub struct FileGrpc {
    pub(crate) cluster: Arc<LiveCluster>,
}

fn status(err: Error) -> Status {
    err.to_status()
}

fn invalid(message: &str) -> Status {
    Status::invalid_argument(message.to_string())
}

/// The data messages after the header; another header is an error, and a
/// broken client stream is an error too (so the upload is released).
fn data_parts(stream: Streaming<UploadRequest>) -> impl Stream<Item = Result<bytes::Bytes, Error>> + Unpin + Send {
    stream.map(|message| match message {
        Ok(UploadRequest { part: Some(upload_request::Part::Data(data)) }) => Ok(data),
        Ok(_) => Err(omnishard_common::Error::invalid("data", "only the first message may carry the header").into()),
        Err(status) => Err(Error::Shard {
            shard_id: String::new(),
            code: tonic::Code::Cancelled,
            message: format!("the upload stream broke: {}", status.message()),
        }),
    })
}

type DownloadStream = Pin<Box<dyn Stream<Item = Result<DownloadResponse, Status>> + Send>>;

#[tonic::async_trait]
impl FileService for FileGrpc {
    async fn upload(&self, request: Request<Streaming<UploadRequest>>) -> Result<Response<UploadResponse>, Status> {
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(UploadRequest { part: Some(upload_request::Part::Header(header)) }) => header,
            Some(_) => {
                return Err(invalid("header: the first message must carry the header (key, content type, metadata)"))
            }
            None => return Err(invalid("header: the stream ended before its header")),
        };
        let done = self.cluster.current().upload(header, data_parts(stream)).await.map_err(status)?;
        Ok(Response::new(UploadResponse {
            file: Some(done.file),
            chunks_stored: done.chunks_stored,
            chunks_deduplicated: done.chunks_deduplicated,
        }))
    }

    type DownloadStream = DownloadStream;

    async fn download(&self, request: Request<DownloadRequest>) -> Result<Response<DownloadStream>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let download =
            self.cluster.current().download(&req.namespace, req.key, req.offset, req.length).await.map_err(status)?;
        let info = DownloadResponse { part: Some(download_response::Part::Info(download.info)) };
        let data = ReceiverStream::new(download.data).map(|chunk| match chunk {
            Ok(bytes) => Ok(DownloadResponse { part: Some(download_response::Part::Data(bytes)) }),
            Err(e) => Err(status(e)),
        });
        let stream = futures::stream::once(async move { Ok(info) }).chain(data);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn stat(&self, request: Request<StatFileRequest>) -> Result<Response<FileInfo>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let info = self.cluster.current().stat_file(&req.namespace, req.key, req.chunks).await.map_err(status)?;
        Ok(Response::new(info))
    }

    async fn list(&self, request: Request<ListFilesRequest>) -> Result<Response<ListFilesResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let page = self
            .cluster
            .current()
            .list_files(&req.namespace, req.prefix, &req.cursor, req.limit)
            .await
            .map_err(status)?;
        Ok(Response::new(ListFilesResponse { files: page.files, next_cursor: page.next_cursor }))
    }

    async fn delete(&self, request: Request<DeleteFileRequest>) -> Result<Response<DeleteFileResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let deleted = self.cluster.current().delete_file(&req.namespace, req.key).await.map_err(status)?;
        Ok(Response::new(DeleteFileResponse { deleted }))
    }

    async fn copy(&self, request: Request<CopyFileRequest>) -> Result<Response<CopyFileResponse>, Status> {
        let req = request.into_inner();
        record("namespace", req.namespace.clone());
        let file =
            self.cluster.current().copy_file(&req.namespace, req.source, req.destination).await.map_err(status)?;
        Ok(Response::new(CopyFileResponse { file: Some(file) }))
    }

    async fn verify(&self, _request: Request<VerifyFilesRequest>) -> Result<Response<VerifyFilesResponse>, Status> {
        Ok(Response::new(self.cluster.current().verify_files().await.map_err(status)?))
    }
}
