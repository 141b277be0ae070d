//! Per-peer state: its verified certificate, its WireGuard session and how to reach it.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::event::SessionEnd;
use super::path_check::{self, PathAction, PathCheck};
use super::session::Session;
use super::wire::{self, WgType};
use crate::cert::pool::VerifiedCert;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Tunn, TunnResult};

/// Candidate underlay addresses kept per peer.
const MAX_CANDIDATES: usize = 8;
/// A direct path heard from this recently keeps the peer's traffic when the peer's datagrams
/// also arrive through a relay (a handshake copy sent on every path, say).
const DIRECT_STAYS_FRESH: Duration = Duration::from_secs(15);
/// How long our own fast retries of an initiation run (boringtun then retries every 5 s).
pub(super) const FAST_RETRY_FOR: Duration = Duration::from_secs(5);

/// What one timer tick of a peer asks of the node: each field is work only the node can do
/// (sending, events, counters), decided from the peer's own state in [`Peer::tick`].
#[derive(Debug, Default)]
pub(super) struct TickDue {
    /// A datagram boringtun formatted: a keepalive, or a new initiation (rekey, retry).
    pub datagram: Option<Vec<u8>>,
    /// boringtun expired the session, and how it ended is worth an event.
    pub ended: Option<SessionEnd>,
    /// The direct-path check's verdict.
    pub path: PathAction,
    /// Our fast retry of the initiation in flight is due.
    pub retry: bool,
}

impl TickDue {
    fn is_empty(&self) -> bool {
        self.datagram.is_none() && self.ended.is_none() && self.path == PathAction::Nothing && !self.retry
    }
}

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

    /// One timer tick: boringtun's timers (keepalives, rekeys, expiry), the direct-path check
    /// and our fast initiation retries, decided from this peer's state alone. `None`: nothing
    /// for the node to do.
    pub fn tick(&mut self, now: Instant, buf: &mut [u8], try_interval: Duration) -> Option<TickDue> {
        let mut due = TickDue::default();
        match self.tunn.update_timers(buf) {
            TunnResult::WriteToNetwork(d) => due.datagram = Some(d.to_vec()),
            TunnResult::Err(WireGuardError::ConnectionExpired) => due.ended = self.session.expired(now),
            _ => {}
        }
        if self.session.is_up() {
            due.path = self.path_check.on_tick(now, self.endpoint, self.tx_packets);
        }
        // A new initiation from boringtun replaces the one in flight (and its retries).
        let new_init = due.datagram.as_deref().is_some_and(wire::is_handshake_init);
        if !new_init && let Some(init) = self.session.init_mut() {
            if now.duration_since(init.sent) >= FAST_RETRY_FOR {
                self.session.stop_fast_retries();
            } else if now >= init.next {
                init.retries += 1;
                init.next = now + try_interval * (init.retries + 1);
                due.retry = true;
            }
        }
        (!due.is_empty()).then_some(due)
    }

    /// An authenticated datagram of type `msg` came from the peer over `from` (`allowed`: the
    /// address passes `lighthouse.remote_allow_list`). Roaming: the last path wins, but a relay
    /// does not displace a direct path heard from recently, and a direct address whose probe
    /// went unanswered does not win traffic back by being heard from. Returns the endpoint the
    /// peer roamed away from, if it did.
    pub fn heard_from(&mut self, now: Instant, from: Path, msg: WgType, allowed: bool) -> Option<Path> {
        self.last_rx = Some(now);
        if let Path::Direct(a) = from {
            self.last_direct_rx = Some(now);
            // Authenticated and allowed: a good address to try again later.
            if allowed {
                self.add_candidates(&[a]);
            }
        }
        let direct_fresh = self.last_direct_rx.is_some_and(|t| now.duration_since(t) < DIRECT_STAYS_FRESH);
        // The peer's data (not a handshake copy sent on every path) comes through a relay and
        // nothing came directly for a probe's timeout: the peer gave up the direct path (its
        // probe went unanswered), so ours is likely dead too. Follow it now instead of a second
        // after our own probe fails (a path lost both ways took ~3 s to leave, not ~1.5 s).
        let peer_left_direct = msg == WgType::Data
            && self.last_direct_rx.is_none_or(|t| now.duration_since(t) >= path_check::PROBE_TIMEOUT);
        let keep_direct =
            !from.is_direct() && self.endpoint.is_some_and(|e| e.is_direct()) && direct_fresh && !peer_left_direct;
        // The peer's datagrams reaching us say nothing about ours reaching it.
        let failed = matches!(from, Path::Direct(a) if !self.path_check.usable(a));
        if !allowed || self.endpoint == Some(from) || keep_direct || failed {
            return None;
        }
        self.endpoint.replace(from)
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use super::{DIRECT_STAYS_FRESH, FAST_RETRY_FOR, Path, TickDue};
    use crate::mesh::path_check::{PROBE_TIMEOUT, PathAction};
    use crate::mesh::session::InitInFlight;
    use crate::mesh::test_support::peer;
    use crate::mesh::wire::WgType;

    fn direct(s: &str) -> Path {
        Path::Direct(s.parse::<SocketAddr>().expect("addr"))
    }

    const RELAY: Path = Path::Relay {
        relay: std::net::IpAddr::V4(std::net::Ipv4Addr::new(100, 64, 0, 9)),
        peer: std::net::IpAddr::V4(std::net::Ipv4Addr::new(100, 64, 0, 2)),
    };

    #[test]
    fn the_last_direct_path_wins_and_becomes_a_candidate() {
        let mut p = peer("100.64.0.2/10");
        let t = Instant::now();
        assert_eq!(p.heard_from(t, direct("198.18.0.2:4242"), WgType::HandshakeInit, true), None, "first path");
        assert_eq!(p.endpoint, Some(direct("198.18.0.2:4242")));
        let roamed = p.heard_from(t, direct("198.18.1.2:4242"), WgType::Data, true);
        assert_eq!(roamed, Some(direct("198.18.0.2:4242")));
        assert_eq!(p.endpoint, Some(direct("198.18.1.2:4242")));
        assert_eq!(p.candidates.len(), 2);
        // An address the remote allow list refuses neither takes traffic nor is remembered.
        assert_eq!(p.heard_from(t, direct("198.19.0.2:4242"), WgType::Data, false), None);
        assert_eq!(p.endpoint, Some(direct("198.18.1.2:4242")));
        assert_eq!(p.candidates.len(), 2);
        assert_eq!(p.last_rx, Some(t));
    }

    #[test]
    fn a_relay_takes_over_only_when_the_direct_path_went_quiet() {
        let mut p = peer("100.64.0.2/10");
        let t = Instant::now();
        p.heard_from(t, direct("198.18.0.2:4242"), WgType::Data, true);
        // Data through the relay right after direct data: the peer still uses both; stay.
        assert_eq!(p.heard_from(t + Duration::from_millis(200), RELAY, WgType::Data, true), None);
        // A handshake copy through the relay while the direct path is fresh: traffic stays.
        assert_eq!(p.heard_from(t + Duration::from_secs(1), RELAY, WgType::HandshakeInit, true), None);
        // Data through the relay after a probe timeout of direct silence: the peer left it.
        let later = t + PROBE_TIMEOUT + Duration::from_millis(300);
        assert_eq!(p.heard_from(later, RELAY, WgType::Data, true), Some(direct("198.18.0.2:4242")));
        assert_eq!(p.endpoint, Some(RELAY));
        // Direct again: it wins back.
        assert_eq!(p.heard_from(later, direct("198.18.0.2:4242"), WgType::Data, true), Some(RELAY));
    }

    #[test]
    fn a_direct_path_silent_for_fifteen_seconds_gives_way_even_to_a_handshake() {
        let mut p = peer("100.64.0.2/10");
        let t = Instant::now();
        p.heard_from(t, direct("198.18.0.2:4242"), WgType::Data, true);
        let fresh = t + DIRECT_STAYS_FRESH - Duration::from_millis(1);
        assert_eq!(p.heard_from(fresh, RELAY, WgType::HandshakeInit, true), None);
        let stale = t + DIRECT_STAYS_FRESH;
        assert_eq!(p.heard_from(stale, RELAY, WgType::HandshakeInit, true), Some(direct("198.18.0.2:4242")));
        assert_eq!(p.last_rx, Some(stale));
    }

    #[test]
    fn a_direct_address_whose_probe_failed_does_not_win_traffic_back() {
        let mut p = peer("100.64.0.2/10");
        let t = Instant::now();
        let addr: SocketAddr = "198.18.0.2:4242".parse().expect("addr");
        p.heard_from(t, Path::Direct(addr), WgType::Data, true);
        p.session.confirmed(t);
        // We send; the probe goes unanswered; the tick reports the path lost.
        p.tx_packets += 1;
        let mut buf = vec![0; 256];
        let probe = p.tick(t + Duration::from_secs(1), &mut buf, Duration::from_secs(1));
        assert!(matches!(probe, Some(TickDue { path: PathAction::Probe { .. }, .. })), "{probe:?}");
        let lost = p.tick(t + Duration::from_secs(3), &mut buf, Duration::from_secs(1));
        assert!(matches!(lost, Some(TickDue { path: PathAction::Lost(a), .. }) if a == addr), "{lost:?}");
        p.endpoint = Some(RELAY);
        assert_eq!(p.heard_from(t + Duration::from_secs(4), Path::Direct(addr), WgType::Data, true), None);
        assert_eq!(p.endpoint, Some(RELAY));
    }

    #[test]
    fn fast_retries_back_off_then_stop() {
        let mut p = peer("100.64.0.2/10");
        let t = Instant::now();
        let every = Duration::from_secs(1);
        let mut buf = vec![0; 256];
        assert!(p.tick(t, &mut buf, every).is_none(), "nothing to do without a session or handshake");
        let init = InitInFlight { bytes: vec![1; 148], sent: t, retries: 0, next: t + every, direct_only: false };
        p.session.initiating(t, init);
        let at = |ms: u64| t + Duration::from_millis(ms);
        let retried =
            |p: &mut super::Peer<()>, ms: u64, buf: &mut [u8]| p.tick(at(ms), buf, every).is_some_and(|d| d.retry);
        assert!(!retried(&mut p, 500, &mut buf));
        assert!(retried(&mut p, 1_000, &mut buf), "first retry after one interval");
        assert!(!retried(&mut p, 2_000, &mut buf), "then after two more");
        assert!(retried(&mut p, 3_000, &mut buf));
        // The next would be due at 6 s; at 5 s our fast retries stop instead.
        assert!(!retried(&mut p, FAST_RETRY_FOR.as_millis() as u64, &mut buf));
        assert!(p.session.init().is_none(), "boringtun's own retries take over");
        // A peer that is not up is not probed, whatever we sent it.
        p.endpoint = Some(direct("198.18.0.2:4242"));
        p.tx_packets += 1;
        assert!(p.tick(at(6_000), &mut buf, every).is_none());
    }
}
