//! Mock AI mode, which needs no server and follows the pipeline latency model, and the scenarios
//! refusing what cannot run.

use super::{attack, row, shared};
use phone_agent_load::config::plan::AiMode;
use phone_agent_load::config::utterances::Utterance;
use phone_agent_load::measure::Snapshot;
use phone_agent_load::scenarios::{ai_call, media_stream};

/// `--ai-mode mock` needs no server: turns follow the pipeline latency model
/// (`ai_model::latencies`), stage by stage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_ai_calls_need_no_server() {
    let shared = shared(AiMode::Mock, true, 30.0, 2.0, vec![]);
    // Port 9 (discard) on loopback: nothing may connect to it.
    let (m, _) = attack(ai_call::ai_call(&shared).unwrap(), "http://127.0.0.1:9", 3, 3).await;
    let snap: Snapshot = shared.measurements.snapshot();
    assert!(snap.ai.turns.len() >= 3, "{} turns", snap.ai.turns.len());
    assert!(snap.ai.calls >= 3);
    assert!(snap.ai.errors.is_empty(), "{:?}", snap.ai.errors);
    for t in &snap.ai.turns {
        assert!(t.ok && t.ttfa_ms.is_none());
        let (stt, llm, tts) = (t.stt_ms.unwrap(), t.llm_ms.unwrap(), t.tts_ms.unwrap());
        // STT = (50 + 0.3 x audio) x U(0.8, 1.2), slept: a little over, never under.
        let stt_model = 50.0 + 0.3 * t.audio_ms;
        assert!(
            stt >= stt_model * 0.8 - 1.0 && stt <= stt_model * 1.2 + 60.0,
            "stt {stt} for {}",
            t.audio_ms
        );
        assert!(llm >= 80.0 * 0.8 - 1.0 && tts >= 75.0 * 0.8 - 1.0);
        assert!((t.rtf - (stt + llm + tts) / t.audio_ms).abs() < 1e-9);
    }
    assert_eq!(row(&m, "AI turn").0, snap.ai.turns.len());
    for stage in ["AI stt", "AI llm", "AI tts"] {
        assert!(row(&m, stage).0 >= snap.ai.turns.len(), "{stage}");
    }
    assert_eq!(
        snap.streams.calls_attempted, 0,
        "mock mode places no media-stream calls"
    );
}

#[test]
fn scenarios_refuse_what_cannot_run() {
    let silent = shared(AiMode::Stream, false, 30.0, 20.0, vec![]);
    assert!(
        ai_call::ai_call(&silent).is_err(),
        "stream mode with nothing to say"
    );
    let mute = shared(
        AiMode::Stream,
        false,
        30.0,
        20.0,
        vec![Utterance {
            text: "x".into(),
            mulaw: vec![],
        }],
    );
    assert!(ai_call::ai_call(&mute).is_err(), "an utterance without audio");
    let zero = shared(AiMode::Stream, false, 0.0, 20.0, vec![]);
    assert!(media_stream::media_stream_call(&zero).is_err());
    assert!(ai_call::ai_call(&shared(AiMode::Mock, false, 30.0, 20.0, vec![])).is_ok());
}
