//! Per-peer state: its verified certificate, its WireGuard session and how to reach it.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::path_check::PathCheck;
use super::session::Session;
use crate::cert::pool::VerifiedCert;
use boringtun::noise::Tunn;

/// Candidate underlay addresses kept per peer.
const MAX_CANDIDATES: usize = 8;

/// How datagrams reach a peer: straight to an underlay address, or through a relay node's
/// tunnel (still end-to-end encrypted between the two peers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Path {
    Direct(SocketAddr),
    /// Through the node `relay` (an overlay address of it) to the peer whose identity is `peer`.
    Relay {
        relay: IpAddr,
        peer: IpAddr,
    },
}

impl Path {
    pub fn is_direct(&self) -> bool {
        matches!(self, Path::Direct(_))
    }

    /// The address to key per-source limits and cookies on.
    pub fn source_ip(&self) -> IpAddr {
        match self {
            Path::Direct(a) => a.ip(),
            Path::Relay { relay, .. } => *relay,
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Direct(a) => write!(f, "{a}"),
            Path::Relay { relay, .. } => write!(f, "via relay {relay}"),
        }
    }
}

pub(super) struct Peer<I> {
    /// Its identity: its certificate's first network, IPv4 when it has one.
    pub vpn_ip: IpAddr,
    pub name: String,
    pub public_key: [u8; 32],
    pub cert: VerifiedCert,
    pub policy_peer: I,
    /// Boxed: a `Tunn` is 11 KB (eight session slots inline), and the peer map's spare
    /// capacity (up to half of it after a resize) should cost a pointer a slot, not 11 KB.
    pub tunn: Box<Tunn>,
    /// The path the last authenticated datagram came over.
    pub endpoint: Option<Path>,
    /// Underlay addresses to try (static host map, lighthouse answers, Hello sources).
    pub candidates: Vec<SocketAddr>,
    /// Relays that serve this peer (from the lighthouse).
    pub relays: Vec<IpAddr>,
    /// Where its WireGuard session stands (our initiation in flight included).
    pub session: Session,
    pub last_rx: Option<Instant>,
    /// When the peer was created (idle peers are forgotten after a while).
    pub since: Option<Instant>,
    pub last_direct_rx: Option<Instant>,
    pub last_handshake: Option<Instant>,
    pub last_forced_handshake: Option<Instant>,
    /// Packets wait inside boringtun for a session. They leave when our handshake completes,
    /// but when the peer's handshake wins (we answered its initiation) boringtun keeps them
    /// until asked: the node asks on the first data of the new session.
    pub queued_in_session: bool,
    /// Whether our datagrams on the direct path still arrive.
    pub path_check: PathCheck,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Packets to or from this peer the firewall dropped or rejected.
    pub fw_dropped: u64,
    /// The upper 24 bits of the peer's session index, from its last handshake message: its
    /// next initiation is offered to this peer first (see `Node::by_remote_index`).
    pub remote_index: Option<u32>,
}

/// What `status` shows about a peer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerInfo {
    pub name: String,
    pub vpn_ip: IpAddr,
    pub groups: Vec<String>,
    /// `198.18.0.1:4242`, or `via relay 100.64.0.9` ([`PeerInfo::path`] as text).
    pub endpoint: Option<String>,
    /// Where datagrams to the peer go: the path the last authenticated datagram came over.
    pub path: Option<Path>,
    pub relayed: bool,
    pub up: bool,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub firewall_dropped: u64,
    pub cert_fingerprint: String,
    pub cert_not_after: String,
    /// Seconds since the last handshake, if any.
    pub since_handshake_secs: Option<u64>,
    /// Round-trip time to the peer: the last answered path probe (while traffic flows on a
    /// direct path), or boringtun's measurement of our last handshake, whichever is newer.
    pub rtt: Option<Duration>,
    /// How long the session has been up (rekeys keep it up); none while it is down.
    pub tunnel_age: Option<Duration>,
    /// How long ago the last authenticated datagram from the peer arrived.
    pub last_rx_ago: Option<Duration>,
}

impl<I> Peer<I> {
    pub fn new(cert: VerifiedCert, policy_peer: I, tunn: Tunn) -> Self {
        let d = cert.cert().details();
        Peer {
            vpn_ip: cert.cert().identity().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            name: d.name.clone(),
            public_key: d.public_key,
            cert,
            policy_peer,
            tunn: Box::new(tunn),
            endpoint: None,
            candidates: Vec::new(),
            relays: Vec::new(),
            session: Session::Handshaking { attempt: None },
            last_rx: None,
            since: None,
            last_direct_rx: None,
            last_handshake: None,
            last_forced_handshake: None,
            queued_in_session: false,
            path_check: PathCheck::default(),
            rx_bytes: 0,
            tx_bytes: 0,
            rx_packets: 0,
            tx_packets: 0,
            fw_dropped: 0,
            remote_index: None,
        }
    }

    /// Whether `src` may appear as the source of packets from this peer: one of its
    /// certificate's addresses (IPv4 or IPv6) or inside one of its unsafe networks.
    pub fn owns(&self, src: IpAddr) -> bool {
        let cert = self.cert.cert();
        cert.networks().iter().any(|n| n.addr() == src) || cert.unsafe_networks().iter().any(|n| n.contains(&src))
    }

    pub fn add_candidates(&mut self, addrs: &[SocketAddr]) {
        for a in addrs {
            if !self.candidates.contains(a) {
                if self.candidates.len() >= MAX_CANDIDATES {
                    self.candidates.remove(0);
                }
                self.candidates.push(*a);
            }
        }
    }

    /// Every path worth trying for a handshake: the current one, the direct candidates, and
    /// (when `with_relays`) each relay that serves the peer.
    pub fn paths(&self, with_relays: bool, us: IpAddr) -> Vec<Path> {
        let mut v: Vec<Path> = self.endpoint.into_iter().collect();
        for c in &self.candidates {
            if !v.contains(&Path::Direct(*c)) {
                v.push(Path::Direct(*c));
            }
        }
        if with_relays {
            for r in &self.relays {
                let p = Path::Relay { relay: *r, peer: self.vpn_ip };
                if *r != us && *r != self.vpn_ip && !v.contains(&p) {
                    v.push(p);
                }
            }
        }
        v
    }

    pub fn info(&self, now: Instant) -> PeerInfo {
        PeerInfo {
            name: self.name.clone(),
            vpn_ip: self.vpn_ip,
            groups: self.cert.cert().details().groups.clone(),
            endpoint: self.endpoint.map(|e| e.to_string()),
            path: self.endpoint,
            relayed: self.endpoint.is_some_and(|e| !e.is_direct()),
            up: self.session.is_up(),
            rx_bytes: self.rx_bytes,
            tx_bytes: self.tx_bytes,
            rx_packets: self.rx_packets,
            tx_packets: self.tx_packets,
            firewall_dropped: self.fw_dropped,
            cert_fingerprint: self.cert.cert().fingerprint().to_string(),
            cert_not_after: self.cert.cert().details().not_after.rfc3339(),
            since_handshake_secs: self.last_handshake.map(|t| now.saturating_duration_since(t).as_secs()),
            rtt: self.rtt(),
            tunnel_age: self.session.up_since().map(|t| now.saturating_duration_since(t)),
            last_rx_ago: self.last_rx.map(|t| now.saturating_duration_since(t)),
        }
    }

    /// The newer of two round-trip measurements: the last path probe's (fine-grained, while
    /// traffic flows directly) and boringtun's for our last handshake (whole milliseconds,
    /// taken about when that handshake completed).
    fn rtt(&self) -> Option<Duration> {
        let handshake = self.tunn.stats().4.map(|ms| Duration::from_millis(u64::from(ms)));
        match (self.path_check.last_rtt(), handshake) {
            (Some((_, at)), Some(hs)) if self.last_handshake.is_some_and(|h| h > at) => Some(hs),
            (Some((probe, _)), _) => Some(probe),
            (None, hs) => hs,
        }
    }
}

/// A peer we want to reach but have no certificate for yet: Hellos or lighthouse queries are
/// out, packets wait (`bool`: a control message, which bypasses the firewall).
pub(super) struct Pending {
    pub hello_id: u64,
    pub attempts: u32,
    pub next_try: Instant,
    pub queue: VecDeque<(Vec<u8>, bool)>,
}

impl Pending {
    /// `hello_id` is random (drawn by the node): replies are matched by it.
    pub fn new(now: Instant, hello_id: u64) -> Self {
        Pending { hello_id: hello_id | 1, attempts: 0, next_try: now, queue: VecDeque::new() }
    }
}
