//! The node configuration's shape: Nebula's `config.yml` keys wherever the concept is the same,
//! with cos-mesh's defaults. Every section rejects keys it does not know
//! (`deny_unknown_fields`), so a typo fails loudly instead of silently keeping a default; Nebula
//! keys that cos-mesh does not implement yet are declared as [`Unimplemented`] so they parse and
//! [`super::compat`] can warn about them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Deserializer, de};

/// The `firewall` section. Replaced at merge by `crate::firewall::FirewallConfig`, which the
/// firewall module defines; until then the section is accepted whole and not interpreted.
// replaced at merge by crate::firewall::FirewallConfig
pub type FirewallSection = serde::de::IgnoredAny;

/// `key:` with nothing after it is YAML null; Nebula (and its example config, e.g.
/// `unsafe_routes:`) treats it as empty, so lists, maps and sections do too.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A Nebula key cos-mesh accepts but does not act on yet; its value is not interpreted.
pub type Unimplemented = Option<serde::de::IgnoredAny>;

/// The whole node configuration after defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    #[serde(deserialize_with = "nullable")]
    pub pki: Pki,
    /// Overlay IPv4 → underlay addresses (`host:port`, DNS names allowed) of a few hosts.
    #[serde(deserialize_with = "nullable")]
    pub static_host_map: BTreeMap<OverlayIp, Vec<Underlay>>,
    #[serde(deserialize_with = "nullable")]
    pub lighthouse: Lighthouse,
    #[serde(deserialize_with = "nullable")]
    pub listen: Listen,
    #[serde(deserialize_with = "nullable")]
    pub punchy: Punchy,
    #[serde(deserialize_with = "nullable")]
    pub relay: Relay,
    #[serde(deserialize_with = "nullable")]
    pub tun: Tun,
    #[serde(deserialize_with = "nullable")]
    pub logging: Logging,
    #[serde(deserialize_with = "nullable")]
    pub handshakes: Handshakes,
    #[serde(deserialize_with = "nullable")]
    pub control: Control,
    #[serde(deserialize_with = "nullable")]
    pub stats: Stats,
    pub firewall: FirewallSection,
    // Nebula top-level keys accepted with a warning (see `compat`).
    pub cipher: Unimplemented,
    pub sshd: Unimplemented,
    pub routines: Unimplemented,
    pub preferred_ranges: Unimplemented,
    pub timers: Unimplemented,
    pub local_range: Unimplemented,
    pub tunnels: Unimplemented,
    pub static_map: Unimplemented,
    pub default_local_cidr_any: Unimplemented,
}

/// `pki`: the CA bundle, this node's certificate and key, the blocklist.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pki {
    /// CA bundle: a path or inline PEM with one or more CA certificates.
    pub ca: Option<PemSource>,
    /// This node's certificate: a path or inline PEM.
    pub cert: Option<PemSource>,
    /// This node's X25519 private key: a path (mode 0600) or inline PEM.
    pub key: Option<PemSource>,
    /// Hex fingerprints of certificates never to trust.
    #[serde(deserialize_with = "nullable")]
    pub blocklist: Vec<String>,
    /// Close tunnels whose peer certificate stops verifying (expired, blocklisted). Default true,
    /// as in Nebula 1.8+.
    pub disconnect_invalid: bool,
    pub initiating_version: Unimplemented,
}

impl Default for Pki {
    fn default() -> Self {
        Pki {
            ca: None,
            cert: None,
            key: None,
            blocklist: Vec::new(),
            disconnect_invalid: true,
            initiating_version: None,
        }
    }
}

/// Where a PEM item comes from: Nebula accepts a file path or the PEM text itself. A relative
/// path is taken from the working directory, as Nebula does (`/` under systemd), so configs
/// should use absolute paths.
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    Path(PathBuf),
    Inline(String),
}

impl PemSource {
    /// The PEM bytes: the file's contents or the inline text.
    pub fn read(&self) -> std::io::Result<Vec<u8>> {
        match self {
            PemSource::Path(p) => std::fs::read(p),
            PemSource::Inline(s) => Ok(s.as_bytes().to_vec()),
        }
    }

    /// What to call it in a message: the path, or "inline PEM".
    pub fn describe(&self) -> String {
        match self {
            PemSource::Path(p) => p.display().to_string(),
            PemSource::Inline(_) => "inline PEM".to_string(),
        }
    }
}

/// Never prints inline PEM: `pki.key` may hold a private key.
impl fmt::Debug for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemSource::Path(p) => write!(f, "Path({})", p.display()),
            PemSource::Inline(s) => write!(f, "Inline(<{} bytes>)", s.len()),
        }
    }
}

impl<'de> Deserialize<'de> for PemSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.contains("-----BEGIN") {
            Ok(PemSource::Inline(s))
        } else if s.trim().is_empty() {
            Err(de::Error::custom(
                "expected a file path or inline PEM, found an empty string",
            ))
        } else {
            Ok(PemSource::Path(PathBuf::from(s)))
        }
    }
}

/// A `static_host_map` key: an overlay IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OverlayIp(pub Ipv4Addr);

impl<'de> Deserialize<'de> for OverlayIp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.trim().parse::<Ipv4Addr>().map(OverlayIp).map_err(|_| {
            de::Error::custom(format!(
                "static_host_map key {s:?} is not an overlay IPv4 address (e.g. \"100.64.0.1\")"
            ))
        })
    }
}

/// The host part of an underlay address: an IP, or a DNS name the daemon resolves (and
/// re-resolves) itself.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UnderlayHost {
    Ip(IpAddr),
    Dns(String),
}

/// An underlay `host:port` (`198.18.0.1:4242`, `[2001:db8::1]:4242`, `lighthouse.example:4242`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Underlay {
    pub host: UnderlayHost,
    pub port: u16,
}

impl FromStr for Underlay {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "{s:?} is not an underlay address: {why} (expected host:port, e.g. 198.18.0.1:4242)"
            )
        };
        let (host, port) = s.trim().rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| bad("the port is not a number 1-65535"))?;
        if port == 0 {
            return Err(bad("port 0"));
        }
        let host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            UnderlayHost::Ip(IpAddr::V6(v6.parse().map_err(|_| bad("bad IPv6 address"))?))
        } else if let Ok(ip) = host.parse::<Ipv4Addr>() {
            UnderlayHost::Ip(IpAddr::V4(ip))
        } else if is_dns_name(host) {
            UnderlayHost::Dns(host.to_string())
        } else {
            return Err(bad("the host is neither an IP address nor a DNS name"));
        };
        Ok(Underlay { host, port })
    }
}

impl fmt::Display for Underlay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            UnderlayHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            UnderlayHost::Ip(ip) => write!(f, "{ip}:{}", self.port),
            UnderlayHost::Dns(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

impl<'de> Deserialize<'de> for Underlay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        // A dotted all-numeric string that failed to parse as IPv4 is a typo, not a name.
        && !s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// A Go duration string (`100ms`, `1s`, `1h30m`), as Nebula writes timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoDuration(pub Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::duration::parse(&s)
            .map(GoDuration)
            .map_err(de::Error::custom)
    }
}

/// `lighthouse`: discovery. Parsed now; acted on by the discovery issue.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lighthouse {
    pub am_lighthouse: bool,
    /// Overlay IPs of the lighthouses (each must be in `static_host_map`).
    #[serde(deserialize_with = "nullable")]
    pub hosts: Vec<Ipv4Addr>,
    /// Seconds between address reports to the lighthouses (Nebula's default 10).
    pub interval: u64,
    pub serve_dns: bool,
    #[serde(deserialize_with = "nullable")]
    pub dns: Dns,
    /// CIDR → allow, most specific wins.
    #[serde(deserialize_with = "nullable")]
    pub remote_allow_list: BTreeMap<IpNet, bool>,
    /// CIDR → allow, plus `interfaces: {regex: bool}`.
    #[serde(deserialize_with = "nullable")]
    pub local_allow_list: BTreeMap<String, AllowEntry>,
    /// Extra underlay addresses to report (`host:port`).
    #[serde(deserialize_with = "nullable")]
    pub advertise_addrs: Vec<Underlay>,
    pub remote_allow_ranges: Unimplemented,
    pub calculated_remotes: Unimplemented,
}

impl Default for Lighthouse {
    fn default() -> Self {
        Lighthouse {
            am_lighthouse: false,
            hosts: Vec::new(),
            interval: 10,
            serve_dns: false,
            dns: Dns::default(),
            remote_allow_list: BTreeMap::new(),
            local_allow_list: BTreeMap::new(),
            advertise_addrs: Vec::new(),
            remote_allow_ranges: None,
            calculated_remotes: None,
        }
    }
}

/// One `local_allow_list` value: a CIDR's verdict, or the `interfaces` regex map.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum AllowEntry {
    Allow(bool),
    Interfaces(BTreeMap<String, bool>),
}

/// `lighthouse.dns`: where a lighthouse serves DNS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    pub host: IpAddr,
    #[serde(deserialize_with = "dns_port")]
    pub port: u16,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 53,
        }
    }
}

/// `listen`: the underlay UDP socket.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Address to bind; `0.0.0.0` (default) or `[::]` for dual stack.
    #[serde(deserialize_with = "listen_host")]
    pub host: IpAddr,
    /// UDP port; 0 picks a random one (useful for roaming clients).
    #[serde(deserialize_with = "listen_port")]
    pub port: u16,
    /// Datagrams per `recvmmsg`/`sendmmsg` call.
    pub batch: usize,
    /// `SO_RCVBUF(FORCE)` in bytes; unset keeps the system default.
    pub read_buffer: Option<u32>,
    /// `SO_SNDBUF(FORCE)` in bytes; unset keeps the system default.
    pub write_buffer: Option<u32>,
    pub send_recv_error: Unimplemented,
    pub accept_recv_error: Unimplemented,
    pub so_mark: Unimplemented,
    pub udp_offloads: Unimplemented,
    pub routines: Unimplemented,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 4242,
            batch: 64,
            read_buffer: None,
            write_buffer: None,
            send_recv_error: None,
            accept_recv_error: None,
            so_mark: None,
            udp_offloads: None,
            routines: None,
        }
    }
}

fn listen_port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    port(d, "listen.port")
}

fn dns_port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    port(d, "lighthouse.dns.port")
}

/// A port, with an error naming the field (serde's own says only "invalid u16").
fn port<'de, D: Deserializer<'de>>(d: D, field: &str) -> Result<u16, D::Error> {
    let n = i64::deserialize(d)?;
    u16::try_from(n).map_err(|_| {
        de::Error::custom(format!(
            "{field} {n} is out of range: a UDP port is 0-65535"
        ))
    })
}

fn listen_host<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    let s = String::deserialize(d)?;
    let bare = s.trim().trim_start_matches('[').trim_end_matches(']');
    bare.parse().map_err(|_| {
        de::Error::custom(format!("{s:?} is not an IP address (e.g. 0.0.0.0 or [::])"))
    })
}

/// `punchy`: NAT hole punching.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Punchy {
    /// Send keepalive punches on idle tunnels.
    pub punch: bool,
    /// Punch back toward a peer that could not reach us.
    pub respond: bool,
    pub delay: GoDuration,
    pub respond_delay: GoDuration,
    pub target_all_remotes: Unimplemented,
}

impl Default for Punchy {
    fn default() -> Self {
        Punchy {
            punch: false,
            respond: false,
            delay: GoDuration(Duration::from_secs(1)),
            respond_delay: GoDuration(Duration::from_secs(5)),
            target_all_remotes: None,
        }
    }
}

/// `relay`: relaying through a third node when no direct path works.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Relay {
    /// Overlay IPs of relays that may relay for this node.
    #[serde(deserialize_with = "nullable")]
    pub relays: Vec<Ipv4Addr>,
    pub am_relay: bool,
    pub use_relays: bool,
}

impl Default for Relay {
    fn default() -> Self {
        Relay {
            relays: Vec::new(),
            am_relay: false,
            use_relays: true,
        }
    }
}

/// `tun`: the overlay interface.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tun {
    /// Run without a TUN device (a lighthouse or relay that carries no traffic of its own).
    pub disabled: bool,
    pub dev: String,
    /// 1420 by default, not Nebula's 1300: Nomad's Serf gossip sends up to 1400-byte datagrams,
    /// which must not fragment. 1420 + 32 (WireGuard) + 28 (UDP/IPv4) = 1480 < 1500.
    pub mtu: u32,
    pub tx_queue: u32,
    #[serde(deserialize_with = "nullable")]
    pub routes: Vec<TunRoute>,
    #[serde(deserialize_with = "nullable")]
    pub unsafe_routes: Vec<UnsafeRoute>,
    pub drop_local_broadcast: Unimplemented,
    pub drop_multicast: Unimplemented,
    pub use_system_route_table: Unimplemented,
    pub use_offloads: Unimplemented,
    pub pin_threads: Unimplemented,
    pub cpu_affinity: Unimplemented,
    pub routines: Unimplemented,
}

impl Default for Tun {
    fn default() -> Self {
        Tun {
            disabled: false,
            dev: "nebula1".to_string(),
            mtu: 1420,
            tx_queue: 500,
            routes: Vec::new(),
            unsafe_routes: Vec::new(),
            drop_local_broadcast: None,
            drop_multicast: None,
            use_system_route_table: None,
            use_offloads: None,
            pin_threads: None,
            cpu_affinity: None,
            routines: None,
        }
    }
}

/// `tun.routes[]`: a route inside the overlay with its own MTU.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunRoute {
    pub route: Ipv4Net,
    pub mtu: u32,
}

/// `tun.unsafe_routes[]`: a network outside the overlay reached through the node `via`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsafeRoute {
    pub route: Ipv4Net,
    pub via: Ipv4Addr,
    pub mtu: Option<u32>,
    pub metric: Option<u32>,
    #[serde(default = "yes")]
    pub install: bool,
}

fn yes() -> bool {
    true
}

/// `logging`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Logging {
    pub level: LogLevel,
    pub format: LogFormat,
    pub disable_timestamp: Unimplemented,
    pub timestamp_format: Unimplemented,
}

/// Log levels as Nebula (logrus) names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Panic,
    Fatal,
    Error,
    #[serde(alias = "warn")]
    Warning,
    #[default]
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `handshakes`: retry schedule for a handshake that gets no answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Handshakes {
    pub try_interval: GoDuration,
    pub retries: u32,
    pub trigger_buffer: Unimplemented,
    pub query_buffer: Unimplemented,
}

impl Default for Handshakes {
    fn default() -> Self {
        Handshakes {
            try_interval: GoDuration(Duration::from_millis(100)),
            retries: 10,
            trigger_buffer: None,
            query_buffer: None,
        }
    }
}

/// `control`: the local socket `cos-mesh status` / `members` talk to (cos-mesh's own key).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Control {
    pub socket: PathBuf,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            socket: PathBuf::from("/run/cos-mesh/control.sock"),
        }
    }
}

/// `stats`: metrics export. Only Prometheus is implemented.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Stats {
    #[serde(rename = "type")]
    pub kind: Option<StatsKind>,
    /// `host:port` the Prometheus endpoint listens on.
    pub listen: Option<String>,
    pub path: String,
    pub namespace: Unimplemented,
    pub subsystem: Unimplemented,
    pub interval: Unimplemented,
    pub message_metrics: Unimplemented,
    pub lighthouse_metrics: Unimplemented,
    pub prefix: Unimplemented,
    pub protocol: Unimplemented,
    pub host: Unimplemented,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            kind: None,
            listen: None,
            path: "/metrics".to_string(),
            namespace: None,
            subsystem: None,
            interval: None,
            message_metrics: None,
            lighthouse_metrics: None,
            prefix: None,
            protocol: None,
            host: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatsKind {
    Prometheus,
    /// Accepted for Nebula compatibility; warned about and not exported.
    Graphite,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn underlay_addresses() {
        let ok = [
            ("198.18.0.1:4242", "198.18.0.1:4242"),
            ("[2001:db8::1]:4242", "[2001:db8::1]:4242"),
            ("lighthouse.example.net:4242", "lighthouse.example.net:4242"),
            (" lh1:1 ", "lh1:1"),
        ];
        for (input, shown) in ok {
            assert_eq!(
                input.parse::<Underlay>().map(|u| u.to_string()),
                Ok(shown.to_string()),
                "{input}"
            );
        }
        for bad in [
            "198.18.0.1",
            "198.18.0.1:0",
            "198.18.0.1:70000",
            "300.1.1.1:4242",
            "bad host:1",
            ":4242",
            "[::1:4242",
        ] {
            let err = bad.parse::<Underlay>().unwrap_err();
            assert!(err.contains("is not an underlay address"), "{bad}: {err}");
        }
    }

    #[test]
    fn pem_source_never_prints_inline_key() {
        let s = PemSource::Inline("-----BEGIN NEBULA X25519 PRIVATE KEY-----\nSECRET\n".into());
        assert!(!format!("{s:?}").contains("SECRET"));
        assert_eq!(s.describe(), "inline PEM");
    }
}
