//! omnishard with the Rust SDK, through its gateway or (direct mode) straight
//! to the shards: every write is acknowledged once the shard has it in its
//! synced write-ahead log.

use omnishard_client::{Client, DirectClient, Error, KeyValue, Op, PutOptions};

use crate::kv::{DriverResult, KvClient, KvSystem};
use crate::workload::key;

/// The namespace benchmark data lives in.
pub const NAMESPACE: &str = "ycsb";

/// A gateway at `url`; clients share `connections` HTTP/2 connections.
pub struct Omnishard {
    clients: Vec<Client>,
    next: std::sync::atomic::AtomicUsize,
    name: String,
}

impl Omnishard {
    pub async fn connect(url: &str, connections: usize) -> DriverResult<Omnishard> {
        let mut clients = Vec::new();
        for _ in 0..connections.max(1) {
            let client = Client::connect(url).await.map_err(|e| format!("connecting to {url}: {e}"))?;
            clients.push(client.with_namespace(NAMESPACE));
        }
        Ok(Omnishard { clients, next: Default::default(), name: "omnishard".into() })
    }

    /// The same driver, reported under `name` (a variant of the cluster's settings).
    pub fn named(self, name: &str) -> Omnishard {
        Omnishard { name: name.to_string(), ..self }
    }
}

impl KvSystem for Omnishard {
    type Client = Client;

    fn name(&self) -> String {
        self.name.clone()
    }

    async fn client(&self) -> DriverResult<Client> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.clients[n % self.clients.len()].clone())
    }
}

impl KvClient for Client {
    async fn read(&mut self, key: &str) -> DriverResult<bool> {
        present(self.get(key.as_bytes()).await)
    }

    async fn read_batch(&mut self, keys: Vec<String>) -> DriverResult<usize> {
        count_found(self.batch_get(&bytes(keys)).await)
    }

    async fn write(&mut self, key: &str, value: Vec<u8>) -> DriverResult<()> {
        self.put(key.as_bytes(), &value, PutOptions::default()).await.map(drop).map_err(|e| e.to_string())
    }

    async fn write_batch(&mut self, records: Vec<(String, Vec<u8>)>) -> DriverResult<()> {
        let ops = records
            .into_iter()
            .map(|(key, value)| Op::Put { key: key.into_bytes(), value, options: PutOptions::default() })
            .collect();
        Client::write(self, ops).await.map(drop).map_err(|e| e.to_string())
    }

    async fn scan(&mut self, start: u64, len: usize) -> DriverResult<usize> {
        // The cursor continues after a key: the record before `start` makes `start` the first.
        let cursor = start.checked_sub(1).map(|before| omnishard_proto::scan_cursor::after(key(before).as_bytes()));
        let page = Client::scan(self, b"user", cursor.as_deref(), len as u32).await.map_err(|e| e.to_string())?;
        Ok(page.entries.len())
    }
}

/// omnishard with the SDK's direct mode: gets, batch gets and puts go from
/// the client straight to the owning shard (ring cached in the client);
/// loads and scans still go through the gateway. Every client task shares
/// one `DirectClient`, as an application would, so concurrent gets to a
/// shard coalesce into one call.
pub struct OmnishardDirect {
    client: DirectClient,
}

impl OmnishardDirect {
    pub async fn connect(url: &str) -> DriverResult<OmnishardDirect> {
        let client = DirectClient::connect(url).await.map_err(|e| format!("connecting to {url}: {e}"))?;
        Ok(OmnishardDirect { client: client.with_namespace(NAMESPACE) })
    }
}

impl KvSystem for OmnishardDirect {
    type Client = DirectClient;

    fn name(&self) -> String {
        "omnishard (SDK direct mode)".into()
    }

    async fn client(&self) -> DriverResult<DirectClient> {
        Ok(self.client.clone())
    }
}

impl KvClient for DirectClient {
    async fn read(&mut self, key: &str) -> DriverResult<bool> {
        present(self.get(key.as_bytes()).await)
    }

    async fn read_batch(&mut self, keys: Vec<String>) -> DriverResult<usize> {
        count_found(self.batch_get(&bytes(keys)).await)
    }

    async fn write(&mut self, key: &str, value: Vec<u8>) -> DriverResult<()> {
        self.put(key.as_bytes(), &value, PutOptions::default()).await.map(drop).map_err(|e| e.to_string())
    }

    async fn write_batch(&mut self, records: Vec<(String, Vec<u8>)>) -> DriverResult<()> {
        KvClient::write_batch(&mut self.gateway(), records).await
    }

    async fn scan(&mut self, start: u64, len: usize) -> DriverResult<usize> {
        KvClient::scan(&mut self.gateway(), start, len).await
    }
}

/// Whether a get found its key (absent is not an error).
fn present(result: Result<KeyValue, Error>) -> DriverResult<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.code() == tonic::Code::NotFound => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// How many keys of a batch get were found.
fn count_found(result: Result<Vec<Option<KeyValue>>, Error>) -> DriverResult<usize> {
    Ok(result.map_err(|e| e.to_string())?.iter().filter(|v| v.is_some()).count())
}

fn bytes(keys: Vec<String>) -> Vec<Vec<u8>> {
    keys.into_iter().map(String::into_bytes).collect()
}
