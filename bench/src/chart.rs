//! PNG charts of a report, so the comparison can be seen at a glance: one
//! panel per workload, one bar per system — throughput in one picture,
//! p99 latency of the slowest operation in another.
//!
//! Text is drawn with a TrueType font read from the system (DejaVu Sans,
//! Debian's `fonts-dejavu-core`), not with fontconfig, so nothing but the
//! font file is needed.

use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::report::Report;
use crate::stats::Measurement;

/// Where the font is looked for, in order.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Writes `throughput.png` and `latency-p99.png` into `dir`; returns their paths.
pub fn render(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, String> {
    register_font()?;
    let groups = by_workload(&report.results);
    let throughput = dir.join("throughput.png");
    draw(&throughput, &groups, "{unit} per second (more is better)", |r| r.records_per_sec)?;
    let latency = dir.join("latency-p99.png");
    draw(&latency, &groups, "p99 ms of the slowest operation (less is better)", |r| {
        r.ops.iter().map(|o| o.p99_ms).fold(0.0, f64::max)
    })?;
    Ok(vec![throughput, latency])
}

fn register_font() -> Result<(), String> {
    static FONT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    FONT.get_or_init(|| {
        let path = FONTS.iter().find(|p| Path::new(p).exists()).ok_or_else(|| {
            format!("no font for the charts: none of {FONTS:?} exists (Debian: apt-get install fonts-dejavu-core)")
        })?;
        let bytes = std::fs::read(path).map_err(|e| format!("reading {path}: {e}"))?;
        // Registered once for the life of the process, as plotters requires.
        plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
            .map_err(|_| format!("{path} is not a usable TrueType font"))
    })
    .clone()
}

/// Results grouped by workload, workloads and systems in report order.
fn by_workload(results: &[Measurement]) -> Vec<(&str, Vec<&Measurement>)> {
    let mut groups: Vec<(&str, Vec<&Measurement>)> = Vec::new();
    for result in results {
        match groups.iter_mut().find(|(w, _)| *w == result.workload) {
            Some((_, members)) => members.push(result),
            None => groups.push((&result.workload, vec![result])),
        }
    }
    groups
}

fn draw(
    path: &Path,
    groups: &[(&str, Vec<&Measurement>)],
    axis: &str,
    value: fn(&Measurement) -> f64,
) -> Result<(), String> {
    let rows = groups.len().div_ceil(2).max(1);
    let root = BitMapBackend::new(path, (1400, 260 * rows as u32)).into_drawing_area();
    let failed = |e: DrawingAreaErrorKind<_>| format!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(failed)?;
    for (area, (workload, results)) in root.split_evenly((rows, 2)).iter().zip(groups) {
        let names: Vec<String> = results.iter().map(|r| r.system.clone()).collect();
        let unit = results.first().map(|r| r.unit.as_str()).unwrap_or_default();
        let axis = axis.replace("{unit}", unit);
        let max = results.iter().map(|r| value(r)).fold(0.0, f64::max).max(1e-9) * 1.2;
        let mut chart = ChartBuilder::on(area)
            .caption(*workload, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(220)
            .build_cartesian_2d(0.0..max, (0..names.len()).into_segmented())
            .map_err(failed)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(names.len())
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .x_labels(6)
            .x_label_formatter(&|v| short(*v))
            .x_desc(axis.as_str())
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(failed)?;
        chart
            .draw_series(results.iter().enumerate().map(|(i, r)| {
                let color = if r.system.starts_with("omnishard") {
                    BLUE.mix(if r.system == "omnishard" { 0.8 } else { 0.5 })
                } else {
                    Palette99::pick(i + 1).mix(0.6)
                };
                let mut bar = Rectangle::new(
                    [(0.0, SegmentValue::Exact(i)), (value(r), SegmentValue::Exact(i + 1))],
                    color.filled(),
                );
                bar.set_margin(4, 4, 0, 0);
                bar
            }))
            .map_err(failed)?;
    }
    root.present().map_err(failed)
}

/// `12.5k`, `1.2M`, `3.5`: axis numbers that do not run into each other.
fn short(v: f64) -> String {
    match v.abs() {
        a if a >= 1e6 => format!("{:.1}M", v / 1e6),
        a if a >= 1e3 => format!("{:.0}k", v / 1e3),
        a if a >= 10.0 => format!("{v:.0}"),
        _ => format!("{v:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::YcsbConfig;
    use crate::report::tests::result;

    #[test]
    fn test_charts_are_png_files_with_a_panel_per_workload() {
        if FONTS.iter().all(|p| !Path::new(p).exists()) {
            eprintln!("skipped: no DejaVu Sans font on this machine");
            return;
        }
        let report = Report {
            machine: "test".into(),
            config: YcsbConfig::default(),
            settings: vec![],
            results: vec![
                result("omnishard", "A", 1000.0),
                result("postgres", "A", 800.0),
                result("omnishard", "C", 3000.0),
                result("postgres", "C", 2000.0),
                result("omnishard", "E", 300.0),
            ],
            checks: vec![],
        };
        let dir = tempfile::tempdir().unwrap();
        let files = render(&report, dir.path()).unwrap();
        assert_eq!(files.len(), 2);
        for file in files {
            let bytes = std::fs::read(&file).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", file.display());
            assert!(bytes.len() > 10_000, "{} is too small to hold the charts", file.display());
        }
        assert_eq!(
            (short(1_686_036.0), short(12_413.0), short(44.0), short(0.25)),
            ("1.7M".into(), "12k".into(), "44".into(), "0.25".into())
        );
        assert_eq!(
            by_workload(&report.results).iter().map(|(w, r)| (*w, r.len())).collect::<Vec<_>>(),
            [("A", 2), ("C", 2), ("E", 1)]
        );
    }
}
