//! A simulated world for mesh tests: whole `mesh::Node`s (real certificates, real boringtun
//! sessions) exchanging datagrams through an in-memory network with latency, loss filters and
//! NAT routers, on a virtual clock. boringtun's clock is the thread-local mock (`--features
//! sim`), advanced in step with ours, so a rekey at 120 s is a millisecond test. One thing it
//! does not mock: a handshake initiation's TAI64N stamp is the real `SystemTime` read when the
//! session's `Tunn` was made plus the mock time since, so a node restarted seconds of virtual time
//! (milliseconds of real time) after its last handshake stamps older than its predecessor, and
//! the peer still holding the old session refuses it as a replay (`rx_handshake_stale`).
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use cos_mesh::cert::keys::{CaSecret, HostSecret};
use cos_mesh::cert::pool::{Blocklist, CaPool, VerifiedCert};
use cos_mesh::cert::{Certificate, Details};
use cos_mesh::daemon::policy::FirewallPolicy;
use cos_mesh::firewall::PeerIdentity;
use cos_mesh::mesh::{Direction, Discovery, Event, MIN_BUFFER, Node, NodeConfig, Policy, ProbeVerdict, Verdict};
use cos_mesh::packet::Flow;
use cos_mesh::unixtime::UnixTime;
use mock_instant::MockClock;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

pub const WALL0: i64 = 1_800_000_000;

pub struct Ca {
    pub key: CaSecret,
    pub cert: Certificate,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = CaSecret::generate();
        let d = Details {
            name: name.into(),
            ips: vec!["100.64.0.0/10".parse().unwrap()],
            subnets: vec![],
            groups: vec![],
            not_before: UnixTime(WALL0 - 10),
            not_after: UnixTime(WALL0 + 365 * 86_400),
            public_key: key.public(),
            is_ca: true,
            issuer: None,
        };
        let cert = Certificate::sign(&d, key.signing_key()).unwrap();
        Ca { key, cert }
    }

    pub fn pool(&self) -> CaPool {
        CaPool::from_pem(self.cert.to_pem().as_bytes()).unwrap()
    }

    /// A node certificate for `100.64.0.<n>`, valid for `life` seconds of simulated time.
    pub fn node(&self, name: &str, n: u8, life: i64) -> (Certificate, HostSecret) {
        self.node_with_groups(name, n, life, &[])
    }

    pub fn node_with_groups(&self, name: &str, n: u8, life: i64, groups: &[&str]) -> (Certificate, HostSecret) {
        self.node_full(name, n, life, groups, &[])
    }

    /// The same certificate (name, IP, groups, key) valid until `WALL0 + life`: a renewal.
    pub fn renew(&self, old: &Certificate, life: i64) -> Certificate {
        let mut d = old.details().clone();
        d.not_after = UnixTime(WALL0 + life);
        Certificate::sign(&d, self.key.signing_key()).unwrap()
    }

    /// A node certificate that also routes for `subnets` (`unsafe_routes` on its peers).
    pub fn node_full(
        &self,
        name: &str,
        n: u8,
        life: i64,
        groups: &[&str],
        subnets: &[&str],
    ) -> (Certificate, HostSecret) {
        self.node_at(name, vpn(n), life, groups, subnets)
    }

    /// A node certificate for any overlay address in 100.64.0.0/10 (large meshes).
    pub fn node_at(
        &self,
        name: &str,
        ip: Ipv4Addr,
        life: i64,
        groups: &[&str],
        subnets: &[&str],
    ) -> (Certificate, HostSecret) {
        let key = HostSecret::generate();
        let d = Details {
            name: name.into(),
            ips: vec![format!("{ip}/10").parse().unwrap()],
            subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            not_before: UnixTime(WALL0 - 5),
            not_after: UnixTime(WALL0 + life),
            public_key: key.public().0,
            is_ca: false,
            issuer: Some(self.cert.fingerprint()),
        };
        (Certificate::sign(&d, self.key.signing_key()).unwrap(), key)
    }
}

/// CPU time of this thread so far: what a simulation costs, however loaded the machine.
pub fn thread_cpu() -> Duration {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

pub fn vpn(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, 0, n)
}

/// A public underlay address (the "internet" segment).
pub fn underlay(n: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, n], 4242))
}

/// A private address inside site `site` (1, 2, …), behind that site's NAT.
pub fn private(site: u8, n: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, site, n], 4242))
}

/// The UDP port `ip_packet` sends from and to.
pub const DEFAULT_PORT: u16 = 12345;

/// A minimal IPv4/UDP packet; the payload identifies it in assertions.
pub fn ip_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    udp_packet(src, DEFAULT_PORT, dst, DEFAULT_PORT, payload)
}

/// A minimal IPv4/UDP packet between the given ports (no checksums: the mesh checks none).
pub fn udp_packet(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let udp_len = 8 + payload.len();
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[(udp_len >> 8) as u8, udp_len as u8, 0, 0]);
    p.extend_from_slice(payload);
    p
}

pub fn payload(p: &[u8]) -> &[u8] {
    p.get(28..).unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// Endpoint-independent mapping and filtering: anyone may send to a mapping.
    FullCone,
    /// Endpoint-independent mapping; inbound only from addresses the inside has sent to.
    PortRestricted,
    /// A new mapping per destination; inbound only from that destination.
    Symmetric,
}

/// A NAT router in front of one site's private addresses.
pub struct Nat {
    pub site: u8,
    pub public_ip: Ipv4Addr,
    pub kind: NatKind,
    next_port: u16,
    mappings: HashMap<(SocketAddr, Option<SocketAddr>), u16>,
    reverse: HashMap<u16, (SocketAddr, Option<SocketAddr>)>,
    sent_to: HashSet<(SocketAddr, SocketAddr)>,
}

impl Nat {
    fn outbound(&mut self, inside: SocketAddr, dst: SocketAddr) -> SocketAddr {
        let key = (inside, (self.kind == NatKind::Symmetric).then_some(dst));
        let port = match self.mappings.get(&key) {
            Some(p) => *p,
            None => {
                self.next_port += 7;
                self.mappings.insert(key, self.next_port);
                self.reverse.insert(self.next_port, key);
                self.next_port
            }
        };
        self.sent_to.insert((inside, dst));
        SocketAddr::new(IpAddr::V4(self.public_ip), port)
    }

    fn inbound(&self, port: u16, from: SocketAddr) -> Option<SocketAddr> {
        let (inside, dst) = *self.reverse.get(&port)?;
        let ok = match self.kind {
            NatKind::FullCone => true,
            NatKind::PortRestricted => self.sent_to.contains(&(inside, from)),
            NatKind::Symmetric => dst == Some(from),
        };
        ok.then_some(inside)
    }
}

/// One node's settings in a simulated world, built up from what it knows and what it is:
/// `Settings::of(ca, ca.node("server", 11, DAY)).knows(&[1, 3]).lighthouses(&[1]).relays(&[3])`.
/// Nodes are numbered as everywhere here: overlay `vpn(n)`, public underlay `underlay(n)`.
pub struct Settings(NodeConfig);

impl Settings {
    /// A node that knows nobody and has no discovery role.
    pub fn of(ca: &Ca, (cert, key): (Certificate, HostSecret)) -> Settings {
        Settings(Sim::config(ca, cert, key, &[]))
    }

    /// Knows the public underlay addresses of nodes `ns` (`static_host_map`).
    pub fn knows(mut self, ns: &[u8]) -> Settings {
        for n in ns {
            self.0.static_hosts.insert(IpAddr::V4(vpn(*n)), vec![underlay(*n)]);
        }
        self
    }

    /// Registers with the lighthouses `ns` (and asks them about peers).
    pub fn lighthouses(mut self, ns: &[u8]) -> Settings {
        self.0.discovery.lighthouses = ns.iter().map(|n| IpAddr::from(vpn(*n))).collect();
        self
    }

    /// Is served by the relays `ns`.
    pub fn relays(mut self, ns: &[u8]) -> Settings {
        self.0.discovery.relays = ns.iter().map(|n| IpAddr::from(vpn(*n))).collect();
        self
    }

    /// Knows node `n` by overlay address `addr` (any of its networks, IPv4 or IPv6) and uses
    /// it as its lighthouse and relay.
    pub fn served_by_at(mut self, n: u8, addr: IpAddr) -> Settings {
        self.0.static_hosts.insert(addr, vec![underlay(n)]);
        self.0.discovery.lighthouses = vec![addr];
        self.0.discovery.relays = vec![addr];
        self
    }

    /// Is a lighthouse (`am_lighthouse`) and/or a relay (`am_relay`).
    pub fn serves(mut self, am_lighthouse: bool, am_relay: bool) -> Settings {
        self.0.discovery.am_lighthouse = am_lighthouse;
        self.0.discovery.am_relay = am_relay;
        self
    }

    pub fn config(self) -> NodeConfig {
        self.0
    }
}

/// The simulation's packet policy: everything passes, unless a test gives the node a real
/// firewall (`sim.nodes[i].node.policy_mut().0 = Some(..)`).
#[derive(Default)]
pub struct SimPolicy(pub Option<FirewallPolicy>);

impl Policy for SimPolicy {
    type Peer = PeerIdentity;

    fn peer(&self, cert: &VerifiedCert) -> PeerIdentity {
        PeerIdentity::from(cert)
    }

    fn check(&mut self, now: Instant, dir: Direction, peer: &PeerIdentity, packet: &[u8]) -> Verdict {
        match &mut self.0 {
            Some(fw) => fw.check(now, dir, peer, packet),
            None => Verdict::Allow,
        }
    }

    fn would_pass(&self, dir: Direction, peer: &PeerIdentity, flow: &Flow) -> ProbeVerdict {
        match &self.0 {
            Some(fw) => fw.would_pass(dir, peer, flow),
            None => ProbeVerdict::Allow,
        }
    }
}

pub struct SimNode {
    pub node: Node<SimPolicy>,
    pub addr: SocketAddr,
    /// The site whose NAT this node sits behind (`None`: on the public segment).
    pub site: Option<u8>,
    /// Packets the node wrote to its TUN.
    pub tun: Vec<Vec<u8>>,
    pub events: Vec<Event>,
    pub up: bool,
}

pub type Filter = Box<dyn FnMut(Instant, SocketAddr, SocketAddr, &[u8]) -> bool>;

struct InFlight {
    at: Instant,
    from: SocketAddr,
    to: SocketAddr,
    from_site: Option<u8>,
    data: Vec<u8>,
}

/// The simulated world: nodes, a network with a latency (fixed, or with a seeded random extra
/// delay that makes datagrams overtake each other), NATs, and the virtual clock.
pub struct Sim {
    pub nodes: Vec<SimNode>,
    pub nats: Vec<Nat>,
    pub now: Instant,
    pub start: Instant,
    pub latency: Duration,
    /// Up to this much extra delay per datagram, drawn from the generator: reordering.
    jitter: Option<(Duration, ChaCha8Rng)>,
    in_flight: Vec<InFlight>,
    /// Returns false to drop a datagram (loss, partitions); sees post-NAT addresses.
    pub filter: Filter,
    buf: Vec<u8>,
    pub dropped: usize,
    /// Restarts so far: each restarted node gets a fresh seed, as a daemon draws one from the OS.
    restarts: u64,
}

/// Mixed into a restarted node's seed (times the restart count): a new incarnation must not
/// reuse its predecessor's session indices, or a peer's packets for the old session land on
/// whichever new session drew the same index (failed decryption instead of an unknown-index
/// reply, and the sender keeps using the dead session).
const RESTART_SEED_STEP: u64 = 0x9e37_79b9_7f4a_7c15;

impl Sim {
    pub fn new() -> Sim {
        // boringtun treats a zero instant as "never"; start the mock clock well past zero.
        MockClock::set_time(Duration::from_secs(10_000));
        let start = Instant::now();
        Sim {
            nodes: vec![],
            nats: vec![],
            now: start,
            start,
            latency: Duration::from_millis(5),
            jitter: None,
            in_flight: vec![],
            filter: Box::new(|_, _, _, _| true),
            buf: vec![0; MIN_BUFFER],
            dropped: 0,
            restarts: 0,
        }
    }

    pub fn wall(&self) -> UnixTime {
        UnixTime(WALL0 + self.now.duration_since(self.start).as_secs() as i64)
    }

    /// A node's settings; its random seed is its overlay IP, so every run repeats exactly.
    pub fn config(ca: &Ca, cert: Certificate, key: HostSecret, statics: &[(u8, SocketAddr)]) -> NodeConfig {
        let cert_seed = cert.vpn_ip().map_or(0, u32::from);
        NodeConfig {
            cert,
            key,
            pool: ca.pool(),
            blocklist: Blocklist::default(),
            static_hosts: statics.iter().map(|(n, a)| (IpAddr::V4(vpn(*n)), vec![*a])).collect::<HashMap<_, _>>(),
            unsafe_routes: vec![],
            try_interval: Duration::from_millis(100),
            retries: 10,
            disconnect_invalid: true,
            discovery: Discovery::default(),
            seed: u64::from(cert_seed),
        }
    }

    /// Adds a NAT router for `site` with public address 198.19.0.`site`.
    pub fn add_nat(&mut self, site: u8, kind: NatKind) {
        let public_ip = Ipv4Addr::new(198, 19, 0, site);
        self.nats.push(Nat {
            site,
            public_ip,
            kind,
            next_port: 30_000,
            mappings: HashMap::new(),
            reverse: HashMap::new(),
            sent_to: HashSet::new(),
        });
    }

    /// Adds a node with overlay IP `vpn(n)` at `addr` (behind `site`'s NAT if given).
    pub fn add_at(&mut self, cfg: NodeConfig, addr: SocketAddr, site: Option<u8>) -> usize {
        let mut node = Node::new(cfg, SimPolicy::default(), self.now, self.wall()).expect("node starts");
        node.set_local_addrs(self.now, vec![addr]);
        self.nodes.push(SimNode { node, addr, site, tun: vec![], events: vec![], up: true });
        self.nodes.len() - 1
    }

    /// Adds a node on the public segment at `underlay(n)`.
    pub fn add(&mut self, cfg: NodeConfig, n: u8) -> usize {
        self.add_at(cfg, underlay(n), None)
    }

    /// Two nodes on the public segment, `a` as node 1 and `b` as node 2 (their certificates
    /// must be for `vpn(1)` and `vpn(2)`), each knowing the other's underlay address.
    pub fn add_pair(&mut self, ca: &Ca, a: (Certificate, HostSecret), b: (Certificate, HostSecret)) -> (usize, usize) {
        let a = self.add(Settings::of(ca, a).knows(&[2]).config(), 1);
        let b = self.add(Settings::of(ca, b).knows(&[1]).config(), 2);
        (a, b)
    }

    /// Replaces node `i` by a fresh one (a restart: all state lost).
    pub fn restart(&mut self, i: usize, mut cfg: NodeConfig) {
        self.restarts += 1;
        cfg.seed = cfg.seed.wrapping_add(RESTART_SEED_STEP.wrapping_mul(self.restarts));
        let mut node = Node::new(cfg, SimPolicy::default(), self.now, self.wall()).unwrap();
        node.set_local_addrs(self.now, vec![self.nodes[i].addr]);
        self.nodes[i].node = node;
        self.nodes[i].tun.clear();
    }

    /// The host behind node `from` sends an IP packet to `dst`.
    pub fn send(&mut self, from: usize, dst: Ipv4Addr, data: &[u8]) {
        let src = self.nodes[from].node.cert().vpn_ip().expect("an IPv4 network");
        self.send_packet(from, &ip_packet(src, dst, data));
    }

    pub fn send_packet(&mut self, from: usize, packet: &[u8]) {
        let now = self.now;
        if let Some((to, d)) = self.nodes[from].node.handle_tun_packet(now, packet, &mut self.buf) {
            let d = d.to_vec();
            self.transmit_from(from, to, d);
        }
        self.drain(from);
    }

    /// Puts a datagram on the wire from node `i` (through its NAT, if any).
    pub fn transmit_from(&mut self, i: usize, to: SocketAddr, data: Vec<u8>) {
        let (inside, site) = (self.nodes[i].addr, self.nodes[i].site);
        let same_site =
            site.is_some_and(|s| matches!(to.ip(), IpAddr::V4(ip) if ip.octets()[2] == s && ip.octets()[1] == 18));
        let from = match site.and_then(|s| self.nats.iter_mut().find(|n| n.site == s)) {
            Some(nat) if !same_site => nat.outbound(inside, to),
            _ => inside,
        };
        self.transmit(from, to, site, data);
    }

    /// From now on every datagram waits a random extra delay of up to `max` (drawn from `seed`),
    /// so datagrams sent close together arrive in another order.
    pub fn jitter(&mut self, max: Duration, seed: u64) {
        self.jitter = Some((max, ChaCha8Rng::seed_from_u64(seed)));
    }

    /// Puts a raw datagram on the wire with a given source (an attacker can forge it).
    pub fn transmit(&mut self, from: SocketAddr, to: SocketAddr, from_site: Option<u8>, data: Vec<u8>) {
        if (self.filter)(self.now, from, to, &data) {
            let extra = match &mut self.jitter {
                Some((max, rng)) => Duration::from_nanos(rng.next_u64() % (max.as_nanos() as u64 + 1)),
                None => Duration::ZERO,
            };
            self.in_flight.push(InFlight { at: self.now + self.latency + extra, from, to, from_site, data });
        } else {
            self.dropped += 1;
        }
    }

    pub fn drain(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].node.poll_transmit() {
            self.transmit_from(i, t.dst, t.data);
        }
        while let Some(p) = self.nodes[i].node.poll_tun_write() {
            self.nodes[i].tun.push(p);
        }
        while let Some(e) = self.nodes[i].node.poll_event() {
            self.nodes[i].events.push(e);
        }
    }

    /// Which node a datagram reaches, if any (NAT filtering, private address scopes).
    fn deliver_to(&self, f: &InFlight) -> Option<usize> {
        let to = match self.nats.iter().find(|n| IpAddr::V4(n.public_ip) == f.to.ip()) {
            Some(nat) => nat.inbound(f.to.port(), f.from)?,
            None => f.to,
        };
        self.nodes
            .iter()
            .position(|n| n.addr == to && n.up && (n.site.is_none() || n.site == f.from_site || to != f.to))
    }

    /// Runs the world for `d` of virtual time, jumping from one event (a datagram arriving, a
    /// node's timer) to the next.
    pub fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.step(end) {}
    }

    /// When the next thing happens: the earliest arrival or node timer.
    fn next_event(&self) -> Option<Instant> {
        let arrivals = self.in_flight.iter().map(|f| f.at);
        let timers = self.nodes.iter().filter(|n| n.up).map(|n| n.node.poll_timeout());
        arrivals.chain(timers).min()
    }

    /// Advances the clock to the next event (at most to `end`) and runs what is due then.
    /// Returns false once `end` is reached.
    fn step(&mut self, end: Instant) -> bool {
        let next = self.next_event().map_or(end, |t| t.clamp(self.now, end));
        if next > self.now {
            MockClock::advance(next - self.now);
            self.now = next;
        }
        let now = self.now;
        let wall = self.wall();
        let mut busy = false;
        {
            let (mut due, later): (Vec<_>, Vec<_>) =
                std::mem::take(&mut self.in_flight).into_iter().partition(|f| f.at <= now);
            due.sort_by_key(|f| f.at);
            busy |= !due.is_empty();
            self.in_flight = later;
            for f in due {
                let Some(i) = self.deliver_to(&f) else {
                    self.dropped += 1;
                    continue;
                };
                if let Some(p) = self.nodes[i].node.handle_datagram(now, wall, f.from, &f.data, &mut self.buf) {
                    let p = p.to_vec();
                    self.nodes[i].tun.push(p);
                }
                self.drain(i);
            }
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].up && self.nodes[i].node.poll_timeout() <= now {
                busy = true;
                self.nodes[i].node.handle_timeout(now, wall);
                self.drain(i);
                assert!(self.nodes[i].node.poll_timeout() > now, "node {i}: poll_timeout did not advance");
            }
        }
        busy || now < end
    }

    /// Runs until `cond` holds or `limit` passes; returns the virtual time it took.
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&Sim) -> bool) -> Option<Duration> {
        let start = self.now;
        let end = start + limit;
        loop {
            if cond(self) {
                return Some(self.now.duration_since(start));
            }
            if self.now >= end {
                return None;
            }
            self.step(end);
        }
    }

    pub fn received(&self, i: usize, data: &[u8]) -> bool {
        self.nodes[i].tun.iter().any(|p| payload(p) == data)
    }
}
