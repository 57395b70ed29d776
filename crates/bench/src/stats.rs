//! Percentiles of pooled samples.

/// Samples sorted ascending, ready for percentiles and CDFs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sorted(Vec<f64>);

impl Sorted {
    /// Sorts `samples`; NaNs (which no timer produces) sort last.
    pub(crate) fn new(mut samples: Vec<f64>) -> Sorted {
        samples.sort_by(f64::total_cmp);
        Sorted(samples)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn values(&self) -> &[f64] {
        &self.0
    }

    /// The nearest-rank percentile `p` (0 to 100): the smallest sample with
    /// at least `p`% of the samples at or below it. It is always a measured
    /// value, never an interpolation. NaN when there are no samples.
    pub(crate) fn percentile(&self, p: f64) -> f64 {
        let n = self.0.len();
        if n == 0 {
            return f64::NAN;
        }
        let rank = (p.clamp(0.0, 100.0) / 100.0 * n as f64).ceil() as usize;
        self.0[rank.clamp(1, n) - 1]
    }

    pub(crate) fn median(&self) -> f64 {
        self.percentile(50.0)
    }

    /// At most about `max_points` points `(value, fraction of samples <=
    /// value)` of the empirical CDF, evenly spaced in rank, always including
    /// the smallest and the largest sample.
    pub(crate) fn cdf(&self, max_points: usize) -> Vec<(f64, f64)> {
        let n = self.0.len();
        if n == 0 {
            return Vec::new();
        }
        let step = n.div_ceil(max_points.max(2) - 1).max(1);
        let mut ranks: Vec<usize> = (0..n).step_by(step).collect();
        if ranks.last() != Some(&(n - 1)) {
            ranks.push(n - 1);
        }
        ranks.into_iter().map(|i| (self.0[i], (i + 1) as f64 / n as f64)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Sorted::new((1..=100).rev().map(f64::from).collect());
        assert_eq!(s.percentile(50.0), 50.0);
        assert_eq!(s.percentile(99.0), 99.0);
        assert_eq!(s.percentile(100.0), 100.0);
        assert_eq!(s.percentile(0.0), 1.0);
        assert_eq!(s.median(), 50.0);
        let small = Sorted::new(vec![3.0, 1.0, 2.0]);
        assert_eq!(small.median(), 2.0);
        assert_eq!(small.percentile(99.0), 3.0);
        assert!(Sorted::default().percentile(50.0).is_nan());
    }

    #[test]
    fn cdf_is_thinned_and_keeps_both_ends() {
        let s = Sorted::new((0..10_000).map(f64::from).collect());
        let cdf = s.cdf(100);
        assert!(cdf.len() <= 101, "{} points", cdf.len());
        assert_eq!(cdf.first(), Some(&(0.0, 1.0 / 10_000.0)));
        assert_eq!(cdf.last(), Some(&(9_999.0, 1.0)));
        assert!(cdf.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        assert_eq!(Sorted::new(vec![5.0]).cdf(100), vec![(5.0, 1.0)]);
    }
}
