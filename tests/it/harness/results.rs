//! Reading what a run wrote: its results file, the verdicts in it, and its counts.

use serde_json::Value;
use std::path::Path;

/// Reads a results file.
pub fn results(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The verdict on `metric`.
pub fn verdict<'a>(r: &'a Value, metric: &str) -> &'a Value {
    r["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["metric"] == metric)
        .unwrap_or_else(|| panic!("no verdict for {metric}: {}", r["verdicts"]))
}

/// The status of the verdict on `metric` ("target", "warning", "critical").
pub fn status<'a>(r: &'a Value, metric: &str) -> &'a str {
    verdict(r, metric)["status"]
        .as_str()
        .unwrap_or_else(|| panic!("no status in the verdict on {metric}: {}", r["verdicts"]))
}

/// A count in a results file or the simulator's stats.
pub fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}
