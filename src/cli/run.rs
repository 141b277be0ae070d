use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Config file, or a directory whose *.yml / *.yaml files merge in name order.
    #[arg(short = 'c', long = "config", value_name = "FILE|DIR")]
    config: PathBuf,
}

pub fn run(a: Args) -> Result<ExitCode> {
    crate::daemon::run(&a.config)?;
    Ok(ExitCode::SUCCESS)
}
