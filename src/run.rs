//! One run, start to finish: the target, the Goose attack, and the post-run hook.

use crate::cli::LoadOptions;
use goose::config::GooseConfiguration;

pub async fn run(_load: LoadOptions, _goose: GooseConfiguration) -> i32 {
    eprintln!("error: runs are not wired up yet");
    1
}
