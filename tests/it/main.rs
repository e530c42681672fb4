//! The integration tests, one crate linking the library once: each module is one area of the
//! tool, tested through the public API (the simulator, scenarios and Goose attacks in this
//! process) or through the real `phone-agent-load` binary on loopback. `harness` is what they
//! share.
//!
//! Tests run as threads of one process: a test must not change process-wide state (environment,
//! current folder, signal handlers), and one that reads this process's own memory runs alone in a
//! child process ([`harness::alone_in_a_process`]).

mod harness;

mod analysis;
mod api_scenarios;
mod architecture;
mod audio;
mod bad_input;
mod cli;
mod faults_http;
mod faults_run;
mod faults_ws;
mod fuzz_regressions;
mod gaggle;
mod media_calls;
mod post_run;
mod simulator;
mod webui;
