//! Distributed runs (gaggle): a manager splits the users over workers, starts them together and
//! merges their results exactly. Goose 0.17-0.19 ship no Gaggle (it returns in 0.20); this thin
//! layer keeps Goose 0.16's vocabulary so it can give way to Goose's own when that returns.

use std::path::PathBuf;

/// The gaggle options, with Goose 0.16's names.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Distributed runs (gaggle)")]
pub struct GaggleOptions {
    /// Run as the gaggle manager: split the load over --expect-workers workers
    #[arg(long, conflicts_with = "worker")]
    pub manager: bool,
    /// Run as a gaggle worker of the manager at --manager-host
    #[arg(long)]
    pub worker: bool,
}

/// `phone-agent-load merge a.json b.json ... --output merged.json`
#[derive(clap::Args, Debug, Clone)]
pub struct MergeArgs {
    /// Results files of independent runs
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Where to write the merged results
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub mod manager {
    //! The gaggle manager (being written).
    use super::GaggleOptions;
    use crate::cli::LoadOptions;
    use goose::config::GooseConfiguration;

    pub async fn run(_load: LoadOptions, _goose: GooseConfiguration, _gaggle: GaggleOptions) -> i32 {
        eprintln!("error: --manager is not available yet");
        1
    }
}

pub mod worker {
    //! A gaggle worker (being written).
    use super::GaggleOptions;
    use crate::cli::LoadOptions;
    use goose::config::GooseConfiguration;

    pub async fn run(_load: LoadOptions, _goose: GooseConfiguration, _gaggle: GaggleOptions) -> i32 {
        eprintln!("error: --worker is not available yet");
        1
    }
}

/// `merge`: returns the exit status.
pub fn merge_files(_args: &MergeArgs) -> i32 {
    eprintln!("error: merge is not available yet");
    1
}
