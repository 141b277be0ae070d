use std::process::ExitCode;

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Keep the world up until Ctrl-C (to look around with `ip netns` and `cos-mesh status`).
    #[arg(long)]
    keep: bool,
    /// Where to write an SVG picture of the world (hosts coloured by role, direct and relayed
    /// tunnels, lighthouses).
    #[arg(long, value_name = "FILE", default_value = "cos-mesh-demo.svg")]
    svg: std::path::PathBuf,
    /// Then break things one at a time (kill daemons, restart a lighthouse, drop and lose
    /// datagrams with nft, flap the NAT, reload a broken config) and report the time to recover.
    #[arg(long)]
    chaos: bool,
}

/// Exit 0 when every cell of the reachability matrix matches the role rule sets, 1 otherwise.
pub fn run(a: Args) -> Result<ExitCode> {
    let ok = crate::demo::run(crate::demo::Options { keep: a.keep, svg: a.svg, chaos: a.chaos })?;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
