//! Namespaces keep tenants' data apart: every stored key is prefixed by its
//! namespace, so data of different namespaces never collides and a scan never
//! crosses one.

use crate::error::{Error, Result};

/// The namespace used when a request leaves it empty.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Longest accepted namespace name, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 64;

/// Returns the namespace a request means: empty becomes [`DEFAULT_NAMESPACE`].
/// Accepted names are 1–64 characters of `a-z`, `0-9`, `_`, `-`, `.`; that
/// alphabet never contains the 0x00 byte that separates namespace and key on disk.
pub fn resolve(namespace: &str) -> Result<&str> {
    resolve_name("namespace", namespace)
}

/// The same rules for other names that prefix stored keys (graph names):
/// empty becomes `default`.
pub fn resolve_name<'a>(field: &'static str, name: &'a str) -> Result<&'a str> {
    if name.is_empty() {
        return Ok(DEFAULT_NAMESPACE);
    }
    if name.len() > MAX_NAMESPACE_LEN {
        return Err(Error::invalid(field, format!("is {} bytes; the limit is {MAX_NAMESPACE_LEN}", name.len())));
    }
    let ok = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.'));
    if !ok {
        return Err(Error::invalid(field, format!("{name:?} may only contain a-z, 0-9, '_', '-' and '.'")));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_empty_namespace_is_default() {
        assert_eq!(resolve("").unwrap(), "default");
        assert_eq!(resolve("team-a.prod").unwrap(), "team-a.prod");
    }

    #[test]
    fn test_bad_namespaces_are_rejected_with_field_name() {
        for bad in ["Upper", "has space", "nul\0", &"x".repeat(65)] {
            let err = resolve(bad).unwrap_err();
            assert!(err.to_string().starts_with("namespace:"), "{err}");
        }
    }
}
