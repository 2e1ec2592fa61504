//! Size limits that protect memory and latency. The gateway checks them before
//! routing and each shard checks them again, so a misbehaving gateway cannot
//! get an oversized write onto disk either.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Configurable limits on what one request may carry.
///
/// * `max_key_bytes` — longest key (default 4 KiB).
/// * `max_value_bytes` — largest value (default 4 MiB).
/// * `max_batch_ops` — most operations or keys in one batch request (default 10,000).
/// * `max_scan_page` — most entries in one scan page (default 10,000).
/// * `max_page_bytes` — most value bytes in one scan page or batch read
///   (default 64 MiB). A page that reaches it ends early and says so (a
///   scan's cursor, a batch read's `truncated`); it always holds at least
///   one entry, so paging makes progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_batch_ops: usize,
    pub max_scan_page: usize,
    pub max_page_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 4 * 1024,
            max_value_bytes: 4 * 1024 * 1024,
            max_batch_ops: 10_000,
            max_scan_page: 10_000,
            max_page_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// A key must be non-empty and at most `max_key_bytes`.
    pub fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(Error::invalid("key", "must not be empty"));
        }
        if key.len() > self.max_key_bytes {
            return Err(Error::invalid(
                "key",
                format!("is {} bytes; the limit is {} (limits.max_key_bytes)", key.len(), self.max_key_bytes),
            ));
        }
        Ok(())
    }

    /// A key-like field (scan prefix, cursor) may be empty but not longer than a key.
    pub fn check_key_len(&self, field: &'static str, len: usize) -> Result<()> {
        if len > self.max_key_bytes {
            return Err(Error::invalid(
                field,
                format!("is {len} bytes; the limit is {} (limits.max_key_bytes)", self.max_key_bytes),
            ));
        }
        Ok(())
    }

    /// A value may be empty and at most `max_value_bytes`.
    pub fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.max_value_bytes {
            return Err(Error::invalid(
                "value",
                format!("is {} bytes; the limit is {} (limits.max_value_bytes)", value.len(), self.max_value_bytes),
            ));
        }
        Ok(())
    }

    /// A batch must hold at least one and at most `max_batch_ops` entries.
    pub fn check_batch(&self, field: &'static str, len: usize) -> Result<()> {
        if len == 0 {
            return Err(Error::invalid(field, "must not be empty"));
        }
        if len > self.max_batch_ops {
            return Err(Error::invalid(
                field,
                format!("has {len} entries; the limit is {} (limits.max_batch_ops)", self.max_batch_ops),
            ));
        }
        Ok(())
    }

    /// A scan page size of 0 means the default of 100; more than `max_scan_page` is refused.
    pub fn scan_page(&self, requested: u32) -> Result<usize> {
        let requested = requested as usize;
        if requested == 0 {
            return Ok(100.min(self.max_scan_page));
        }
        if requested > self.max_scan_page {
            return Err(Error::invalid(
                "limit",
                format!("is {requested}; the limit is {} (limits.max_scan_page)", self.max_scan_page),
            ));
        }
        Ok(requested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_limits_name_field_and_limit() {
        let limits = Limits::default();
        assert!(limits.check_key(b"k").is_ok());
        assert_eq!(limits.check_key(b"").unwrap_err().to_string(), "key: must not be empty");
        let err = limits.check_key(&vec![b'k'; 4097]).unwrap_err().to_string();
        assert_eq!(err, "key: is 4097 bytes; the limit is 4096 (limits.max_key_bytes)");
        assert!(limits.check_value(&vec![0; 4 << 20]).is_ok());
        assert!(limits.check_value(&vec![0; (4 << 20) + 1]).is_err());
        assert!(limits.check_batch("ops", 10_000).is_ok());
        assert!(limits.check_batch("ops", 10_001).unwrap_err().to_string().contains("10000"));
        assert_eq!(limits.scan_page(0).unwrap(), 100);
        assert!(limits.scan_page(10_001).is_err());
    }
}
