//! What the tests share: running the real binary bounded in time (a command line, a load run
//! watched for its memory, a `serve` process), reading what a run wrote, in-process Goose attack
//! settings, and a process of its own for a test that reads this process's state.

mod alone;
mod attack;
mod process;
mod results;
mod server;

pub use alone::alone_in_a_process;
pub use attack::quiet;
pub use process::{run, run_against, run_in, wait_bounded, Output, BIN};
pub use results::{count, results, status, verdict};
pub use server::{free_port, Server};
