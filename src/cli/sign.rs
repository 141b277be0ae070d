use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ipnet::IpNet;

use crate::cert::keys::{CaSecret, HostPublic, HostSecret};
use crate::cert::pool::{Blocklist, CaPool, check_constraints};
use crate::cert::{Certificate, Tbs, Version};
use crate::files::{self, SECRET_MODE};
use crate::inventory::Inventory;
use crate::inventory::apply::{self, Signer};
use crate::inventory::renewal::{Action, Policy};
use crate::unixtime::UnixTime;

#[derive(clap::Args)]
#[command(
    disable_version_flag = true,
    after_help = "\
With --inventory FILE, signs every node the inventory lists (see pki/inventory.example.yaml) into
--out-dir: a missing certificate is issued (generating <name>.key, 0600, only when neither
<name>.key, <name>.pub nor a certificate exists); a certificate that expires within
--renew-before, or whose name, IP, groups or subnets differ from the inventory, or that another
CA signed, is renewed for the same key and replaced atomically (a temporary file renamed over
it: the only case sign replaces a file); a valid matching certificate is never touched. Running
it again changes nothing. Every entry is checked before anything is written."
)]
pub struct Args {
    /// Node name, e.g. "nomad-server-1". Firewall `host:` rules match it.
    #[arg(long, required_unless_present = "inventory")]
    name: Option<String>,
    /// Overlay addresses with the overlay network's prefix, comma-separated, e.g. 100.64.0.11/10
    /// or (v2) 100.64.0.11/10,fd00::11/64. A v1 certificate takes one IPv4 network. `--ip` is
    /// the old name.
    #[arg(long, alias = "ip", value_delimiter = ',', value_parser = super::ca::parse_net, required_unless_present = "inventory")]
    networks: Vec<IpNet>,
    /// Comma-separated groups (must be among the CA's groups if it has any).
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
    /// Comma-separated networks this node routes for (unsafe_routes). `--subnets` is the old name.
    #[arg(long, alias = "subnets", value_delimiter = ',', value_parser = super::ca::parse_net)]
    unsafe_networks: Vec<IpNet>,
    /// Certificate format, 1 or 2. Default: the CA's version, as nebula-cert 1.10 does.
    #[arg(long, value_parser = super::ca::parse_version)]
    version: Option<Version>,
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
    /// Sign every node of this inventory (PKI as code) instead of one --name/--ip.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["name", "networks", "groups", "unsafe_networks", "in_pub", "out_key", "out_crt"])]
    inventory: Option<PathBuf>,
    /// With --inventory: where <name>.crt and <name>.key live (created 0700 if missing).
    #[arg(long, value_name = "DIR", default_value = ".", requires = "inventory")]
    out_dir: PathBuf,
    /// With --inventory: renew certificates that expire within this time (Go duration).
    #[arg(long, value_parser = super::parse_duration, default_value = "720h", requires = "inventory")]
    renew_before: Duration,
    /// With --inventory: say what would be issued and renewed, write nothing.
    #[arg(long, requires = "inventory")]
    dry_run: bool,
    /// With --inventory: print the summary as JSON (one object per node) for scripts.
    #[arg(long, requires = "inventory")]
    json: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let (ca_cert, ca_key) = load_ca(&a.ca_crt, &a.ca_key)?;
    let now = UnixTime::now();
    if let Some(path) = &a.inventory {
        return sign_inventory(&a, path, &ca_cert, &ca_key, now);
    }
    let Some(name) = a.name else { bail!("--name and --networks are required without --inventory") };
    if name.trim().is_empty() {
        bail!("--name must not be empty");
    }
    let version = a.version.unwrap_or(ca_cert.version());
    let networks = super::ca::for_version("--networks", &a.networks, version, false)?;
    if version == Version::V1 && networks.len() != 1 {
        bail!("--networks: a v1 certificate carries exactly one IPv4 network, got {}", networks.len());
    }
    let unsafe_networks = super::ca::for_version("--unsafe-networks", &a.unsafe_networks, version, true)?;

    let out_crt = a.out_crt.unwrap_or_else(|| PathBuf::from(format!("{name}.crt")));
    let out_key = a.out_key.unwrap_or_else(|| PathBuf::from(format!("{name}.key")));
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
    let details = Tbs {
        version,
        name,
        networks,
        unsafe_networks,
        groups: super::clean_groups(&a.groups),
        not_before: now,
        not_after,
        public_key: public.0,
        is_ca: false,
        issuer: Some(ca_cert.fingerprint()),
    };
    check_constraints(&ca_cert, &details)?;
    let cert = Certificate::sign_tbs(&details, ca_key.signing_key())?;
    // Self-check: what we hand out must verify exactly as a peer will verify it.
    let mut pool = CaPool::default();
    pool.add(ca_cert)?;
    pool.verify(&cert, now, &Blocklist::default()).context("the new certificate failed verification")?;

    if let Some(secret) = secret {
        files::write_new(&out_key, secret.to_pem().as_bytes(), SECRET_MODE, "private key")?;
    }
    files::write_new(&out_crt, cert.to_pem().as_bytes(), SECRET_MODE, "certificate")?;
    eprintln!(
        "signed {} certificate {} ({}, groups [{}]) valid until {}: {}",
        cert.version(),
        details.name,
        cert.networks().iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","),
        details.groups.join(","),
        details.not_after,
        out_crt.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads the CA certificate and key and checks they belong together and are still valid.
fn load_ca(crt: &Path, key: &Path) -> Result<(Certificate, CaSecret)> {
    let ca_cert = Certificate::from_pem(&files::read(crt, "CA certificate")?)
        .with_context(|| format!("parsing CA certificate {}", crt.display()))?;
    let ca_key = CaSecret::from_pem(&files::read(key, "CA key")?)
        .with_context(|| format!("parsing CA key {}", key.display()))?;
    if !ca_cert.is_ca() {
        bail!("{} is not a CA certificate", crt.display());
    }
    if &ca_key.public() != ca_cert.public_key() {
        bail!("CA key {} does not match CA certificate {}", key.display(), crt.display());
    }
    if ca_cert.is_expired(UnixTime::now()) {
        bail!("ca certificate is expired: {} expired at {}", ca_cert.name(), ca_cert.details().not_after);
    }
    Ok((ca_cert, ca_key))
}

/// `sign --inventory`: every node of the inventory, then a summary (text or `--json`).
fn sign_inventory(a: &Args, path: &Path, ca_cert: &Certificate, ca_key: &CaSecret, now: UnixTime) -> Result<ExitCode> {
    if let Some(d) = a.duration.filter(|d| !d.is_zero() && *d <= a.renew_before) {
        bail!(
            "--duration {} is not longer than --renew-before {}: every run would renew every certificate",
            crate::duration::format(d),
            crate::duration::format(a.renew_before)
        );
    }
    let inv = Inventory::load(path)?;
    let policy =
        Policy { renew_before: a.renew_before, duration: a.duration, version: a.version.unwrap_or(ca_cert.version()) };
    let signer = Signer { cert: ca_cert, key: ca_key.signing_key() };
    let report = apply::run(&inv, &signer, &a.out_dir, &policy, now, a.dry_run)?;
    let outcomes = &report.nodes;
    if a.json {
        let v = serde_json::json!({
            "inventory": path,
            "out_dir": a.out_dir,
            "dry_run": a.dry_run,
            "nodes": outcomes,
            "not_in_inventory": report.not_in_inventory,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let verb = |action: Action| match (action, a.dry_run) {
        (Action::Issued, false) => "issued",
        (Action::Issued, true) => "would issue",
        (Action::Renewed, false) => "renewed",
        (Action::Renewed, true) => "would renew",
        (Action::Unchanged, _) => "unchanged",
    };
    for o in outcomes {
        let key = o.key_written.as_ref().map(|k| format!(", key {}", k.display())).unwrap_or_default();
        println!("{:<12} {:<24} {} ({}){key}", verb(o.action), o.name, o.cert.display(), o.reasons.join("; "));
    }
    for p in &report.not_in_inventory {
        println!("{:<12} {:<24} {} (blocklist it if the node is retired)", "not listed", "", p.display());
    }
    let count = |x: Action| outcomes.iter().filter(|o| o.action == x).count();
    println!(
        "{} issued, {} renewed, {} unchanged{}",
        count(Action::Issued),
        count(Action::Renewed),
        count(Action::Unchanged),
        if a.dry_run { " (dry run: nothing written)" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}
