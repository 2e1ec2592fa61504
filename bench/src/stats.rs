//! Latency and throughput of a run: one HDR histogram per operation name
//! (nanosecond resolution, 3 significant figures), merged across clients,
//! summarised as ops/s and p50/p95/p99/p99.9.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies of one client (or of all of them, merged).
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    /// Per operation name, in the order first seen; few names, so a list.
    ops: Vec<(&'static str, Histogram<u64>, u64)>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Records one operation that took `elapsed`; failures are counted, not timed.
    pub fn record(&mut self, op: &'static str, elapsed: Duration, ok: bool) {
        let (_, histogram, errors) = self.entry(op);
        if ok {
            // Values beyond the histogram's range only happen past ~30 years.
            let _ = histogram.record(elapsed.as_nanos().max(1) as u64);
        } else {
            *errors += 1;
        }
    }

    /// Adds `other`'s operations to this recorder's.
    pub fn merge(&mut self, other: &Recorder) {
        for (op, histogram, errors) in &other.ops {
            let (_, mine, my_errors) = self.entry(op);
            // Both auto-resize, so adding cannot run out of range.
            let _ = mine.add(histogram);
            *my_errors += errors;
        }
    }

    /// Successful operations recorded, all names together.
    pub fn total_ops(&self) -> u64 {
        self.ops.iter().map(|(_, h, _)| h.len()).sum()
    }

    /// One summary per operation name, over a run that lasted `elapsed`.
    pub fn summarize(&self, elapsed: Duration) -> Vec<OpSummary> {
        self.ops.iter().map(|(op, histogram, errors)| OpSummary::of(op, histogram, *errors, elapsed)).collect()
    }

    fn entry(&mut self, op: &'static str) -> &mut (&'static str, Histogram<u64>, u64) {
        let index = match self.ops.iter().position(|(name, _, _)| *name == op) {
            Some(index) => index,
            None => {
                self.ops.push((op, new_histogram(), 0));
                self.ops.len() - 1
            }
        };
        &mut self.ops[index]
    }
}

fn new_histogram() -> Histogram<u64> {
    // Only fails for more than 5 significant figures.
    let mut histogram = Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures is valid"));
    histogram.auto(true);
    histogram
}

/// What one workload did on one system: throughput and each operation's latencies.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub system: String,
    /// Its label (`A`, `graph-3hop`, `search-term`, …) and, after a space, its description.
    pub workload: String,
    pub ops_per_sec: f64,
    /// Units of work per second: `ops_per_sec` times the records of a batched
    /// read, edges or documents while loading, megabytes of a transfer.
    pub records_per_sec: f64,
    /// What `records_per_sec` counts: `records`, `edges`, `docs`, `queries`, `MB`.
    pub unit: String,
    pub errors: u64,
    pub ops: Vec<OpSummary>,
}

impl Measurement {
    /// A measurement of one kind of operation, recorded by `recorder` over `elapsed`,
    /// where each operation moves `per_op` units.
    pub fn of(
        system: &str,
        workload: String,
        recorder: &Recorder,
        elapsed: Duration,
        per_op: f64,
        unit: &str,
    ) -> Measurement {
        let ops = recorder.summarize(elapsed);
        let ops_per_sec: f64 = ops.iter().map(|o| o.ops_per_sec).sum();
        Measurement {
            system: system.to_string(),
            workload,
            ops_per_sec,
            records_per_sec: ops_per_sec * per_op,
            unit: unit.to_string(),
            errors: ops.iter().map(|o| o.errors).sum(),
            ops,
        }
    }

    /// The label: the workload's first word.
    pub fn label(&self) -> &str {
        self.workload.split(' ').next().unwrap_or_default()
    }
}

/// Throughput and latency percentiles of one operation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpSummary {
    pub op: String,
    pub ops: u64,
    pub errors: u64,
    pub ops_per_sec: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

impl OpSummary {
    fn of(op: &str, histogram: &Histogram<u64>, errors: u64, elapsed: Duration) -> OpSummary {
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1e6;
        let secs = elapsed.as_secs_f64();
        OpSummary {
            op: op.to_string(),
            ops: histogram.len(),
            errors,
            ops_per_sec: if secs > 0.0 { histogram.len() as f64 / secs } else { 0.0 },
            mean_ms: histogram.mean() / 1e6,
            p50_ms: ms(0.50),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b * 0.002
    }

    #[test]
    fn test_percentiles_of_a_known_spread() {
        let mut recorder = Recorder::new();
        for ms in 1..=1000u64 {
            recorder.record("read", Duration::from_millis(ms), true);
        }
        let [read] = recorder.summarize(Duration::from_secs(2)).try_into().unwrap();
        assert_eq!(read.ops, 1000);
        assert!(close(read.ops_per_sec, 500.0));
        assert!(close(read.p50_ms, 500.0), "{read:?}");
        assert!(close(read.p95_ms, 950.0), "{read:?}");
        assert!(close(read.p99_ms, 990.0), "{read:?}");
        assert!(close(read.p999_ms, 999.0), "{read:?}");
        assert!(close(read.mean_ms, 500.5), "{read:?}");
    }

    #[test]
    fn test_merge_adds_clients_and_keeps_operations_apart() {
        let mut a = Recorder::new();
        a.record("read", Duration::from_micros(10), true);
        a.record("update", Duration::from_micros(30), false);
        let mut b = Recorder::new();
        b.record("read", Duration::from_micros(20), true);
        b.record("update", Duration::from_micros(40), true);
        a.merge(&b);
        let summaries = a.summarize(Duration::from_secs(1));
        let names: Vec<&str> = summaries.iter().map(|s| s.op.as_str()).collect();
        assert_eq!(names, ["read", "update"]);
        assert_eq!((summaries[0].ops, summaries[0].errors), (2, 0));
        assert_eq!((summaries[1].ops, summaries[1].errors), (1, 1));
        assert_eq!(a.total_ops(), 3);
        assert!(close(summaries[1].p50_ms, 0.040));
    }

    #[test]
    fn test_sub_microsecond_latencies_keep_their_resolution() {
        let mut recorder = Recorder::new();
        recorder.record("get", Duration::from_nanos(850), true);
        let summary = &recorder.summarize(Duration::from_secs(1))[0];
        assert!(close(summary.p50_ms, 0.000850), "{summary:?}");
    }
}
