//! The fuzzers' findings as regression tests (issue 7, "Bad input"): every input kept under
//! `fuzz/regressions/<target>/` (each crash a fuzz target found, minimised) and the seed corpora
//! under `fuzz/seeds/<target>/` replay through the fuzz targets' own code (`fuzz/harness.rs`),
//! and none may panic. A plain `cargo test`: no cargo-fuzz, no nightly. To add a finding, copy
//! the minimised crash file into `fuzz/regressions/<target>/` (see `fuzz/README.md`).

#[path = "../fuzz/harness.rs"]
mod harness;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted; none when the folder does not exist.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("read a fuzz input folder").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every seed and regression input of `target`; fails naming each input that panicked.
fn replay(target: &str) {
    let (_, run) = harness::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("a known target");
    let seeds = inputs("seeds", target);
    assert!(!seeds.is_empty(), "no seed inputs in fuzz/seeds/{target}/");
    let mut failures = Vec::new();
    for path in seeds.iter().chain(&inputs("regressions", target)) {
        let data = std::fs::read(path).expect("read a fuzz input");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(&data))) {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            let shown = path.strip_prefix(fuzz_dir()).unwrap_or(path);
            failures.push(format!("fuzz/{}: {why}", shown.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} input(s) of fuzz target {target} panicked:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn twilio_event_inputs_never_panic() {
    replay("twilio_event");
}

#[test]
fn wav_inputs_never_panic() {
    replay("wav");
}

#[test]
fn profile_inputs_never_panic() {
    replay("profile");
}

#[test]
fn results_inputs_never_panic() {
    replay("results");
}

/// Every folder of kept inputs belongs to a target, so none is silently skipped.
#[test]
fn input_folders_name_known_targets() {
    let known: Vec<&str> = harness::TARGETS.iter().map(|(name, _)| *name).collect();
    for kind in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("read a fuzz folder").path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            assert!(
                path.is_dir() && known.contains(&name.as_str()),
                "fuzz/{kind}/{name} is not a fuzz target's folder (targets: {})",
                known.join(", ")
            );
        }
    }
}
