//! The tonic adapter of `FileService`: the upload's header and data
//! messages in, the download's info and data messages out.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use omnishard_proto::v1::file_service_server::FileService;
use omnishard_proto::v1::*;
use omnishard_telemetry::record;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::error::Error;
use crate::files::download::Download;
use crate::live::LiveCluster;
use crate::server::FILE_MESSAGE_BYTES;

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
        Err(status) => Err(broken("data", &status)),
    })
}

/// What a client stream that failed to decode becomes. A message over the
/// limit is the client's to fix, so it is INVALID_ARGUMENT naming the limit
/// (tonic reports OUT_OF_RANGE, or RESOURCE_EXHAUSTED when a compressed
/// message inflates past it); anything else keeps tonic's code, so a real
/// cancel stays CANCELLED.
fn broken(field: &'static str, status: &Status) -> Error {
    let too_large = match status.code() {
        Code::OutOfRange => true,
        Code::ResourceExhausted => status.message().contains("decompress"),
        _ => false,
    };
    if too_large {
        let size = message_size(status.message())
            .map_or_else(|| "a message is larger".into(), |n| format!("a message is {n} bytes"));
        let reason = format!(
            "{size}; the limit is {FILE_MESSAGE_BYTES} bytes (16 MiB) per message: send the data in smaller messages"
        );
        return omnishard_common::Error::invalid(field, reason).into();
    }
    Error::Shard {
        shard_id: String::new(),
        code: status.code(),
        message: format!("{field}: the upload stream broke: {}", status.message()),
    }
}

/// The size in tonic's "found N bytes" of a message over the limit.
fn message_size(tonic_message: &str) -> Option<u64> {
    let (_, rest) = tonic_message.split_once("found ")?;
    rest.split_whitespace().next()?.parse().ok()
}

type DownloadStream = Pin<Box<dyn Stream<Item = Result<DownloadResponse, Status>> + Send>>;

#[tonic::async_trait]
impl FileService for FileGrpc {
    async fn upload(&self, request: Request<Streaming<UploadRequest>>) -> Result<Response<UploadResponse>, Status> {
        let mut stream = request.into_inner();
        // No transfer slot is held yet (the upload takes it once the header
        // is in), and this bounds how long a silent client holds the request.
        let timeout = self.cluster.current().files.header_timeout;
        let first = tokio::time::timeout(timeout, stream.message()).await.map_err(|_| {
            status(Error::Deadline(format!("header: not received within {timeout:?} (files.header_timeout)")))
        })?;
        let header = match first.map_err(|e| status(broken("header", &e)))? {
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
        let Download { info, data, stopped } =
            self.cluster.current().download(&req.namespace, req.key, req.offset, req.length).await.map_err(status)?;
        let info = DownloadResponse { part: Some(download_response::Part::Info(info)) };
        let data = ReceiverStream::new(data).map(|chunk| match chunk {
            Ok(bytes) => Ok(DownloadResponse { part: Some(download_response::Part::Data(bytes)) }),
            Err(e) => Err(status(e)),
        });
        // Ready once `data` has ended: an error only if the task stopped early.
        let stop = futures::stream::once(stopped).filter_map(|stop| async move { stop.ok().map(|e| Err(status(e))) });
        let stream = futures::stream::once(async move { Ok(info) }).chain(data).chain(stop);
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
