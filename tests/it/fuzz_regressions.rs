//! The fuzzers' findings as regression tests: every input kept under `fuzz/regressions/<target>/`
//! (each crash a fuzz target found, minimised) and the seed corpora under `fuzz/seeds/<target>/`
//! replay through the fuzz targets' own code (`fuzz/harness.rs`), and none may panic. A plain
//! `cargo test`: no cargo-fuzz, no nightly. To add a finding, copy the minimised crash file into
//! `fuzz/regressions/<target>/` (see `fuzz/README.md`).
//!
//! A finding whose fix has not landed yet is kept as `fuzz/regressions/<target>/open-<name>`: the
//! CI tests leave it out (and say so); `cargo test --test it fuzz_regressions -- --ignored`
//! replays exactly those. Fixing the parser and dropping the `open-` prefix makes it a regression
//! test.

#[path = "../../fuzz/harness.rs"]
mod fuzz_harness;

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;

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

/// A finding kept before its fix landed.
fn is_open(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("open-"))
}

/// Runs every seed and fixed regression input of `target`; fails naming each input that
/// panicked.
fn replay(target: &str) {
    let seeds = inputs("seeds", target);
    assert!(!seeds.is_empty(), "no seed inputs in fuzz/seeds/{target}/");
    let (open, fixed): (Vec<PathBuf>, Vec<PathBuf>) = inputs("regressions", target)
        .into_iter()
        .partition(|p| is_open(p));
    for path in &open {
        eprintln!("open finding, not replayed (run with --ignored): {}", shown(path));
    }
    let failures = panics(target, seeds.iter().chain(&fixed));
    assert!(
        failures.is_empty(),
        "{} input(s) of fuzz target {target} panicked:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `fuzz/...` for messages.
fn shown(path: &Path) -> String {
    let dir = fuzz_dir();
    format!("fuzz/{}", path.strip_prefix(&dir).unwrap_or(path).display())
}

thread_local! {
    /// Where the last panic on this thread happened: a panic's payload has only its message.
    static PANIC_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Keeps each panic's location for the failure message; the usual report is still printed. The
/// hook is the whole process's: the other tests' panics pass through it too, and only note their
/// location on their own thread.
fn record_panic_locations() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let at = info.location().map(|l| l.to_string());
            PANIC_AT.with(|cell| *cell.borrow_mut() = at);
            report(info);
        }));
    });
}

/// Runs `inputs` through `target`; one line per input that panicked.
fn panics<'a>(target: &str, inputs: impl Iterator<Item = &'a PathBuf>) -> Vec<String> {
    let (_, run) = fuzz_harness::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("a known target");
    record_panic_locations();
    let mut failures = Vec::new();
    for path in inputs {
        let data = std::fs::read(path).expect("read a fuzz input");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(&data))) {
            let at = PANIC_AT.with(|at| at.borrow_mut().take()).unwrap_or_default();
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            failures.push(format!("{}: {why} (at {at})", shown(path)));
        }
    }
    failures
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

/// The open findings (`open-*`), which CI leaves out: each line printed is a bug still there.
/// Passes once every one of them is fixed (then drop their `open-` prefix).
#[test]
#[ignore = "replays known, unfixed crashes"]
fn open_findings() {
    let mut failures = Vec::new();
    for (target, _) in fuzz_harness::TARGETS {
        let open: Vec<PathBuf> = inputs("regressions", target)
            .into_iter()
            .filter(|p| is_open(p))
            .collect();
        failures.extend(panics(target, open.iter()));
    }
    assert!(
        failures.is_empty(),
        "{} open finding(s) still panic:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every folder of kept inputs belongs to a target, so none is silently skipped.
#[test]
fn input_folders_name_known_targets() {
    let known: Vec<&str> = fuzz_harness::TARGETS.iter().map(|(name, _)| *name).collect();
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
