//! The Twilio side of a phone call: Media Streams messages and the mu-law codec.

pub mod mulaw;
pub mod protocol;

pub use protocol::{Event, ProtocolError};
