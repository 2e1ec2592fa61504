//! Structured logging for every process: JSON lines on stderr when
//! `OMNISHARD_LOG_FORMAT=json`, compact text otherwise; the level comes from
//! `RUST_LOG` (default `info`). Logs carry ids and sizes, never payloads.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber once; later calls are no-ops.
pub fn init_logging(default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let json = std::env::var("OMNISHARD_LOG_FORMAT").map(|f| f == "json").unwrap_or(false);
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // try_init: a second call (tests, embedded dev cluster) must not panic.
    let _ = if json { builder.json().try_init() } else { builder.compact().try_init() };
}
