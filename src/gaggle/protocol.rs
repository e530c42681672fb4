//! The gaggle's wire protocol: JSON messages over TCP, each prefixed by its length (4 bytes, big
//! endian), with a size limit, a timeout on every read, heartbeats, and the handshake's checks
//! (token, crate version, scenario set).
//!
//! A conversation: the worker says [`Hello`]; the manager answers `Welcome` or `Refused`; once
//! every worker has joined it sends each an [`Assignment`], waits for `Ready` from all, then says
//! `Go` to all at once. Workers report [`Progress`] every few seconds and `Finished` at the end;
//! the manager acknowledges with `Received`. Either side sends `Heartbeat` when it has nothing
//! else to say, so silence means the peer is gone.

use super::merge::RunData;
use crate::analysis::results::RawGoose;
use crate::analysis::verdicts::Status;
use crate::config::plan::RunPlan;
use crate::measure::Snapshot;
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use goose::config::{GooseConfiguration, Scenarios};
use goose::metrics::GooseCoordinatedOmissionMitigation;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bumped when a message changes shape; checked with the crate version.
pub const PROTOCOL: u32 = 1;
/// The largest message either side accepts (a worker's final results, AI turns included).
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// A side with nothing to say sends a heartbeat this often...
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// ...and a peer silent for this long is gone.
pub const SILENCE: Duration = Duration::from_secs(5);
/// How long the rest of a message may take once its length has arrived, and a write.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the first message of a connection may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Test hook: a worker claims this crate version instead of its own.
pub const CLAIM_VERSION_ENV: &str = "PHONE_AGENT_LOAD_GAGGLE_CLAIM_VERSION";

/// The crate version this process speaks for.
pub fn crate_version() -> String {
    std::env::var(CLAIM_VERSION_ENV).unwrap_or_else(|_| env!("CARGO_PKG_VERSION").to_string())
}

/// A worker introduces itself.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Hello {
    pub protocol: u32,
    pub version: String,
    /// [`scenario_set`] of the worker's build.
    pub scenarios: Vec<String>,
    pub token: Option<String>,
    pub hostname: String,
    pub pid: u32,
}

impl Hello {
    pub fn new(token: Option<String>) -> Result<Hello> {
        Ok(Hello {
            protocol: PROTOCOL,
            version: crate_version(),
            scenarios: scenario_set()?,
            token,
            hostname: crate::analysis::results::hostname(),
            pid: std::process::id(),
        })
    }
}

/// What a worker runs: its share of the plan and the manager's load options.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Assignment {
    /// The run's plan with this worker's share of the users.
    pub plan: RunPlan,
    pub host: String,
    pub goose: GooseSettings,
    pub fail_on: Status,
    /// The manager's `--audio-dir` recordings; empty for the built-in ones.
    pub utterances: Vec<WireUtterance>,
}

/// An utterance on the wire: its mu-law audio in base64.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct WireUtterance {
    pub text: String,
    pub mulaw_base64: String,
}

impl WireUtterance {
    pub fn encode(u: &crate::config::utterances::Utterance) -> WireUtterance {
        WireUtterance {
            text: u.text.clone(),
            mulaw_base64: base64::engine::general_purpose::STANDARD.encode(&u.mulaw),
        }
    }

    pub fn decode(&self) -> Result<crate::config::utterances::Utterance> {
        let mulaw = base64::engine::general_purpose::STANDARD
            .decode(&self.mulaw_base64)
            .with_context(|| format!("utterance '{}': bad audio", self.text))?;
        Ok(crate::config::utterances::Utterance {
            text: self.text.clone(),
            mulaw,
        })
    }
}

/// The Goose options that shape the load, which the manager decides for every worker. Logs and
/// Goose's own report files stay each worker's own.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct GooseSettings {
    /// This worker's share of the rate.
    pub increase_rate: Option<String>,
    pub increase_time: Option<String>,
    pub run_time: Option<String>,
    pub decrease_rate: Option<String>,
    pub decrease_time: Option<String>,
    pub iterations: Option<usize>,
    pub scenarios: Option<Vec<String>>,
    /// This worker's share of `--throttle-requests`.
    pub throttle_requests: Option<usize>,
    pub threshold: Vec<String>,
    pub no_threshold_abort: bool,
    pub threshold_abort_delay: Option<String>,
    pub no_reset_metrics: bool,
    pub co_mitigation: Option<GooseCoordinatedOmissionMitigation>,
    pub timeout: Option<String>,
    pub no_gzip: bool,
    pub accept_invalid_certs: bool,
    pub sticky_follow: bool,
    pub no_status_codes: bool,
}

impl GooseSettings {
    /// The manager's options (the shares of rate and throttle are set per worker afterwards).
    pub fn from_config(c: &GooseConfiguration) -> GooseSettings {
        GooseSettings {
            increase_rate: c.increase_rate.clone(),
            increase_time: c.increase_time.clone(),
            run_time: c.run_time.clone(),
            decrease_rate: c.decrease_rate.clone(),
            decrease_time: c.decrease_time.clone(),
            iterations: c.iterations,
            scenarios: c.scenarios.as_ref().map(|s| s.active.clone()),
            throttle_requests: c.throttle_requests,
            threshold: c.threshold.clone(),
            no_threshold_abort: c.no_threshold_abort,
            threshold_abort_delay: c.threshold_abort_delay.clone(),
            no_reset_metrics: c.no_reset_metrics,
            co_mitigation: c.co_mitigation.clone(),
            timeout: c.timeout.clone(),
            no_gzip: c.no_gzip,
            accept_invalid_certs: c.accept_invalid_certs,
            sticky_follow: c.sticky_follow,
            no_status_codes: c.no_status_codes,
        }
    }

    /// Sets these options on a worker's own configuration.
    pub fn apply(&self, c: &mut GooseConfiguration) {
        c.increase_rate = self.increase_rate.clone();
        c.increase_time = self.increase_time.clone();
        c.run_time = self.run_time.clone();
        c.decrease_rate = self.decrease_rate.clone();
        c.decrease_time = self.decrease_time.clone();
        c.iterations = self.iterations;
        c.scenarios = self.scenarios.clone().map(|active| Scenarios { active });
        c.throttle_requests = self.throttle_requests;
        c.threshold = self.threshold.clone();
        c.no_threshold_abort = self.no_threshold_abort;
        c.threshold_abort_delay = self.threshold_abort_delay.clone();
        c.no_reset_metrics = self.no_reset_metrics;
        c.co_mitigation = self.co_mitigation.clone();
        c.timeout = self.timeout.clone();
        c.no_gzip = self.no_gzip;
        c.accept_invalid_certs = self.accept_invalid_certs;
        c.sticky_follow = self.sticky_follow;
        c.no_status_codes = self.no_status_codes;
    }
}

/// A worker's running report: everything measured so far, mergeable.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct Progress {
    /// Seconds since the worker's attack started.
    pub elapsed_s: f64,
    /// Goose's metrics so far (None until its controller answers).
    pub goose: Option<RawGoose>,
    pub measured: Snapshot,
    /// Failed requests by reason so far.
    #[serde(default)]
    pub failures_by_reason: BTreeMap<String, u64>,
}

/// Worker -> manager. Externally tagged (`{"progress": {...}}`): serde's internally tagged enums
/// cannot read maps with integer keys, such as Goose's histogram buckets.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "snake_case")]
pub enum ToManager {
    Hello(Hello),
    Ready,
    Failed { reason: String },
    Progress(Box<Progress>),
    Finished(Box<RunData>),
    Heartbeat,
}

/// Manager -> worker.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "snake_case")]
pub enum ToWorker {
    Welcome {
        name: String,
        expected: usize,
    },
    Refused {
        reason: String,
    },
    Assign(Box<Assignment>),
    Go,
    /// Stop the load now (Ctrl-C on the manager, or the run overran).
    Stop {
        reason: String,
    },
    /// The worker's final results arrived.
    Received,
    /// The run is cancelled before it started.
    Abort {
        reason: String,
    },
    Heartbeat,
}

/// A message type one side receives.
pub trait Wire: Serialize + DeserializeOwned + Send + Sync + 'static {
    fn heartbeat() -> Self;
    fn is_heartbeat(&self) -> bool;
}

impl Wire for ToManager {
    fn heartbeat() -> Self {
        ToManager::Heartbeat
    }
    fn is_heartbeat(&self) -> bool {
        matches!(self, ToManager::Heartbeat)
    }
}

impl Wire for ToWorker {
    fn heartbeat() -> Self {
        ToWorker::Heartbeat
    }
    fn is_heartbeat(&self) -> bool {
        matches!(self, ToWorker::Heartbeat)
    }
}

/// Writes one message: its length, then its JSON.
pub async fn write_message<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, msg: &T) -> Result<()> {
    let body = serde_json::to_vec(msg).context("cannot encode a message")?;
    if body.len() > MAX_MESSAGE {
        bail!(
            "a message of {} bytes is over the {MAX_MESSAGE}-byte limit",
            body.len()
        );
    }
    let write = async {
        w.write_all(&(body.len() as u32).to_be_bytes()).await?;
        w.write_all(&body).await?;
        w.flush().await
    };
    match tokio::time::timeout(TRANSFER_TIMEOUT, write).await {
        Ok(r) => r.map_err(|e| anyhow!("cannot send: {e}")),
        Err(_) => bail!(
            "cannot send: the peer took no data for {}s",
            TRANSFER_TIMEOUT.as_secs()
        ),
    }
}

/// Reads one message of at most `limit` bytes, waiting at most `idle` for it to begin.
pub async fn read_message<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    limit: usize,
    idle: Duration,
) -> Result<T> {
    let mut len = [0u8; 4];
    match tokio::time::timeout(idle, r.read_exact(&mut len)).await {
        Err(_) => bail!("no message for {}s", idle.as_secs_f64()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => bail!("connection closed"),
        Ok(Err(e)) => bail!("connection failed: {e}"),
        Ok(Ok(_)) => {}
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > limit {
        bail!(
            "a message of {n} bytes is over the {limit}-byte limit (is the peer a phone-agent-load gaggle?)"
        );
    }
    let mut body = vec![0u8; n];
    match tokio::time::timeout(TRANSFER_TIMEOUT, r.read_exact(&mut body)).await {
        Err(_) => bail!(
            "a message of {n} bytes did not arrive within {}s",
            TRANSFER_TIMEOUT.as_secs()
        ),
        Ok(Err(e)) => bail!("connection lost in the middle of a message: {e}"),
        Ok(Ok(_)) => {}
    }
    serde_json::from_slice(&body)
        .map_err(|e| anyhow!("bad message ({e}): is the peer a phone-agent-load gaggle?"))
}

/// What a [`Link`] delivers: a message from peer `from`, or why the link was lost.
#[derive(Debug)]
pub struct Event<In> {
    pub from: usize,
    pub msg: std::result::Result<In, String>,
}

/// An established connection: a writer task sending queued messages (and heartbeats when idle)
/// and a reader task delivering the peer's messages (heartbeats dropped) as [`Event`]s.
pub struct Link<Out: Wire> {
    out: Option<mpsc::UnboundedSender<Out>>,
    reader: JoinHandle<()>,
    writer: Option<JoinHandle<()>>,
}

impl<Out: Wire> Link<Out> {
    /// Starts the link; events go to `events`, tagged `from`.
    pub fn start<In: Wire>(stream: TcpStream, from: usize, events: mpsc::UnboundedSender<Event<In>>) -> Self {
        let (mut r, mut w) = stream.into_split();
        let (out, mut queue) = mpsc::unbounded_channel::<Out>();
        let lost = events.clone();
        let writer = tokio::spawn(async move {
            loop {
                let msg = match tokio::time::timeout(HEARTBEAT, queue.recv()).await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(_) => Out::heartbeat(),
                };
                if let Err(e) = write_message(&mut w, &msg).await {
                    let _ = lost.send(Event {
                        from,
                        msg: Err(format!("{e:#}")),
                    });
                    return;
                }
            }
            let _ = w.shutdown().await;
        });
        let reader = tokio::spawn(async move {
            loop {
                match read_message::<_, In>(&mut r, MAX_MESSAGE, SILENCE).await {
                    Ok(m) if m.is_heartbeat() => continue,
                    Ok(m) => {
                        if events.send(Event { from, msg: Ok(m) }).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = events.send(Event {
                            from,
                            msg: Err(format!("{e:#}")),
                        });
                        return;
                    }
                }
            }
        });
        Link {
            out: Some(out),
            reader,
            writer: Some(writer),
        }
    }

    /// Queues a message; false once the link is closed.
    pub fn send(&self, msg: Out) -> bool {
        self.out.as_ref().is_some_and(|o| o.send(msg).is_ok())
    }

    /// Sends what is queued (for at most `TRANSFER_TIMEOUT`), then closes the connection.
    pub async fn close(mut self) {
        self.out = None;
        if let Some(writer) = self.writer.take() {
            let abort = writer.abort_handle();
            if tokio::time::timeout(TRANSFER_TIMEOUT, writer).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl<Out: Wire> Drop for Link<Out> {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(w) = &self.writer {
            w.abort();
        }
    }
}

/// The manager's checks of a worker's first message, `{"hello": {...}}`, in order: the token (before anything is said about
/// this side), then the protocol and crate version, then the scenario set. `Err` is the reason
/// both sides print.
pub fn check_hello(
    first: &serde_json::Value,
    token: Option<&str>,
    scenarios: &[String],
) -> Result<Hello, String> {
    let Some(hello) = first.get("hello") else {
        return Err("the first message was not a worker's hello".into());
    };
    let given = hello.get("token").and_then(|t| t.as_str());
    match (token, given) {
        (None, None) => {}
        (Some(_), None) => {
            return Err(
                "this gaggle needs a token: give the worker the manager's --gaggle-token \
                        (or PHONE_AGENT_LOAD_GAGGLE_TOKEN)"
                    .into(),
            )
        }
        (Some(want), Some(got)) if !same_secret(want, got) => return Err("wrong gaggle token".into()),
        (None, Some(_)) => {
            return Err(
                "the worker sent a gaggle token but the manager has none: give both the same \
                        --gaggle-token"
                    .into(),
            )
        }
        _ => {}
    }
    let ours = env!("CARGO_PKG_VERSION");
    let theirs = hello
        .get("version")
        .and_then(|v| v.as_str())
        .unwrap_or("an unknown version");
    let protocol = hello.get("protocol").and_then(|p| p.as_u64());
    if theirs != ours || protocol != Some(PROTOCOL as u64) {
        return Err(format!(
            "crate version mismatch: the worker runs phone-agent-load {theirs}, the manager {ours}; \
             run the same version everywhere"
        ));
    }
    let hello: Hello = serde_json::from_value(hello.clone())
        .map_err(|e| format!("not a phone-agent-load worker's hello: {e}"))?;
    if hello.scenarios != scenarios {
        let missing: Vec<&String> = scenarios
            .iter()
            .filter(|s| !hello.scenarios.contains(s))
            .collect();
        let extra: Vec<&String> = hello
            .scenarios
            .iter()
            .filter(|s| !scenarios.contains(s))
            .collect();
        return Err(format!(
            "scenario set mismatch: the worker lacks {missing:?} and has {extra:?} beyond the manager's; \
             build both from the same source"
        ));
    }
    Ok(hello)
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The scenarios this build registers (in both AI modes), each with its transactions:
/// "name: t1, t2, ...".
pub fn scenario_set() -> Result<Vec<String>> {
    use crate::config::plan::AiMode;
    use crate::scenarios::{ai_call, api, media_stream, webhooks, Shared};
    let builders = [
        api::api_user,
        webhooks::webhook_user,
        api::high_load_user,
        media_stream::media_stream_call,
        ai_call::ai_call,
    ];
    // Something to say, so the stream-mode AI call builds.
    let utterance = crate::config::utterances::Utterance {
        text: "Ja.".into(),
        mulaw: vec![0xff; 160],
    };
    let mut set = Vec::new();
    for mode in [AiMode::Stream, AiMode::Mock] {
        let profile = crate::config::profile::Profile::load("quick")?;
        let shared = Arc::new(Shared {
            plan: RunPlan::new(profile, &Default::default(), mode, false)?,
            measurements: Default::default(),
            utterances: Arc::new(vec![utterance.clone()]),
            unknown_events: Default::default(),
        });
        for build in builders {
            let s = build(&shared).map_err(|e| anyhow!("cannot build the scenarios: {e:?}"))?;
            let names: Vec<String> = s
                .transactions
                .iter()
                .map(|t| match &t.name {
                    goose::goose::TransactionName::InheritNameByRequests(n)
                    | goose::goose::TransactionName::TransactionOnly(n) => n.to_string(),
                })
                .collect();
            let entry = format!("{}: {}", s.name, names.join(", "));
            if !set.contains(&entry) {
                set.push(entry);
            }
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_round_trip_and_the_limit_holds() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        write_message(&mut a, &ToWorker::Stop { reason: "why".into() })
            .await
            .unwrap();
        let got: ToWorker = read_message(&mut b, MAX_MESSAGE, SILENCE).await.unwrap();
        assert!(matches!(got, ToWorker::Stop { reason } if reason == "why"));
        write_message(&mut a, &ToWorker::Go).await.unwrap();
        let err = read_message::<_, ToWorker>(&mut b, 3, SILENCE).await.unwrap_err();
        assert!(err.to_string().contains("over the 3-byte limit"), "{err}");
    }

    #[tokio::test]
    async fn garbage_silence_and_eof_are_clear_errors() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let err = read_message::<_, ToWorker>(&mut b, MAX_MESSAGE, SILENCE)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&3u32.to_be_bytes()).await.unwrap();
        a.write_all(b"{x}").await.unwrap();
        let err = read_message::<_, ToWorker>(&mut b, MAX_MESSAGE, SILENCE)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("bad message"), "{err}");
        let err = read_message::<_, ToWorker>(&mut b, MAX_MESSAGE, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no message"), "{err}");
        drop(a);
        let err = read_message::<_, ToWorker>(&mut b, MAX_MESSAGE, SILENCE)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("closed"), "{err}");
    }

    #[test]
    fn hello_checks_token_then_version_then_scenarios() {
        let set = scenario_set().unwrap();
        assert!(set.len() >= 5, "{set:?}");
        let hello = Hello::new(Some("t".into())).unwrap();
        let value = serde_json::to_value(ToManager::Hello(hello.clone())).unwrap();
        assert_eq!(check_hello(&value, Some("t"), &set), Ok(hello.clone()));
        assert_eq!(
            check_hello(&value, Some("u"), &set).unwrap_err(),
            "wrong gaggle token"
        );
        assert!(check_hello(&value, None, &set)
            .unwrap_err()
            .contains("manager has none"));
        let mut other = value.clone();
        other["hello"]["token"] = serde_json::Value::Null;
        assert!(check_hello(&other, Some("t"), &set)
            .unwrap_err()
            .contains("needs a token"));
        let mut other = value.clone();
        other["hello"]["version"] = "9.9.9".into();
        let err = check_hello(&other, Some("t"), &set).unwrap_err();
        assert!(
            err.contains("9.9.9") && err.contains(env!("CARGO_PKG_VERSION")),
            "{err}"
        );
        let err = check_hello(&value, Some("t"), &set[1..]).unwrap_err();
        assert!(err.contains("scenario set mismatch"), "{err}");
        let err = check_hello(&serde_json::json!({"ready": null}), None, &set).unwrap_err();
        assert!(err.contains("not a worker's hello"), "{err}");
    }

    #[test]
    fn goose_settings_carry_the_load_options() {
        let cli = super::super::TestLine::parse(&[
            "--run-time",
            "30s",
            "--increase-rate",
            "4",
            "--threshold",
            "p95<300ms",
            "--scenarios",
            "apiuser",
        ])
        .unwrap();
        let s = GooseSettings::from_config(&cli.goose);
        let mut c = GooseConfiguration::default();
        s.apply(&mut c);
        assert_eq!(GooseSettings::from_config(&c), s);
        assert_eq!(c.run_time.as_deref(), Some("30s"));
        assert_eq!(c.scenarios.unwrap().active, vec!["apiuser".to_string()]);
    }
}
