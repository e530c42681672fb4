//! Verdicts: each key metric judged target / warning / critical against its band (README "Verdicts").
//!
//! A band's edges belong to the warning range, as the Python suite's table wrote them: p95 latency is
//! "< 200 ms" on target, "200–500 ms" a warning and "> 500 ms" critical, so 200 and 500 are both
//! warnings; for rates, where lower is worse, "> 99 %" is on target and 99 and 95 are warnings.

use crate::config::profile::Band;
use serde::{Deserialize, Serialize};
use std::fmt;

/// How a metric came out. Ordered from best to worst, so `status >= fail_on` fails a run.
#[derive(
    clap::ValueEnum, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash,
)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Never a `--fail-on` value: failing on target would fail every run.
    #[value(skip)]
    Target,
    Warning,
    Critical,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Target => "target",
            Status::Warning => "warning",
            Status::Critical => "critical",
        })
    }
}

/// One judged metric, as the results file's `verdicts` list holds it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Verdict {
    /// What was judged, e.g. "API p95 latency".
    pub metric: String,
    pub value: f64,
    /// "ms", "%", "x", "MB", ...
    pub unit: String,
    pub status: Status,
    /// The bands in words, as the Python suite's table wrote them: "< 200 ms", "200–500 ms", "> 500 ms".
    pub target: String,
    pub warning: String,
    pub critical: String,
    /// What to look at when the metric is off (None on target).
    #[serde(default)]
    pub recommendation: Option<String>,
    /// The results section whose `success` this verdict decides ("api", "websocket",
    /// "ai_pipeline", "memory"), or None for a verdict of its own.
    #[serde(default)]
    pub section: Option<String>,
    /// A figure reported beside the value (e.g. the RTF's p95).
    #[serde(default)]
    pub detail: Option<String>,
    /// The band as numbers, for scripts: where warning and critical start.
    #[serde(default)]
    pub warning_at: Option<f64>,
    #[serde(default)]
    pub critical_at: Option<f64>,
    #[serde(default)]
    pub higher_is_worse: Option<bool>,
}

/// Judges `value` against `band`. A value that is not a number is critical: nothing can vouch
/// for it.
pub fn judge(value: f64, band: Band, higher_is_worse: bool) -> Status {
    if value.is_nan() {
        return Status::Critical;
    }
    let (better_than_warning, within_critical) = if higher_is_worse {
        (value < band.warning, value <= band.critical)
    } else {
        (value > band.warning, value >= band.critical)
    };
    if better_than_warning {
        Status::Target
    } else if within_critical {
        Status::Warning
    } else {
        Status::Critical
    }
}

impl Verdict {
    /// Judges `value` and describes the band in the Python suite's words.
    pub fn judged(
        metric: &str,
        value: f64,
        unit: &str,
        band: Band,
        higher_is_worse: bool,
        section: Option<&str>,
    ) -> Verdict {
        let u = if unit.is_empty() || unit == "x" || unit == "%" {
            unit.to_string()
        } else {
            format!(" {unit}")
        };
        let (w, c) = (num(band.warning), num(band.critical));
        let (target, critical) = if higher_is_worse {
            (format!("< {w}{u}"), format!("> {c}{u}"))
        } else {
            (format!("> {w}{u}"), format!("< {c}{u}"))
        };
        let (lo, hi) = if higher_is_worse { (&w, &c) } else { (&c, &w) };
        Verdict {
            metric: metric.to_string(),
            value,
            unit: unit.to_string(),
            status: judge(value, band, higher_is_worse),
            target,
            warning: format!("{lo}–{hi}{u}"),
            critical,
            recommendation: None,
            section: section.map(str::to_string),
            detail: None,
            warning_at: Some(band.warning),
            critical_at: Some(band.critical),
            higher_is_worse: Some(higher_is_worse),
        }
    }

    /// Sets the recommendation for when the metric is off target.
    pub fn recommend(mut self, warning: &str, critical: &str) -> Verdict {
        self.recommendation = match self.status {
            Status::Target => None,
            Status::Warning => Some(warning.to_string()),
            Status::Critical => Some(critical.to_string()),
        };
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Verdict {
        self.detail = Some(detail.into());
        self
    }

    /// The value with its unit, as the summary and report show it.
    pub fn value_text(&self) -> String {
        match self.unit.as_str() {
            "x" | "%" | "" => format!("{}{}", fmt_value(self.value), self.unit),
            u => format!("{} {u}", fmt_value(self.value)),
        }
    }
}

/// A threshold number without trailing zeros: 200, 0.8, 99.5.
fn num(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A measured value with a sensible number of decimals for its size.
pub fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn band(warning: f64, critical: f64) -> Band {
        Band { warning, critical }
    }

    #[test]
    fn higher_is_worse_edges_are_warnings() {
        let b = band(200.0, 500.0);
        assert_eq!(judge(199.999, b, true), Status::Target);
        assert_eq!(judge(200.0, b, true), Status::Warning);
        assert_eq!(judge(500.0, b, true), Status::Warning);
        assert_eq!(judge(500.001, b, true), Status::Critical);
        assert_eq!(judge(f64::NAN, b, true), Status::Critical);
    }

    #[test]
    fn lower_is_worse_edges_are_warnings() {
        let b = band(99.0, 95.0);
        assert_eq!(judge(99.001, b, false), Status::Target);
        assert_eq!(judge(99.0, b, false), Status::Warning);
        assert_eq!(judge(95.0, b, false), Status::Warning);
        assert_eq!(judge(94.999, b, false), Status::Critical);
    }

    #[test]
    fn judged_verdict_describes_its_band() {
        let v = Verdict::judged(
            "API p95 latency",
            250.0,
            "ms",
            band(200.0, 500.0),
            true,
            Some("api"),
        )
        .recommend("w", "c");
        assert_eq!(v.status, Status::Warning);
        assert_eq!(
            (v.target.as_str(), v.warning.as_str(), v.critical.as_str()),
            ("< 200 ms", "200–500 ms", "> 500 ms")
        );
        assert_eq!(v.recommendation.as_deref(), Some("w"));
        let v = Verdict::judged("API success rate", 99.5, "%", band(99.0, 95.0), false, None);
        assert_eq!(
            (v.target.as_str(), v.warning.as_str(), v.critical.as_str()),
            ("> 99%", "95–99%", "< 95%")
        );
        assert_eq!(v.status, Status::Target);
        assert!(Status::Critical > Status::Warning && Status::Warning > Status::Target);
    }
}
