//! `latency-cdf.svg`: the round-trip-time CDFs of the link and its
//! baselines on one log-x chart, written by hand (a few dozen lines of SVG
//! need no plotting library). The tails are where a p99 goal is lost, so
//! the whole distribution is drawn, not just the two percentiles.

use std::fmt::Write as _;

use crate::stats::Sorted;

const WIDTH: f64 = 860.0;
/// The plot area's height; the document grows below it with the legend.
const PLOT_H: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 45.0;
const TOP: f64 = 50.0;
/// From the plot's bottom edge to the first legend line (tick labels and
/// the axis title go in between).
const BELOW: f64 = 70.0;
const LEGEND_LINE: f64 = 18.0;
/// Points per polyline: enough for a smooth curve, few enough for a small
/// file.
const POINTS: usize = 600;
const COLOURS: [&str; 6] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

/// One curve: a name and its samples in microseconds.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) samples: Sorted,
}

/// A log-x, linear-y mapping onto the plot area.
#[derive(Debug, Clone, Copy)]
struct Axes {
    /// log10 of the first and last decade on the x axis.
    lo: f64,
    hi: f64,
}

impl Axes {
    /// Whole decades around every positive sample.
    fn around(series: &[&Series]) -> Axes {
        let all = || series.iter().flat_map(|s| s.samples.values()).copied().filter(|v| *v > 0.0);
        let min = all().fold(f64::INFINITY, f64::min);
        let max = all().fold(0.0, f64::max);
        if min.is_finite() && max > 0.0 {
            let lo = min.log10().floor();
            Axes { lo, hi: max.log10().ceil().max(lo + 1.0) }
        } else {
            Axes { lo: 0.0, hi: 1.0 }
        }
    }

    fn x(self, us: f64) -> f64 {
        let plot_w = WIDTH - LEFT - RIGHT;
        LEFT + (us.max(10f64.powf(self.lo)).log10() - self.lo) / (self.hi - self.lo) * plot_w
    }

    fn y(self, fraction: f64) -> f64 {
        TOP + (1.0 - fraction) * PLOT_H
    }
}

/// The SVG document for `series` (empty series are left out).
pub(crate) fn latency_cdf(series: &[Series]) -> String {
    let drawn: Vec<&Series> = series.iter().filter(|s| s.samples.len() > 0).collect();
    let axes = Axes::around(&drawn);
    let height = TOP + PLOT_H + BELOW + LEGEND_LINE * drawn.len() as f64 + 10.0;
    let mut svg = String::new();
    // Writing to a String cannot fail, hence the ignored results.
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">Round-trip time, cumulative distribution</text>"#,
        WIDTH / 2.0
    );
    grid(&mut svg, axes);
    for (i, s) in drawn.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = s
            .samples
            .cdf(POINTS)
            .into_iter()
            .map(|(us, f)| format!("{:.1},{:.1}", axes.x(us), axes.y(f)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{}"/>"#,
            points.join(" ")
        );
        // The legend, below the plot, where it hides no curve.
        let ly = TOP + PLOT_H + BELOW + LEGEND_LINE * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{LEFT}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"/>"#,
            LEFT + 24.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}">{} — p50 {}, p99 {}, n={}</text>"#,
            LEFT + 30.0,
            ly + 4.0,
            escape(&s.name),
            micros_label(s.samples.median()),
            micros_label(s.samples.percentile(99.0)),
            s.samples.len()
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The frame, the grid, the tick labels and the axis titles.
fn grid(svg: &mut String, axes: Axes) {
    let (left, right, top, bottom) = (LEFT, WIDTH - RIGHT, TOP, TOP + PLOT_H);
    // Decades labelled, 2..9 of each in light grey.
    let first = axes.lo as i32;
    let decades = (axes.hi - axes.lo).round() as i32;
    for d in 0..=decades {
        let decade = 10f64.powi(first + d);
        let gx = axes.x(decade);
        let _ = writeln!(
            svg,
            r##"<line x1="{gx:.1}" y1="{top}" x2="{gx:.1}" y2="{bottom}" stroke="#bbb"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{gx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            bottom + 18.0,
            micros_label(decade)
        );
        for m in (2..10).filter(|_| d < decades) {
            let mx = axes.x(decade * f64::from(m));
            let _ = writeln!(
                svg,
                r##"<line x1="{mx:.1}" y1="{top}" x2="{mx:.1}" y2="{bottom}" stroke="#eee"/>"##
            );
        }
    }
    for q in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let gy = axes.y(q);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{gy:.1}" x2="{right}" y2="{gy:.1}" stroke="#ccc"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{q}</text>"#,
            left - 6.0,
            gy + 4.0
        );
    }
    // The p99 line, where the tail goals are read, labelled on the right.
    let p99 = axes.y(0.99);
    let _ = writeln!(
        svg,
        r##"<line x1="{left}" y1="{p99:.1}" x2="{right}" y2="{p99:.1}" stroke="#999" stroke-dasharray="4 3"/>"##
    );
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" fill="#666">p99</text>"##,
        right + 5.0,
        p99 + 8.0
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{}" height="{PLOT_H}" fill="none" stroke="#333"/>"##,
        right - left
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">round-trip time (log scale)</text>"#,
        (left + right) / 2.0,
        bottom + 40.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">fraction of samples at or below</text>"#,
        (top + bottom) / 2.0
    );
}

/// `2.5 µs`, `850 µs`, `1.2 ms`, `10 ms`: at most three significant
/// digits, no trailing zeros.
fn micros_label(us: f64) -> String {
    let (value, unit) = if us >= 1000.0 { (us / 1000.0, "ms") } else { (us, "µs") };
    let number = if value >= 10.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}").trim_end_matches('0').trim_end_matches('.').to_owned()
    };
    format!("{number} {unit}")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, samples: Vec<f64>) -> Series {
        Series { name: name.to_owned(), samples: Sorted::new(samples) }
    }

    #[test]
    fn draws_one_polyline_per_series() {
        let svg = latency_cdf(&[
            series("link_rtt", (1..=1000).map(|i| 50.0 + f64::from(i)).collect()),
            series("tcp_rtt", (1..=1000).map(|i| 10.0 + f64::from(i) / 100.0).collect()),
            series("empty", Vec::new()),
        ]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("link_rtt — p50 550 µs, p99 1.04 ms, n=1000"), "{svg}");
        assert!(svg.contains(">10 µs<") && svg.contains(">10 ms<"), "decades 10 µs to 10 ms");
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert!(!svg.contains("empty"));
    }

    #[test]
    fn no_samples_still_make_a_document() {
        let svg = latency_cdf(&[]);
        assert!(svg.contains("</svg>") && !svg.contains("<polyline"));
    }

    #[test]
    fn labels() {
        assert_eq!(micros_label(1.0), "1 µs");
        assert_eq!(micros_label(2.5), "2.5 µs");
        assert_eq!(micros_label(850.0), "850 µs");
        assert_eq!(micros_label(1000.0), "1 ms");
        assert_eq!(micros_label(1200.0), "1.2 ms");
        assert_eq!(micros_label(100_000.0), "100 ms");
    }
}
