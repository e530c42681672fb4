//! A gaggle worker: joins the manager, runs an ordinary Goose attack on the share of the load it
//! is given, reports progress every few seconds and its results at the end.
//!
//! If the manager is lost, the worker stops its load at once (Goose's killswitch, as Ctrl-C does)
//! and writes its own results locally, so nothing is lost.

use super::merge::RunData;
use super::protocol::{
    read_message, write_message, Assignment, Event, Hello, Link, Progress, ToManager, ToWorker,
    HANDSHAKE_TIMEOUT, MAX_MESSAGE,
};
use super::{secs, GaggleOptions, WorkerSettings};
use crate::analysis::results::{self, RawGoose};
use crate::analysis::verdicts::Status;
use crate::config::options::RunOptions;
use crate::run::RunRecord;

use crate::measure::Measurements;
use crate::run::interrupt;
use crate::run::{self, Prepared};
use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use goose::config::GooseConfiguration;
use goose::metrics::GooseMetrics;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// How often the worker reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How long Goose's controller may take to hand over its metrics.
const CONTROLLER_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long the manager may take to acknowledge the results.
const RECEIPT_TIMEOUT: Duration = Duration::from_secs(60);
/// How often waiting loops look for Ctrl-C.
const POLL: Duration = Duration::from_millis(200);

type Events = mpsc::UnboundedReceiver<Event<ToWorker>>;

/// `--worker`: returns the exit status.
///
/// The command line has refused every option that shapes the load: the manager's plan is run
/// as it comes; `output` is this worker's own copy of its results.
pub async fn run(output: Option<PathBuf>, goose: GooseConfiguration, gaggle: GaggleOptions) -> i32 {
    interrupt::install();
    match work(output, goose, gaggle).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

async fn work(output: Option<PathBuf>, mut goose: GooseConfiguration, gaggle: GaggleOptions) -> Result<i32> {
    let settings = WorkerSettings::from_options(&gaggle)?;
    if goose.no_autostart {
        bail!("--no-autostart does not apply to --worker: the manager starts its workers");
    }
    if let Some(out) = &output {
        crate::config::outputs::check_output_path(out).context("--output")?;
    }
    crate::config::outputs::check_goose_outputs(&goose, output.as_deref())?;
    crate::webui::configure(&mut goose, true)?;
    let options = RunOptions {
        output,
        ..RunOptions::default()
    };
    let hello = Hello::new(settings.token.clone())?;
    let mut stream = connect(&settings).await?;
    let (name, expected) = join(&mut stream, hello, &settings).await?;
    println!(
        "Joined the gaggle at {}:{} as {name} (one of {expected} workers); waiting for the start",
        settings.manager_host, settings.manager_port
    );
    let (tx, mut events) = mpsc::unbounded_channel();
    let link: Link<ToManager> = Link::start(stream, 0, tx);
    let assignment = match ready(&link, &mut events, &options, &goose).await {
        Ok(a) => a,
        Err(e) => {
            link.close().await;
            return Err(e);
        }
    };
    let (assignment, prepared) = assignment;
    println!(
        "{name}: running {} users against {}",
        prepared.plan.users.total(),
        prepared.host
    );
    let measurements = prepared.measurements.clone();
    let controller = prepared.goose.websocket_port;
    let (done, finished) = oneshot::channel();
    let companion = tokio::spawn(accompany(link, events, measurements, controller, finished));
    let record = run::attack(prepared).await;
    let _ = done.send(());
    let (link, mut events, lost) = companion.await.context("the worker's reporting task failed")?;
    let delivered = match lost {
        None => deliver(&link, &mut events, &record).await,
        Some(reason) => Err(reason),
    };
    link.close().await;
    Ok(finish(
        &record,
        delivered,
        options.output.as_deref(),
        &name,
        assignment.fail_on,
    ))
}

/// Connects to the manager, trying again until `--gaggle-timeout` (workers may start first).
async fn connect(s: &WorkerSettings) -> Result<TcpStream> {
    let deadline = Instant::now() + s.timeout;
    let mut said = false;
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(3),
            TcpStream::connect((s.manager_host.as_str(), s.manager_port)),
        );
        let why = match attempt.await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 3s".to_string(),
        };
        if let Some(reason) = interrupt::reason() {
            bail!("{reason}, while waiting for the gaggle manager");
        }
        if Instant::now() >= deadline {
            bail!(
                "cannot reach the gaggle manager at {}:{} within {}: {why} (is it running with --manager? \
                 check --manager-host and --manager-port)",
                s.manager_host,
                s.manager_port,
                secs(s.timeout)
            );
        }
        if !said {
            println!(
                "Waiting for the gaggle manager at {}:{} ({why})",
                s.manager_host, s.manager_port
            );
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Says hello; returns the name the manager gave this worker and the number of workers.
async fn join(stream: &mut TcpStream, hello: Hello, s: &WorkerSettings) -> Result<(String, usize)> {
    let at = format!("{}:{}", s.manager_host, s.manager_port);
    write_message(stream, &ToManager::Hello(hello))
        .await
        .with_context(|| format!("cannot greet the gaggle manager at {at}"))?;
    let answer = read_message::<_, ToWorker>(stream, MAX_MESSAGE, HANDSHAKE_TIMEOUT)
        .await
        .with_context(|| format!("no answer from the gaggle manager at {at}"))?;
    match answer {
        ToWorker::Welcome { name, expected } => Ok((name, expected)),
        ToWorker::Refused { reason } => bail!("the gaggle manager at {at} refused this worker: {reason}"),
        other => bail!("unexpected answer from the gaggle manager at {at}: {other:?}"),
    }
}

/// Waits for the share, prepares it, says Ready and waits for Go.
async fn ready(
    link: &Link<ToManager>,
    events: &mut Events,
    options: &RunOptions,
    goose: &GooseConfiguration,
) -> Result<(Assignment, Prepared)> {
    let assignment = loop {
        match next(events).await? {
            ToWorker::Assign(a) => break *a,
            ToWorker::Abort { reason } => bail!("the gaggle manager called the run off: {reason}"),
            _ => {}
        }
    };
    let prepared = match prepare(&assignment, options, goose).await {
        Ok(p) => p,
        Err(e) => {
            link.send(ToManager::Failed {
                reason: format!("{e:#}"),
            });
            return Err(e);
        }
    };
    link.send(ToManager::Ready);
    loop {
        match next(events).await? {
            ToWorker::Go => return Ok((assignment, prepared)),
            ToWorker::Abort { reason } | ToWorker::Stop { reason } => {
                bail!("the gaggle manager called the run off: {reason}")
            }
            _ => {}
        }
    }
}

/// The manager's next message; an error when the manager is lost or on Ctrl-C.
async fn next(events: &mut Events) -> Result<ToWorker> {
    loop {
        if let Some(reason) = interrupt::reason() {
            bail!("{reason}");
        }
        match tokio::time::timeout(POLL, events.recv()).await {
            Ok(Some(Event { msg: Ok(m), .. })) => return Ok(m),
            Ok(Some(Event { msg: Err(reason), .. })) => bail!("lost the gaggle manager: {reason}"),
            Ok(None) => bail!("lost the gaggle manager"),
            Err(_) => {}
        }
    }
}

/// The worker's run, as a local run would be prepared (the target checked from here), with
/// exactly the manager's plan and Goose options, and this worker's own logs and `--output`.
async fn prepare(a: &Assignment, options: &RunOptions, own_goose: &GooseConfiguration) -> Result<Prepared> {
    let mut goose = own_goose.clone();
    a.goose.apply(&mut goose);
    goose.host = Some(a.host.clone());
    // Goose's WebSocket Controller on loopback hands over the running metrics for progress.
    goose.websocket = true;
    goose.websocket_host = Some("127.0.0.1".to_string());
    goose.websocket_port = Some(free_port()?);
    let mut p = run::prepare_plan(a.plan.clone(), options, goose).await?;
    // The manager's own recordings travel; otherwise the built-in ones serve.
    if !a.utterances.is_empty() {
        p.utterances = Arc::new(a.utterances.iter().map(|u| u.decode()).collect::<Result<_>>()?);
    }
    Ok(p)
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// While the attack runs: report progress, obey Stop, and stop the load if the manager is lost.
/// Hands the link back when `finished` fires, with why the manager was lost, if it was.
async fn accompany(
    link: Link<ToManager>,
    mut events: Events,
    measurements: Arc<Measurements>,
    controller: Option<u16>,
    mut finished: oneshot::Receiver<()>,
) -> (Link<ToManager>, Events, Option<String>) {
    let started = Instant::now();
    let mut metrics = MetricsPoller {
        port: controller,
        ws: None,
    };
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    let mut lost: Option<String> = None;
    loop {
        tokio::select! {
            _ = &mut finished => break,
            _ = tick.tick(), if lost.is_none() => {
                let goose = metrics.poll().await;
                link.send(ToManager::Progress(Box::new(Progress {
                    elapsed_s: started.elapsed().as_secs_f64(),
                    goose,
                    measured: measurements.snapshot(),
                    failures_by_reason: measurements.failures.peek(),
                })));
            }
            ev = events.recv(), if lost.is_none() => match ev.map(|e| e.msg) {
                Some(Ok(ToWorker::Stop { reason })) => {
                    println!("The gaggle manager stops the run: {reason}");
                    interrupt::interrupt(&format!("stopped by the gaggle manager: {reason}"));
                }
                Some(Ok(_)) => {}
                Some(Err(reason)) => lost = Some(lose_manager(reason)),
                None => lost = Some(lose_manager("connection gone".to_string())),
            },
        }
    }
    (link, events, lost)
}

fn lose_manager(reason: String) -> String {
    eprintln!(
        "warning: lost the gaggle manager ({reason}): stopping the load; this worker's results stay here"
    );
    interrupt::interrupt(&format!("lost the gaggle manager: {reason}"));
    reason
}

/// Goose's running metrics, from its WebSocket Controller (`metrics-json`).
struct MetricsPoller {
    port: Option<u16>,
    ws: Option<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>>,
}

#[derive(serde::Deserialize)]
struct ControllerReply {
    response: String,
    success: bool,
}

impl MetricsPoller {
    /// The metrics now, or None if the controller does not answer in time (not up yet, busy).
    async fn poll(&mut self) -> Option<RawGoose> {
        let port = self.port?;
        match tokio::time::timeout(CONTROLLER_TIMEOUT, self.ask(port)).await {
            Ok(Ok(m)) => Some(m),
            _ => {
                self.ws = None;
                None
            }
        }
    }

    async fn ask(&mut self, port: u16) -> Result<RawGoose> {
        let ws = match &mut self.ws {
            Some(ws) => ws,
            None => {
                let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}")).await?;
                self.ws.insert(ws)
            }
        };
        ws.send(Message::Text(r#"{"request":"metrics-json"}"#.into()))
            .await?;
        while let Some(msg) = ws.next().await {
            if let Message::Text(text) = msg? {
                let reply: ControllerReply = serde_json::from_str(&text)?;
                if !reply.success {
                    bail!("controller: {}", reply.response);
                }
                let metrics: GooseMetrics = serde_json::from_str(&reply.response)?;
                return Ok(RawGoose::from_metrics(&metrics));
            }
        }
        bail!("the controller closed the connection")
    }
}

/// Sends the results and waits for the manager's receipt.
async fn deliver(link: &Link<ToManager>, events: &mut Events, record: &RunRecord) -> Result<(), String> {
    link.send(ToManager::Finished(Box::new(RunData::from_record(record))));
    let deadline = tokio::time::Instant::now() + RECEIPT_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event {
                msg: Ok(ToWorker::Received),
                ..
            })) => return Ok(()),
            Ok(Some(Event { msg: Ok(_), .. })) => {}
            Ok(Some(Event { msg: Err(reason), .. })) => return Err(reason),
            Ok(None) => return Err("connection gone".to_string()),
            Err(_) => return Err(format!("no receipt within {}", secs(RECEIPT_TIMEOUT))),
        }
    }
}

/// Keeps the results here when the manager did not get them (or `--output` asks for them);
/// returns the exit status: once the manager has them 0 (1 if the run was interrupted: the
/// manager judges the rest), else the local verdict's, at least 1.
fn finish(
    record: &RunRecord,
    delivered: Result<(), String>,
    output: Option<&Path>,
    name: &str,
    fail_on: Status,
) -> i32 {
    match &delivered {
        Ok(()) => println!("Results delivered to the gaggle manager"),
        Err(reason) => {
            eprintln!(
                "warning: the gaggle manager did not get this worker's results ({reason}): writing them here"
            )
        }
    }
    let interrupted = i32::from(record.interrupted);
    let path = match (output, &delivered) {
        (Some(path), _) => path.to_path_buf(),
        (None, Ok(())) => return interrupted,
        (None, Err(_)) => default_output(name),
    };
    let code = crate::analysis::conclude(record, Some(&path), fail_on, &[]);
    if delivered.is_ok() {
        interrupted
    } else {
        code.max(1)
    }
}

/// `gaggle-w1-HOST-YYYYmmdd-HHMMSS.json` in the working folder.
fn default_output(name: &str) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    PathBuf::from(format!("gaggle-{name}-{}-{stamp}.json", results::hostname()))
}
