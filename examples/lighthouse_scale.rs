//! Lighthouse at scale, in memory: registers N nodes with one lighthouse (`mesh::Node`, real
//! certificates, real WireGuard handshakes against boringtun `Tunn`s on the client side), then
//! queries it; and measures node-to-node handshakes per second on one core.
//!
//! `cargo run --release --features sim --example lighthouse_scale -- 100000`
//!
//! Memory is the lighthouse's live heap, counted by a global allocator (each client is dropped
//! once registered, so only the lighthouse's state remains). CPU figures are the thread's time
//! inside the lighthouse's calls only (client-side signing and handshakes are not counted).
//! The node's clock is virtual; boringtun's is the `sim` feature's mock clock, held still
//! during registration (sessions neither rekey nor expire while 100k nodes register), so the
//! run measures the lighthouse's data structures and per-message work, not waiting.
//! `tests/lighthouse_scale.rs` runs a small version of this and asserts the memory bound.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use cos_mesh::cert::Certificate;
use cos_mesh::cert::pool::Blocklist;
use cos_mesh::mesh::control::{Control, Framing, payload_for};
use cos_mesh::mesh::policy::AllowAll;
use cos_mesh::mesh::{Discovery, MIN_BUFFER, Node, NodeConfig, wire};
use cos_mesh::unixtime::UnixTime;
use mock_instant::MockClock;

/// Counts live heap bytes: what the lighthouse holds is the difference across registration.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees hold; the counter is only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc`'s contract for these arguments; forwarded as is.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc`'s contract for these arguments; forwarded as is.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc`'s contract for these arguments; forwarded as is.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc`'s contract for these arguments; forwarded as is.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The simulation world's CA and node certificates (shared with the mesh tests).
#[path = "../tests/simnet/mod.rs"]
mod simnet;
use simnet::{Ca, WALL0, thread_cpu};

/// Node certificates are valid for 300 days of simulated time.
const NODE_LIFE: i64 = 300 * 86_400;
const LH_IP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Overlay and underlay addresses of client `i`.
fn client_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 10)) + i as u32)
}

fn client_addr(i: usize) -> SocketAddr {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (i % 131_072) as u32);
    SocketAddr::new(ip.into(), 4242 + (i / 131_072) as u16)
}

/// A client: a certificate, and a boringtun session driven by the harness.
struct Client {
    vpn_ip: Ipv4Addr,
    addr: SocketAddr,
    cert: Certificate,
    tunn: Tunn,
}

/// The lighthouse under test and its clock.
pub struct Lighthouse {
    node: Node<AllowAll>,
    public: [u8; 32],
    start: Instant,
    now: Instant,
    buf: Vec<u8>,
    /// Thread CPU spent inside the lighthouse's calls.
    cpu: Duration,
}

impl Lighthouse {
    fn new(ca: &Ca) -> Lighthouse {
        MockClock::set_time(Duration::from_secs(10_000));
        let (cert, key) = ca.node_at(&format!("node-{LH_IP}"), LH_IP, NODE_LIFE, &["nomad-client"], &[]);
        let public = cert.details().public_key;
        // Registrations are kept for six intervals; a long interval keeps every registration of
        // the run (a real node refreshes its own every 10 s).
        let disc = Discovery { am_lighthouse: true, interval: Duration::from_secs(3600), ..Discovery::default() };
        let cfg = NodeConfig {
            cert,
            key,
            pool: ca.pool(),
            blocklist: Blocklist::default(),
            static_hosts: Default::default(),
            unsafe_routes: vec![],
            try_interval: Duration::from_millis(100),
            retries: 10,
            disconnect_invalid: true,
            discovery: disc,
            seed: 1,
        };
        let start = Instant::now();
        let mut node = Node::new(cfg, AllowAll, start, UnixTime(WALL0)).unwrap();
        node.set_local_addrs(start, vec!["198.19.0.1:4242".parse().unwrap()]);
        Lighthouse { node, public, start, now: start, buf: vec![0; MIN_BUFFER], cpu: Duration::ZERO }
    }

    fn wall(&self) -> UnixTime {
        UnixTime(WALL0 + self.now.duration_since(self.start).as_secs() as i64)
    }

    /// Delivers a datagram; returns what the lighthouse sent back to `from` (timed).
    fn datagram(&mut self, from: SocketAddr, data: &[u8]) -> Vec<Vec<u8>> {
        let (now, wall) = (self.now, self.wall());
        let t = thread_cpu();
        let _ = self.node.handle_datagram(now, wall, from, data, &mut self.buf);
        let mut back = vec![];
        while let Some(tx) = self.node.poll_transmit() {
            if tx.dst == from {
                back.push(tx.data);
            }
        }
        while self.node.poll_event().is_some() {}
        self.cpu += thread_cpu() - t;
        back
    }

    /// One second of the node's time passes (its per-second budgets refill); returns the CPU
    /// the timer work took.
    fn second(&mut self) -> Duration {
        self.now += Duration::from_secs(1);
        let (now, wall) = (self.now, self.wall());
        let t = thread_cpu();
        self.node.handle_timeout(now, wall);
        while self.node.poll_transmit().is_some() {}
        while self.node.poll_event().is_some() {}
        thread_cpu() - t
    }

    /// Hello, handshake (with a cookie round trip when the lighthouse is under load), and the
    /// address report. Returns false if the lighthouse refused (a budget ran out).
    fn register(&mut self, c: &mut Client, buf: &mut [u8]) -> bool {
        self.datagram(c.addr, &wire::hello(u64::from(c.vpn_ip.to_bits()), c.cert.to_bytes()));
        let mut init = match c.tunn.format_handshake_initiation(buf, false) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            _ => return false,
        };
        for _ in 0..2 {
            let back = self.datagram(c.addr, &init);
            let Some(reply) = back.first() else { return false };
            match reply[0] {
                // A cookie: the client proves its address and initiates again (mac2).
                3 => {
                    let _ = c.tunn.decapsulate(Some(c.addr.ip()), reply, buf);
                    match c.tunn.format_handshake_initiation(buf, true) {
                        TunnResult::WriteToNetwork(d) => init = d.to_vec(),
                        _ => return false,
                    }
                }
                2 => {
                    let TunnResult::WriteToNetwork(keepalive) = c.tunn.decapsulate(Some(c.addr.ip()), reply, buf)
                    else {
                        return false;
                    };
                    let keepalive = keepalive.to_vec();
                    self.datagram(c.addr, &keepalive);
                    let update = Control::HostUpdate { addrs: vec![c.addr], relays: vec![] }
                        .to_packet(Framing::V4 { src: c.vpn_ip, dst: LH_IP });
                    let TunnResult::WriteToNetwork(d) = c.tunn.encapsulate(&update, buf) else { return false };
                    let d = d.to_vec();
                    let ack = self.datagram(c.addr, &d);
                    return !ack.is_empty();
                }
                _ => return false,
            }
        }
        false
    }
}

/// Session indexes are 24 bits (boringtun keeps the low 8 for the handshake counter).
const INDEX_MASK: u32 = 0x00ff_ffff;

fn client(ca: &Ca, lh_public: [u8; 32], i: usize) -> Client {
    client_with_index(ca, lh_public, i, (i as u32 + 1) & INDEX_MASK)
}

/// A client whose boringtun session uses `index` (a real node draws its own; clients that
/// share one make the lighthouse's index hint miss).
fn client_with_index(ca: &Ca, lh_public: [u8; 32], i: usize, index: u32) -> Client {
    let vpn_ip = client_ip(i);
    let (cert, key) = ca.node_at(&format!("node-{vpn_ip}"), vpn_ip, NODE_LIFE, &["nomad-client"], &[]);
    let tunn = Tunn::new(StaticSecret::from(*key.bytes()), PublicKey::from(lh_public), None, None, index, None);
    Client { vpn_ip, addr: client_addr(i), cert, tunn }
}

#[derive(Debug, Clone)]
pub struct Figures {
    pub nodes: usize,
    /// Live heap the lighthouse grew by, per registered node.
    pub heap_per_node: usize,
    pub heap_total: usize,
    /// Process RSS growth across registration (allocator overhead included).
    pub rss_growth: usize,
    /// Lighthouse CPU per registration (Hello, handshake, cookie when under load, report).
    pub cpu_per_registration: Duration,
    /// Timer work with every node registered: one second's worth (four 250 ms ticks + the
    /// per-second work).
    pub timer_cpu_per_second: Duration,
    /// Lighthouse CPU per HostQuery (answer + punch request), median and 99th percentile.
    pub query_p50: Duration,
    pub query_p99: Duration,
    /// One MembersQuery: lighthouse CPU and the bytes it sends back.
    pub members_cpu: Duration,
    pub members_bytes: usize,
    pub members_datagrams: usize,
}

/// Registers `n` nodes, then runs `queries` HostQuerys from one more node.
pub fn lighthouse(n: usize, queries: usize) -> Figures {
    let ca = Ca::new("scale-ca");
    let heap0 = live_bytes();
    let rss0 = rss_bytes();
    let mut lh = Lighthouse::new(&ca);
    let mut buf = vec![0u8; MIN_BUFFER];
    let mut registered = 0;
    let mut in_this_second = 0;
    for i in 0..n {
        let mut c = client(&ca, lh.public, i);
        // Up to 200 certificate checks a second: the lighthouse's own budget.
        while !lh.register(&mut c, &mut buf) {
            assert!(in_this_second > 0, "registration {i} refused with a full budget");
            lh.second();
            in_this_second = 0;
            c = client(&ca, lh.public, i);
        }
        in_this_second += 1;
        registered += 1;
    }
    let reg_cpu = lh.cpu;
    let heap_total = live_bytes().saturating_sub(heap0);
    let rss_growth = rss_bytes().saturating_sub(rss0);

    let mut timer = Duration::ZERO;
    for _ in 0..4 {
        lh.now += Duration::from_millis(250);
        let (now, wall) = (lh.now, lh.wall());
        let t = thread_cpu();
        lh.node.handle_timeout(now, wall);
        while lh.node.poll_transmit().is_some() {}
        timer += thread_cpu() - t;
    }

    // Queries from one more node, for registered nodes spread over the whole range.
    lh.second();
    let mut q = client(&ca, lh.public, n + 1);
    assert!(lh.register(&mut q, &mut buf), "the querier registers");
    let mut lat = Vec::with_capacity(queries);
    for k in 0..queries {
        let target = client_ip((k * 7919) % n.max(1));
        let msg = Control::HostQuery { vpn_ip: target.into() }.to_packet(Framing::V4 { src: q.vpn_ip, dst: LH_IP });
        let TunnResult::WriteToNetwork(d) = q.tunn.encapsulate(&msg, &mut buf) else { panic!("encapsulate") };
        let d = d.to_vec();
        let before = lh.cpu;
        let back = lh.datagram(q.addr, &d);
        lat.push(lh.cpu - before);
        // The answer names the target's address.
        let reply = back.first().expect("a query reply");
        let TunnResult::WriteToTunnelV4(p, _) = q.tunn.decapsulate(Some(q.addr.ip()), reply, &mut buf) else {
            panic!("reply decrypts")
        };
        let msg = Control::decode(payload_for(p, &[ipnet::Ipv4Net::from(q.vpn_ip).into()]).expect("control").1)
            .expect("decodes");
        let Control::HostQueryReply { vpn_ip, addrs, .. } = msg else { panic!("{msg:?}") };
        assert_eq!(vpn_ip, std::net::IpAddr::V4(target));
        assert!(addrs.contains(&client_addr((k * 7919) % n.max(1))), "{addrs:?}");
    }
    lat.sort();
    let pct = |p: usize| lat.get((lat.len() * p / 100).min(lat.len().saturating_sub(1))).copied().unwrap_or_default();

    let msg = Control::MembersQuery.to_packet(Framing::V4 { src: q.vpn_ip, dst: LH_IP });
    let TunnResult::WriteToNetwork(d) = q.tunn.encapsulate(&msg, &mut buf) else { panic!("encapsulate") };
    let d = d.to_vec();
    let before = lh.cpu;
    let back = lh.datagram(q.addr, &d);
    let members_cpu = lh.cpu - before;

    Figures {
        nodes: registered,
        heap_per_node: heap_total / registered.max(1),
        heap_total,
        rss_growth,
        cpu_per_registration: reg_cpu / registered.max(1) as u32,
        timer_cpu_per_second: timer,
        query_p50: pct(50),
        query_p99: pct(99),
        members_cpu,
        members_bytes: back.iter().map(Vec::len).sum(),
        members_datagrams: back.len(),
    }
}

#[derive(Debug, Clone)]
pub struct Handshakes {
    pub count: usize,
    /// Responder CPU per handshake (initiation in, response out, first data in).
    pub responder_cpu: Duration,
    /// Both sides on one core (the initiator's boringtun work included).
    pub both_cpu: Duration,
    /// Of the responder's, how many needed a cookie round trip (over 100 handshakes a second).
    pub cookies: usize,
    /// Initiations the responder found the peer for by the sender index (no anonymous parse).
    pub by_index: u64,
}

/// Node-to-node handshakes: `peers` initiators (boringtun) each handshake `rounds` times with one
/// ordinary node, after one Hello each. With `shared_index`, every initiator uses the same
/// session index (the worst case for the responder's index hint).
pub fn handshakes(peers: usize, rounds: usize, shared_index: bool) -> Handshakes {
    let ca = Ca::new("scale-ca");
    let mut lh = Lighthouse::new(&ca);
    lh.node.set_discovery(lh.now, Discovery::default());
    let mut buf = vec![0u8; MIN_BUFFER];
    let mut clients: Vec<Client> = (0..peers)
        .map(|i| if shared_index { client_with_index(&ca, lh.public, i, 1) } else { client(&ca, lh.public, i) })
        .collect();
    for (k, c) in clients.iter_mut().enumerate() {
        if k % 150 == 0 {
            lh.second();
        }
        lh.datagram(c.addr, &wire::hello(1, c.cert.to_bytes()));
    }
    lh.cpu = Duration::ZERO;
    let start = thread_cpu();
    let (mut count, mut cookies) = (0, 0);
    for _ in 0..rounds {
        for c in &mut clients {
            // A new initiation from the same peer needs a later timestamp.
            MockClock::advance(Duration::from_millis(1));
            let TunnResult::WriteToNetwork(init) = c.tunn.format_handshake_initiation(&mut buf, true) else {
                panic!("initiation")
            };
            let mut init = init.to_vec();
            loop {
                let back = lh.datagram(c.addr, &init);
                let reply = back.first().expect("an answer to the initiation");
                if reply[0] == 3 {
                    cookies += 1;
                    let _ = c.tunn.decapsulate(Some(c.addr.ip()), reply, &mut buf);
                    let TunnResult::WriteToNetwork(i) = c.tunn.format_handshake_initiation(&mut buf, true) else {
                        panic!("initiation")
                    };
                    init = i.to_vec();
                    continue;
                }
                let TunnResult::WriteToNetwork(k) = c.tunn.decapsulate(Some(c.addr.ip()), reply, &mut buf) else {
                    panic!("response accepted")
                };
                let k = k.to_vec();
                lh.datagram(c.addr, &k);
                count += 1;
                break;
            }
        }
    }
    let both = thread_cpu() - start;
    Handshakes {
        count,
        responder_cpu: lh.cpu / count.max(1) as u32,
        both_cpu: both / count.max(1) as u32,
        cookies,
        by_index: lh.node.counters().rx_handshake_by_index,
    }
}

/// CPU of one X25519 Diffie-Hellman on this machine: the unit a handshake's cost is made of.
pub fn x25519_cost() -> Duration {
    let a = StaticSecret::from([7u8; 32]);
    let b = PublicKey::from(&StaticSecret::from([9u8; 32]));
    let t = thread_cpu();
    let mut acc = 0u8;
    for _ in 0..2000 {
        acc ^= a.diffie_hellman(&b).as_bytes()[0];
    }
    std::hint::black_box(acc);
    (thread_cpu() - t) / 2000
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    println!("size_of Tunn: {} bytes (boxed, one per peer)", std::mem::size_of::<Tunn>());
    println!("one X25519 DH: {:.1?} CPU", x25519_cost());
    let t = Instant::now();
    let f = lighthouse(n, 10_000);
    println!("lighthouse with {} registered nodes (run took {:.1?} wall):", f.nodes, t.elapsed());
    println!("  heap: {:.1} MB total, {} bytes per node", f.heap_total as f64 / 1e6, f.heap_per_node);
    println!("  RSS growth: {:.1} MB", f.rss_growth as f64 / 1e6);
    println!("  CPU per registration: {:.1?}", f.cpu_per_registration);
    println!("  timer CPU per second of operation: {:.1?}", f.timer_cpu_per_second);
    println!("  HostQuery CPU: p50 {:.1?}, p99 {:.1?}", f.query_p50, f.query_p99);
    println!(
        "  one MembersQuery: {:.1?} CPU, {} datagrams, {:.1} MB sent",
        f.members_cpu,
        f.members_datagrams,
        f.members_bytes as f64 / 1e6
    );
    let h = handshakes(256, 40, false);
    println!(
        "node-to-node handshakes: {} done ({} found by index), responder {:.1?} CPU each ({:.0}/s per core), both sides {:.1?} ({:.0}/s per core), {} cookie round trips",
        h.count,
        h.by_index,
        h.responder_cpu,
        1.0 / h.responder_cpu.as_secs_f64(),
        h.both_cpu,
        1.0 / h.both_cpu.as_secs_f64(),
        h.cookies
    );
}
