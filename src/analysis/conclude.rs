//! The end of every run: the failures table, the analysis with its hooks, the summary, the
//! results file and the HTML report, and the exit status the verdicts call for. Lone runs, runs
//! started from the web UI, the gaggle manager and `merge` all end here.

use super::verdicts::Status;
use super::{analyse, report, summary, PostRunHook};
use crate::run::RunRecord;
use std::path::Path;

/// Judges `record`, shows and writes the results; returns the exit status.
pub fn conclude(
    record: &RunRecord,
    output: Option<&Path>,
    fail_on: Status,
    hooks: &[Box<dyn PostRunHook>],
) -> i32 {
    crate::run::console::print_table(&record.failures_by_reason);
    let mut results = analyse(record, hooks);
    results.failures_by_reason = record.failures_by_reason.clone();
    results.set_fail_on(fail_on);
    summary::print_summary(&results);
    let mut code = results.exit_code(fail_on);
    if let Some(path) = output {
        match results.write_json(path) {
            Ok(()) => println!("Results written to {}", path.display()),
            Err(e) => {
                eprintln!("error: cannot write the results file {}: {e:#}", path.display());
                code = code.max(1);
            }
        }
        let html = path.with_extension("html");
        match report::write_html(&results, &html) {
            Ok(()) => println!("Report written to {}", html.display()),
            Err(e) => eprintln!("warning: cannot write the report {}: {e:#}", html.display()),
        }
    }
    code
}
