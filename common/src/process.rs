//! Starting an `omnishard` role as a child process and learning its address.
//!
//! Every server role prints `... listening on ADDR` on stdout once it serves,
//! so supervisors (`omnishard dev`, the benchmarks, the test harness) can
//! start roles on port 0 and never race for ports.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// What a role prints before its address.
pub const LISTENING_MARKER: &str = "listening on ";

/// The address in a `... listening on ADDR` line.
pub fn parse_listening(line: &str) -> Option<&str> {
    line.rsplit_once(LISTENING_MARKER).map(|(_, addr)| addr.trim())
}

/// Spawns `command` (killed when its handle drops) and waits up to `timeout`
/// for its listening line. Its stdout keeps being drained afterwards.
pub async fn start_role(mut command: Command, timeout: Duration) -> io::Result<(Child, String)> {
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).kill_on_drop(true).spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| io::Error::other("child has no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    // Earlier lines (the metrics address) come first; the listening line is last.
    let first_address = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(addr) = parse_listening(&line) {
                return Ok(Some(addr.to_string()));
            }
        }
        Ok::<_, io::Error>(None)
    };
    let found = tokio::time::timeout(timeout, first_address).await.map_err(|_| {
        io::Error::new(io::ErrorKind::TimedOut, format!("did not start listening within {timeout:?}"))
    })??;
    let Some(addr) = found else {
        let status = child.wait().await?;
        return Err(io::Error::other(format!("exited ({status}) before listening; see its log")));
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, addr))
}

/// How a child ended, for a supervisor's messages: `code 1`, `signal 9`.
pub fn describe_exit(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("code {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("signal {signal}");
        }
    }
    status.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_listening_line() {
        assert_eq!(parse_listening("omnishard shard s1 listening on 127.0.0.1:4000\n"), Some("127.0.0.1:4000"));
        assert_eq!(parse_listening("starting"), None);
    }

    #[cfg(unix)]
    #[test]
    fn test_describe_exit_names_code_or_signal() {
        use std::os::unix::process::ExitStatusExt;
        // Raw wait statuses: the exit code sits in the second byte, a signal in the low bits.
        assert_eq!(describe_exit(&ExitStatus::from_raw(1 << 8)), "code 1");
        assert_eq!(describe_exit(&ExitStatus::from_raw(9)), "signal 9");
    }
}
