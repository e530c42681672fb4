//! The original suite's WebSocket stress script as a client of the simulator, message for
//! message: `start` with no `connected` before it, random bytes as 20 ms mu-law frames, and a
//! bare `stop` (no `sequenceNumber`, no `stop` object); after each frame it waits up to 10 ms for
//! one message and counts the wait as a latency. The simulator takes that stream by default
//! (counting the deviations) and answers the noise; `strict_protocol` closes it as before.

use super::caller::{closed, open, Closed, Ws};
use super::{bounded, sim_with};
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use phone_agent_load::protocol::twilio::{sid, Event};
use phone_agent_load::simulator::DEFAULT_MAX_UTTERANCE_MS;
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// One of the script's connections, and what it saw.
struct ScriptedStream {
    ws: Ws,
    stream_sid: String,
    sequence: u64,
    /// The script's figure: from sending a frame to a message arriving within 10 ms of it.
    latencies_ms: Vec<f64>,
    /// When the first frame and the first agent audio went out and came in.
    first_frame: Option<Instant>,
    first_answer: Option<Instant>,
    /// Every message received, in order, as the agent's event names.
    received: Vec<String>,
}

impl ScriptedStream {
    /// Connects and sends the script's `start` (its first message: no `connected`).
    async fn start(addr: SocketAddr) -> ScriptedStream {
        let ws = open(addr).await.expect("upgrade accepted");
        let (stream_sid, call_sid) = (sid("MZ"), sid("CA"));
        let mut stream = ScriptedStream {
            ws,
            stream_sid,
            sequence: 2,
            latencies_ms: Vec::new(),
            first_frame: None,
            first_answer: None,
            received: Vec::new(),
        };
        let start = json!({
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "streamSid": stream.stream_sid,
                "accountSid": sid("AC"),
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": {},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": stream.stream_sid,
        });
        stream.send(start).await;
        stream
    }

    async fn send(&mut self, message: serde_json::Value) {
        self.ws
            .send(Message::text(message.to_string()))
            .await
            .expect("the simulator takes the message");
    }

    /// Streams random bytes for `duration` as the script does, a frame every 20 ms.
    async fn stream_noise(&mut self, duration: Duration) {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            let sent_at = Instant::now();
            self.first_frame.get_or_insert(sent_at);
            let noise: Vec<u8> = (0..160).map(|_| rand::random::<u8>()).collect();
            let epoch_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
            let media = json!({
                "event": "media",
                "sequenceNumber": self.sequence.to_string(),
                "media": {
                    "track": "inbound",
                    "chunk": self.sequence.to_string(),
                    "timestamp": epoch_ms.to_string(),
                    "payload": base64::engine::general_purpose::STANDARD.encode(noise),
                },
                "streamSid": self.stream_sid,
            });
            self.send(media).await;
            self.sequence += 1;
            if let Ok(Some(Ok(Message::Text(text)))) =
                tokio::time::timeout(Duration::from_millis(10), self.ws.next()).await
            {
                self.latencies_ms.push(sent_at.elapsed().as_secs_f64() * 1000.0);
                self.note(&text);
            }
            tokio::time::sleep(Duration::from_millis(20).saturating_sub(sent_at.elapsed())).await;
        }
    }

    fn note(&mut self, text: &str) {
        let event = Event::parse(text).expect("the agent speaks the protocol");
        if event.name() == "media" {
            self.first_answer.get_or_insert_with(Instant::now);
        }
        self.received.push(event.name().to_string());
    }

    /// Sends the script's bare `stop` and reads what is left until the connection closes.
    async fn stop(&mut self) -> Closed {
        let stop = json!({"event": "stop", "streamSid": self.stream_sid});
        self.send(stop).await;
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => self.note(&text),
                Some(Ok(Message::Close(frame))) => {
                    let frame = frame.map(|f| (f.code, f.reason.to_string()));
                    // Let the close handshake finish, as the script's client does.
                    let _ = closed(&mut self.ws).await;
                    return Closed::Frame(frame);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Closed::Abruptly,
            }
        }
    }

    fn average_latency_ms(&self) -> f64 {
        self.latencies_ms.iter().sum::<f64>() / self.latencies_ms.len().max(1) as f64
    }
}

#[tokio::test]
async fn the_scripts_stream_is_taken_and_its_deviations_counted() {
    bounded(10, async {
        let sim = sim_with(|_| {}).await;
        let mut stream = ScriptedStream::start(sim.addr()).await;
        stream.stream_noise(Duration::from_secs(1)).await;
        assert_eq!(
            stream.stop().await,
            Closed::Frame(Some((CloseCode::Normal, "stop received".into())))
        );
        let frames = stream.sequence - 2;
        let stats = sim.stats();
        let s = &stats["streams"];
        assert_eq!(s["accepted"], 1);
        assert_eq!(s["completed"], 1, "{s}");
        assert_eq!(s["closed_without_stop"], 0);
        assert_eq!(s["media_frames"], frames);
        assert_eq!(s["protocol_errors"], json!({}));
        assert_eq!(
            s["protocol_deviations"],
            json!({"start without connected": 1, "bare stop": 1})
        );
        assert_eq!(s["bad_sequence"], 0);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn noise_is_answered_after_the_longest_utterance() {
    bounded(15, async {
        let sim = sim_with(|_| {}).await;
        let mut stream = ScriptedStream::start(sim.addr()).await;
        stream.stream_noise(Duration::from_millis(4_500)).await;
        let close = stream.stop().await;
        assert_eq!(
            close,
            Closed::Frame(Some((CloseCode::Normal, "stop received".into())))
        );
        // Cut at the longest utterance, then answered after the pipeline for 2.5 s of speech
        // (0.82-1.24 s).
        let max_utterance = Duration::from_millis(DEFAULT_MAX_UTTERANCE_MS);
        let wait = stream.first_answer.expect("an answer") - stream.first_frame.unwrap();
        assert!(
            wait >= max_utterance && wait < max_utterance + Duration::from_millis(1_700),
            "first answer {wait:?} after the first frame"
        );
        let first_mark = stream.received.iter().position(|e| e == "mark");
        let first_media = stream.received.iter().position(|e| e == "media");
        assert!(first_mark > first_media, "{:?}", stream.received);
        assert!(stream.received.iter().all(|e| e == "media" || e == "mark"));
        let latency = stream.average_latency_ms();
        assert!(latency > 0.0 && latency < 20.0, "{latency} ms");
        eprintln!(
            "suite script: first answer {:.2} s after the first frame; {} messages received, \
             {} read within 10 ms of a frame, average latency {latency:.2} ms",
            wait.as_secs_f64(),
            stream.received.len(),
            stream.latencies_ms.len(),
        );
        let s = &sim.stats()["streams"];
        assert_eq!(s["utterances"], 1, "{s}");
        assert_eq!(s["answers"], 1);
        assert_eq!(s["clears_sent"], 0, "noise going on is no barge-in");
        assert_eq!(s["completed"], 1);
        sim.shutdown().await;
    })
    .await;
}

/// Noise going on through an answer is cut into utterances as ever, and none is answered until
/// the answer has played: the agent does not talk over itself, and the script's backlog stays small.
#[tokio::test]
async fn noise_through_an_answer_is_not_answered_again_until_it_has_played() {
    bounded(10, async {
        let sim = sim_with(|o| o.max_utterance_ms = 1_000).await;
        let mut stream = ScriptedStream::start(sim.addr()).await;
        stream.stream_noise(Duration::from_millis(3_500)).await;
        stream.stop().await;
        let wait = stream.first_answer.expect("an answer") - stream.first_frame.unwrap();
        assert!(wait >= Duration::from_millis(1_000), "{wait:?}");
        // Cut at 1, 2 and 3 s; the answer to the first (about 2 s of audio, out by 1.7 s) still
        // plays at the other two.
        let s = &sim.stats()["streams"];
        assert_eq!(s["utterances"], 3, "{s}");
        assert_eq!(s["answers"], 1);
        assert_eq!(s["answers_skipped"], 2);
        assert_eq!(s["answers_cancelled"], 0);
        assert_eq!(stream.received.iter().filter(|e| *e == "mark").count(), 1);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn strict_protocol_closes_the_scripts_stream_as_before() {
    bounded(10, async {
        let sim = sim_with(|o| o.strict_protocol = true).await;
        let mut stream = ScriptedStream::start(sim.addr()).await;
        assert_eq!(
            closed(&mut stream.ws).await,
            Closed::Frame(Some((CloseCode::Protocol, "start before connected".into())))
        );
        // With `connected` first, its bare stop is malformed.
        let mut ws = open(sim.addr()).await.unwrap();
        let stream_sid = sid("MZ");
        for message in [
            json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
            json!({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
                   "start": {"streamSid": stream_sid, "accountSid": sid("AC"), "callSid": sid("CA"),
                             "tracks": ["inbound"], "mediaFormat":
                             {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}),
            json!({"event": "stop", "streamSid": stream_sid}),
        ] {
            ws.send(Message::text(message.to_string())).await.unwrap();
        }
        assert_eq!(
            closed(&mut ws).await,
            Closed::Frame(Some((CloseCode::Protocol, "malformed event".into())))
        );
        let s = &sim.stats()["streams"];
        assert_eq!(
            s["protocol_errors"],
            json!({"start before connected": 1, "malformed event": 1})
        );
        assert_eq!(s["protocol_deviations"], json!({}));
        assert_eq!(s["completed"], 0);
        sim.shutdown().await;
    })
    .await;
}
