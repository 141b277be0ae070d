//! Discovery across environments (Nebula's model): nodes report their addresses to every
//! lighthouse; lighthouses answer queries with addresses, relays and the certificate, and
//! ask the target to punch toward the querier; relays forward end-to-end encrypted datagrams.
//! Several lighthouses share nothing: a node talks to all of them and any one can answer.

use super::*;

/// A lighthouse's answer about one node.
struct Found {
    /// The overlay address asked about (any address of the node's certificate).
    vpn_ip: IpAddr,
    addrs: Vec<SocketAddr>,
    relays: Vec<Ipv4Addr>,
    cert: Vec<u8>,
}

/// What a lighthouse holds for a registered node, for its `members` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub vpn_ip: Ipv4Addr,
    /// The underlay addresses queriers are told: the one the node is heard from (its NAT's,
    /// say) first, then those it reported.
    pub underlay: Vec<SocketAddr>,
    /// The relays the node said serve it.
    pub relays: Vec<Ipv4Addr>,
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

impl<P: Policy> Node<P> {
    /// On a lighthouse: every node registered with it, by overlay IP (empty elsewhere).
    pub fn registrations(&self, now: Instant) -> Vec<Registered> {
        let mut v: Vec<Registered> = self
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
        let Some(peer) = self.peers.get(&idx) else {
            return;
        };
        let from_ip = peer.vpn_ip;
        let from_lighthouse = self.disc.lighthouses.contains(&from_ip);
        self.counters.rx_control += 1;
        match msg {
            Control::HostUpdate { addrs, relays } if self.disc.am_lighthouse => {
                let cert = peer.cert.clone();
                let reported = addrs.into_iter().filter(|a| !a.ip().is_unspecified() && a.port() != 0).collect();
                for addr in cert_addrs(cert.cert()) {
                    self.registered_addrs.insert(addr, from_ip);
                }
                self.registrations.insert(from_ip, Registration { cert, reported, relays, seen: now });
                self.send_control(now, from_ip, Control::HostUpdateAck);
            }
            Control::HostUpdateAck if from_lighthouse => {
                self.events.push_back(Event::Registered { lighthouse: from_ip });
            }
            Control::HostQuery { vpn_ip } if self.disc.am_lighthouse => self.answer_query(now, from_ip, vpn_ip),
            Control::HostQueryReply { vpn_ip, addrs, relays, cert } if from_lighthouse => {
                self.on_query_reply(now, wall, from_ip, Found { vpn_ip, addrs, relays, cert });
            }
            Control::HostPunch { vpn_ip, addrs } if from_lighthouse => {
                let addrs: Vec<SocketAddr> = addrs.into_iter().filter(|a| self.remote_allowed(a.ip())).collect();
                self.discovered.entry(vpn_ip).or_default().addrs = addrs.clone();
                self.scheduled.push((now + self.disc.punch_delay, Scheduled::Punch(addrs)));
                if self.disc.respond {
                    self.scheduled.push((now + self.disc.respond_delay, Scheduled::Respond(vpn_ip)));
                }
            }
            Control::RelayTo { peer: target, datagram } => self.relay(now, from_ip, target, datagram),
            Control::MembersQuery if self.disc.am_lighthouse => self.answer_members(now, from_ip),
            Control::MembersReply { certs, last } if from_lighthouse => {
                // Each lighthouse's list is assembled on its own (two answering at once must not
                // mix), and certificates seen before cost no signature check.
                // The list names us too (we are registered): that entry is ours, not a claim.
                let source = CertSource::Lighthouse { lighthouse: from_ip, about: None };
                for c in certs {
                    if Certificate::from_bytes(&c).is_ok_and(|c| c.vpn_ip() == Some(self.vpn_ip)) {
                        continue;
                    }
                    if let Some(v) = self.verify_cert(now, wall, source, &c, false)
                        && let Some(ip) = v.cert().vpn_ip()
                    {
                        self.members_incoming.entry(from_ip).or_default().insert(ip, v.cert().clone());
                    }
                }
                if last {
                    self.members = self.members_incoming.remove(&from_ip).unwrap_or_default();
                }
            }
            Control::Ping => {}
            Control::PathProbe { nonce } => self.send_control(now, from_ip, Control::PathAck { nonce }),
            Control::PathAck { nonce } => self.on_path_ack(now, idx, nonce),
            Control::PingRequest { nonce, probe } => self.on_ping_request(now, idx, nonce, probe),
            Control::PingReply { nonce, verdict } => self.on_ping_reply(now, idx, nonce, verdict),
            _ => self.counters.rx_unsolicited += 1,
        }
    }

    /// Lighthouse: where is `asked` (any overlay address of a registered node)? Answer the
    /// querier and ask the target to punch.
    fn answer_query(&mut self, now: Instant, querier: Ipv4Addr, asked: IpAddr) {
        let Some((target, relays, cert)) =
            self.registration_of(asked).map(|(t, r)| (t, r.relays.clone(), r.cert.cert().to_bytes().to_vec()))
        else {
            self.counters.lighthouse_unknown_queries += 1;
            return;
        };
        self.counters.lighthouse_queries += 1;
        let reply = Control::HostQueryReply { vpn_ip: asked, addrs: self.addresses_of(target), relays, cert };
        self.send_control(now, querier, reply);
        let punch = Control::HostPunch { vpn_ip: querier, addrs: self.addresses_of(querier) };
        self.send_control(now, target, punch);
    }

    /// The registration whose certificate holds overlay address `ip`, and its IPv4 overlay IP:
    /// registrations are kept by that IP, and indexed by every network of the certificate.
    fn registration_of(&self, ip: IpAddr) -> Option<(Ipv4Addr, &Registration)> {
        let owner = match ip {
            IpAddr::V4(v4) if self.registrations.contains_key(&v4) => v4,
            _ => *self.registered_addrs.get(&ip)?,
        };
        let reg = self.registrations.get(&owner)?;
        cert_addrs(reg.cert.cert()).any(|a| a == ip).then_some((owner, reg))
    }

    /// What a lighthouse knows of a node's addresses: observed (learned) first, then reported.
    fn addresses_of(&self, ip: Ipv4Addr) -> Vec<SocketAddr> {
        let mut v = vec![];
        if let Some(Path::Direct(a)) = self.by_vpn_ip.get(&ip).and_then(|i| self.peers.get(i)).and_then(|p| p.endpoint)
        {
            v.push(a);
        }
        if let Some(r) = self.registrations.get(&ip) {
            push_unique(&mut v, r.reported.iter().copied());
        }
        v.truncate(control::MAX_ADDRS);
        v
    }

    fn answer_members(&mut self, now: Instant, querier: Ipv4Addr) {
        // The querier knows its own certificate.
        let mut certs: Vec<Vec<u8>> = self
            .registrations
            .iter()
            .filter(|(ip, _)| **ip != querier)
            .map(|(_, r)| r.cert.cert().to_bytes().to_vec())
            .collect();
        certs.push(self.cert.to_bytes().to_vec());
        let chunks: Vec<Vec<Vec<u8>>> = certs.chunks(MEMBERS_PER_REPLY).map(<[Vec<u8>]>::to_vec).collect();
        let n = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            self.send_control(now, querier, Control::MembersReply { certs: chunk, last: i + 1 == n });
        }
    }

    fn on_query_reply(&mut self, now: Instant, wall: UnixTime, lighthouse: Ipv4Addr, found: Found) {
        let Found { vpn_ip, addrs, relays, cert } = found;
        let cert = &cert[..];
        let addrs: Vec<SocketAddr> = addrs.into_iter().filter(|a| self.remote_allowed(a.ip())).collect();
        let known = self.by_addr.get(&vpn_ip).and_then(|i| self.peers.get(i)).map(|p| p.vpn_ip);
        // Kept under the node's IPv4 overlay IP (the peer's identity), whichever address was asked.
        let owner = match vpn_ip {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => known,
        };
        if let Some(owner) = owner {
            self.discovered.insert(owner, Discovered { addrs: addrs.clone(), relays: relays.clone() });
        }
        if let Some(&idx) = self.by_addr.get(&vpn_ip)
            && let Some(p) = self.peers.get_mut(&idx)
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
        let Some(v) = self.verify_cert(now, wall, source, cert, true) else {
            return;
        };
        let Some(owner) = v.cert().vpn_ip().filter(|_| cert_addrs(v.cert()).any(|a| a == vpn_ip)) else {
            self.counters.rx_cert_rejected += 1;
            return;
        };
        self.discovered.insert(owner, Discovered { addrs: addrs.clone(), relays: relays.clone() });
        // The certificate came with the answer: no Hello round trip, the handshake starts now.
        let via = Path::Relay { relay: lighthouse, peer: owner };
        let from = addrs.first().map(|a| Path::Direct(*a)).unwrap_or(via);
        self.install_peer(now, v, Some(from), None);
    }

    /// The peer answered a probe: the probed direct address carries our datagrams. If it had
    /// failed and traffic went through a relay, traffic comes back to it.
    fn on_path_ack(&mut self, now: Instant, idx: u32, nonce: u64) {
        let Some(peer) = self.peers.get_mut(&idx) else { return };
        let Some(addr) = peer.path_check.on_ack(now, nonce) else { return };
        let direct = Path::Direct(addr);
        if let Some(old) = peer.endpoint.filter(|e| !e.is_direct()) {
            peer.endpoint = Some(direct);
            self.events.push_back(Event::Roamed {
                name: peer.name.clone(),
                vpn_ip: peer.vpn_ip,
                from: old,
                to: direct,
            });
        }
    }

    /// Relay: forward an end-to-end encrypted datagram from `origin` to `target`.
    fn relay(&mut self, now: Instant, origin: Ipv4Addr, target: Ipv4Addr, datagram: Vec<u8>) {
        let target_ok = self
            .by_vpn_ip
            .get(&target)
            .and_then(|i| self.peers.get(i))
            .is_some_and(|p| p.session.is_up() && p.endpoint.is_some_and(|e| e.is_direct()));
        if !self.disc.am_relay || !target_ok || target == origin {
            self.counters.relay_dropped += 1;
            return;
        }
        self.counters.relay_forwarded += 1;
        self.send_control(now, target, Control::RelayFrom { peer: origin, datagram });
    }

    /// Periodic discovery work: address reports to the lighthouses, keepalives to our relays,
    /// member lists, keepalive punches, and scheduled punches.
    pub(super) fn discovery_timers(&mut self, now: Instant) {
        if now >= self.next_update {
            self.next_update = now + self.disc.interval;
            if !self.disc.am_lighthouse {
                let mut addrs: Vec<SocketAddr> = self.local_addrs.clone();
                push_unique(&mut addrs, self.disc.advertise_addrs.iter().copied());
                let relays = self.disc.relays.clone();
                for lh in self.disc.lighthouses.clone() {
                    if lh == self.vpn_ip {
                        continue;
                    }
                    self.send_control(now, lh, Control::HostUpdate { addrs: addrs.clone(), relays: relays.clone() });
                    self.send_control(now, lh, Control::MembersQuery);
                }
            }
            // Relayed sessions look for a direct path once per interval.
            self.requery_peers(now, |p| p.session.is_up() && p.endpoint.is_some_and(|e| !e.is_direct()));
            let stale = self.disc.interval * 6;
            self.registrations.retain(|_, r| now.duration_since(r.seen) < stale.max(Duration::from_secs(60)));
            let registrations = &self.registrations;
            self.registered_addrs.retain(|_, owner| registrations.contains_key(owner));
        }
        if now >= self.next_relay_ping {
            self.next_relay_ping = now + RELAY_KEEPALIVE_EVERY;
            for r in self.disc.relays.clone() {
                if r != self.vpn_ip {
                    self.send_control(now, r, Control::Ping);
                }
            }
        }
        if self.disc.punch && now >= self.next_punch {
            self.next_punch = now + PUNCH_EVERY;
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
                self.transmits.push_back(Transmit { dst, data: wire::PUNCH.to_vec() });
            }
        }
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.scheduled).into_iter().partition(|(t, _)| *t <= now);
        self.scheduled = later;
        for (_, job) in due {
            match job {
                Scheduled::Punch(addrs) => {
                    for dst in addrs {
                        self.counters.tx_punches += 1;
                        self.transmits.push_back(Transmit { dst, data: wire::PUNCH.to_vec() });
                    }
                }
                Scheduled::Respond(vpn_ip) => {
                    let up =
                        self.by_vpn_ip.get(&vpn_ip).and_then(|i| self.peers.get(i)).is_some_and(|p| p.session.is_up());
                    if !up {
                        self.send_control(now, vpn_ip, Control::Ping);
                    }
                }
            }
        }
    }
}

impl<P: Policy> Node<P> {
    /// Asks the lighthouses about the peers `which` selects (fresh addresses; the lighthouse
    /// also asks each peer to punch toward us). Without lighthouses, probes directly.
    pub(super) fn requery_peers(&mut self, now: Instant, which: impl Fn(&Peer<P::Peer>) -> bool) {
        let targets: Vec<(u32, Ipv4Addr)> = self
            .peers
            .iter()
            .filter(|(_, p)| which(p) && !self.disc.lighthouses.contains(&p.vpn_ip))
            .map(|(i, p)| (*i, p.vpn_ip))
            .collect();
        for (idx, vpn_ip) in targets {
            if self.disc.lighthouses.is_empty() || self.disc.am_lighthouse {
                self.direct_probe(now, idx);
                continue;
            }
            for lh in self.disc.lighthouses.clone() {
                if lh != self.vpn_ip {
                    self.send_control(now, lh, Control::HostQuery { vpn_ip: IpAddr::V4(vpn_ip) });
                }
            }
        }
    }

    /// Whether `relay` may deliver datagrams from `origin`: it serves us (`relay.relays`), or
    /// the lighthouse (or the peer entry) says it serves `origin`.
    pub(super) fn is_relay_for(&self, relay: Ipv4Addr, origin: Ipv4Addr) -> bool {
        self.disc.relays.contains(&relay)
            || self.discovered.get(&origin).is_some_and(|d| d.relays.contains(&relay))
            || self.by_vpn_ip.get(&origin).and_then(|i| self.peers.get(i)).is_some_and(|p| p.relays.contains(&relay))
    }

    /// A handshake sent to the peer's direct addresses only (never via a relay): if it is
    /// answered, the session moves to the direct path.
    pub(super) fn direct_probe(&mut self, now: Instant, idx: u32) {
        let mut buf = self.take_buffer();
        if let Some(peer) = self.peers.get_mut(&idx)
            && peer.session.init().is_none()
            && !peer.candidates.is_empty()
            && let TunnResult::WriteToNetwork(init) = peer.tunn.format_handshake_initiation(&mut buf, false)
        {
            let bytes = init.to_vec();
            self.counters.direct_probes += 1;
            let init = InitInFlight { bytes, sent: now, retries: 0, next: now + self.try_interval, direct_only: true };
            peer.session.initiating(now, init);
            self.resend_initiation(now, idx);
        }
        self.put_buffer(buf);
    }
}
