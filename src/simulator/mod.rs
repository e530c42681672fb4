//! The built-in Phone Agent simulator: a fast, faithful stand-in for the system under test.
//!
//! Serves the REST API, the Twilio webhooks and the Media Streams endpoint of SPEC section 3,
//! with fault injection (latency, errors, rate limits, a slower AI pipeline, stream caps, drops,
//! a deliberate leak) so tests can prove the load generator detects problems. `GET /_sim/stats`
//! tells what it received (the same JSON as [`RunningSimulator::stats`]); `GET /metrics` gives
//! its resident memory in Prometheus' format. Neither is counted or subject to faults.
//!
//! Layout: [`api`] (REST), [`webhooks`], [`media`] (the WebSocket endpoint), [`voice`] (VAD,
//! pipeline, answer audio), [`store`] (calls), [`faults`] (middleware, rate limiter, leak),
//! [`stats`] (counters).

mod api;
mod faults;
mod media;
mod stats;
mod store;
mod voice;
mod webhooks;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Calls kept in memory by default; older ones are evicted (404 afterwards).
pub const DEFAULT_MAX_CALLS: usize = 100_000;

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
    fn validate(&self) -> anyhow::Result<()> {
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

/// A finite number above 0.
fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("'{s}' is not a number above 0")),
    }
}

/// The simulator's state, shared by every handler.
pub(crate) struct Sim {
    opts: ServeOptions,
    /// The address it listens on.
    addr: SocketAddr,
    stats: stats::Stats,
    store: store::Store,
    limiter: Option<faults::RateLimiter>,
    leak: faults::Leak,
    sessions: media::Sessions,
    stalls: faults::Stalls,
}

impl Sim {
    fn new(opts: ServeOptions, addr: SocketAddr) -> Sim {
        Sim {
            limiter: opts.rate_limit.map(faults::RateLimiter::new),
            leak: faults::Leak::new(opts.leak_kb_per_call),
            store: store::Store::new(opts.max_calls),
            stats: stats::Stats::new(),
            sessions: media::Sessions::default(),
            stalls: faults::Stalls::default(),
            addr,
            opts,
        }
    }

    fn stats_json(&self) -> serde_json::Value {
        self.stats.to_json(self.store.len())
    }
}

fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/api/v1/health", get(api::health))
        .route("/api/v1/calls", get(api::list_calls).post(api::create_call))
        .route("/api/v1/calls/{id}", get(api::get_call).patch(api::update_call))
        .route("/webhooks/twilio/status", post(webhooks::status))
        .route("/webhooks/twilio/voice", post(webhooks::voice))
        .route("/webhooks/twilio/media/{call_sid}", get(media::media_stream))
        .route("/_sim/stats", get(stats_handler))
        .route("/metrics", get(metrics_handler))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(sim)
}

async fn stats_handler(State(sim): State<Arc<Sim>>) -> Response {
    axum::Json(sim.stats_json()).into_response()
}

async fn metrics_handler(State(sim): State<Arc<Sim>>) -> Response {
    let text = sim.stats.prometheus(sim.store.len());
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

async fn not_found() -> Response {
    api::detail(axum::http::StatusCode::NOT_FOUND, "Not Found")
}

/// A simulator running inside this process (tests, benchmarks, `serve`).
pub struct RunningSimulator {
    addr: SocketAddr,
    sim: Arc<Sim>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

/// Starts the simulator on `opts.bind:opts.port` in this process and returns once it listens.
pub async fn start(opts: ServeOptions) -> anyhow::Result<RunningSimulator> {
    opts.validate()?;
    let wanted = SocketAddr::new(opts.bind, opts.port);
    let listener = tokio::net::TcpListener::bind(wanted)
        .await
        .map_err(|e| bind_error(wanted, e))?;
    let addr = listener
        .local_addr()
        .with_context(|| format!("cannot listen on {wanted}"))?;
    let sim = Arc::new(Sim::new(opts, addr));
    // Prepare the answer audio now rather than in the first call.
    std::sync::LazyLock::force(&voice::ANSWER_PAYLOADS);
    let front = faults::Front {
        sim: sim.clone(),
        router: router(sim.clone()),
    };
    let app =
        axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<SocketAddr>(front);
    // Small writes (media frames, marks) must not wait for Nagle.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(RunningSimulator {
        addr,
        sim,
        stop: Some(stop),
        server: Some(server),
    })
}

fn bind_error(addr: SocketAddr, e: std::io::Error) -> anyhow::Error {
    use std::io::ErrorKind::*;
    match e.kind() {
        AddrInUse => {
            anyhow::anyhow!("{addr} is already in use (pick another --port, or 0 for any free port)")
        }
        AddrNotAvailable => anyhow::anyhow!("cannot listen on {addr}: not an address of this machine"),
        PermissionDenied => anyhow::anyhow!("cannot listen on {addr}: permission denied"),
        _ => anyhow::anyhow!("cannot listen on {addr}: {e}"),
    }
}

/// Runs the simulator until Ctrl-C or SIGTERM, printing `listening on http://ADDR:PORT` first
/// (one line, flushed: a parent process reads it to learn the port), then shuts down gracefully.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    // Listen for signals before announcing the port: a parent may stop us right after.
    let stop = StopSignal::new()?;
    let sim = start(opts).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{}", sim.addr())
            .and_then(|()| out.flush())
            .context("cannot write to stdout")?;
    }
    stop.wait().await;
    sim.shutdown().await;
    Ok(())
}

/// Ctrl-C (SIGINT) or SIGTERM.
struct StopSignal {
    #[cfg(unix)]
    signals: [tokio::signal::unix::Signal; 2],
}

impl StopSignal {
    fn new() -> anyhow::Result<StopSignal> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen = |kind: SignalKind, name: &str| {
                signal(kind).with_context(|| format!("cannot listen for {name}"))
            };
            Ok(StopSignal {
                signals: [
                    listen(SignalKind::interrupt(), "Ctrl-C")?,
                    listen(SignalKind::terminate(), "SIGTERM")?,
                ],
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignal {})
    }

    async fn wait(self) {
        #[cfg(unix)]
        {
            let [mut int, mut term] = self.signals;
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

impl RunningSimulator {
    /// The address it listens on (the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR:PORT`, with loopback in place of an unspecified bind address.
    pub fn url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        format!("http://{addr}")
    }

    /// What it has received and answered so far (also at `GET /_sim/stats`).
    pub fn stats(&self) -> serde_json::Value {
        self.sim.stats_json()
    }

    /// Stops accepting, lets requests in flight finish, closes media streams with a close
    /// frame (1001), and returns once all is done (within a few seconds at worst).
    pub async fn shutdown(mut self) {
        self.signal_stop();
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        // Sessions finish their close handshakes within a second; don't wait forever on any.
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.sim.stats.streams.active.load(Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.sim.sessions.close_all();
        self.sim.stalls.release_all();
    }
}

impl Drop for RunningSimulator {
    /// Dropped without `shutdown` (a failing test): still stop serving.
    fn drop(&mut self) {
        self.signal_stop();
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
        assert!(err(&["serve", "--error-rate", "0.2", "--rate-limit", "50"]).is_none());
        let opts = ServeOptions {
            ai_slowdown: f64::NAN,
            ..ServeOptions::for_tests()
        };
        assert!(opts.validate().unwrap_err().to_string().contains("--ai-slowdown"));
    }
}
