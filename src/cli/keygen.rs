use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::cert::keys::HostSecret;
use crate::files::{self, SECRET_MODE};

#[derive(clap::Args)]
pub struct Args {
    /// Where to write the X25519 private key (mode 0600). It never leaves the host.
    #[arg(long)]
    out_key: PathBuf,
    /// Where to write the public key, to hand to `sign --in-pub`.
    #[arg(long)]
    out_pub: PathBuf,
}

pub fn run(a: Args) -> Result<ExitCode> {
    files::ensure_absent(&[(&a.out_key, "private key"), (&a.out_pub, "public key")])?;
    let key = HostSecret::generate();
    files::write_new(&a.out_key, key.to_pem().as_bytes(), SECRET_MODE, "private key")?;
    files::write_new(&a.out_pub, key.public().to_pem().as_bytes(), SECRET_MODE, "public key")?;
    Ok(ExitCode::SUCCESS)
}
