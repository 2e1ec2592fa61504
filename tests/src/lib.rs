//! Cluster harness for integration tests: real `omnishard` shard and gateway
//! processes on loopback port 0, data in a temp folder, everything killed
//! and removed on drop.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let cluster = omnishard_tests::Cluster::builder().shards(3).start().await?;
//! let client = cluster.client().await?;
//! client.put(b"k", b"v", Default::default()).await?;
//! # Ok(()) }
//! ```
//!
//! The harness runs the `omnishard` binary next to the test executable
//! (`target/<profile>/omnishard`), or the one named by `OMNISHARD_BIN`; build
//! it first (`cargo build --bin omnishard`; the README's test command does).

#![forbid(unsafe_code)]

pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use omnishard_common::process::start_role;
use tokio::process::{Child, Command};

/// How long a process may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Builder of a test [`Cluster`].
pub struct ClusterBuilder {
    shards: usize,
    replicas: usize,
    partitionable: bool,
    gateway_toml: String,
    shard_toml: String,
    env: Vec<(String, String)>,
    meta: bool,
}

/// A running cluster of separate processes.
pub struct Cluster {
    dir: tempfile::TempDir,
    /// Per shard, its replicas (one unless the builder asked for more).
    groups: Vec<Vec<ShardProcess>>,
    gateway: Child,
    gateway_url: String,
    /// The `--config` file of every shard, if the builder gave one.
    shard_config: Option<PathBuf>,
    /// Environment of every process.
    env: Vec<(String, String)>,
    /// The metadata group's process (shared topology), if the builder asked for it.
    meta: Option<ShardProcess>,
    /// Gateways started besides the first ([`Cluster::start_gateway`]).
    more_gateways: Vec<Child>,
}

struct ShardProcess {
    id: String,
    addr: String,
    child: Option<Child>,
    /// Replica id in its shard's Raft group.
    node_id: u64,
    /// Its data folder.
    data: PathBuf,
    /// The proxy every other process reaches it through, if partitionable.
    proxy: Option<proxy::Proxy>,
}

impl ShardProcess {
    /// The address other processes are given: its proxy's, or its own.
    fn public_addr(&self) -> String {
        self.proxy.as_ref().map(|p| p.addr.clone()).unwrap_or_else(|| self.addr.clone())
    }

    /// The address it listens on (and dials other replicas from).
    fn ip(&self) -> std::net::IpAddr {
        self.addr.parse::<std::net::SocketAddr>().map(|a| a.ip()).unwrap_or([127, 0, 0, 1].into())
    }
}

impl Cluster {
    /// Starts describing a cluster (default: 3 shards).
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            shards: 3,
            replicas: 1,
            partitionable: false,
            gateway_toml: String::new(),
            shard_toml: String::new(),
            env: Vec::new(),
            meta: false,
        }
    }

    /// The gateway's URL.
    pub fn gateway_url(&self) -> &str {
        &self.gateway_url
    }

    /// A client connected to the gateway.
    pub async fn client(&self) -> anyhow::Result<omnishard_client::Client> {
        Ok(omnishard_client::Client::connect(&self.gateway_url).await?)
    }

    /// Shard ids in topology order.
    pub fn shard_ids(&self) -> Vec<String> {
        self.groups.iter().map(|g| g[0].id.clone()).collect()
    }

    /// Kills shard `index` with SIGKILL: no shutdown, no flush.
    pub async fn kill_shard(&mut self, index: usize) -> anyhow::Result<()> {
        self.kill_replica(index, 0).await
    }

    /// Restarts shard `index` on its old address with its old data.
    pub async fn restart_shard(&mut self, index: usize) -> anyhow::Result<()> {
        self.restart_replica(index, 0).await
    }

    /// Kills replica `replica` (0-based) of shard `shard` with SIGKILL.
    pub async fn kill_replica(&mut self, shard: usize, replica: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.groups[shard][replica].child.take() {
            child.start_kill().context("sending SIGKILL")?;
            child.wait().await?;
        }
        Ok(())
    }

    /// Deletes the data folder of a (killed) replica.
    pub fn wipe_replica(&self, shard: usize, replica: usize) -> anyhow::Result<()> {
        let data = &self.groups[shard][replica].data;
        if data.exists() {
            std::fs::remove_dir_all(data)?;
        }
        Ok(())
    }

    /// Restarts a replica on its old address with whatever its folder holds.
    pub async fn restart_replica(&mut self, shard: usize, replica: usize) -> anyhow::Result<()> {
        let replicated = self.groups[shard].len() > 1;
        let process = &mut self.groups[shard][replica];
        let args = shard_args(process, replicated, self.shard_config.as_deref());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut last_err = None;
        // The old port was just released; retry briefly in case the kernel
        // has not let go of it yet.
        for _ in 0..50 {
            match spawn_with(&args, &self.env).await {
                Ok((child, _)) => {
                    process.child = Some(child);
                    return Ok(());
                }
                Err(e) => last_err = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("restart failed")))
    }

    /// The gRPC URL of replica `replica` of shard `shard`.
    pub fn replica_url(&self, shard: usize, replica: usize) -> String {
        format!("http://{}", self.groups[shard][replica].addr)
    }

    /// Replica `replica`'s view of its group (fails while it is down).
    pub async fn raft_status(
        &self,
        shard: usize,
        replica: usize,
    ) -> anyhow::Result<omnishard_proto::v1::RaftStatusResponse> {
        let mut client = raft_client(&self.groups[shard][replica].addr).await?;
        Ok(client.status(omnishard_proto::v1::RaftStatusRequest {}).await?.into_inner())
    }

    /// The index of the replica leading shard `shard`, waiting (up to 30 s)
    /// until a live replica names one and that one agrees.
    pub async fn leader_of(&self, shard: usize) -> anyhow::Result<usize> {
        self.leader_of_excluding(shard, usize::MAX).await
    }

    /// Like [`Cluster::leader_of`], ignoring replica `excluded` (a
    /// partitioned one may still believe it leads).
    pub async fn leader_of_excluding(&self, shard: usize, excluded: usize) -> anyhow::Result<usize> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            for (i, process) in self.groups[shard].iter().enumerate() {
                if process.child.is_none() || i == excluded {
                    continue;
                }
                if let Ok(status) = self.raft_status(shard, i).await {
                    if status.role == "leader" {
                        return Ok(i);
                    }
                }
            }
            if std::time::Instant::now() > deadline {
                bail!("shard {shard} has no leader after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks the leader of `shard` to hand leadership to replica `to`, again
    /// if another replica won the election (up to 5 attempts).
    pub async fn transfer_leader(&self, shard: usize, to: usize) -> anyhow::Result<()> {
        let node_id = self.groups[shard][to].node_id;
        let mut last = None;
        for _ in 0..5 {
            let leader = self.leader_of(shard).await?;
            if leader == to {
                return Ok(());
            }
            let mut client = raft_client(&self.groups[shard][leader].addr).await?;
            match client.transfer_leader(omnishard_proto::v1::TransferLeaderRequest { node_id }).await {
                Ok(_) => return Ok(()),
                Err(status) if status.code() == tonic::Code::Aborted => last = Some(status),
                Err(status) => return Err(status.into()),
            }
        }
        Err(last.map(anyhow::Error::from).unwrap_or_else(|| anyhow::anyhow!("transfer failed")))
    }

    /// Starts a new replica of `shard` that the gateway's topology does not
    /// list and adds it to the group online (as `omnishard admin replica
    /// add` does); returns its index.
    pub async fn add_replica(&mut self, shard: usize) -> anyhow::Result<usize> {
        let id = self.groups[shard][0].id.clone();
        let node_id = self.groups[shard].iter().map(|p| p.node_id).max().unwrap_or(0) + 1;
        let data = self.dir.path().join(format!("{id}-r{node_id}"));
        let mut process = ShardProcess { id, addr: "127.0.0.1:0".into(), child: None, node_id, data, proxy: None };
        let args = shard_args(&process, true, self.shard_config.as_deref());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (child, addr) = spawn_with(&args, &self.env).await?;
        process.child = Some(child);
        process.addr = addr;
        let leader = self.leader_of(shard).await?;
        let mut client = raft_client(&self.groups[shard][leader].addr).await?;
        client.add_replica(omnishard_proto::v1::AddReplicaRequest { node_id, addr: process.public_addr() }).await?;
        self.groups[shard].push(process);
        Ok(self.groups[shard].len() - 1)
    }

    /// Removes replica `replica` from the group of `shard` (as `omnishard
    /// admin replica remove` does); the process keeps running.
    pub async fn remove_replica(&self, shard: usize, replica: usize) -> anyhow::Result<()> {
        let node_id = self.groups[shard][replica].node_id;
        let leader = self.leader_of(shard).await?;
        let mut client = raft_client(&self.groups[shard][leader].addr).await?;
        client.remove_replica(omnishard_proto::v1::RemoveReplicaRequest { node_id }).await?;
        Ok(())
    }

    /// Cuts replica `replica` of `shard` off the network (built
    /// [`ClusterBuilder::partitionable`]): nothing reaches it, and it reaches
    /// no other replica. Its own address still answers (for direct calls).
    pub fn partition_replica(&self, shard: usize, replica: usize) {
        let isolated = &self.groups[shard][replica];
        if let Some(proxy) = &isolated.proxy {
            proxy.isolate();
        }
        for other in &self.groups[shard] {
            if let Some(proxy) = &other.proxy {
                proxy.block(isolated.ip());
            }
        }
    }

    /// Ends every partition of `shard`.
    pub fn heal(&self, shard: usize) {
        for process in &self.groups[shard] {
            if let Some(proxy) = &process.proxy {
                proxy.heal();
            }
        }
    }

    /// How many replicas each shard has.
    pub fn replica_count(&self) -> usize {
        self.groups[0].len()
    }

    /// Runs the CLI against this cluster's gateway and returns (exit code, stdout, stderr).
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        let out = Command::new(binary()?)
            .arg("--gateway")
            .arg(&self.gateway_url)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Process id of the gateway.
    pub fn gateway_pid(&self) -> Option<u32> {
        self.gateway.id()
    }

    /// The gRPC URL of shard `index` (for tests that talk to a shard directly).
    pub fn shard_url(&self, index: usize) -> String {
        self.replica_url(index, 0)
    }

    /// Process id of shard `index`, while it runs.
    pub fn shard_pid(&self, index: usize) -> Option<u32> {
        self.groups[index][0].child.as_ref().and_then(Child::id)
    }

    /// Kills the gateway with SIGKILL and starts a new one on the same
    /// config (a new port: see [`Cluster::gateway_url`]).
    pub async fn restart_gateway(&mut self) -> anyhow::Result<()> {
        self.gateway.start_kill().context("sending SIGKILL")?;
        self.gateway.wait().await?;
        let config = self.dir.path().join("gateway.toml");
        let (gateway, addr) =
            spawn_with(&["gateway", "--config", &config.to_string_lossy(), "--listen", "127.0.0.1:0"], &self.env)
                .await?;
        self.gateway = gateway;
        self.gateway_url = format!("http://{addr}");
        Ok(())
    }

    /// The temp folder holding every shard's data.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts a new shard process `id` (not yet in the ring: add it with
    /// `admin add-shard`); returns its index and address.
    pub async fn start_shard(&mut self, id: &str) -> anyhow::Result<(usize, String)> {
        let mut process = ShardProcess {
            id: id.to_string(),
            addr: "127.0.0.1:0".into(),
            child: None,
            node_id: 1,
            data: self.dir.path().join(id),
            proxy: None,
        };
        let args = shard_args(&process, false, self.shard_config.as_deref());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (child, addr) = spawn_with(&args, &self.env).await?;
        process.child = Some(child);
        process.addr = addr.clone();
        self.groups.push(vec![process]);
        Ok((self.groups.len() - 1, addr))
    }

    /// Index of shard `id` (as `start` or [`Cluster::start_shard`] named it).
    pub fn shard_index(&self, id: &str) -> Option<usize> {
        self.groups.iter().position(|g| g[0].id == id)
    }

    /// Starts one more gateway on the same config; returns its URL.
    pub async fn start_gateway(&mut self) -> anyhow::Result<String> {
        let config = self.dir.path().join("gateway.toml");
        let (gateway, addr) =
            spawn_with(&["gateway", "--config", &config.to_string_lossy(), "--listen", "127.0.0.1:0"], &self.env)
                .await?;
        self.more_gateways.push(gateway);
        Ok(format!("http://{addr}"))
    }

    /// Kills the metadata group's process with SIGKILL.
    pub async fn kill_meta(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.meta.as_mut().and_then(|m| m.child.take()) {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.gateway.start_kill();
        for gateway in &mut self.more_gateways {
            let _ = gateway.start_kill();
        }
        if let Some(child) = self.meta.as_mut().and_then(|m| m.child.as_mut()) {
            let _ = child.start_kill();
        }
        for shard in self.groups.iter_mut().flatten() {
            if let Some(child) = shard.child.as_mut() {
                let _ = child.start_kill();
            }
        }
    }
}

impl ClusterBuilder {
    /// Number of shards.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n;
        self
    }

    /// Puts a TCP proxy in front of every replica (replicas listen on
    /// addresses of their own, 127.0.X.Y), so tests can cut the network:
    /// [`Cluster::partition_replica`].
    pub fn partitionable(mut self) -> Self {
        self.partitionable = true;
        self
    }

    /// Replicas per shard, each its own process (default 1).
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n.max(1);
        self
    }

    /// TOML every shard is started with (`--config`), e.g. a `[search]` table.
    pub fn shard_toml(mut self, toml: &str) -> Self {
        self.shard_toml = toml.to_string();
        self
    }

    /// Sets an environment variable of every process (e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Runs a metadata group (one shard process, id `meta`) and gives the
    /// gateway its `[meta]` table: the topology becomes shared and shards
    /// can be added and removed online.
    pub fn with_meta(mut self) -> Self {
        self.meta = true;
        self
    }

    /// Extra TOML appended to the gateway config (e.g. a `[gateway]` table).
    pub fn gateway_toml(mut self, toml: &str) -> Self {
        self.gateway_toml = toml.to_string();
        self
    }

    /// Starts the shards, writes the topology, starts the gateway.
    pub async fn start(self) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let mut groups = Vec::new();
        let mut topology = String::from("epoch = 1\nvnodes = 256\n");
        let shard_config = (!self.shard_toml.is_empty()).then(|| dir.path().join("shard.toml"));
        if let Some(path) = &shard_config {
            std::fs::write(path, &self.shard_toml)?;
        }
        let replicated = self.replicas > 1;
        for i in 1..=self.shards {
            let id = format!("shard-{i}");
            let mut group = Vec::new();
            for node_id in 1..=self.replicas as u64 {
                let data = if replicated { dir.path().join(format!("{id}-r{node_id}")) } else { dir.path().join(&id) };
                let listen = if self.partitionable {
                    format!("127.0.{}.{}:0", 10 + i, 10 + node_id)
                } else {
                    "127.0.0.1:0".into()
                };
                let mut process =
                    ShardProcess { id: id.clone(), addr: listen, child: None, node_id, data, proxy: None };
                let args = shard_args(&process, replicated, shard_config.as_deref());
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let (child, addr) = spawn_with(&args, &self.env).await?;
                process.child = Some(child);
                if self.partitionable {
                    process.proxy = Some(proxy::Proxy::start(addr.clone()).await?);
                }
                process.addr = addr;
                group.push(process);
            }
            if replicated {
                let addrs: Vec<String> = group.iter().map(ShardProcess::public_addr).collect();
                omnishard_client::replication::form_group(&addrs, START_TIMEOUT)
                    .await
                    .with_context(|| format!("forming {id}"))?;
            }
            let replicas: Vec<String> = group.iter().map(|p| format!("\"{}\"", p.public_addr())).collect();
            topology.push_str(&format!("\n[[shards]]\nid = \"{id}\"\naddr = \"{}\"\n", group[0].public_addr()));
            if replicated {
                topology.push_str(&format!("replicas = [{}]\n", replicas.join(", ")));
            }
            groups.push(group);
        }
        let meta = if self.meta {
            let mut process = ShardProcess {
                id: "meta".into(),
                addr: "127.0.0.1:0".into(),
                child: None,
                node_id: 1,
                data: dir.path().join("meta"),
                proxy: None,
            };
            let args = shard_args(&process, false, None);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (child, addr) = spawn_with(&args, &self.env).await?;
            process.child = Some(child);
            topology.push_str(&format!("\n[meta]\nid = \"meta\"\naddr = \"{addr}\"\n"));
            process.addr = addr;
            Some(process)
        } else {
            None
        };
        topology.push_str(&self.gateway_toml);
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, topology)?;
        let (gateway, addr) =
            spawn_with(&["gateway", "--config", &config.to_string_lossy(), "--listen", "127.0.0.1:0"], &self.env)
                .await?;
        Ok(Cluster {
            dir,
            groups,
            gateway,
            gateway_url: format!("http://{addr}"),
            shard_config,
            env: self.env,
            meta,
            more_gateways: Vec::new(),
        })
    }
}

/// The command line of a shard process.
fn shard_args(process: &ShardProcess, replicated: bool, config: Option<&Path>) -> Vec<String> {
    let mut args: Vec<String> =
        ["shard", "--id", &process.id, "--listen", &process.addr, "--data"].iter().map(|s| s.to_string()).collect();
    args.push(process.data.to_string_lossy().into_owned());
    if let Some(config) = config {
        args.extend(["--config".into(), config.to_string_lossy().into_owned()]);
    }
    if replicated {
        // A replica of a group waits for the group (formed by `form_group`).
        args.extend(["--replica-id".into(), process.node_id.to_string(), "--join".into()]);
    }
    args
}

async fn raft_client(
    addr: &str,
) -> anyhow::Result<omnishard_proto::v1::shard_raft_service_client::ShardRaftServiceClient<tonic::transport::Channel>> {
    Ok(omnishard_proto::v1::shard_raft_service_client::ShardRaftServiceClient::connect(format!("http://{addr}"))
        .await?)
}

/// The `omnishard` binary under test.
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("OMNISHARD_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> → target/<profile>/omnishard
    let candidate = exe.parent().and_then(Path::parent).map(|dir| dir.join("omnishard"));
    match candidate {
        Some(path) if path.exists() => Ok(path),
        _ => bail!(
            "omnishard binary not found next to {}; run `cargo build --bin omnishard` first or set OMNISHARD_BIN",
            exe.display()
        ),
    }
}

/// Starts `omnishard ARGS...` and waits for its address.
pub async fn spawn(args: &[&str]) -> anyhow::Result<(Child, String)> {
    spawn_with(args, &[]).await
}

/// Starts `omnishard ARGS...` with extra environment variables and waits for its address.
pub async fn spawn_with(args: &[&str], env: &[(String, String)]) -> anyhow::Result<(Child, String)> {
    let mut command = Command::new(binary()?);
    command.args(args).env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,openraft=error".into()));
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    start_role(command, START_TIMEOUT).await.with_context(|| format!("starting omnishard {args:?}"))
}
