//! `cos-mesh check -c FILE|DIR`: everything a start would validate, without touching the network
//! (Nebula's `nebula -test`): config, PKI, firewall. Exit 0 when the node could start; 1 with
//! `Error: <file>: <field>: <reason>` otherwise. Warnings go to stderr and do not fail the check.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::daemon::setup::Setup;
use crate::unixtime::UnixTime;

#[derive(clap::Args)]
pub struct Args {
    /// Config file, or a directory whose *.yml / *.yaml files merge in name order.
    #[arg(short = 'c', long = "config", value_name = "FILE|DIR")]
    config: PathBuf,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let setup = Setup::load(&a.config, UnixTime::now())?;
    for w in &setup.warnings {
        eprintln!("warning: {w}");
    }
    let (_, unresolved) = setup.resolve_static_hosts();
    for w in &unresolved {
        eprintln!("warning: {w}");
    }
    let c = setup.config();
    eprintln!(
        "{}: OK: node {} ({}), {} file(s), {} CA(s), {} inbound / {} outbound firewall rule(s){}",
        a.config.display(),
        setup.pki.cert.name(),
        setup.overlay,
        setup.loaded.files.len(),
        setup.pki.pool.len(),
        setup.firewall.table(crate::firewall::Direction::Inbound).rules().len(),
        setup.firewall.table(crate::firewall::Direction::Outbound).rules().len(),
        if c.tun.disabled { ", tun disabled".to_string() } else { format!(", tun {}", c.tun.dev) }
    );
    Ok(ExitCode::SUCCESS)
}
