//! One test alone in a process of its own. The tests share this process as threads; a test that
//! reads the process's own state (its resident memory) would see the others' allocations too.

use super::process::wait_bounded;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Names, in the process started for it, the one test that process runs.
const ALONE: &str = "PHONE_AGENT_LOAD_TEST_ALONE";

/// Runs the test `name` (its path in this crate, `module::test`) in a new process of this test
/// binary that runs nothing else, and fails if it fails there or outlives `limit`; in that
/// process, runs `body`, the test itself.
pub fn alone_in_a_process(name: &str, limit: Duration, body: impl FnOnce()) {
    if std::env::var_os(ALONE).is_some_and(|running| running == name) {
        return body();
    }
    let child = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env(ALONE, name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the test binary");
    let out = wait_bounded(child, limit);
    // "1 passed": the name matched a test, which ran and passed.
    assert!(
        out.code == Some(0) && out.stdout.contains("test result: ok. 1 passed"),
        "{name}, alone in a process:\n{}",
        out.all()
    );
}
