//! Fuzzes a Twilio Media Streams text frame (`twilio::Event::parse`); see `fuzz/harness.rs`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::twilio_event(data));
