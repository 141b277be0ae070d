//! Per-peer state: its verified certificate, its WireGuard session and where it is.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use boringtun::noise::Tunn;
use ipnet::Ipv4Net;
use rand_core::{OsRng, RngCore};

use crate::cert::pool::VerifiedCert;

/// Candidate addresses kept per peer.
const MAX_CANDIDATES: usize = 8;

pub(super) struct Peer<I> {
    pub vpn_ip: Ipv4Addr,
    pub subnets: Vec<Ipv4Net>,
    pub name: String,
    pub public_key: [u8; 32],
    pub cert: VerifiedCert,
    pub policy_peer: I,
    pub tunn: Tunn,
    /// The last address an authenticated packet came from.
    pub endpoint: Option<SocketAddr>,
    /// Addresses to try when there is no working endpoint (static host map, Hello sources).
    pub candidates: Vec<SocketAddr>,
    /// A session is established and the peer has confirmed it.
    pub up: bool,
    pub last_rx: Option<Instant>,
    pub last_handshake: Option<Instant>,
    pub last_forced_handshake: Option<Instant>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// What `status` shows about a peer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerInfo {
    pub name: String,
    pub vpn_ip: Ipv4Addr,
    pub groups: Vec<String>,
    pub endpoint: Option<SocketAddr>,
    pub up: bool,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub cert_fingerprint: String,
}

impl<I> Peer<I> {
    pub fn new(cert: VerifiedCert, policy_peer: I, tunn: Tunn) -> Self {
        let d = cert.cert().details();
        Peer {
            vpn_ip: cert.cert().vpn_ip().unwrap_or(Ipv4Addr::UNSPECIFIED),
            subnets: d.subnets.iter().map(Ipv4Net::trunc).collect(),
            name: d.name.clone(),
            public_key: d.public_key,
            cert,
            policy_peer,
            tunn,
            endpoint: None,
            candidates: Vec::new(),
            up: false,
            last_rx: None,
            last_handshake: None,
            last_forced_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_packets: 0,
            tx_packets: 0,
        }
    }

    /// Whether `src` may appear as the source of packets from this peer.
    pub fn owns(&self, src: Ipv4Addr) -> bool {
        src == self.vpn_ip || self.subnets.iter().any(|n| n.contains(&src))
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

    /// The endpoint first, then every other candidate.
    pub fn all_addresses(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.endpoint.into_iter().collect();
        v.extend(
            self.candidates
                .iter()
                .filter(|c| Some(**c) != self.endpoint),
        );
        v
    }

    pub fn info(&self) -> PeerInfo {
        PeerInfo {
            name: self.name.clone(),
            vpn_ip: self.vpn_ip,
            groups: self.cert.cert().details().groups.clone(),
            endpoint: self.endpoint,
            up: self.up,
            rx_bytes: self.rx_bytes,
            tx_bytes: self.tx_bytes,
            cert_fingerprint: self.cert.cert().fingerprint().to_string(),
        }
    }
}

/// A peer we want to reach but have no certificate for yet: Hellos are out, packets wait.
pub(super) struct Pending {
    pub hello_id: u64,
    pub attempts: u32,
    pub next_try: Instant,
    pub queue: VecDeque<Vec<u8>>,
}

impl Pending {
    pub fn new(now: Instant) -> Self {
        Pending {
            hello_id: OsRng.next_u64() | 1,
            attempts: 0,
            next_try: now + Duration::ZERO,
            queue: VecDeque::new(),
        }
    }
}
