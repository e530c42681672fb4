//! phone-agent-load: load tests for a voice-AI Phone Agent, built on Goose 0.19.
//!
//! One run drives three kinds of load as Goose scenarios — the REST API and Twilio webhooks,
//! Twilio Media Streams calls, and AI audio calls — then a post-run hook judges the run.
//!
//! Layout, one module per concern:
//! - [`cli`], [`profile`], [`plan`]: the command line, the load profiles and what a run will do.
//! - [`run`]: one run from start to finish (target, Goose attack, post-run hook).
//! - [`console`]: the console log: failed requests counted by reason, not one line each.
//! - [`interrupt`]: Ctrl-C before, during and after the attack, so results are never lost.
//! - [`target`]: the system under test: the user's host, or the simulator as a child process.
//! - [`scenarios`]: the Goose scenarios (API, webhooks, media stream, AI call).
//! - [`twilio`], [`audio`]: the Media Streams protocol, the mu-law codec, the caller's speech.
//! - [`ai_model`]: the original suite's AI pipeline latency model (simulator and mock mode).
//! - [`measure`]: what the scenarios measure beyond Goose's own metrics (frames, RTF, ...).
//! - [`analysis`]: the post-run hook (RTF, memory, verdicts, results file, report).
//! - [`simulator`]: the built-in Phone Agent used by default, by `serve` and by the tests.
//! - [`gaggle`]: distributed runs: a manager, its workers, and exact merging of results.
//! - [`webui`]: Goose's dashboard as the web UI at :5116, with the Locust workflow.
//!
//! The module docs link their private items too: they are written for whoever works on the
//! crate (`cargo doc --document-private-items`).
#![allow(rustdoc::private_intra_doc_links)]

pub mod ai_model;
pub mod analysis;
pub mod cli;
pub mod config;
pub mod gaggle;
pub mod measure;
pub mod protocol;
pub mod run;
pub mod scenarios;
pub mod simulator;
pub mod webui;
