//! Media-stream calls and AI calls under real Goose attacks on loopback: against the built-in
//! simulator (counts both sides agree on, stream caps, the real-time factor following the
//! simulated pipeline's speed) and against stub agents that script the Twilio conversation
//! exactly (message shapes, mark echo timing, clear, protocol errors, dropped calls). Plus the
//! mock AI mode with no server, and a property test of the Media Streams parser.

use crate::harness;
use futures_util::{SinkExt, StreamExt};
use goose::config::GooseConfiguration;
use goose::metrics::GooseMetrics;
use goose::prelude::*;
use phone_agent_load::config::plan::{AiMode, Overrides, RunPlan};
use phone_agent_load::config::profile::Profile;
use phone_agent_load::config::utterances::Utterance;
use phone_agent_load::measure::Snapshot;
use phone_agent_load::protocol::{mulaw, Event};
use phone_agent_load::scenarios::{ai_call, media_stream, Shared};
use phone_agent_load::simulator::{self, RunningSimulator, ServeOptions};
use proptest::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// Longest any attack here may take, run time included.
const ATTACK_LIMIT: Duration = Duration::from_secs(20);

const CONNECT: &str = "WS media stream: connect";
const CALL: &str = "WS media stream: call";

// ---------------------------------------------------------------------------------------------
// Helpers.

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

fn shared(
    mode: AiMode,
    no_wait: bool,
    stream_secs: f64,
    ai_secs: f64,
    utterances: Vec<Utterance>,
) -> Arc<Shared> {
    let profile = Profile::load("quick").expect("built-in profile");
    let mut plan = RunPlan::new(profile, &Overrides::default(), mode, no_wait).expect("plan");
    plan.media_stream_duration = Duration::from_secs_f64(stream_secs);
    plan.ai_call_duration = Duration::from_secs_f64(ai_secs);
    Arc::new(Shared {
        plan,
        measurements: Default::default(),
        utterances: Arc::new(utterances),
        unknown_events: Default::default(),
    })
}

/// Runs `scenario` with `users` users against `host` for `secs` after they all started;
/// returns Goose's metrics and how long the attack took.
async fn attack(scenario: Scenario, host: &str, users: usize, secs: usize) -> (GooseMetrics, Duration) {
    let attack = harness::quiet(
        GooseAttack::initialize_with_config(GooseConfiguration::default())
            .unwrap()
            .set_client_builder_without_cookies(goose::client::GooseClientBuilder::new().without_cookies())
            .unwrap()
            .register_scenario(scenario),
        host,
        users,
        secs,
    );
    let started = Instant::now();
    let metrics = timeout(ATTACK_LIMIT, attack.execute())
        .await
        .expect("the attack ends in time")
        .expect("the attack runs");
    (metrics, started.elapsed())
}

/// (successes, failures) under a Goose row.
fn row(m: &GooseMetrics, name: &str) -> (usize, usize) {
    m.requests
        .get(name)
        .map_or((0, 0), |r| (r.success_count, r.fail_count))
}

/// How often requests under `row` failed with `error`.
fn errors(m: &GooseMetrics, row: &str, error: &str) -> usize {
    m.errors
        .values()
        .filter(|e| format!("{} {}", e.custom_method, e.name) == row && e.error == error)
        .map(|e| e.occurrences)
        .sum()
}

// ---------------------------------------------------------------------------------------------
// A stub agent: accepts media streams on a free loopback port and runs `script` on each.

/// What a stub connection saw: the request path and every text message, stamped on arrival.
#[derive(Debug, Default, Clone)]
struct Seen {
    path: String,
    messages: Vec<(Instant, Event)>,
    closed_cleanly: bool,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Starts a stub agent; each connection runs `script` (which may talk back), then the stub
/// reads until the caller hangs up. Returns the host URL and what each connection saw.
async fn stub<F, Fut>(script: F) -> (String, mpsc::UnboundedReceiver<Seen>, tokio::task::JoinHandle<()>)
where
    F: Fn(Ws, Arc<Mutex<Seen>>) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Option<Ws>> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (script, tx) = (script.clone(), tx.clone());
            tokio::spawn(async move {
                let seen = Arc::new(Mutex::new(Seen::default()));
                let path = seen.clone();
                // Tungstenite's callback type fixes the (large) error type.
                #[allow(clippy::result_large_err)]
                let callback = move |req: &Request, resp: Response| {
                    path.lock().unwrap().path = req.uri().path().to_string();
                    Ok(resp)
                };
                let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
                    return;
                };
                if let Some(mut ws) = script(ws, seen.clone()).await {
                    while let Some(Ok(msg)) = ws.next().await {
                        record(&seen, msg);
                    }
                    seen.lock().unwrap().closed_cleanly = true;
                }
                let _ = tx.send(seen.lock().unwrap().clone());
            });
        }
    });
    (host, rx, server)
}

fn record(seen: &Mutex<Seen>, msg: Message) {
    if let Message::Text(text) = msg {
        let event = Event::parse(&text).expect("the caller sends valid Media Streams events");
        seen.lock().unwrap().messages.push((Instant::now(), event));
    }
}

/// Reads the caller's messages for `d`.
async fn listen(ws: &mut Ws, seen: &Mutex<Seen>, d: Duration) {
    let _ = timeout(d, async {
        while let Some(Ok(msg)) = ws.next().await {
            record(seen, msg);
        }
    })
    .await;
}

fn stream_sid(seen: &Seen) -> String {
    seen.messages
        .iter()
        .find_map(|(_, e)| match e {
            Event::Start { stream_sid, .. } => Some(stream_sid.clone()),
            _ => None,
        })
        .expect("a start message")
}

fn agent_media(sid: &str, bytes: usize) -> Message {
    let payload = base64_encode(&vec![0x55u8; bytes]);
    Message::text(format!(
        r#"{{"event":"media","streamSid":"{sid}","media":{{"payload":"{payload}"}}}}"#
    ))
}

fn agent_mark(sid: &str, name: &str) -> Message {
    Message::text(format!(
        r#"{{"event":"mark","streamSid":"{sid}","mark":{{"name":"{name}"}}}}"#
    ))
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn is_hex_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s[2..].chars().all(|c| c.is_ascii_hexdigit())
}

// ---------------------------------------------------------------------------------------------
// Against stub agents.

/// Twilio's side of the protocol, message by message: ids, counters, payloads, pacing, stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_speaks_twilio_media_streams_exactly() {
    let (host, mut seen, server) = stub(|ws, _| async move { Some(ws) }).await;
    let shared = shared(AiMode::Stream, false, 1.0, 20.0, vec![]);
    let (m, _) = attack(media_stream::media_stream_call(&shared).unwrap(), &host, 1, 2).await;
    let call = timeout(Duration::from_secs(2), seen.recv())
        .await
        .unwrap()
        .unwrap();
    server.abort();

    let events: Vec<&Event> = call.messages.iter().map(|(_, e)| e).collect();
    assert!(matches!(events[0], Event::Connected { protocol, .. } if protocol == "Call"));
    let Event::Start {
        sequence_number,
        start,
        stream_sid,
    } = events[1]
    else {
        panic!("start expected second: {:?}", events[1]);
    };
    assert_eq!(*sequence_number, 1);
    assert!(
        is_hex_sid(stream_sid, "MZ")
            && is_hex_sid(&start.call_sid, "CA")
            && is_hex_sid(&start.account_sid, "AC")
    );
    assert_eq!(call.path, format!("/webhooks/twilio/media/{}", start.call_sid));
    assert_eq!(start.tracks, vec!["inbound".to_string()]);
    assert_eq!(
        (
            start.media_format.encoding.as_str(),
            start.media_format.sample_rate,
            start.media_format.channels
        ),
        ("audio/x-mulaw", 8000, 1)
    );
    // A one-second call: 50 frames numbered on, 20 ms of audio apart, then stop.
    let media: Vec<_> = call.messages[2..call.messages.len() - 1].iter().collect();
    assert_eq!(media.len(), 50, "frames in a 1 s call");
    for (i, (_, e)) in media.iter().enumerate() {
        let Event::Media {
            sequence_number,
            media,
            stream_sid: sid,
        } = e
        else {
            panic!("media expected: {e:?}");
        };
        assert_eq!(sid, stream_sid);
        assert_eq!(*sequence_number, Some(i as u64 + 2));
        assert_eq!(media.chunk, Some(i as u64 + 1));
        assert_eq!(media.timestamp, Some(i as u64 * 20));
        assert_eq!(media.track.as_deref(), Some("inbound"));
        use base64::Engine;
        let audio = base64::engine::general_purpose::STANDARD
            .decode(&media.payload)
            .unwrap();
        assert_eq!(audio, vec![mulaw::SILENCE; 160]);
    }
    // Paced in real time: the 50 frames span 49 x 20 ms, give or take a scheduler tick (and a
    // busy machine's stall: half speed would be 1.96 s).
    let span = media[49].0 - media[0].0;
    assert!(
        span >= Duration::from_millis(960) && span < Duration::from_millis(1250),
        "{span:?}"
    );
    let Event::Stop {
        sequence_number,
        stop,
        ..
    } = events.last().unwrap()
    else {
        panic!("stop expected last");
    };
    assert_eq!(*sequence_number, 52);
    assert_eq!(stop.call_sid, start.call_sid);
    assert!(call.closed_cleanly, "the caller closes the WebSocket after stop");
    assert!(row(&m, CALL).0 >= 1 && row(&m, CONNECT).0 >= 1);
}

/// Marks are echoed when the agent audio before them has played; clear plays nothing more and
/// echoes pending marks at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marks_echo_after_playback_and_clear_flushes_them() {
    let (host, mut seen, server) = stub(|mut ws, seen| async move {
        listen(&mut ws, &seen, Duration::from_millis(200)).await;
        let sid = stream_sid(&seen.lock().unwrap());
        // 600 ms of audio, then a mark: echoed about 600 ms later.
        ws.send(agent_media(&sid, 4800)).await.ok()?;
        ws.send(agent_mark(&sid, "first")).await.ok()?;
        seen.lock().unwrap().messages.push((
            Instant::now(),
            Event::Clear {
                stream_sid: "sent first".into(),
            },
        ));
        listen(&mut ws, &seen, Duration::from_millis(1000)).await;
        // 5 s of audio and a mark, then clear: the mark comes back at once.
        ws.send(agent_media(&sid, 40_000)).await.ok()?;
        ws.send(agent_mark(&sid, "second")).await.ok()?;
        ws.send(Message::text(format!(
            r#"{{"event":"clear","streamSid":"{sid}"}}"#
        )))
        .await
        .ok()?;
        seen.lock().unwrap().messages.push((
            Instant::now(),
            Event::Clear {
                stream_sid: "sent second".into(),
            },
        ));
        Some(ws)
    })
    .await;
    // The call outlasts the run: one call, hung up when the run ends.
    let shared = shared(AiMode::Stream, false, 30.0, 20.0, vec![]);
    let (m, took) = attack(media_stream::media_stream_call(&shared).unwrap(), &host, 1, 2).await;
    assert!(
        took < Duration::from_millis(3500),
        "the run waited {took:?} for a 30 s call"
    );
    let call = timeout(Duration::from_secs(2), seen.recv())
        .await
        .unwrap()
        .unwrap();
    server.abort();

    let when = |label: &str| {
        call.messages
            .iter()
            .find_map(|(t, e)| match e {
                Event::Clear { stream_sid } if stream_sid == label => Some(*t),
                Event::Mark { mark, .. } if mark.name == label => Some(*t),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {label}"))
    };
    let first = when("first") - when("sent first");
    assert!(
        first >= Duration::from_millis(580) && first < Duration::from_millis(1000),
        "first echo after {first:?}"
    );
    let second = when("second") - when("sent second");
    assert!(
        second < Duration::from_millis(300),
        "a cleared mark is echoed at once, not after {second:?}"
    );
    let snap = shared.measurements.snapshot();
    assert_eq!(snap.streams.marks_echoed, 2);
    assert_eq!(snap.streams.clears_received, 1);
    assert_eq!(row(&m, "WS media stream: mark echo").0, 2);
    // Echoes carry Twilio's sequence numbers, in order with the media around them.
    let seqs: Vec<u64> = call
        .messages
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Media { sequence_number, .. } | Event::Mark { sequence_number, .. } => *sequence_number,
            Event::Start { sequence_number, .. } | Event::Stop { sequence_number, .. } => {
                Some(*sequence_number)
            }
            _ => None,
        })
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "sequence numbers run on"
    );
}

/// An agent that drops the line or talks nonsense fails the call with a named reason, and the
/// caller redials after a back-off instead of hammering it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_named_and_redials_back_off() {
    let (drop_host, _seen, drop_server) = stub(|mut ws, seen| async move {
        listen(&mut ws, &seen, Duration::from_millis(100)).await;
        None // dropped: the TCP connection closes without a close handshake
    })
    .await;
    let (garbage_host, _seen2, garbage_server) = stub(|mut ws, seen| async move {
        listen(&mut ws, &seen, Duration::from_millis(100)).await;
        ws.send(Message::text(r#"{"event":"dtmf","dtmf":{"digit":"1"}}"#))
            .await
            .ok()?;
        Some(ws)
    })
    .await;
    let dropped = shared(AiMode::Stream, false, 30.0, 20.0, vec![]);
    let garbled = shared(AiMode::Stream, false, 30.0, 20.0, vec![]);
    let ((m1, _), (m2, _)) = tokio::join!(
        attack(
            media_stream::media_stream_call(&dropped).unwrap(),
            &drop_host,
            2,
            3
        ),
        attack(
            media_stream::media_stream_call(&garbled).unwrap(),
            &garbage_host,
            2,
            3
        ),
    );
    drop_server.abort();
    garbage_server.abort();

    let closed = errors(&m1, CALL, "closed by server mid-call");
    let unknown = errors(&m2, CALL, "protocol error: unknown event 'dtmf'");
    for (n, m, snap) in [
        (closed, &m1, dropped.measurements.snapshot()),
        (unknown, &m2, garbled.measurements.snapshot()),
    ] {
        // Two users for about 3 s with a back-off of 0.5 s, then 1 s, ...: a handful of calls.
        assert!((2..=12).contains(&n), "failed calls {n}: {:?}", m.errors);
        assert_eq!(row(m, CALL), (0, n));
        assert_eq!(snap.streams.calls_failed, n as u64);
        assert_eq!(snap.streams.calls_connected, n as u64);
    }
}

/// A host with nothing listening: every call fails to connect, with a named reason, slowly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_agent_fails_connects_without_a_hot_loop() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let shared = shared(AiMode::Stream, false, 30.0, 20.0, vec![]);
    let (m, _) = attack(
        media_stream::media_stream_call(&shared).unwrap(),
        &format!("http://127.0.0.1:{port}"),
        2,
        2,
    )
    .await;
    let refused = errors(&m, CONNECT, "connect failed: connection refused");
    assert!((2..=10).contains(&refused), "{:?}", m.errors);
    assert_eq!(row(&m, CONNECT), (0, refused));
    let snap = shared.measurements.snapshot();
    assert_eq!(snap.streams.calls_attempted, refused as u64);
    assert_eq!(snap.streams.calls_connected, 0);
}

/// An https host is called over wss://: TLS is attempted (rustls is built in), and a peer that
/// does not speak it fails the connect with a named reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_hosts_are_called_over_wss() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = tcp
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let shared = shared(AiMode::Stream, false, 30.0, 20.0, vec![]);
    let host = format!("https://127.0.0.1:{port}");
    let (m, _) = attack(media_stream::media_stream_call(&shared).unwrap(), &host, 1, 1).await;
    server.abort();
    let tls = errors(&m, CONNECT, "connect failed: TLS error");
    assert!(tls >= 1 && row(&m, CONNECT) == (0, tls), "{:?}", m.errors);
}

// ---------------------------------------------------------------------------------------------
// Against the built-in simulator.

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

// ---------------------------------------------------------------------------------------------
// Mock mode and the parser.

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

/// Valid messages the parser must accept, to mutate.
const VALID: [&str; 5] = [
    r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
    r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"customParameters":{},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"streamSid":"MZ1"}"#,
    r#"{"event":"media","sequenceNumber":"3","media":{"track":"inbound","chunk":"1","timestamp":"5","payload":"no+JhoaJjpzSHxAKBgYJDh0="},"streamSid":"MZ1"}"#,
    r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"answer-1"}}"#,
    r#"{"event":"clear","streamSid":"MZ1"}"#,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_parser_never_panics_on_arbitrary_text(s in "\\PC*") {
        let _ = Event::parse(&s);
    }

    #[test]
    fn the_parser_never_panics_on_mutated_messages(
        which in 0..VALID.len(),
        edits in proptest::collection::vec((any::<usize>(), any::<char>(), 0..3u8), 1..8),
    ) {
        let mut chars: Vec<char> = VALID[which].chars().collect();
        for (at, c, op) in edits {
            let i = at % (chars.len() + 1);
            match op {
                0 => chars.insert(i, c),
                1 if i < chars.len() => { chars.remove(i); }
                _ if i < chars.len() => chars[i] = c,
                _ => {}
            }
        }
        let text: String = chars.into_iter().collect();
        if let Ok(event) = Event::parse(&text) {
            // Whatever parses, serializes back to something that parses the same.
            prop_assert_eq!(Event::parse(&event.to_json()).unwrap(), event);
        }
    }
}

#[test]
fn valid_messages_parse() {
    for v in VALID {
        assert!(Event::parse(v).is_ok(), "{v}");
    }
}
