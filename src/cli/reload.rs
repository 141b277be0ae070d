use std::process::ExitCode;

use anyhow::Result;

use crate::daemon::control::{Request, ask};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: super::socket::Target,
}

/// Same as SIGHUP, but says whether it worked: exit 0 and what was reloaded, or exit 1 and why
/// not (the daemon keeps its running configuration).
pub fn run(a: Args) -> Result<ExitCode> {
    let v = ask(&a.target.path()?, Request::Reload)?;
    println!("{}", v["reloaded"].as_str().unwrap_or("reloaded"));
    Ok(ExitCode::SUCCESS)
}
