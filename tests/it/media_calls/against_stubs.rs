//! Calls against stub agents that script the Twilio conversation exactly: Twilio's side of the
//! protocol message by message, mark echo timing and clear, failures named with a back-off before
//! redialling, an unreachable agent, and wss:// for https hosts.

use super::{attack, errors, row, shared, CALL, CONNECT};
use futures_util::{SinkExt, StreamExt};
use phone_agent_load::config::plan::AiMode;
use phone_agent_load::protocol::{mulaw, Event};
use phone_agent_load::scenarios::media_stream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

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
// The calls.

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
