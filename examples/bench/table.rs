//! The output: one [`Row`] per figure (its repetitions and its target), printed as a Markdown
//! table and written as JSON.

use serde_json::{json, Value};
use std::fmt::Write as _;

/// One line of the table: a figure's repetitions and its target.
pub struct Row {
    case: &'static str,
    figure: String,
    unit: &'static str,
    values: Vec<f64>,
    /// `(comparison, target)`: ">=" or "<=".
    target: Option<(&'static str, f64)>,
    note: String,
}

impl Row {
    pub fn new(case: &'static str, figure: impl Into<String>, unit: &'static str, values: Vec<f64>) -> Row {
        Row {
            case,
            figure: figure.into(),
            unit,
            values,
            target: None,
            note: String::new(),
        }
    }

    pub fn target(mut self, cmp: &'static str, value: f64) -> Row {
        self.target = Some((cmp, value));
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }

    pub fn stats(&self) -> Option<(f64, f64, f64)> {
        let mut v: Vec<f64> = self.values.iter().copied().filter(|v| v.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let median = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        Some((v[0], median, v[v.len() - 1]))
    }

    /// The median as a share of the target, and whether it meets it.
    fn verdict(&self) -> Option<(f64, bool)> {
        let (cmp, target) = self.target?;
        let (_, median, _) = self.stats()?;
        Some(match cmp {
            "<=" => (median / target, median <= target),
            _ => (median / target, median >= target),
        })
    }

    pub fn to_json(&self) -> Value {
        let stats = self.stats();
        json!({
            "case": self.case,
            "figure": self.figure,
            "unit": self.unit,
            "values": self.values,
            "min": stats.map(|s| s.0),
            "median": stats.map(|s| s.1),
            "max": stats.map(|s| s.2),
            "target": self.target.map(|(c, t)| format!("{c} {}", fmt_num(t))),
            "vs_target": self.verdict().map(|v| v.0),
            "met": self.verdict().map(|v| v.1),
            "note": self.note,
        })
    }
}

/// A number for the table: grouped thousands for big ones, a few digits for small ones.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        let s = format!("{:.0}", a);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if v < 0.0 {
            out.insert(0, '-');
        }
        out
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The table, with the machine and the notes, in Markdown.
pub fn markdown(rows: &[Row], report: &Value) -> String {
    let mut md = String::new();
    let m = &report["machine"];
    let _ = writeln!(
        md,
        "Machine: {} cores, {}, {} MiB RAM; {}; load average {} at the start, {} at the end; \
         {} repetition(s) of {} s windows{}.\n",
        m["nproc"],
        m["cpu"].as_str().unwrap_or("?"),
        m["mem_mib"],
        m["date"].as_str().unwrap_or("?"),
        report["load_average"]["start"].as_str().unwrap_or("?"),
        report["load_average"]["end"].as_str().unwrap_or("?"),
        report["repetitions"],
        report["window_s"],
        if report["quick"] == true { " (--quick)" } else { "" },
    );
    md.push_str("| case | figure | min | median | max | target | median vs target |\n");
    md.push_str("|---|---|---|---|---|---|---|\n");
    for r in rows {
        let (min, med, max) = match r.stats() {
            Some((a, b, c)) => (fmt_num(a), fmt_num(b), fmt_num(c)),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let unit = if r.unit.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.unit)
        };
        let target = r
            .target
            .map(|(c, t)| format!("{} {}", if c == "<=" { "≤" } else { "≥" }, fmt_num(t)))
            .unwrap_or_default();
        let verdict = match r.verdict() {
            Some((share, met)) => {
                let of = if r.target.is_some_and(|t| t.0 == "<=") {
                    " of the limit"
                } else {
                    ""
                };
                format!(
                    "{:.0} %{of}, {}",
                    share * 100.0,
                    if met { "met" } else { "**missed**" }
                )
            }
            None => String::new(),
        };
        let figure = if r.note.is_empty() {
            format!("{}{unit}", r.figure)
        } else {
            format!("{}{unit} — {}", r.figure, r.note)
        };
        let _ = writeln!(
            md,
            "| {} | {figure} | {min} | {med} | {max} | {target} | {verdict} |",
            r.case
        );
    }
    if let Some(notes) = report["notes"].as_array().filter(|n| !n.is_empty()) {
        md.push('\n');
        for n in notes {
            let _ = writeln!(md, "- {}", n.as_str().unwrap_or_default());
        }
    }
    md
}
