//! The slope fit of memory over time: a flat series, a steady leak, and a warm-up that is not
//! counted as a leak once the ramp is over.

use phone_agent_load::measure::memory::MemorySeries;

fn fit_slope(samples: &[(f64, f64)]) -> (f64, f64) {
    let f = phone_agent_load::measure::slope::fit(samples);
    (f.slope_per_min(), f.r2)
}

#[test]
fn flat_series_has_no_slope_and_no_nan() {
    let flat: Vec<(f64, f64)> = (0..120).map(|s| (s as f64, 512.0)).collect();
    let (slope, r2) = fit_slope(&flat);
    assert_eq!(slope, 0.0);
    assert!(r2.is_finite());
    for few in [&flat[..0], &flat[..1]] {
        let (slope, r2) = fit_slope(few);
        assert!(slope.is_finite() && r2.is_finite());
    }
    // Noise around a flat line: slope near 0, R² low.
    let noisy: Vec<(f64, f64)> = (0..600)
        .map(|s| (s as f64, 300.0 + ((s * 7919) % 13) as f64 * 0.1))
        .collect();
    let (slope, r2) = fit_slope(&noisy);
    assert!(slope.abs() < 0.05 && r2 < 0.1, "{slope} {r2}");
}

#[test]
fn linear_leak_of_10_mb_per_minute_is_measured() {
    // One sample a second for ten minutes, with a little deterministic jitter.
    let leak: Vec<(f64, f64)> = (0..600)
        .map(|s| {
            (
                s as f64,
                200.0 + s as f64 / 6.0 + if s % 2 == 0 { 0.3 } else { -0.3 },
            )
        })
        .collect();
    let (slope, r2) = fit_slope(&leak);
    assert!((slope - 10.0).abs() < 0.1, "slope {slope}");
    assert!(r2 > 0.99, "r2 {r2}");
}

#[test]
fn warm_up_then_flat_has_no_slope_after_the_ramp() {
    // A minute of warm-up climbing 3 MB/s, then flat for half a minute.
    let samples: Vec<[f64; 2]> = (0..90)
        .map(|s| [s as f64, 10.0 + 3.0 * (s.min(60) as f64)])
        .collect();
    let whole: Vec<(f64, f64)> = samples.iter().map(|p| (p[0], p[1])).collect();
    let (whole_slope, _) = fit_slope(&whole);
    assert!(
        whole_slope > 3.0,
        "the whole run looks like a leak: {whole_slope}"
    );
    let s = MemorySeries::from_samples("x".into(), samples, Some(60.0)).unwrap();
    assert!(s.slope_mb_per_min.abs() < 1e-9, "{}", s.slope_mb_per_min);
    assert_eq!(
        (s.initial_mb, s.final_mb, s.growth_mb, s.peak_mb),
        (190.0, 190.0, 0.0, 190.0)
    );
    assert_eq!(s.window_start_s, 60.0);
}
