use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;

use crate::cert::keys::{CaSecret, HostPublic, HostSecret};
use crate::cert::pool::{Blocklist, CaPool, check_constraints};
use crate::cert::{Certificate, Details};
use crate::files::{self, SECRET_MODE};
use crate::unixtime::UnixTime;

#[derive(clap::Args)]
pub struct Args {
    /// Node name, e.g. "nomad-server-1". Firewall `host:` rules match it.
    #[arg(long)]
    name: String,
    /// Overlay IPv4 address with the overlay network's prefix, e.g. 100.64.0.11/10.
    #[arg(long, value_parser = super::parse_ipv4_net)]
    ip: Ipv4Net,
    /// Comma-separated groups (must be among the CA's groups if it has any).
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
    /// Comma-separated IPv4 networks this node routes for (unsafe_routes).
    #[arg(long, value_delimiter = ',', value_parser = super::parse_ipv4_net)]
    subnets: Vec<Ipv4Net>,
    /// Lifetime (Go duration). Default: until one second before the CA expires. A lifetime
    /// past the CA's end is refused, not shortened.
    #[arg(long, value_parser = super::parse_duration)]
    duration: Option<Duration>,
    /// Sign this existing X25519 public key (from `keygen` or `nebula-cert keygen`) instead of
    /// generating a key pair; the private key never has to reach the CA.
    #[arg(long, conflicts_with = "out_key")]
    in_pub: Option<PathBuf>,
    /// Where to write the generated private key (mode 0600). Default: <name>.key.
    #[arg(long)]
    out_key: Option<PathBuf>,
    /// Where to write the certificate. Default: <name>.crt.
    #[arg(long)]
    out_crt: Option<PathBuf>,
    /// The CA certificate.
    #[arg(long, default_value = "ca.crt")]
    ca_crt: PathBuf,
    /// The CA private key.
    #[arg(long, default_value = "ca.key")]
    ca_key: PathBuf,
}

pub fn run(a: Args) -> Result<ExitCode> {
    if a.name.trim().is_empty() {
        bail!("--name must not be empty");
    }
    let ca_cert = Certificate::from_pem(&files::read(&a.ca_crt, "CA certificate")?)
        .with_context(|| format!("parsing CA certificate {}", a.ca_crt.display()))?;
    let ca_key = CaSecret::from_pem(&files::read(&a.ca_key, "CA key")?)
        .with_context(|| format!("parsing CA key {}", a.ca_key.display()))?;
    if !ca_cert.details().is_ca {
        bail!("{} is not a CA certificate", a.ca_crt.display());
    }
    if ca_key.public() != ca_cert.details().public_key {
        bail!("CA key {} does not match CA certificate {}", a.ca_key.display(), a.ca_crt.display());
    }
    let now = UnixTime::now();
    if ca_cert.is_expired(now) {
        bail!("ca certificate is expired: {} expired at {}", ca_cert.name(), ca_cert.details().not_after);
    }

    let out_crt = a.out_crt.unwrap_or_else(|| PathBuf::from(format!("{}.crt", a.name)));
    let out_key = a.out_key.unwrap_or_else(|| PathBuf::from(format!("{}.key", a.name)));
    let (public, secret) = match &a.in_pub {
        Some(p) => {
            let public = HostPublic::from_pem(&files::read(p, "public key")?)
                .with_context(|| format!("parsing public key {}", p.display()))?;
            (public, None)
        }
        None => {
            let s = HostSecret::generate();
            (s.public(), Some(s))
        }
    };
    let mut outputs = vec![(out_crt.as_path(), "certificate")];
    if secret.is_some() {
        outputs.push((out_key.as_path(), "private key"));
    }
    files::ensure_absent(&outputs)?;

    let not_after = match a.duration {
        Some(d) if !d.is_zero() => now.plus(d),
        _ => ca_cert.details().not_after.add_secs(-1),
    };
    let details = Details {
        name: a.name,
        ips: vec![a.ip],
        subnets: a.subnets.iter().map(Ipv4Net::trunc).collect(),
        groups: super::clean_groups(&a.groups),
        not_before: now,
        not_after,
        public_key: public.0,
        is_ca: false,
        issuer: Some(ca_cert.fingerprint()),
    };
    check_constraints(&ca_cert, &details)?;
    let cert = Certificate::sign(&details, ca_key.signing_key())?;
    // Self-check: what we hand out must verify exactly as a peer will verify it.
    let mut pool = CaPool::default();
    pool.add(ca_cert)?;
    pool.verify(&cert, now, &Blocklist::default()).context("the new certificate failed verification")?;

    if let Some(secret) = secret {
        files::write_new(&out_key, secret.to_pem().as_bytes(), SECRET_MODE, "private key")?;
    }
    files::write_new(&out_crt, cert.to_pem().as_bytes(), SECRET_MODE, "certificate")?;
    eprintln!(
        "signed {} ({}, groups [{}]) valid until {}: {}",
        details.name,
        super::ipv4(&details.ips[0]),
        details.groups.join(","),
        details.not_after,
        out_crt.display()
    );
    Ok(ExitCode::SUCCESS)
}
