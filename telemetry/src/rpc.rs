//! Names derived from a gRPC path (`/omnishard.v1.KvService/Get`): the
//! service, the method and the span name. Worked out once per path and
//! shared, because every request and every shard call needs them.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use crate::split_path;

/// Paths remembered at most; callers choose paths, so unknown ones beyond
/// this are named afresh each time instead of growing the cache.
const MAX_CACHED: usize = 1024;

/// The names of one RPC, as spans and metrics label it.
#[derive(Debug)]
pub struct RpcNames {
    pub path: String,
    pub service: String,
    pub method: String,
    /// `<prefix>.<Service>.<Method>`.
    pub span_name: String,
}

/// Per span-name prefix, per path.
type Cache = RwLock<HashMap<&'static str, HashMap<String, Arc<RpcNames>>>>;

/// The names of `path` with spans called `<prefix>.<Service>.<Method>`.
pub fn names(prefix: &'static str, path: &str) -> Arc<RpcNames> {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Cache::default);
    let cached = cache.read().unwrap_or_else(|p| p.into_inner()).get(prefix).and_then(|paths| paths.get(path).cloned());
    if let Some(names) = cached {
        return names;
    }
    let names = Arc::new(build(prefix, path));
    let mut cache = cache.write().unwrap_or_else(|p| p.into_inner());
    let paths = cache.entry(prefix).or_default();
    if paths.len() < MAX_CACHED {
        paths.insert(path.to_string(), names.clone());
    }
    names
}

fn build(prefix: &str, path: &str) -> RpcNames {
    let (service, method) = split_path(path);
    RpcNames {
        path: path.to_string(),
        service: service.to_string(),
        method: method.to_string(),
        span_name: format!("{prefix}.{service}.{method}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names_are_derived_once_and_shared() {
        let first = names("gateway", "/omnishard.v1.KvService/Get");
        assert_eq!(first.span_name, "gateway.KvService.Get");
        assert_eq!((first.service.as_str(), first.method.as_str()), ("KvService", "Get"));
        assert!(Arc::ptr_eq(&first, &names("gateway", "/omnishard.v1.KvService/Get")));
        assert_eq!(names("call", "/omnishard.v1.KvService/Get").span_name, "call.KvService.Get");
    }
}
