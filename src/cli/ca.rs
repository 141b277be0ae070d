use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use ipnet::IpNet;

use crate::cert::keys::CaSecret;
use crate::cert::{Certificate, Tbs, Version};
use crate::files::{self, SECRET_MODE};
use crate::unixtime::UnixTime;

#[derive(clap::Args)]
#[command(
    disable_version_flag = true,
    after_help = "\
Like nebula-cert 1.10+, a v2 CA is made unless --version 1 is given. A v2 CA signs v1 and v2
certificates (sign follows the CA's version unless told otherwise); nebula-cert 1.6.1 and Nebula
before 1.10 read v1 only."
)]
pub struct Args {
    /// Name of the CA, e.g. "Acme mesh CA".
    #[arg(long)]
    name: String,
    /// Certificate format: 2 (DER; IPv4 and IPv6, the default since nebula-cert 1.10) or 1
    /// (protobuf; IPv4 only, readable by Nebula before 1.10).
    #[arg(long, default_value = "2", value_parser = parse_version)]
    version: Version,
    /// Lifetime (Go duration). The default is 10 years (87600h), not Nebula's 1 year: when a CA
    /// expires every tunnel of the mesh stops at once, so choose a long life and plan rotation
    /// (see pki/README.md).
    #[arg(long, default_value = "87600h", value_parser = super::parse_duration)]
    duration: Duration,
    /// Comma-separated groups; if set, certificates it signs may carry only these groups.
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
    /// Comma-separated networks (IPv4, and IPv6 for v2); if set, node networks must lie inside
    /// one of them with a prefix at least as long. `--ips` is the old name.
    #[arg(long, alias = "ips", value_delimiter = ',', value_parser = parse_net)]
    networks: Vec<IpNet>,
    /// Comma-separated networks; if set, node unsafe networks must lie inside one of them.
    /// `--subnets` is the old name.
    #[arg(long, alias = "subnets", value_delimiter = ',', value_parser = parse_net)]
    unsafe_networks: Vec<IpNet>,
    /// Where to write the CA certificate.
    #[arg(long, default_value = "ca.crt")]
    out_crt: PathBuf,
    /// Where to write the CA private key (mode 0600). Keep it offline.
    #[arg(long, default_value = "ca.key")]
    out_key: PathBuf,
}

/// `1` or `2`.
pub(super) fn parse_version(s: &str) -> Result<Version, String> {
    s.trim()
        .parse::<u64>()
        .ok()
        .and_then(Version::from_number)
        .ok_or_else(|| format!("{s}: expected 1 or 2 (the certificate format version)"))
}

/// An IPv4 or IPv6 network with prefix length (host bits kept, as nebula-cert 1.10 keeps them).
pub(super) fn parse_net(s: &str) -> Result<IpNet, String> {
    s.trim()
        .parse::<IpNet>()
        .map_err(|_| format!("{s}: expected an address with prefix length, e.g. 100.64.0.1/10 or fd00::1/64"))
}

/// What a v1 certificate can carry: IPv4 networks, masked as nebula-cert 1.6.1 stored them when
/// `mask` is set. v2 keeps the networks as given, as nebula-cert 1.10 does.
pub(super) fn for_version(flag: &str, nets: &[IpNet], version: Version, mask: bool) -> Result<Vec<IpNet>> {
    if version == Version::V2 {
        return Ok(nets.to_vec());
    }
    nets.iter()
        .map(|n| match n {
            IpNet::V4(v4) => Ok(IpNet::V4(if mask { v4.trunc() } else { *v4 })),
            IpNet::V6(_) => bail!("{flag} {n}: a v1 certificate carries IPv4 networks only (use --version 2)"),
        })
        .collect()
}

pub fn run(a: Args) -> Result<ExitCode> {
    if a.name.trim().is_empty() {
        bail!("--name must not be empty");
    }
    if a.duration < Duration::from_secs(1) {
        bail!("--duration must be at least one second");
    }
    let networks = for_version("--networks", &a.networks, a.version, true)?;
    let unsafe_networks = for_version("--unsafe-networks", &a.unsafe_networks, a.version, true)?;
    files::ensure_absent(&[(&a.out_key, "CA key"), (&a.out_crt, "CA certificate")])?;
    let key = CaSecret::generate();
    let now = UnixTime::now();
    let tbs = Tbs {
        version: a.version,
        name: a.name,
        networks,
        unsafe_networks,
        groups: super::clean_groups(&a.groups),
        not_before: now,
        not_after: now.plus(a.duration),
        public_key: key.public(),
        is_ca: true,
        issuer: None,
    };
    let cert = Certificate::sign_tbs(&tbs, key.signing_key())?;
    files::write_new(&a.out_key, key.to_pem().as_bytes(), SECRET_MODE, "CA key")?;
    files::write_new(&a.out_crt, cert.to_pem().as_bytes(), SECRET_MODE, "CA certificate")?;
    eprintln!(
        "wrote {} CA certificate {} (fingerprint {}, valid until {}) and CA key {}; keep the key offline",
        cert.version(),
        a.out_crt.display(),
        cert.fingerprint(),
        tbs.not_after,
        a.out_key.display()
    );
    Ok(ExitCode::SUCCESS)
}
