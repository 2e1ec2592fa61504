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
    gateway_toml: String,
    shard_toml: String,
    env: Vec<(String, String)>,
}

/// A running cluster of separate processes.
pub struct Cluster {
    dir: tempfile::TempDir,
    shards: Vec<ShardProcess>,
    gateway: Child,
    gateway_url: String,
    /// The `--config` file of every shard, if the builder gave one.
    shard_config: Option<PathBuf>,
    /// Environment of every process.
    env: Vec<(String, String)>,
}

struct ShardProcess {
    id: String,
    addr: String,
    child: Option<Child>,
}

impl Cluster {
    /// Starts describing a cluster (default: 3 shards).
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder { shards: 3, gateway_toml: String::new(), shard_toml: String::new(), env: Vec::new() }
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
        self.shards.iter().map(|s| s.id.clone()).collect()
    }

    /// Kills shard `index` with SIGKILL: no shutdown, no flush.
    pub async fn kill_shard(&mut self, index: usize) -> anyhow::Result<()> {
        let shard = &mut self.shards[index];
        if let Some(mut child) = shard.child.take() {
            child.start_kill().context("sending SIGKILL")?;
            child.wait().await?;
        }
        Ok(())
    }

    /// Restarts shard `index` on its old address with its old data.
    pub async fn restart_shard(&mut self, index: usize) -> anyhow::Result<()> {
        let data = self.dir.path().join(&self.shards[index].id);
        let shard = &mut self.shards[index];
        let mut last_err = None;
        // The old port was just released; retry briefly in case the kernel
        // has not let go of it yet.
        let mut args = vec!["shard", "--id", &shard.id, "--listen", &shard.addr];
        let data = data.to_string_lossy();
        args.extend(["--data", &data]);
        let config = self.shard_config.as_ref().map(|p| p.to_string_lossy().into_owned());
        if let Some(config) = &config {
            args.extend(["--config", config]);
        }
        for _ in 0..50 {
            match spawn_with(&args, &self.env).await {
                Ok((child, _)) => {
                    shard.child = Some(child);
                    return Ok(());
                }
                Err(e) => last_err = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("restart failed")))
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
        format!("http://{}", self.shards[index].addr)
    }

    /// Process id of shard `index`, while it runs.
    pub fn shard_pid(&self, index: usize) -> Option<u32> {
        self.shards[index].child.as_ref().and_then(Child::id)
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
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.gateway.start_kill();
        for shard in &mut self.shards {
            if let Some(child) = shard.child.as_mut() {
                let _ = child.start_kill();
            }
        }
    }
}

impl ClusterBuilder {
    /// Number of shard processes.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n;
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

    /// Extra TOML appended to the gateway config (e.g. a `[gateway]` table).
    pub fn gateway_toml(mut self, toml: &str) -> Self {
        self.gateway_toml = toml.to_string();
        self
    }

    /// Starts the shards, writes the topology, starts the gateway.
    pub async fn start(self) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let mut shards = Vec::new();
        let mut topology = String::from("epoch = 1\nvnodes = 256\n");
        let shard_config = (!self.shard_toml.is_empty()).then(|| dir.path().join("shard.toml"));
        if let Some(path) = &shard_config {
            std::fs::write(path, &self.shard_toml)?;
        }
        for i in 1..=self.shards {
            let id = format!("shard-{i}");
            let data = dir.path().join(&id).to_string_lossy().into_owned();
            let mut args = vec!["shard", "--id", &id, "--listen", "127.0.0.1:0", "--data", &data];
            let config = shard_config.as_ref().map(|p| p.to_string_lossy().into_owned());
            if let Some(config) = &config {
                args.extend(["--config", config]);
            }
            let (child, addr) = spawn_with(&args, &self.env).await?;
            topology.push_str(&format!("\n[[shards]]\nid = \"{id}\"\naddr = \"{addr}\"\n"));
            shards.push(ShardProcess { id, addr, child: Some(child) });
        }
        topology.push_str(&self.gateway_toml);
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, topology)?;
        let (gateway, addr) =
            spawn_with(&["gateway", "--config", &config.to_string_lossy(), "--listen", "127.0.0.1:0"], &self.env)
                .await?;
        Ok(Cluster { dir, shards, gateway, gateway_url: format!("http://{addr}"), shard_config, env: self.env })
    }
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
    command.args(args).env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()));
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    start_role(command, START_TIMEOUT).await.with_context(|| format!("starting omnishard {args:?}"))
}
