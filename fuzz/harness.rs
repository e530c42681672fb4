//! What each fuzz target does with one input, shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`) and the regression test (`tests/it/fuzz_regressions.rs`), so an
//! input saved under `fuzz/regressions/<target>/` replays through exactly the code that found it.
//!
//! Each function feeds untrusted bytes to one of the crate's parsers. A crash is a panic (an
//! `unwrap`, an index out of bounds, an arithmetic overflow: the fuzz build has debug
//! assertions on), a hang or unbounded memory; an `Err` is the right answer to bad input and is
//! ignored. Inputs that parse are also checked for what the rest of the tool relies on.

// Each fuzz target uses one of these functions; the regression test uses them all.
#![allow(dead_code)]

use phone_agent_load::analysis::analyse;
use phone_agent_load::analysis::report::render_html;
use phone_agent_load::analysis::results::Results;
use phone_agent_load::analysis::summary::summary_text;
use phone_agent_load::analysis::verdicts::Status;
use phone_agent_load::config::plan::{AiMode, Overrides, RunPlan};
use phone_agent_load::config::profile::Profile;
use phone_agent_load::gaggle::merge::{merge_parts, Part, RunData};
use phone_agent_load::protocol::wav::decode_wav;
use phone_agent_load::protocol::Event;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a target does with one input.
pub type Target = fn(&[u8]);

/// Every target: its name (the folder under `fuzz/seeds/` and `fuzz/regressions/`, and the
/// cargo-fuzz binary) and what it does with one input.
pub const TARGETS: [(&str, Target); 4] = [
    ("twilio_event", twilio_event),
    ("wav", wav),
    ("profile", profile),
    ("results", results),
];

/// A Media Streams text frame, as both ends of a call read it (`twilio::Event::parse`). A frame
/// that parses must serialize and parse back to the same event: the load generator echoes marks
/// and the simulator answers with events built the same way.
pub fn twilio_event(data: &[u8]) {
    // WebSocket text frames are UTF-8 by the protocol (tungstenite checks it).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(event) = Event::parse(text) {
        let json = event.to_json();
        assert_eq!(
            Event::parse(&json).as_ref(),
            Ok(&event),
            "a parsed event does not survive to_json -> parse: {json}"
        );
    }
}

/// A user's `--audio-dir` WAV file (`audio::decode_wav`): any header, any data. Decoded audio
/// is 8 kHz mu-law, so it can hold no more samples than the input's bytes resampled from the
/// lowest accepted rate (1 kHz, eight times up), plus the resampler's rounding.
pub fn wav(data: &[u8]) {
    if let Ok(mulaw) = decode_wav(data) {
        assert!(
            mulaw.len() <= 8 * data.len() + 64,
            "{} input bytes decoded to {} samples",
            data.len(),
            mulaw.len()
        );
    }
}

/// A `--profile path/to/file.toml` (`profile::Profile::parse`), then what every run does next
/// with a profile: its plan (`plan::RunPlan::new`), as given and scaled by `--users`. An accepted
/// profile must have values the run can use.
pub fn profile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(profile) = Profile::parse("fuzz.toml", text) else {
        return;
    };
    assert!(
        profile.spawn_rate.is_finite() && profile.spawn_rate > 0.0,
        "accepted spawn_rate {}",
        profile.spawn_rate
    );
    assert!(!profile.run_time.is_zero(), "accepted a zero run_time");
    // Each media-stream and AI call ends at `Instant::now() + duration` (scenarios/*.rs), which
    // panics on overflow: the reader must refuse a duration no clock can reach.
    let now = std::time::Instant::now();
    for (field, duration) in [
        ("media_streams.duration", profile.media_stream_duration),
        ("ai_calls.duration", profile.ai_call_duration),
    ] {
        assert!(
            now.checked_add(duration).is_some(),
            "accepted {field} = {duration:?}, past what Instant + Duration can hold"
        );
    }
    for users in [None, Some(1), Some(10_000)] {
        let overrides = Overrides {
            users,
            ..Overrides::default()
        };
        if let Ok(plan) = RunPlan::new(profile.clone(), &overrides, AiMode::Stream, false) {
            if let Some(n) = users {
                assert_eq!(plan.users.total(), n, "--users {n} gave {:?}", plan.users);
            }
        }
    }
}

/// A results file given to `merge`, through what `merge` does with it
/// (`gaggle::merge::merge_results_files`): `analysis::results::Results::read_json`, then
/// `gaggle::merge::RunData::from_results` and `merge_parts` (the file merged with itself), then
/// the post-run analysis (`analysis::analyse`) and the summary and HTML report of the merged run.
/// A file that reads must also write and read back unchanged (`merge` writes what it read), and
/// the analysis must not panic (`analyse` catches a panic and reports it as a hook error).
///
/// `read_json` takes a path, so the input goes through a scratch file (one per call: the
/// regression test runs inputs on several threads).
pub fn results(data: &[u8]) {
    let path = scratch_path();
    std::fs::write(&path, data).expect("write the scratch file");
    let read = Results::read_json(&path);
    if let Ok(results) = &read {
        results.write_json(&path).expect("write the results back");
        let back = Results::read_json(&path);
        assert_eq!(
            back.as_ref().map_err(|e| format!("{e:#}")),
            Ok(results),
            "results do not survive write_json -> read_json"
        );
    }
    let _ = std::fs::remove_file(&path);
    let Ok(results) = read else {
        return;
    };
    let Ok(data) = RunData::from_results(results, &path) else {
        return;
    };
    let part = Part {
        name: "fuzz.json".into(),
        address: None,
        lost: None,
        data,
    };
    let Ok((record, _workers)) = merge_parts(&[part.clone(), part]) else {
        return;
    };
    let merged = analyse(&record, &[]);
    let panicked: Vec<&String> = merged
        .hook_errors
        .iter()
        .filter(|e| e.contains("panicked"))
        .collect();
    assert!(
        panicked.is_empty(),
        "the analysis of a merged run panicked: {panicked:?}"
    );
    let _ = summary_text(&merged);
    let _ = render_html(&merged);
    let _ = merged.exit_code(Status::Warning);
}

fn scratch_path() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("pal-fuzz-results-{}-{n}.json", std::process::id()))
}
