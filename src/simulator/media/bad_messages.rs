//! Messages a broken agent might send on a media stream, and when a stream sends them.
//!
//! - `--ws-garbage-rate`: 0.3-1 s after `start`, the agent sends, 100 ms apart, one of each
//!   [`GARBAGE_MESSAGES`] (text that is not JSON, JSON without an `event`, an unknown event, a
//!   `media` event whose payload is not base64, a binary frame), starting at a different one on
//!   each such stream, so a caller that gives up at the first still meets every kind.
//! - `--ws-oversized-rate`: 0.3-1 s after `start` (after any garbage), one [`OVERSIZED_BYTES`]
//!   `media` message: in one frame on every other such stream, in 256 KiB fragments on the rest,
//!   trickled over [`OVERSIZED_TRICKLE`] as a slow network would, so a caller that buffers what
//!   it should refuse holds it a while (and its memory shows it).

use super::super::{chance, voice};
use base64::Engine;
use futures_util::SinkExt;
use rand::Rng;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Size of the message `--ws-oversized-rate` sends.
pub(super) const OVERSIZED_BYTES: usize = 4 << 20;
/// Pieces an oversized message is written in (and its fragments, when fragmented).
const OVERSIZED_FRAGMENT: usize = 256 << 10;
/// How long writing an oversized message takes, piece by piece.
pub(super) const OVERSIZED_TRICKLE: Duration = Duration::from_millis(640);
/// When a stream's first bad message goes out, in seconds after `start`, and the gap between.
const BAD_AFTER_S: std::ops::RangeInclusive<f64> = 0.3..=1.0;
const BAD_GAP: Duration = Duration::from_millis(100);

/// A message a broken agent might send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum BadMessage {
    /// Text that is not JSON (a Python dict's repr, a classic).
    NotJson,
    /// A JSON object with no `event`.
    NoEvent,
    /// An event Media Streams does not have.
    UnknownEvent,
    /// A `media` event whose payload is not base64.
    NotBase64,
    /// Raw audio in a binary frame.
    Binary,
    /// One [`OVERSIZED_BYTES`] `media` message, in one frame or in fragments.
    Oversized { fragmented: bool },
}

/// What `--ws-garbage-rate` sends, one of each.
pub(super) const GARBAGE_MESSAGES: [BadMessage; 5] = [
    BadMessage::NotJson,
    BadMessage::NoEvent,
    BadMessage::UnknownEvent,
    BadMessage::NotBase64,
    BadMessage::Binary,
];

/// Which garbage message a simulator's next garbage stream starts with, and whether its next
/// oversized message is fragmented: taken in turn, so a few streams see every kind.
#[derive(Default)]
pub(crate) struct BadMessageTurns {
    next_garbage: AtomicU64,
    next_oversized: AtomicU64,
}

impl BadMessageTurns {
    /// The bad messages a new stream will send, in order, given the fault rates.
    pub(super) fn plan(&self, garbage_rate: f64, oversized_rate: f64, rng: &mut impl Rng) -> BadMessageQueue {
        let mut queue = VecDeque::new();
        if chance(rng, garbage_rate) {
            let first = self.next_garbage.fetch_add(1, Relaxed) as usize;
            let n = GARBAGE_MESSAGES.len();
            queue.extend((0..n).map(|i| GARBAGE_MESSAGES[(first + i) % n]));
        }
        if chance(rng, oversized_rate) {
            let fragmented = self.next_oversized.fetch_add(1, Relaxed) % 2 == 1;
            queue.push_back(BadMessage::Oversized { fragmented });
        }
        BadMessageQueue { queue, at: None }
    }
}

/// One stream's bad messages still to send, next first, and when the next goes out.
#[derive(Debug)]
pub(super) struct BadMessageQueue {
    queue: VecDeque<BadMessage>,
    /// Set once the stream has started.
    at: Option<Instant>,
}

impl BadMessageQueue {
    /// The stream has started (at `now`): the first bad message goes out shortly.
    pub(super) fn start(&mut self, now: Instant) {
        if !self.queue.is_empty() {
            let after = rand::rng().random_range(BAD_AFTER_S);
            self.at = Some(now + Duration::from_secs_f64(after));
        }
    }

    /// When the next one goes out.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.at
    }

    pub(super) fn is_due(&self, now: Instant) -> bool {
        self.at.is_some_and(|at| at <= now)
    }

    /// The next bad message, if any is left; the one after goes out [`BAD_GAP`] after `now`.
    pub(super) fn take(&mut self, now: Instant) -> Option<BadMessage> {
        let next = self.queue.pop_front();
        self.at = (!self.queue.is_empty()).then(|| now + BAD_GAP);
        next
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }
}

/// What a bad message is on the wire, on the stream `stream_sid` whose `media` messages start
/// with `media_prefix`.
pub(super) fn on_the_wire(bad: BadMessage, stream_sid: &str, media_prefix: &str) -> Vec<Message> {
    let sid = serde_json::Value::from(stream_sid);
    let text = match bad {
        BadMessage::NotJson => format!("{{'event': 'media', 'streamSid': {sid}}}"),
        BadMessage::NoEvent => format!(
            r#"{{"streamSid":{sid},"media":{{"payload":"{}"}}}}"#,
            voice::ANSWER_PAYLOADS[0]
        ),
        BadMessage::UnknownEvent => {
            format!(r#"{{"event":"transcript","streamSid":{sid},"transcript":{{"text":"Guten Tag"}}}}"#)
        }
        BadMessage::NotBase64 => format!("{media_prefix}@@not base64@@!!\"}}}}"),
        BadMessage::Binary => {
            let audio = base64::engine::general_purpose::STANDARD
                .decode(&voice::ANSWER_PAYLOADS[0])
                .unwrap_or_default();
            return vec![Message::binary(audio)];
        }
        BadMessage::Oversized { .. } => oversized(media_prefix),
    };
    vec![Message::text(text)]
}

/// A `media` message of exactly [`OVERSIZED_BYTES`]: valid, silent, and far too big.
pub(super) fn oversized(media_prefix: &str) -> String {
    let suffix = "\"}}";
    let room = OVERSIZED_BYTES.saturating_sub(media_prefix.len() + suffix.len());
    let payload = room / 4 * 4;
    let mut text = String::with_capacity(OVERSIZED_BYTES);
    text.push_str(media_prefix);
    // "////" is three bytes of mu-law silence.
    text.extend(std::iter::repeat_n('/', payload));
    text.push_str(suffix);
    // Trailing whitespace is valid JSON: pad to the exact size.
    text.extend(std::iter::repeat_n(' ', room - payload));
    text
}

/// WebSocket opcodes of the frames written by hand.
const OP_CONTINUE: u8 = 0x0;
const OP_TEXT: u8 = 0x1;

/// The header of an unmasked (server to client) frame of `len` payload bytes (RFC 6455 5.2).
fn frame_header(opcode: u8, fin: bool, len: usize) -> Vec<u8> {
    let mut h = vec![if fin { 0x80 | opcode } else { opcode }];
    match len {
        0..=125 => h.push(len as u8),
        126..=0xFFFF => {
            h.push(126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            h.push(127);
            h.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    h
}

/// Writes `text` as raw frames on the connection, a piece at a time over
/// [`OVERSIZED_TRICKLE`]: tungstenite would only queue it whole. The message is complete on the
/// wire, so the stream can go on as usual if the caller takes it.
pub(super) async fn write_oversized<S>(
    text: &str,
    fragmented: bool,
    ws: &mut WebSocketStream<S>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let pieces: Vec<&[u8]> = text.as_bytes().chunks(OVERSIZED_FRAGMENT).collect();
    let gap = OVERSIZED_TRICKLE / pieces.len() as u32;
    // Whatever tungstenite holds goes first.
    ws.flush().await.map_err(std::io::Error::other)?;
    let io = ws.get_mut();
    if !fragmented {
        io.write_all(&frame_header(OP_TEXT, true, text.len())).await?;
    }
    for (i, piece) in pieces.iter().enumerate() {
        if fragmented {
            let op = if i == 0 { OP_TEXT } else { OP_CONTINUE };
            io.write_all(&frame_header(op, i + 1 == pieces.len(), piece.len()))
                .await?;
        }
        io.write_all(piece).await?;
        io.flush().await?;
        tokio::time::sleep(gap).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Event;

    #[test]
    fn garbage_streams_meet_every_kind_starting_at_a_different_one() {
        let turns = BadMessageTurns::default();
        let plan = |garbage, oversized| Vec::from(turns.plan(garbage, oversized, &mut rand::rng()).queue);
        assert!(plan(0.0, 0.0).is_empty());
        let (a, b) = (plan(1.0, 0.0), plan(1.0, 0.0));
        for plan in [&a, &b] {
            assert_eq!(plan.len(), GARBAGE_MESSAGES.len());
            assert!(GARBAGE_MESSAGES.iter().all(|g| plan.contains(g)), "{plan:?}");
        }
        assert_ne!(a[0], b[0]);
        let both = plan(1.0, 1.0);
        assert!(
            matches!(both.last(), Some(BadMessage::Oversized { .. })),
            "oversized comes last"
        );
        let (c, d) = (plan(0.0, 1.0), plan(0.0, 1.0));
        assert_ne!(c, d, "one frame and fragments in turn");
    }

    #[test]
    fn bad_messages_are_what_they_say() {
        use crate::protocol::ProtocolError::{Malformed, UnknownEvent};
        let prefix = r#"{"event":"media","streamSid":"MZ1","media":{"payload":""#;
        let wire = |bad| on_the_wire(bad, "MZ1", prefix);
        let text = |bad| match wire(bad).as_slice() {
            [Message::Text(t)] => t.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            Event::parse(&text(BadMessage::NotJson)),
            Err(Malformed("not JSON".into()))
        );
        assert_eq!(
            Event::parse(&text(BadMessage::NoEvent)),
            Err(Malformed("no 'event' name".into()))
        );
        assert_eq!(
            Event::parse(&text(BadMessage::UnknownEvent)),
            Err(UnknownEvent("transcript".into()))
        );
        let Ok(Event::Media {
            media, stream_sid, ..
        }) = Event::parse(&text(BadMessage::NotBase64))
        else {
            panic!("a media event");
        };
        assert_eq!(stream_sid, "MZ1");
        assert!(base64::engine::general_purpose::STANDARD
            .decode(&media.payload)
            .is_err());
        assert!(matches!(wire(BadMessage::Binary).as_slice(), [Message::Binary(b)] if b.len() == 160));

        let one = text(BadMessage::Oversized { fragmented: false });
        assert_eq!(one.len(), OVERSIZED_BYTES);
        let Ok(Event::Media { media, .. }) = Event::parse(&one) else {
            panic!("a valid media event");
        };
        let audio = base64::engine::general_purpose::STANDARD
            .decode(&media.payload)
            .unwrap();
        assert!(audio.len() > 3_000_000 && !voice::is_voiced(&audio[..160]));
    }

    #[test]
    fn frame_headers_follow_rfc_6455() {
        assert_eq!(frame_header(OP_TEXT, true, 5), [0x81, 5]);
        assert_eq!(frame_header(OP_CONTINUE, false, 126), [0x00, 126, 0, 126]);
        assert_eq!(
            frame_header(OP_TEXT, false, 70_000),
            [0x01, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]
        );
    }
}
