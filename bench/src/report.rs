//! The comparison as people read it: a Markdown table per workload (ops/s
//! and p50/p95/p99/p99.9 per operation, per system), the goal ratios, the
//! settings that make the comparison fair, and the same data as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::kv::{YcsbConfig, YcsbResult};

/// Everything one comparison run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// CPU and memory of the machine, in one line.
    pub machine: String,
    pub config: YcsbConfig,
    /// Durability and pool settings of each system, as stated in the report.
    pub settings: Vec<String>,
    pub results: Vec<YcsbResult>,
}

/// One of the goals: omnishard's records per second on a workload over a
/// baseline system's on a (possibly different) workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratio {
    /// A workload label: `A` … `F`, `C-batch100`, `echo`.
    pub workload: String,
    pub system: String,
    pub baseline: String,
    pub baseline_workload: String,
    pub ratio: f64,
    pub goal: f64,
}

impl Ratio {
    pub fn met(&self) -> bool {
        self.ratio >= self.goal
    }
}

/// The throughput goals: (omnishard's workload, baseline system, baseline's
/// workload, floor of omnishard / baseline).
pub const GOALS: &[(&str, &str, &str, f64)] = &[
    ("C", "postgres", "C", 1.0),
    ("A", "postgres", "A", 1.5),
    ("A", "redis (appendfsync always)", "A", 0.5),
    ("C", "echo direct", "echo", 0.7),
    ("C-batch100", "rocksdb (in-process)", "C", 0.25),
];

impl Report {
    /// The goal ratios this report has both sides of.
    pub fn ratios(&self) -> Vec<Ratio> {
        GOALS
            .iter()
            .filter_map(|&(workload, baseline, baseline_workload, goal)| {
                let ours = self.throughput(workload, "omnishard")?;
                let theirs = self.throughput(baseline_workload, baseline)?;
                (theirs > 0.0).then(|| Ratio {
                    workload: workload.into(),
                    system: "omnishard".into(),
                    baseline: baseline.into(),
                    baseline_workload: baseline_workload.into(),
                    ratio: ours / theirs,
                    goal,
                })
            })
            .collect()
    }

    /// Records per second of `system` on the workload labelled `workload`.
    fn throughput(&self, workload: &str, system: &str) -> Option<f64> {
        self.results
            .iter()
            .find(|r| r.system == system && r.workload.split(' ').next() == Some(workload))
            .map(|r| r.records_per_sec)
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let c = &self.config;
        let mut out = String::new();
        let _ = writeln!(out, "Machine: {}.", self.machine);
        let _ = writeln!(
            out,
            "Each workload: {} records of {} bytes, {} clients, {:.0} s warm-up, {:.0} s measured.\n",
            c.records,
            c.value_size,
            c.clients,
            c.warmup.as_secs_f64(),
            c.duration.as_secs_f64()
        );
        for setting in &self.settings {
            let _ = writeln!(out, "* {setting}");
        }
        let mut workload = None;
        for result in &self.results {
            if workload != Some(&result.workload) {
                workload = Some(&result.workload);
                let _ = writeln!(out, "\n**YCSB {}**\n", result.workload);
                let _ = writeln!(out, "| system | records/s | op | p50 ms | p95 ms | p99 ms | p99.9 ms | errors |");
                let _ = writeln!(out, "|--------|----------:|----|-------:|-------:|-------:|---------:|-------:|");
            }
            for (i, op) in result.ops.iter().enumerate() {
                let (system, total) = if i == 0 {
                    (result.system.as_str(), format!("{:.0}", result.records_per_sec))
                } else {
                    ("", String::new())
                };
                let _ = writeln!(
                    out,
                    "| {system} | {total} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
                    op.op, op.p50_ms, op.p95_ms, op.p99_ms, op.p999_ms, op.errors
                );
            }
        }
        let ratios = self.ratios();
        if !ratios.is_empty() {
            let _ = writeln!(out, "\n| goal | ratio | floor | met |\n|------|------:|------:|-----|");
            for r in ratios {
                let _ = writeln!(
                    out,
                    "| {} {} / {} {} | {:.2}× | {:.2}× | {} |",
                    r.system,
                    r.workload,
                    r.baseline,
                    r.baseline_workload,
                    r.ratio,
                    r.goal,
                    if r.met() { "yes" } else { "**no**" }
                );
            }
        }
        out
    }

    /// The report as pretty-printed JSON.
    pub fn json(&self) -> String {
        // Plain data: serialisation cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::stats::OpSummary;

    /// One result with a single `read` row (shared with the chart tests).
    pub(crate) fn result(system: &str, workload: &str, ops_per_sec: f64) -> YcsbResult {
        let op = OpSummary {
            op: "read".into(),
            ops: 100,
            errors: 0,
            ops_per_sec,
            mean_ms: 1.0,
            p50_ms: 0.5,
            p95_ms: 1.5,
            p99_ms: 2.25,
            p999_ms: 4.0,
        };
        YcsbResult {
            system: system.into(),
            workload: workload.into(),
            ops_per_sec,
            records_per_sec: ops_per_sec,
            errors: 0,
            ops: vec![op],
        }
    }

    fn report() -> Report {
        Report {
            machine: "2 vCPUs".into(),
            config: YcsbConfig::default(),
            settings: vec!["postgres: synchronous_commit=on".into()],
            results: vec![
                result("omnishard", "C (100% read, zipfian)", 3000.0),
                result("postgres", "C (100% read, zipfian)", 2000.0),
                result("omnishard", "A (50% read / 50% update, zipfian)", 1000.0),
                result("postgres", "A (50% read / 50% update, zipfian)", 1000.0),
            ],
        }
    }

    #[test]
    fn test_ratios_compare_omnishard_with_each_baseline() {
        let ratios = report().ratios();
        assert_eq!(ratios.len(), 2, "no redis result, so no redis ratio: {ratios:?}");
        assert_eq!((ratios[0].workload.as_str(), ratios[0].ratio, ratios[0].met()), ("C", 1.5, true));
        assert_eq!((ratios[1].workload.as_str(), ratios[1].ratio, ratios[1].met()), ("A", 1.0, false));
    }

    #[test]
    fn test_batched_reads_compare_records_per_second_with_single_gets() {
        let mut report = report();
        let mut batch = result("omnishard", "C-batch100 (reads of 100 records per call, zipfian)", 200.0);
        batch.records_per_sec = 20_000.0;
        report.results.push(batch);
        report.results.push(result("rocksdb (in-process)", "C (100% read, zipfian)", 400_000.0));
        let ratio = report.ratios().into_iter().find(|r| r.workload == "C-batch100").unwrap();
        assert_eq!((ratio.baseline_workload.as_str(), ratio.ratio), ("C", 0.05));
        assert!(!ratio.met());
    }

    #[test]
    fn test_markdown_has_a_table_per_workload_and_the_goals() {
        let md = report().markdown();
        assert!(md.contains("**YCSB C (100% read, zipfian)**"), "{md}");
        assert!(md.contains("| omnishard | 3000 | read | 0.500 | 1.500 | 2.250 | 4.000 | 0 |"), "{md}");
        assert!(md.contains("| omnishard A / postgres A | 1.00× | 1.50× | **no** |"), "{md}");
        assert!(md.contains("* postgres: synchronous_commit=on"), "{md}");
        assert_eq!(md.matches("| system |").count(), 2);
    }

    #[test]
    fn test_json_carries_every_result() {
        let json: serde_json::Value = serde_json::from_str(&report().json()).unwrap();
        assert_eq!(json["results"].as_array().unwrap().len(), 4);
        assert_eq!(json["config"]["records"], 100_000);
        assert_eq!(json["results"][0]["ops"][0]["p99_ms"], 2.25);
    }
}
