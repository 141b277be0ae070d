//! `cos-mesh nomad tls`: makes a directory of Nomad TLS files match the inventory, like
//! `sign --inventory` does for mesh certificates. Layout:
//!
//! ```text
//! DIR/nomad-agent-ca.pem, DIR/nomad-agent-ca-key.pem      the CA (its key stays here, 0600)
//! DIR/<node>/nomad-agent-ca.pem                            copy of the CA certificate
//! DIR/<node>/<region>-{server,client,cli}-nomad.pem        certificates (and -key.pem, 0600)
//! DIR/<node>/nomad-cli.env                                 NOMAD_ADDR, NOMAD_CACERT, ...
//! ```
//!
//! Every decision is made before anything is written; keys are written once and kept on
//! renewal; a renewed certificate replaces the old one atomically. The mesh's gossip key (one
//! for every server, next to the inventory) is generated the first time.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use rand_core::{OsRng, RngCore};
use rcgen::KeyPair;

use super::{CA_FILE, CA_KEY_FILE, Ca, Kind, Spec, decide, inspect, new_key};
use crate::files::{self, SECRET_MODE};
use crate::inventory::Inventory;
use crate::inventory::renewal::Action;
use crate::unixtime::UnixTime;

/// Where the files go on a host (for the env file's paths), Nomad's usual place.
pub const INSTALL_DIR: &str = "/etc/nomad.d/tls";
/// The env file in each node's directory.
pub const ENV_FILE: &str = "nomad-cli.env";

pub struct Options {
    pub out_dir: PathBuf,
    pub region: String,
    pub renew_before: Duration,
    pub days: u64,
    /// Where the node directory's files are installed, for the env file.
    pub install_dir: PathBuf,
}

/// What happened to one file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub node: String,
    pub file: PathBuf,
    pub action: Action,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub ca: Action,
    pub gossip_key: Action,
    pub gossip_key_file: PathBuf,
    pub certificates: Vec<Outcome>,
    /// Node directories and certificates the inventory no longer asks for: left alone (a
    /// retired node's certificate stays valid until it expires; remove it from the host).
    pub not_in_inventory: Vec<PathBuf>,
}

struct Plan {
    node: String,
    dir: PathBuf,
    spec: Spec,
    key: KeyPair,
    key_is_new: bool,
    action: Action,
    reasons: Vec<String>,
}

pub fn run(inv: &Inventory, o: &Options, now: UnixTime) -> Result<Report> {
    let (ca_crt, ca_key) = (o.out_dir.join(CA_FILE), o.out_dir.join(CA_KEY_FILE));
    let (ca, ca_action) = match (ca_crt.exists(), ca_key.exists()) {
        (true, true) => {
            let cert = String::from_utf8_lossy(&files::read(&ca_crt, "Nomad CA certificate")?).into_owned();
            let key = String::from_utf8_lossy(&files::read(&ca_key, "Nomad CA key")?).into_owned();
            let ca = Ca::load(&cert, &key).with_context(|| format!("loading the Nomad CA {}", ca_crt.display()))?;
            (ca, Action::Unchanged)
        }
        (false, false) => (Ca::generate(now)?, Action::Issued),
        (has_crt, _) => bail!(
            "{} exists but {} does not: restore the missing file, or move both away to make a new CA \
             (every Nomad agent then needs its certificates replaced)",
            if has_crt { ca_crt.display() } else { ca_key.display() },
            if has_crt { ca_key.display() } else { ca_crt.display() }
        ),
    };
    let ca_end = ca.not_after()?;
    if ca_end.seconds() <= now.seconds() + 86_400 {
        bail!(
            "the Nomad CA {} expires {}: nothing it signs would be valid. Move nomad-agent-ca.pem and \
             nomad-agent-ca-key.pem away to make a new CA (then every Nomad agent needs its new certificates)",
            ca_crt.display(),
            ca_end.rfc3339()
        );
    }

    let mut plans = vec![];
    for node in &inv.nodes {
        if [CA_FILE, CA_KEY_FILE].contains(&node.name.as_str()) {
            return Err(inv.entry_error(node, "this name is the Nomad CA's file name; rename the node").into());
        }
        let dir = o.out_dir.join(&node.name);
        for kind in Kind::for_groups(&node.groups) {
            let spec = Spec { kind, region: o.region.clone(), overlay_ip: node.ip.addr() };
            let (crt, key_path) = paths(&dir, &spec);
            let (key, key_is_new) = if key_path.exists() {
                let pem = String::from_utf8_lossy(&files::read(&key_path, "Nomad key")?).into_owned();
                (KeyPair::from_pem(&pem).with_context(|| format!("parsing Nomad key {}", key_path.display()))?, false)
            } else {
                (new_key()?, true)
            };
            let found = match fs::read_to_string(&crt) {
                Ok(pem) => Some(
                    inspect(&pem, &crt.display().to_string(), &ca, &key)
                        .with_context(|| format!("{}: move it away to issue a new one", crt.display()))?,
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e).with_context(|| format!("reading {}", crt.display())),
            };
            let (action, mut reasons) = decide(&spec, found.as_ref(), now, o.renew_before, ca_end);
            if key_is_new {
                reasons.push("new key".into());
            }
            plans.push(Plan { node: node.name.clone(), dir: dir.clone(), spec, key, key_is_new, action, reasons });
        }
    }

    make_dir(&o.out_dir)?;
    if ca_action == Action::Issued {
        files::write_new(&ca_key, ca.key_pem().as_bytes(), SECRET_MODE, "Nomad CA key")?;
        files::write_new(&ca_crt, ca.cert_pem.as_bytes(), SECRET_MODE, "Nomad CA certificate")?;
    }
    let mut outcomes = vec![];
    for p in &plans {
        make_dir(&p.dir)?;
        let (crt, key_path) = paths(&p.dir, &p.spec);
        if p.key_is_new {
            files::write_new(&key_path, p.key.serialize_pem().as_bytes(), SECRET_MODE, "Nomad key")?;
        }
        match p.action {
            Action::Issued => {
                let pem = ca.issue(&p.spec, &p.key, now, o.days)?;
                files::write_new(&crt, pem.as_bytes(), SECRET_MODE, "Nomad certificate")?;
            }
            Action::Renewed => {
                files::replace(&crt, ca.issue(&p.spec, &p.key, now, o.days)?.as_bytes(), "Nomad certificate")?
            }
            Action::Unchanged => {}
        }
        outcomes.push(Outcome { node: p.node.clone(), file: crt, action: p.action, reasons: p.reasons.clone() });
    }
    // The CA copy and env file of every node with certificates: rewritten only when different.
    let mut dirs: Vec<(&str, &Path)> = plans.iter().map(|p| (p.node.as_str(), p.dir.as_path())).collect();
    dirs.dedup();
    for (name, dir) in dirs {
        sync(&dir.join(CA_FILE), ca.cert_pem.as_bytes(), "Nomad CA certificate")?;
        let kinds: Vec<&Spec> = plans.iter().filter(|p| p.node == name).map(|p| &p.spec).collect();
        sync(&dir.join(ENV_FILE), env_file(name, &kinds, inv, o).as_bytes(), "Nomad CLI env file")?;
    }
    let gossip_key = if inv.nomad.gossip_key.exists() {
        Action::Unchanged
    } else {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        let text = format!("{}\n", base64::engine::general_purpose::STANDARD.encode(key));
        files::write_new(&inv.nomad.gossip_key, text.as_bytes(), SECRET_MODE, "Nomad gossip key")?;
        Action::Issued
    };
    let not_in_inventory = leftovers(&o.out_dir, &plans)?;
    Ok(Report {
        ca: ca_action,
        gossip_key,
        gossip_key_file: inv.nomad.gossip_key.clone(),
        certificates: outcomes,
        not_in_inventory,
    })
}

/// Directories of nodes without certificates now, and `*-nomad.pem` certificates no plan has.
fn leftovers(out_dir: &Path, plans: &[Plan]) -> Result<Vec<PathBuf>> {
    let mut found = vec![];
    for entry in fs::read_dir(out_dir).with_context(|| format!("listing {}", out_dir.display()))? {
        let dir = entry?.path();
        if !dir.is_dir() {
            continue;
        }
        let planned: Vec<String> =
            plans.iter().filter(|p| p.dir == dir).map(|p| format!("{}.pem", p.spec.file_stem())).collect();
        if planned.is_empty() {
            found.push(dir);
            continue;
        }
        for f in fs::read_dir(&dir)? {
            let f = f?.path();
            let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.ends_with("-nomad.pem") && !planned.contains(&name) {
                found.push(f);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn paths(dir: &Path, spec: &Spec) -> (PathBuf, PathBuf) {
    let stem = spec.file_stem();
    (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}-key.pem")))
}

fn make_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating directory {}", dir.display()))
}

/// Writes `path` when it is missing or holds something else.
fn sync(path: &Path, contents: &[u8], what: &str) -> Result<()> {
    match fs::read(path) {
        Ok(old) if old == contents => Ok(()),
        Ok(_) => files::replace(path, contents, what),
        Err(_) => files::write_new(path, contents, SECRET_MODE, what),
    }
}

/// The Nomad CLI's environment for a node: its own agent on loopback when it runs one, else
/// the first server's overlay address (its certificate carries that IP, so it verifies).
fn env_file(node: &str, specs: &[&Spec], inv: &Inventory, o: &Options) -> String {
    let dir = &o.install_dir;
    let runs_agent = specs.iter().any(|s| s.kind != Kind::Cli);
    let addr = match (runs_agent, crate::nomad::servers::from_inventory(inv).first()) {
        (false, Some(server)) => server.to_string(),
        _ => "127.0.0.1".into(),
    };
    let cli = specs.iter().find(|s| s.kind == Kind::Cli).map(|s| s.file_stem()).unwrap_or_default();
    format!(
        "# Nomad CLI settings for {node}, from `cos-mesh nomad tls` (source it, or EnvironmentFile=).\n\
         NOMAD_ADDR=https://{addr}:4646\n\
         NOMAD_CACERT={ca}\n\
         NOMAD_CLIENT_CERT={cert}\n\
         NOMAD_CLIENT_KEY={key}\n",
        ca = dir.join(CA_FILE).display(),
        cert = dir.join(format!("{cli}.pem")).display(),
        key = dir.join(format!("{cli}-key.pem")).display(),
    )
}
