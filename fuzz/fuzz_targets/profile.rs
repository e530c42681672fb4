//! Fuzzes a profile file (`profile::Profile::parse`, then the run plan); see `fuzz/harness.rs`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::profile(data));
