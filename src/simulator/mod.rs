//! The built-in Phone Agent simulator: a fast, faithful stand-in for the system under test.
//!
//! Serves what the load generator drives: the REST API for calls, the Twilio webhooks and the
//! Twilio Media Streams WebSocket endpoint, with fault injection (latency, errors, rate limits,
//! a slower AI pipeline, stream caps, drops, a deliberate leak) so tests can prove the load
//! generator detects problems. `GET /_sim/stats` tells what it received (the same JSON as
//! [`RunningSimulator::stats`]); `GET /metrics` gives its resident memory in Prometheus' format.
//! Neither is counted or subject to faults.
//!
//! Layout: [`options`] (`serve`'s options), [`front`] (routing, counting, where faults apply),
//! [`http_faults`] (the REST and webhook faults), [`api`] (REST), [`webhooks`], [`media`] (the
//! WebSocket endpoint), [`voice`] (VAD, pipeline, answer audio), [`store`] (calls), [`leak`]
//! (the deliberate leak), [`conformance`] (how callers depart from the protocol), [`stats`]
//! (counters).

mod api;
mod conformance;
mod front;
mod http_faults;
mod leak;
mod media;
mod options;
mod stats;
mod store;
mod voice;
mod webhooks;

pub use options::{GarbageKind, ServeOptions, DEFAULT_MAX_CALLS, DEFAULT_MAX_UTTERANCE_MS};

use anyhow::Context;
use axum::serve::ListenerExt;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The simulator's state, shared by every handler.
pub(crate) struct Sim {
    opts: ServeOptions,
    /// The address it listens on.
    addr: SocketAddr,
    stats: stats::Stats,
    store: store::Store,
    limiter: Option<http_faults::RateLimiter>,
    leak: leak::Leak,
    stalls: http_faults::Stalls,
    /// `--garbage-rate`'s answers (and, for `mixed`, the kind the next one takes).
    garbage: http_faults::GarbageAnswers,
    /// Which media streams may open, and the signal that closes them.
    stream_gate: media::StreamGate,
    /// The turns the media streams' bad messages are taken in.
    bad_messages: media::BadMessageTurns,
}

impl Sim {
    fn new(opts: ServeOptions, addr: SocketAddr) -> Sim {
        Sim {
            limiter: opts.rate_limit.map(http_faults::RateLimiter::new),
            leak: leak::Leak::new(opts.leak_kb_per_call),
            store: store::Store::new(opts.max_calls),
            stats: stats::Stats::new(),
            stalls: http_faults::Stalls::default(),
            garbage: http_faults::GarbageAnswers::new(opts.garbage_kind),
            stream_gate: media::StreamGate::new(opts.max_streams),
            bad_messages: media::BadMessageTurns::default(),
            addr,
            opts,
        }
    }

    fn stats_json(&self) -> serde_json::Value {
        self.stats.to_json(self.store.len())
    }
}

/// True with probability `share` (0 below 0, 1 above 1, never a panic; nothing drawn for 0).
pub(crate) fn chance(rng: &mut impl rand::Rng, share: f64) -> bool {
    share >= 1.0 || (share > 0.0 && rng.random_bool(share))
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
    let app = axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<SocketAddr>(
        front::FrontDoor::new(sim.clone()),
    );
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
        // Media streams finish their close handshakes within a second; don't wait forever on any.
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.sim.stats.streams.active.load(Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.sim.stream_gate.close_all();
        self.sim.stalls.release_all();
    }
}

impl Drop for RunningSimulator {
    /// Dropped without `shutdown` (a failing test): still stop serving.
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// The router's answer to a request.
pub(crate) async fn dispatch(
    router: &mut axum::Router,
    req: axum::extract::Request,
) -> axum::response::Response {
    use tower_service::Service;
    match router.call(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}
