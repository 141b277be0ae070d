//! What `cos-mesh status` and `members` show: typed reports the daemon builds from the core's
//! snapshot and the CLI reads back, so both sides agree on every field. `schema_version` goes
//! up when a field changes meaning or disappears (adding one does not).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::mesh::{Node, Path, PeerInfo, Registered};
use crate::unixtime::UnixTime;

use super::policy::FirewallPolicy;

/// Version of the JSON shape of [`StatusReport`] and [`MembersReport`].
pub const SCHEMA_VERSION: u32 = 1;

/// `cos-mesh status`: this node, its peers, its lighthouses, its counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub schema_version: u32,
    /// When the daemon answered (RFC 3339, UTC).
    pub generated_at: String,
    pub node: NodeReport,
    pub peers: Vec<PeerReport>,
    pub lighthouses: Vec<LighthouseReport>,
    /// The core's event and drop counters by name.
    pub counters: BTreeMap<String, u64>,
    pub io: IoReport,
    pub firewall: FirewallReport,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeReport {
    pub name: String,
    /// The node's identity: its certificate's first IPv4 network's address, or its first
    /// network's when it has only IPv6 ones.
    pub vpn_ip: IpAddr,
    pub overlay: String,
    /// The certificate's IPv6 networks (a dual-stack node), e.g. `fd00::1/64`.
    #[serde(default)]
    pub ipv6: Vec<String>,
    pub groups: Vec<String>,
    pub cert_not_after: String,
    pub cert_fingerprint: String,
    pub listen: SocketAddr,
    pub tun: String,
    pub lighthouse: bool,
    /// The daemon's cos-mesh version.
    pub version: String,
    pub started_at: String,
    pub uptime_secs: u64,
}

/// One peer with a verified certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerReport {
    pub name: String,
    /// The peer's identity (see [`NodeReport::vpn_ip`]).
    pub vpn_ip: IpAddr,
    /// The peer's IPv6 overlay addresses (from its certificate).
    #[serde(default)]
    pub ipv6: Vec<Ipv6Addr>,
    pub groups: Vec<String>,
    pub up: bool,
    /// The underlay address packets go to when the path is direct.
    pub direct: Option<SocketAddr>,
    /// The overlay address of the relay when the path goes through one.
    pub relay: Option<IpAddr>,
    /// The relay's certificate name, when it is one of our peers.
    pub relay_name: Option<String>,
    /// The path as one string (`ip:port` or `via relay X`); kept for scripts written against
    /// schema 0, prefer `direct`/`relay`.
    pub endpoint: Option<String>,
    pub relayed: bool,
    pub since_handshake_secs: Option<u64>,
    /// Round-trip time in milliseconds (microsecond precision), when measured: the last path
    /// probe while traffic flows directly, else the last handshake we started.
    pub rtt_ms: Option<f64>,
    /// Seconds since the session came up (rekeys keep it up); none while it is down.
    pub tunnel_up_secs: Option<u64>,
    /// Seconds since the last authenticated datagram from the peer.
    pub last_rx_secs_ago: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Packets from or to this peer dropped, by reason.
    pub drops: BTreeMap<String, u64>,
    /// The same as `drops["firewall"]`, kept for scripts written against schema 0.
    pub firewall_dropped: u64,
    pub cert_fingerprint: String,
    pub cert_not_after: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LighthouseReport {
    /// The lighthouse as `lighthouse.hosts` lists it.
    pub vpn_ip: IpAddr,
    pub name: Option<String>,
    pub up: bool,
    /// Where we send to it (underlay `ip:port` or `via relay X`), when known.
    pub address: Option<String>,
    /// Why it is not reachable, in words; none when it is.
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IoReport {
    pub tx_dropped: u64,
    pub tun_write_errors: u64,
    /// Datagrams that arrived on established peers' own receive sockets (so not behind a flood
    /// in the listening socket's queue), and how many peers have one now.
    #[serde(default)]
    pub rx_peer_socket_datagrams: u64,
    #[serde(default)]
    pub peer_sockets: usize,
    /// Each data-path worker's share (worker 0 first); empty with one worker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerIo>,
}

impl IoReport {
    /// From the data path's counters summed over the workers, and each worker's.
    pub fn new(totals: &super::datapath::Counters, each: &[super::worker::WorkerStats]) -> IoReport {
        IoReport {
            tx_dropped: totals.tx_dropped,
            tun_write_errors: totals.tun_write_errors,
            rx_peer_socket_datagrams: totals.udp_datagrams_peer_sockets,
            peer_sockets: each.iter().map(|w| w.peer_sockets).sum(),
            workers: if each.len() > 1 {
                each.iter()
                    .map(|w| WorkerIo {
                        tun_packets_read: w.counters.tun_segments,
                        udp_datagrams_received: w.counters.udp_datagrams_received,
                        udp_datagrams_sent: w.counters.udp_datagrams_sent,
                        tun_packets_written: w.counters.tun_packets_written,
                        peer_sockets: w.peer_sockets,
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}

/// What one data-path worker carried (workers other than the main thread publish theirs once
/// a second).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerIo {
    pub tun_packets_read: u64,
    pub udp_datagrams_received: u64,
    pub udp_datagrams_sent: u64,
    pub tun_packets_written: u64,
    pub peer_sockets: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FirewallReport {
    pub rules_version: u16,
    pub conntrack_entries: usize,
    pub counters: BTreeMap<String, u64>,
}

/// `cos-mesh members`: every member of the mesh this node knows of.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembersReport {
    pub schema_version: u32,
    pub generated_at: String,
    /// The node answering (its overlay IP), so a picture can draw edges from it.
    pub this_node: IpAddr,
    pub members: Vec<MemberReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberReport {
    pub name: String,
    /// The member's identity (see [`NodeReport::vpn_ip`]).
    pub vpn_ip: IpAddr,
    pub groups: Vec<String>,
    /// `online` (a session is up), `offline` (a session was tried and is down), or `unknown`
    /// (listed by a lighthouse, no session from this node).
    pub state: MemberState,
    /// Seconds since this node last completed a handshake with the member.
    pub last_seen_secs: Option<u64>,
    /// Underlay addresses this node uses for the member.
    pub underlay: Vec<SocketAddr>,
    /// Overlay IP of the relay through which this node reaches the member.
    pub relay: Option<IpAddr>,
    /// On a lighthouse: the underlay addresses the member registered.
    #[serde(default)]
    pub registered_underlay: Vec<SocketAddr>,
    /// On a lighthouse: seconds since the member last registered; none if it never did.
    pub registered_secs_ago: Option<u64>,
    /// The member's IPv6 overlay addresses (from its certificate); empty from older daemons.
    #[serde(default)]
    pub ipv6: Vec<Ipv6Addr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// This node itself.
    This,
    Online,
    Offline,
    Unknown,
}

/// When the daemon started, for its uptime.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    pub at: Instant,
    pub wall: UnixTime,
}

impl Started {
    pub fn now() -> Started {
        Started { at: Instant::now(), wall: UnixTime::now() }
    }
}

/// Everything of the daemon's own the status report needs beyond the core.
pub struct DaemonFacts<'a> {
    pub listen: SocketAddr,
    pub tun: &'a str,
    pub io: IoReport,
    pub started: Started,
    /// `static_host_map` as configured: where a lighthouse without a session is looked for.
    pub static_hosts: &'a super::setup::StaticHostMap,
}

/// Builds the status report from the core's snapshot.
pub fn status(node: &mut Node<FirewallPolicy>, now: Instant, facts: DaemonFacts<'_>) -> StatusReport {
    let cert = node.cert().clone();
    let d = cert.details();
    let infos = node.peers(now);
    let names: BTreeMap<IpAddr, &str> = infos.iter().map(|p| (p.vpn_ip, p.name.as_str())).collect();
    let peers: Vec<PeerReport> = infos
        .iter()
        .map(|p| PeerReport {
            ipv6: v6_addrs(node.peer_networks(p.vpn_ip).unwrap_or_default()),
            ..peer_report(p, &names)
        })
        .collect();
    let lighthouses = node
        .lighthouse_status()
        .into_iter()
        .map(|(ip, up)| {
            let configured = facts.static_hosts.get(&crate::config::OverlayIp(ip));
            let configured: Vec<String> = configured.into_iter().flatten().map(|u| u.to_string()).collect();
            let peer = peers.iter().find(|p| p.vpn_ip == ip || p.ipv6.iter().any(|a| IpAddr::V6(*a) == ip));
            lighthouse_report(ip, up, peer, &configured)
        })
        .collect();
    let counters = named_counters(&serde_json::to_value(node.counters()).unwrap_or_default());
    let fw = &node.policy_mut().fw;
    let firewall = FirewallReport {
        rules_version: fw.rules_version(),
        conntrack_entries: fw.conntrack().len(),
        counters: fw.counters().snapshot().iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    };
    StatusReport {
        schema_version: SCHEMA_VERSION,
        generated_at: UnixTime::now().rfc3339(),
        node: NodeReport {
            name: d.name.clone(),
            vpn_ip: node.vpn_ip(),
            overlay: node.vpn_net().to_string(),
            ipv6: cert.networks().iter().filter(|n| n.addr().is_ipv6()).map(|n| n.to_string()).collect(),
            groups: d.groups.clone(),
            cert_not_after: d.not_after.rfc3339(),
            cert_fingerprint: cert.fingerprint().to_string(),
            listen: facts.listen,
            tun: facts.tun.to_string(),
            lighthouse: node.is_lighthouse(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: facts.started.wall.rfc3339(),
            uptime_secs: now.saturating_duration_since(facts.started.at).as_secs(),
        },
        peers,
        lighthouses,
        counters,
        io: facts.io,
        firewall,
    }
}

/// A peer's path as the report's two fields: the direct underlay address, or the relay.
fn split_path(path: Option<Path>) -> (Option<SocketAddr>, Option<IpAddr>) {
    match path {
        Some(Path::Direct(a)) => (Some(a), None),
        Some(Path::Relay { relay, .. }) => (None, Some(relay)),
        None => (None, None),
    }
}

/// The IPv6 addresses among a certificate's networks.
fn v6_addrs(networks: &[ipnet::IpNet]) -> Vec<Ipv6Addr> {
    networks
        .iter()
        .filter_map(|n| match n.addr() {
            IpAddr::V6(ip) => Some(ip),
            IpAddr::V4(_) => None,
        })
        .collect()
}

fn peer_report(p: &PeerInfo, names: &BTreeMap<IpAddr, &str>) -> PeerReport {
    let (direct, relay) = split_path(p.path);
    PeerReport {
        name: p.name.clone(),
        vpn_ip: p.vpn_ip,
        ipv6: vec![],
        groups: p.groups.clone(),
        up: p.up,
        direct,
        relay,
        relay_name: relay.and_then(|r| names.get(&r)).map(|n| n.to_string()),
        endpoint: p.endpoint.clone(),
        relayed: p.relayed,
        since_handshake_secs: p.since_handshake_secs,
        // Rounded to the microsecond: finer is noise, and the JSON stays short.
        rtt_ms: p.rtt.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3),
        tunnel_up_secs: p.tunnel_age.map(|d| d.as_secs()),
        last_rx_secs_ago: p.last_rx_ago.map(|d| d.as_secs()),
        rx_bytes: p.rx_bytes,
        tx_bytes: p.tx_bytes,
        rx_packets: p.rx_packets,
        tx_packets: p.tx_packets,
        drops: BTreeMap::from([("firewall".to_string(), p.firewall_dropped)]),
        firewall_dropped: p.firewall_dropped,
        cert_fingerprint: p.cert_fingerprint.clone(),
        cert_not_after: p.cert_not_after.clone(),
    }
}

fn lighthouse_report(vpn_ip: IpAddr, up: bool, peer: Option<&PeerReport>, configured: &[String]) -> LighthouseReport {
    let tried = if configured.is_empty() {
        "it has no static_host_map entry".to_string()
    } else {
        format!("tried at {} (static_host_map)", configured.join(", "))
    };
    let problem = match (up, peer) {
        (true, _) => None,
        (false, None) => Some(format!(
            "no handshake has completed with it; {tried}: is it running, is that address right, does a firewall \
             drop UDP to it?"
        )),
        (false, Some(p)) => Some(match p.since_handshake_secs {
            Some(s) => format!("its session went down; last handshake {} ago, retrying; {tried}", human_secs(s)),
            None => format!("its certificate is known but no session is up; retrying; {tried}"),
        }),
    };
    LighthouseReport {
        vpn_ip,
        name: peer.map(|p| p.name.clone()),
        up,
        address: peer
            .and_then(|p| p.endpoint.clone())
            .or_else(|| (!configured.is_empty()).then(|| configured.join(", "))),
        problem,
    }
}

/// The core's counters (a struct of named `u64`s) as a name → value map.
fn named_counters(v: &serde_json::Value) -> BTreeMap<String, u64> {
    v.as_object().into_iter().flatten().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))).collect()
}

/// Builds the members report: the core's member list, with what this node knows of each.
pub fn members(node: &Node<FirewallPolicy>, now: Instant, listen: SocketAddr) -> MembersReport {
    let peers: BTreeMap<IpAddr, PeerInfo> = node.peers(now).into_iter().map(|p| (p.vpn_ip, p)).collect();
    let registered: BTreeMap<IpAddr, Registered> = node.registrations(now).into_iter().map(|r| (r.vpn_ip, r)).collect();
    let me = node.vpn_ip();
    let members = node
        .members()
        .iter()
        .map(|c| {
            let vpn_ip = c.identity().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            let peer = peers.get(&vpn_ip);
            let (direct, relay) = split_path(peer.and_then(|p| p.path));
            let reg = registered.get(&vpn_ip);
            let state = match peer {
                _ if vpn_ip == me => MemberState::This,
                Some(p) if p.up => MemberState::Online,
                Some(_) => MemberState::Offline,
                None => MemberState::Unknown,
            };
            MemberReport {
                name: c.name().to_string(),
                vpn_ip,
                groups: c.details().groups.clone(),
                state,
                last_seen_secs: if vpn_ip == me { Some(0) } else { peer.and_then(|p| p.since_handshake_secs) },
                underlay: if vpn_ip == me { vec![listen] } else { direct.into_iter().collect() },
                relay,
                registered_underlay: reg.map(|r| r.underlay.clone()).unwrap_or_default(),
                registered_secs_ago: reg.map(|r| r.ago.as_secs()),
                ipv6: v6_addrs(c.networks()),
            }
        })
        .collect();
    MembersReport { schema_version: SCHEMA_VERSION, generated_at: UnixTime::now().rfc3339(), this_node: me, members }
}

/// `3 s`, `4 min`, `2 h 5 min`, `3 d 4 h`: a span for people.
pub fn human_secs(s: u64) -> String {
    match s {
        s if s < 120 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `2s`, `3m12s`, `1h05m`, `2d03h`: a compact span for the per-peer details.
pub fn short_secs(s: u64) -> String {
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `0.4 ms`, `12 ms`: a round trip for people (one decimal below 10 ms).
pub fn human_ms(ms: f64) -> String {
    if ms < 10.0 { format!("{ms:.1} ms") } else { format!("{ms:.0} ms") }
}

/// `512 B`, `1.5 KiB`, `3.2 MiB`: a byte count for people.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_direct_and_relay() {
        let a: SocketAddr = "198.18.0.1:4242".parse().unwrap();
        assert_eq!(split_path(Some(Path::Direct(a))), (Some(a), None));
        let relay = IpAddr::V4(Ipv4Addr::new(100, 64, 0, 1));
        let peer = IpAddr::V6("fd00::2".parse().unwrap());
        assert_eq!(split_path(Some(Path::Relay { relay, peer })), (None, Some(relay)));
        assert_eq!(split_path(None), (None, None));
    }

    #[test]
    fn units_for_people() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
        assert_eq!(human_secs(59), "59 s");
        assert_eq!(human_secs(600), "10 min");
        assert_eq!(human_secs(3 * 3600 + 120), "3 h 2 min");
        assert_eq!(human_secs(2 * 86_400 + 3600), "2 d 1 h");
        assert_eq!(short_secs(2), "2s");
        assert_eq!(short_secs(192), "3m12s");
        assert_eq!(short_secs(3900), "1h05m");
        assert_eq!(short_secs(2 * 86_400 + 3 * 3600), "2d03h");
        assert_eq!(human_ms(0.412), "0.4 ms");
        assert_eq!(human_ms(23.6), "24 ms");
    }
}
