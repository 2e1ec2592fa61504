//! Rust SDK for the omnishard gateway, used by the CLI and the tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), omnishard_client::Error> {
//! let client = omnishard_client::Client::connect("http://127.0.0.1:7400").await?;
//! let written = client.put(b"greeting", b"hello", Default::default()).await?;
//! let kv = client.get(b"greeting").await?;
//! assert_eq!(kv.version, written.version);
//! # Ok(()) }
//! ```
//!
//! Layout: [`Client`], its options and [`Error`] are in this file;
//! [`trace_ids`] notes the trace id of every response; [`direct`] is the
//! direct mode that caches the ring and calls the shards itself.

#![forbid(unsafe_code)]

use std::time::Duration;

pub mod direct;
pub mod replication;
pub mod trace_ids;

pub use bytes::Bytes;
pub use direct::DirectClient;
use futures::StreamExt;
pub use omnishard_common::read_mode::ReadMode;
use omnishard_proto::v1::admin_service_client::AdminServiceClient;
use omnishard_proto::v1::file_service_client::FileServiceClient;
use omnishard_proto::v1::graph_service_client::GraphServiceClient;
use omnishard_proto::v1::kv_service_client::KvServiceClient;
use omnishard_proto::v1::search_service_client::SearchServiceClient;
use omnishard_proto::v1::*;
use tonic::transport::{Channel, Endpoint};
pub use trace_ids::print_trace_ids;

pub use omnishard_proto::v1::{
    ClusterResponse, FileInfo, KeyValue, ShardInfo, UploadHeader, UploadResponse, WriteResult,
};

/// Largest message the client sends or accepts.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gateway could not be reached.
    #[error("cannot connect to the gateway at {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The gateway answered with an error; inspect `code()`.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(tonic::Status),
}

// Not `#[from]`: that would make the status the error's source as well, and
// chained printing (`{:#}`) would repeat the message.
impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Status(status)
    }
}

impl Error {
    /// The gRPC code (`Unavailable` for connection failures).
    pub fn code(&self) -> tonic::Code {
        match self {
            Error::Connect { .. } => tonic::Code::Unavailable,
            Error::Status(s) => s.code(),
        }
    }
}

/// Lower-case, underscore-separated name of a gRPC code (`unavailable`, `not_found`).
pub fn code_name(code: tonic::Code) -> String {
    let name = format!("{code:?}");
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Options of a put.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Time to live; `None` keeps the value forever.
    pub ttl: Option<Duration>,
    /// Compare-and-set: only write if the current version is this (0 = must not exist).
    pub expected_version: Option<u64>,
}

/// One operation of [`Client::write`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: Vec<u8>, value: Vec<u8>, options: PutOptions },
    Delete { key: Vec<u8>, expected_version: Option<u64> },
}

/// One page of [`Client::scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    pub entries: Vec<KeyValue>,
    /// Pass to the next `scan` call; `None` when there are no more keys.
    pub next_cursor: Option<Vec<u8>>,
}

/// The channel every service client of [`Client`] uses: a tonic channel
/// that notes response trace ids.
pub type Transport = trace_ids::TraceIds<Channel>;

/// A connection to one gateway, for one namespace. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    kv: KvServiceClient<Transport>,
    admin: AdminServiceClient<Transport>,
    graph: GraphServiceClient<Transport>,
    search: SearchServiceClient<Transport>,
    files: FileServiceClient<Transport>,
    transport: Transport,
    namespace: String,
}

/// A download in progress: the file's info, then its bytes in order.
pub struct FileReader {
    pub info: FileInfo,
    stream: tonic::Streaming<DownloadResponse>,
}

impl FileReader {
    /// The next piece of the file; `None` at the end.
    pub async fn next_bytes(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            match self.stream.message().await? {
                None => return Ok(None),
                Some(DownloadResponse { part: Some(download_response::Part::Data(data)) }) => return Ok(Some(data)),
                Some(_) => continue,
            }
        }
    }
}

impl Client {
    /// Connects to the gateway at `url` (e.g. `http://127.0.0.1:7400`), namespace `default`.
    pub async fn connect(url: &str) -> Result<Client, Error> {
        let connect_err = |reason: String| Error::Connect { url: url.to_string(), reason };
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| connect_err(e.to_string()))?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            // File transfers: wide windows and large frames (no effect on small calls).
            .initial_stream_window_size(8 << 20)
            .initial_connection_window_size(32 << 20)
            .max_frame_size(1 << 20);
        let channel = endpoint.connect().await.map_err(|e| connect_err(error_chain(&e)))?;
        Ok(Client::from_channel(channel))
    }

    /// Wraps an existing channel.
    pub fn from_channel(channel: Channel) -> Client {
        let channel = trace_ids::TraceIds::new(channel);
        Client {
            transport: channel.clone(),
            kv: KvServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            admin: AdminServiceClient::new(channel.clone()),
            graph: GraphServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            search: SearchServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            files: FileServiceClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            namespace: String::new(),
        }
    }

    /// The trace id of the latest response on this connection (`omnishard admin trace` shows it).
    pub fn last_trace_id(&self) -> Option<String> {
        self.transport.last()
    }

    /// The same connection, working in `namespace`.
    pub fn with_namespace(&self, namespace: impl Into<String>) -> Client {
        Client { namespace: namespace.into(), ..self.clone() }
    }

    /// Reads a key; `NotFound` when it is absent or expired.
    pub async fn get(&self, key: &[u8]) -> Result<KeyValue, Error> {
        self.get_with(key, ReadMode::Linearizable).await
    }

    /// Reads a key with the consistency `mode` asks for.
    /// `ReadMode::Follower { min_seq }` lets any replica of the key's shard
    /// answer once it applied `min_seq`: pass the version your last write
    /// of the key returned to read your own writes from a follower.
    pub async fn get_with(&self, key: &[u8], mode: ReadMode) -> Result<KeyValue, Error> {
        let mut req = tonic::Request::new(GetRequest { namespace: self.namespace.clone(), key: key.to_vec() });
        mode.write(req.metadata_mut());
        let kv = self.kv.clone().get(req).await?.into_inner().kv;
        kv.ok_or_else(|| tonic::Status::internal("gateway answered without a value").into())
    }

    /// Writes a key.
    pub async fn put(&self, key: &[u8], value: &[u8], options: PutOptions) -> Result<WriteResult, Error> {
        let req = PutRequest {
            namespace: self.namespace.clone(),
            key: key.to_vec(),
            value: value.to_vec(),
            ttl: options.ttl.map(duration),
            expected_version: options.expected_version,
        };
        let result = self.kv.clone().put(req).await?.into_inner().result;
        result.ok_or_else(|| tonic::Status::internal("gateway answered without a result").into())
    }

    /// Deletes a key; returns whether it existed.
    pub async fn delete(&self, key: &[u8], expected_version: Option<u64>) -> Result<bool, Error> {
        let req = DeleteRequest { namespace: self.namespace.clone(), key: key.to_vec(), expected_version };
        Ok(self.kv.clone().delete(req).await?.into_inner().deleted)
    }

    /// Reads many keys; `None` for each absent one, in request order. An
    /// answer the gateway cut short at its page byte budget is continued
    /// with the remaining keys until every key is answered.
    pub async fn batch_get(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<KeyValue>>, Error> {
        let mut out = Vec::with_capacity(keys.len());
        while out.len() < keys.len() {
            let req = BatchGetRequest { namespace: self.namespace.clone(), keys: keys[out.len()..].to_vec() };
            let page = self.kv.clone().batch_get(req).await?.into_inner();
            if page.results.is_empty() {
                return Err(tonic::Status::internal("the gateway answered a batch read with no results").into());
            }
            out.extend(page.results.into_iter().map(|r| if r.found { r.kv } else { None }));
        }
        Ok(out)
    }

    /// Applies many puts and deletes (atomic per shard, and as a whole when all keys share a `{tag}`).
    pub async fn write(&self, ops: Vec<Op>) -> Result<Vec<WriteResult>, Error> {
        let ops = ops
            .into_iter()
            .map(|op| WriteOp {
                op: Some(match op {
                    Op::Put { key, value, options } => write_op::Op::Put(PutOp {
                        key,
                        value,
                        ttl: options.ttl.map(duration),
                        expected_version: options.expected_version,
                    }),
                    Op::Delete { key, expected_version } => write_op::Op::Delete(DeleteOp { key, expected_version }),
                }),
            })
            .collect();
        let req = WriteRequest { namespace: self.namespace.clone(), ops };
        Ok(self.kv.clone().write(req).await?.into_inner().results)
    }

    /// One page of keys starting with `prefix`, after `cursor`, in key order.
    pub async fn scan(&self, prefix: &[u8], cursor: Option<&[u8]>, limit: u32) -> Result<ScanPage, Error> {
        let req = ScanRequest {
            namespace: self.namespace.clone(),
            prefix: prefix.to_vec(),
            cursor: cursor.unwrap_or_default().to_vec(),
            limit,
        };
        let page = self.kv.clone().scan(req).await?.into_inner();
        let next_cursor = (!page.next_cursor.is_empty()).then_some(page.next_cursor);
        Ok(ScanPage { entries: page.entries, next_cursor })
    }

    /// The graph API (`GraphService`) on the same connection; requests name
    /// their namespace and graph themselves.
    pub fn graph(&self) -> GraphServiceClient<Transport> {
        self.graph.clone()
    }

    /// The raw `SearchService` client (indexes, documents, queries).
    pub fn search(&self) -> SearchServiceClient<Transport> {
        self.search.clone()
    }

    /// The raw `FileService` client (stat, list, delete, copy, verify).
    pub fn files(&self) -> FileServiceClient<Transport> {
        self.files.clone()
    }

    /// Uploads a file: `header` (its namespace defaults to the client's),
    /// then `data` in pieces of any size up to 16 MiB.
    pub async fn upload(
        &self,
        mut header: UploadHeader,
        data: impl futures::Stream<Item = impl Into<Bytes> + Send + 'static> + Send + 'static,
    ) -> Result<UploadResponse, Error> {
        if header.namespace.is_empty() {
            header.namespace = self.namespace.clone();
        }
        let first = UploadRequest { part: Some(upload_request::Part::Header(header)) };
        let rest = data.map(|d| UploadRequest { part: Some(upload_request::Part::Data(d.into())) });
        let messages = futures::stream::once(async move { first }).chain(rest);
        Ok(self.files.clone().upload(messages).await?.into_inner())
    }

    /// Starts downloading `key` from `offset`, `length` bytes (0 = to the end).
    pub async fn download(&self, key: &[u8], offset: u64, length: u64) -> Result<FileReader, Error> {
        let req = DownloadRequest { namespace: self.namespace.clone(), key: key.to_vec(), offset, length };
        let mut stream = self.files.clone().download(req).await?.into_inner();
        match stream.message().await? {
            Some(DownloadResponse { part: Some(download_response::Part::Info(info)) }) => {
                Ok(FileReader { info, stream })
            }
            _ => Err(Error::Status(tonic::Status::internal("the download did not start with the file's info"))),
        }
    }

    /// Shards, health, ring epoch and key counts.
    pub async fn cluster(&self) -> Result<ClusterResponse, Error> {
        Ok(self.admin.clone().cluster(ClusterRequest {}).await?.into_inner())
    }

    /// Every span of one trace the gateway and the shards still hold, by start time.
    pub async fn trace(&self, trace_id: &str) -> Result<TraceResponse, Error> {
        Ok(self.admin.clone().trace(TraceRequest { trace_id: trace_id.to_string() }).await?.into_inner())
    }

    /// The slowest recent requests of the gateway, slowest first (`limit` 0 = 20).
    pub async fn slow_requests(&self, limit: u32) -> Result<SlowRequestsResponse, Error> {
        Ok(self.admin.clone().slow_requests(SlowRequestsRequest { limit }).await?.into_inner())
    }

    /// Adds the running shard `id` at `addr` to the ring; its ranges then
    /// move to it online (throttled to `rate` bytes/s; 0 = the default).
    pub async fn add_shard(&self, id: &str, addr: &str, rate: u64) -> Result<RebalanceStatusResponse, Error> {
        let req = AddShardRequest { id: id.into(), addr: addr.into(), replicas: Vec::new(), rate_bytes_per_sec: rate };
        Ok(self.admin.clone().add_shard(req).await?.into_inner())
    }

    /// Moves shard `id`'s ranges to the others, then takes it out of the ring.
    pub async fn remove_shard(&self, id: &str, rate: u64) -> Result<RebalanceStatusResponse, Error> {
        let req = RemoveShardRequest { id: id.into(), rate_bytes_per_sec: rate };
        Ok(self.admin.clone().remove_shard(req).await?.into_inner())
    }

    /// What is moving, how fast and how far along (`state` is `done` when nothing moves).
    pub async fn rebalance_status(&self) -> Result<RebalanceStatusResponse, Error> {
        Ok(self.admin.clone().rebalance_status(RebalanceStatusRequest {}).await?.into_inner())
    }

    /// Pauses or resumes the running migration and/or changes its throttle.
    pub async fn rebalance_control(
        &self,
        paused: Option<bool>,
        rate: Option<u64>,
    ) -> Result<RebalanceStatusResponse, Error> {
        let req = RebalanceControlRequest { paused, rate_bytes_per_sec: rate, abort: false };
        Ok(self.admin.clone().rebalance_control(req).await?.into_inner())
    }

    /// Aborts the running migration before its ring switches; it is rolled back.
    pub async fn rebalance_abort(&self) -> Result<RebalanceStatusResponse, Error> {
        let req = RebalanceControlRequest { abort: true, ..Default::default() };
        Ok(self.admin.clone().rebalance_control(req).await?.into_inner())
    }
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        // Transport errors often repeat their cause's text; say it once.
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_code_names_are_snake_case() {
        assert_eq!(code_name(tonic::Code::Unavailable), "unavailable");
        assert_eq!(code_name(tonic::Code::FailedPrecondition), "failed_precondition");
        assert_eq!(code_name(tonic::Code::InvalidArgument), "invalid_argument");
    }
}
