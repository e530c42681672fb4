//! The command line: Goose's own options plus the crate's, and the `serve` subcommand.
//!
//! Goose's `GooseConfiguration` is flattened in whole, so every Goose 0.19 option works as Goose
//! documents it; the crate adds its options under their own help heading, and `--hatch-rate`
//! (Goose <= 0.18) and `--spawn-rate` (Locust) are aliases of Goose's `--increase-rate`.

mod local;
mod options;

pub use local::{run, run_with_hooks};
pub use options::LoadOptions;

use crate::gaggle::{GaggleOptions, MergeArgs};
use crate::simulator::ServeOptions;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use goose::config::GooseConfiguration;
use std::ffi::OsString;

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

    /// The load-shaping options given on the command line, by their long names (`--users`):
    /// what a gaggle worker refuses.
    #[arg(skip)]
    pub load_shaping_given: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the built-in Phone Agent simulator alone (Ctrl-C stops it)
    Serve(ServeOptions),
    /// Merge the results files of independent runs exactly (counts summed, percentiles from histograms)
    Merge(MergeArgs),
}

/// The clap command with the Locust / old-Goose aliases of `--increase-rate`, and a
/// `--test-plan` parser that refuses a malformed plan in one line (Goose's prints a block).
pub fn command() -> clap::Command {
    Cli::command()
        .mut_arg("increase_rate", |a| {
            a.visible_alias("hatch-rate").visible_alias("spawn-rate")
        })
        .mut_arg("test_plan", |a| a.value_parser(options::test_plan))
        // Goose's help states Goose's own defaults; these are this tool's.
        .mut_arg("dashboard_port", |a| {
            retell(a, &format!("The web UI's port [default: {}]", crate::webui::DEFAULT_PORT))
        })
        .mut_arg("telnet_port", |a| {
            retell(
                a,
                "Not used: Goose's telnet Controller is off in every run (the web UI's control API replaces it)",
            )
        })
        .mut_arg("telnet_host", |a| {
            retell(a, "Not used: Goose's telnet Controller is off in every run")
        })
}

/// An option's help, short and long alike, in this tool's words.
fn retell(arg: clap::Arg, help: &str) -> clap::Arg {
    arg.help(help.to_string()).long_help(help.to_string())
}

/// Parses a command line (program name first).
pub fn parse<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cmd = command();
    let matches = cmd.clone().try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    let given = |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    cli.load.test_plan_given = given("test_plan");
    cli.load_shaping_given = options::LOAD_SHAPING
        .iter()
        .filter(|id| given(id))
        .filter_map(|id| cmd.get_arguments().find(|a| a.get_id() == *id))
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    // The gaggle's own options mean nothing to a lone run, which would silently ignore them
    // (the token may also come from the environment, which is no mistake).
    if cli.command.is_none() && !cli.gaggle.manager && !cli.gaggle.worker {
        for (id, option) in [
            ("gaggle_token", "--gaggle-token"),
            ("gaggle_timeout", "--gaggle-timeout"),
        ] {
            if given(id) {
                return Err(command().error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    format!("{option} is a gaggle option: use it with --manager or --worker"),
                ));
            }
        }
    }
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
    if cli.goose.version {
        println!("phone-agent-load {} (Goose 0.19)", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    match cli.command {
        Some(Command::Serve(opts)) => {
            if !opts.bind.is_loopback() {
                eprintln!(
                    "warning: the simulator is open to the network: it listens on {} with no authentication, \
                     so anyone who can reach this machine can use it (--bind 127.0.0.1 keeps it local)",
                    opts.bind
                );
            }
            match runtime.block_on(crate::simulator::serve(opts)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    1
                }
            }
        }
        Some(Command::Merge(args)) => crate::gaggle::merge_files(&args),
        None if cli.gaggle.manager => runtime.block_on(crate::gaggle::manager::run(
            cli.load.run_options(),
            cli.load.fail_on,
            cli.goose,
            cli.gaggle,
        )),
        None if cli.gaggle.worker => {
            if !cli.load_shaping_given.is_empty() {
                eprintln!(
                    "error: a worker takes its load from the manager: give {} to the --manager instead",
                    cli.load_shaping_given.join(", ")
                );
                return 1;
            }
            runtime.block_on(crate::gaggle::worker::run(cli.load.output, cli.goose, cli.gaggle))
        }
        None => runtime.block_on(run(cli.load, cli.goose)),
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
        assert_eq!(cli.load.ai_mode, crate::config::plan::AiMode::Mock);
        assert!(cli.command.is_none());
    }

    #[test]
    fn gaggle_options_need_a_gaggle_role() {
        for args in [["x", "--gaggle-token", "t"], ["x", "--gaggle-timeout", "5s"]] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains("--manager or --worker"), "{err}");
        }
        assert!(parse(["x", "--worker", "--gaggle-token", "t"]).is_ok());
    }

    #[test]
    fn goose_outputs_are_checked_before_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
        let check = |args: &[&str], output: Option<&std::path::Path>| {
            let cli = parse(std::iter::once("x").chain(args.iter().copied())).unwrap();
            crate::config::outputs::check_goose_outputs(&cli.goose, output).map_err(|e| format!("{e:#}"))
        };
        assert!(check(&["--report-file", &at("r.html"), "--report-file"], None).is_ok());
        assert!(check(&["--report-file", &at("r.txt")], None)
            .unwrap_err()
            .contains(".html"));
        let out = dir.path().join("r.json");
        let err = check(&["--report-file", &at("r.html")], Some(&out)).unwrap_err();
        assert!(err.contains("HTML report"), "{err}");
        let err = check(&["--goose-log", &at("none/g.log.gz")], None).unwrap_err();
        assert!(err.contains("--goose-log"), "{err}");
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

    #[test]
    fn load_shaping_options_are_named_as_given() {
        let cli = parse(["x", "--worker", "--output", "w.json", "-q"]).unwrap();
        assert!(cli.load_shaping_given.is_empty(), "{:?}", cli.load_shaping_given);
        let cli = parse([
            "x",
            "--worker",
            "--users",
            "5",
            "--profile",
            "quick",
            "--skip-ws",
            "--turn-timeout",
            "30s",
            "--hatch-rate",
            "2",
        ])
        .unwrap();
        // Given at its default value (`--profile quick`) it is still given.
        assert_eq!(
            cli.load_shaping_given,
            [
                "--profile",
                "--skip-ws",
                "--turn-timeout",
                "--users",
                "--increase-rate"
            ]
        );
    }

    #[test]
    fn every_load_shaping_id_is_an_option() {
        let cmd = command();
        for id in options::LOAD_SHAPING {
            assert!(
                cmd.get_arguments()
                    .any(|a| a.get_id() == *id && a.get_long().is_some()),
                "{id}"
            );
        }
    }

    #[test]
    fn help_states_this_tool_s_defaults() {
        let help = command().render_long_help().to_string();
        assert!(help.contains("The web UI's port [default: 5116]"), "{help}");
        assert!(!help.contains("[default: 5118]"), "{help}");
        assert!(help.contains("telnet Controller is off in every run"), "{help}");
    }
}
