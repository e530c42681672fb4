//! Twilio's side of a Media Streams call, for the media tests: connecting, sending frames, marks
//! and `stop`, and noting what the agent sends back and how the connection ended.

use super::sid;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use phone_agent_load::protocol::mulaw;
use phone_agent_load::protocol::twilio::{Event, Mark, MediaFormat, Start, Stop};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(super) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(super) async fn open(addr: SocketAddr) -> Result<Ws, tungstenite::Error> {
    let url = format!("ws://{addr}/webhooks/twilio/media/{}", sid("CA", 5));
    tokio_tungstenite::connect_async(url).await.map(|(ws, _)| ws)
}

/// A 440 Hz tone, loud enough to be speech, in 20 ms mu-law frames.
pub(super) fn tone(frames: usize) -> Vec<Vec<u8>> {
    let samples: Vec<i16> = (0..frames * 160)
        .map(|i| (10_000.0 * (std::f64::consts::TAU * 440.0 * i as f64 / 8000.0).sin()) as i16)
        .collect();
    mulaw::encode_all(&samples)
        .chunks(160)
        .map(<[u8]>::to_vec)
        .collect()
}

/// Twilio's side of one call.
pub(super) struct Caller {
    pub(super) ws: Ws,
    pub(super) seq: u64,
    pub(super) chunk: u64,
    pub(super) stream_sid: String,
}

/// How a connection ended, seen from the caller.
#[derive(Debug, PartialEq)]
pub(super) enum Closed {
    /// With a close frame (code, reason).
    Frame(Option<(CloseCode, String)>),
    /// The TCP connection just ended.
    Abruptly,
}

/// What the agent sent back while the caller talked.
#[derive(Debug, Default)]
pub(super) struct Heard {
    pub(super) media: usize,
    pub(super) marks: Vec<String>,
    pub(super) clears: usize,
    pub(super) first_media: Option<Instant>,
    pub(super) mark_at: Option<Instant>,
    pub(super) clear_at: Option<Instant>,
    pub(super) speech_end: Option<Instant>,
    pub(super) closed: Option<Closed>,
}

impl Caller {
    /// Connects and sends `connected` and `start`.
    pub(super) async fn connect(addr: SocketAddr) -> Caller {
        let mut caller = Caller {
            ws: open(addr).await.expect("upgrade accepted"),
            seq: 0,
            chunk: 0,
            stream_sid: sid("MZ", 3),
        };
        caller
            .text(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.into())
            .await;
        caller.seq += 1;
        let start = Event::Start {
            sequence_number: caller.seq,
            start: Start {
                account_sid: sid("AC", 2),
                stream_sid: caller.stream_sid.clone(),
                call_sid: sid("CA", 5),
                tracks: vec!["inbound".into()],
                custom_parameters: Default::default(),
                media_format: MediaFormat::default(),
            },
            stream_sid: caller.stream_sid.clone(),
        };
        caller.text(start.to_json()).await;
        caller
    }

    async fn text(&mut self, text: String) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub(super) async fn frame(&mut self, mulaw: &[u8]) {
        self.seq += 1;
        self.chunk += 1;
        let payload = base64::engine::general_purpose::STANDARD.encode(mulaw);
        let text = json!({
            "event": "media",
            "sequenceNumber": self.seq.to_string(),
            "media": {"track": "inbound", "chunk": self.chunk.to_string(),
                      "timestamp": ((self.chunk - 1) * 20).to_string(), "payload": payload},
            "streamSid": self.stream_sid,
        });
        self.text(text.to_string()).await;
    }

    pub(super) async fn mark(&mut self, name: &str) {
        self.seq += 1;
        let mark = Event::Mark {
            sequence_number: Some(self.seq),
            mark: Mark { name: name.into() },
            stream_sid: self.stream_sid.clone(),
        };
        self.text(mark.to_json()).await;
    }

    pub(super) async fn stop(&mut self) {
        self.seq += 1;
        let stop = Event::Stop {
            sequence_number: self.seq,
            stop: Stop {
                account_sid: sid("AC", 2),
                call_sid: sid("CA", 5),
            },
            stream_sid: self.stream_sid.clone(),
        };
        self.text(stop.to_json()).await;
    }

    /// Sends `speech`, then silence, a frame every 20 ms, noting what comes back, until
    /// `done` says so, the connection closes, or `limit` passes.
    pub(super) async fn talk(
        &mut self,
        speech: &[Vec<u8>],
        limit: Duration,
        done: impl Fn(&Heard) -> bool,
    ) -> Heard {
        let mut heard = Heard::default();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let (mut sent, end) = (0, Instant::now() + limit);
        while !done(&heard) && heard.closed.is_none() && Instant::now() < end {
            tokio::select! {
                _ = tick.tick() => {
                    match speech.get(sent) {
                        Some(f) => self.frame(f).await,
                        None => self.frame(&[mulaw::SILENCE; 160]).await,
                    }
                    sent += 1;
                    if sent == speech.len() {
                        heard.speech_end = Some(Instant::now());
                    }
                }
                msg = self.ws.next() => hear(&mut heard, msg),
            }
        }
        heard
    }
}

fn hear(heard: &mut Heard, msg: Option<Result<Message, tungstenite::Error>>) {
    let text = match msg {
        Some(Ok(Message::Text(t))) => t,
        Some(Ok(Message::Close(frame))) => {
            heard.closed = Some(Closed::Frame(frame.map(|f| (f.code, f.reason.to_string()))));
            return;
        }
        Some(Ok(_)) => return,
        Some(Err(_)) | None => return heard.closed = Some(Closed::Abruptly),
    };
    match Event::parse(&text).expect("the agent speaks the protocol") {
        Event::Media { media, .. } => {
            let audio = base64::engine::general_purpose::STANDARD
                .decode(media.payload)
                .unwrap();
            assert_eq!(audio.len(), 160);
            heard.media += 1;
            heard.first_media.get_or_insert_with(Instant::now);
        }
        Event::Mark { mark, .. } => {
            heard.marks.push(mark.name);
            heard.mark_at = Some(Instant::now());
        }
        Event::Clear { .. } => {
            heard.clears += 1;
            heard.clear_at = Some(Instant::now());
        }
        other => panic!("the agent sent {other:?}"),
    }
}

/// Reads until the connection ends.
pub(super) async fn closed(ws: &mut Ws) -> Closed {
    let mut heard = Heard::default();
    while heard.closed.is_none() {
        hear(&mut heard, ws.next().await);
    }
    heard.closed.unwrap()
}
