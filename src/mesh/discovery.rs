//! Discovery across environments (Nebula's model): nodes report their addresses to every
//! lighthouse; lighthouses answer queries with addresses, relays and the certificate, and
//! ask the target to punch toward the querier; relays forward end-to-end encrypted datagrams.
//! Several lighthouses share nothing: a node talks to all of them and any one can answer.
//!
//! [`DiscoveryState`] holds what discovery knows and plans (registrations on a lighthouse,
//! answers and member lists elsewhere, punches due); the `Node` methods here route control
//! messages between it and the peers.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::TunnResult;
use ipnet::IpNet;

use super::admission::CertOffer;
use super::control::{self, Control};
use super::event::{CertSource, Event};
use super::peer::{Path, Peer};
use super::peer_table::{PeerTable, cert_addrs};
use super::session::InitInFlight;
use super::{Discovery, Node, Policy, push_unique, wire};
use crate::cert::Certificate;
use crate::cert::pool::VerifiedCert;
use crate::unixtime::UnixTime;

/// A lighthouse's answer about one node.
struct Found {
    /// The overlay address asked about (any address of the node's certificate).
    vpn_ip: IpAddr,
    addrs: Vec<SocketAddr>,
    relays: Vec<IpAddr>,
    cert: Vec<u8>,
}

/// What a lighthouse holds for a registered node, for its `members` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The node's identity (its certificate's first network, IPv4 when it has one).
    pub vpn_ip: IpAddr,
    /// The underlay addresses queriers are told: the one the node is heard from (its NAT's,
    /// say) first, then those it reported.
    pub underlay: Vec<SocketAddr>,
    /// The relays the node said serve it.
    pub relays: Vec<IpAddr>,
    /// How long ago its last report arrived.
    pub ago: Duration,
}

/// Certificates per members reply (keeps each message well under the MTU).
const MEMBERS_PER_REPLY: usize = 3;
/// How often keepalive punches go to idle peers (`punchy.punch`).
const PUNCH_EVERY: Duration = Duration::from_secs(10);
/// How often a node pings its relays. The relay learns the node's address from these: when the
/// node's NAT forgets its mapping (a reboot, a flush) and hands out a new public port, a node
/// that only receives is reachable through the relay again after its next ping, so this bounds
/// that outage (it was `lighthouse.interval`, 5 to 10 s). A ping is ~100 bytes.
const RELAY_KEEPALIVE_EVERY: Duration = Duration::from_secs(2);
/// A registration not renewed for this many report intervals (and at least a minute) is dropped.
const REGISTRATION_KEPT_INTERVALS: u32 = 6;
const REGISTRATION_KEPT_AT_LEAST: Duration = Duration::from_secs(60);

/// A node the lighthouse knows: its certificate and what it reported.
struct Registration {
    cert: VerifiedCert,
    reported: Vec<SocketAddr>,
    relays: Vec<IpAddr>,
    seen: Instant,
}

/// What a lighthouse told us about a peer.
#[derive(Default, Clone)]
pub(super) struct Discovered {
    pub addrs: Vec<SocketAddr>,
    pub relays: Vec<IpAddr>,
}

/// Work scheduled for later (punches wait `punchy.delay`).
pub(super) enum Scheduled {
    Punch(Vec<SocketAddr>),
    Respond(IpAddr),
}

/// Discovery's own state: its settings, what it learned and what it has planned.
pub(super) struct DiscoveryState {
    pub settings: Discovery,
    /// The underlay addresses we listen on (reported to the lighthouses).
    pub local_addrs: Vec<SocketAddr>,
    /// What the lighthouses told us, by the peer's identity.
    discovered: HashMap<IpAddr, Discovered>,
    /// On a lighthouse: the registered nodes, by identity.
    registrations: HashMap<IpAddr, Registration>,
    /// On a lighthouse: every overlay address (v4 and v6) of a registered certificate → the
    /// registration's identity.
    registered_addrs: HashMap<IpAddr, IpAddr>,
    /// The mesh's members as a lighthouse last listed them.
    pub members: BTreeMap<IpAddr, Arc<Certificate>>,
    /// Member lists being received, per lighthouse.
    members_incoming: HashMap<IpAddr, BTreeMap<IpAddr, Arc<Certificate>>>,
    scheduled: Vec<(Instant, Scheduled)>,
    /// Next address report to the lighthouses.
    pub next_update: Instant,
    next_punch: Instant,
    next_relay_ping: Instant,
}

impl DiscoveryState {
    pub fn new(settings: Discovery, now: Instant) -> Self {
        DiscoveryState {
            settings,
            local_addrs: vec![],
            discovered: HashMap::new(),
            registrations: HashMap::new(),
            registered_addrs: HashMap::new(),
            members: BTreeMap::new(),
            members_incoming: HashMap::new(),
            scheduled: vec![],
            next_update: now,
            next_punch: now + PUNCH_EVERY,
            next_relay_ping: now,
        }
    }

    /// When discovery next has work: an address report or a scheduled punch.
    pub fn deadline(&self) -> Instant {
        self.scheduled.iter().map(|(at, _)| *at).fold(self.next_update, Instant::min)
    }

    /// Whether the peer whose identity is `ip` is one of our lighthouses (which the settings
    /// may name by any of its addresses).
    pub fn is_lighthouse<I>(&self, peers: &PeerTable<I>, ip: IpAddr) -> bool {
        peers.names(&self.settings.lighthouses, ip)
    }

    /// Whether `lighthouse.remote_allow_list` lets us use this underlay address. The most
    /// specific rule wins; with no match, an address family whose rules all say the same
    /// thing defaults to the opposite, otherwise to allowed (Nebula's semantics).
    pub fn remote_allowed(&self, ip: IpAddr) -> bool {
        let rules: Vec<&(IpNet, bool)> =
            self.settings.remote_allow_list.iter().filter(|(n, _)| n.addr().is_ipv4() == ip.is_ipv4()).collect();
        if let Some((_, allow)) = rules.iter().filter(|(n, _)| n.contains(&ip)).max_by_key(|(n, _)| n.prefix_len()) {
            return *allow;
        }
        match rules.first() {
            Some((_, first)) if rules.iter().all(|(_, a)| a == first) => !first,
            _ => true,
        }
    }

    /// What a lighthouse said about the peer at `ip`.
    pub fn discovered(&self, ip: IpAddr) -> Option<&Discovered> {
        self.discovered.get(&ip)
    }

    /// Remembers a lighthouse's answer about `owner`.
    fn learned(&mut self, owner: IpAddr, addrs: &[SocketAddr], relays: &[IpAddr]) {
        self.discovered.insert(owner, Discovered { addrs: addrs.to_vec(), relays: relays.to_vec() });
    }

    /// Whether discovery says the peer whose identity is `relay` serves `origin` (an identity
    /// too): it serves us (`relay.relays`), or a lighthouse said it serves `origin`. The lists
    /// may name the relay by any of its addresses.
    fn relay_serves<I>(&self, peers: &PeerTable<I>, relay: IpAddr, origin: IpAddr) -> bool {
        peers.names(&self.settings.relays, relay)
            || self.discovered.get(&origin).is_some_and(|d| peers.names(&d.relays, relay))
    }

    /// A lighthouse asked us to punch toward `vpn_ip` at `addrs` (and, with `punchy.respond`,
    /// to start a handshake toward it).
    fn punch_requested(&mut self, now: Instant, vpn_ip: IpAddr, addrs: Vec<SocketAddr>) {
        self.discovered.entry(vpn_ip).or_default().addrs = addrs.clone();
        self.scheduled.push((now + self.settings.punch_delay, Scheduled::Punch(addrs)));
        if self.settings.respond {
            self.scheduled.push((now + self.settings.respond_delay, Scheduled::Respond(vpn_ip)));
        }
    }

    /// Whether the address report is due; if so the next one is scheduled.
    fn update_due(&mut self, now: Instant) -> bool {
        let due = now >= self.next_update;
        if due {
            self.next_update = now + self.settings.interval;
        }
        due
    }

    /// Whether our relays' keepalive is due; if so the next one is scheduled.
    fn relay_ping_due(&mut self, now: Instant) -> bool {
        let due = now >= self.next_relay_ping;
        if due {
            self.next_relay_ping = now + RELAY_KEEPALIVE_EVERY;
        }
        due
    }

    /// Whether keepalive punches are on and due; if so the next ones are scheduled.
    fn punch_due(&mut self, now: Instant) -> bool {
        let due = self.settings.punch && now >= self.next_punch;
        if due {
            self.next_punch = now + PUNCH_EVERY;
        }
        due
    }

    /// The scheduled work due at `now`, in the order it was scheduled.
    fn take_due(&mut self, now: Instant) -> Vec<Scheduled> {
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.scheduled).into_iter().partition(|(t, _)| *t <= now);
        self.scheduled = later;
        due.into_iter().map(|(_, job)| job).collect()
    }

    /// On a lighthouse: `owner` reported its addresses and relays.
    fn register(
        &mut self,
        now: Instant,
        owner: IpAddr,
        cert: VerifiedCert,
        reported: Vec<SocketAddr>,
        relays: Vec<IpAddr>,
    ) {
        for addr in cert_addrs(cert.cert()) {
            self.registered_addrs.insert(addr, owner);
        }
        self.registrations.insert(owner, Registration { cert, reported, relays, seen: now });
    }

    /// Forgets the registration of `owner` (its peer is gone).
    pub fn unregister(&mut self, owner: IpAddr) {
        self.registrations.remove(&owner);
    }

    /// Drops registrations not renewed for a while.
    fn expire_registrations(&mut self, now: Instant) {
        let kept = (self.settings.interval * REGISTRATION_KEPT_INTERVALS).max(REGISTRATION_KEPT_AT_LEAST);
        self.registrations.retain(|_, r| now.duration_since(r.seen) < kept);
        let registrations = &self.registrations;
        self.registered_addrs.retain(|_, owner| registrations.contains_key(owner));
    }

    /// The registration whose certificate holds overlay address `ip`, and its identity:
    /// registrations are kept by identity, and indexed by every network of the certificate.
    fn registration_of(&self, ip: IpAddr) -> Option<(IpAddr, &Registration)> {
        let owner = if self.registrations.contains_key(&ip) { ip } else { *self.registered_addrs.get(&ip)? };
        let reg = self.registrations.get(&owner)?;
        cert_addrs(reg.cert.cert()).any(|a| a == ip).then_some((owner, reg))
    }

    /// The registered nodes' certificates, by overlay IP.
    pub fn registered_certs(&self) -> impl Iterator<Item = (IpAddr, &Arc<Certificate>)> {
        self.registrations.iter().map(|(ip, r)| (*ip, r.cert.cert()))
    }

    /// Adds certificates to the member list lighthouse `lh` is sending; `last` ends the list,
    /// which then replaces the one we had.
    fn members_listed(&mut self, lh: IpAddr, listed: Vec<(IpAddr, Arc<Certificate>)>, last: bool) {
        if !listed.is_empty() {
            self.members_incoming.entry(lh).or_default().extend(listed);
        }
        if last {
            self.members = self.members_incoming.remove(&lh).unwrap_or_default();
        }
    }
}

impl<P: Policy> Node<P> {
    /// On a lighthouse: every node registered with it, by overlay IP (empty elsewhere).
    pub fn registrations(&self, now: Instant) -> Vec<Registered> {
        let mut v: Vec<Registered> = self
            .disc
            .registrations
            .iter()
            .map(|(ip, r)| Registered {
                vpn_ip: *ip,
                underlay: self.addresses_of(*ip),
                relays: r.relays.clone(),
                ago: now.saturating_duration_since(r.seen),
            })
            .collect();
        v.sort_by_key(|r| r.vpn_ip);
        v
    }

    /// A control message from peer `idx`, already authenticated by its tunnel.
    pub(super) fn handle_control(&mut self, now: Instant, wall: UnixTime, idx: u32, msg: Control) {
        let Some(peer) = self.peers.get(idx) else {
            return;
        };
        let from_ip = peer.vpn_ip;
        let from_lighthouse = self.disc.is_lighthouse(&self.peers, from_ip);
        let am_lighthouse = self.disc.settings.am_lighthouse;
        self.out.counters.rx_control += 1;
        match msg {
            Control::HostUpdate { addrs, relays } if am_lighthouse => {
                let cert = peer.cert.clone();
                let reported = addrs.into_iter().filter(|a| !a.ip().is_unspecified() && a.port() != 0).collect();
                self.disc.register(now, from_ip, cert, reported, relays);
                self.send_control(now, from_ip, Control::HostUpdateAck);
            }
            Control::HostUpdateAck if from_lighthouse => {
                self.out.event(Event::Registered { lighthouse: from_ip });
            }
            Control::HostQuery { vpn_ip } if am_lighthouse => self.answer_query(now, from_ip, vpn_ip),
            Control::HostQueryReply { vpn_ip, addrs, relays, cert } if from_lighthouse => {
                self.on_query_reply(now, wall, from_ip, Found { vpn_ip, addrs, relays, cert });
            }
            Control::HostPunch { vpn_ip, addrs } if from_lighthouse => {
                let addrs: Vec<SocketAddr> = addrs.into_iter().filter(|a| self.disc.remote_allowed(a.ip())).collect();
                self.disc.punch_requested(now, vpn_ip, addrs);
            }
            Control::RelayTo { peer: target, datagram } => self.relay(now, from_ip, target, datagram),
            Control::MembersQuery if am_lighthouse => self.answer_members(now, from_ip),
            Control::MembersReply { certs, last } if from_lighthouse => {
                // Each lighthouse's list is assembled on its own (two answering at once must not
                // mix), and certificates seen before cost no signature check.
                // The list names us too (we are registered): that entry is ours, not a claim.
                let source = CertSource::Lighthouse { lighthouse: from_ip, about: None };
                let mut listed = Vec::with_capacity(certs.len());
                for c in certs {
                    if Certificate::from_bytes(&c).is_ok_and(|c| c.identity() == Some(self.id.vpn_ip)) {
                        continue;
                    }
                    if let Some(v) = self.verify_cert(now, wall, CertOffer { source, bytes: &c, budgeted: false })
                        && let Some(ip) = v.cert().identity()
                    {
                        listed.push((ip, v.cert().clone()));
                    }
                }
                self.disc.members_listed(from_ip, listed, last);
            }
            Control::Ping => {}
            Control::PathProbe { nonce } => self.send_control(now, from_ip, Control::PathAck { nonce }),
            Control::PathAck { nonce } => self.on_path_ack(now, idx, nonce),
            Control::PingRequest { nonce, probe } => self.on_ping_request(now, idx, nonce, probe),
            Control::PingReply { nonce, verdict } => self.on_ping_reply(now, idx, nonce, verdict),
            _ => self.out.counters.rx_unsolicited += 1,
        }
    }

    /// Lighthouse: where is `asked` (any overlay address of a registered node)? Answer the
    /// querier and ask the target to punch.
    fn answer_query(&mut self, now: Instant, querier: IpAddr, asked: IpAddr) {
        let Some((target, relays, cert)) =
            self.disc.registration_of(asked).map(|(t, r)| (t, r.relays.clone(), r.cert.cert().to_bytes().to_vec()))
        else {
            self.out.counters.lighthouse_unknown_queries += 1;
            return;
        };
        self.out.counters.lighthouse_queries += 1;
        let reply = Control::HostQueryReply { vpn_ip: asked, addrs: self.addresses_of(target), relays, cert };
        self.send_control(now, querier, reply);
        let punch = Control::HostPunch { vpn_ip: querier, addrs: self.addresses_of(querier) };
        self.send_control(now, target, punch);
    }

    /// What a lighthouse knows of a node's addresses: observed (learned) first, then reported.
    fn addresses_of(&self, ip: IpAddr) -> Vec<SocketAddr> {
        let mut v = vec![];
        if let Some(Path::Direct(a)) = self.peers.by_vpn_ip(ip).and_then(|p| p.endpoint) {
            v.push(a);
        }
        if let Some(r) = self.disc.registrations.get(&ip) {
            push_unique(&mut v, r.reported.iter().copied());
        }
        v.truncate(control::MAX_ADDRS);
        v
    }

    fn answer_members(&mut self, now: Instant, querier: IpAddr) {
        // The querier knows its own certificate.
        let mut certs: Vec<Vec<u8>> =
            self.disc.registered_certs().filter(|(ip, _)| *ip != querier).map(|(_, c)| c.to_bytes().to_vec()).collect();
        certs.push(self.id.cert.to_bytes().to_vec());
        let chunks: Vec<Vec<Vec<u8>>> = certs.chunks(MEMBERS_PER_REPLY).map(<[Vec<u8>]>::to_vec).collect();
        let n = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            self.send_control(now, querier, Control::MembersReply { certs: chunk, last: i + 1 == n });
        }
    }

    fn on_query_reply(&mut self, now: Instant, wall: UnixTime, lighthouse: IpAddr, found: Found) {
        let Found { vpn_ip, addrs, relays, cert } = found;
        let cert = &cert[..];
        let addrs: Vec<SocketAddr> = addrs.into_iter().filter(|a| self.disc.remote_allowed(a.ip())).collect();
        let known = self.peers.by_addr(vpn_ip).map(|p| p.vpn_ip);
        // Kept under the peer's identity, whichever address was asked (an IPv4 one is the
        // identity of a node we have not met, unless its certificate says otherwise below).
        let owner = known.or(vpn_ip.is_ipv4().then_some(vpn_ip));
        if let Some(owner) = owner {
            self.disc.learned(owner, &addrs, &relays);
        }
        if let Some(idx) = self.peers.index_of_addr(vpn_ip)
            && let Some(p) = self.peers.get_mut(idx)
        {
            p.add_candidates(&addrs);
            p.relays = relays;
            // A relayed peer may be reachable directly now (the lighthouse has asked it to punch
            // toward us); so may one whose path went quiet after we moved.
            let relayed = p.endpoint.is_some_and(|e| !e.is_direct());
            let quiet = p.last_rx.is_none_or(|t| now.duration_since(t) > Duration::from_secs(2));
            if relayed || quiet {
                self.direct_probe(now, idx);
            }
            return;
        }
        let source = CertSource::Lighthouse { lighthouse, about: Some(vpn_ip) };
        let Some(v) = self.verify_cert(now, wall, CertOffer { source, bytes: cert, budgeted: true }) else {
            return;
        };
        let Some(cert_owner) = v.cert().identity().filter(|_| cert_addrs(v.cert()).any(|a| a == vpn_ip)) else {
            self.out.counters.rx_cert_rejected += 1;
            return;
        };
        // Asked by another address than its identity, the owner is known only now (from the
        // certificate); asked by its identity, it was learned above.
        if owner != Some(cert_owner) {
            self.disc.learned(cert_owner, &addrs, &relays);
        }
        let owner = cert_owner;
        // The certificate came with the answer: no Hello round trip, the handshake starts now.
        let via = Path::Relay { relay: lighthouse, peer: owner };
        let from = addrs.first().map(|a| Path::Direct(*a)).unwrap_or(via);
        self.install_peer(now, v, Some(from), None);
    }

    /// The peer answered a probe: the probed direct address carries our datagrams. If it had
    /// failed and traffic went through a relay, traffic comes back to it.
    fn on_path_ack(&mut self, now: Instant, idx: u32, nonce: u64) {
        let Some(peer) = self.peers.get_mut(idx) else { return };
        let Some(addr) = peer.path_check.on_ack(now, nonce) else { return };
        let direct = Path::Direct(addr);
        if let Some(old) = peer.endpoint.filter(|e| !e.is_direct()) {
            peer.endpoint = Some(direct);
            self.out.event(Event::Roamed { name: peer.name.clone(), vpn_ip: peer.vpn_ip, from: old, to: direct });
        }
    }

    /// Relay: forward an end-to-end encrypted datagram from `origin` (an identity) to `target`
    /// (any overlay address of the far node); it goes out naming `origin`.
    fn relay(&mut self, now: Instant, origin: IpAddr, target: IpAddr, datagram: Vec<u8>) {
        let target_ok =
            self.peers.by_addr(target).is_some_and(|p| p.session.is_up() && p.endpoint.is_some_and(|e| e.is_direct()));
        if !self.disc.settings.am_relay || !target_ok || self.peers.identity_of(target) == origin {
            self.out.counters.relay_dropped += 1;
            return;
        }
        self.out.counters.relay_forwarded += 1;
        self.send_control(now, target, Control::RelayFrom { peer: origin, datagram });
    }

    /// Periodic discovery work: address reports to the lighthouses, keepalives to our relays,
    /// member lists, keepalive punches, and scheduled punches.
    pub(super) fn discovery_timers(&mut self, now: Instant) {
        if self.disc.update_due(now) {
            let settings = &self.disc.settings;
            if !settings.am_lighthouse {
                let mut addrs: Vec<SocketAddr> = self.disc.local_addrs.clone();
                push_unique(&mut addrs, settings.advertise_addrs.iter().copied());
                let relays = settings.relays.clone();
                for lh in settings.lighthouses.clone() {
                    if self.id.is_own(lh) {
                        continue;
                    }
                    self.send_control(now, lh, Control::HostUpdate { addrs: addrs.clone(), relays: relays.clone() });
                    self.send_control(now, lh, Control::MembersQuery);
                }
            }
            // Relayed sessions look for a direct path once per interval.
            self.requery_peers(now, |p| p.session.is_up() && p.endpoint.is_some_and(|e| !e.is_direct()));
            self.disc.expire_registrations(now);
        }
        if self.disc.relay_ping_due(now) {
            for r in self.disc.settings.relays.clone() {
                if !self.id.is_own(r) {
                    self.send_control(now, r, Control::Ping);
                }
            }
        }
        if self.disc.punch_due(now) {
            let idle: Vec<SocketAddr> = self
                .peers
                .values()
                .filter(|p| p.last_rx.is_none_or(|t| now.duration_since(t) >= PUNCH_EVERY))
                .filter_map(|p| match p.endpoint {
                    Some(Path::Direct(a)) => Some(a),
                    _ => None,
                })
                .collect();
            for dst in idle {
                self.out.send(dst, wire::PUNCH.to_vec());
            }
        }
        for job in self.disc.take_due(now) {
            match job {
                Scheduled::Punch(addrs) => {
                    for dst in addrs {
                        self.out.counters.tx_punches += 1;
                        self.out.send(dst, wire::PUNCH.to_vec());
                    }
                }
                Scheduled::Respond(vpn_ip) => {
                    let up = self.peers.by_vpn_ip(vpn_ip).is_some_and(|p| p.session.is_up());
                    if !up {
                        self.send_control(now, vpn_ip, Control::Ping);
                    }
                }
            }
        }
    }

    /// Asks the lighthouses about the peers `which` selects (fresh addresses; the lighthouse
    /// also asks each peer to punch toward us). Without lighthouses, probes directly.
    pub(super) fn requery_peers(&mut self, now: Instant, which: impl Fn(&Peer<P::Peer>) -> bool) {
        let targets: Vec<(u32, IpAddr)> = self
            .peers
            .iter()
            .filter(|(_, p)| which(p) && !self.disc.is_lighthouse(&self.peers, p.vpn_ip))
            .map(|(i, p)| (i, p.vpn_ip))
            .collect();
        for (idx, vpn_ip) in targets {
            if self.disc.settings.lighthouses.is_empty() || self.disc.settings.am_lighthouse {
                self.direct_probe(now, idx);
                continue;
            }
            for lh in self.disc.settings.lighthouses.clone() {
                if !self.id.is_own(lh) {
                    self.send_control(now, lh, Control::HostQuery { vpn_ip });
                }
            }
        }
    }

    /// Whether the peer whose identity is `relay` may deliver datagrams from `origin` (an
    /// identity): it serves us (`relay.relays`), or the lighthouse (or the peer entry) says it
    /// serves `origin`.
    pub(super) fn is_relay_for(&self, relay: IpAddr, origin: IpAddr) -> bool {
        self.disc.relay_serves(&self.peers, relay, origin)
            || self.peers.by_vpn_ip(origin).is_some_and(|p| self.peers.names(&p.relays, relay))
    }

    /// A handshake sent to the peer's direct addresses only (never via a relay): if it is
    /// answered, the session moves to the direct path.
    pub(super) fn direct_probe(&mut self, now: Instant, idx: u32) {
        let mut buf = self.take_buffer();
        if let Some(peer) = self.peers.get_mut(idx)
            && peer.session.init().is_none()
            && !peer.candidates.is_empty()
            && let TunnResult::WriteToNetwork(init) = peer.tunn.format_handshake_initiation(&mut buf, false)
        {
            let bytes = init.to_vec();
            self.out.counters.direct_probes += 1;
            let init = InitInFlight { bytes, sent: now, retries: 0, next: now + self.try_interval, direct_only: true };
            peer.session.initiating(now, init);
            self.resend_initiation(now, idx);
        }
        self.put_buffer(buf);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};
    use std::time::{Duration, Instant};

    use super::{DiscoveryState, Scheduled};
    use crate::mesh::Discovery;
    use crate::mesh::test_support::ip;

    fn state_at(now: Instant, rules: &[(&str, bool)]) -> DiscoveryState {
        let remote_allow_list = rules.iter().map(|(n, a)| (n.parse().expect("net"), *a)).collect();
        DiscoveryState::new(Discovery { remote_allow_list, ..Discovery::default() }, now)
    }

    fn state(rules: &[(&str, bool)]) -> DiscoveryState {
        state_at(Instant::now(), rules)
    }

    #[test]
    fn remote_allow_list_most_specific_rule_wins_and_defaults_follow_nebula() {
        assert!(state(&[]).remote_allowed(ip("198.18.0.1")));
        let s = state(&[("198.18.0.0/16", false), ("198.18.1.0/24", true)]);
        assert!(!s.remote_allowed(ip("198.18.0.1")));
        assert!(s.remote_allowed(ip("198.18.1.7")));
        // Mixed rules: no match means allowed.
        assert!(s.remote_allowed(ip("198.19.0.1")));
        // Only denials: anything else is allowed; only allowances: anything else is denied.
        assert!(state(&[("198.18.0.0/24", false)]).remote_allowed(ip("198.19.0.1")));
        assert!(!state(&[("198.18.0.0/24", true)]).remote_allowed(ip("198.19.0.1")));
        // Rules of the other family do not decide.
        assert!(state(&[("198.18.0.0/24", true)]).remote_allowed(ip("2001:db8::1")));
    }

    #[test]
    fn punch_requests_wait_their_delays_and_are_remembered() {
        let now = Instant::now();
        let mut s = state_at(now, &[]);
        let peer = IpAddr::V6("fd00::2".parse().expect("ip"));
        let addr: SocketAddr = "198.18.0.2:4242".parse().expect("addr");
        s.punch_requested(now, peer, vec![addr]);
        assert_eq!(s.discovered(peer).map(|d| d.addrs.clone()), Some(vec![addr]));
        assert_eq!(s.deadline(), now, "the first address report is due at once");
        assert!(s.take_due(now).is_empty());
        let punch = now + s.settings.punch_delay;
        assert!(matches!(s.take_due(punch).as_slice(), [Scheduled::Punch(a)] if a == &[addr]));
        let respond = now + s.settings.respond_delay;
        assert!(matches!(s.take_due(respond).as_slice(), [Scheduled::Respond(p)] if *p == peer));
        assert!(s.take_due(respond + Duration::from_secs(60)).is_empty());
    }
}
