//! Printing results for people and for machines (`--json`), and the one
//! error line every failing command ends with.

use std::io::Write;

use base64::Engine;
use serde_json::{json, Value};

/// Prints one clear line naming the cause and exits non-zero.
pub fn fail(err: &anyhow::Error) -> ! {
    let code = match err.downcast_ref::<omnishard_client::Error>() {
        Some(omnishard_client::Error::Status(s)) if s.code() == tonic::Code::NotFound => 3,
        Some(_) => 1,
        None => 1,
    };
    eprintln!("error: {err:#}");
    std::process::exit(code);
}

/// Prints a JSON value on one line.
pub fn print_json(value: &Value) {
    println!("{value}");
}

/// Writes raw bytes to stdout.
pub fn write_raw(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// Text for a key or value: as is when UTF-8, else escaped.
pub fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.escape_ascii().to_string(),
    }
}

/// JSON for bytes: a string when UTF-8, else `{"base64": ...}`.
pub fn bytes_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}

/// JSON for a key-value entry.
pub fn kv_json(kv: &omnishard_client::KeyValue) -> Value {
    json!({
        "key": bytes_json(&kv.key),
        "value": bytes_json(&kv.value),
        "version": kv.version,
        "expires_at_ms": kv.expires_at_ms,
    })
}

/// A progress bar counting bytes; hidden when `hidden` (JSON output, pipes).
pub fn byte_bar(total: Option<u64>, hidden: bool) -> indicatif::ProgressBar {
    if hidden {
        return indicatif::ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(total) => {
            (indicatif::ProgressBar::new(total), "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}")
        }
        None => (indicatif::ProgressBar::no_length(), "{bytes} {binary_bytes_per_sec} {msg}"),
    };
    bar.with_style(
        indicatif::ProgressStyle::with_template(template).unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    )
}
