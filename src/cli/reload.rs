use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;

use crate::daemon::control::{Request, ask};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: super::socket::Target,
}

/// Same as SIGHUP, but says whether it worked: exit 0 and what was reloaded, or exit 1 and why
/// not (the daemon keeps its running configuration). Changed settings that only a restart
/// applies (tun.dev, listen.port, ...) are named in a warning on stderr; the exit stays 0,
/// since everything else was applied.
pub fn run(a: Args) -> Result<ExitCode> {
    let v = ask(&a.target.addr()?, Request::Reload)?;
    writeln!(std::io::stdout().lock(), "{}", v["reloaded"].as_str().unwrap_or("reloaded"))?;
    let pending: Vec<&str> = v["needs_restart"].as_array().into_iter().flatten().filter_map(|k| k.as_str()).collect();
    if !pending.is_empty() {
        eprintln!("warning: not applied until cos-mesh restarts (systemctl restart cos-mesh): {}", pending.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
