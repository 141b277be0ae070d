//! The node's protocol core: a sans-IO state machine.
//!
//! Inputs: [`Node::handle_datagram`] (underlay UDP), [`Node::handle_tun_packet`] (an IP packet
//! the host sent into the overlay), [`Node::handle_timeout`]. Outputs: the return values of the
//! two data-path calls (written into caller-owned buffers, no allocation per packet) plus queued
//! control traffic drained with [`Node::poll_transmit`], packets for the TUN with
//! [`Node::poll_tun_write`], and [`Node::poll_event`]. [`Node::poll_timeout`] says when to call
//! `handle_timeout` next. The IO shell owns sockets, the TUN and the clock.
//!
//! Peer authentication: WireGuard's handshake carries no payload, so certificates travel first
//! in cos-mesh `Hello` messages ([`wire`]). A peer is accepted only when its WireGuard static key
//! equals the public key of a certificate that verifies against the CA pool (unexpired, not
//! blocklisted), and every packet it tunnels must come from its certificate's IP or subnets.

mod exchange;
mod inbound;
mod outbound;
mod peer;
pub mod policy;
mod stats;
mod timers;
pub mod wire;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult, handshake::parse_handshake_anon};
use boringtun::x25519::{PublicKey, StaticSecret};
use ipnet::Ipv4Net;
use rand_core::{OsRng, RngCore};
use thiserror::Error;

use crate::cert::keys::HostSecret;
use crate::cert::pool::{Blocklist, CaPool, VerifiedCert, VerifyError};
use crate::cert::{Certificate, Fingerprint};
use crate::unixtime::UnixTime;
pub use peer::PeerInfo;
use peer::{Peer, Pending};
pub use policy::{Direction, Policy, Verdict};
pub use stats::Counters;

/// How often boringtun's timers run (its own device module uses 250 ms).
pub const TIMER_TICK: Duration = Duration::from_millis(250);
/// Packets held per peer while its certificate exchange runs.
const PENDING_QUEUE: usize = 64;
/// Verified certificates remembered from Hellos, awaiting the handshake that proves the key.
const KNOWN_CERTS: usize = 4096;
/// Per-source budget of certificate verifications (Ed25519 checks) per second.
const VERIFY_PER_SOURCE_PER_SEC: u32 = 20;
/// Smallest buffer the data-path calls accept (boringtun's limits plus the largest packet).
pub const MIN_BUFFER: usize = 65_535 + 32;

/// Static settings of a node.
pub struct NodeConfig {
    pub cert: Certificate,
    pub key: HostSecret,
    pub pool: CaPool,
    pub blocklist: Blocklist,
    /// Underlay addresses of peers known in advance (`static_host_map`).
    pub static_hosts: HashMap<Ipv4Addr, Vec<SocketAddr>>,
    /// `tun.unsafe_routes`: networks reached through a peer whose certificate lists them.
    pub unsafe_routes: Vec<(Ipv4Net, Ipv4Addr)>,
    /// Delay between Hello retries (`handshakes.try_interval`, linear backoff) and their number.
    pub try_interval: Duration,
    pub retries: u32,
    /// Disconnect peers whose certificate stops verifying (expiry, blocklist) (`pki.disconnect_invalid`).
    pub disconnect_invalid: bool,
}

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("our own certificate is not valid: {0}")]
    OwnCert(#[from] VerifyError),
    #[error("our certificate has no overlay IP")]
    NoIp,
    #[error("the private key does not match the certificate's public key")]
    KeyMismatch,
}

/// A datagram to send on the underlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dst: SocketAddr,
    pub data: Vec<u8>,
}

/// Things worth logging or showing in `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A WireGuard session with the peer is up (first time, or again after a restart).
    PeerUp {
        name: String,
        vpn_ip: Ipv4Addr,
        endpoint: SocketAddr,
    },
    /// The peer was removed; `reason` is in the operator's words.
    PeerRemoved {
        name: String,
        vpn_ip: Ipv4Addr,
        reason: String,
    },
    /// The peer's address changed (roaming).
    Roamed {
        name: String,
        from: SocketAddr,
        to: SocketAddr,
    },
    /// A certificate was refused; `source` is the underlay address it came from.
    CertRejected { source: SocketAddr, reason: String },
    /// No answer from a peer's addresses after all retries.
    HandshakeTimedOut { vpn_ip: Ipv4Addr },
}

/// The protocol core of one node.
pub struct Node<P: Policy> {
    cert: Arc<Certificate>,
    hello_cert: Vec<u8>,
    secret: StaticSecret,
    public: PublicKey,
    vpn_ip: Ipv4Addr,
    vpn_net: Ipv4Net,
    pool: CaPool,
    blocklist: Blocklist,
    static_hosts: HashMap<Ipv4Addr, Vec<SocketAddr>>,
    unsafe_routes: Vec<(Ipv4Net, Ipv4Addr)>,
    try_interval: Duration,
    retries: u32,
    disconnect_invalid: bool,
    policy: P,

    peers: HashMap<u32, Peer<P::Peer>>,
    by_vpn_ip: HashMap<Ipv4Addr, u32>,
    by_key: HashMap<[u8; 32], u32>,
    pending: HashMap<Ipv4Addr, Pending>,
    known_certs: HashMap<[u8; 32], (VerifiedCert, Instant)>,
    held_inits: HashMap<SocketAddr, (Vec<u8>, Instant)>,
    verify_budget: HashMap<IpAddr, u32>,
    unknown_index_budget: u32,
    next_index: u32,

    transmits: VecDeque<Transmit>,
    tun_writes: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    next_tick: Option<Instant>,
    next_second: Instant,
    counters: Counters,
    scratch: Vec<u8>,
}

impl<P: Policy> Node<P> {
    pub fn new(
        cfg: NodeConfig,
        policy: P,
        now: Instant,
        wall: UnixTime,
    ) -> Result<Self, NodeError> {
        cfg.pool.verify(&cfg.cert, wall, &cfg.blocklist)?;
        let ip = *cfg.cert.details().ips.first().ok_or(NodeError::NoIp)?;
        if cfg.key.public().0 != cfg.cert.details().public_key {
            return Err(NodeError::KeyMismatch);
        }
        let secret = StaticSecret::from(*cfg.key.bytes());
        let public = PublicKey::from(&secret);
        Ok(Node {
            hello_cert: cfg.cert.to_bytes().to_vec(),
            cert: Arc::new(cfg.cert),
            secret,
            public,
            vpn_ip: ip.addr(),
            vpn_net: ip.trunc(),
            pool: cfg.pool,
            blocklist: cfg.blocklist,
            static_hosts: cfg.static_hosts,
            unsafe_routes: cfg.unsafe_routes,
            try_interval: cfg.try_interval,
            retries: cfg.retries,
            disconnect_invalid: cfg.disconnect_invalid,
            policy,
            peers: HashMap::new(),
            by_vpn_ip: HashMap::new(),
            by_key: HashMap::new(),
            pending: HashMap::new(),
            known_certs: HashMap::new(),
            held_inits: HashMap::new(),
            verify_budget: HashMap::new(),
            unknown_index_budget: 10,
            next_index: (OsRng.next_u32() & 0x00ff_ffff).max(1),
            transmits: VecDeque::new(),
            tun_writes: VecDeque::new(),
            events: VecDeque::new(),
            next_tick: None,
            next_second: now + Duration::from_secs(1),
            counters: Counters::default(),
            scratch: vec![0; MIN_BUFFER],
        })
    }

    pub fn vpn_ip(&self) -> Ipv4Addr {
        self.vpn_ip
    }

    pub fn cert(&self) -> &Arc<Certificate> {
        &self.cert
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn policy_mut(&mut self) -> &mut P {
        &mut self.policy
    }

    /// A snapshot of every peer with a certificate, for `status`.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let mut v: Vec<_> = self.peers.values().map(|p| p.info()).collect();
        v.sort_by_key(|p| p.vpn_ip);
        v
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_tun_write(&mut self) -> Option<Vec<u8>> {
        self.tun_writes.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Node::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.next_second;
        if let Some(tick) = self.next_tick {
            t = t.min(tick);
        }
        for p in self.pending.values() {
            t = t.min(p.next_try);
        }
        t
    }

    /// Replaces the trust settings (reload): peers whose certificates no longer verify are
    /// disconnected; tunnels of the others stay up.
    pub fn update_trust(
        &mut self,
        pool: CaPool,
        blocklist: Blocklist,
        wall: UnixTime,
    ) -> Result<(), VerifyError> {
        pool.verify(&self.cert, wall, &blocklist)?;
        self.pool = pool;
        self.blocklist = blocklist;
        self.known_certs.clear();
        self.recheck_peers(wall, true);
        Ok(())
    }

    /// Replaces the static host map (reload). Existing sessions keep their endpoints.
    pub fn set_static_hosts(&mut self, hosts: HashMap<Ipv4Addr, Vec<SocketAddr>>) {
        for (ip, addrs) in &hosts {
            if let Some(p) = self.by_vpn_ip.get(ip).and_then(|i| self.peers.get_mut(i)) {
                p.add_candidates(addrs);
            }
        }
        self.static_hosts = hosts;
    }
}

fn is_handshake_init(d: &[u8]) -> bool {
    d.len() == 148 && d[0] == 1
}

fn ipv4_dst(packet: &[u8]) -> Option<Ipv4Addr> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    Some(Ipv4Addr::new(
        packet[16], packet[17], packet[18], packet[19],
    ))
}
