//! Where a run writes, checked before anything starts: the results file, the HTML report beside
//! it, and Goose's own reports and logs.
//!
//! A run that cannot write its results has wasted its time, and Goose checks its files late (a
//! report's type only as the attack starts; a log it cannot create costs an ERROR line, a
//! gzipped one a panic), so every path is tried here first.

use anyhow::{bail, Context, Result};
use goose::config::GooseConfiguration;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The report types Goose writes, by extension (a trailing `.gz` gzips any of them).
const REPORT_TYPES: [&str; 4] = ["html", "htm", "json", "md"];

/// Checks the files Goose will write — reports and logs — before anything starts: Goose checks a
/// report's type only as the attack starts, answers a log it cannot create with an ERROR line
/// and runs on without it, and panics on a gzipped Goose log it cannot create. None of them may
/// be `output` (the results file) or the HTML report written beside it, which would overwrite it.
pub fn check_goose_outputs(goose: &GooseConfiguration, output: Option<&Path>) -> Result<()> {
    // "" is no file; Goose's RUN_FOLDER (a bare flag) writes into the run's folder.
    let given = |value: &str| !value.is_empty() && value != goose::config::RUN_FOLDER;
    let ours = output.map(|o| (o.to_path_buf(), o.with_extension("html")));
    if let Some((results, html)) = &ours {
        if results == html {
            bail!(
                "--output {}: the HTML report is written beside the results file under the same name \
                 with .html; give the results file another extension, such as {}",
                results.display(),
                results.with_extension("json").display()
            );
        }
    }
    let clashes = |option: &str, path: &str| -> Result<()> {
        match &ours {
            Some((results, html)) if Path::new(path) == results || Path::new(path) == html => bail!(
                "{option} {path} is where this run writes its own {}: give it another name",
                if Path::new(path) == results {
                    "results file (--output)"
                } else {
                    "HTML report (beside --output)"
                }
            ),
            _ => Ok(()),
        }
    };
    for report in goose.report_file.iter().filter(|r| given(r)) {
        let name = report.strip_suffix(".gz").unwrap_or(report);
        let ext = Path::new(name).extension().and_then(|e| e.to_str()).unwrap_or("");
        if !REPORT_TYPES.contains(&ext.to_ascii_lowercase().as_str()) {
            bail!(
                "--report-file {report}: the extension picks the report's type: use .html, .json or .md{}",
                if ext == "pdf" {
                    " (PDF reports need Goose's pdf-reports feature)"
                } else {
                    ""
                }
            );
        }
        clashes("--report-file", report)?;
        check_output_path(Path::new(report)).context("--report-file")?;
    }
    let logs = [
        ("--goose-log", &goose.goose_log),
        ("--request-log", &goose.request_log),
        ("--transaction-log", &goose.transaction_log),
        ("--scenario-log", &goose.scenario_log),
        ("--error-log", &goose.error_log),
        ("--debug-log", &goose.debug_log),
        ("--pdf-print-html", &goose.pdf_print_html),
    ];
    for (option, path) in logs {
        if let Some(path) = path.as_deref().filter(|p| given(p)) {
            clashes(option, path)?;
            check_output_path(Path::new(path)).context(option)?;
        }
    }
    if let Some(baseline) = goose.baseline_file.as_deref().filter(|b| !b.is_empty()) {
        let readable = std::fs::metadata(baseline).map(|m| m.is_file()).unwrap_or(false)
            && std::fs::File::open(baseline).is_ok();
        if !readable {
            bail!("--baseline-file {baseline}: cannot read it; expected the JSON report of an earlier run");
        }
    }
    if goose.dashboard_port == Some(0) {
        bail!("--dashboard-port 0: the web UI is opened at a port you know: expected 1 to 65535");
    }
    Ok(())
}

/// How much the output check writes beside the target: about what a results file with its raw
/// histograms takes, so a full file system is refused before the run, not after it.
const PROBE_BYTES: usize = 256 * 1024;

/// Refuses an output path that cannot be written, before a run spends its time: the folder must
/// exist and take a new file of a results file's size, and the path must not be a folder or
/// anything but a regular file (the results are written beside it and renamed over it, which
/// would replace a device such as `/dev/null`). Errors name the path, not the option: callers add
/// the option as context.
pub fn check_output_path(path: &Path) -> Result<()> {
    if path.as_os_str().is_empty() {
        bail!("the path is empty; expected a file path such as results.json");
    }
    if path.is_dir() {
        bail!(
            "{} is a directory; expected the path of a file to write",
            path.display()
        );
    }
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() {
            bail!(
                "{} is not a regular file (a device, pipe or socket); expected the path of a file to write",
                path.display()
            );
        }
    }
    let tmp = temp_path(path)?;
    let probe = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&vec![0u8; PROBE_BYTES])?;
        f.sync_all()
    };
    let written = probe();
    let _ = std::fs::remove_file(&tmp);
    written.map_err(|e| match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => anyhow::anyhow!(
            "{}: no room to write it ({e}); free some space or choose another place",
            path.display()
        ),
        _ => anyhow::anyhow!(
            "{}: cannot write there ({e}); expected a file in an existing, writable folder",
            path.display()
        ),
    })
}

/// `dir/.name.tmp-PID`: beside the target, so the rename stays on one file system.
/// The hidden file beside `path` that a result is written to before it is renamed over it.
pub fn temp_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file path", path.display()))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".tmp-{}", std::process::id()));
    Ok(path.with_file_name(tmp))
}
