//! phone-agent-load: load tests for a voice-AI Phone Agent, built on Goose 0.19.
//!
//! One run drives three kinds of load as Goose scenarios — the REST API and Twilio webhooks,
//! Twilio Media Streams calls, and AI audio calls — then a post-run hook judges the run.
//!
//! Layers, bottom first; each imports only from the layers below it (docs/ARCHITECTURE.md):
//! - [`protocol`], [`ai_model`]: what travels on a call's wire (Twilio Media Streams messages,
//!   mu-law, WAV) and the original suite's AI pipeline latency model. Nothing else of the crate.
//! - [`measure`]: what a run measures beyond Goose's metrics (frames, turns, failures by reason,
//!   memory, the slope fit); [`config`]: what a run will do (profiles, options, the plan and its
//!   schedule, the caller's speech), decided once.
//! - [`scenarios`]: the Goose scenarios (API, webhooks, media stream, AI call).
//! - [`run`]: one run from start to finish (target, Goose attack, console, interrupts), ending in
//!   a [`run::RunRecord`].
//! - [`analysis`]: the post-run hook (RTF, memory, verdicts, results file, report) and
//!   [`analysis::conclude()`], where every run ends.
//! - [`cli`], [`webui`], [`gaggle`]: the command line and the lone run, Goose's dashboard as the
//!   web UI, distributed runs. They call the run; it never calls them.
//!
//! [`simulator`], the built-in Phone Agent used by default, by `serve` and by the tests, stands
//! beside them on the protocol layer alone.
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
