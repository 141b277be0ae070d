//! `cos-mesh check -c FILE|DIR`: everything a start would validate, without touching the network
//! (Nebula's `nebula -test`). Exit 0 when the node could start; 1 with `Error: <file>: <field>:
//! <reason>` otherwise. Warnings go to stderr and do not fail the check.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, anyhow};

use crate::cert::Certificate;
use crate::cert::keys::HostSecret;
use crate::cert::pool::{Blocklist, CaPool};
use crate::config::{Config, LoadedConfig, PemSource};
use crate::unixtime::UnixTime;

#[derive(clap::Args)]
pub struct Args {
    /// Config file, or a directory whose *.yml / *.yaml files merge in name order.
    #[arg(short = 'c', long = "config", value_name = "FILE|DIR")]
    config: PathBuf,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let loaded = Config::load(&a.config)?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let pki = Pki::load(&loaded, UnixTime::now())?;
    for w in &pki.warnings {
        eprintln!("warning: {w}");
    }
    let ip = pki
        .cert
        .details()
        .ips
        .first()
        .copied()
        .ok_or_else(|| field_err(&loaded, "pki.cert", "the certificate has no IP"))?;
    loaded.check_overlay(ip)?;
    // firewall: compiled at merge with the firewall module
    eprintln!(
        "{}: OK: node {} ({ip}), {} file(s), {} CA(s){}",
        a.config.display(),
        pki.cert.name(),
        loaded.files.len(),
        pki.pool.len(),
        if loaded.config.tun.disabled {
            ", tun disabled".to_string()
        } else {
            format!(", tun {}", loaded.config.tun.dev)
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// The PKI as a start would load it: CA pool, this node's verified certificate, the key that
/// matches it, the blocklist.
struct Pki {
    pool: CaPool,
    cert: Certificate,
    warnings: Vec<String>,
}

impl Pki {
    fn load(loaded: &LoadedConfig, now: UnixTime) -> Result<Pki> {
        let pki = &loaded.config.pki;
        let mut warnings = Vec::new();
        let (ca, cert, key) = match (&pki.ca, &pki.cert, &pki.key) {
            (Some(ca), Some(cert), Some(key)) => (ca, cert, key),
            _ => return Err(anyhow!("pki.ca, pki.cert and pki.key are required")), // validate() ensures them
        };
        let pool = CaPool::from_pem(&read(loaded, "pki.ca", ca)?).map_err(|e| field_err(loaded, "pki.ca", e))?;
        for expired in pool.expired(now) {
            warnings.push(format!(
                "{}: pki.ca: CA {} expired at {}; certificates it signed no longer verify",
                loaded.origin("pki.ca").display(),
                expired.name(),
                expired.details().not_after
            ));
        }
        let cert =
            Certificate::from_pem(&read(loaded, "pki.cert", cert)?).map_err(|e| field_err(loaded, "pki.cert", e))?;

        if let PemSource::Path(p) = key {
            warnings.extend(mode_warning(loaded, "pki.key", p));
        } else {
            // Inline keys live in the config file, which then deserves the key's protection.
            warnings.extend(mode_warning(loaded, "pki.key", &loaded.origin("pki.key")));
        }
        let secret =
            HostSecret::from_pem(&read(loaded, "pki.key", key)?).map_err(|e| field_err(loaded, "pki.key", e))?;
        if secret.public().0 != cert.details().public_key {
            return Err(field_err(
                loaded,
                "pki.key",
                format!(
                    "the private key ({}) does not match the public key of certificate {}",
                    key.describe(),
                    cert.name()
                ),
            ));
        }

        let blocklist = Blocklist::from_hex(&pki.blocklist).map_err(|e| field_err(loaded, "pki.blocklist", e))?;
        let verified = pool.verify(&cert, now, &blocklist).map_err(|e| field_err(loaded, "pki.cert", e))?;
        // An expired certificate stops the node; an expired CA stops the whole mesh. Say so early.
        for (field, what, c, notice) in
            [("pki.cert", "certificate", &cert, CERT_NOTICE), ("pki.ca", "CA", verified.ca().as_ref(), CA_NOTICE)]
        {
            let left = c.details().not_after.seconds() - now.seconds();
            if left < notice {
                warnings.push(format!(
                    "{}: {field}: {what} {} expires in {} (at {}); renew it and reload",
                    loaded.origin(field).display(),
                    c.name(),
                    human_span(left),
                    c.details().not_after
                ));
            }
        }
        Ok(Pki { pool, cert, warnings })
    }
}

/// Warn when the node certificate has less than 30 days left, the CA less than 90.
const CERT_NOTICE: i64 = 30 * 86_400;
const CA_NOTICE: i64 = 90 * 86_400;

/// `3 days`, `5 hours`, `12 minutes`.
fn human_span(secs: i64) -> String {
    match secs {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 2 * 3600 => format!("{} hours", s / 3600),
        s => format!("{} minutes", s.max(0) / 60),
    }
}

fn field_err(loaded: &LoadedConfig, field: &str, reason: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{}: {field}: {reason}", loaded.origin(field).display())
}

fn read(loaded: &LoadedConfig, field: &str, src: &PemSource) -> Result<Vec<u8>> {
    src.read().map_err(|e| field_err(loaded, field, format!("reading {}: {e}", src.describe())))
}

/// Keys must be readable by the owner only, as `nebula-cert` and `cos-mesh sign` write them.
fn mode_warning(loaded: &LoadedConfig, field: &str, path: &Path) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "{}: {field}: {} has mode {mode:04o}; a private key should be 0600 (chmod 600 {})",
            loaded.origin(field).display(),
            path.display(),
            path.display()
        )
    })
}
