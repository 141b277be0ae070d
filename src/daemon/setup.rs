//! Everything a start (or a reload, or `cos-mesh check`) loads and validates before touching
//! the network: the config, the PKI, the firewall, and the mesh settings derived from them.
//! Errors name the file and the field.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::{IpNet, Ipv6Net};
use thiserror::Error;

use crate::cert::bundle::HostCerts;
use crate::cert::keys::HostSecret;
use crate::cert::pool::{Blocklist, CaPool, Skipped};
use crate::cert::{Certificate, Version};
use crate::config::{
    self, Config, ConfigError, IPV6_MIN_MTU, LoadedConfig, OverlayIp, PemSource, Underlay, UnderlayHost,
};

/// `static_host_map` as configured: overlay IP to underlay `host:port`s (names allowed).
pub type StaticHostMap = std::collections::BTreeMap<OverlayIp, Vec<Underlay>>;
use crate::firewall::{Firewall, FirewallConfig, RulesError};

use crate::mesh::Discovery;
use crate::unixtime::UnixTime;

/// Why a configuration could not be loaded (at start, on reload, by `cos-mesh check`); each
/// names the file and the key.
#[derive(Debug, Error)]
pub enum SetupError {
    /// The config files themselves: reading, YAML, a key or value they hold.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The CA pool, certificate, key or blocklist the config points to.
    #[error(transparent)]
    Pki(ConfigError),
    #[error("pki.ca, pki.cert and pki.key are required")]
    PkiMissing,
    /// (Not a `source`: the message already says it, and a chain would repeat it.)
    #[error("firewall: {0}")]
    Firewall(RulesError),
}

impl From<RulesError> for SetupError {
    fn from(e: RulesError) -> Self {
        SetupError::Firewall(e)
    }
}

/// Something worth an operator's attention in a configuration that loaded: printed by `check`,
/// logged by the daemon at start and on reload.
#[derive(Debug, Clone)]
pub enum SetupWarning {
    /// A config key without effect here, or a questionable value.
    Config(config::Warning),
    /// A block of the CA bundle that is not a usable CA.
    CaSkipped {
        origin: PathBuf,
        skipped: Skipped,
    },
    CaExpired {
        origin: PathBuf,
        ca: String,
        not_after: UnixTime,
    },
    /// The node certificate (`pki.cert`) or its CA (`pki.ca`) expires soon.
    ExpiresSoon {
        origin: PathBuf,
        field: &'static str,
        what: &'static str,
        name: String,
        left: i64,
        not_after: UnixTime,
    },
    /// A private key others can read.
    KeyMode {
        origin: PathBuf,
        field: &'static str,
        path: PathBuf,
        mode: u32,
    },
}

impl std::fmt::Display for SetupWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupWarning::Config(w) => write!(f, "{w}"),
            SetupWarning::CaSkipped { origin, skipped } => write!(f, "{}: pki.ca: {skipped}", origin.display()),
            SetupWarning::CaExpired { origin, ca, not_after } => write!(
                f,
                "{}: pki.ca: CA {ca} expired at {not_after}; certificates it signed no longer verify",
                origin.display()
            ),
            SetupWarning::ExpiresSoon { origin, field, what, name, left, not_after } => write!(
                f,
                "{}: {field}: {what} {name} expires in {} (at {not_after}); renew it and reload",
                origin.display(),
                human_span(*left)
            ),
            SetupWarning::KeyMode { origin, field, path, mode } => write!(
                f,
                "{}: {field}: {} has mode {mode:04o}; a private key should be 0600 (chmod 600 {})",
                origin.display(),
                path.display(),
                path.display()
            ),
        }
    }
}

/// A node configuration that loaded and validated completely.
pub struct Setup {
    pub loaded: LoadedConfig,
    pub pki: Pki,
    pub firewall: Firewall,
    /// This node's identity on the overlay, with its prefix: the certificate's first IPv4
    /// network, or its first network when it has only IPv6 ones.
    pub overlay: IpNet,
    /// The certificate's IPv6 networks (a dual-stack node), addresses with their prefixes.
    pub overlay6: Vec<Ipv6Net>,
    /// Warnings to print or log (config keys without effect, expiring certificates, ...).
    pub warnings: Vec<SetupWarning>,
}

impl Setup {
    pub fn load(path: &Path, now: UnixTime) -> Result<Setup, SetupError> {
        let loaded = Config::load(path)?;
        let mut warnings: Vec<SetupWarning> = loaded.warnings.iter().cloned().map(SetupWarning::Config).collect();
        let pki = Pki::load(&loaded, now)?;
        warnings.extend(pki.warnings.iter().cloned());
        // The certificate's first network is the node's identity: the IPv4 one when there is one.
        let overlay =
            pki.cert.overlay_v4().map(IpNet::V4).or_else(|| pki.cert.networks().first().copied()).ok_or_else(|| {
                pki_err(&loaded, "pki.cert", format!("certificate {} has no network", pki.cert.name()))
            })?;
        let overlay6: Vec<Ipv6Net> = pki
            .cert
            .networks()
            .iter()
            .filter_map(|n| match n {
                IpNet::V6(n) => Some(*n),
                IpNet::V4(_) => None,
            })
            .collect();
        loaded.check_networks(pki.cert.networks())?;
        let mtu = loaded.config.tun.mtu;
        if !overlay6.is_empty() && mtu < IPV6_MIN_MTU && !loaded.config.tun.disabled {
            return Err(SetupError::Config(field_err(
                &loaded,
                "tun.mtu",
                format!(
                    "{mtu} is below {IPV6_MIN_MTU}, the smallest MTU IPv6 allows, and certificate {} has IPv6 networks; raise tun.mtu",
                    pki.cert.name()
                ),
            )));
        }
        let sections = firewall_sections(&loaded.files)?;
        // Rules without local_cidr match traffic to any of our networks, v4 and v6.
        let mut local: Vec<IpNet> = pki.cert.networks().iter().map(IpNet::trunc).collect();
        local.extend(pki.cert.unsafe_networks().iter().map(IpNet::trunc));
        let firewall = Firewall::compile_sections(&sections, &local)?;
        Ok(Setup { loaded, pki, firewall, overlay, overlay6, warnings })
    }

    pub fn config(&self) -> &Config {
        &self.loaded.config
    }

    /// `static_host_map` with names resolved (IP literals need no lookup). A name that does not
    /// resolve is left out and reported, so one bad entry does not stop the node.
    pub fn resolve_static_hosts(&self) -> (HashMap<IpAddr, Vec<SocketAddr>>, Vec<String>) {
        resolve_static_hosts(&self.config().static_host_map)
    }

    /// The discovery settings (`lighthouse`, `punchy`, `relay`) for the mesh core.
    pub fn discovery(&self) -> Discovery {
        let c = self.config();
        Discovery {
            am_lighthouse: c.lighthouse.am_lighthouse,
            lighthouses: c.lighthouse.hosts.clone(),
            interval: Duration::from_secs(c.lighthouse.interval.max(1)),
            advertise_addrs: c
                .lighthouse
                .advertise_addrs
                .iter()
                .filter_map(|a| match (&a.0.host, a.0.port) {
                    // Port 0: our listening port (validation warns when that is random too).
                    (UnderlayHost::Ip(_), 0) if c.listen.port == 0 => None,
                    (UnderlayHost::Ip(ip), 0) => Some(SocketAddr::new(*ip, c.listen.port)),
                    (UnderlayHost::Ip(ip), port) => Some(SocketAddr::new(*ip, port)),
                    (UnderlayHost::Dns(_), _) => None,
                })
                .collect(),
            punch: c.punchy.punch,
            respond: c.punchy.respond,
            punch_delay: c.punchy.delay.0,
            respond_delay: c.punchy.respond_delay.0,
            am_relay: c.relay.am_relay,
            relays: c.relay.relays.clone(),
            use_relays: c.relay.use_relays,
            remote_allow_list: c.lighthouse.remote_allow_list.iter().map(|(n, a)| (*n, *a)).collect(),
        }
    }

    /// `tun.unsafe_routes` as (network, via overlay IP): of several gateways, the highest-weight
    /// one (the first on a tie) carries all the traffic.
    pub fn unsafe_routes(&self) -> Vec<(IpNet, IpAddr)> {
        self.config().tun.unsafe_routes.iter().map(|r| (r.route, r.via.primary())).collect()
    }
}

/// The `firewall` sections of every config file, read again with their line numbers (the
/// merged config has none), so rules report `file:line` in `explain`, lint and logs.
pub fn firewall_sections(files: &[PathBuf]) -> Result<Vec<FirewallConfig>, RulesError> {
    let mut sections = vec![];
    for file in files {
        if let Some(s) = crate::firewall::config::load_node_section(file)? {
            sections.push(s);
        }
    }
    Ok(sections)
}
pub fn resolve_static_hosts(map: &StaticHostMap) -> (HashMap<IpAddr, Vec<SocketAddr>>, Vec<String>) {
    let mut out = HashMap::new();
    let mut problems = vec![];
    for (ip, underlays) in map {
        let mut addrs = vec![];
        for u in underlays {
            match &u.host {
                UnderlayHost::Ip(a) => addrs.push(SocketAddr::new(*a, u.port)),
                UnderlayHost::Dns(name) => match (name.as_str(), u.port).to_socket_addrs() {
                    Ok(found) => addrs.extend(found.filter(|a| a.is_ipv4())),
                    Err(e) => problems.push(format!("static_host_map: {}: cannot resolve {name}: {e}", ip.0)),
                },
            }
        }
        out.insert(ip.0, addrs);
    }
    (out, problems)
}

/// The PKI as a start would load it: CA pool, this node's verified certificate, the key that
/// matches it, the blocklist.
pub struct Pki {
    pub pool: CaPool,
    pub cert: Certificate,
    pub key: HostSecret,
    pub blocklist: Blocklist,
    pub warnings: Vec<SetupWarning>,
}

impl Pki {
    pub fn load(loaded: &LoadedConfig, now: UnixTime) -> Result<Pki, SetupError> {
        let pki = &loaded.config.pki;
        let mut warnings = Vec::new();
        let (ca, cert, key) = match (&pki.ca, &pki.cert, &pki.key) {
            (Some(ca), Some(cert), Some(key)) => (ca, cert, key),
            _ => return Err(SetupError::PkiMissing), // validate() ensures them
        };
        let (pool, skipped) = CaPool::load(&read(loaded, "pki.ca", ca)?).map_err(|e| pki_err(loaded, "pki.ca", e))?;
        for skipped in skipped {
            warnings.push(SetupWarning::CaSkipped { origin: loaded.origin("pki.ca"), skipped });
        }
        for expired in pool.expired(now) {
            warnings.push(SetupWarning::CaExpired {
                origin: loaded.origin("pki.ca"),
                ca: expired.name().to_string(),
                not_after: expired.details().not_after,
            });
        }
        let initiating = match pki.initiating_version {
            None => None,
            Some(n) => Some(Version::from_number(n).ok_or_else(|| {
                pki_err(loaded, "pki.initiating_version", format!("is {n}, expected 1 or 2 (a certificate version)"))
            })?),
        };
        // pki.cert may hold a v1 and a v2 certificate for this key; the node presents one.
        let cert = HostCerts::from_pem(&read(loaded, "pki.cert", cert)?, initiating)
            .map_err(|e| pki_err(loaded, "pki.cert", e))?
            .into_presented();

        if let PemSource::Path(p) = key {
            warnings.extend(mode_warning(loaded, "pki.key", p));
        } else {
            // Inline keys live in the config file, which then deserves the key's protection.
            warnings.extend(mode_warning(loaded, "pki.key", &loaded.origin("pki.key")));
        }
        let secret = HostSecret::from_pem(&read(loaded, "pki.key", key)?).map_err(|e| pki_err(loaded, "pki.key", e))?;
        if secret.public().0 != cert.details().public_key {
            return Err(pki_err(
                loaded,
                "pki.key",
                format!(
                    "the private key ({}) does not match the public key of certificate {}",
                    key.describe(),
                    cert.name()
                ),
            ));
        }

        let blocklist = Blocklist::from_hex(&pki.blocklist).map_err(|e| pki_err(loaded, "pki.blocklist", e))?;
        let verified = pool.verify(&cert, now, &blocklist).map_err(|e| pki_err(loaded, "pki.cert", e))?;
        // An expired certificate stops the node; an expired CA stops the whole mesh. Say so early.
        for (field, what, c, notice) in
            [("pki.cert", "certificate", &cert, CERT_NOTICE), ("pki.ca", "CA", verified.ca().as_ref(), CA_NOTICE)]
        {
            let left = c.details().not_after.seconds() - now.seconds();
            if left < notice {
                warnings.push(SetupWarning::ExpiresSoon {
                    origin: loaded.origin(field),
                    field,
                    what,
                    name: c.name().to_string(),
                    left,
                    not_after: c.details().not_after,
                });
            }
        }
        Ok(Pki { pool, cert, key: secret, blocklist, warnings })
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

/// `file: key: reason`, the file being the one that set `field`.
fn field_err(loaded: &LoadedConfig, field: &str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid { file: loaded.origin(field), field: field.into(), reason: reason.to_string() }
}

fn pki_err(loaded: &LoadedConfig, field: &str, reason: impl std::fmt::Display) -> SetupError {
    SetupError::Pki(field_err(loaded, field, reason))
}

fn read(loaded: &LoadedConfig, field: &str, src: &PemSource) -> Result<Vec<u8>, SetupError> {
    src.read().map_err(|e| pki_err(loaded, field, format!("reading {}: {e}", src.describe())))
}

/// Keys must be readable by the owner only, as `nebula-cert` and `cos-mesh sign` write them.
fn mode_warning(loaded: &LoadedConfig, field: &'static str, path: &Path) -> Option<SetupWarning> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| SetupWarning::KeyMode {
        origin: loaded.origin(field),
        field,
        path: path.to_path_buf(),
        mode,
    })
}
