//! The mesh core on a live node: node 1 (`mesh::Node`, a lighthouse and relay behind the real
//! firewall policy) with real peers, fed a sequence of operations chosen by the fuzzer:
//! arbitrary datagrams from arbitrary sources, replays of genuine datagrams, Hellos carrying
//! real, foreign and expired certificates, and (through an authenticated WireGuard session)
//! arbitrary IP packets and control messages from a member of the mesh.
//!
//! The peers: node 3 is a boringtun `Tunn` driven here (so the fuzzer controls every byte it
//! tunnels); node 2 is a second `mesh::Node` that registers with the lighthouse when the input
//! asks for it. Everything runs in memory; nothing touches a socket.
//!
//! Speed: certificates, keys and firewall rules are built once per process ([`super::fixtures`]);
//! each input builds node 1 afresh (an input must behave the same in any order, or a crash
//! would not reproduce) and pays for handshakes only when it uses node 3's session or node 2.
//!
//! Checked on every input: node 1 never hands its host a packet that does not come from an
//! authenticated peer's certificate address, and never sends an unauthenticated source more
//! bytes than it received from it (no amplification).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use cos_mesh::cert::pool::Blocklist;
use cos_mesh::daemon::policy::FirewallPolicy;
use cos_mesh::firewall::{Firewall, FirewallConfig, config};
use cos_mesh::mesh::control::{Control, Framing, PROTO};
use cos_mesh::mesh::policy::AllowAll;
use cos_mesh::mesh::{Discovery, MIN_BUFFER, Node, NodeConfig, wire};
use cos_mesh::unixtime::UnixTime;

use super::fixtures::{WALL0, pki, vpn};

const MAX_OPS: usize = 48;
/// Round trips of the in-memory network per step (bounds any ping-pong).
const MAX_ROUNDS: usize = 16;

pub fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, n], 4242))
}

/// Where a datagram claims to come from.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Source {
    /// Node 3's address (its session's endpoint).
    Member,
    /// Node 2's address.
    Registered,
    /// One of a few other addresses (rate limits are per source).
    Other(u8),
    V4([u8; 4], u16),
    V6([u8; 16], u16),
}

impl Source {
    fn addr(self) -> SocketAddr {
        match self {
            Source::Member => addr(3),
            Source::Registered => addr(2),
            Source::Other(n) => SocketAddr::from(([198, 19, 0, n % 8], 4242)),
            Source::V4(ip, port) => SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port),
            Source::V6(ip, port) => SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum CertPick {
    Member,
    Registered,
    Unregistered,
    Lighthouse,
    Foreign,
    Expired,
}

#[derive(Arbitrary, Debug)]
pub enum Op {
    /// Any bytes from any source.
    Raw { from: Source, data: Vec<u8> },
    /// A WireGuard-shaped message (type 3 or 4) carrying node 1's live session index for node 3,
    /// so garbage reaches the session's decryption rather than the index lookup.
    ToSession { cookie: bool, data: Vec<u8> },
    /// A genuine datagram captured from an earlier session, replayed from anywhere.
    Replay { from: Source, which: u8 },
    /// A Hello with a real certificate (or its bytes changed) from anywhere.
    Hello { from: Source, cert: CertPick, id: u64, pad: u16, flip: Option<u16> },
    /// Node 3 tunnels an arbitrary IP packet to node 1.
    Tunnel { packet: Vec<u8> },
    /// Node 3 tunnels a control message (proto 253) with an arbitrary body; `src` forges the
    /// inner source (the core must refuse a control message not from the peer's own IP).
    Control { src: Option<u8>, kind: u8, body: Vec<u8> },
    /// Node 3 tunnels a well-formed control message.
    Message(Message),
    /// Node 1's host sends a packet into the overlay.
    Host { packet: Vec<u8> },
    /// Time passes (at most 30 s); timers run.
    Wait { ms: u16 },
}

/// Control messages worth building well-formed (the fuzzer would rarely find the framing).
#[derive(Arbitrary, Debug)]
pub enum Message {
    Update { addrs: Vec<([u8; 4], u16)>, relays: Vec<u8> },
    Query(u8),
    Members,
    RelayTo { peer: u8, datagram: Vec<u8> },
    RelayFrom { peer: u8, datagram: Vec<u8> },
    Reply { ip: u8, addrs: Vec<([u8; 4], u16)>, cert: CertPick },
    Punch { ip: u8, addrs: Vec<([u8; 4], u16)> },
    Ping,
}

#[derive(Arbitrary, Debug)]
pub struct MeshInput {
    /// Node 2 registers with node 1 first (a lighthouse with a real registration to answer about).
    pub with_registered: bool,
    pub ops: Vec<Op>,
}

/// Built once per process: the firewall rules and genuine datagrams of a recorded session.
struct Shared {
    rules: FirewallConfig,
    captured: Vec<Vec<u8>>,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let rules = config::parse_rules_str(
            "inbound_action: reject\noutbound:\n  - {port: any, proto: any, host: any}\ninbound:\n  - {port: any, proto: icmp, host: any}\n  - {port: 22, proto: tcp, group: ops}\n",
            "rules.yaml".as_ref(),
        )
        .expect("fixture rules");
        let mut s = Shared { rules, captured: vec![] };
        // Record a whole session (registration, handshakes, a tunnelled packet) for replays.
        let mut w = World::new(&s, true);
        w.record = true;
        w.member();
        w.tunnel(&ping(vpn(3), vpn(1)));
        w.wait(1500);
        s.captured = std::mem::take(&mut w.captured);
        s
    })
}

/// An ICMP echo request from `src` to `dst`.
pub fn ping(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 28, 0, 1, 0, 0, 64, 1, 0, 0];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[8, 0, 0xf7, 0xfe, 0, 1, 0, 0]);
    p
}

fn node_config(n: u8, disc: Discovery) -> NodeConfig {
    let id = pki().node(n);
    NodeConfig {
        cert: id.cert.clone(),
        key: id.key(),
        pool: pki().pool(),
        blocklist: Blocklist::default(),
        static_hosts: [(IpAddr::V4(vpn(1)), vec![addr(1)])].into_iter().collect::<HashMap<_, _>>(),
        unsafe_routes: vec![],
        try_interval: Duration::from_millis(100),
        retries: 5,
        disconnect_invalid: true,
        discovery: disc,
        seed: u64::from(n),
    }
}

/// Node 1 and its peers, on a clock that only the input moves.
struct World {
    start: Instant,
    now: Instant,
    lh: Node<FirewallPolicy>,
    registered: Option<Node<AllowAll>>,
    member: Option<Tunn>,
    /// Node 1's index for node 3's session (from its handshake response).
    member_index: u32,
    buf: Vec<u8>,
    out: Vec<u8>,
    record: bool,
    captured: Vec<Vec<u8>>,
    /// Bytes received from and sent to each source, for the amplification check.
    received: HashMap<SocketAddr, usize>,
    sent: HashMap<SocketAddr, usize>,
    delivered: usize,
}

impl World {
    fn new(shared: &Shared, with_registered: bool) -> World {
        let now = Instant::now();
        let wall = UnixTime(WALL0);
        let disc = Discovery { am_lighthouse: true, am_relay: true, ..Discovery::default() };
        let fw = Firewall::compile(&shared.rules, &["100.64.0.1/32".parse().expect("net")]).expect("rules");
        let mut lh = Node::new(node_config(1, disc), FirewallPolicy { fw }, now, wall).expect("node 1 starts");
        lh.set_local_addrs(now, vec![addr(1)]);
        let mut w = World {
            start: now,
            now,
            lh,
            registered: None,
            member: None,
            member_index: 0,
            buf: vec![0; MIN_BUFFER],
            out: vec![0; MIN_BUFFER],
            record: false,
            captured: vec![],
            received: HashMap::new(),
            sent: HashMap::new(),
            delivered: 0,
        };
        if with_registered {
            let disc = Discovery { lighthouses: vec![vpn(1).into()], ..Discovery::default() };
            let mut node = Node::new(node_config(2, disc), AllowAll, now, wall).expect("node 2 starts");
            node.set_local_addrs(now, vec![addr(2)]);
            w.registered = Some(node);
            // Its first timer sends the registration; the exchange completes within a few rounds.
            w.wait(50);
        }
        w
    }

    fn wall(&self) -> UnixTime {
        UnixTime(WALL0 + self.now.duration_since(self.start).as_secs() as i64)
    }

    /// A datagram arrives at node 1.
    fn deliver(&mut self, from: SocketAddr, data: &[u8]) {
        if self.record && self.captured.len() < 64 {
            self.captured.push(data.to_vec());
        }
        *self.received.entry(from).or_default() += data.len();
        let (now, wall) = (self.now, self.wall());
        if let Some(p) = self.lh.handle_datagram(now, wall, from, data, &mut self.out) {
            check_delivered(p);
            self.delivered += 1;
        }
        self.pump();
    }

    /// Moves queued traffic between the nodes until it settles.
    fn pump(&mut self) {
        let (now, wall) = (self.now, self.wall());
        for _ in 0..MAX_ROUNDS {
            let mut to_lh = vec![];
            while let Some(t) = self.lh.poll_transmit() {
                *self.sent.entry(t.dst).or_default() += t.data.len();
                if self.record && self.captured.len() < 64 {
                    self.captured.push(t.data.clone());
                }
                if t.dst == addr(2)
                    && let Some(node) = &mut self.registered
                {
                    let _ = node.handle_datagram(now, wall, addr(1), &t.data, &mut self.buf);
                } else if t.dst == addr(3)
                    && let Some(tunn) = &mut self.member
                {
                    // Node 3 answers what its session needs (keepalives, handshake responses).
                    if let TunnResult::WriteToNetwork(reply) = tunn.decapsulate(None, &t.data, &mut self.buf) {
                        to_lh.push((addr(3), reply.to_vec()));
                    }
                }
            }
            while self.lh.poll_tun_write().is_some() {}
            while self.lh.poll_event().is_some() {}
            if let Some(node) = &mut self.registered {
                while let Some(t) = node.poll_transmit() {
                    if t.dst == addr(1) {
                        to_lh.push((addr(2), t.data));
                    }
                }
                while node.poll_tun_write().is_some() || node.poll_event().is_some() {}
            }
            if to_lh.is_empty() {
                return;
            }
            for (from, data) in to_lh {
                if self.record && self.captured.len() < 64 {
                    self.captured.push(data.clone());
                }
                if let Some(p) = self.lh.handle_datagram(now, wall, from, &data, &mut self.out) {
                    check_delivered(p);
                    self.delivered += 1;
                }
            }
        }
    }

    fn wait(&mut self, ms: u64) {
        let end = self.now + Duration::from_millis(ms);
        // Timers run when due, at most every 10 ms of virtual time.
        while self.now < end {
            let next = self.lh.poll_timeout().max(self.now + Duration::from_millis(10)).min(end);
            self.now = next;
            let (now, wall) = (self.now, self.wall());
            if self.lh.poll_timeout() <= now {
                self.lh.handle_timeout(now, wall);
            }
            if let Some(node) = &mut self.registered
                && node.poll_timeout() <= now
            {
                node.handle_timeout(now, wall);
            }
            if let Some(tunn) = &mut self.member
                && let TunnResult::WriteToNetwork(d) = tunn.update_timers(&mut self.buf)
            {
                let d = d.to_vec();
                let (now, wall) = (self.now, self.wall());
                let _ = self.lh.handle_datagram(now, wall, addr(3), &d, &mut self.out).map(check_delivered);
            }
            self.pump();
        }
    }

    /// Node 3's session with node 1, established on first use: a Hello, then a handshake.
    fn member(&mut self) -> bool {
        if self.member.is_some() {
            return true;
        }
        let id = pki().node(3);
        let lh_public = PublicKey::from(pki().node(1).cert.details().public_key);
        let mut tunn = Tunn::new(StaticSecret::from(id.key_bytes()), lh_public, None, None, 3, None);
        self.deliver(addr(3), &wire::hello(99, id.cert.to_bytes()));
        let TunnResult::WriteToNetwork(init) = tunn.format_handshake_initiation(&mut self.buf, false) else {
            return false;
        };
        let init = init.to_vec();
        self.member = Some(tunn);
        // The response is answered (with a keepalive) inside `pump`; the index is in the response.
        let (now, wall) = (self.now, self.wall());
        let _ = self.lh.handle_datagram(now, wall, addr(3), &init, &mut self.out);
        let mut index = None;
        let mut replies = vec![];
        while let Some(t) = self.lh.poll_transmit() {
            *self.sent.entry(t.dst).or_default() += t.data.len();
            if t.dst == addr(3) && t.data.len() == 92 && t.data[0] == 2 {
                index = Some(u32::from_le_bytes([t.data[4], t.data[5], t.data[6], t.data[7]]));
                replies.push(t.data);
            }
        }
        for r in replies {
            if self.record {
                self.captured.push(r.clone());
            }
            if let Some(tunn) = &mut self.member
                && let TunnResult::WriteToNetwork(k) = tunn.decapsulate(None, &r, &mut self.buf)
            {
                let k = k.to_vec();
                self.deliver(addr(3), &k);
            }
        }
        match index {
            Some(i) => {
                self.member_index = i;
                // Register, as a node does: node 1 then knows node 3's addresses.
                self.control_packet(
                    Control::HostUpdate { addrs: vec![addr(3)], relays: vec![] }
                        .to_packet(Framing::V4 { src: vpn(3), dst: vpn(1) }),
                );
                true
            }
            None => {
                self.member = None;
                false
            }
        }
    }

    /// Node 3 tunnels `packet` to node 1.
    fn tunnel(&mut self, packet: &[u8]) {
        if !self.member() {
            return;
        }
        let Some(tunn) = &mut self.member else { return };
        let mut buf = vec![0; packet.len() + 148];
        if let TunnResult::WriteToNetwork(d) = tunn.encapsulate(packet, &mut buf) {
            let d = d.to_vec();
            self.deliver(addr(3), &d);
        }
    }

    fn control_packet(&mut self, packet: Vec<u8>) {
        self.tunnel(&packet);
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Raw { from, data } => self.deliver(from.addr(), &data),
            Op::ToSession { cookie, mut data } => {
                if !self.member() {
                    return;
                }
                let len = if cookie { 64 } else { data.len().max(32) };
                data.resize(len, 0);
                data[..4].copy_from_slice(&[if cookie { 3 } else { 4 }, 0, 0, 0]);
                data[4..8].copy_from_slice(&self.member_index.to_le_bytes());
                self.deliver(addr(3), &data);
            }
            Op::Replay { from, which } => {
                let captured = &shared().captured;
                if let Some(d) = captured.get(usize::from(which) % captured.len().max(1)) {
                    let d = d.clone();
                    let from = from.addr();
                    // A replayed genuine initiation may authenticate (a fresh node has no
                    // memory of its timestamp): its source is no longer "unauthenticated".
                    self.received.insert(from, usize::MAX / 2);
                    self.deliver(from, &d);
                }
            }
            Op::Hello { from, cert, id, pad, flip } => {
                let mut c = cert_bytes(cert);
                if let Some(i) = flip
                    && !c.is_empty()
                {
                    let i = usize::from(i) % c.len();
                    c[i] ^= 0x5a;
                }
                let mut h = wire::hello(id, &c);
                h.resize(h.len() + usize::from(pad % 512), 0);
                self.deliver(from.addr(), &h);
            }
            Op::Tunnel { packet } => self.tunnel(&packet),
            Op::Control { src, kind, body } => {
                let mut p = Control::Ping.to_packet(Framing::V4 { src: src.map(vpn).unwrap_or(vpn(3)), dst: vpn(1) });
                p.truncate(20);
                p.extend_from_slice(&[kind, 1]);
                p.extend_from_slice(&body);
                let len = p.len() as u16;
                p[2..4].copy_from_slice(&len.to_be_bytes());
                debug_assert_eq!(p[9], PROTO);
                self.tunnel(&p);
            }
            Op::Message(m) => {
                let msg = message(m);
                self.control_packet(msg.to_packet(Framing::V4 { src: vpn(3), dst: vpn(1) }));
            }
            Op::Host { packet } => {
                let now = self.now;
                if let Some((to, d)) = self.lh.handle_tun_packet(now, &packet, &mut self.buf) {
                    let (to, d) = (to, d.to_vec());
                    *self.sent.entry(to).or_default() += d.len();
                    if to == addr(3)
                        && let Some(tunn) = &mut self.member
                    {
                        let _ = tunn.decapsulate(None, &d, &mut self.out);
                    }
                }
                self.pump();
            }
            Op::Wait { ms } => self.wait(u64::from(ms.min(30_000))),
        }
    }

    /// No amplification: a source that never authenticated got at most what it sent.
    fn check_amplification(&self) {
        let authenticated = [addr(1), addr(2), addr(3)];
        for (dst, sent) in &self.sent {
            if authenticated.contains(dst) {
                continue;
            }
            let received = self.received.get(dst).copied().unwrap_or(0);
            assert!(*sent <= received, "node 1 sent {sent} bytes to {dst}, which sent it {received}");
        }
    }
}

/// What node 1 hands its host comes from an authenticated peer's certificate address, to it.
fn check_delivered(p: &[u8]) {
    assert!(p.len() >= 20 && p[0] >> 4 == 4, "only IPv4 from peers: {p:?}");
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    assert!(src == vpn(2) || src == vpn(3), "delivered a packet from {src}");
    assert_eq!(Ipv4Addr::new(p[16], p[17], p[18], p[19]), vpn(1), "delivered a packet not for node 1");
}

fn cert_bytes(pick: CertPick) -> Vec<u8> {
    let p = pki();
    match pick {
        CertPick::Member => p.node(3).cert.to_bytes().to_vec(),
        CertPick::Registered => p.node(2).cert.to_bytes().to_vec(),
        CertPick::Unregistered => p.node(4).cert.to_bytes().to_vec(),
        CertPick::Lighthouse => p.node(1).cert.to_bytes().to_vec(),
        CertPick::Foreign => p.foreign.to_bytes().to_vec(),
        CertPick::Expired => p.expired.to_bytes().to_vec(),
    }
}

fn addrs(v: Vec<([u8; 4], u16)>) -> Vec<SocketAddr> {
    v.into_iter().take(20).map(|(ip, port)| SocketAddr::from((ip, port))).collect()
}

fn message(m: Message) -> Control {
    // The high bit picks an IPv6 identity (the kinds for v6 relays, punches and relayed datagrams).
    let ip = |n: u8| -> IpAddr {
        if n & 0x80 == 0 { vpn(n % 8).into() } else { Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(n % 8)).into() }
    };
    match m {
        Message::Update { addrs: a, relays } => {
            Control::HostUpdate { addrs: addrs(a), relays: relays.into_iter().take(20).map(ip).collect() }
        }
        Message::Query(n) => Control::HostQuery { vpn_ip: ip(n) },
        Message::Members => Control::MembersQuery,
        Message::RelayTo { peer, datagram } => Control::RelayTo { peer: ip(peer), datagram },
        Message::RelayFrom { peer, datagram } => Control::RelayFrom { peer: ip(peer), datagram },
        Message::Reply { ip: n, addrs: a, cert } => {
            Control::HostQueryReply { vpn_ip: ip(n), addrs: addrs(a), relays: vec![], cert: cert_bytes(cert) }
        }
        Message::Punch { ip: n, addrs: a } => Control::HostPunch { vpn_ip: ip(n), addrs: addrs(a) },
        Message::Ping => Control::Ping,
    }
}

/// How deep an input got: the harness test checks that the fuzzer can reach real sessions.
#[derive(Debug, Clone)]
pub struct Reached {
    /// Node 3's session with node 1 came up.
    pub member_session: bool,
    /// Packets node 1 handed its host.
    pub delivered: usize,
    /// Node 1's counters at the end.
    pub counters: cos_mesh::mesh::Counters,
}

pub fn run(input: MeshInput) -> Reached {
    let shared = shared();
    let mut w = World::new(shared, input.with_registered);
    for op in input.ops.into_iter().take(MAX_OPS) {
        w.step(op);
    }
    w.check_amplification();
    Reached { member_session: w.member.is_some(), delivered: w.delivered, counters: w.lh.counters().clone() }
}
