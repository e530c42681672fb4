//! Twilio's `media` messages written by hand, and agent payloads measured without decoding.
//!
//! A caller sends one `media` message every 20 ms for the whole call, so this path avoids serde
//! and allocation: the silence payload is encoded once, numbers are written digit by digit, and
//! each message goes into a per-thread buffer. The agent's payloads are only ever counted (how
//! much audio to play), so their base64 is checked and measured, never decoded.

use super::mulaw::{FRAME_BYTES, SILENCE};
use base64::Engine;
use bytes::{BufMut, BytesMut};
use std::cell::RefCell;
use std::sync::LazyLock;

/// Base64 of one frame of silence, encoded once.
pub static SILENCE_B64: LazyLock<String> =
    LazyLock::new(|| base64::engine::general_purpose::STANDARD.encode([SILENCE; FRAME_BYTES]));

/// Base64 length of one frame.
pub const FRAME_B64: usize = FRAME_BYTES.div_ceil(3) * 4;

thread_local! {
    /// Where [`encode_media`] writes: one buffer per thread, not one per call. Its written part
    /// is split off with each message, and the space is reused once the message is dropped.
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::with_capacity(4096));
}

/// The numbers Twilio puts on one `media` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaNumbers {
    /// The message's place among all the stream's messages.
    pub sequence_number: u64,
    /// The frame's place among the stream's media messages.
    pub chunk: u64,
    /// Milliseconds since the stream started.
    pub timestamp: u64,
}

/// One inbound `media` message, written into this thread's buffer and split off it (no
/// allocation once the buffer has grown). `audio` is one frame of mu-law, padded with silence
/// to 160 bytes; `None` is silence.
pub fn encode_media(numbers: MediaNumbers, audio: Option<&[u8]>, stream_sid: &str) -> BytesMut {
    SCRATCH.with_borrow_mut(|out| {
        write_media(out, numbers, audio, stream_sid);
        out.split()
    })
}

/// Writes one inbound `media` message to `out`, as Twilio words it.
pub fn write_media(out: &mut BytesMut, numbers: MediaNumbers, audio: Option<&[u8]>, stream_sid: &str) {
    out.reserve(FRAME_B64 + 256);
    out.put_slice(br#"{"event":"media","sequenceNumber":""#);
    put_u64(out, numbers.sequence_number);
    out.put_slice(br#"","media":{"track":"inbound","chunk":""#);
    put_u64(out, numbers.chunk);
    out.put_slice(br#"","timestamp":""#);
    put_u64(out, numbers.timestamp);
    out.put_slice(br#"","payload":""#);
    match audio {
        None => out.put_slice(SILENCE_B64.as_bytes()),
        Some(bytes) => put_base64_frame(out, bytes),
    }
    out.put_slice(br#""},"streamSid":""#);
    out.put_slice(stream_sid.as_bytes());
    out.put_slice(br#""}"#);
}

/// Base64 of one frame of caller audio, padded with silence to 160 bytes.
fn put_base64_frame(out: &mut BytesMut, bytes: &[u8]) {
    let mut frame = [SILENCE; FRAME_BYTES];
    let n = bytes.len().min(FRAME_BYTES);
    frame[..n].copy_from_slice(&bytes[..n]);
    let mut b64 = [0u8; FRAME_B64];
    let len = base64::engine::general_purpose::STANDARD
        .encode_slice(frame, &mut b64)
        .unwrap_or(0);
    out.put_slice(&b64[..len]);
}

/// Writes `n` in decimal.
fn put_u64(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

/// Mu-law bytes in a base64 payload, checked but not decoded; `None` if it is not base64.
pub fn payload_len(payload: &str) -> Option<usize> {
    let b = payload.as_bytes();
    let pad = b.iter().rev().take(2).take_while(|&&c| c == b'=').count();
    let is_b64 = |&c: &u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
    if !b.len().is_multiple_of(4) || !b[..b.len() - pad].iter().all(is_b64) {
        return None;
    }
    Some(b.len() / 4 * 3 - pad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::twilio::Event;

    #[test]
    fn silence_payload_is_one_frame() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(SILENCE_B64.as_bytes())
            .unwrap();
        assert_eq!(bytes, vec![SILENCE; FRAME_BYTES]);
        assert_eq!(SILENCE_B64.len(), FRAME_B64);
    }

    #[test]
    fn payload_length_without_decoding() {
        for n in 0..400 {
            let b64 = base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
            assert_eq!(payload_len(&b64), Some(n));
        }
        assert_eq!(payload_len("abc"), None);
        assert_eq!(payload_len("@@not base64@@!!"), None);
        assert_eq!(payload_len("AA=A"), None);
        assert_eq!(payload_len(""), Some(0));
    }

    #[test]
    fn media_messages_are_twilio_json() {
        let speech: Vec<u8> = (0..100).collect();
        let numbers = MediaNumbers {
            sequence_number: 7,
            chunk: 5,
            timestamp: 80,
        };
        for (audio, want) in [
            (None, vec![SILENCE; 160]),
            (Some(&speech[..]), {
                let mut v = speech.clone();
                v.resize(160, SILENCE);
                v
            }),
        ] {
            let message = encode_media(numbers, audio, "MZ1");
            let text = std::str::from_utf8(&message).unwrap().to_string();
            let Event::Media {
                sequence_number,
                media,
                stream_sid,
            } = Event::parse(&text).unwrap()
            else {
                panic!("{text}");
            };
            assert_eq!(
                (sequence_number, media.chunk, media.timestamp),
                (Some(7), Some(5), Some(80))
            );
            assert_eq!(
                (media.track.as_deref(), stream_sid.as_str()),
                (Some("inbound"), "MZ1")
            );
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(media.payload)
                .unwrap();
            assert_eq!(bytes, want);
        }
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        let mut out = BytesMut::new();
        for n in [0u64, 7, 10, 1234567890, u64::MAX] {
            out.clear();
            put_u64(&mut out, n);
            assert_eq!(std::str::from_utf8(&out).unwrap(), n.to_string());
        }
    }
}
