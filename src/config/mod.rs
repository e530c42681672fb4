//! What a run will do, decided once before it starts: the load profile, the command line's
//! options resolved into plain values, the plan of users per kind of load, the schedule that
//! starts them, and the caller's speech.
//!
//! Everything above (the run, the gaggle, the web UI) reads these values; none of it decides
//! them again.

pub mod options;
pub mod outputs;
pub mod plan;
pub mod profile;
pub mod schedule;
pub mod utterances;
