use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cert::Certificate;
use crate::cert::pool::{Blocklist, CaPool};
use crate::files;
use crate::unixtime::UnixTime;

#[derive(clap::Args)]
pub struct Args {
    /// CA bundle: one or more CA certificates (v1 and v2 mixed) in one PEM file. A block that
    /// cannot be used is skipped with a warning naming it.
    #[arg(long)]
    ca: PathBuf,
    /// The certificate to check (v1 or v2).
    #[arg(long)]
    crt: PathBuf,
    /// Fingerprint to treat as blocklisted (repeatable), as `pki.blocklist` does.
    #[arg(long = "blocklist", value_name = "FINGERPRINT")]
    blocklist: Vec<String>,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let (pool, skipped) = CaPool::load(&files::read(&a.ca, "CA bundle")?)
        .with_context(|| format!("error while adding ca cert to pool from {}", a.ca.display()))?;
    for s in skipped {
        eprintln!("warning: {}: {s}", a.ca.display());
    }
    let cert = Certificate::from_pem(&files::read(&a.crt, "certificate")?)
        .with_context(|| format!("parsing certificate {}", a.crt.display()))?;
    let blocklist = Blocklist::from_hex(&a.blocklist).map_err(|e| anyhow::anyhow!("--blocklist {e}"))?;
    pool.verify(&cert, UnixTime::now(), &blocklist)?;
    Ok(ExitCode::SUCCESS)
}
