//! The command line: Goose's own options plus the crate's, and the `serve` subcommand.
//!
//! Goose's `GooseConfiguration` is flattened in whole, so every Goose 0.19 option works as Goose
//! documents it; the crate adds its options under their own help heading, and `--hatch-rate`
//! (Goose <= 0.18) and `--spawn-rate` (Locust) are aliases of Goose's `--increase-rate`.

use crate::analysis::verdicts::Status;
use crate::config::plan::AiMode;
use crate::gaggle::{GaggleOptions, MergeArgs};
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
    /// How long an AI turn may take, from the end of the caller's speech to the end of the
    /// agent's answer, before it fails as "no answer within 15s" (stream mode; the call goes on).
    /// Seconds, or a span such as 1m
    #[arg(long, value_name = "SPAN", default_value_t = crate::config::plan::DEFAULT_TURN_TIMEOUT.as_secs(), value_parser = turn_timeout)]
    pub turn_timeout: u64,
    /// Whether Goose's `--test-plan` was given (Goose keeps the plan itself private).
    #[arg(skip)]
    pub test_plan_given: bool,
}

/// The clap command with the Locust / old-Goose aliases of `--increase-rate`, and a
/// `--test-plan` parser that refuses a malformed plan in one line (Goose's prints a block).
pub fn command() -> clap::Command {
    Cli::command()
        .mut_arg("increase_rate", |a| {
            a.visible_alias("hatch-rate").visible_alias("spawn-rate")
        })
        .mut_arg("test_plan", |a| a.value_parser(test_plan))
}

/// `--test-plan` as Goose reads it ("users,time" steps separated by `;`, at least one user
/// started), checked here first so Goose's parser, which prints its refusals, only ever sees a
/// plan it takes.
fn test_plan(value: &str) -> Result<goose::test_plan::TestPlan, String> {
    const EXPECTED: &str = "expected steps of users,time separated by ; such as \"10,1m;10,5m;0,30s\"";
    let mut previous = 0usize;
    let mut started = 0usize;
    for step in value.split(';') {
        let Some((users, span)) = step.split_once(',') else {
            return Err(format!("step '{}' has no comma; {EXPECTED}", step.trim()));
        };
        let (users, span) = (users.trim(), span.trim());
        let users = users
            .parse::<usize>()
            .ok()
            .filter(|_| users.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("'{users}' is not a number of users; {EXPECTED}"))?;
        let seconds = timespan_secs(span).and_then(|s| s.checked_mul(1_000));
        if seconds.is_none() {
            return Err(format!("'{span}' is not a time span; {EXPECTED}"));
        }
        started = started.saturating_add(users.saturating_sub(previous));
        previous = users;
    }
    if started == 0 {
        return Err(format!("the plan starts no user; {EXPECTED}"));
    }
    value.parse().map_err(|e: goose::GooseError| e.to_string())
}

/// The seconds in a time span such as `90`, `30s` or `1h30m`, in ASCII digits only (Goose's
/// parser takes other scripts' digits too).
fn timespan_secs(span: &str) -> Option<usize> {
    goose::util::parse_timespan(span)
        .filter(|_| span.bytes().all(|b| b.is_ascii_digit() || b"hmsHMS".contains(&b)))
}

/// `--turn-timeout`: a time span from 1 s to 10 min, in seconds.
fn turn_timeout(value: &str) -> Result<u64, String> {
    let seconds = timespan_secs(value.trim()).ok_or_else(|| {
        format!("'{value}' is not a time span: expected seconds or a span such as 30s or 1m")
    })?;
    if !(1..=600).contains(&seconds) {
        return Err(format!("{seconds} s is out of range: expected 1 s to 10 minutes"));
    }
    Ok(seconds as u64)
}

/// Parses a command line (program name first).
pub fn parse<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command().try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    let given = |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    cli.load.test_plan_given = given("test_plan");
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

/// The report types Goose writes, by extension (a trailing `.gz` gzips any of them).
const REPORT_TYPES: [&str; 4] = ["html", "htm", "json", "md"];

/// Checks the files Goose will write — reports and logs — before anything starts: Goose checks a
/// report's type only as the attack starts, answers a log it cannot create with an ERROR line
/// and runs on without it, and panics on a gzipped Goose log it cannot create. None of them may
/// be `output` (the results file) or the HTML report written beside it, which would overwrite it.
pub fn check_goose_outputs(
    goose: &GooseConfiguration,
    output: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use crate::analysis::results::check_output_path;
    use anyhow::{bail, Context};
    use std::path::Path;
    // "" is no file; Goose's RUN_FOLDER (a bare flag) writes into the run's folder.
    let given = |value: &str| !value.is_empty() && value != goose::config::RUN_FOLDER;
    let ours = output.map(|o| (o.to_path_buf(), o.with_extension("html")));
    if let Some((results, html)) = &ours {
        if results == html {
            bail!(
                "--output {}: the HTML report is written beside the results file under the same name \
                 with .html; give the results file another extension, such as {}",
                results.display(),
                results.with_extension("json").display()
            );
        }
    }
    let clashes = |option: &str, path: &str| -> anyhow::Result<()> {
        match &ours {
            Some((results, html)) if Path::new(path) == results || Path::new(path) == html => bail!(
                "{option} {path} is where this run writes its own {}: give it another name",
                if Path::new(path) == results {
                    "results file (--output)"
                } else {
                    "HTML report (beside --output)"
                }
            ),
            _ => Ok(()),
        }
    };
    for report in goose.report_file.iter().filter(|r| given(r)) {
        let name = report.strip_suffix(".gz").unwrap_or(report);
        let ext = Path::new(name).extension().and_then(|e| e.to_str()).unwrap_or("");
        if !REPORT_TYPES.contains(&ext.to_ascii_lowercase().as_str()) {
            bail!(
                "--report-file {report}: the extension picks the report's type: use .html, .json or .md{}",
                if ext == "pdf" {
                    " (PDF reports need Goose's pdf-reports feature)"
                } else {
                    ""
                }
            );
        }
        clashes("--report-file", report)?;
        check_output_path(Path::new(report)).context("--report-file")?;
    }
    let logs = [
        ("--goose-log", &goose.goose_log),
        ("--request-log", &goose.request_log),
        ("--transaction-log", &goose.transaction_log),
        ("--scenario-log", &goose.scenario_log),
        ("--error-log", &goose.error_log),
        ("--debug-log", &goose.debug_log),
        ("--pdf-print-html", &goose.pdf_print_html),
    ];
    for (option, path) in logs {
        if let Some(path) = path.as_deref().filter(|p| given(p)) {
            clashes(option, path)?;
            check_output_path(Path::new(path)).context(option)?;
        }
    }
    if let Some(baseline) = goose.baseline_file.as_deref().filter(|b| !b.is_empty()) {
        let readable = std::fs::metadata(baseline).map(|m| m.is_file()).unwrap_or(false)
            && std::fs::File::open(baseline).is_ok();
        if !readable {
            bail!("--baseline-file {baseline}: cannot read it; expected the JSON report of an earlier run");
        }
    }
    if goose.dashboard_port == Some(0) {
        bail!("--dashboard-port 0: the web UI is opened at a port you know: expected 1 to 65535");
    }
    Ok(())
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
            check_goose_outputs(&cli.goose, output).map_err(|e| format!("{e:#}"))
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
}
