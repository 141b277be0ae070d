use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::Result;

/// The daemon-only binary `cos-mesh run` hands over to (see src/bin/cos-mesh-daemon.rs).
const DAEMON_BIN: &str = "cos-mesh-daemon";

#[derive(clap::Args)]
pub struct Args {
    /// Config file, or a directory whose *.yml / *.yaml files merge in name order.
    #[arg(short = 'c', long = "config", value_name = "FILE|DIR")]
    config: PathBuf,
}

/// Execs `cos-mesh-daemon` from beside this binary when it is there (same process: the pid,
/// systemd's notify socket and signals are unchanged), so the daemon maps only the daemon's
/// code; without it (a hand install of `cos-mesh` alone) runs the daemon in this process.
pub fn run(a: Args) -> Result<ExitCode> {
    if let Some(daemon) = std::env::current_exe().ok().and_then(|exe| sibling_daemon(&exe)) {
        let err = Command::new(&daemon).arg("-c").arg(&a.config).exec();
        eprintln!("cos-mesh: could not start {} ({err}); running the daemon in this process", daemon.display());
    }
    crate::daemon::run(&a.config)?;
    Ok(ExitCode::SUCCESS)
}

/// `cos-mesh-daemon` in the directory of `exe`, if it is a file there and of this very build (a
/// stale one left beside a rebuilt `cos-mesh` is passed over, saying so).
fn sibling_daemon(exe: &Path) -> Option<PathBuf> {
    let daemon = exe.parent()?.join(DAEMON_BIN);
    if !daemon.is_file() {
        return None;
    }
    let theirs = Command::new(&daemon).arg("--build-id").output().ok()?;
    let theirs = String::from_utf8_lossy(&theirs.stdout);
    if theirs.trim() != crate::BUILD_ID {
        eprintln!(
            "cos-mesh: {} is from another build ({}, this is {}); running the daemon in this process",
            daemon.display(),
            theirs.trim(),
            crate::BUILD_ID
        );
        return None;
    }
    Some(daemon)
}
