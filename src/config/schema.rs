//! The node configuration's shape: Nebula's `config.yml` keys wherever the concept is the same,
//! with cos-mesh's defaults. Every section rejects keys it does not know
//! (`deny_unknown_fields`), so a typo fails loudly instead of silently keeping a default; Nebula
//! keys that cos-mesh does not implement yet are declared as [`Unimplemented`] so they parse and
//! [`super::compat`] can warn about them.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, de};

pub use super::values::{AdvertiseAddr, Gateway, GoDuration, OverlayIp, PemSource, Underlay, UnderlayHost, Via};

/// The `firewall` section, validated here (unknown keys are errors with file and line); the
/// daemon compiles it from each file again to keep every rule's `file:line`.
pub type FirewallSection = crate::firewall::FirewallConfig;

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
    /// Overlay address (IPv4, or IPv6 of a dual-stack certificate) → underlay addresses
    /// (`host:port`, `[2001:db8::1]:4242`, DNS names allowed) of a few hosts.
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
    /// Data-path workers, each with its own TUN queue and listening socket (Nebula's key);
    /// unset means 1. See [`Config::routines`].
    pub routines: Option<usize>,
    // Nebula top-level keys accepted with a warning (see `compat`).
    pub cipher: Unimplemented,
    pub sshd: Unimplemented,
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
    /// With a v1 and a v2 certificate in `pki.cert`: which one this node presents (1 or 2).
    /// Default as in Nebula: 1 when a v1 certificate is present, else 2.
    pub initiating_version: Option<u64>,
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

/// `lighthouse`: discovery. Parsed now; acted on by the discovery issue.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lighthouse {
    pub am_lighthouse: bool,
    /// Overlay addresses of the lighthouses, IPv4 or IPv6 (each must be in `static_host_map`).
    #[serde(deserialize_with = "nullable")]
    pub hosts: Vec<IpAddr>,
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
    /// Extra underlay addresses to report (`host:port`; port 0 is `listen.port`).
    #[serde(deserialize_with = "nullable")]
    pub advertise_addrs: Vec<AdvertiseAddr>,
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
    /// cos-mesh extension: the zone of `<group>.<zone>` and `<name>.<zone>` records.
    pub zone: String,
}

impl Default for Dns {
    fn default() -> Self {
        Dns { host: IpAddr::V4(Ipv4Addr::UNSPECIFIED), port: 53, zone: crate::dns::DEFAULT_ZONE.to_string() }
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
    /// `SO_RCVBUF(FORCE)` in bytes; unset asks for 4 MiB.
    pub read_buffer: Option<u32>,
    /// `SO_SNDBUF(FORCE)` in bytes; unset asks for 4 MiB.
    pub write_buffer: Option<u32>,
    pub send_recv_error: Unimplemented,
    pub accept_recv_error: Unimplemented,
    pub so_mark: Unimplemented,
    /// UDP segmentation (GSO) and receive (GRO) offloads: runs of equal-size datagrams to one
    /// peer leave in one system call and arrive in one. On by default where the kernel has
    /// them; `false` sends and receives one datagram per slot.
    pub udp_offloads: bool,
    pub routines: Unimplemented,
    pub windows_bypass_wdf: Unimplemented,
    pub rebind_on_network_change: Unimplemented,
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
            udp_offloads: true,
            routines: None,
            windows_bypass_wdf: None,
            rebind_on_network_change: None,
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
    u16::try_from(n).map_err(|_| de::Error::custom(format!("{field} {n} is out of range: a UDP port is 0-65535")))
}

fn listen_host<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    let s = String::deserialize(d)?;
    let bare = s.trim().trim_start_matches('[').trim_end_matches(']');
    bare.parse().map_err(|_| de::Error::custom(format!("{s:?} is not an IP address (e.g. 0.0.0.0 or [::])")))
}

/// `punchy`: NAT hole punching. Same keys as Nebula, different defaults: cos-mesh exists to join
/// environments behind NAT, so punching and punch-back are on, and the delays are short enough
/// that the first packet to a never-seen peer across two NATs arrives in well under a second
/// (Nebula: off, off, 1s, 5s).
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
            punch: true,
            respond: true,
            delay: GoDuration(Duration::from_millis(100)),
            respond_delay: GoDuration(Duration::from_millis(500)),
            target_all_remotes: None,
        }
    }
}

/// `relay`: relaying through a third node when no direct path works.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Relay {
    /// Overlay addresses of relays that may relay for this node, IPv4 or IPv6.
    #[serde(deserialize_with = "nullable")]
    pub relays: Vec<IpAddr>,
    pub am_relay: bool,
    pub use_relays: bool,
}

impl Default for Relay {
    fn default() -> Self {
        Relay { relays: Vec::new(), am_relay: false, use_relays: true }
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
    /// TSO/checksum offloads on the device (`IFF_VNET_HDR`): the kernel hands over TCP
    /// super-packets, split into segments only for encryption. On by default where the kernel
    /// has them; `false` reads and writes one packet per call.
    pub use_offloads: bool,
    pub pin_threads: Unimplemented,
    pub cpu_affinity: Unimplemented,
    pub routines: Unimplemented,
    pub network_category: Unimplemented,
    pub windows_bypass_wdf: Unimplemented,
    pub use_system_route_table_buffer_size: Unimplemented,
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
            use_offloads: true,
            pin_threads: None,
            cpu_affinity: None,
            routines: None,
            network_category: None,
            windows_bypass_wdf: None,
            use_system_route_table_buffer_size: None,
        }
    }
}

/// `tun.routes[]`: a route inside the overlay with its own MTU.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunRoute {
    /// IPv4 or IPv6 (the latter with a v2 certificate's IPv6 network).
    pub route: IpNet,
    pub mtu: u32,
}

/// `tun.unsafe_routes[]`: a network outside the overlay reached through the node `via`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsafeRoute {
    /// IPv4 or IPv6.
    pub route: IpNet,
    /// One gateway, or several with weights; all traffic goes through [`Via::primary`].
    pub via: Via,
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

/// `control`: the local socket `cos-mesh status` / `members` / `reload` talk to (cos-mesh's own
/// key). Unset, it is the abstract socket `@cos-mesh/<tun.dev>`: abstract sockets belong to a
/// network namespace, so one config runs unchanged in several namespaces, and two daemons in
/// one namespace cannot share a TUN device, so they never share a socket either. A value
/// starting with `@` names another abstract socket; anything else is a filesystem path.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Control {
    pub socket: Option<PathBuf>,
}

/// Where a daemon's control socket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlAddr {
    /// A socket file (mode 0600).
    Path(PathBuf),
    /// A name in the network namespace's abstract socket namespace (no file; `@name`).
    Abstract(String),
}

impl ControlAddr {
    /// The default for the daemon owning TUN device `dev`.
    pub fn for_tun(dev: &str) -> ControlAddr {
        ControlAddr::Abstract(format!("cos-mesh/{dev}"))
    }
}

impl From<PathBuf> for ControlAddr {
    /// `@name` is an abstract socket, anything else a path.
    fn from(p: PathBuf) -> ControlAddr {
        match p.to_str().and_then(|s| s.strip_prefix('@')) {
            Some(name) => ControlAddr::Abstract(name.to_string()),
            None => ControlAddr::Path(p),
        }
    }
}

impl From<&std::path::Path> for ControlAddr {
    fn from(p: &std::path::Path) -> ControlAddr {
        ControlAddr::from(p.to_path_buf())
    }
}

impl From<&PathBuf> for ControlAddr {
    fn from(p: &PathBuf) -> ControlAddr {
        ControlAddr::from(p.clone())
    }
}

impl From<&ControlAddr> for ControlAddr {
    fn from(a: &ControlAddr) -> ControlAddr {
        a.clone()
    }
}

impl std::fmt::Display for ControlAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlAddr::Path(p) => write!(f, "{}", p.display()),
            ControlAddr::Abstract(name) => write!(f, "@{name}"),
        }
    }
}

impl Config {
    /// `lighthouse.local_allow_list`, compiled (validation has refused a bad one).
    pub fn local_allow_list(&self) -> super::LocalAllowList {
        super::LocalAllowList::new(&self.lighthouse.local_allow_list).unwrap_or_default()
    }

    /// The control socket: `control.socket`, or `@cos-mesh/<tun.dev>`.
    pub fn control_socket(&self) -> ControlAddr {
        self.control.socket.clone().map(ControlAddr::from).unwrap_or_else(|| ControlAddr::for_tun(&self.tun.dev))
    }

    /// Data-path workers (`routines`, 1 unless set; validation keeps it in 1-[`MAX_ROUTINES`]).
    pub fn routines(&self) -> usize {
        self.routines.unwrap_or(1)
    }
}

/// The most `routines` a node takes: far more than the cores a data path can use.
pub const MAX_ROUTINES: usize = 64;

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
