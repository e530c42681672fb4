//! The console log: Goose's logger, minus its one line per failed request.
//!
//! Goose 0.19 logs every request that gets no answer (`"/path": error sending request ...`, WARN)
//! and every request a scenario fails (`set_failure: ...`, INFO): thousands of lines a second
//! against a dead or sick target, the first even with `-q`. Goose installs its logger inside
//! `execute()` and keeps the first global logger it finds, so we install ours first: the same
//! levels (`-q`, `-v`) and format on the console and in `--goose-log`, but the per-request lines
//! are counted instead of printed. The scenarios count every failure by its reason in the run's
//! [`FailureTally`]; a [`Reporter`] prints the counts of the last few seconds, and the run ends
//! with a table of them ([`print_table`]).
//!
//! The logger is process-wide (the `log` crate allows one), so the one [`Console`] handle it
//! shares its counters through is kept for the process too.
//!
//! A bare `--goose-log` (a log in each run's folder) or a gzipped one is left to Goose, whose
//! file handling is private: then its per-request lines reach the console as before.

use crate::measure::failures::{FailureTally, Tally};
use goose::config::GooseConfiguration;
use log::{Level, LevelFilter, Log, Metadata, Record};
use simplelog::{Config, SharedLogger, SimpleLogger, WriteLogger};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How often the reporter prints the counts of failed requests.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Our logger's counters, shared with the run that uses it.
#[derive(Debug, Clone, Default)]
pub struct Console {
    /// Goose's unanswered-request lines swallowed (see [`FailureTally::attach_unanswered`]).
    unanswered: Arc<AtomicU64>,
    /// Only errors reach the console and the log while set (see [`Console::hush`]).
    hushed: Arc<AtomicBool>,
}

/// Whether ours is the process's logger (None: it has not been installed yet).
static INSTALLED: OnceLock<Option<Console>> = OnceLock::new();

impl Console {
    /// While `on`, drops every line but errors: Goose's dry run of the options (run::prepare)
    /// would print its warnings once before the real run prints them again.
    pub fn hush(&self, on: bool) {
        self.hushed.store(on, Relaxed);
    }

    /// Lets `tally` file the unanswered-request lines that no scenario gave a reason for.
    pub fn feed(&self, tally: &FailureTally) {
        tally.attach_unanswered(self.unanswered.clone());
    }
}

/// Prints a run's failures of the last [`REPORT_EVERY`] as one WARN line, until dropped.
pub struct Reporter(tokio::task::JoinHandle<()>);

impl Reporter {
    pub fn start(measurements: Arc<crate::measure::Measurements>) -> Reporter {
        Reporter(tokio::spawn(async move {
            let mut tick = tokio::time::interval(REPORT_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Some(line) = format_window(&measurements.failures.take_window()) {
                    log::warn!("{line}");
                }
            }
        }))
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Prints the failed requests by reason, most frequent first; nothing when none failed.
pub fn print_table(tally: &Tally) {
    if let Some(table) = format_table(tally) {
        println!("{table}");
    }
}

/// The table [`print_table`] prints.
pub fn format_table(tally: &Tally) -> Option<String> {
    let total: u64 = tally.values().sum();
    if total == 0 {
        return None;
    }
    let mut rows: Vec<_> = tally.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut out = format!("\nFailed requests by reason ({} in all)\n", thousands(total));
    out.push_str(&format!("  {:>12}  reason\n", "count"));
    for (reason, n) in rows {
        out.push_str(&format!("  {:>12}  {reason}\n", thousands(*n)));
    }
    Some(out)
}

/// Installs the console logger for this process (once; later calls change nothing). With an
/// explicit `--goose-log` path, the file is opened here and taken from Goose's configuration.
/// Returns our logger's handle (None when Goose keeps its own); an error if the Goose log
/// cannot be created.
pub fn install(config: &mut GooseConfiguration) -> anyhow::Result<Option<Console>> {
    if let Some(installed) = INSTALLED.get() {
        return Ok(installed.clone());
    }
    let path = config.goose_log.clone().filter(|p| !p.is_empty());
    if path
        .as_deref()
        .is_some_and(|p| p == goose::config::RUN_FOLDER || p.ends_with(".gz"))
    {
        let _ = INSTALLED.set(None);
        return Ok(None);
    }
    let console_level = match (config.verbose, config.quiet) {
        (0, 0) => LevelFilter::Info,
        (0, _) => LevelFilter::Warn,
        (1, _) => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    let mut inner: Vec<Box<dyn SharedLogger>> = vec![SimpleLogger::new(console_level, Config::default())];
    if let Some(path) = &path {
        let file = std::fs::File::create(path)
            .map_err(|e| anyhow::anyhow!("cannot create the Goose log {path}: {e} (check --goose-log)"))?;
        let file_level = match config.log_level {
            0 => LevelFilter::Warn,
            1 => LevelFilter::Info,
            2 => LevelFilter::Debug,
            _ => LevelFilter::Trace,
        };
        inner.push(WriteLogger::new(file_level, Config::default(), file));
        config.goose_log = None;
        // Goose's failed logger init still sets the global max level from -q/-v alone, which
        // would starve a file asking for more (-g with -q): ask Goose for the wider level.
        if config.verbose == 0 || config.quiet == 0 {
            (config.verbose, config.quiet) = match console_level.max(file_level) {
                LevelFilter::Trace => (2, 0),
                LevelFilter::Debug => (1, 0),
                LevelFilter::Info => (0, 0),
                _ => (0, 1),
            };
        }
    }
    let max = inner.iter().map(|l| l.level()).max().unwrap_or(LevelFilter::Info);
    let console = Console::default();
    let logger = ConsoleLog {
        inner,
        console: console.clone(),
    };
    let ours = log::set_boxed_logger(Box::new(logger)).is_ok().then_some(console);
    if ours.is_some() {
        log::set_max_level(max);
    }
    let _ = INSTALLED.set(ours.clone());
    Ok(INSTALLED.get().cloned().flatten())
}

/// Goose's logger with the per-request lines taken out of the console.
struct ConsoleLog {
    inner: Vec<Box<dyn SharedLogger>>,
    console: Console,
}

impl ConsoleLog {
    /// Goose's lines for one failed request: WARN `"/path": ...` for a request that got no
    /// answer, and INFO `set_failure: <reason>` for one a scenario failed.
    fn per_request(record: &Record) -> bool {
        if record.target() != "goose::goose" {
            return false;
        }
        match record.level() {
            Level::Warn => record.args().to_string().starts_with('"'),
            Level::Info => record.args().to_string().starts_with("set_failure: "),
            _ => false,
        }
    }

    /// Goose's note that its own logger could not be installed: ours is, on purpose.
    fn goose_logger_refused(record: &Record) -> bool {
        record.target().starts_with("goose::config")
            && record
                .args()
                .to_string()
                .starts_with("failed to initialize CombinedLogger")
    }
}

impl Log for ConsoleLog {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.iter().any(|l| l.enabled(metadata))
    }

    fn log(&self, record: &Record) {
        if record.level() > Level::Error && self.console.hushed.load(Relaxed) {
            return;
        }
        // Lock order: stdout first, then simplelog's own output lock. Goose prints its tables
        // holding stdout and logs from inside them (a TRACE line mid-table); taking simplelog's
        // lock first here, as simplelog does, deadlocked such a run under -vv. Stdout's lock is
        // reentrant, so a line logged while this thread prints still goes through.
        let _stdout = std::io::stdout().lock();
        if Self::per_request(record) {
            if record.level() == Level::Warn {
                self.console.unanswered.fetch_add(1, Relaxed);
            }
            // The file keeps every line: it is the place to look for one request.
            for logger in self.inner.iter().skip(1) {
                logger.log(record);
            }
            return;
        }
        if Self::goose_logger_refused(record) {
            return;
        }
        for logger in &self.inner {
            logger.log(record);
        }
    }

    fn flush(&self) {
        for logger in &self.inner {
            logger.flush();
        }
    }
}

/// "failed requests in the last 5 s: 1,234 (connection refused 1,200, Unexpected status 500 34)".
fn format_window(window: &Tally) -> Option<String> {
    let total: u64 = window.values().sum();
    if total == 0 {
        return None;
    }
    let mut rows: Vec<_> = window.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let shown: Vec<String> = rows
        .iter()
        .take(5)
        .map(|(reason, n)| format!("{reason} {}", thousands(**n)))
        .collect();
    let more = match rows.len().saturating_sub(5) {
        0 => String::new(),
        1 => ", 1 more reason".to_string(),
        n => format!(", {n} more reasons"),
    };
    Some(format!(
        "failed requests in the last {} s: {} ({}{more})",
        REPORT_EVERY.as_secs(),
        thousands(total),
        shown.join(", ")
    ))
}

/// 1234567 as "1,234,567".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn window_line_names_the_commonest_reasons_first() {
        let mut w = Tally::new();
        w.insert("Unexpected status 500".into(), 34);
        w.insert("connection refused".into(), 1200);
        let line = format_window(&w).unwrap();
        assert_eq!(
            line,
            "failed requests in the last 5 s: 1,234 (connection refused 1,200, Unexpected status 500 34)"
        );
        assert!(format_window(&Tally::new()).is_none());
    }

    #[test]
    fn table_lists_every_reason_with_the_total() {
        let mut t = Tally::new();
        t.insert("timeout".into(), 7);
        t.insert("connection refused".into(), 12345);
        let table = format_table(&t).unwrap();
        assert!(table.contains("(12,352 in all)"), "{table}");
        let refused = table.find("connection refused").unwrap();
        let timeout = table.find("timeout").unwrap();
        assert!(refused < timeout, "{table}");
    }
}
