//! `serve`'s command-line options and their checks, shared by the CLI and by code that starts
//! a simulator in-process (tests, benchmarks).

use std::net::{IpAddr, Ipv4Addr};

/// Calls kept in memory by default; older ones are evicted (404 afterwards).
pub const DEFAULT_MAX_CALLS: usize = 100_000;
/// Uninterrupted sound that ends an utterance by default: above the longest unbroken sound in
/// the shipped utterances (about 1.2 s) and the tests' 2 s tones, so speech still ends at its
/// pause, and short enough that a caller streaming noise hears an answer within about 4 s.
pub const DEFAULT_MAX_UTTERANCE_MS: u64 = 2_500;
/// The shortest `--max-utterance-ms` other than 0: speech needs some voiced audio to count.
const MIN_MAX_UTTERANCE_MS: u64 = 200;

/// `serve`'s options (names are a contract: tests, benchmarks and users' scripts use them).
#[derive(clap::Args, Debug, Clone)]
pub struct ServeOptions {
    /// Port to listen on (0 = any free port)
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Added delay on every REST/webhook answer, in ms
    #[arg(long, default_value_t = 0)]
    pub api_latency_ms: u64,
    /// Added uniform random delay 0..N ms on every REST/webhook answer, on top of --api-latency-ms
    #[arg(long, default_value_t = 0)]
    pub api_jitter_ms: u64,
    /// Share (0-1) of REST/webhook requests answered 500
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub error_rate: f64,
    /// Share (0-1) of REST/webhook requests accepted and never answered (the client's timeout ends them)
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub stall_rate: f64,
    /// Share (0-1) of REST/webhook answers replaced by garbage of --garbage-kind
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub garbage_rate: f64,
    /// What a garbage answer is
    #[arg(long, value_enum, default_value_t = GarbageKind::Mixed)]
    pub garbage_kind: GarbageKind,
    /// Requests per second per client (peer IP) before 429, with a burst of one second's worth (off unless given)
    #[arg(long, value_parser = positive)]
    pub rate_limit: Option<f64>,
    /// Multiplies the AI pipeline's latencies (3.0 = three times slower)
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    pub ai_slowdown: f64,
    /// Concurrent media streams accepted; above it the upgrade is refused with 503
    #[arg(long)]
    pub max_streams: Option<usize>,
    /// Share (0-1) of media streams dropped mid-call (1-5 s in, without a close frame)
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub drop_rate: f64,
    /// Share (0-1) of media streams on which the agent sends malformed and unknown events
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub ws_garbage_rate: f64,
    /// Share (0-1) of media streams on which the agent sends one oversized (4 MiB) message
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub ws_oversized_rate: f64,
    /// Share (0-1) of AI turns the agent never answers
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub ai_mute_rate: f64,
    /// Memory retained and never freed per created call and per media stream, in KB (a deliberate leak)
    #[arg(long, default_value_t = 0)]
    pub leak_kb_per_call: u64,
    /// Calls kept in memory; the oldest are evicted beyond it
    #[arg(long, default_value_t = DEFAULT_MAX_CALLS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_calls: usize,
    /// Close media streams that depart from the protocol (a start without connected, a bare stop, ...) with 1002, instead of counting the deviation and going on
    #[arg(long)]
    pub strict_protocol: bool,
    /// Uninterrupted sound (no silent 20 ms chunk) that ends an utterance at this length, so a caller streaming noise gets answers (0 = no limit)
    #[arg(long, default_value_t = DEFAULT_MAX_UTTERANCE_MS, value_parser = max_utterance_ms)]
    pub max_utterance_ms: u64,
}

/// The kinds of broken answer `--garbage-rate` sends.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum GarbageKind {
    /// 200 with `text/html` and an HTML error page where JSON was due
    NotJson,
    /// 200 with a JSON body labelled `text/plain`
    WrongType,
    /// 200 whose body ends before its Content-Length
    Truncated,
    /// 200 with a 64 MiB JSON body
    Huge,
    /// Each of the above in turn
    Mixed,
}

impl Default for ServeOptions {
    /// The command line's defaults (port 8080).
    fn default() -> Self {
        ServeOptions {
            port: 8080,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            api_latency_ms: 0,
            api_jitter_ms: 0,
            error_rate: 0.0,
            stall_rate: 0.0,
            garbage_rate: 0.0,
            garbage_kind: GarbageKind::Mixed,
            rate_limit: None,
            ai_slowdown: 1.0,
            max_streams: None,
            drop_rate: 0.0,
            ws_garbage_rate: 0.0,
            ws_oversized_rate: 0.0,
            ai_mute_rate: 0.0,
            leak_kb_per_call: 0,
            max_calls: DEFAULT_MAX_CALLS,
            strict_protocol: false,
            max_utterance_ms: DEFAULT_MAX_UTTERANCE_MS,
        }
    }
}

impl ServeOptions {
    /// Loopback, any free port, no faults.
    pub fn for_tests() -> ServeOptions {
        ServeOptions {
            port: 0,
            ..ServeOptions::default()
        }
    }

    /// The checks clap makes, for options built in code.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        share(&self.error_rate.to_string()).map_err(|e| anyhow::anyhow!("--error-rate: {e}"))?;
        for (name, value) in [
            ("--drop-rate", self.drop_rate),
            ("--stall-rate", self.stall_rate),
            ("--garbage-rate", self.garbage_rate),
            ("--ws-garbage-rate", self.ws_garbage_rate),
            ("--ws-oversized-rate", self.ws_oversized_rate),
            ("--ai-mute-rate", self.ai_mute_rate),
        ] {
            share(&value.to_string()).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        }
        positive(&self.ai_slowdown.to_string()).map_err(|e| anyhow::anyhow!("--ai-slowdown: {e}"))?;
        if let Some(rate) = self.rate_limit {
            positive(&rate.to_string()).map_err(|e| anyhow::anyhow!("--rate-limit: {e}"))?;
        }
        anyhow::ensure!(self.max_calls >= 1, "--max-calls: must be at least 1");
        max_utterance_ms(&self.max_utterance_ms.to_string())
            .map_err(|e| anyhow::anyhow!("--max-utterance-ms: {e}"))?;
        Ok(())
    }
}

/// A share from 0 to 1.
fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a share from 0 to 1 (e.g. 0.05)")),
    }
}

/// 0 (no limit) or a length a voice detector can reach.
fn max_utterance_ms(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(v) if v == 0 || v >= MIN_MAX_UTTERANCE_MS => Ok(v),
        _ => Err(format!(
            "'{s}' is not 0 (no limit) or a length of at least {MIN_MAX_UTTERANCE_MS} ms"
        )),
    }
}

/// A finite number above 0.
fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("'{s}' is not a number above 0")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeOptions,
    }

    #[test]
    fn command_line_defaults_match_default() {
        let cli = Cli::try_parse_from(["serve"]).unwrap();
        let d = ServeOptions::default();
        assert_eq!(cli.serve.port, d.port);
        assert_eq!(cli.serve.max_calls, d.max_calls);
        assert_eq!(cli.serve.ai_slowdown, d.ai_slowdown);
        assert_eq!(cli.serve.rate_limit, None);
        assert_eq!(cli.serve.strict_protocol, d.strict_protocol);
        assert_eq!(cli.serve.max_utterance_ms, d.max_utterance_ms);
    }

    #[test]
    fn bad_options_are_refused_with_the_option_named() {
        let err = |args: &[&str]| Cli::try_parse_from(args).err().map(|e| e.to_string());
        assert!(err(&["serve", "--error-rate", "1.5"])
            .unwrap()
            .contains("--error-rate"));
        assert!(err(&["serve", "--drop-rate", "-0.1"]).is_some());
        assert!(err(&["serve", "--ai-slowdown", "0"]).is_some());
        assert!(err(&["serve", "--rate-limit", "abc"]).is_some());
        assert!(err(&["serve", "--max-calls", "0"]).is_some());
        assert!(err(&["serve", "--max-utterance-ms", "50"])
            .unwrap()
            .contains("--max-utterance-ms"));
        assert!(err(&["serve", "--max-utterance-ms", "0", "--strict-protocol"]).is_none());
        assert!(err(&["serve", "--error-rate", "0.2", "--rate-limit", "50"]).is_none());
        let opts = ServeOptions {
            ai_slowdown: f64::NAN,
            ..ServeOptions::for_tests()
        };
        assert!(opts.validate().unwrap_err().to_string().contains("--ai-slowdown"));
    }
}
