//! Small statistics for reports: mean, nearest-rank percentiles, Wilson score intervals.

use serde::Serialize;

/// Arithmetic mean; `None` for no values.
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Nearest-rank percentile of ascending `sorted` values: the smallest value whose rank `r`
/// (1-based) satisfies `r >= p * n`, for `p` in (0, 1]. The `run_summary` view uses the same
/// definition, so the two always agree.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // The small epsilon keeps 0.95 * 20 at rank 19 despite binary floating point.
    let rank = (p * sorted.len() as f64 - 1e-9).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// Mean, median, 95th percentile and maximum of a set of values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Number of values.
    pub n: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Nearest-rank median.
    pub p50: f64,
    /// Nearest-rank 95th percentile.
    pub p95: f64,
    /// Largest value.
    pub max: f64,
}

impl Spread {
    /// The spread of `values` (any order, non-finite values ignored); `None` when empty.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        Some(Spread {
            n: sorted.len(),
            mean: mean(&sorted)?,
            p50: percentile(&sorted, 0.50)?,
            p95: percentile(&sorted, 0.95)?,
            max: *sorted.last()?,
        })
    }
}

/// A proportion `successes / n` with its 95% Wilson score interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rate {
    /// Successes.
    pub successes: u64,
    /// Trials.
    pub n: u64,
    /// successes / n.
    pub rate: f64,
    /// Lower bound of the 95% Wilson interval.
    pub low: f64,
    /// Upper bound of the 95% Wilson interval.
    pub high: f64,
}

/// z for a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;

impl Rate {
    /// `successes` out of `n`, with the 95% Wilson interval; `None` when `n` is 0.
    pub fn new(successes: u64, n: u64) -> Option<Rate> {
        if n == 0 {
            return None;
        }
        let (low, high) = wilson(successes, n, Z95);
        Some(Rate {
            successes,
            n,
            rate: successes as f64 / n as f64,
            low,
            high,
        })
    }
}

/// Wilson score interval of `successes` out of `n` trials for the normal quantile `z`.
/// Unlike the normal approximation it stays inside [0, 1] and is sensible at 0/n and n/n.
pub fn wilson(successes: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n = n as f64;
    let p = successes as f64 / n;
    let z2 = z * z;
    let denominator = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denominator;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
    // At 0/n and n/n the bounds are exactly 0 and 1; computed, they can be off by an ulp.
    let low = if successes == 0 {
        0.0
    } else {
        (centre - half).max(0.0)
    };
    let high = if successes as f64 >= n {
        1.0
    } else {
        (centre + half).min(1.0)
    };
    (low, high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_on_known_data() {
        let one_to_twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&one_to_twenty, 0.50), Some(10.0));
        assert_eq!(percentile(&one_to_twenty, 0.95), Some(19.0));
        assert_eq!(percentile(&one_to_twenty, 1.0), Some(20.0));
        let one_to_ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&one_to_ten, 0.50), Some(5.0));
        assert_eq!(percentile(&one_to_ten, 0.95), Some(10.0));
        assert_eq!(percentile(&[7.0], 0.95), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
        // Unsorted input with a non-finite value: sorted, NaN dropped.
        let spread = Spread::of(&[300.0, 100.0, f64::NAN, 200.0, 400.0]).unwrap();
        assert_eq!(
            spread,
            Spread {
                n: 4,
                mean: 250.0,
                p50: 200.0,
                p95: 400.0,
                max: 400.0
            }
        );
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn wilson_interval_matches_published_values() {
        // Reference values (z = 1.96): 8/10 -> [0.4902, 0.9433]; 0/10 -> [0, 0.2775];
        // 10/10 -> [0.7225, 1]; 50/100 -> [0.4038, 0.5962].
        let close = |a: f64, b: f64| (a - b).abs() < 5e-4;
        let (low, high) = wilson(8, 10, Z95);
        assert!(close(low, 0.4902) && close(high, 0.9433), "{low} {high}");
        let (low, high) = wilson(0, 10, Z95);
        assert!(low == 0.0 && close(high, 0.2775), "{low} {high}");
        let (low, high) = wilson(10, 10, Z95);
        assert!(close(low, 0.7225) && high == 1.0, "{low} {high}");
        let (low, high) = wilson(50, 100, Z95);
        assert!(close(low, 0.4038) && close(high, 0.5962), "{low} {high}");
        let rate = Rate::new(3, 4).unwrap();
        assert_eq!((rate.successes, rate.n, rate.rate), (3, 4, 0.75));
        assert!(rate.low < 0.75 && rate.high > 0.75);
        assert_eq!(Rate::new(0, 0), None);
    }
}
