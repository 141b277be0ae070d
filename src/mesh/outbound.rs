//! TUN → network: routing an overlay packet to its peer, the outbound firewall, encryption,
//! and starting the certificate exchange (or lighthouse query) for a peer we have not met.

use super::*;
use crate::packet::{Ipv4Packet, Ipv6Packet};

/// The IP version nibbles of the first byte of a packet.
const IP_VERSION_4: u8 = 4;
const IP_VERSION_6: u8 = 6;

/// The destination and protocol (IPv6: the last next-header) of an IPv4 or IPv6 packet.
pub(super) fn dst_and_protocol(packet: &[u8]) -> Option<(IpAddr, u8)> {
    match packet.first()? >> 4 {
        IP_VERSION_4 => Ipv4Packet::new(packet).ok().map(|p| (IpAddr::V4(p.dst()), p.protocol())),
        IP_VERSION_6 => Ipv6Packet::new(packet).ok().map(|p| (IpAddr::V6(p.dst()), p.protocol())),
        _ => None,
    }
}

impl<P: Policy> Node<P> {
    /// An IP packet the host sent into the overlay. Returns the datagram to send (written into
    /// `out`, at least [`MIN_BUFFER`] bytes) or `None` when it was queued, consumed or dropped.
    pub fn handle_tun_packet<'b>(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &'b mut [u8],
    ) -> Option<(SocketAddr, &'b [u8])> {
        let Some((dst, protocol)) = dst_and_protocol(packet) else {
            self.counters.tun_dropped_not_ipv4 += 1;
            return None;
        };
        // cos-mesh's control protocol is spoken by the daemon only, never by the host: a local
        // process forging a lighthouse update or relay request is refused here.
        if protocol == control::PROTO {
            self.counters.tun_dropped_control += 1;
            return None;
        }
        let Some(peer_ip) = self.route(dst) else {
            self.counters.tun_dropped_no_route += 1;
            return None;
        };
        let Some(&idx) = self.by_addr.get(&peer_ip) else {
            self.queue_pending(now, peer_ip, packet.to_vec(), false);
            return None;
        };
        self.encapsulate(now, idx, packet, out, false)
    }

    /// The overlay address of the peer that takes packets for `dst`: `dst` itself inside one
    /// of our certificate's networks (IPv4 or IPv6), else the gateway of an unsafe route.
    fn route(&self, dst: IpAddr) -> Option<IpAddr> {
        if self.own_networks.iter().any(|n| n.addr() == dst) {
            return None;
        }
        if self.own_networks.iter().any(|n| n.contains(&dst)) {
            return Some(dst);
        }
        let IpAddr::V4(dst) = dst else { return None };
        self.unsafe_routes
            .iter()
            .filter(|(net, _)| net.contains(&dst))
            .max_by_key(|(net, _)| net.prefix_len())
            .map(|(_, via)| IpAddr::V4(*via))
    }

    /// Firewall (unless `control`), then encryption for peer `idx`. A datagram for a direct
    /// endpoint is returned; one for a relayed peer is wrapped and queued.
    pub(super) fn encapsulate<'b>(
        &mut self,
        now: Instant,
        idx: u32,
        packet: &[u8],
        out: &'b mut [u8],
        control: bool,
    ) -> Option<(SocketAddr, &'b [u8])> {
        let peer = self.peers.get_mut(&idx)?;
        if !control {
            match self.policy.check(now, Direction::Outbound, &peer.policy_peer, packet) {
                Verdict::Allow => {}
                Verdict::Drop => {
                    self.counters.firewall_dropped_outbound += 1;
                    peer.fw_dropped += 1;
                    return None;
                }
                Verdict::Reject(reply) => {
                    self.counters.firewall_dropped_outbound += 1;
                    peer.fw_dropped += 1;
                    self.tun_writes.push_back(reply);
                    return None;
                }
            }
            peer.tx_packets += 1;
            peer.tx_bytes += packet.len() as u64;
        }
        let len = match peer.tunn.encapsulate(packet, out) {
            TunnResult::WriteToNetwork(d) => d.len(),
            _ => {
                // Queued inside boringtun while a handshake runs.
                peer.queued_in_session = true;
                return None;
            }
        };
        if wire::is_handshake_init(&out[..len]) {
            peer.queued_in_session = true;
            // No session yet: the packet waits inside boringtun; the initiation goes to every
            // path, each preceded by our certificate.
            let init = out[..len].to_vec();
            self.send_initiation(now, idx, init);
            return None;
        }
        match peer.endpoint.or_else(|| peer.candidates.first().map(|c| Path::Direct(*c))) {
            Some(Path::Direct(dst)) => Some((dst, &out[..len])),
            Some(path) => {
                let data = out[..len].to_vec();
                self.send_path(now, path, data);
                None
            }
            None => None,
        }
    }

    /// Sends a handshake initiation (after a Hello with our certificate) along every path to
    /// the peer, and remembers it for fast retries while NAT mappings open.
    pub(super) fn send_initiation(&mut self, now: Instant, idx: u32, init: Vec<u8>) {
        let Some(peer) = self.peers.get_mut(&idx) else {
            return;
        };
        self.counters.handshakes_initiated += 1;
        let init =
            InitInFlight { bytes: init, sent: now, retries: 0, next: now + self.try_interval, direct_only: false };
        peer.session.initiating(now, init);
        self.resend_initiation(now, idx);
    }

    pub(super) fn resend_initiation(&mut self, now: Instant, idx: u32) {
        let us = self.vpn_ip;
        let use_relays = self.disc.use_relays;
        let Some(peer) = self.peers.get_mut(&idx) else {
            return;
        };
        let Some(init) = peer.session.init() else { return };
        // Relays join once the direct paths had a fair chance, or at once if there are none.
        let direct_known = peer.endpoint.is_some() || !peer.candidates.is_empty();
        let with_relays = use_relays && !init.direct_only && (init.retries >= 2 || !direct_known);
        let paths = peer.paths(with_relays, us);
        let init = init.bytes.clone();
        let hello = wire::hello(0, &self.hello_cert);
        for path in paths {
            self.send_path(now, path, hello.clone());
            self.send_path(now, path, init.clone());
        }
    }

    pub(super) fn queue_pending(&mut self, now: Instant, vpn_ip: IpAddr, packet: Vec<u8>, control: bool) {
        if !self.pending.contains_key(&vpn_ip) && self.pending.len() >= PENDING_PEERS {
            self.counters.tun_dropped_pending_full += 1;
            return;
        }
        let hello_id = self.rng.next_u64();
        let p = self.pending.entry(vpn_ip).or_insert_with(|| Pending::new(now, hello_id));
        if p.queue.len() >= PENDING_QUEUE || self.pending_packets >= PENDING_PACKETS {
            if p.queue.pop_front().is_some() {
                self.pending_packets -= 1;
            }
            self.counters.tun_dropped_pending_full += 1;
        }
        p.queue.push_back((packet, control));
        self.pending_packets += 1;
        if p.attempts == 0 {
            self.try_pending(now, vpn_ip);
        }
    }

    /// One attempt to reach a peer we have no certificate for: a Hello to each known address
    /// (static host map, lighthouse answers), and a query to the lighthouses.
    pub(super) fn try_pending(&mut self, now: Instant, vpn_ip: IpAddr) {
        let mut addrs = self.static_hosts.get(&vpn_ip).cloned().unwrap_or_default();
        // What a lighthouse said about a peer is kept under its IPv4 overlay IP; a peer met by
        // an IPv6 address is installed from the lighthouse's answer (its certificate) at once.
        let v4 = match vpn_ip {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        };
        let found = v4.and_then(|ip| self.discovered.get(&ip).cloned()).unwrap_or_default();
        push_unique(&mut addrs, found.addrs.iter().copied());
        let Some(p) = self.pending.get_mut(&vpn_ip) else {
            return;
        };
        if p.attempts > self.retries {
            let dropped = p.queue.len() as u64;
            self.pending_packets -= p.queue.len();
            self.pending.remove(&vpn_ip);
            self.counters.handshakes_timed_out += 1;
            self.counters.tun_dropped_no_route += dropped;
            self.events.push_back(Event::HandshakeTimedOut { vpn_ip });
            return;
        }
        p.attempts += 1;
        let attempt = p.attempts;
        p.next_try = now + self.try_interval * attempt;
        let hello = wire::hello(p.hello_id, &self.hello_cert);
        let no_direct = addrs.is_empty();
        for dst in addrs {
            self.transmits.push_back(Transmit { dst, data: hello.clone() });
        }
        // Relays join when no direct address is known, or after a few unanswered attempts.
        // Not at once when lighthouses can answer: a relay that wins the race would carry
        // traffic a punched direct path could.
        if let Some(peer) = v4
            && self.disc.use_relays
            && (attempt >= 3 || (no_direct && self.disc.lighthouses.is_empty()))
        {
            let us = self.vpn_ip;
            for relay in found.relays.into_iter().filter(|r| *r != us && *r != peer) {
                self.send_path(now, Path::Relay { relay, peer }, hello.clone());
            }
        }
        // Ask the lighthouses (not about themselves), on the first attempt and then sparingly.
        let ask = v4.is_none_or(|ip| !self.disc.lighthouses.contains(&ip)) && (attempt == 1 || attempt % 3 == 0);
        if ask {
            for lh in self.disc.lighthouses.clone() {
                self.send_control(now, lh, Control::HostQuery { vpn_ip });
            }
        }
    }
}
