//! The report: a table for people, one JSON object for scripts, both also
//! written to the output directory beside the latency chart.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Map, Value};

use crate::figure::Figure;

/// Every figure of a run, and what else is worth knowing about it.
#[derive(Debug)]
pub(crate) struct Report {
    quick: bool,
    took: Duration,
    figures: Vec<Figure>,
    notes: Vec<String>,
}

impl Report {
    pub(crate) fn new(
        quick: bool,
        took: Duration,
        figures: Vec<Figure>,
        notes: Vec<String>,
    ) -> Report {
        Report { quick, took, figures, notes }
    }

    /// One object whose keys are the figure names.
    pub(crate) fn json(&self) -> Value {
        let map: Map<String, Value> =
            self.figures.iter().map(|f| (f.name.to_owned(), f.json())).collect();
        Value::Object(map)
    }

    /// The table, then the notes.
    pub(crate) fn table(&self) -> String {
        let header = ["figure", "value", "unit", "baseline", "ratio", "goal", "ok"];
        let rows: Vec<[String; 7]> = self
            .figures
            .iter()
            .map(|f| {
                [
                    f.name.to_owned(),
                    number(f.value),
                    f.unit.to_owned(),
                    f.baseline
                        .map_or_else(|| "-".to_owned(), |(n, v)| format!("{n}={}", number(v))),
                    f.ratio().map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x")),
                    f.goal_text(),
                    if f.ok() { "yes" } else { "NO" }.to_owned(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(widths)
                .enumerate()
                // Numbers right-aligned, words left-aligned.
                .map(|(i, (c, w))| if i == 1 { format!("{c:>w$}") } else { format!("{c:<w$}") })
                .collect();
            format!("{}\n", padded.join("  ").trim_end())
        };
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let mut out = format!(
            "peerchat bench: {} run, {:.0} s, {cpus} CPUs; {} of {} goals met\n\n",
            if self.quick { "quick" } else { "full" },
            self.took.as_secs_f64(),
            self.figures.iter().filter(|f| f.ok()).count(),
            self.figures.len(),
        );
        out.push_str(&line(&header.map(str::to_owned)));
        for row in &rows {
            out.push_str(&line(row));
        }
        if !self.notes.is_empty() {
            out.push_str("\nnotes:\n");
            for note in &self.notes {
                out.push_str(&format!("  {note}\n"));
            }
        }
        out
    }

    /// Writes `report.json`, `report.txt` and `latency-cdf.svg` into `dir`.
    pub(crate) fn write(&self, dir: &Path, svg: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
        };
        write("report.json", &format!("{}\n", serde_json::to_string_pretty(&self.json())?))?;
        write("report.txt", &self.table())?;
        write("latency-cdf.svg", svg)
    }
}

/// About three significant digits; whole numbers from 100 up.
pub(crate) fn number(v: f64) -> String {
    if !v.is_finite() {
        format!("{v}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figure::Goal;

    #[test]
    fn table_and_json_name_every_figure() {
        let figures = vec![
            Figure {
                name: "link_rtt_p50",
                value: 80.0,
                unit: "us",
                baseline: Some(("tcp_rtt_p50", 20.0)),
                goal: Goal::RatioAtMost(2.0),
            },
            Figure {
                name: "peerd_rss_idle",
                value: 6.5,
                unit: "MiB",
                baseline: None,
                goal: Goal::AtMost(8.0),
            },
        ];
        let report = Report::new(true, Duration::from_secs(30), figures, vec!["a note".into()]);
        let json = report.json();
        assert_eq!(json["link_rtt_p50"]["ratio"], 4.0);
        assert_eq!(json["link_rtt_p50"]["ok"], false);
        assert_eq!(json["peerd_rss_idle"]["ok"], true);
        let table = report.table();
        assert!(table.contains("1 of 2 goals met"), "{table}");
        assert!(table.contains("tcp_rtt_p50=20.0  4.00x  <= 2x tcp_rtt_p50  NO"), "{table}");
        assert!(table.contains("a note"));
        assert_eq!(number(123456.7), "123457");
        assert_eq!(number(42.34), "42.3");
        assert_eq!(number(0.5), "0.50");
    }
}
