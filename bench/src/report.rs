//! The comparison as people read it: a Markdown table per workload (ops/s
//! and p50/p95/p99/p99.9 per operation, per system), the goal ratios, the
//! settings that make the comparison fair, and the same data as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::kv::YcsbConfig;
use crate::stats::Measurement;

/// Everything one comparison run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// CPU and memory of the machine, in one line.
    pub machine: String,
    pub config: YcsbConfig,
    /// Durability and pool settings of each system, as stated in the report.
    pub settings: Vec<String>,
    pub results: Vec<Measurement>,
    /// Goals measured some other way than by comparing two results (the
    /// share of identical search rankings).
    pub checks: Vec<Ratio>,
}

/// How a goal compares omnishard with its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Metric {
    /// omnishard's units per second over the baseline's.
    Throughput,
    /// The baseline's median latency of the first operation over omnishard's
    /// (above 1: omnishard answers faster).
    MedianLatency,
}

/// One goal: omnishard on a workload against a baseline system on a
/// (possibly different) workload, and the floor of their ratio.
#[derive(Debug, Clone, Copy)]
pub struct Goal {
    pub workload: &'static str,
    pub baseline: &'static str,
    pub baseline_workload: &'static str,
    pub metric: Metric,
    pub floor: f64,
}

const fn goal(
    workload: &'static str,
    baseline: &'static str,
    baseline_workload: &'static str,
    metric: Metric,
    floor: f64,
) -> Goal {
    Goal { workload, baseline, baseline_workload, metric, floor }
}

/// The goals.
pub const GOALS: &[Goal] = &[
    goal("C", "postgres", "C", Metric::Throughput, 1.0),
    goal("A", "postgres", "A", Metric::Throughput, 1.5),
    goal("A", "redis (appendfsync always)", "A", Metric::Throughput, 0.5),
    goal("C", "echo direct", "echo", Metric::Throughput, 0.7),
    goal("C-batch100", "rocksdb (in-process)", "C", Metric::Throughput, 0.25),
    goal("search-index", "tantivy (in-process)", "search-index", Metric::Throughput, 0.5),
    goal("search-term", "postgres", "search-term", Metric::MedianLatency, 1.0),
    goal("search-phrase", "postgres", "search-phrase", Metric::MedianLatency, 1.0),
    goal("search-boolean", "postgres", "search-boolean", Metric::MedianLatency, 1.0),
    goal("graph-3hop", "postgres", "graph-3hop", Metric::MedianLatency, 1.0),
    goal("graph-3hop", "postgres", "graph-3hop", Metric::MedianLatency, 2.0),
    goal("graph-load", "postgres", "graph-load", Metric::Throughput, 1.0),
];

/// A goal as measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratio {
    /// What is compared, e.g. `omnishard A / postgres A (throughput)`.
    pub goal: String,
    pub ratio: f64,
    pub floor: f64,
}

impl Ratio {
    pub fn met(&self) -> bool {
        self.ratio >= self.floor
    }
}

impl Report {
    /// The goal ratios this report has both sides of, for omnishard and each
    /// of its variants (coalescing off, SDK direct mode), then the checks.
    pub fn ratios(&self) -> Vec<Ratio> {
        let mut variants: Vec<&str> = Vec::new();
        for system in self.results.iter().map(|r| r.system.as_str()).filter(|s| s.starts_with("omnishard")) {
            if !variants.contains(&system) {
                variants.push(system);
            }
        }
        GOALS
            .iter()
            .flat_map(|g| variants.iter().filter_map(move |v| self.measure(g, v)))
            .chain(self.checks.iter().cloned())
            .collect()
    }

    fn measure(&self, goal: &Goal, system: &str) -> Option<Ratio> {
        let ours = self.result(goal.workload, system)?;
        let theirs = self.result(goal.baseline_workload, goal.baseline)?;
        let (ratio, what) = match goal.metric {
            Metric::Throughput => (ours.records_per_sec / theirs.records_per_sec, "throughput"),
            Metric::MedianLatency => (theirs.ops.first()?.p50_ms / ours.ops.first()?.p50_ms, "inverse p50 latency"),
        };
        ratio.is_finite().then(|| Ratio {
            goal: format!("{system} {} / {} {} ({what})", goal.workload, goal.baseline, goal.baseline_workload),
            ratio,
            floor: goal.floor,
        })
    }

    /// The result of `system` on the workload labelled `workload`.
    fn result(&self, workload: &str, system: &str) -> Option<&Measurement> {
        self.results.iter().find(|r| r.system == system && r.label() == workload)
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
                let _ = writeln!(out, "\n**{}**\n", heading(&result.workload));
                let _ =
                    writeln!(out, "| system | {}/s | op | p50 ms | p95 ms | p99 ms | p99.9 ms | errors |", result.unit);
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
                let met = if r.met() { "yes" } else { "**no**" };
                let _ = writeln!(out, "| {} | {:.2}× | {:.2}× | {met} |", r.goal, r.ratio, r.floor);
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

/// A workload's table heading: YCSB's workloads are the capitalised labels
/// (`A`…`F`, `C-batch100`); the other models' labels are lower case.
fn heading(workload: &str) -> String {
    if workload.starts_with(|c: char| c.is_ascii_uppercase()) {
        format!("YCSB {workload}")
    } else {
        workload.to_string()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::stats::OpSummary;

    /// One result with a single `read` row (shared with the chart tests).
    pub(crate) fn result(system: &str, workload: &str, ops_per_sec: f64) -> Measurement {
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
        Measurement {
            system: system.into(),
            workload: workload.into(),
            ops_per_sec,
            records_per_sec: ops_per_sec,
            unit: "records".into(),
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
            checks: vec![],
        }
    }

    #[test]
    fn test_ratios_compare_omnishard_with_each_baseline() {
        let ratios = report().ratios();
        assert_eq!(ratios.len(), 2, "no redis result, so no redis ratio: {ratios:?}");
        assert_eq!(ratios[0].goal, "omnishard C / postgres C (throughput)");
        assert_eq!((ratios[0].ratio, ratios[0].met()), (1.5, true));
        assert_eq!((ratios[1].ratio, ratios[1].floor, ratios[1].met()), (1.0, 1.5, false));
    }

    #[test]
    fn test_batched_reads_compare_records_per_second_with_single_gets() {
        let mut report = report();
        let mut batch = result("omnishard", "C-batch100 (reads of 100 records per call, zipfian)", 200.0);
        batch.records_per_sec = 20_000.0;
        report.results.push(batch);
        report.results.push(result("rocksdb (in-process)", "C (100% read, zipfian)", 400_000.0));
        let ratio = report.ratios().into_iter().find(|r| r.goal.contains("C-batch100")).unwrap();
        assert_eq!(ratio.goal, "omnishard C-batch100 / rocksdb (in-process) C (throughput)");
        assert_eq!(ratio.ratio, 0.05);
        assert!(!ratio.met());
    }

    #[test]
    fn test_markdown_has_a_table_per_workload_and_the_goals() {
        let md = report().markdown();
        assert!(md.contains("**YCSB C (100% read, zipfian)**"), "{md}");
        assert!(md.contains("| omnishard | 3000 | read | 0.500 | 1.500 | 2.250 | 4.000 | 0 |"), "{md}");
        assert!(md.contains("| omnishard A / postgres A (throughput) | 1.00× | 1.50× | **no** |"), "{md}");
        assert!(md.contains("| system | records/s | op |"), "{md}");
        assert!(md.contains("* postgres: synchronous_commit=on"), "{md}");
        assert_eq!(md.matches("| system |").count(), 2);
    }

    #[test]
    fn test_latency_goals_compare_medians_and_checks_are_listed() {
        let mut report = report();
        let mut ours = result("omnishard", "graph-3hop (3-hop traversals, 1 client)", 100.0);
        ours.ops[0].p50_ms = 0.25;
        report.results.push(ours);
        report.results.push(result("postgres", "graph-3hop (3-hop traversals, 1 client)", 100.0));
        report.checks.push(Ratio { goal: "search top 10 identical to tantivy".into(), ratio: 0.99, floor: 1.0 });
        let ratios = report.ratios();
        let graph: Vec<&Ratio> = ratios.iter().filter(|r| r.goal.contains("graph-3hop")).collect();
        // postgres p50 0.5 ms / omnishard 0.25 ms, against floors 1.0 and 2.0.
        assert_eq!(graph.iter().map(|r| (r.ratio, r.met())).collect::<Vec<_>>(), [(2.0, true), (2.0, true)]);
        assert!(graph[0].goal.ends_with("(inverse p50 latency)"), "{}", graph[0].goal);
        let md = report.markdown();
        assert!(md.contains("\n**graph-3hop (3-hop traversals, 1 client)**\n"), "{md}");
        assert!(md.contains("| search top 10 identical to tantivy | 0.99× | 1.00× | **no** |"), "{md}");
    }

    #[test]
    fn test_json_carries_every_result() {
        let json: serde_json::Value = serde_json::from_str(&report().json()).unwrap();
        assert_eq!(json["results"].as_array().unwrap().len(), 4);
        assert_eq!(json["config"]["records"], 100_000);
        assert_eq!(json["results"][0]["ops"][0]["p99_ms"], 2.25);
    }
}
