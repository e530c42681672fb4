//! The gaggle manager: waits for its workers, hands each its share of the load, starts them
//! together, shows their aggregated progress, and merges their results exactly into one run's
//! results (the same post-run hook, summary, results file and report as a local run, plus a
//! `workers` list).
//!
//! A worker lost mid-run does not stop the run: its last progress report stands in for its
//! results, it is named in the summary and the results file, and the manager exits non-zero.

use super::merge::{self, Part, RunData, WorkersHook};
use super::protocol::{
    self, check_hello, read_message, write_message, Assignment, Event, GooseSettings, Hello, Link, Progress,
    ToManager, ToWorker, WireUtterance, HANDSHAKE_TIMEOUT,
};
use super::{secs, shares, GaggleOptions, ManagerSettings};
use crate::analysis::results::{RawData, RawGoose};
use crate::analysis::verdicts::Status;
use crate::analysis::PostRunHook;
use crate::config::options::RunOptions;
use crate::config::plan::RunPlan;
use crate::config::plan::UserCounts;
use crate::measure::memory::MemorySampler;
use crate::measure::Snapshot;
use crate::run::interrupt;
use crate::run::{self, Prepared};
use anyhow::{anyhow, bail, Context, Result};
use goose::config::GooseConfiguration;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How long workers have to check the target and get ready once they have their share.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the aggregated running metrics are printed.
const PRINT_EVERY: Duration = Duration::from_secs(5);
/// Past the run's expected end the manager stops the workers...
const OVERRUN: Duration = Duration::from_secs(120);
/// ...and this long after a stop it gives up on those that have not reported.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// The largest hello the manager reads.
const MAX_HELLO: usize = 64 * 1024;
/// How often waiting loops look for Ctrl-C.
const POLL: Duration = Duration::from_millis(200);

type Events = mpsc::UnboundedReceiver<Event<ToManager>>;

/// A worker that joined, and what became of it.
struct Worker {
    name: String,
    address: SocketAddr,
    hello: Hello,
    link: Link<ToWorker>,
    /// The run's plan with this worker's share of the users.
    share: Option<RunPlan>,
    progress: Option<Progress>,
    finished: Option<RunData>,
    lost: Option<String>,
}

impl Worker {
    fn done(&self) -> bool {
        self.finished.is_some() || self.lost.is_some()
    }

    fn label(&self) -> String {
        format!("{} on {} ({})", self.name, self.hello.hostname, self.address)
    }
}

/// `--manager`: returns the exit status.
pub async fn run(
    options: RunOptions,
    fail_on: Status,
    goose: GooseConfiguration,
    gaggle: GaggleOptions,
) -> i32 {
    interrupt::install();
    match manage(options, fail_on, goose, gaggle).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

async fn manage(
    options: RunOptions,
    fail_on: Status,
    mut goose: GooseConfiguration,
    gaggle: GaggleOptions,
) -> Result<i32> {
    let settings = ManagerSettings::from_options(&gaggle)?;
    if options.test_plan_given {
        bail!("--test-plan is not supported with --manager: use --users, --hatch-rate and --run-time");
    }
    if goose.host.is_none() && !super::is_loopback(&settings.bind_host) {
        eprintln!(
            "warning: without --host the workers share the built-in simulator on this machine's loopback, \
             which workers elsewhere cannot reach"
        );
    }
    if !goose.report_file.is_empty() {
        println!(
            "note: Goose's --report-file reports stay with each worker; the merged results go to --output"
        );
    }
    if goose.no_autostart {
        bail!("--no-autostart does not apply to --manager: the manager starts its workers together itself");
    }
    // Refused before the simulator starts: too few users for the workers, a port that is taken.
    shares::split_users(options.plan(goose.users)?.users, settings.expect)?;
    let listener = TcpListener::bind((settings.bind_host.as_str(), settings.bind_port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", settings.bind_host, settings.bind_port))?;
    // The manager runs no Goose attack of its own, so no web UI either.
    crate::webui::configure(&mut goose, true)?;
    let mut prepared = run::prepare(&options, goose.clone()).await?;
    let result = lead(&settings, listener, &options, fail_on, &goose, &prepared).await;
    if let Some(sim) = prepared.simulator.take() {
        sim.stop().await;
    }
    result
}

/// Everything after the checks: gather, start, supervise, merge, conclude.
async fn lead(
    settings: &ManagerSettings,
    listener: TcpListener,
    options: &RunOptions,
    fail_on: Status,
    goose: &GooseConfiguration,
    prepared: &Prepared,
) -> Result<i32> {
    let shares = shares::split_users(prepared.plan.users, settings.expect)?;
    let addr = listener.local_addr()?;
    println!(
        "Gaggle manager listening on {addr}: waiting up to {} for {} worker(s); start each with\n  \
         phone-agent-load --worker --manager-host <this host> --manager-port {}",
        secs(settings.timeout),
        settings.expect,
        addr.port()
    );
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut workers = gather(&listener, settings, &tx, &mut events).await?;
    drop(listener);
    if let Err(e) = start(
        &mut workers,
        &mut events,
        prepared,
        options,
        fail_on,
        goose,
        &shares,
    )
    .await
    {
        abort(workers, &format!("{e:#}")).await;
        return Err(e);
    }
    let go = chrono::Utc::now();
    let clock = Instant::now();
    let ramp = prepared.schedule.ramp;
    let sampler = MemorySampler::start(prepared.memory_target.clone(), Duration::from_secs(1));
    let marker = sampler.ramp_marker();
    let ramp_timer = tokio::spawn(async move {
        tokio::time::sleep(ramp + Duration::from_secs(1)).await;
        marker.ramp_done();
    });
    println!("Started {} workers: {}", workers.len(), describe_shares(&workers));
    supervise(
        &mut workers,
        &mut events,
        clock,
        prepared.schedule.expected_duration(),
    )
    .await;
    ramp_timer.abort();
    let server_memory = sampler.stop().await;
    let parts = parts(&workers, prepared, go);
    let lost = parts.iter().any(|p| p.lost.is_some());
    close(workers, Duration::from_secs(10)).await;
    let (mut record, list) = merge::merge_parts(&parts)?;
    if prepared.memory_target.is_some() {
        record.memory.server = server_memory.server;
        record.memory.server_error = server_memory.server_error;
    }
    if let Some(reason) = interrupt::reason() {
        record.interrupted = true;
        record.interrupt_reason = Some(match record.interrupt_reason.take() {
            Some(more) => format!("manager: {reason}; {more}"),
            None => format!("manager: {reason}"),
        });
    }
    let hooks: Vec<Box<dyn PostRunHook>> = vec![Box::new(WorkersHook(list))];
    let code = crate::analysis::conclude(&record, options.output.as_deref(), fail_on, &hooks);
    Ok(if lost { code.max(1) } else { code })
}

/// Waits until `settings.expect` workers have joined, refusing those that fail the handshake.
async fn gather(
    listener: &TcpListener,
    settings: &ManagerSettings,
    tx: &mpsc::UnboundedSender<Event<ToManager>>,
    events: &mut Events,
) -> Result<BTreeMap<usize, Worker>> {
    let scenarios = Arc::new(protocol::scenario_set()?);
    let deadline = tokio::time::Instant::now() + settings.timeout;
    let (hs_tx, mut handshakes) = mpsc::unbounded_channel();
    let mut workers = BTreeMap::new();
    let mut joined = 0;
    let mut poll = tokio::time::interval(POLL);
    while workers.len() < settings.expect {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let (token, scenarios, out) = (settings.token.clone(), scenarios.clone(), hs_tx.clone());
                    tokio::spawn(handshake(stream, addr, token, scenarios, out));
                }
                Err(e) => eprintln!("warning: cannot accept a connection: {e}"),
            },
            Some((mut stream, addr, verdict)) = handshakes.recv() => match verdict {
                Ok(hello) => {
                    joined += 1;
                    let name = format!("w{joined}");
                    let welcome = ToWorker::Welcome { name: name.clone(), expected: settings.expect };
                    if let Err(e) = write_message(&mut stream, &welcome).await {
                        eprintln!("warning: worker {name} from {addr} left during the handshake: {e:#}");
                        continue;
                    }
                    let w = Worker {
                        link: Link::start(stream, joined, tx.clone()),
                        name,
                        address: addr,
                        hello,
                        share: None,
                        progress: None,
                        finished: None,
                        lost: None,
                    };
                    println!(
                        "Worker {} joined (pid {}): {} of {}",
                        w.label(), w.hello.pid, workers.len() + 1, settings.expect
                    );
                    workers.insert(joined, w);
                }
                Err(reason) => {
                    eprintln!("Refused a worker from {addr}: {reason}");
                    let _ = write_message(&mut stream, &ToWorker::Refused { reason }).await;
                }
            },
            Some(ev) = events.recv() => {
                if let Err(reason) = ev.msg {
                    if let Some(w) = workers.remove(&ev.from) {
                        eprintln!("Worker {} left before the start: {reason}", w.label());
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let n = workers.len();
                abort(workers, "the manager gave up waiting for workers").await;
                bail!(
                    "only {n} of {} workers joined within {}: start more with `phone-agent-load --worker \
                     --manager-host <this host> --manager-port {}`, or lower --expect-workers, or raise --gaggle-timeout",
                    settings.expect, secs(settings.timeout), settings.bind_port
                );
            }
            _ = poll.tick() => {
                if let Some(reason) = interrupt::reason() {
                    abort(workers, &reason).await;
                    bail!("{reason}, while waiting for workers");
                }
            }
        }
    }
    Ok(workers)
}

/// Reads a connection's hello and checks it; the verdict goes back to [`gather`].
async fn handshake(
    mut stream: TcpStream,
    addr: SocketAddr,
    token: Option<String>,
    scenarios: Arc<Vec<String>>,
    out: mpsc::UnboundedSender<(TcpStream, SocketAddr, Result<Hello, String>)>,
) {
    let verdict = match read_message::<_, serde_json::Value>(&mut stream, MAX_HELLO, HANDSHAKE_TIMEOUT).await
    {
        Ok(v) => check_hello(&v, token.as_deref(), &scenarios),
        Err(e) => Err(format!("no hello: {e:#}")),
    };
    let _ = out.send((stream, addr, verdict));
}

/// Sends every worker its share, waits until all are ready, then says Go to all at once.
async fn start(
    workers: &mut BTreeMap<usize, Worker>,
    events: &mut Events,
    prepared: &Prepared,
    options: &RunOptions,
    fail_on: Status,
    goose: &GooseConfiguration,
    shares: &[UserCounts],
) -> Result<()> {
    let total = prepared.schedule.users;
    let rate = prepared.schedule.spawn_rate;
    let base = GooseSettings::from_config(goose);
    // The manager's own recordings travel; otherwise each worker uses the built-in ones.
    let utterances: Vec<WireUtterance> = match options.audio_dir {
        Some(_) => prepared.utterances.iter().map(WireUtterance::encode).collect(),
        None => Vec::new(),
    };
    for (w, share) in workers.values_mut().zip(shares) {
        let mut plan = prepared.plan.clone();
        plan.users = *share;
        let mut g = base.clone();
        if g.increase_time.is_none() {
            g.increase_rate = Some(shares::share_of_rate(rate, share.total(), total).to_string());
        }
        g.throttle_requests = g
            .throttle_requests
            .map(|t| (shares::share_of_rate(t as f64, share.total(), total).ceil() as usize).max(1));
        w.share = Some(plan.clone());
        w.link.send(ToWorker::Assign(Box::new(Assignment {
            plan,
            host: prepared.host.clone(),
            goose: g,
            fail_on,
            utterances: utterances.clone(),
        })));
    }
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let mut ready = 0;
    while ready < workers.len() {
        let ev = next_event(events, deadline).await.map_err(|e| {
            let waiting: Vec<&str> = workers.values().map(|w| w.name.as_str()).collect();
            anyhow!("{e} (waiting for {} to be ready)", waiting.join(", "))
        })?;
        let Some(w) = workers.get(&ev.from) else { continue };
        match ev.msg {
            Ok(ToManager::Ready) => ready += 1,
            Ok(ToManager::Failed { reason }) => bail!("worker {} cannot run: {reason}", w.label()),
            Ok(_) => {}
            Err(reason) => bail!("worker {} was lost before the start: {reason}", w.label()),
        }
    }
    for w in workers.values() {
        w.link.send(ToWorker::Go);
    }
    Ok(())
}

/// The next event before `deadline`, watching for Ctrl-C.
async fn next_event(events: &mut Events, deadline: tokio::time::Instant) -> Result<Event<ToManager>> {
    loop {
        if let Some(reason) = interrupt::reason() {
            bail!("{reason}");
        }
        let step = (tokio::time::Instant::now() + POLL).min(deadline);
        match tokio::time::timeout_at(step, events.recv()).await {
            Ok(Some(ev)) => return Ok(ev),
            Ok(None) => bail!("the workers' connections are gone"),
            Err(_) if step >= deadline => bail!("not every worker was ready within {}", secs(READY_TIMEOUT)),
            Err(_) => {}
        }
    }
}

/// Follows the workers until each has finished or is lost, printing the aggregate as it goes.
async fn supervise(
    workers: &mut BTreeMap<usize, Worker>,
    events: &mut Events,
    clock: Instant,
    expected: Option<Duration>,
) {
    let mut print = tokio::time::interval_at(tokio::time::Instant::now() + PRINT_EVERY, PRINT_EVERY);
    let mut poll = tokio::time::interval(POLL);
    let mut stopped: Option<Instant> = None;
    while workers.values().any(|w| !w.done()) {
        tokio::select! {
            Some(ev) = events.recv() => on_event(workers, ev, clock),
            _ = print.tick() => println!("{}", progress_line(workers, clock.elapsed())),
            _ = poll.tick() => match stopped {
                None => {
                    let overran = expected.is_some_and(|e| clock.elapsed() > e + OVERRUN);
                    let why = interrupt::reason()
                        .map(|r| format!("the manager was interrupted ({r})"))
                        .or_else(|| overran.then(|| format!("the run overran its expected end by {}", secs(OVERRUN))));
                    if let Some(why) = why {
                        eprintln!("Stopping the workers: {why}");
                        for w in workers.values().filter(|w| !w.done()) {
                            w.link.send(ToWorker::Stop { reason: why.clone() });
                        }
                        stopped = Some(Instant::now());
                    }
                }
                Some(at) if at.elapsed() > STOP_GRACE => {
                    for w in workers.values_mut().filter(|w| !w.done()) {
                        eprintln!("warning: worker {} sent no results within {} of the stop", w.label(), secs(STOP_GRACE));
                        w.lost = Some(format!("no results within {} of the stop", secs(STOP_GRACE)));
                    }
                }
                Some(_) => {}
            },
        }
    }
}

fn on_event(workers: &mut BTreeMap<usize, Worker>, ev: Event<ToManager>, clock: Instant) {
    let Some(w) = workers.get_mut(&ev.from) else {
        return;
    };
    if w.done() {
        // The connection closing after its results arrived, or news from a worker given up on.
        return;
    }
    match ev.msg {
        Ok(ToManager::Progress(p)) => w.progress = Some(*p),
        Ok(ToManager::Finished(data)) => {
            w.link.send(ToWorker::Received);
            println!(
                "Worker {} finished after {:.1}s{}",
                w.label(),
                data.duration_s,
                data.interrupt_reason
                    .as_deref()
                    .map(|r| format!(" (interrupted: {r})"))
                    .unwrap_or_default()
            );
            w.finished = Some(*data);
        }
        Ok(ToManager::Failed { reason }) => lose(w, reason, clock),
        Ok(_) => {}
        Err(reason) => lose(w, reason, clock),
    }
}

fn lose(w: &mut Worker, reason: String, clock: Instant) {
    let kept = match &w.progress {
        Some(p) => format!("keeping its last report ({:.1}s into its run)", p.elapsed_s),
        None => "it never reported".to_string(),
    };
    eprintln!(
        "warning: worker {} was lost {:.1}s into the run ({reason}); going on with the others, {kept}",
        w.label(),
        clock.elapsed().as_secs_f64()
    );
    w.lost = Some(reason);
}

/// One line of aggregated running metrics, merged exactly from the workers' latest reports.
fn progress_line(workers: &BTreeMap<usize, Worker>, elapsed: Duration) -> String {
    let running = workers.values().filter(|w| !w.done()).count();
    let mut gooses = Vec::new();
    let mut measured = Snapshot::default();
    for w in workers.values() {
        let (goose, snap) = match (&w.finished, &w.progress) {
            (Some(d), _) => (d.raw.goose.as_ref(), &d.raw.measured),
            (None, Some(p)) => (p.goose.as_ref(), &p.measured),
            (None, None) => continue,
        };
        gooses.extend(goose.map(|g| (w.name.as_str(), g)));
        measured.merge(snap);
    }
    let merged: RawGoose = merge::merge_goose(&gooses);
    let api = crate::analysis::api::api_section(Some(&merged.to_metrics()), elapsed.as_secs_f64());
    let s = &measured.streams;
    format!(
        "[gaggle {:>4.0}s] {running} of {} workers running | API {} requests, {} failed, {:.1}/s, p95 {:.1} ms \
         | media streams {} connected, {} failed | AI {} turns",
        elapsed.as_secs_f64(),
        workers.len(),
        api.requests,
        api.failures,
        api.rps,
        api.p95_ms,
        s.calls_connected,
        s.calls_failed,
        measured.ai.turns.len()
    )
}

/// Each worker's run: its results, or for a lost worker its last report.
fn parts(
    workers: &BTreeMap<usize, Worker>,
    prepared: &Prepared,
    go: chrono::DateTime<chrono::Utc>,
) -> Vec<Part> {
    workers
        .values()
        .map(|w| {
            let data = match (&w.finished, &w.lost) {
                (Some(d), _) => d.clone(),
                (None, why) => lost_data(w, why.as_deref().unwrap_or("lost"), prepared, go),
            };
            Part {
                name: w.name.clone(),
                address: Some(w.address.to_string()),
                lost: w.lost.clone().filter(|_| w.finished.is_none()),
                data,
            }
        })
        .collect()
}

fn lost_data(w: &Worker, why: &str, prepared: &Prepared, go: chrono::DateTime<chrono::Utc>) -> RunData {
    let p = w.progress.clone().unwrap_or_default();
    let kept = match &w.progress {
        Some(p) => format!("its last report, {:.1}s into its run, is included", p.elapsed_s),
        None => "it never reported, so none of its load is included".to_string(),
    };
    RunData {
        host: prepared.host.clone(),
        started: go.to_rfc3339(),
        duration_s: p.elapsed_s,
        interrupted: true,
        interrupt_reason: Some(format!("lost mid-run ({why}); {kept}")),
        memory: Default::default(),
        raw: RawData {
            plan: w.share.clone().unwrap_or_else(|| prepared.plan.clone()),
            hostname: w.hello.hostname.clone(),
            goose: p.goose,
            measured: p.measured,
        },
        failures_by_reason: p.failures_by_reason,
    }
}

/// Tells every worker the run is off, then closes the connections.
async fn abort(workers: BTreeMap<usize, Worker>, reason: &str) {
    for w in workers.values() {
        w.link.send(ToWorker::Abort {
            reason: reason.to_string(),
        });
    }
    close(workers, Duration::from_secs(5)).await;
}

/// Closes every link, sending what is queued for at most `limit`.
async fn close(workers: BTreeMap<usize, Worker>, limit: Duration) {
    let closing = futures_util::future::join_all(workers.into_values().map(|w| w.link.close()));
    let _ = tokio::time::timeout(limit, closing).await;
}

fn describe_shares(workers: &BTreeMap<usize, Worker>) -> String {
    workers
        .values()
        .map(|w| {
            format!(
                "{} {} users",
                w.name,
                w.share.as_ref().map_or(0, |p| p.users.total())
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
