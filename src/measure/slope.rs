//! The one trend estimator of the crate: the Theil–Sen line through `(seconds, value)` samples.
//!
//! Memory is the series it judges, and a memory series rises in steps (an allocator taking a
//! megabyte or two at a time, mostly while a run warms up) rather than along a line. A least-squares
//! line follows a late step far more than the flat stretches around it; the Theil–Sen slope, the
//! median of the slopes between every two samples, barely moves for a step or two and still
//! follows a steady leak. The product's memory verdict, the tests and the benchmark all fit with
//! [`fit`], so the three agree on what "growing" means.

/// At most this many samples take part in a fit (evenly thinned beyond): the pairwise slopes
/// grow as the square of the count, and 2,000 samples (half an hour at one a second) already
/// give two million of them. A leak's trend survives thinning; noise is what it averages out.
pub const MAX_FIT_SAMPLES: usize = 2_000;

/// A line through samples: `value = intercept + slope_per_s x seconds`, and how much of the
/// samples' variance it explains.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    pub slope_per_s: f64,
    pub intercept: f64,
    /// 1 − (residual sum of squares / total sum of squares) of this line, clamped to 0..=1: 0 for
    /// a flat series (nothing to explain) or a line that explains nothing.
    pub r2: f64,
}

impl Fit {
    /// The slope per minute (memory is judged in MB per minute).
    pub fn slope_per_min(&self) -> f64 {
        self.slope_per_s * 60.0
    }

    const FLAT: Fit = Fit {
        slope_per_s: 0.0,
        intercept: 0.0,
        r2: 0.0,
    };
}

/// The Theil–Sen fit of `(seconds, value)` samples: the slope is the median of the slopes between
/// every two samples at distinct times, the intercept the median of `value − slope x seconds`.
/// Fewer than two distinct times, or no finite samples, give a flat line.
pub fn fit(samples: &[(f64, f64)]) -> Fit {
    let finite: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let points = thin(&finite, MAX_FIT_SAMPLES);
    let mut slopes: Vec<f64> = Vec::with_capacity(points.len() * points.len().saturating_sub(1) / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            if b.0 != a.0 {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    let Some(slope) = median(&mut slopes) else {
        let mut ys: Vec<f64> = points.iter().map(|p| p.1).collect();
        return Fit {
            intercept: median(&mut ys).unwrap_or(0.0),
            ..Fit::FLAT
        };
    };
    let mut offsets: Vec<f64> = points.iter().map(|(x, y)| y - slope * x).collect();
    let intercept = median(&mut offsets).unwrap_or(0.0);
    let n = points.len() as f64;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let total: f64 = points.iter().map(|p| (p.1 - mean_y).powi(2)).sum();
    let residual: f64 = points
        .iter()
        .map(|(x, y)| (y - intercept - slope * x).powi(2))
        .sum();
    // Relative tolerance: MB readings are large numbers with tiny noise.
    let flat = total <= f64::EPSILON * n * mean_y.abs().max(1.0).powi(2);
    Fit {
        slope_per_s: slope,
        intercept,
        r2: if flat {
            0.0
        } else {
            (1.0 - residual / total).clamp(0.0, 1.0)
        },
    }
}

/// Every k-th sample so that at most `max` remain, always keeping the last.
fn thin(samples: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if samples.len() <= max {
        return samples.to_vec();
    }
    let step = samples.len().div_ceil(max - 1);
    let mut out: Vec<(f64, f64)> = samples.iter().step_by(step).copied().collect();
    if out.last() != samples.last() {
        out.push(*samples.last().expect("more than max samples"));
    }
    out
}

/// The median (the mean of the middle two for an even count); None when empty.
fn median(values: &mut [f64]) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let (_, upper, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    let upper = *upper;
    if n % 2 == 1 {
        return Some(upper);
    }
    let lower = values[..n / 2].iter().copied().fold(f64::MIN, f64::max);
    Some((lower + upper) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_leak_is_followed_exactly() {
        let leak: Vec<(f64, f64)> = (0..100).map(|s| (s as f64, 50.0 + 0.5 * s as f64)).collect();
        let f = fit(&leak);
        assert!((f.slope_per_s - 0.5).abs() < 1e-12 && (f.intercept - 50.0).abs() < 1e-9);
        assert!((f.slope_per_min() - 30.0).abs() < 1e-9);
        assert!(f.r2 > 0.999);
    }

    #[test]
    fn one_late_step_barely_moves_the_slope() {
        // Flat at 100 MB, one 2 MB step at 8 s of a 45 s window: least squares would say ~1 MB/min.
        let steps: Vec<(f64, f64)> = (0..45)
            .map(|s| (s as f64, if s < 8 { 100.0 } else { 102.0 }))
            .collect();
        assert!(fit(&steps).slope_per_min().abs() < 0.01, "{:?}", fit(&steps));
    }

    #[test]
    fn degenerate_series_are_flat_and_never_nan() {
        for samples in [
            vec![],
            vec![(1.0, 5.0)],
            vec![(1.0, 5.0), (1.0, 7.0)],
            vec![(f64::NAN, 1.0), (2.0, f64::INFINITY)],
        ] {
            let f = fit(&samples);
            assert_eq!((f.slope_per_s, f.r2), (0.0, 0.0), "{samples:?}");
            assert!(f.intercept.is_finite());
        }
        let flat: Vec<(f64, f64)> = (0..10).map(|s| (s as f64, 33.0)).collect();
        assert_eq!(
            fit(&flat),
            Fit {
                slope_per_s: 0.0,
                intercept: 33.0,
                r2: 0.0
            }
        );
    }

    #[test]
    fn long_series_are_thinned_but_keep_their_trend() {
        let long: Vec<(f64, f64)> = (0..20_000)
            .map(|s| {
                (
                    s as f64,
                    10.0 + 0.01 * s as f64 + if s % 2 == 0 { 0.3 } else { -0.3 },
                )
            })
            .collect();
        assert!(thin(&long, MAX_FIT_SAMPLES).len() <= MAX_FIT_SAMPLES);
        assert_eq!(thin(&long, MAX_FIT_SAMPLES).last(), long.last());
        assert!((fit(&long).slope_per_s - 0.01).abs() < 1e-4, "{:?}", fit(&long));
    }

    #[test]
    fn the_median_of_an_even_count_is_the_middle_pair_s_mean() {
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut []), None);
    }
}
