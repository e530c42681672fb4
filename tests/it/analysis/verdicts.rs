//! Verdicts: every default threshold edge judged both ways, sections without data, and the runs
//! whose leak, slow pipeline, unanswered turns or failed calls are critical.

use super::plan;
use super::synthetic::{healthy_record, synthetic_memory};
use phone_agent_load::analysis::verdicts::{judge, Status};
use phone_agent_load::analysis::{analyse, summary, RunRecord};
use phone_agent_load::config::plan::{AiMode, Skips};
use phone_agent_load::config::profile::Thresholds;

#[test]
fn every_default_threshold_edge_is_judged_both_ways() {
    let t = Thresholds::default();
    // (band, higher is worse): just better than warning, at warning, at critical, just past critical.
    let cases = [
        (t.api_p95_ms, true),
        (t.api_success_pct, false),
        (t.ws_success_pct, false),
        (t.ai_rtf, true),
        (t.memory_growth_mb, true),
    ];
    for (band, higher_is_worse) in cases {
        let step = if higher_is_worse { 1e-6 } else { -1e-6 };
        let expect = [
            (band.warning - step, Status::Target),
            (band.warning, Status::Warning),
            (band.warning + step, Status::Warning),
            (band.critical - step, Status::Warning),
            (band.critical, Status::Warning),
            (band.critical + step, Status::Critical),
        ];
        for (value, want) in expect {
            assert_eq!(judge(value, band, higher_is_worse), want, "{value} in {band:?}");
        }
    }
    // Points either side of the default bands.
    assert_eq!(judge(199.0, t.api_p95_ms, true), Status::Target);
    assert_eq!(judge(501.0, t.api_p95_ms, true), Status::Critical);
    assert_eq!(judge(99.5, t.api_success_pct, false), Status::Target);
    assert_eq!(judge(94.0, t.api_success_pct, false), Status::Critical);
    assert_eq!(judge(0.9, t.ai_rtf, true), Status::Warning);
    assert_eq!(judge(101.0, t.memory_growth_mb, true), Status::Critical);
}

#[test]
fn sections_without_data_get_no_verdict_and_do_not_succeed() {
    let mut run = RunRecord::new(plan(AiMode::Stream, Skips::default()), "http://127.0.0.1:1");
    run.interrupted = true;
    run.interrupt_reason = Some("target unreachable".into());
    let r = analyse(&run, &[]);
    assert!(r.verdicts.is_empty(), "{:?}", r.verdicts);
    assert!(!r.api.ran().unwrap().success && !r.ai_pipeline.ran().unwrap().success);
    assert!(r.passed);
    assert_eq!(
        r.exit_code(Status::Critical),
        1,
        "an interrupted run is not a clean pass"
    );
    let text = summary::summary_text(&r);
    assert!(
        text.contains("no data") && text.contains("INTERRUPTED: target unreachable"),
        "{text}"
    );
}

#[test]
fn leak_and_slow_pipeline_are_critical_and_fail_the_run() {
    let mut run = healthy_record(AiMode::Stream);
    run.memory = synthetic_memory(3.0); // 3 MB/s for a minute: ~160 MB after the ramp
    for t in &mut run.measured.ai.turns {
        t.rtf *= 4.0;
    }
    let r = analyse(&run, &[]);
    let status = |m: &str| r.verdicts.iter().find(|v| v.metric == m).unwrap().status;
    assert_eq!(status("server memory growth"), Status::Critical);
    assert_eq!(status("load generator memory growth"), Status::Target);
    assert_eq!(status("AI real-time factor"), Status::Critical);
    assert!(!r.passed && !r.memory.success && !r.ai_pipeline.ran().unwrap().success);
    assert!(r.api.ran().unwrap().success);
    assert_eq!(r.exit_code(Status::Critical), 2);
    let server = r.memory.report.server.as_ref().unwrap();
    assert!((server.slope_mb_per_min - 180.0).abs() < 1e-6 && server.r2 > 0.999);
    let text = summary::summary_text(&r);
    assert!(text.contains("pipeline slower than real time"), "{text}");
    assert!(
        text.contains("MB in one hour") && text.contains("RESULT: FAILED"),
        "{text}"
    );
}

#[test]
fn unanswered_turns_and_failed_calls_are_critical_though_everything_connected() {
    let mut run = healthy_record(AiMode::Stream);
    // Every stream connected, but most calls ended in a protocol error or a drop.
    run.measured.streams.calls_completed = 2;
    run.measured.streams.calls_failed = 8;
    // The agent never answered: no RTF, so only the turn verdict can say so.
    for t in &mut run.measured.ai.turns {
        t.ok = false;
    }
    let r = analyse(&run, &[]);
    let verdict = |m: &str| r.verdicts.iter().find(|v| v.metric == m).cloned();
    assert_eq!(verdict("media stream success").unwrap().status, Status::Target);
    let calls = verdict("media stream calls completed").unwrap();
    assert_eq!((calls.value, calls.status), (20.0, Status::Critical));
    let turns = verdict("AI turn success").unwrap();
    assert_eq!((turns.value, turns.status), (0.0, Status::Critical));
    assert!(
        verdict("AI real-time factor").is_none(),
        "no answered turn, no RTF"
    );
    // Nor a figure that reads as an infinitely fast agent.
    let text = summary::summary_text(&r);
    assert!(
        text.contains("RTF: none (no turn was answered)") && !text.contains("RTF mean 0.00x"),
        "{text}"
    );
    assert!(!r.passed);
    assert_eq!(r.exit_code(Status::Critical), 2);

    // 19 of 20 answered: a warning at the 95 % edge; 9 of 10 calls: a warning.
    let mut run = healthy_record(AiMode::Stream);
    run.measured.ai.turns[0].ok = false;
    run.measured.streams.calls_completed = 9;
    run.measured.streams.calls_failed = 1;
    let r = analyse(&run, &[]);
    let status = |m: &str| r.verdicts.iter().find(|v| v.metric == m).unwrap().status;
    assert_eq!(status("AI turn success"), Status::Warning);
    assert_eq!(status("media stream calls completed"), Status::Warning);
}
