//! One reported figure: a value, the baseline it is compared with (measured
//! in the same run), the ratio, and the goal it must meet.

use serde_json::{Value, json};

/// How a figure's goal is stated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// `value / baseline` must be at most this.
    RatioAtMost(f64),
    /// `value / baseline` must be at least this.
    RatioAtLeast(f64),
    /// The value itself must be at most this (in the figure's unit).
    AtMost(f64),
    /// The value itself must be at least this (in the figure's unit).
    AtLeast(f64),
}

/// One figure of the report.
#[derive(Debug, Clone)]
pub struct Figure {
    /// The key in the JSON report, e.g. `link_rtt_p50`.
    pub name: &'static str,
    pub value: f64,
    /// e.g. `us`, `msg/s`, `MiB`, `s`, `KiB`.
    pub unit: &'static str,
    /// The baseline's name and value (same unit), where the goal is a ratio.
    pub baseline: Option<(&'static str, f64)>,
    pub goal: Goal,
}

impl Figure {
    /// `value / baseline`, where there is a baseline.
    pub fn ratio(&self) -> Option<f64> {
        self.baseline.map(|(_, b)| if b > 0.0 { self.value / b } else { f64::INFINITY })
    }

    /// Whether the goal is met.
    pub fn ok(&self) -> bool {
        match (self.goal, self.ratio()) {
            (Goal::RatioAtMost(g), Some(r)) => r <= g,
            (Goal::RatioAtLeast(g), Some(r)) => r >= g,
            (Goal::AtMost(g), _) => self.value <= g,
            (Goal::AtLeast(g), _) => self.value >= g,
            (_, None) => false,
        }
    }

    /// The goal as people read it: `<= 2.0x tcp_rtt`, `<= 8 MiB`.
    pub fn goal_text(&self) -> String {
        let base = self.baseline.map_or("?", |(n, _)| n);
        match self.goal {
            Goal::RatioAtMost(g) => format!("<= {g}x {base}"),
            Goal::RatioAtLeast(g) => format!(">= {g}x {base}"),
            Goal::AtMost(g) => format!("<= {g} {}", self.unit),
            Goal::AtLeast(g) => format!(">= {g} {}", self.unit),
        }
    }

    /// The figure's entry in the `--json` report.
    pub fn json(&self) -> Value {
        json!({
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline.map(|(name, value)| json!({"name": name, "value": value})),
            "ratio": self.ratio(),
            "goal": self.goal_text(),
            "ok": self.ok(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_goals() {
        let f = Figure {
            name: "link_rtt_p50",
            value: 30.0,
            unit: "us",
            baseline: Some(("tcp_rtt_p50", 20.0)),
            goal: Goal::RatioAtMost(2.0),
        };
        assert_eq!(f.ratio(), Some(1.5));
        assert!(f.ok());
        assert_eq!(f.goal_text(), "<= 2x tcp_rtt_p50");
        let g = Figure { value: 50.0, ..f.clone() };
        assert!(!g.ok());
        let rss = Figure {
            name: "peerd_rss_idle",
            value: 9.0,
            unit: "MiB",
            baseline: None,
            goal: Goal::AtMost(8.0),
        };
        assert!(!rss.ok());
        assert_eq!(rss.json()["ratio"], Value::Null);
    }
}
