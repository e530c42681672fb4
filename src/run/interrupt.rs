//! Ctrl-C, handled for the whole run: before, during and after the Goose attack.
//!
//! Goose installs its own Ctrl-C handler inside `execute()` and clears its killswitch when an
//! attack starts, so a Ctrl-C during start-up would be lost. We install ours first (Goose's then
//! quietly stands down), remember the interrupt, and forward it into Goose's killswitch for as
//! long as the attack runs. A second Ctrl-C exits at once, as with Goose.
//!
//! A run interrupted before its attack still runs it, so Goose writes the reports it was asked
//! for: [`stand_down`] is the attack's `test_start`, which Goose runs right after clearing its
//! killswitch and before it launches any user; it sets the killswitch again, and Goose goes
//! straight from start to shutdown with no user launched.

use goose::prelude::{GooseUser, TransactionResult};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static REASON: Mutex<Option<String>> = Mutex::new(None);
static INSTALL: Once = Once::new();

/// Installs the handler (once per process; later calls do nothing).
pub fn install() {
    INSTALL.call_once(|| {
        let installed = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                eprintln!("caught a second Ctrl-C, exiting at once without results");
                std::process::exit(130);
            }
            eprintln!(
                "caught Ctrl-C: stopping the run and writing its results (Ctrl-C again to exit at once)"
            );
            interrupt("interrupted by Ctrl-C (SIGINT)");
        });
        if let Err(e) = installed {
            eprintln!("warning: cannot handle Ctrl-C ({e}); Goose's own handler will");
        }
    });
}

/// Stops the run as Ctrl-C does, with a reason (the first reason is kept).
pub fn interrupt(reason: &str) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    let mut r = REASON.lock().unwrap_or_else(|e| e.into_inner());
    r.get_or_insert_with(|| reason.to_string());
    goose::trigger_killswitch(reason);
}

/// Why the run was interrupted, if it was.
pub fn reason() -> Option<String> {
    REASON.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// While the attack runs, keeps Goose's killswitch set after an interrupt (Goose clears it when
/// the attack starts). Abort the task when the attack returns.
pub fn forward_to_goose() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        loop {
            if let Some(reason) = reason() {
                if !goose::is_killswitch_triggered() {
                    goose::trigger_killswitch(&reason);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// The attack's `test_start`: after an interrupt, stops Goose before it launches a user.
pub async fn stand_down(_user: &mut GooseUser) -> TransactionResult {
    if let Some(reason) = reason() {
        goose::trigger_killswitch(&reason);
    }
    Ok(())
}
