//! TUN → network: routing an overlay packet to its peer, the outbound firewall, encryption,
//! and starting the certificate exchange for a peer we have not met.

use super::*;

impl<P: Policy> Node<P> {
    /// An IP packet the host sent into the overlay. Returns the datagram to send (written into
    /// `out`, at least [`MIN_BUFFER`] bytes) or `None` when it was queued, consumed or dropped.
    pub fn handle_tun_packet<'b>(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &'b mut [u8],
    ) -> Option<(SocketAddr, &'b [u8])> {
        let Some(dst) = ipv4_dst(packet) else {
            self.counters.tun_dropped_not_ipv4 += 1;
            return None;
        };
        let Some(peer_ip) = self.route(dst) else {
            self.counters.tun_dropped_no_route += 1;
            return None;
        };
        let Some(&idx) = self.by_vpn_ip.get(&peer_ip) else {
            self.queue_pending(now, peer_ip, packet);
            return None;
        };
        self.encapsulate(now, idx, packet, out)
    }

    pub(super) fn route(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        if dst == self.vpn_ip {
            return None;
        }
        if self.vpn_net.contains(&dst) {
            return Some(dst);
        }
        self.unsafe_routes
            .iter()
            .filter(|(net, _)| net.contains(&dst))
            .max_by_key(|(net, _)| net.prefix_len())
            .map(|(_, via)| *via)
    }

    pub(super) fn encapsulate<'b>(
        &mut self,
        now: Instant,
        idx: u32,
        packet: &[u8],
        out: &'b mut [u8],
    ) -> Option<(SocketAddr, &'b [u8])> {
        let peer = self.peers.get_mut(&idx)?;
        match self
            .policy
            .check(now, Direction::Outbound, &peer.policy_peer, packet)
        {
            Verdict::Allow => {}
            Verdict::Drop => {
                self.counters.firewall_dropped_outbound += 1;
                return None;
            }
            Verdict::Reject(reply) => {
                self.counters.firewall_dropped_outbound += 1;
                self.tun_writes.push_back(reply);
                return None;
            }
        }
        peer.tx_packets += 1;
        peer.tx_bytes += packet.len() as u64;
        match peer.tunn.encapsulate(packet, out) {
            TunnResult::WriteToNetwork(d) => {
                let len = d.len();
                if is_handshake_init(&out[..len]) {
                    // No session yet: the packet waits inside boringtun; the initiation goes to
                    // every candidate address, each preceded by our certificate.
                    let init = out[..len].to_vec();
                    self.send_initiation(idx, &init);
                    return None;
                }
                let dst = peer.endpoint.or_else(|| peer.candidates.first().copied())?;
                Some((dst, &out[..len]))
            }
            _ => None,
        }
    }

    pub(super) fn send_initiation(&mut self, idx: u32, init: &[u8]) {
        let Some(peer) = self.peers.get_mut(&idx) else {
            return;
        };
        self.counters.handshakes_initiated += 1;
        let hello = wire::hello(0, &self.hello_cert);
        for dst in peer.all_addresses() {
            self.transmits.push_back(Transmit {
                dst,
                data: hello.clone(),
            });
            self.transmits.push_back(Transmit {
                dst,
                data: init.to_vec(),
            });
        }
    }

    pub(super) fn queue_pending(&mut self, now: Instant, vpn_ip: Ipv4Addr, packet: &[u8]) {
        let p = self
            .pending
            .entry(vpn_ip)
            .or_insert_with(|| Pending::new(now));
        if p.queue.len() >= PENDING_QUEUE {
            p.queue.pop_front();
            self.counters.tun_dropped_pending_full += 1;
        }
        p.queue.push_back(packet.to_vec());
        if p.attempts == 0 {
            self.try_pending(now, vpn_ip);
        }
    }

    /// Sends a Hello to every known address of a peer we have no certificate for yet.
    pub(super) fn try_pending(&mut self, now: Instant, vpn_ip: Ipv4Addr) {
        let addrs = self.static_hosts.get(&vpn_ip).cloned().unwrap_or_default();
        let Some(p) = self.pending.get_mut(&vpn_ip) else {
            return;
        };
        if p.attempts > self.retries {
            let dropped = p.queue.len() as u64;
            self.pending.remove(&vpn_ip);
            self.counters.handshakes_timed_out += 1;
            self.counters.tun_dropped_no_route += dropped;
            self.events.push_back(Event::HandshakeTimedOut { vpn_ip });
            return;
        }
        p.attempts += 1;
        p.next_try = now + self.try_interval * p.attempts;
        if addrs.is_empty() {
            // Nothing to try (lighthouse lookups belong to discovery); keep retrying quietly.
            return;
        }
        let hello = wire::hello(p.hello_id, &self.hello_cert);
        for dst in addrs {
            self.transmits.push_back(Transmit {
                dst,
                data: hello.clone(),
            });
        }
    }
}
