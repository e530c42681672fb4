//! The bottom layer: what travels on the wire of a phone call, with no knowledge of load tests.
//!
//! - [`twilio`]: Twilio Media Streams messages, parsed strictly and written cheaply.
//! - [`media_writer`]: the caller's `media` messages written without serde or allocation, and
//!   the agent's payloads measured without decoding.
//! - [`mulaw`]: G.711 mu-law, Twilio's phone audio (8 kHz, 160 bytes per 20 ms frame).
//! - [`wav`]: WAV files of any common encoding turned into that audio.
//!
//! Both the load generator and the simulator build on this layer; it imports nothing else of
//! the crate.

pub mod media_writer;
pub mod mulaw;
pub mod twilio;
pub mod wav;

pub use twilio::{Event, ProtocolError};
