//! Media Streams calls against the simulator: an answer and its mark, a slower pipeline, barge-in,
//! the stream cap, protocol errors, dropped streams, shutdown, many calls at once, and (ignored, a
//! measurement) the real-time factor over the twelve built-in utterances.

use super::caller::{closed, open, tone, Caller, Closed};
use super::{api, bounded, sid, sim_with};
use futures_util::SinkExt;
use phone_agent_load::protocol::mulaw;
use reqwest::StatusCode;
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

#[tokio::test]
async fn a_scripted_call_gets_an_answer_and_a_mark() {
    bounded(10, async {
        let sim = sim_with(|_| {}).await;
        let mut caller = Caller::connect(sim.addr()).await;
        let heard = caller
            .talk(&tone(50), Duration::from_secs(5), |h| !h.marks.is_empty())
            .await;
        assert_eq!(heard.marks, ["answer-1"]);
        assert_eq!(heard.clears, 0);
        // One second of speech -> about 3 words -> a 6-word answer of about 35 characters, 60 ms each.
        assert!((60..=160).contains(&heard.media), "{} answer frames", heard.media);
        // max(hangover 0.5 s, pipeline 0.44-0.67 s) after the end of speech.
        let wait = heard.first_media.unwrap() - heard.speech_end.unwrap();
        assert!(
            wait >= Duration::from_millis(480) && wait < Duration::from_millis(1100),
            "{wait:?}"
        );
        // One burst: the mark comes right after the frames.
        assert!(heard.mark_at.unwrap() - heard.first_media.unwrap() < Duration::from_millis(250));

        caller.mark("answer-1").await;
        caller.mark("someone-elses-mark").await;
        caller.stop().await;
        assert_eq!(
            closed(&mut caller.ws).await,
            Closed::Frame(Some((CloseCode::Normal, "stop received".into())))
        );
        let frames_sent = caller.seq - 4; // all but start, the two marks and stop
        let stats = sim.stats();
        let s = &stats["streams"];
        assert_eq!(s["accepted"], 1);
        assert_eq!(s["completed"], 1);
        assert_eq!(s["media_frames"], frames_sent);
        assert_eq!(s["media_bytes"], frames_sent * 160);
        assert_eq!(s["utterances"], 1);
        assert_eq!(s["answers"], 1);
        assert_eq!(s["answer_frames"], heard.media);
        assert_eq!(s["marks_echoed"], 1);
        assert_eq!(s["unknown_marks"], 1);
        assert_eq!(s["bad_sequence"], 0);
        assert_eq!(s["protocol_errors"], json!({}));
        assert_eq!(stats["requests"]["GET /webhooks/twilio/media/{call_sid}"], 1);
        assert_eq!(stats["status_codes"]["101"], 1);
        sim.shutdown().await;
    })
    .await;
}

/// Seconds from the end of one second of speech to the first answer frame.
async fn answer_wait(addr: SocketAddr) -> Duration {
    let mut caller = Caller::connect(addr).await;
    let heard = caller
        .talk(&tone(50), Duration::from_secs(6), |h| h.first_media.is_some())
        .await;
    heard.first_media.expect("an answer") - heard.speech_end.unwrap()
}

#[tokio::test]
async fn a_slower_pipeline_answers_later() {
    bounded(10, async {
        let normal = sim_with(|_| {}).await;
        let slow = sim_with(|o| o.ai_slowdown = 3.0).await;
        let (w1, w3) = tokio::join!(answer_wait(normal.addr()), answer_wait(slow.addr()));
        // x1: max(0.5 s, 0.44-0.67 s); x3: 1.31-2.0 s.
        assert!(w3 > Duration::from_millis(1250), "{w3:?}");
        assert!(w3.as_secs_f64() > 1.7 * w1.as_secs_f64(), "{w1:?} vs {w3:?}");
        normal.shutdown().await;
        slow.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn speaking_over_the_answer_gets_a_clear() {
    bounded(10, async {
        let sim = sim_with(|_| {}).await;
        let mut caller = Caller::connect(sim.addr()).await;
        let answer = caller
            .talk(&tone(50), Duration::from_secs(5), |h| !h.marks.is_empty())
            .await;
        assert_eq!(answer.marks, ["answer-1"]);
        // The answer plays for over a second; interrupt it at once, without echoing the mark.
        let barge = caller
            .talk(&tone(25), Duration::from_secs(5), |h| h.marks.len() == 1)
            .await;
        assert_eq!(barge.clears, 1);
        let clear_wait = barge.clear_at.unwrap() - answer.mark_at.unwrap();
        assert!(clear_wait < Duration::from_millis(300), "{clear_wait:?}");
        // The interruption is an utterance too, and gets its own answer.
        assert_eq!(barge.marks, ["answer-2"]);
        // Once an answer has been heard out (mark echoed), speaking is no barge-in.
        caller.mark("answer-2").await;
        let calm = caller
            .talk(&tone(10), Duration::from_millis(400), |_| false)
            .await;
        assert_eq!(calm.clears, 0);
        let s = &sim.stats()["streams"];
        assert_eq!(s["clears_sent"], 1);
        assert_eq!(s["answers"], 2);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn the_stream_cap_refuses_with_503() {
    bounded(10, async {
        let sim = sim_with(|o| o.max_streams = Some(2)).await;
        let mut first = Caller::connect(sim.addr()).await;
        let _second = Caller::connect(sim.addr()).await;
        match open(sim.addr()).await {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
            other => panic!("expected a 503 refusal, got {:?}", other.map(|_| "a connection")),
        }
        let s = &sim.stats()["streams"];
        assert_eq!(
            (
                s["accepted"].as_u64(),
                s["refused"].as_u64(),
                s["active"].as_u64()
            ),
            (Some(2), Some(1), Some(2))
        );
        // A call that ends frees its place.
        first.stop().await;
        closed(&mut first.ws).await;
        while sim.stats()["streams"]["active"] != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(open(sim.addr()).await.is_ok());
        sim.shutdown().await;
    })
    .await;
}

/// Sends `messages` on a fresh connection and returns how the server closed it.
async fn broken_call(addr: SocketAddr, messages: Vec<Message>) -> Closed {
    let mut ws = open(addr).await.expect("upgrade accepted");
    for m in messages {
        if ws.send(m).await.is_err() {
            break;
        }
    }
    closed(&mut ws).await
}

#[tokio::test]
async fn protocol_errors_close_with_a_reason_and_are_counted() {
    bounded(10, async {
        let sim = sim_with(|_| {}).await;
        let api = api(&sim);
        let connected = || Message::text(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#);
        let media = |seq: u64| {
            Message::text(format!(
                r#"{{"event":"media","sequenceNumber":"{seq}","media":{{"payload":"/////w=="}},"streamSid":"{}"}}"#,
                sid("MZ", 3)
            ))
        };
        let cases: Vec<(Vec<Message>, CloseCode, &str)> = vec![
            (vec![connected(), media(2)], CloseCode::Protocol, "media before start"),
            (vec![Message::text("{")], CloseCode::Protocol, "malformed event"),
            (vec![Message::text(r#"{"event":"dtmf","dtmf":{"digit":"1"}}"#)], CloseCode::Protocol, "unknown event"),
            (vec![Message::binary(vec![1u8, 2, 3])], CloseCode::Unsupported, "binary frame"),
            (vec![Message::text("x".repeat(100_000))], CloseCode::Size, "message too large"),
            (vec![connected(), connected()], CloseCode::Protocol, "connected sent twice or late"),
            (vec![Message::text(r#"{"event":"media","streamSid":"MZ1"}"#)], CloseCode::Protocol, "malformed event"),
        ];
        for (messages, code, reason) in cases {
            let got = broken_call(sim.addr(), messages).await;
            assert_eq!(got, Closed::Frame(Some((code, reason.into()))), "{reason}");
        }
        // A sequence number going backwards is counted, not fatal.
        let mut caller = Caller::connect(sim.addr()).await;
        caller.frame(&[mulaw::SILENCE; 160]).await;
        caller.seq = 1;
        caller.frame(&[mulaw::SILENCE; 160]).await;
        // Media on another stream is fatal.
        caller.stream_sid = sid("MZ", 4);
        caller.frame(&[mulaw::SILENCE; 160]).await;
        assert_eq!(
            closed(&mut caller.ws).await,
            Closed::Frame(Some((CloseCode::Protocol, "streamSid differs from the start event's".into())))
        );

        let stats = sim.stats();
        let errors = &stats["streams"]["protocol_errors"];
        assert_eq!(errors["malformed event"], 2);
        assert_eq!(errors["binary frame"], 1);
        assert_eq!(errors["media before start"], 1);
        assert_eq!(errors["message too large"], 1);
        assert_eq!(stats["streams"]["bad_sequence"], 1);
        assert_eq!(stats["streams"]["media_frames"], 2);
        // A plain HTTP GET on the media endpoint is refused, not upgraded.
        assert_eq!(api.get("/webhooks/twilio/media/CA1").await.0, StatusCode::BAD_REQUEST);
        // And the server is fine.
        assert_eq!(api.get("/api/v1/health").await.0, StatusCode::OK);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn dropped_streams_end_without_a_close_frame() {
    bounded(10, async {
        let sim = sim_with(|o| o.drop_rate = 1.0).await;
        let mut caller = Caller::connect(sim.addr()).await;
        let t = Instant::now();
        let heard = caller.talk(&[], Duration::from_secs(7), |_| false).await;
        assert_eq!(heard.closed, Some(Closed::Abruptly));
        let after = t.elapsed();
        assert!(
            after >= Duration::from_millis(950) && after <= Duration::from_millis(5200),
            "{after:?}"
        );
        assert_eq!(sim.stats()["streams"]["dropped"], 1);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_closes_live_streams_as_going_away() {
    bounded(10, async {
        let sim = sim_with(|_| {}).await;
        let mut caller = Caller::connect(sim.addr()).await;
        caller.frame(&[mulaw::SILENCE; 160]).await;
        let t = Instant::now();
        let ((), close) = tokio::join!(sim.shutdown(), closed(&mut caller.ws));
        assert_eq!(
            close,
            Closed::Frame(Some((CloseCode::Away, "server shutting down".into())))
        );
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    })
    .await;
}

#[tokio::test]
async fn many_silent_streams_are_all_counted() {
    bounded(20, async {
        let sim = sim_with(|_| {}).await;
        let addr = sim.addr();
        let calls: Vec<_> = (0..100)
            .map(|_| {
                tokio::spawn(async move {
                    let mut caller = Caller::connect(addr).await;
                    for _ in 0..25 {
                        caller.frame(&[mulaw::SILENCE; 160]).await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    caller.stop().await;
                    closed(&mut caller.ws).await
                })
            })
            .collect();
        for call in calls {
            assert_eq!(
                call.await.unwrap(),
                Closed::Frame(Some((CloseCode::Normal, "stop received".into())))
            );
        }
        let s = &sim.stats()["streams"];
        assert_eq!(s["completed"], 100);
        assert_eq!(s["media_frames"], 2500);
        assert_eq!(s["utterances"], 0);
        sim.shutdown().await;
    })
    .await;
}

// ---- Real-time factor over the twelve utterances (a measurement, about 12 s) ----

/// RTF of each of the built-in utterances, spoken at once on separate calls.
async fn rtf_per_utterance(addr: SocketAddr) -> Vec<(f64, f64)> {
    let calls = phone_agent_load::config::utterances::builtin()
        .into_iter()
        .map(|u| async move {
            let seconds = phone_agent_load::config::utterances::duration(&u).as_secs_f64();
            let speech: Vec<Vec<u8>> = u.mulaw.chunks(160).map(<[u8]>::to_vec).collect();
            let mut caller = Caller::connect(addr).await;
            let heard = caller
                .talk(&speech, Duration::from_secs(20), |h| !h.marks.is_empty())
                .await;
            let turn = heard.mark_at.expect("an answer") - heard.speech_end.unwrap();
            (seconds, turn.as_secs_f64() / seconds)
        });
    futures_util::future::join_all(calls).await
}

#[tokio::test]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn the_twelve_utterances_answer_in_real_time() {
    bounded(40, async {
        let normal = sim_with(|_| {}).await;
        let slow = sim_with(|o| o.ai_slowdown = 3.0).await;
        let (x1, x3) = tokio::join!(rtf_per_utterance(normal.addr()), rtf_per_utterance(slow.addr()));
        for ((seconds, r1), (_, r3)) in x1.iter().zip(&x3) {
            println!("{seconds:5.2} s of speech: RTF {r1:.2} (x3: {r3:.2})");
        }
        let mean = |v: &[(f64, f64)]| v.iter().map(|(_, r)| r).sum::<f64>() / v.len() as f64;
        let (m1, m3) = (mean(&x1), mean(&x3));
        println!("mean RTF {m1:.2}, with --ai-slowdown 3 {m3:.2} ({:.1}x)", m3 / m1);
        assert!(m1 < 0.7, "mean RTF {m1}");
        assert!(m3 > 1.0 && m3 / m1 > 2.3, "{m1} vs {m3}");
        normal.shutdown().await;
        slow.shutdown().await;
    })
    .await;
}
