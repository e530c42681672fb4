//! The HTML report: its charts and verdict table, escaped text, no scripts, and a page even with
//! nothing to plot.

use super::plan;
use super::synthetic::healthy_record;
use phone_agent_load::analysis::{analyse, report, RunRecord};
use phone_agent_load::config::plan::{AiMode, Skips};

#[test]
fn html_report_has_charts_and_the_verdict_table() {
    let mut run = healthy_record(AiMode::Stream);
    run.host = "http://127.0.0.1:1/<x>".into();
    let r = analyse(&run, &[]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.html");
    report::write_html(&r, &path).unwrap();
    let html = std::fs::read_to_string(&path).unwrap();
    assert!(
        html.matches("<svg").count() >= 3,
        "memory, RTF histogram, RTF over time"
    );
    for text in [
        "Memory over the run",
        "RTF distribution",
        "warning 0.8x",
        "critical 1.0x",
        "API p95 latency",
        "server fit",
    ] {
        assert!(html.contains(text), "{text} missing");
    }
    assert!(
        html.contains("&lt;x&gt;") && !html.contains("<x>"),
        "text is escaped"
    );
    assert!(
        !html.contains("<script") && !html.contains("src=\"http"),
        "no network, no scripts"
    );
    // Nothing to plot is still a page.
    let empty = analyse(&RunRecord::new(plan(AiMode::Stream, Skips::default()), "h"), &[]);
    report::write_html(&empty, &path).unwrap();
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("No memory samples"));
}
