//! `omnishard dev` supervises its children: they exit with it, even when it
//! is killed with SIGKILL, and it restarts a child that crashed.

// Children learn of their parent's death through PR_SET_PDEATHSIG, and the
// tests find them in /proc: both Linux only.
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use omnishard_common::process::parse_listening;
use omnishard_tests::binary;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long `dev` may take to serve (it starts every shard first).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `omnishard dev`, its gateway URL and everything it printed on stderr.
struct Dev {
    child: Child,
    url: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Dev {
    /// Starts `omnishard dev` with two shards on `data` and waits until its gateway serves.
    async fn start(data: &Path) -> Dev {
        let mut child = Command::new(binary().unwrap())
            .args(["dev", "--shards", "2", "--port", "0", "--data"])
            .arg(data)
            .env("RUST_LOG", "warn,openraft=off")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut err_lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let collected = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err_lines.next_line().await {
                collected.lock().unwrap().push(line);
            }
        });
        let mut out_lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = out_lines.next_line().await.unwrap() {
                if let Some(url) = parse_listening(&line) {
                    return Some(url.to_string());
                }
            }
            None
        })
        .await
        .expect("omnishard dev did not serve in time");
        let url = url.unwrap_or_else(|| panic!("omnishard dev exited before serving: {:?}", stderr.lock().unwrap()));
        tokio::spawn(async move { while let Ok(Some(_)) = out_lines.next_line().await {} });
        Dev { child, url, stderr }
    }

    /// Runs the CLI against this gateway: (exit code, stdout, stderr).
    async fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(binary().unwrap())
            .arg("--gateway")
            .arg(&self.url)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Reads `key`, retrying while its shard comes back (up to 15 s).
    async fn get_eventually(&self, key: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (code, out, err) = self.cli(&["kv", "get", key]).await;
            if code == 0 {
                return out;
            }
            assert!(Instant::now() < deadline, "{key} did not read back: {err}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits up to `timeout` for a stderr line containing every one of `parts`.
    async fn wait_for_line(&self, parts: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.stderr.lock().unwrap().iter().find(|l| parts.iter().all(|p| l.contains(p))).cloned();
            if let Some(line) = found {
                return line;
            }
            assert!(Instant::now() < deadline, "no line with {parts:?} in: {:#?}", self.stderr.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn lines_with(&self, part: &str) -> usize {
        self.stderr.lock().unwrap().iter().filter(|l| l.contains(part)).count()
    }

    /// Stops `dev` as Ctrl-C would (SIGTERM) and waits for it.
    async fn stop(mut self) {
        let pid = self.child.id().expect("dev is running");
        kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        assert!(matches!(status, Ok(Ok(_))), "omnishard dev did not stop on SIGTERM");
    }
}

/// The live `omnishard shard` processes whose data folder is under `data`: (pid, shard id).
fn shard_processes(data: &Path) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return found };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        // A zombie has an empty command line: it has exited.
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1));
        let ours = args.get(1).map(String::as_str) == Some("shard")
            && value("--data").is_some_and(|d| Path::new(d).starts_with(data));
        if let (true, Some(id)) = (ours, value("--id")) {
            found.push((pid, id.clone()));
        }
    }
    found.sort();
    found
}

/// Waits up to `timeout` until no shard process of `data` is left; returns what is left.
async fn wait_gone(data: &Path, timeout: Duration) -> Vec<(i32, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = shard_processes(data);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills, on drop, any shard process left under its folder (a failed test's
/// orphans), so the temp folder can go too.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        for (pid, _) in shard_processes(&self.0) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !shard_processes(&self.0).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_dev_children_exit_when_dev_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    let mut dev = Dev::start(dir.path()).await;
    let (code, out, err) = dev.cli(&["kv", "put", "survivor", "still-here"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let children = shard_processes(dir.path());
    let ids: Vec<&str> = children.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), 3, "two shards and the metadata group: {children:?}");
    for id in ["shard-1", "shard-2", "meta"] {
        assert!(ids.contains(&id), "{id} is not running: {children:?}");
    }

    // SIGKILL: dev runs no clean-up at all.
    dev.child.start_kill().unwrap();
    dev.child.wait().await.unwrap();
    let left = wait_gone(dir.path(), Duration::from_secs(10)).await;
    assert!(left.is_empty(), "shards outlived omnishard dev: {left:?}");

    // Nothing holds the RocksDB locks: dev starts again on the same data.
    let dev = Dev::start(dir.path()).await;
    assert_eq!(dev.get_eventually("survivor").await, "still-here");
    dev.stop().await;
    let left = wait_gone(dir.path(), Duration::from_secs(10)).await;
    assert!(left.is_empty(), "shards outlived a stopped omnishard dev: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_dev_restarts_a_crashed_shard() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    let dev = Dev::start(dir.path()).await;
    // Keys until one lands on shard-1 (`put` names the shard).
    let mut key = None;
    for i in 0..64 {
        let k = format!("key-{i}");
        let (code, out, err) = dev.cli(&["kv", "put", &k, &format!("value-{i}")]).await;
        assert_eq!(code, 0, "{out}{err}");
        if out.contains("shard=shard-1") {
            key = Some((k, format!("value-{i}")));
            break;
        }
    }
    let (key, value) = key.expect("some key lives on shard-1");
    let victim = shard_processes(dir.path()).into_iter().find(|(_, id)| id == "shard-1").expect("shard-1 runs");

    kill(Pid::from_raw(victim.0), Signal::SIGKILL).unwrap();
    let line = dev.wait_for_line(&["shard-1 exited (signal 9); restarting in 500ms (restart 1)"], START_TIMEOUT).await;
    assert!(line.starts_with("omnishard dev: "), "{line}");
    dev.wait_for_line(&["shard-1 is back on 127.0.0.1:"], START_TIMEOUT).await;
    assert_eq!(dev.get_eventually(&key).await, value);
    let now = shard_processes(dir.path());
    let restarted = now.iter().find(|(_, id)| id == "shard-1").expect("shard-1 runs again");
    assert_ne!(restarted.0, victim.0, "shard-1 is a new process");

    // Stopping dev stops its children, and none is restarted.
    let restarts = dev.lines_with("restarting in");
    let stderr = dev.stderr.clone();
    dev.stop().await;
    let left = wait_gone(dir.path(), Duration::from_secs(10)).await;
    assert!(left.is_empty(), "shards outlived a stopped omnishard dev: {left:?}");
    let after = stderr.lock().unwrap().iter().filter(|l| l.contains("restarting in")).count();
    assert_eq!(after, restarts, "dev restarted a child while stopping: {:#?}", stderr.lock().unwrap());
}
