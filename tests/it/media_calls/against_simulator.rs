//! Calls against the built-in simulator: frame counts both sides agree on, a stream cap refusing
//! upgrades with 503, and AI calls whose real-time factor follows the simulated pipeline's speed.

use super::{attack, errors, row, shared, CALL, CONNECT};
use goose::metrics::GooseMetrics;
use phone_agent_load::config::plan::AiMode;
use phone_agent_load::config::utterances::Utterance;
use phone_agent_load::protocol::mulaw;
use phone_agent_load::scenarios::{ai_call, media_stream, Shared};
use phone_agent_load::simulator::{self, RunningSimulator, ServeOptions};
use std::time::{Duration, Instant};

/// A tone the simulator's voice detector hears as speech: `secs` of 300 Hz, 8 kHz mu-law.
fn tone(secs: f64) -> Utterance {
    let n = (secs * 8000.0) as usize;
    let samples: Vec<i16> = (0..n)
        .map(|i| ((i as f64 * 300.0 * std::f64::consts::TAU / 8000.0).sin() * 8000.0) as i16)
        .collect();
    Utterance {
        text: format!("tone {secs}s"),
        mulaw: mulaw::encode_all(&samples),
    }
}

async fn sim(tune: impl FnOnce(&mut ServeOptions)) -> RunningSimulator {
    let mut opts = ServeOptions::for_tests();
    tune(&mut opts);
    simulator::start(opts).await.expect("the simulator starts")
}

/// The simulator's stream counter `name`.
fn sim_count(sim: &RunningSimulator, name: &str) -> u64 {
    sim.stats()["streams"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no streams.{name}"))
}

/// Waits (briefly) until the simulator has closed every stream, so its counts are final.
async fn settle(sim: &RunningSimulator) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while sim_count(sim, "active") > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Frames go out at 50/s for as long as calls are up, and the simulator got every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_stream_counts_agree_with_the_simulator() {
    let sim = sim(|_| {}).await;
    let shared = shared(AiMode::Stream, false, 1.5, 20.0, vec![]);
    let (m, _) = attack(
        media_stream::media_stream_call(&shared).unwrap(),
        &sim.url(),
        3,
        4,
    )
    .await;
    settle(&sim).await;
    let s = shared.measurements.snapshot().streams;

    // 50 frames per second of call (the call row times each call from connect to hang-up).
    let call_row = &m.requests[CALL].raw_data;
    let call_secs = call_row.total_time_us as f64 / 1e6;
    let per_sec = s.frames_sent as f64 / call_secs;
    assert!(
        (47.0..=50.5).contains(&per_sec),
        "{per_sec:.2} frames/s over {call_secs:.1} s of calls"
    );
    assert!(
        s.frames_skipped * 100 <= s.frames_scheduled,
        "{} of {} skipped",
        s.frames_skipped,
        s.frames_scheduled
    );
    assert_eq!(s.frames_sent + s.frames_skipped, s.frames_scheduled);
    assert!(
        s.lateness_us.quantile(0.5) < 5_000,
        "median lateness {} us",
        s.lateness_us.quantile(0.5)
    );
    // Both sides agree.
    assert_eq!(sim_count(&sim, "media_frames"), s.frames_sent);
    assert_eq!(sim_count(&sim, "media_bytes"), s.frames_sent * 160);
    assert_eq!(sim_count(&sim, "accepted"), s.calls_connected);
    assert_eq!(sim_count(&sim, "completed"), s.calls_completed);
    assert_eq!(sim_count(&sim, "bad_sequence"), 0);
    assert_eq!(sim.stats()["streams"]["protocol_errors"], serde_json::json!({}));
    // Three users, 1.5 s calls, 4 s: each completed two calls at least, then hung up at the end.
    assert!(s.calls_completed >= 6 && s.calls_failed == 0, "{s:?}");
    assert_eq!(s.calls_attempted, s.calls_connected);
    assert_eq!(row(&m, CALL), (s.calls_completed as usize, 0));
    assert_eq!(row(&m, CONNECT).0 as u64, s.calls_connected);
    assert!(s.messages_sent >= s.frames_sent + 3 * s.calls_completed);
    sim.shutdown().await;
}

/// Above `--max-streams` the upgrade is refused with 503: failed connects name it, and the
/// success rate is what the cap allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cap_refuses_upgrades_with_503() {
    let sim = sim(|o| o.max_streams = Some(2)).await;
    // Calls outlast the run: the two that get in hold their slots to the end.
    let shared = shared(AiMode::Stream, false, 30.0, 20.0, vec![]);
    let (m, took) = attack(
        media_stream::media_stream_call(&shared).unwrap(),
        &sim.url(),
        4,
        3,
    )
    .await;
    settle(&sim).await;
    let s = shared.measurements.snapshot().streams;

    assert_eq!(s.calls_connected, 2);
    assert_eq!(sim_count(&sim, "accepted"), 2);
    let refused = sim_count(&sim, "refused");
    assert_eq!(s.errors.get("refused upgrade: 503").copied(), Some(refused));
    assert_eq!(errors(&m, CONNECT, "refused upgrade: 503") as u64, refused);
    assert_eq!(
        m.requests[CONNECT].status_code_counts.get(&503).copied(),
        Some(refused as usize)
    );
    // Two refused users retrying with a back-off over ~3 s: a few tries each, no hot loop.
    assert!((4..=14).contains(&refused), "{refused} refused");
    assert_eq!(s.calls_attempted, 2 + refused);
    let rate = s.calls_connected as f64 / s.calls_attempted as f64;
    assert!((2.0 / 16.0..0.5).contains(&rate), "success rate {rate}");
    // The two 30 s calls ended with the run, not 30 s later.
    assert!(took < Duration::from_millis(5500), "the run took {took:?}");
    assert_eq!(s.calls_completed, 2);
    sim.shutdown().await;
}

/// AI stream mode: the measured real-time factor follows the simulator's pipeline speed, and
/// every answer's mark is echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_rtf_tracks_the_pipeline_speed() {
    let (normal, slow) = tokio::join!(sim(|_| {}), sim(|o| o.ai_slowdown = 3.0));
    let say = || vec![tone(2.0)];
    let (fast_run, slow_run) = (
        shared(AiMode::Stream, true, 30.0, 30.0, say()),
        shared(AiMode::Stream, true, 30.0, 30.0, say()),
    );
    let (normal_url, slow_url) = (normal.url(), slow.url());
    let ((m1, _), (m3, _)) = tokio::join!(
        attack(ai_call::ai_call(&fast_run).unwrap(), &normal_url, 4, 8),
        attack(ai_call::ai_call(&slow_run).unwrap(), &slow_url, 4, 8),
    );
    tokio::join!(settle(&normal), settle(&slow));

    let mean_rtf = |shared: &Shared, sim: &RunningSimulator, m: &GooseMetrics| {
        let snap = shared.measurements.snapshot();
        let ok: Vec<_> = snap.ai.turns.iter().filter(|t| t.ok).collect();
        assert!(ok.len() >= 3, "{} answered turns: {:?}", ok.len(), snap.ai);
        for t in &ok {
            let (ttfa, turn) = (t.ttfa_ms.unwrap(), t.turn_ms.unwrap());
            // The agent answers no sooner than its end-of-speech hangover, in one burst.
            assert!(ttfa >= 450.0 && ttfa <= turn && turn - ttfa < 200.0, "{t:?}");
            assert!((t.audio_ms - 2000.0).abs() < 1.0);
        }
        assert_eq!(row(m, "AI turn").0, ok.len());
        assert_eq!(row(m, "AI time to first audio").0, ok.len());
        // Every answer the caller heard out was echoed, and the simulator got each echo.
        assert_eq!(snap.streams.marks_echoed, sim_count(sim, "marks_echoed"));
        // (Each of the 4 callers may still have been listening to its last answer at the end.)
        assert!(snap.streams.marks_echoed + 4 >= ok.len() as u64);
        eprintln!(
            "{} turns, marks echoed {}, RTFs {:?}",
            ok.len(),
            snap.streams.marks_echoed,
            ok.iter()
                .map(|t| (t.rtf * 100.0).round() / 100.0)
                .collect::<Vec<_>>()
        );
        assert_eq!(sim_count(sim, "unknown_marks"), 0);
        assert_eq!(
            snap.streams.clears_received, 0,
            "the caller never talks over the agent"
        );
        ok.iter().map(|t| t.rtf).sum::<f64>() / ok.len() as f64
    };
    let rtf1 = mean_rtf(&fast_run, &normal, &m1);
    let rtf3 = mean_rtf(&slow_run, &slow, &m3);
    assert!(rtf1 < 0.8, "normal pipeline RTF {rtf1:.2}");
    assert!(rtf3 > 1.0, "x3 pipeline RTF {rtf3:.2}");
    let ratio = rtf3 / rtf1;
    assert!(
        (2.2..=3.8).contains(&ratio),
        "RTF {rtf1:.2} -> {rtf3:.2}: x{ratio:.2}"
    );
    tokio::join!(normal.shutdown(), slow.shutdown());
}
