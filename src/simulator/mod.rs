//! The built-in Phone Agent simulator: a fast, faithful stand-in for the system under test.
//!
//! Serves the REST API, the Twilio webhooks and the Media Streams endpoint of SPEC section 3,
//! with fault injection (latency, errors, rate limits, a slower AI pipeline, stream caps, drops,
//! a deliberate leak) so tests can prove the load generator detects problems.

use std::net::SocketAddr;

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
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Requests per second per client before 429 (off unless given)
    #[arg(long)]
    pub rate_limit: Option<f64>,
    /// Multiplies the AI pipeline's latencies (3.0 = three times slower)
    #[arg(long, default_value_t = 1.0)]
    pub ai_slowdown: f64,
    /// Concurrent media streams accepted; above it the upgrade is refused with 503
    #[arg(long)]
    pub max_streams: Option<usize>,
    /// Share (0-1) of media streams dropped mid-call
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Memory retained and never freed per created call and per media stream, in KB (a deliberate leak)
    #[arg(long, default_value_t = 0)]
    pub leak_kb_per_call: u64,
}

/// Runs `serve` until Ctrl-C.
pub async fn serve(_opts: ServeOptions) -> anyhow::Result<()> {
    anyhow::bail!("the simulator is not built yet")
}

/// A simulator running inside this process (tests, benchmarks).
pub struct RunningSimulator {
    pub addr: SocketAddr,
}
