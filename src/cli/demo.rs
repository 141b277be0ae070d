use std::process::ExitCode;

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Keep the world up until Ctrl-C (to look around with `ip netns` and `cos-mesh status`).
    #[arg(long)]
    keep: bool,
}

/// Exit 0 when every cell of the reachability matrix matches the role rule sets, 1 otherwise.
pub fn run(a: Args) -> Result<ExitCode> {
    let ok = crate::demo::run(crate::demo::Options { keep: a.keep })?;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
