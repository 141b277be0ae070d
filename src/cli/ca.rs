use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use ipnet::Ipv4Net;

use crate::cert::keys::CaSecret;
use crate::cert::{Certificate, Details};
use crate::files::{self, SECRET_MODE};
use crate::unixtime::UnixTime;

#[derive(clap::Args)]
pub struct Args {
    /// Name of the CA, e.g. "Acme mesh CA".
    #[arg(long)]
    name: String,
    /// Lifetime (Go duration). The default is 10 years (87600h), not Nebula's 1 year: when a CA
    /// expires every tunnel of the mesh stops at once, so choose a long life and plan rotation
    /// (see pki/README.md).
    #[arg(long, default_value = "87600h", value_parser = super::parse_duration)]
    duration: Duration,
    /// Comma-separated groups; if set, certificates it signs may carry only these groups.
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
    /// Comma-separated IPv4 networks; if set, node IPs must lie inside one of them.
    #[arg(long, value_delimiter = ',', value_parser = super::parse_ipv4_net)]
    ips: Vec<Ipv4Net>,
    /// Comma-separated IPv4 networks; if set, node subnets must lie inside one of them.
    #[arg(long, value_delimiter = ',', value_parser = super::parse_ipv4_net)]
    subnets: Vec<Ipv4Net>,
    /// Where to write the CA certificate.
    #[arg(long, default_value = "ca.crt")]
    out_crt: PathBuf,
    /// Where to write the CA private key (mode 0600). Keep it offline.
    #[arg(long, default_value = "ca.key")]
    out_key: PathBuf,
}

pub fn run(a: Args) -> Result<ExitCode> {
    if a.name.trim().is_empty() {
        bail!("--name must not be empty");
    }
    if a.duration < Duration::from_secs(1) {
        bail!("--duration must be at least one second");
    }
    files::ensure_absent(&[(&a.out_key, "CA key"), (&a.out_crt, "CA certificate")])?;
    let key = CaSecret::generate();
    let now = UnixTime::now();
    let details = Details {
        name: a.name,
        ips: a.ips.iter().map(Ipv4Net::trunc).collect(),
        subnets: a.subnets.iter().map(Ipv4Net::trunc).collect(),
        groups: super::clean_groups(&a.groups),
        not_before: now,
        not_after: now.plus(a.duration),
        public_key: key.public(),
        is_ca: true,
        issuer: None,
    };
    let cert = Certificate::sign(&details, key.signing_key())?;
    files::write_new(&a.out_key, key.to_pem().as_bytes(), SECRET_MODE, "CA key")?;
    files::write_new(&a.out_crt, cert.to_pem().as_bytes(), SECRET_MODE, "CA certificate")?;
    eprintln!(
        "wrote CA certificate {} (fingerprint {}, valid until {}) and CA key {}; keep the key offline",
        a.out_crt.display(),
        cert.fingerprint(),
        details.not_after,
        a.out_key.display()
    );
    Ok(ExitCode::SUCCESS)
}
