//! `cos-mesh ping`: a request through the tunnel that the far node answers with its own
//! firewall's verdict on a hypothetical flow from us (ICMP echo, or TCP/UDP to a port), so an
//! operator learns in one command which path a peer is reached on, the round-trip time, and
//! whether the far end would let the traffic in.
//!
//! A ping that gets no answer in time is diagnosed from what the node knows at that moment:
//! no lighthouse answer, no handshake on any address, no relay reachable, or a working tunnel
//! whose peer stays silent (an older cos-mesh that does not know the message).
//!
//! The probe is only looked at: the far end's firewall evaluates its rules without creating or
//! touching connection-tracking state ([`Policy::would_pass`]). A peer learns only whether its
//! own traffic would be let in, which it could find out by sending it; requests come only
//! through authenticated tunnels and each gets one small answer.
//!
//! Outcomes are polled ([`Node::take_ping`]) rather than queued as events: the daemon holds the
//! asking client's connection and answers it when its ping ends.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::control::{Control, Framing};
use super::{Direction, Node, Path, Policy, push_unique};
use crate::packet::{Flow, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

/// Pings in flight or finished and not yet collected, at most.
const MAX_PINGS: usize = 64;
/// How long a finished ping's outcome waits to be collected before it is forgotten.
const OUTCOME_KEPT: Duration = Duration::from_secs(60);
/// The source port a probe for TCP or UDP is assumed to come from (any ephemeral port; rules
/// match the destination port).
const PROBE_SOURCE_PORT: u16 = 49_152;

/// What a ping asks the far end's firewall about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// An ICMP echo request (what `ping` sends).
    IcmpEcho,
    /// A new TCP connection to this port.
    Tcp(u16),
    /// A UDP datagram to this port.
    Udp(u16),
}

impl Probe {
    /// IP protocol number and port (0 for ICMP), as carried in the message.
    pub fn to_wire(self) -> (u8, u16) {
        match self {
            Probe::IcmpEcho => (PROTO_ICMP, 0),
            Probe::Tcp(p) => (PROTO_TCP, p),
            Probe::Udp(p) => (PROTO_UDP, p),
        }
    }

    /// The probe a message carries; `None` for a protocol this version does not know.
    pub fn from_wire(proto: u8, port: u16) -> Option<Probe> {
        match proto {
            PROTO_ICMP => Some(Probe::IcmpEcho),
            PROTO_TCP => Some(Probe::Tcp(port)),
            PROTO_UDP => Some(Probe::Udp(port)),
            _ => None,
        }
    }

    /// The flow the probe stands for, seen from the node at `local` talking to `remote`;
    /// `inbound` when `remote` opens it.
    pub fn flow(self, local: IpAddr, remote: IpAddr, inbound: bool) -> Flow {
        let (proto, port) = self.to_wire();
        let (local_port, remote_port) = match (self, inbound) {
            (Probe::IcmpEcho, _) => (0, 0),
            (_, true) => (port, PROBE_SOURCE_PORT),
            (_, false) => (PROBE_SOURCE_PORT, port),
        };
        Flow { proto, local_ip: local, remote_ip: remote, local_port, remote_port, fragment: false }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::IcmpEcho => f.write_str("ICMP echo"),
            Probe::Tcp(p) => write!(f, "TCP to port {p}"),
            Probe::Udp(p) => write!(f, "UDP to port {p}"),
        }
    }
}

/// Parses `icmp`, `4647/tcp`, `53/udp` (a port alone means TCP).
impl FromStr for Probe {
    type Err = String;

    fn from_str(s: &str) -> Result<Probe, String> {
        let s = s.trim().to_ascii_lowercase();
        if s == "icmp" {
            return Ok(Probe::IcmpEcho);
        }
        let (port, proto) = s.split_once('/').unwrap_or((&s, "tcp"));
        let port: u16 = match port.parse() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("`{port}` is not a port (expected 1 to 65535, as in 4647/tcp)")),
        };
        match proto {
            "tcp" => Ok(Probe::Tcp(port)),
            "udp" => Ok(Probe::Udp(port)),
            other => Err(format!("unknown protocol `{other}` (expected tcp or udp, as in {port}/tcp)")),
        }
    }
}

/// A firewall's answer to a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeVerdict {
    Allow,
    /// Discarded silently.
    Drop,
    /// Discarded and answered (TCP reset, ICMP unreachable).
    Reject,
}

impl ProbeVerdict {
    pub fn to_wire(self) -> u8 {
        match self {
            ProbeVerdict::Allow => 0,
            ProbeVerdict::Drop => 1,
            ProbeVerdict::Reject => 2,
        }
    }

    pub fn from_wire(b: u8) -> Option<ProbeVerdict> {
        match b {
            0 => Some(ProbeVerdict::Allow),
            1 => Some(ProbeVerdict::Drop),
            2 => Some(ProbeVerdict::Reject),
            _ => None,
        }
    }
}

/// Names one ping of [`Node::start_ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PingId(pub u64);

/// Why a ping could not start.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PingError {
    #[error("{0} is this node's own overlay IP")]
    OwnAddress(IpAddr),
    #[error("{ip} is outside this mesh's overlay network {net} (and no unsafe route leads there)")]
    NotInOverlay { ip: IpAddr, net: String },
    #[error("{MAX_PINGS} pings are already running; try again in a few seconds")]
    Busy,
}

/// The far node answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingAnswer {
    /// The peer's certificate name.
    pub name: String,
    /// The path its answer came over (none in the rare case the answer's path was not
    /// adopted, e.g. an address `lighthouse.remote_allow_list` forbids).
    pub path: Option<Path>,
    /// The relay's certificate name when the path goes through one we know.
    pub relay_name: Option<String>,
    pub rtt: Duration,
    /// The far end's firewall on the probe coming in from us.
    pub far: ProbeVerdict,
    /// Our own firewall on the probe going out to the peer.
    pub near: ProbeVerdict,
}

/// Why no answer came in time, from what the node knew when the time was up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PingFailure {
    /// No address for the peer (static_host_map) and no lighthouse configured.
    NoWayToFind,
    /// Lighthouses are configured but no tunnel to any of them is up.
    NoLighthouse { lighthouses: Vec<IpAddr> },
    /// Lighthouses are up and none answered our query: the peer has not registered.
    UnknownToLighthouses { lighthouses: Vec<IpAddr> },
    /// The relays that serve the peer were tried and none of them is reachable.
    RelayUnreachable { relays: Vec<IpAddr> },
    /// Addresses were known, nothing answered the handshake on them (punching failed) and no
    /// relay serves the peer.
    HandshakeTimedOut { addrs: Vec<SocketAddr> },
    /// The tunnel works but the peer never answered the ping: it runs a version without it.
    NoPingSupport { name: String },
}

impl fmt::Display for PingFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PingFailure::NoWayToFind => {
                f.write_str("no address known for it: it is not in static_host_map and no lighthouse is configured")
            }
            PingFailure::NoLighthouse { lighthouses } => {
                write!(f, "no lighthouse is reachable ({}), so nobody can say where it is", ip_list(lighthouses))
            }
            PingFailure::UnknownToLighthouses { lighthouses } => write!(
                f,
                "the lighthouse(s) ({}) do not know it: it has not registered (is it running? is its lighthouse setting right?)",
                ip_list(lighthouses)
            ),
            PingFailure::RelayUnreachable { relays } => write!(
                f,
                "the handshake timed out on every direct address (punching failed) and its relay(s) ({}) are unreachable",
                ip_list(relays)
            ),
            PingFailure::HandshakeTimedOut { addrs } if addrs.is_empty() => {
                f.write_str("the handshake timed out: no underlay address is known for it and no relay serves it")
            }
            PingFailure::HandshakeTimedOut { addrs } => write!(
                f,
                "the handshake timed out: nothing answered at {} (punching failed; a firewall or NAT in between?) and no relay serves it",
                addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
            PingFailure::NoPingSupport { name } => {
                write!(f, "the tunnel to {name} is up but the peer does not answer cos-mesh ping (older version?)")
            }
        }
    }
}

fn ip_list(ips: &[IpAddr]) -> String {
    ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// How a ping ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PingOutcome {
    Answered(PingAnswer),
    Failed(PingFailure),
}

/// One ping of ours.
struct Running {
    /// The peer's identity.
    target: IpAddr,
    probe: Probe,
    sent: Instant,
    deadline: Instant,
}

/// The node's pings: those waiting for an answer and those finished, until collected.
#[derive(Default)]
pub(super) struct Pings {
    running: HashMap<u64, Running>,
    /// Outcomes and when they were reached.
    done: HashMap<u64, (PingOutcome, Instant)>,
}

impl Pings {
    /// When the first running ping times out.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.running.values().map(|r| r.deadline).min()
    }
}

impl<P: Policy> Node<P> {
    /// Starts a ping of `target`: a request through the tunnel (made first if needed: lighthouse
    /// query, handshake, relay fallback) asking the far node whether its firewall would let
    /// `probe` from us in. The outcome is collected with [`Node::take_ping`] once the answer
    /// arrives or `timeout` has passed.
    pub fn start_ping(
        &mut self,
        now: Instant,
        target: IpAddr,
        probe: Probe,
        timeout: Duration,
    ) -> Result<PingId, PingError> {
        if self.id.is_own(target) {
            return Err(PingError::OwnAddress(target));
        }
        if !self.id.networks().iter().any(|n| n.contains(&target)) {
            let net = self.id.networks().iter().map(|n| n.trunc().to_string()).collect::<Vec<_>>().join(", ");
            return Err(PingError::NotInOverlay { ip: target, net });
        }
        if self.pings.running.len() + self.pings.done.len() >= MAX_PINGS {
            return Err(PingError::Busy);
        }
        let nonce = self.rng.next_u64();
        self.pings.running.insert(nonce, Running { target, probe, sent: now, deadline: now + timeout });
        self.send_control(now, target, Control::PingRequest { nonce, probe });
        Ok(PingId(nonce))
    }

    /// The outcome of a finished ping (once); `None` while it runs or for an unknown id.
    pub fn take_ping(&mut self, id: PingId) -> Option<PingOutcome> {
        self.pings.done.remove(&id.0).map(|(o, _)| o)
    }

    /// Whether the ping is still waiting for its answer.
    pub fn ping_running(&self, id: PingId) -> bool {
        self.pings.running.contains_key(&id.0)
    }

    /// The peer `idx` asks whether our firewall would let `probe` from it in: answered with
    /// the verdict (the request itself, a control message, never meets the firewall).
    pub(super) fn on_ping_request(&mut self, now: Instant, idx: u32, nonce: u64, probe: Probe) {
        let Some(peer) = self.peers.get(idx) else { return };
        let Some((local, remote)) = self.id.framing_to(peer.cert.cert()).map(Framing::addrs) else { return };
        let flow = probe.flow(local, remote, true);
        let verdict = self.policy.would_pass(Direction::Inbound, &peer.policy_peer, &flow);
        let to = peer.vpn_ip;
        self.send_control(now, to, Control::PingReply { nonce, verdict });
    }

    /// The answer to one of our pings, from peer `idx`.
    pub(super) fn on_ping_reply(&mut self, now: Instant, idx: u32, nonce: u64, far: ProbeVerdict) {
        let Some(peer) = self.peers.get(idx) else { return };
        if self.pings.running.get(&nonce).is_none_or(|r| r.target != peer.vpn_ip) {
            self.out.counters.rx_unsolicited += 1;
            return;
        }
        let Some(r) = self.pings.running.remove(&nonce) else { return };
        let Some((local, remote)) = self.id.framing_to(peer.cert.cert()).map(Framing::addrs) else { return };
        let flow = r.probe.flow(local, remote, false);
        let near = self.policy.would_pass(Direction::Outbound, &peer.policy_peer, &flow);
        let path = peer.endpoint;
        let relay_name = match path {
            Some(Path::Relay { relay, .. }) => self.name_of(relay),
            _ => None,
        };
        let answer = PingAnswer {
            name: peer.name.clone(),
            path,
            relay_name,
            rtt: now.saturating_duration_since(r.sent),
            far,
            near,
        };
        self.pings.done.insert(nonce, (PingOutcome::Answered(answer), now));
    }

    /// Pings whose time is up end with a diagnosis; outcomes nobody collected are forgotten.
    pub(super) fn expire_pings(&mut self, now: Instant) {
        self.pings.done.retain(|_, (_, at)| now.saturating_duration_since(*at) < OUTCOME_KEPT);
        let due: Vec<(u64, IpAddr)> =
            self.pings.running.iter().filter(|(_, r)| r.deadline <= now).map(|(n, r)| (*n, r.target)).collect();
        for (nonce, target) in due {
            self.pings.running.remove(&nonce);
            let failure = self.diagnose(target);
            self.pings.done.insert(nonce, (PingOutcome::Failed(failure), now));
        }
    }

    /// Why `target` did not answer, from the state of its tunnel and discovery.
    fn diagnose(&self, target: IpAddr) -> PingFailure {
        let peer = self.peers.by_vpn_ip(target);
        if let Some(p) = peer
            && p.session.is_up()
        {
            return PingFailure::NoPingSupport { name: p.name.clone() };
        }
        let found = self.disc.discovered(target);
        let mut addrs = self.static_hosts.get(&target).cloned().unwrap_or_default();
        let mut relays = vec![];
        if let Some(d) = found {
            push_unique(&mut addrs, d.addrs.iter().copied());
            push_unique(&mut relays, d.relays.iter().copied());
        }
        if let Some(p) = peer {
            push_unique(&mut addrs, p.candidates.iter().copied());
            push_unique(&mut relays, p.relays.iter().copied());
        }
        if peer.is_none() && found.is_none() && addrs.is_empty() {
            let lighthouses = self.disc.settings.lighthouses.clone();
            if lighthouses.is_empty() {
                return PingFailure::NoWayToFind;
            }
            let any_up = self.lighthouse_status().iter().any(|(_, up)| *up);
            return if any_up {
                PingFailure::UnknownToLighthouses { lighthouses }
            } else {
                PingFailure::NoLighthouse { lighthouses }
            };
        }
        relays.retain(|r| !self.id.is_own(*r) && *r != target);
        if !relays.is_empty() && self.disc.settings.use_relays {
            return PingFailure::RelayUnreachable { relays };
        }
        PingFailure::HandshakeTimedOut { addrs }
    }

    /// The certificate name of a node we know (a peer or a listed member).
    fn name_of(&self, ip: IpAddr) -> Option<String> {
        if let Some(p) = self.peers.by_addr(ip) {
            return Some(p.name.clone());
        }
        self.disc.members.get(&ip).map(|c| c.name().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::{Probe, ProbeVerdict};
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn probes_parse_in_operator_words() {
        assert_eq!("icmp".parse(), Ok(Probe::IcmpEcho));
        assert_eq!("4647/tcp".parse(), Ok(Probe::Tcp(4647)));
        assert_eq!("4647".parse(), Ok(Probe::Tcp(4647)));
        assert_eq!("53/UDP".parse(), Ok(Probe::Udp(53)));
        let bad: Result<Probe, _> = "4647/sctp".parse();
        assert_eq!(bad.unwrap_err(), "unknown protocol `sctp` (expected tcp or udp, as in 4647/tcp)");
        assert!("0/tcp".parse::<Probe>().unwrap_err().contains("not a port"));
        assert!("http".parse::<Probe>().unwrap_err().contains("not a port"));
    }

    #[test]
    fn wire_forms_round_trip_and_unknowns_are_refused() {
        for p in [Probe::IcmpEcho, Probe::Tcp(4647), Probe::Udp(53)] {
            let (proto, port) = p.to_wire();
            assert_eq!(Probe::from_wire(proto, port), Some(p));
        }
        assert_eq!(Probe::from_wire(132, 1), None);
        for v in [ProbeVerdict::Allow, ProbeVerdict::Drop, ProbeVerdict::Reject] {
            assert_eq!(ProbeVerdict::from_wire(v.to_wire()), Some(v));
        }
        assert_eq!(ProbeVerdict::from_wire(3), None);
    }

    #[test]
    fn an_inbound_probe_is_addressed_to_the_far_port() {
        let (a, b) = (IpAddr::V4(Ipv4Addr::new(100, 64, 0, 1)), IpAddr::V6("fd00::2".parse().unwrap()));
        let f = Probe::Tcp(4647).flow(a, b, true);
        assert_eq!((f.local_port, f.local_ip, f.remote_ip), (4647, a, b));
        let f = Probe::Tcp(4647).flow(a, b, false);
        assert_eq!(f.remote_port, 4647);
        assert_eq!(Probe::IcmpEcho.flow(a, b, true).local_port, 0);
    }
}
