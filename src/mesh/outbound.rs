//! TUN → network: routing an overlay packet to its peer, the outbound firewall, encryption,
//! and starting the certificate exchange (or lighthouse query) for a peer we have not met.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use boringtun::noise::TunnResult;
use rand_core::RngCore;

use super::control::{self, Control};
use super::event::Event;
use super::peer::Path;
use super::session::InitInFlight;
use super::{Direction, Node, Policy, Verdict, push_unique, wire};
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
    /// `out`, at least [`MIN_BUFFER`](super::MIN_BUFFER) bytes) or `None` when it was queued, consumed or dropped.
    pub fn handle_tun_packet<'b>(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &'b mut [u8],
    ) -> Option<(SocketAddr, &'b [u8])> {
        let Some((dst, protocol)) = dst_and_protocol(packet) else {
            self.out.counters.tun_dropped_not_ipv4 += 1;
            return None;
        };
        // cos-mesh's control protocol is spoken by the daemon only, never by the host: a local
        // process forging a lighthouse update or relay request is refused here.
        if protocol == control::PROTO {
            self.out.counters.tun_dropped_control += 1;
            return None;
        }
        let Some(peer_ip) = self.id.route(dst) else {
            self.out.counters.tun_dropped_no_route += 1;
            return None;
        };
        let Some(idx) = self.peers.index_of_addr(peer_ip) else {
            self.queue_pending(now, peer_ip, packet.to_vec(), false);
            return None;
        };
        self.encapsulate(now, idx, packet, out, false)
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
        let peer = self.peers.get_mut(idx)?;
        if !control {
            match self.policy.check(now, Direction::Outbound, &peer.policy_peer, packet) {
                Verdict::Allow => {}
                Verdict::Drop => {
                    self.out.counters.firewall_dropped_outbound += 1;
                    peer.fw_dropped += 1;
                    return None;
                }
                Verdict::Reject(reply) => {
                    self.out.counters.firewall_dropped_outbound += 1;
                    peer.fw_dropped += 1;
                    self.out.tun_writes.push_back(reply);
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
        let Some(peer) = self.peers.get_mut(idx) else {
            return;
        };
        self.out.counters.handshakes_initiated += 1;
        let init =
            InitInFlight { bytes: init, sent: now, retries: 0, next: now + self.try_interval, direct_only: false };
        peer.session.initiating(now, init);
        self.resend_initiation(now, idx);
    }

    pub(super) fn resend_initiation(&mut self, now: Instant, idx: u32) {
        let us = self.id.vpn_ip;
        let use_relays = self.disc.settings.use_relays;
        let Some(peer) = self.peers.get(idx) else {
            return;
        };
        // Relays by identity, so a path through one is the same path whichever address named it.
        let relays: Vec<IpAddr> =
            peer.relays.iter().filter(|r| !self.id.is_own(**r)).map(|r| self.peers.identity_of(*r)).collect();
        let Some(peer) = self.peers.get_mut(idx) else {
            return;
        };
        peer.relays = relays;
        let Some(init) = peer.session.init() else { return };
        // Relays join once the direct paths had a fair chance, or at once if there are none.
        let direct_known = peer.endpoint.is_some() || !peer.candidates.is_empty();
        let with_relays = use_relays && !init.direct_only && (init.retries >= 2 || !direct_known);
        let paths = peer.paths(with_relays, us);
        let init = init.bytes.clone();
        let hello = wire::hello(0, &self.id.hello_cert);
        for path in paths {
            self.send_path(now, path, hello.clone());
            self.send_path(now, path, init.clone());
        }
    }

    pub(super) fn queue_pending(&mut self, now: Instant, vpn_ip: IpAddr, packet: Vec<u8>, control: bool) {
        let hello_id = self.rng.next_u64();
        match self.pending.queue(now, vpn_ip, packet, control, hello_id) {
            Err(_) => self.out.counters.tun_dropped_pending_full += 1,
            Ok(q) => {
                if q.dropped {
                    self.out.counters.tun_dropped_pending_full += 1;
                }
                if q.first {
                    self.try_pending(now, vpn_ip);
                }
            }
        }
    }

    /// One attempt to reach a peer we have no certificate for: a Hello to each known address
    /// (static host map, lighthouse answers), and a query to the lighthouses.
    pub(super) fn try_pending(&mut self, now: Instant, vpn_ip: IpAddr) {
        let mut addrs = self.static_hosts.get(&vpn_ip).cloned().unwrap_or_default();
        // What a lighthouse said about a peer is kept under its identity (a peer met by another
        // address is installed from the lighthouse's answer, its certificate, at once).
        let found = self.disc.discovered(vpn_ip).cloned().unwrap_or_default();
        push_unique(&mut addrs, found.addrs.iter().copied());
        let Some(p) = self.pending.get_mut(vpn_ip) else {
            return;
        };
        if p.attempts > self.retries {
            let dropped = self.pending.abandon(vpn_ip) as u64;
            self.out.counters.handshakes_timed_out += 1;
            self.out.counters.tun_dropped_no_route += dropped;
            self.out.event(Event::HandshakeTimedOut { vpn_ip });
            return;
        }
        p.attempts += 1;
        let attempt = p.attempts;
        p.next_try = now + self.try_interval * attempt;
        let hello = wire::hello(p.hello_id, &self.id.hello_cert);
        let no_direct = addrs.is_empty();
        for dst in addrs {
            self.out.send(dst, hello.clone());
        }
        // Relays join when no direct address is known, or after a few unanswered attempts.
        // Not at once when lighthouses can answer: a relay that wins the race would carry
        // traffic a punched direct path could.
        if self.disc.settings.use_relays && (attempt >= 3 || (no_direct && self.disc.settings.lighthouses.is_empty())) {
            let peer = vpn_ip;
            let relays: Vec<IpAddr> = found.relays.into_iter().filter(|r| !self.id.is_own(*r) && *r != peer).collect();
            for relay in relays {
                self.send_path(now, Path::Relay { relay, peer }, hello.clone());
            }
        }
        // Ask the lighthouses (not about themselves), on the first attempt and then sparingly.
        let ask = !self.disc.settings.lighthouses.contains(&vpn_ip) && (attempt == 1 || attempt % 3 == 0);
        if ask {
            for lh in self.disc.settings.lighthouses.clone() {
                self.send_control(now, lh, Control::HostQuery { vpn_ip });
            }
        }
    }
}
