//! The console summary at the end of a run: each section in a few lines, memory with its slope
//! and one-hour projection, and the verdict table with recommendations where a metric is off.

use super::results::{AiResults, ApiResults, Results, Section, WebsocketResults};
use super::verdicts::{fmt_value, Status};
use crate::measure::memory::MemorySeries;
use std::fmt::Write;

/// Prints [`summary_text`] to stdout.
pub fn print_summary(results: &Results) {
    print!("{}", summary_text(results));
}

/// The summary as text (what [`print_summary`] prints).
pub fn summary_text(r: &Results) -> String {
    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(
        o,
        "\n=== phone-agent-load results: profile {}, host {} ===",
        r.profile, r.host
    );
    let _ = writeln!(o, "started {}, ran {:.1}s", r.timestamp, r.duration_s);
    if r.interrupted {
        let why = r.interrupt_reason.as_deref().unwrap_or("no reason given");
        let _ = writeln!(o, "INTERRUPTED: {why} (results cover the run up to then)");
    }
    section(o, "API", &r.api, api_lines);
    section(o, "Media streams", &r.websocket, ws_lines);
    section(o, "AI pipeline", &r.ai_pipeline, ai_lines);
    memory_lines(o, r);
    worker_lines(o, r);
    if !r.figures.is_empty() {
        let _ = writeln!(o, "\nFigures");
        for f in &r.figures {
            let _ = writeln!(o, "  {}: {} {}", f.name, fmt_value(f.value), f.unit);
        }
    }
    verdict_table(o, r);
    for e in &r.hook_errors {
        let _ = writeln!(o, "  ! {e}");
    }
    let failing = r.failing().count();
    let _ = match (r.passed, failing) {
        (true, _) if r.interrupted => writeln!(
            o,
            "\nRESULT: INTERRUPTED (nothing at or above {} in what ran, but the run did not finish)",
            r.fail_on
        ),
        (true, _) => writeln!(o, "\nRESULT: PASSED (nothing at or above {})", r.fail_on),
        (false, n) => writeln!(o, "\nRESULT: FAILED ({n} verdict(s) at or above {})", r.fail_on),
    };
    out
}

fn section<T>(o: &mut String, title: &str, s: &Section<T>, lines: fn(&mut String, &T)) {
    let _ = write!(o, "\n{title}");
    match s {
        Section::Skipped => {
            let _ = writeln!(o, ": skipped");
        }
        Section::Ran(t) => {
            let _ = writeln!(o);
            lines(o, t);
        }
    }
}

/// The API section as the summary shows it: totals, latency, a line per request row and the
/// errors (the results file keeps it as the Python suite's `api.stdout`).
pub fn api_text(a: &ApiResults) -> String {
    let mut out = String::new();
    api_lines(&mut out, a);
    out
}

fn api_lines(o: &mut String, a: &ApiResults) {
    if a.requests == 0 {
        let _ = writeln!(o, "  no data: no API request was recorded");
        return;
    }
    let _ = writeln!(
        o,
        "  {} requests, {} failed ({:.2}% success), {:.1} req/s",
        a.requests, a.failures, a.success_rate, a.rps
    );
    let _ = writeln!(
        o,
        "  latency ms: avg {:.1}  p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}",
        a.avg_ms, a.p50_ms, a.p95_ms, a.p99_ms, a.max_ms
    );
    let width = a
        .endpoints
        .iter()
        .map(|e| e.name.len() + e.method.len() + 1)
        .max()
        .unwrap_or(0);
    for e in &a.endpoints {
        let codes: Vec<String> = e.status_codes.iter().map(|(c, n)| format!("{c}:{n}")).collect();
        let label = format!("{} {}", e.method, e.name);
        let _ = writeln!(
            o,
            "    {label:<width$}  {:>7} reqs {:>6} fails  p50 {:>7.1}  p95 {:>7.1} ms  [{}]",
            e.requests,
            e.failures,
            e.p50_ms,
            e.p95_ms,
            codes.join(" ")
        );
    }
    errors(o, &a.errors);
}

fn ws_lines(o: &mut String, w: &WebsocketResults) {
    if w.connections_attempted == 0 {
        let _ = writeln!(o, "  no data: no media stream was attempted");
        return;
    }
    let _ = writeln!(
        o,
        "  {} of {} connected ({:.1}%), {} completed, {} failed; connect p95 {:.1} ms",
        w.connections_successful,
        w.connections_attempted,
        w.success_rate,
        w.calls_completed,
        w.calls_failed,
        w.connect_p95_ms
    );
    let _ = writeln!(
        o,
        "  frames {:.1}% of schedule, {:.2}% late; messages {} sent / {} received",
        w.frame_rate_pct, w.late_frames_pct, w.messages_sent, w.messages_received
    );
    errors(o, &w.errors);
}

fn ai_lines(o: &mut String, a: &AiResults) {
    if a.turns == 0 {
        let _ = writeln!(
            o,
            "  no data: no AI turn completed ({} calls, mode {})",
            a.calls, a.mode
        );
        errors(o, &a.errors);
        return;
    }
    let _ = writeln!(
        o,
        "  mode {}: {} calls, {} of {} turns answered ({:.1}%)",
        a.mode, a.calls, a.successful_turns, a.turns, a.success_rate
    );
    if a.successful_turns == 0 {
        // No answer timed: a real-time factor of 0.00x would read as an infinitely fast agent.
        let _ = writeln!(o, "  RTF: none (no turn was answered)");
    } else {
        let _ = writeln!(
            o,
            "  RTF mean {:.2}x  p50 {:.2}x  p95 {:.2}x  max {:.2}x; {:.1}% of turns faster than real time",
            a.rtf.mean, a.rtf.p50, a.rtf.p95, a.rtf.max, a.realtime_capable_pct
        );
    }
    if let Some(t) = a.ttfa_ms {
        let _ = writeln!(o, "  time to first audio ms: p50 {:.0}  p95 {:.0}", t.p50, t.p95);
    }
    for (stage, v) in [("STT", a.stt_ms), ("LLM", a.llm_ms), ("TTS", a.tts_ms)] {
        if let Some(v) = v {
            let _ = writeln!(o, "  {stage} ms: avg {:.0}  p95 {:.0}", v.avg, v.p95);
        }
    }
    errors(o, &a.errors);
}

fn memory_lines(o: &mut String, r: &Results) {
    let _ = writeln!(o, "\nMemory");
    let m = &r.memory.report;
    for (who, series) in [("server", &m.server), ("load generator", &m.load_generator)] {
        match series {
            Some(s) => series_line(o, who, s),
            None if who == "server" => {
                let why = m
                    .server_error
                    .as_deref()
                    .unwrap_or("not measured (give --server-pid, --server-process or --server-metrics-url)");
                let _ = writeln!(o, "  server: no data: {why}");
            }
            None => {
                let _ = writeln!(o, "  {who}: no data");
            }
        }
    }
    if let (Some(_), Some(e)) = (&m.server, &m.server_error) {
        let _ = writeln!(o, "  (server memory read failed at times: {e})");
    }
}

/// A distributed run's load generators, one line each.
fn worker_lines(o: &mut String, r: &Results) {
    if r.workers.is_empty() {
        return;
    }
    let _ = writeln!(o, "\nWorkers");
    for w in &r.workers {
        let users: u64 = w.users.values().sum();
        let at = w
            .address
            .as_deref()
            .map(|a| format!(" ({a})"))
            .unwrap_or_default();
        let memory = match &w.memory {
            Some(m) => format!("memory growth {:+.1} MB", m.growth_mb),
            None => "memory not reported".to_string(),
        };
        let status = match w.status.as_str() {
            "finished" => "finished".to_string(),
            other => other.to_uppercase(),
        };
        let _ = writeln!(
            o,
            "  {} on {}{at}: {status}, {users} users, {} API requests ({} failed), {memory}",
            w.name, w.hostname, w.api_requests, w.api_failures
        );
        if let Some(detail) = &w.detail {
            let _ = writeln!(o, "    {detail}");
        }
    }
}

fn series_line(o: &mut String, who: &str, s: &MemorySeries) {
    let _ = writeln!(
        o,
        "  {who} [{}]: initial {:.1} MB, peak {:.1}, final {:.1}, growth {:+.1} MB",
        s.source, s.initial_mb, s.peak_mb, s.final_mb, s.growth_mb
    );
    let _ = writeln!(
        o,
        "    slope {:+.2} MB/min (R² {:.2}) over the post-ramp window -> {}",
        s.slope_mb_per_min,
        s.r2,
        s.projection()
    );
}

fn errors(o: &mut String, errors: &std::collections::BTreeMap<String, u64>) {
    let mut sorted: Vec<_> = errors.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (reason, n) in sorted.iter().take(10) {
        let _ = writeln!(o, "    error x{n}: {reason}");
    }
    if sorted.len() > 10 {
        let _ = writeln!(o, "    ... and {} more kinds of error", sorted.len() - 10);
    }
}

/// The kinds of load a verdict judges that produced nothing to judge.
fn no_data(r: &Results) -> Vec<&'static str> {
    let mut out = Vec::new();
    if r.api.ran().is_some_and(|a| a.requests == 0) {
        out.extend(["API p95 latency", "API success rate"]);
    }
    if r.websocket.ran().is_some_and(|w| w.connections_attempted == 0) {
        out.push("media stream success");
    }
    if r.ai_pipeline.ran().is_some_and(|a| a.successful_turns == 0) {
        out.push("AI real-time factor");
    }
    if r.memory.report.server.is_none() {
        out.push("server memory growth");
    }
    if r.memory.report.load_generator.is_none() {
        out.push("load generator memory growth");
    }
    out
}

fn verdict_table(o: &mut String, r: &Results) {
    let _ = writeln!(o, "\nVerdicts");
    let rows: Vec<[String; 4]> = r
        .verdicts
        .iter()
        .map(|v| {
            let value = match &v.detail {
                Some(d) => format!("{} ({d})", v.value_text()),
                None => v.value_text(),
            };
            let status = match v.status {
                Status::Target => "target".to_string(),
                s => s.to_string().to_uppercase(),
            };
            [v.metric.clone(), value, v.target.clone(), status]
        })
        .chain(no_data(r).into_iter().map(|m| {
            [
                m.to_string(),
                "no data".to_string(),
                "-".to_string(),
                "-".to_string(),
            ]
        }))
        .collect();
    let header = ["metric", "value", "target", "status"].map(str::to_string);
    let mut widths = header.clone().map(|h| h.len());
    for row in rows.iter().chain([&header]) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in [&header].into_iter().chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        let _ = writeln!(o, "  {}", cells.join("  ").trim_end());
    }
    for v in r.verdicts.iter().filter(|v| v.recommendation.is_some()) {
        let _ = writeln!(
            o,
            "  -> {}: {}",
            v.metric,
            v.recommendation.as_deref().unwrap_or("")
        );
    }
}
