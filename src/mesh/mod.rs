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
//! in cos-mesh `Hello` messages ([`wire`]) or in a lighthouse's answer. A peer is accepted only
//! when its WireGuard static key equals the public key of a certificate that verifies against
//! the CA pool (unexpired, not blocklisted), and every packet it tunnels must come from its
//! certificate's IP or subnets.
//!
//! Discovery ([`control`] messages inside tunnels): nodes report their addresses to every
//! lighthouse; a node that lacks a peer's address asks them, gets addresses, relays and the
//! certificate, and the lighthouse asks the peer to punch toward the querier. When no direct
//! path answers, the handshake (and then the traffic) goes through a relay.
//! A direct path that carries traffic is probed (`path_check`); when our datagrams stop
//! arriving (even if the peer's still reach us) traffic moves to a relay within about 2 s.
//!
//! Identity: a node is named by the first network of its certificate, the IPv4 one when it has
//! one ([`Certificate::identity`]), so an IPv6-only node is named by its v6 address. Peers are
//! indexed by identity and by every address of their certificate; lighthouse and relay lists
//! may name a node by any of its addresses.
//!
//! Determinism: time comes only from the `now` arguments and every random choice from a RNG
//! seeded by [`NodeConfig::seed`], so a simulation replays exactly.
//!
//! The parts. [`Node`] owns one value of each state-holding part and routes between them; a
//! method that needs one part lives on that part (and is tested there), a method that needs
//! several is a `Node` method in the file of its concern:
//! - `mod.rs`: [`Node`] (the router), its settings, the public API and the send helpers
//!   (`send_path`, `send_control`);
//! - `identity`: `Identity`, who we are: certificate and Hello bytes, keys, overlay addresses
//!   and networks, routing of overlay packets (own networks, unsafe routes), renewal checks;
//! - `admission`: `Admission`, what strangers must show: CA pool and blocklist, the cache of
//!   verified certificates, initiations held for their Hello, the per-second budgets
//!   (`budget`) and boringtun's handshake limiter;
//! - `peer_table`: `PeerTable`, the peers by session index with their lookups (overlay IP,
//!   every certificate address, key, the peer's own index) kept consistent by insert/remove;
//!   `PendingPeers`, peers being met and their waiting packets, bounded;
//! - `peer`, `session` and `path_check`: one peer's state and the decisions it makes alone
//!   (`Peer::tick`: boringtun's timers, the path check and our fast retries; `Peer::heard_from`:
//!   roaming), its session as one state enum (handshaking, up, rekeying, expired), and whether
//!   its direct path still carries ours;
//! - `discovery`: `DiscoveryState` (settings, lighthouse registrations, answers, member lists,
//!   scheduled punches, report timers) and the `Node` methods that handle control messages
//!   (`control`: their wire format), queries, punching, relays and path probes;
//! - `output`: `Output`, the queues drained by `poll_transmit`/`poll_tun_write`/`poll_event`,
//!   and the counters (`stats`); `event`: what the operator is told, typed with levels;
//! - `ping`: `Pings`, `cos-mesh ping`s running and done, and their `Node` methods;
//! - `wire`: underlay datagram classification ([`wire::WgType`], Hello, UnknownIndex, punches);
//! - `inbound` (underlay → TUN), `outbound` (TUN → underlay), `exchange` (Hellos, peer
//!   install/refresh/removal) and `timers` (boringtun timers, retries, the once-a-second work):
//!   `Node` methods only, the routes between the parts;
//! - `test_support` (tests only): a CA, its certificates and peers holding them.
//!
//! A datagram's way in: `handle_datagram` (inbound) → `wire::classify` →
//! - Hello/HelloReply → `exchange`: `Admission::verify` (cache, then budget, then signature),
//!   a reply under the Hello budget, a held initiation released, or `install_peer` (into the
//!   `PeerTable`, with what `DiscoveryState` knows; the `PendingPeers` packets then leave);
//! - a WireGuard initiation → the `Admission` limiter (mac1, cookies) → the peer its sender
//!   index hints at (`PeerTable::index_of_remote`), else `parse_handshake_anon` → a peer by key,
//!   or a new peer from the `Admission` certificate cache (else the initiation is held);
//! - other WireGuard messages → the peer by receiver index → `offer`: its `Tunn` decrypts →
//!   `authenticated` (roaming by `Peer::heard_from`, session state, `DiscoveryState` report timer) → a control
//!   message (`discovery::handle_control`) or a relayed datagram (back into `receive` once) or
//!   an IP packet: source must belong to the peer, destination to us (`Identity`), then the
//!   firewall (`Policy`) → returned for the TUN. Replies and events wait in `Output`.

// House rules for the core: no panicking shortcuts outside tests, no unsafe code.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![forbid(unsafe_code)]

mod admission;
mod budget;
pub mod control;
mod discovery;
mod event;
mod exchange;
mod identity;
mod inbound;
mod outbound;
mod output;
mod path_check;
mod peer;
mod peer_table;
pub mod ping;
pub mod policy;
mod session;
mod stats;
#[cfg(test)]
mod test_support;
mod timers;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::TunnResult;
use ipnet::IpNet;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use thiserror::Error;

use crate::cert::Certificate;
use crate::cert::keys::HostSecret;
use crate::cert::pool::{Blocklist, CaPool, VerifyError};
use crate::unixtime::UnixTime;
use admission::Admission;
use control::Control;
use discovery::DiscoveryState;
pub use discovery::Registered;
pub use event::{CertRefusal, CertSource, Event, Level, RemoveReason, SessionEnd};
use identity::Identity;
use output::Output;
pub use output::Transmit;
pub use peer::{Path, PeerInfo};
use peer_table::{PeerTable, PendingPeers};
pub use ping::{PingAnswer, PingError, PingFailure, PingId, PingOutcome, Probe, ProbeVerdict};
pub use policy::{Direction, Policy, Verdict};
pub use stats::Counters;

/// How often boringtun's timers run (its own device module uses 250 ms).
pub const TIMER_TICK: Duration = Duration::from_millis(250);
/// Smallest buffer the data-path calls accept (boringtun's limits plus the largest packet).
pub const MIN_BUFFER: usize = 65_535 + 32;
/// A peer whose session has ended and that has been silent this long is forgotten (any new
/// packet meets it again); lighthouses and our relays are kept.
const IDLE_PEER: Duration = Duration::from_secs(600);

/// Static settings of a node.
pub struct NodeConfig {
    pub cert: Certificate,
    pub key: HostSecret,
    pub pool: CaPool,
    pub blocklist: Blocklist,
    /// Underlay addresses of peers known in advance (`static_host_map`), by any overlay
    /// address of the peer's certificate (IPv4 or IPv6).
    pub static_hosts: HashMap<IpAddr, Vec<SocketAddr>>,
    /// `tun.unsafe_routes`: networks (v4 or v6) reached through a peer (named by any of its
    /// overlay addresses) whose certificate lists them.
    pub unsafe_routes: Vec<(IpNet, IpAddr)>,
    /// Delay between Hello retries (`handshakes.try_interval`, linear backoff) and their number.
    pub try_interval: Duration,
    pub retries: u32,
    /// Disconnect peers whose certificate stops verifying (expiry, blocklist) (`pki.disconnect_invalid`).
    pub disconnect_invalid: bool,
    pub discovery: Discovery,
    /// Seeds the node's random choices (session indexes, Hello ids): the daemon draws it from
    /// the OS, a simulation fixes it so a run repeats exactly. (boringtun's keys and nonces use
    /// its own OS randomness; they never steer the node.)
    pub seed: u64,
}

/// Lighthouse, punching and relay settings (Nebula's `lighthouse`, `punchy`, `relay`).
#[derive(Debug, Clone)]
pub struct Discovery {
    pub am_lighthouse: bool,
    /// Overlay addresses of the lighthouses, v4 or v6, any address of each lighthouse's
    /// certificate (their underlay addresses come from the static host map).
    pub lighthouses: Vec<IpAddr>,
    /// How often to report our addresses to the lighthouses.
    pub interval: Duration,
    /// Extra addresses to report (a public address behind a port forward, say).
    pub advertise_addrs: Vec<SocketAddr>,
    /// Send a punch to idle peers' addresses every 10 s to keep NAT mappings open.
    pub punch: bool,
    /// After a punch request, also start a handshake toward the querier (double NAT).
    pub respond: bool,
    pub punch_delay: Duration,
    pub respond_delay: Duration,
    pub am_relay: bool,
    /// Relays that serve this node (announced to the lighthouses), by any overlay address.
    pub relays: Vec<IpAddr>,
    pub use_relays: bool,
    /// `lighthouse.remote_allow_list`: which underlay addresses may be used for peers.
    pub remote_allow_list: Vec<(IpNet, bool)>,
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            am_lighthouse: false,
            lighthouses: vec![],
            interval: Duration::from_secs(10),
            advertise_addrs: vec![],
            punch: true,
            respond: true,
            punch_delay: Duration::from_millis(100),
            respond_delay: Duration::from_millis(500),
            am_relay: false,
            relays: vec![],
            use_relays: true,
            remote_allow_list: vec![],
        }
    }
}

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("our own certificate is not valid: {0}")]
    OwnCert(#[from] VerifyError),
    #[error("our certificate has no network")]
    NoIp,
    #[error("the private key does not match the certificate's public key")]
    KeyMismatch,
}

/// Why [`Node::reload_trust`] refused a new PKI (the running one stays).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TrustReloadError {
    #[error(
        "pki.cert: the new certificate is for {} but this node runs as {running}; changing the overlay IP needs a restart",
        new.map_or_else(|| "no overlay IP".to_string(), |ip| ip.to_string())
    )]
    OverlayIpChanged { new: Option<IpAddr>, running: IpAddr },
    /// Nebula refuses this reload too: the TUN's addresses and every peer's view of us follow
    /// the networks.
    #[error(
        "pki.cert: the new certificate's networks ({new}) differ from those this node runs with ({running}); changing them needs a restart"
    )]
    NetworksChanged { new: String, running: String },
    #[error("pki.cert: the new certificate is for another key; changing the key needs a restart")]
    KeyChanged,
    #[error("pki.cert: {0}")]
    CertInvalid(#[from] VerifyError),
}

/// The protocol core of one node: a router between its parts.
pub struct Node<P: Policy> {
    /// Who we are: certificate, keys, addresses, routes.
    id: Identity,
    /// What strangers must show: CA pool, certificate cache, held initiations, budgets.
    admission: Admission,
    /// Peers with a certificate, and every way of finding one.
    peers: PeerTable<P::Peer>,
    /// Peers being met, and the packets waiting for them.
    pending: PendingPeers,
    /// Lighthouses, registrations, punches, relays.
    disc: DiscoveryState,
    /// `cos-mesh ping`s running and finished.
    pings: ping::Pings,
    /// Queued datagrams, TUN packets, events, and the counters.
    out: Output,
    policy: P,
    static_hosts: HashMap<IpAddr, Vec<SocketAddr>>,
    try_interval: Duration,
    retries: u32,
    disconnect_invalid: bool,
    /// Every random choice the node makes comes from here (seeded by [`NodeConfig::seed`]).
    rng: ChaCha8Rng,
    next_tick: Option<Instant>,
    next_second: Instant,
    scratch: Vec<u8>,
}

impl<P: Policy> Node<P> {
    pub fn new(cfg: NodeConfig, policy: P, now: Instant, wall: UnixTime) -> Result<Self, NodeError> {
        cfg.pool.verify(&cfg.cert, wall, &cfg.blocklist)?;
        let id = Identity::new(cfg.cert, &cfg.key, cfg.unsafe_routes)?;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let first_index = rng.next_u32();
        Ok(Node {
            rng,
            admission: Admission::new(cfg.pool, cfg.blocklist, &id.public),
            id,
            peers: PeerTable::new(first_index),
            pending: PendingPeers::default(),
            disc: DiscoveryState::new(cfg.discovery, now),
            pings: ping::Pings::default(),
            out: Output::default(),
            policy,
            static_hosts: cfg.static_hosts,
            try_interval: cfg.try_interval,
            retries: cfg.retries,
            disconnect_invalid: cfg.disconnect_invalid,
            next_tick: None,
            next_second: now + Duration::from_secs(1),
            scratch: vec![0; MIN_BUFFER],
        })
    }

    /// Our identity on the overlay (see [`Certificate::identity`]).
    pub fn vpn_ip(&self) -> IpAddr {
        self.id.vpn_ip
    }

    /// The network of our identity (the overlay network as this node sees it).
    pub fn vpn_net(&self) -> IpNet {
        self.id.vpn_net
    }

    pub fn cert(&self) -> &Arc<Certificate> {
        &self.id.cert
    }

    pub fn counters(&self) -> &Counters {
        &self.out.counters
    }

    pub fn policy_mut(&mut self) -> &mut P {
        &mut self.policy
    }

    pub fn is_lighthouse(&self) -> bool {
        self.disc.settings.am_lighthouse
    }

    /// A snapshot of every peer with a certificate, for `status`.
    pub fn peers(&self, now: Instant) -> Vec<PeerInfo> {
        let mut v: Vec<_> = self.peers.values().map(|p| p.info(now)).collect();
        v.sort_by_key(|p| p.vpn_ip);
        v
    }

    /// The direct endpoints of peers whose session is up (the daemon gives each a receive
    /// socket of its own).
    pub fn established_direct_paths(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.peers.values().filter(|p| p.session.is_up()).filter_map(|p| match p.endpoint {
            Some(Path::Direct(a)) => Some(a),
            _ => None,
        })
    }

    /// The networks (v4 and v6) of the certificate of the peer at `vpn_ip`, if it is a peer.
    pub fn peer_networks(&self, vpn_ip: IpAddr) -> Option<&[IpNet]> {
        self.peers.by_vpn_ip(vpn_ip).map(|p| p.cert.cert().networks())
    }

    /// Every member of the mesh we know of, this node included: on a lighthouse the
    /// registered nodes, elsewhere what the lighthouses last listed, plus our peers.
    pub fn members(&self) -> Vec<Arc<Certificate>> {
        let mut all: BTreeMap<IpAddr, Arc<Certificate>> = self.disc.members.clone();
        for (ip, cert) in self.disc.registered_certs() {
            all.insert(ip, cert.clone());
        }
        for p in self.peers.values() {
            all.insert(p.vpn_ip, p.cert.cert().clone());
        }
        all.insert(self.id.vpn_ip, self.id.cert.clone());
        all.into_values().collect()
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    #[must_use]
    pub fn poll_tun_write(&mut self) -> Option<Vec<u8>> {
        self.out.tun_writes.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    /// When [`Node::handle_timeout`] must next run.
    #[must_use]
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.next_second.min(self.disc.deadline());
        for at in [self.next_tick, self.pending.next_try(), self.pings.deadline()].into_iter().flatten() {
            t = t.min(at);
        }
        t
    }

    /// Reload of the PKI: a new CA pool, blocklist and (possibly renewed) certificate for this
    /// node, checked together before anything changes. The certificate must keep our overlay IP
    /// and key (peers know us by both) and verify against the new pool, so a node whose old
    /// certificate expired recovers with a reload. Peers whose certificates no longer verify
    /// are disconnected; the tunnels of the others stay up.
    pub fn reload_trust(
        &mut self,
        pool: CaPool,
        blocklist: Blocklist,
        cert: Certificate,
        wall: UnixTime,
    ) -> Result<(), TrustReloadError> {
        self.id.check_renewal(&cert)?;
        pool.verify(&cert, wall, &blocklist)?;
        self.admission.replace_trust(pool, blocklist);
        self.id.renew(cert);
        self.recheck_peers(wall, true);
        Ok(())
    }

    /// The lighthouses and whether a session with each is up, for `status`.
    pub fn lighthouse_status(&self) -> Vec<(IpAddr, bool)> {
        self.disc
            .settings
            .lighthouses
            .iter()
            .map(|ip| (*ip, self.peers.by_addr(*ip).is_some_and(|p| p.session.is_up())))
            .collect()
    }

    /// Replaces the static host map (reload). Existing sessions keep their endpoints.
    pub fn set_static_hosts(&mut self, hosts: HashMap<IpAddr, Vec<SocketAddr>>) {
        for (ip, addrs) in &hosts {
            if let Some(p) = self.peers.by_addr_mut(*ip) {
                p.add_candidates(addrs);
            }
        }
        self.static_hosts = hosts;
    }

    /// The underlay addresses this node listens on (the IO shell knows its interfaces); they
    /// are reported to the lighthouses.
    ///
    /// When they change (the host moved, a new lease), the node re-registers at once and asks
    /// the lighthouses about its peers again: the answers make each peer punch toward the new
    /// addresses (needed when the peer sits behind a port-restricted NAT) and trigger a direct
    /// handshake, so tunnels follow the move.
    pub fn set_local_addrs(&mut self, now: Instant, addrs: Vec<SocketAddr>) {
        if addrs == self.disc.local_addrs {
            return;
        }
        let moved = !self.disc.local_addrs.is_empty();
        self.disc.local_addrs = addrs;
        if moved {
            // Paths that failed from the old address may work from the new one.
            for p in self.peers.values_mut() {
                p.path_check.reset_failure();
            }
            self.disc.next_update = now;
            self.requery_peers(now, |_| true);
        }
    }

    /// Reloadable discovery settings (`lighthouse`, `punchy`, `relay`).
    pub fn set_discovery(&mut self, now: Instant, disc: Discovery) {
        self.disc.settings = disc;
        self.disc.next_update = now;
    }

    // ----- sending helpers shared by the submodules ---------------------------------------

    /// A working buffer; the scratch one unless a caller up the stack holds it.
    fn take_buffer(&mut self) -> Vec<u8> {
        let b = std::mem::take(&mut self.scratch);
        if b.len() >= MIN_BUFFER { b } else { vec![0; MIN_BUFFER] }
    }

    fn put_buffer(&mut self, b: Vec<u8>) {
        if self.scratch.len() < MIN_BUFFER {
            self.scratch = b;
        }
    }

    /// Sends a datagram along a path: straight out, or wrapped for a relay.
    fn send_path(&mut self, now: Instant, path: Path, data: Vec<u8>) {
        match path {
            Path::Direct(dst) => self.out.send(dst, data),
            Path::Relay { relay, peer } => {
                let relay_is_direct =
                    self.peers.by_addr(relay).is_none_or(|p| p.endpoint.is_none_or(|e| e.is_direct()));
                if relay_is_direct {
                    self.send_control(now, relay, Control::RelayTo { peer, datagram: data });
                }
            }
        }
    }

    /// Sends a control message to a peer (by any of its overlay addresses) through its tunnel,
    /// establishing it if needed. Control messages bypass the firewall: they are consumed by
    /// the peer's daemon. Nothing is sent to a node with which we share no address family.
    fn send_control(&mut self, now: Instant, dst: IpAddr, msg: Control) {
        let idx = self.peers.index_of_addr(dst);
        let framing = match idx.and_then(|i| self.peers.get(i)) {
            Some(p) => self.id.framing_to(p.cert.cert()),
            None => self.id.framing_toward(dst),
        };
        let Some(framing) = framing else {
            self.out.counters.tx_control_no_family += 1;
            return;
        };
        let packet = msg.to_packet(framing);
        match idx {
            Some(idx) => {
                let mut buf = vec![0; wire::encapsulate_len(packet.len())];
                if let Some((to, d)) = self.encapsulate(now, idx, &packet, &mut buf, true) {
                    let data = d.to_vec();
                    self.out.send(to, data);
                }
            }
            None => self.queue_pending(now, dst, packet, true),
        }
    }

    /// Sends a control message to peer `idx` through its session, on `path` rather than the
    /// peer's endpoint (a probe of one path). Nothing is sent without a session.
    fn send_control_on(&mut self, now: Instant, idx: u32, msg: &Control, path: Path) {
        let Some(peer) = self.peers.get_mut(idx) else { return };
        let Some(framing) = self.id.framing_to(peer.cert.cert()) else { return };
        let packet = msg.to_packet(framing);
        let mut buf = vec![0; wire::encapsulate_len(packet.len())];
        if let TunnResult::WriteToNetwork(d) = peer.tunn.encapsulate(&packet, &mut buf)
            && !wire::is_handshake_init(d)
        {
            let data = d.to_vec();
            self.send_path(now, path, data);
        }
    }
}

/// Appends the items not already present, keeping order.
fn push_unique<T: PartialEq + Copy>(v: &mut Vec<T>, items: impl IntoIterator<Item = T>) {
    for i in items {
        if !v.contains(&i) {
            v.push(i);
        }
    }
}
