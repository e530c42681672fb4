//! The command line: Goose's own options plus the crate's, and the `serve` subcommand.
//!
//! Goose's `GooseConfiguration` is flattened in whole, so every Goose 0.19 option works as Goose
//! documents it; the crate adds its options under their own help heading, and `--hatch-rate`
//! (Goose <= 0.18) and `--spawn-rate` (Locust) are aliases of Goose's `--increase-rate`.

use crate::analysis::verdicts::Status;
use crate::gaggle::{GaggleOptions, MergeArgs};
use crate::plan::AiMode;
use crate::simulator::ServeOptions;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use goose::config::GooseConfiguration;
use std::ffi::OsString;
use std::path::PathBuf;

/// Load-test a voice-AI Phone Agent: REST API, Twilio webhooks, Media Streams calls and AI calls.
///
/// Without --host it starts the built-in Phone Agent simulator on a free loopback port and runs
/// against it. See README.md for profiles, verdicts and the results file.
#[derive(Parser, Debug)]
#[command(
    name = "phone-agent-load",
    args_override_self = true,
    allow_negative_numbers = true,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub load: LoadOptions,

    #[command(flatten)]
    pub gaggle: GaggleOptions,

    #[command(flatten)]
    pub goose: GooseConfiguration,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the built-in Phone Agent simulator alone (Ctrl-C stops it)
    Serve(ServeOptions),
    /// Merge the results files of independent runs exactly (counts summed, percentiles from histograms)
    Merge(MergeArgs),
}

/// The options phone-agent-load adds to Goose's.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Phone Agent")]
pub struct LoadOptions {
    /// Load profile: quick, standard, stress, soak, or a path to a profile .toml file
    #[arg(long, value_name = "NAME|FILE", default_value = "quick")]
    pub profile: String,
    /// Write the run's results (JSON, see README) to FILE
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Leave out the REST API and webhook users
    #[arg(long)]
    pub skip_api: bool,
    /// Leave out the media-stream calls
    #[arg(long)]
    pub skip_ws: bool,
    /// Leave out the AI audio calls
    #[arg(long)]
    pub skip_ai: bool,
    /// Concurrent media-stream calls (overrides the profile)
    #[arg(long, value_name = "N")]
    pub ws_connections: Option<usize>,
    /// Concurrent AI audio calls (overrides the profile)
    #[arg(long, value_name = "N")]
    pub ai_calls: Option<usize>,
    /// AI calls over media streams against the server, or the in-process mock pipeline
    #[arg(long, value_enum, default_value = "stream")]
    pub ai_mode: AiMode,
    /// The caller's utterances from your own WAV files (mono/stereo PCM or mu-law, any rate)
    #[arg(long, value_name = "DIR")]
    pub audio_dir: Option<PathBuf>,
    /// No web UI (like `locust --headless`)
    #[arg(long)]
    pub headless: bool,
    /// Read the server's memory from this local process id
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Read the server's memory from the local process with this name
    #[arg(long, value_name = "NAME", conflicts_with = "server_pid")]
    pub server_process: Option<String>,
    /// Read the server's memory (process_resident_memory_bytes) from this Prometheus endpoint
    #[arg(long, value_name = "URL", conflicts_with_all = ["server_pid", "server_process"])]
    pub server_metrics_url: Option<String>,
    /// Which verdict fails the run (exit status 2)
    #[arg(long, value_enum, default_value = "critical")]
    pub fail_on: Status,
    /// Switch the scenarios' wait times off (benchmarks, breaking-point searches)
    #[arg(long)]
    pub no_wait: bool,
    /// Whether Goose's `--test-plan` was given (Goose keeps the plan itself private).
    #[arg(skip)]
    pub test_plan_given: bool,
}

/// The clap command with the Locust / old-Goose aliases of `--increase-rate`.
pub fn command() -> clap::Command {
    Cli::command().mut_arg("increase_rate", |a| {
        a.visible_alias("hatch-rate").visible_alias("spawn-rate")
    })
}

/// Parses a command line (program name first).
pub fn parse<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command().try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    cli.load.test_plan_given =
        matches.value_source("test_plan") == Some(clap::parser::ValueSource::CommandLine);
    Ok(cli)
}

/// The binary's entry point; returns the exit status.
pub fn main() -> i32 {
    let cli = match parse(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match cli.command {
        Some(Command::Serve(opts)) => match runtime.block_on(crate::simulator::serve(opts)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        },
        Some(Command::Merge(args)) => crate::gaggle::merge_files(&args),
        None if cli.gaggle.manager => {
            runtime.block_on(crate::gaggle::manager::run(cli.load, cli.goose, cli.gaggle))
        }
        None if cli.gaggle.worker => {
            runtime.block_on(crate::gaggle::worker::run(cli.load, cli.goose, cli.gaggle))
        }
        None => runtime.block_on(crate::run::run(cli.load, cli.goose)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hatch_and_spawn_rate_mean_increase_rate() {
        for flag in ["--hatch-rate", "--spawn-rate", "--increase-rate", "-r"] {
            let cli = parse(["x", flag, "7"]).unwrap();
            assert_eq!(cli.goose.increase_rate.as_deref(), Some("7"), "{flag}");
        }
    }

    #[test]
    fn crate_and_goose_options_parse_together() {
        let cli = parse([
            "x",
            "--host",
            "http://127.0.0.1:9",
            "--users",
            "100",
            "--run-time",
            "5m",
            "--profile",
            "stress",
            "--skip-ws",
            "--output",
            "r.json",
            "--report-file",
            "r.html",
            "--ai-mode",
            "mock",
        ])
        .unwrap();
        assert_eq!(cli.goose.users, Some(100));
        assert_eq!(cli.goose.report_file, vec!["r.html".to_string()]);
        assert_eq!(cli.load.profile, "stress");
        assert!(cli.load.skip_ws && !cli.load.skip_api);
        assert_eq!(cli.load.ai_mode, AiMode::Mock);
        assert!(cli.command.is_none());
    }

    #[test]
    fn serve_takes_its_own_options() {
        let cli = parse(["x", "serve", "--port", "0", "--error-rate", "0.5"]).unwrap();
        match cli.command {
            Some(Command::Serve(o)) => assert_eq!((o.port, o.error_rate), (0, 0.5)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn help_lists_the_crate_options_and_aliases() {
        let help = command().render_long_help().to_string();
        for needle in [
            "--profile",
            "--output",
            "--skip-api",
            "--no-wait",
            "--headless",
            "hatch-rate",
            "--report-file",
        ] {
            assert!(help.contains(needle), "{needle} missing from --help");
        }
    }
}
