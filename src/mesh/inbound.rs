//! Network → TUN: demultiplexing datagrams, WireGuard handshakes and data, roaming,
//! anti-spoofing and the inbound firewall.

use super::*;

impl<P: Policy> Node<P> {
    /// A datagram from the underlay. Returns an IP packet for the TUN (written into `out`) or
    /// `None`; replies and flushed packets are queued for [`Node::poll_transmit`].
    pub fn handle_datagram<'b>(
        &mut self,
        now: Instant,
        wall: UnixTime,
        from: SocketAddr,
        data: &[u8],
        out: &'b mut [u8],
    ) -> Option<&'b [u8]> {
        self.counters.rx_datagrams += 1;
        let kind = match wire::classify(data) {
            Ok(k) => k,
            Err(_) => {
                self.counters.rx_malformed += 1;
                return None;
            }
        };
        match kind {
            wire::Kind::Hello { id, cert } => {
                self.on_hello(now, wall, from, id, cert, data.len());
                None
            }
            wire::Kind::HelloReply { id, cert } => {
                self.on_hello_reply(now, wall, from, id, cert);
                None
            }
            wire::Kind::UnknownIndex { .. } => {
                self.on_unknown_index(now, from);
                None
            }
            wire::Kind::WireGuard { msg_type: 1, .. } => {
                self.on_handshake_init(now, from, data, out)
            }
            wire::Kind::WireGuard {
                receiver: Some(r), ..
            } => {
                let idx = r >> 8;
                if !self.peers.contains_key(&idx) {
                    self.counters.rx_unknown_index += 1;
                    if data[0] == 4 && self.unknown_index_budget > 0 {
                        self.unknown_index_budget -= 1;
                        self.transmits.push_back(Transmit {
                            dst: from,
                            data: wire::unknown_index(r).to_vec(),
                        });
                    }
                    return None;
                }
                self.decapsulate(now, idx, from, data, out)
            }
            wire::Kind::WireGuard { .. } => {
                self.counters.rx_malformed += 1;
                None
            }
        }
    }

    pub(super) fn on_handshake_init<'b>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
        out: &'b mut [u8],
    ) -> Option<&'b [u8]> {
        let half = match Tunn::parse_incoming_packet(data) {
            Ok(boringtun::noise::Packet::HandshakeInit(init)) => {
                parse_handshake_anon(&self.secret, &self.public, &init)
            }
            _ => {
                self.counters.rx_malformed += 1;
                return None;
            }
        };
        let Ok(half) = half else {
            self.counters.rx_handshake_invalid += 1;
            return None;
        };
        let idx = match self.by_key.get(&half.peer_static_public) {
            Some(&idx) => idx,
            None => match self.known_certs.get(&half.peer_static_public) {
                Some((v, _)) => {
                    let v = v.clone();
                    self.install_peer(now, v, Some(from))
                }
                None => {
                    // The Hello carrying its certificate may still be on its way.
                    self.counters.rx_unknown_key += 1;
                    if self.held_inits.len() < 1024 {
                        self.held_inits.insert(from, (data.to_vec(), now));
                    }
                    return None;
                }
            },
        };
        self.decapsulate(now, idx, from, data, out)
    }

    pub(super) fn decapsulate<'b>(
        &mut self,
        now: Instant,
        idx: u32,
        from: SocketAddr,
        data: &[u8],
        out: &'b mut [u8],
    ) -> Option<&'b [u8]> {
        let peer = self.peers.get_mut(&idx)?;
        let (packet_len, reply) = match peer.tunn.decapsulate(Some(from.ip()), data, out) {
            TunnResult::Done => (None, None),
            TunnResult::Err(_) => {
                // Attacker-controlled input: counted, never logged per packet.
                self.counters.rx_wireguard_errors += 1;
                return None;
            }
            TunnResult::WriteToNetwork(b) => (None, Some(b.to_vec())),
            TunnResult::WriteToTunnelV4(b, src) => {
                if !peer.owns(src) {
                    self.counters.rx_spoofed += 1;
                    return None;
                }
                (Some(b.len()), None)
            }
            TunnResult::WriteToTunnelV6(..) => {
                self.counters.rx_spoofed += 1;
                return None;
            }
        };
        // The datagram authenticated: the last source address wins (roaming).
        peer.last_rx = Some(now);
        if peer.endpoint != Some(from) {
            if let Some(old) = peer.endpoint {
                self.events.push_back(Event::Roamed {
                    name: peer.name.clone(),
                    from: old,
                    to: from,
                });
            }
            peer.endpoint = Some(from);
        }
        if matches!(data[0], 1 | 2) {
            peer.last_handshake = Some(now);
            self.counters.handshakes_completed += u64::from(data[0] == 2);
        }
        // A response (we initiated) or any data (the initiator confirmed) means a usable session.
        if data[0] != 1 && !peer.up {
            peer.up = true;
            self.events.push_back(Event::PeerUp {
                name: peer.name.clone(),
                vpn_ip: peer.vpn_ip,
                endpoint: from,
            });
        }
        if let Some(reply) = reply {
            self.transmits.push_back(Transmit {
                dst: from,
                data: reply,
            });
            // Flush packets boringtun queued while the handshake ran.
            let mut buf = std::mem::take(&mut self.scratch);
            while let TunnResult::WriteToNetwork(b) =
                self.peers
                    .get_mut(&idx)?
                    .tunn
                    .decapsulate(None, &[], &mut buf)
            {
                self.transmits.push_back(Transmit {
                    dst: from,
                    data: b.to_vec(),
                });
            }
            self.scratch = buf;
            return None;
        }
        let len = packet_len?;
        let peer = self.peers.get_mut(&idx)?;
        match self
            .policy
            .check(now, Direction::Inbound, &peer.policy_peer, &out[..len])
        {
            Verdict::Allow => {
                peer.rx_packets += 1;
                peer.rx_bytes += len as u64;
                Some(&out[..len])
            }
            Verdict::Drop => {
                self.counters.firewall_dropped_inbound += 1;
                None
            }
            Verdict::Reject(reply) => {
                self.counters.firewall_dropped_inbound += 1;
                // The reject travels back through the tunnel to the sender.
                let mut buf = std::mem::take(&mut self.scratch);
                if let TunnResult::WriteToNetwork(d) = peer.tunn.encapsulate(&reply, &mut buf) {
                    self.transmits.push_back(Transmit {
                        dst: from,
                        data: d.to_vec(),
                    });
                }
                self.scratch = buf;
                None
            }
        }
    }

    /// The peer at `from` lost our session (it restarted). The index it echoes is its own, so
    /// the peer is found by address; only a peer's current endpoint can trigger this, at most
    /// once a second, and all it can cause is a new handshake.
    pub(super) fn on_unknown_index(&mut self, now: Instant, from: SocketAddr) {
        let Some((&idx, peer)) = self
            .peers
            .iter_mut()
            .find(|(_, p)| p.endpoint == Some(from))
        else {
            self.counters.rx_unsolicited += 1;
            return;
        };
        if peer
            .last_forced_handshake
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        peer.last_forced_handshake = Some(now);
        peer.up = false;
        let mut buf = std::mem::take(&mut self.scratch);
        if let TunnResult::WriteToNetwork(init) =
            peer.tunn.format_handshake_initiation(&mut buf, true)
        {
            let init = init.to_vec();
            self.send_initiation(idx, &init);
        }
        self.scratch = buf;
    }
}
