//! Makes the certificates in an output directory match the inventory: reads what exists, asks
//! [`super::renewal::decide`] for every node, and only when every node is fine writes anything.
//!
//! Files per node: `<name>.crt`, and `<name>.key` when cos-mesh generated the key. A key is
//! written once (0600, never overwritten). A certificate is written new, or — renewal, the one
//! case a file is replaced — written beside the old one and renamed over it, so a reader sees
//! the old or the new certificate and never half of one.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Inventory;
use super::renewal::{Action, Decision, Existing, KeySource, Policy, decide};
use crate::cert::Certificate;
use crate::cert::keys::{HostPublic, HostSecret};
use crate::cert::pool::{Blocklist, CaPool};
use crate::files::{self, SECRET_MODE};
use crate::unixtime::UnixTime;

/// The CA that signs, already checked to be a CA whose key matches.
pub struct Signer<'a> {
    pub cert: &'a Certificate,
    pub key: &'a ed25519_dalek::SigningKey,
}

/// What happened to one node.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub name: String,
    pub action: Action,
    pub reasons: Vec<String>,
    pub cert: PathBuf,
    /// The private key file written by this run, if any.
    pub key_written: Option<PathBuf>,
    pub not_after: String,
    pub fingerprint: String,
}

/// The outcome of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub nodes: Vec<Outcome>,
    /// Certificates in the output directory for names the inventory no longer lists: left
    /// alone, but a retired node's certificate stays valid until blocklisted.
    pub not_in_inventory: Vec<PathBuf>,
}

/// Brings `out_dir` in line with `inv`. With `dry_run` nothing is written and the outcomes say
/// what would be done.
pub fn run(
    inv: &Inventory,
    ca: &Signer,
    out_dir: &Path,
    policy: &Policy,
    now: UnixTime,
    dry_run: bool,
) -> Result<Report> {
    // Decide for every node first: one bad entry leaves the directory untouched.
    let mut plans = Vec::with_capacity(inv.nodes.len());
    for node in &inv.nodes {
        let paths = Paths::new(out_dir, &node.name);
        let (existing, secret) = existing(&paths)?;
        let decision =
            decide(node, ca.cert, &existing, now, policy).map_err(|e| inv.entry_error(node, e.to_string()))?;
        plans.push((paths, existing, secret, decision));
    }
    let any_change = !plans.iter().all(|p| p.3.action == Action::Unchanged);
    let mut pool = CaPool::default();
    pool.add(ca.cert.clone())?;
    // Sign every new certificate before writing any: a node whose certificate cannot be made
    // (an IPv6 network for a v1 certificate, say) leaves the directory untouched too.
    let mut signed = Vec::with_capacity(plans.len());
    for (paths, existing, secret, Decision { action, reasons, details }) in plans {
        let cert = match &details {
            None => existing.cert.clone().context("an unchanged node has a certificate")?,
            Some(d) => {
                let node = inv.nodes.iter().find(|n| n.name == d.name).context("a planned node is in the inventory")?;
                let cert = Certificate::sign_tbs(d, ca.key).map_err(|e| inv.entry_error(node, e.to_string()))?;
                // What we hand out must verify exactly as a peer will verify it.
                pool.verify(&cert, now, &Blocklist::default())
                    .with_context(|| format!("the new certificate for {} failed verification", d.name))?;
                cert
            }
        };
        signed.push((paths, secret, action, reasons, cert));
    }
    if !dry_run && any_change {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(out_dir)
            .with_context(|| format!("creating output directory {}", out_dir.display()))?;
    }
    let mut outcomes = Vec::with_capacity(signed.len());
    for (paths, secret, action, reasons, cert) in signed {
        let mut key_written = None;
        if !dry_run {
            if let Some(secret) = &secret {
                files::write_new(&paths.key, secret.to_pem().as_bytes(), SECRET_MODE, "private key")?;
                key_written = Some(paths.key.clone());
            }
            match action {
                Action::Issued => files::write_new(&paths.crt, cert.to_pem().as_bytes(), SECRET_MODE, "certificate")?,
                Action::Renewed => files::replace(&paths.crt, cert.to_pem().as_bytes(), "certificate")?,
                Action::Unchanged => {}
            }
        } else if secret.is_some() {
            key_written = Some(paths.key.clone());
        }
        outcomes.push(Outcome {
            name: cert.name().to_string(),
            action,
            reasons,
            cert: paths.crt,
            key_written,
            not_after: cert.details().not_after.rfc3339(),
            fingerprint: cert.fingerprint().to_string(),
        });
    }
    Ok(Report { nodes: outcomes, not_in_inventory: not_in_inventory(inv, out_dir)? })
}

fn not_in_inventory(inv: &Inventory, out_dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(out_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("listing {}", out_dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let is_crt = path.extension().is_some_and(|e| e == "crt") && !stem.starts_with('.');
        if is_crt && !inv.nodes.iter().any(|n| n.name == stem) {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

struct Paths {
    crt: PathBuf,
    key: PathBuf,
    public: PathBuf,
}

impl Paths {
    fn new(dir: &Path, name: &str) -> Paths {
        Paths {
            crt: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            public: dir.join(format!("{name}.pub")),
        }
    }
}

/// The certificate and key material present for a node. When there is none, a key pair is
/// generated in memory (and written only if the whole run goes ahead).
fn existing(p: &Paths) -> Result<(Existing, Option<HostSecret>)> {
    let cert = match fs::read(&p.crt) {
        Ok(bytes) => Some(Certificate::from_pem(&bytes).with_context(|| {
            format!("{} is not a certificate cos-mesh can read; move it away to issue a new one", p.crt.display())
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading certificate {}", p.crt.display())),
    };
    if p.key.exists() {
        let secret = HostSecret::from_pem(&files::read(&p.key, "private key")?)
            .with_context(|| format!("parsing private key {}", p.key.display()))?;
        let public_key = secret.public().0;
        return Ok((Existing { cert, public_key, key_source: KeySource::KeyFile }, None));
    }
    if p.public.exists() {
        let public = HostPublic::from_pem(&files::read(&p.public, "public key")?)
            .with_context(|| format!("parsing public key {}", p.public.display()))?;
        return Ok((Existing { cert, public_key: public.0, key_source: KeySource::PubFile }, None));
    }
    if let Some(c) = &cert {
        let public_key = *c.public_key();
        return Ok((Existing { cert, public_key, key_source: KeySource::Certificate }, None));
    }
    let secret = HostSecret::generate();
    Ok((Existing { cert: None, public_key: secret.public().0, key_source: KeySource::Generated }, Some(secret)))
}
