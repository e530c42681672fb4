//! One live call over the WebSocket: dial (`connected`, `start`), stream `media` frames on an
//! absolute 20 ms schedule while reading the agent's messages, echo `mark`s as the loudspeaker
//! plays them out, and hang up (`stop`) or abort with a close frame naming the failure.

use super::failure::{CallFailure, ProtocolFailure};
use super::lateness::Lateness;
use super::loudspeaker::Loudspeaker;
use super::unknown_events::UnknownEvents;
use super::{Flow, Heard, Names, Record, Script, FRAME, MAX_AGENT_MESSAGE, WS};
use crate::measure::{StreamStats, LATE_FRAME_US};
use crate::protocol::media_writer::{encode_media, payload_len, MediaNumbers};
use crate::protocol::twilio::{self, sid, Event, MediaFormat};
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

/// Longest wait for the WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for one message to leave (a server that stopped reading).
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a hang-up waits for the server's close reply.
const HANGUP_GRACE: Duration = Duration::from_millis(500);
/// How long a call failed by a protocol error waits to send its close frame.
const ABORT_GRACE: Duration = Duration::from_millis(200);
/// Due frames sent at once to catch up; older ones are skipped (and counted), never bunched.
const MAX_CATCH_UP: u64 = 3;
/// The longest reason a close frame holds, in bytes.
const MAX_CLOSE_REASON: usize = 123;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The media-stream URL of a call: the host with http -> ws and https -> wss.
pub fn media_url(host: &Url, call_sid: &str) -> Result<Url, CallFailure> {
    let scheme = match host.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => {
            return Err(CallFailure::BadScheme {
                scheme: other.to_string(),
            })
        }
    };
    let mut url = host.clone();
    url.set_scheme(scheme)
        .map_err(|()| CallFailure::NotWebSocketUrl)?;
    url.set_path(&format!("/webhooks/twilio/media/{call_sid}"));
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// One live call: the WebSocket, Twilio's counters and the 20 ms clock.
pub struct Call {
    ws: Ws,
    call_sid: String,
    stream_sid: String,
    account_sid: String,
    /// The last `sequenceNumber` sent.
    seq: u64,
    /// The last media `chunk` sent.
    chunk: u64,
    /// Slot 0 of the frame schedule: slot n is due at t0 + n x 20 ms.
    t0: Instant,
    next_slot: u64,
    speaker: Loudspeaker,
    /// Frame lateness since the last flush, by 0.1 ms step (folded into `stats` on flush).
    lateness: Lateness,
    /// Tallies since the last flush.
    stats: StreamStats,
    /// Custom requests since the last flush.
    pub(super) records: Vec<Record>,
    names: &'static Names,
    /// When the handshake completed.
    connected_at: Instant,
}

impl Call {
    /// Dials: WebSocket handshake, then `connected` and `start`. `stats` gets the attempt.
    pub async fn dial(
        host: &Url,
        names: &'static Names,
        stats: &mut StreamStats,
    ) -> Result<Call, CallFailure> {
        stats.calls_attempted += 1;
        let call_sid = sid("CA");
        let url = media_url(host, &call_sid)?;
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_message_size(Some(MAX_AGENT_MESSAGE))
            .max_frame_size(Some(MAX_AGENT_MESSAGE));
        let started = Instant::now();
        let connect = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true);
        let ws = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Err(_) => return Err(CallFailure::Timeout),
            Ok(Err(e)) => return Err(CallFailure::from_handshake(e, url.scheme() == "wss")),
            Ok(Ok((ws, _response))) => ws,
        };
        let took = started.elapsed();
        stats.calls_connected += 1;
        stats.connect_us.record(took.as_micros() as u64);
        let now = Instant::now();
        let mut call = Call {
            ws,
            call_sid,
            stream_sid: sid("MZ"),
            account_sid: sid("AC"),
            seq: 0,
            chunk: 0,
            t0: now,
            next_slot: 0,
            speaker: Loudspeaker::default(),
            lateness: Lateness::default(),
            stats: StreamStats::default(),
            records: vec![Record::ok(WS, names.connect, took)],
            names,
            connected_at: now,
        };
        call.send_opening().await?;
        Ok(call)
    }

    async fn send_opening(&mut self) -> Result<(), CallFailure> {
        let connected = Event::Connected {
            protocol: "Call".into(),
            version: "1.0.0".into(),
        };
        self.send_text(connected.to_json()).await?;
        self.seq = 1;
        let start = Event::Start {
            sequence_number: self.seq,
            start: twilio::Start {
                account_sid: self.account_sid.clone(),
                stream_sid: self.stream_sid.clone(),
                call_sid: self.call_sid.clone(),
                tracks: vec!["inbound".into()],
                custom_parameters: Default::default(),
                media_format: MediaFormat::default(),
            },
            stream_sid: self.stream_sid.clone(),
        };
        self.send_text(start.to_json()).await?;
        // The media clock starts with the stream.
        self.t0 = Instant::now();
        Ok(())
    }

    /// The tallies since the last call, lateness included; the call starts afresh.
    pub fn take_stats(&mut self) -> StreamStats {
        self.lateness.fold_into(&mut self.stats);
        std::mem::take(&mut self.stats)
    }

    /// How long the call has been up.
    pub fn age(&self) -> Duration {
        self.connected_at.elapsed()
    }

    /// Streams until `until`, or until the script hangs up (`Flow::HangUp`): frames on the
    /// 20 ms schedule, the agent's messages read in between. Unknown event names are named
    /// as the run's `unknown_events` allows.
    pub async fn stream<S: Script>(
        &mut self,
        until: Instant,
        script: &mut S,
        unknown_events: &UnknownEvents,
    ) -> Result<Flow, CallFailure> {
        let sleep = tokio::time::sleep_until(until);
        tokio::pin!(sleep);
        loop {
            let now = Instant::now();
            self.echo_played(now, script).await?;
            if script.poll(now) == Flow::HangUp {
                return Ok(Flow::HangUp);
            }
            self.send_due_frames(now, script).await?;
            if now >= until {
                return Ok(Flow::Continue);
            }
            let wake = [
                Some(self.slot_time(self.next_slot)),
                Some(until),
                self.speaker.next_due(),
                script.deadline(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(until);
            if wake > now {
                sleep.as_mut().reset(wake);
                tokio::select! {
                    biased;
                    () = &mut sleep => {}
                    msg = self.ws.next() => self.receive(msg, script, unknown_events)?,
                }
            } else {
                // Time passed while sending: go round again, but let other calls run first.
                tokio::task::yield_now().await;
            }
        }
    }

    fn slot_time(&self, slot: u64) -> Instant {
        self.t0 + Duration::from_micros(slot * FRAME.as_micros() as u64)
    }

    /// Slots due by `now` (slot n is due at t0 + n x 20 ms).
    fn slots_due(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.t0).as_micros() / FRAME.as_micros()) as u64 + 1
    }

    async fn send_due_frames<S: Script>(&mut self, now: Instant, script: &mut S) -> Result<(), CallFailure> {
        let due = self.slots_due(now);
        if self.next_slot >= due {
            return Ok(());
        }
        let behind = due - self.next_slot;
        if behind > MAX_CATCH_UP {
            // Far behind: the missed audio is gone, as on a real line; count it, don't burst it.
            let skip = behind - MAX_CATCH_UP;
            for _ in 0..skip {
                script.next_frame(now);
            }
            self.stats.frames_scheduled += skip;
            self.stats.frames_skipped += skip;
            self.stats.frames_late += skip;
            self.next_slot += skip;
        }
        while self.next_slot < due {
            let slot = self.next_slot;
            self.next_slot += 1;
            let message = self.media_message(slot, script.next_frame(now));
            let late = Instant::now().saturating_duration_since(self.slot_time(slot));
            let late_us = late.as_micros() as u64;
            self.stats.frames_scheduled += 1;
            self.lateness.record(late_us, &mut self.stats);
            if late_us > LATE_FRAME_US {
                self.stats.frames_late += 1;
            }
            self.send(message).await?;
            self.stats.frames_sent += 1;
        }
        Ok(())
    }

    /// Slot `slot`'s `media` message, written without serde or allocation (the buffer is the
    /// thread's, reclaimed once the frame is on its way).
    fn media_message(&mut self, slot: u64, audio: Option<&[u8]>) -> Message {
        self.seq += 1;
        self.chunk += 1;
        let numbers = MediaNumbers {
            sequence_number: self.seq,
            chunk: self.chunk,
            timestamp: slot * FRAME.as_millis() as u64,
        };
        let bytes = encode_media(numbers, audio, &self.stream_sid);
        // Only ASCII was written, so this never fails.
        Message::Text(Utf8Bytes::try_from(bytes).unwrap_or_default())
    }

    async fn send_text(&mut self, text: String) -> Result<(), CallFailure> {
        self.send(Message::Text(text.into())).await
    }

    async fn send(&mut self, msg: Message) -> Result<(), CallFailure> {
        let len = msg.len() as u64;
        bounded(SEND_TIMEOUT, self.ws.send(msg))
            .await?
            .map_err(CallFailure::from_stream)?;
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += len;
        Ok(())
    }

    fn receive<S: Script>(
        &mut self,
        msg: Option<Result<Message, tungstenite::Error>>,
        script: &mut S,
        unknown_events: &UnknownEvents,
    ) -> Result<(), CallFailure> {
        let text = match msg {
            None => return Err(CallFailure::ClosedByServer),
            Some(Err(e)) => return Err(CallFailure::from_stream(e)),
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(bytes))) => {
                self.stats.messages_received += 1;
                self.stats.bytes_received += bytes.len() as u64;
                return Err(ProtocolFailure::BinaryFrame.into());
            }
            Some(Ok(Message::Close(_))) => return Err(CallFailure::ClosedByServer),
            // Pings are answered by tungstenite itself.
            Some(Ok(_)) => return Ok(()),
        };
        self.stats.messages_received += 1;
        self.stats.bytes_received += text.len() as u64;
        let now = Instant::now();
        let event = Event::parse(&text).map_err(|e| CallFailure::from_parse(e, unknown_events))?;
        match event {
            Event::Media {
                media, stream_sid, ..
            } => {
                self.check_sid(&stream_sid)?;
                let bytes = payload_len(&media.payload).ok_or(ProtocolFailure::NotBase64)?;
                self.speaker.queue(now, bytes);
                script.heard(now, Heard::Audio(bytes));
            }
            Event::Mark { mark, stream_sid, .. } => {
                self.check_sid(&stream_sid)?;
                self.speaker.mark(now, mark.name)?;
                script.heard(now, Heard::Mark);
            }
            Event::Clear { stream_sid } => {
                self.check_sid(&stream_sid)?;
                self.stats.clears_received += 1;
                self.speaker.clear(now);
                script.heard(now, Heard::Clear);
            }
            // Only Twilio sends these.
            other => return Err(ProtocolFailure::UnexpectedEvent(other.name()).into()),
        }
        Ok(())
    }

    fn check_sid(&self, stream_sid: &str) -> Result<(), ProtocolFailure> {
        if stream_sid == self.stream_sid {
            Ok(())
        } else {
            Err(ProtocolFailure::WrongStreamSid)
        }
    }

    /// Echoes every mark whose audio has played, as Twilio does.
    async fn echo_played<S: Script>(&mut self, now: Instant, script: &mut S) -> Result<(), CallFailure> {
        while let Some((name, arrived)) = self.speaker.pop_due(now) {
            self.seq += 1;
            let echo = Event::Mark {
                sequence_number: Some(self.seq),
                mark: twilio::Mark { name },
                stream_sid: self.stream_sid.clone(),
            };
            self.send_text(echo.to_json()).await?;
            self.stats.marks_echoed += 1;
            self.records.push(Record::ok(
                WS,
                self.names.mark,
                now.saturating_duration_since(arrived),
            ));
            script.heard(now, Heard::Played);
        }
        Ok(())
    }

    /// Ends a failed call: a protocol error is answered with a close frame naming it (RFC 6455
    /// asks for one), sent briefly and not waited on; a dead or stalled line is just dropped.
    pub async fn abort(&mut self, f: &CallFailure) {
        let Some(code) = f.close_code() else { return };
        let reason = f.to_string();
        let mut reason = reason.as_str();
        while reason.len() > MAX_CLOSE_REASON {
            let mut end = MAX_CLOSE_REASON;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason = &reason[..end];
        }
        let frame = CloseFrame {
            code,
            reason: reason.to_string().into(),
        };
        let _ = tokio::time::timeout(ABORT_GRACE, self.ws.close(Some(frame))).await;
    }

    /// Hangs up: `stop`, then the WebSocket close handshake (briefly: the server may be gone).
    pub async fn hang_up(&mut self) -> Result<(), CallFailure> {
        self.seq += 1;
        let stop = Event::Stop {
            sequence_number: self.seq,
            stop: twilio::Stop {
                account_sid: self.account_sid.clone(),
                call_sid: self.call_sid.clone(),
            },
            stream_sid: self.stream_sid.clone(),
        };
        self.send_text(stop.to_json()).await?;
        let _ = tokio::time::timeout(HANGUP_GRACE, async {
            let _ = self.ws.close(None).await;
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
        Ok(())
    }
}

/// Waits for `fut` at most `limit`, without arming a timer when it is ready at once (the usual
/// case for a frame on a healthy socket).
async fn bounded<F: Future>(limit: Duration, fut: F) -> Result<F::Output, CallFailure> {
    tokio::pin!(fut);
    if let std::task::Poll::Ready(v) = futures_util::poll!(fut.as_mut()) {
        return Ok(v);
    }
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| CallFailure::Timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_urls_follow_the_host() {
        let url = media_url(&"http://127.0.0.1:8080/x?y=1".parse().unwrap(), "CA1").unwrap();
        assert_eq!(url.as_str(), "ws://127.0.0.1:8080/webhooks/twilio/media/CA1");
        let url = media_url(&"https://agent.example/".parse().unwrap(), "CA1").unwrap();
        assert_eq!(url.as_str(), "wss://agent.example/webhooks/twilio/media/CA1");
        assert_eq!(
            media_url(&"ftp://x/".parse().unwrap(), "CA1"),
            Err(CallFailure::BadScheme { scheme: "ftp".into() })
        );
    }
}
