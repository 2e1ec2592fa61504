//! Prometheus metrics of one process: the request families every server
//! shares (counts, latency, in-flight, load shed, slow requests), the
//! families of outgoing shard calls, process figures (RSS, open files, CPU,
//! via the `prometheus` crate's process collector) and the memory limit the
//! alert rules compare RSS with. Components add their own gauges and refresh
//! them at scrape time through [`Metrics::on_scrape`].

use std::sync::Mutex;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds: 100 µs to 30 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

type Hook = Box<dyn Fn() + Send + Sync>;

/// Every metric family of this process.
pub struct Metrics {
    pub registry: Registry,
    /// `omnishard_requests_total{service, method, code}`.
    pub requests: IntCounterVec,
    /// `omnishard_request_duration_seconds{service, method}`.
    pub latency: HistogramVec,
    /// `omnishard_requests_in_flight`.
    pub in_flight: IntGauge,
    /// `omnishard_load_shed_total`: requests refused because too many were in flight.
    pub load_shed: IntCounter,
    /// `omnishard_slow_requests_total{service, method}`: requests over the slow threshold.
    pub slow: IntCounterVec,
    /// `omnishard_shard_rpc_duration_seconds{shard, method}`, seen from the caller.
    pub shard_latency: HistogramVec,
    /// `omnishard_shard_rpc_errors_total{shard, method, code}`, seen from the caller.
    pub shard_errors: IntCounterVec,
    memory_limit: IntGauge,
    hooks: Mutex<Vec<Hook>>,
}

impl Metrics {
    /// The families of a process with `role` (`gateway`, `shard`) and `id`,
    /// which become constant labels of every series.
    pub fn new(role: &str, id: &str) -> Metrics {
        let labels = [("role".to_string(), role.to_string()), ("process".to_string(), id.to_string())];
        let registry =
            Registry::new_custom(Some("omnishard".into()), Some(labels.into_iter().collect())).unwrap_or_default();
        let metrics = Metrics {
            requests: counter_vec(
                "requests_total",
                "gRPC requests served, by final status code",
                &["service", "method", "code"],
            ),
            latency: histogram_vec("request_duration_seconds", "Time to serve a gRPC request", &["service", "method"]),
            in_flight: IntGauge::new("requests_in_flight", "gRPC requests being served now")
                .unwrap_or_else(|_| unreachable_metric()),
            load_shed: IntCounter::new("load_shed_total", "Requests refused at once because too many were in flight")
                .unwrap_or_else(|_| unreachable_metric()),
            slow: counter_vec(
                "slow_requests_total",
                "Requests slower than the slow-request threshold",
                &["service", "method"],
            ),
            shard_latency: histogram_vec(
                "shard_rpc_duration_seconds",
                "Time of a call to a shard, from the caller",
                &["shard", "method"],
            ),
            shard_errors: counter_vec(
                "shard_rpc_errors_total",
                "Failed calls to a shard, by status code",
                &["shard", "method", "code"],
            ),
            memory_limit: IntGauge::new(
                "memory_limit_bytes",
                "Memory this process may use: the cgroup limit, else the machine's RAM",
            )
            .unwrap_or_else(|_| unreachable_metric()),
            registry,
            hooks: Mutex::new(Vec::new()),
        };
        metrics.register(metrics.requests.clone());
        metrics.register(metrics.latency.clone());
        metrics.register(metrics.in_flight.clone());
        metrics.register(metrics.load_shed.clone());
        metrics.register(metrics.slow.clone());
        metrics.register(metrics.shard_latency.clone());
        metrics.register(metrics.shard_errors.clone());
        metrics.register(metrics.memory_limit.clone());
        // RSS, open files, CPU: process_* series (Linux only).
        metrics.register(prometheus::process_collector::ProcessCollector::for_self());
        metrics
    }

    /// Registers a collector; a duplicate name is logged, not fatal.
    pub fn register(&self, collector: impl prometheus::core::Collector + 'static) {
        if let Err(e) = self.registry.register(Box::new(collector)) {
            tracing::warn!(error = %e, "metric not registered");
        }
    }

    /// A new gauge family `omnishard_<name>`, registered.
    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let gauge = IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|_| unreachable_metric());
        self.register(gauge.clone());
        gauge
    }

    /// A new gauge `omnishard_<name>`, registered.
    pub fn gauge(&self, name: &str, help: &str) -> IntGauge {
        let gauge = IntGauge::new(name, help).unwrap_or_else(|_| unreachable_metric());
        self.register(gauge.clone());
        gauge
    }

    /// Runs `hook` before every scrape, to refresh gauges read from elsewhere
    /// (RocksDB properties, index sizes, breaker states).
    pub fn on_scrape(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.hooks.lock().unwrap_or_else(|p| p.into_inner()).push(Box::new(hook));
    }

    /// Prometheus text exposition of every family, refreshed.
    pub fn render(&self) -> String {
        for hook in self.hooks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            hook();
        }
        self.memory_limit.set(memory_limit().min(i64::MAX as u64) as i64);
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|_| unreachable_metric())
}

fn histogram_vec(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()), labels)
        .unwrap_or_else(|_| unreachable_metric())
}

/// Metric options are compile-time constants here; an invalid one is a bug.
#[track_caller]
fn unreachable_metric<T>() -> T {
    panic!("invalid metric definition (a bug in omnishard)")
}

/// The cgroup v2 memory limit, else v1's, else the machine's RAM.
pub fn memory_limit() -> u64 {
    let cgroup = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .filter_map(|text| text.trim().parse::<u64>().ok())
        .next();
    let ram = std::fs::read_to_string("/proc/meminfo").ok().and_then(|info| {
        info.lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    });
    match (cgroup, ram) {
        (Some(limit), Some(ram)) => limit.min(ram),
        (Some(limit), None) => limit,
        (None, Some(ram)) => ram,
        (None, None) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_render_has_labels_and_process_figures() {
        let metrics = Metrics::new("shard", "shard-1");
        metrics.requests.with_label_values(&["KvService", "Get", "ok"]).inc();
        let text = metrics.render();
        let line = text.lines().find(|l| l.starts_with("omnishard_requests_total{")).expect(&text);
        for label in
            [r#"code="ok""#, r#"method="Get""#, r#"service="KvService""#, r#"process="shard-1""#, r#"role="shard""#]
        {
            assert!(line.contains(label), "{label} missing: {line}");
        }
        assert!(line.ends_with(" 1"), "{line}");
        assert!(text.contains("omnishard_memory_limit_bytes"), "{text}");
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }

    #[test]
    fn test_memory_limit_is_known_on_linux() {
        assert!(memory_limit() > 0);
    }
}
