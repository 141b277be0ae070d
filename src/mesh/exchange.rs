//! The certificate exchange that precedes WireGuard handshakes, and the peer lifecycle: a
//! certificate is verified (rate-limited per source, cached by fingerprint), a peer is created
//! only when its key is bound to a verified certificate, and removed when that stops holding.

use super::*;

impl<P: Policy> Node<P> {
    fn take_verify_budget(&mut self, source: CertSource) -> bool {
        let ok = self.verify_budget.take(budget_key(source));
        if !ok {
            self.counters.rx_rate_limited += 1;
        }
        ok
    }

    /// Parses and verifies a peer certificate from the wire, with rate limiting per source and
    /// per node. Refusals are counted; a few a second become events.
    pub(super) fn verify_wire_cert(
        &mut self,
        now: Instant,
        wall: UnixTime,
        from: Path,
        cert: &[u8],
    ) -> Option<VerifiedCert> {
        self.verify_cert(now, wall, CertSource::of_path(from), cert, true)
    }

    /// As [`Node::verify_wire_cert`]; `budgeted: false` for certificates an authenticated
    /// lighthouse sent (member lists), which must not be cut short by the per-source budget.
    pub(super) fn verify_cert(
        &mut self,
        now: Instant,
        wall: UnixTime,
        source: CertSource,
        cert: &[u8],
        budgeted: bool,
    ) -> Option<VerifiedCert> {
        // Indexed by a hash of the wire bytes: that is the fingerprint of a v1 certificate but
        // not of a v2 one (Nebula hashes v2's parts), so entries are matched on their bytes.
        let fp = Fingerprint::of(cert);
        // A certificate we already verified (same bytes) costs no signature check.
        if let Some(key) = self.known_by_fingerprint.get(&fp)
            && let Some((v, _)) = self.known_certs.get(key)
            && v.cert().to_bytes() == cert
            && self.pool.recheck(v, wall, &self.blocklist).is_ok()
        {
            return Some(v.clone());
        }
        if budgeted && !self.take_verify_budget(source) {
            return None;
        }
        let result = Certificate::from_bytes(cert)
            .map_err(|e| CertRefusal::Malformed(e.to_string()))
            .and_then(|c| self.pool.verify_arc(Arc::new(c), wall, &self.blocklist).map_err(CertRefusal::Invalid))
            .and_then(|v| {
                let name = v.cert().name().to_string();
                if v.cert().vpn_ip() == Some(self.vpn_ip) || v.cert().details().public_key == self.public.to_bytes() {
                    Err(CertRefusal::ClaimsOurIdentity { name })
                } else if v.cert().vpn_ip().is_none() {
                    Err(CertRefusal::NoOverlayIp { name })
                } else {
                    Ok(v)
                }
            });
        match result {
            Ok(v) => {
                if self.known_certs.len() >= KNOWN_CERTS {
                    let oldest = self.known_certs.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k);
                    if let Some(k) = oldest
                        && let Some((old, _)) = self.known_certs.remove(&k)
                    {
                        self.known_by_fingerprint.remove(&Fingerprint::of(old.cert().to_bytes()));
                    }
                }
                let key = v.cert().details().public_key;
                if let Some((old, _)) = self.known_certs.insert(key, (v.clone(), now)) {
                    self.known_by_fingerprint.remove(&Fingerprint::of(old.cert().to_bytes()));
                }
                self.known_by_fingerprint.insert(fp, key);
                Some(v)
            }
            Err(reason) => {
                self.counters.rx_cert_rejected += 1;
                if self.refusals_to_log.take() {
                    self.events.push_back(Event::CertRejected { source, reason });
                }
                None
            }
        }
    }

    pub(super) fn on_hello(
        &mut self,
        now: Instant,
        wall: UnixTime,
        from: Path,
        id: u64,
        cert: &[u8],
        request_len: usize,
    ) {
        let Some(v) = self.verify_wire_cert(now, wall, from, cert) else {
            return;
        };
        let key = v.cert().details().public_key;
        if let Some(&idx) = self.by_key.get(&key) {
            // A Hello's source is not authenticated: it never becomes a candidate address.
            self.refresh_cert(idx, v);
        }
        if !self.hello_reply_budget.take(budget_key(CertSource::of_path(from))) {
            self.counters.tx_hello_reply_limited += 1;
        } else if let Some(reply) = wire::hello_reply(id, &self.hello_cert, request_len) {
            self.counters.tx_hello_replies += 1;
            self.send_path(now, from, reply);
        } else {
            self.counters.tx_reply_suppressed += 1;
        }
        // An initiation that raced ahead of this Hello can be processed now.
        if let Some((init, _)) = self.held_inits.remove(&from) {
            let mut out = self.take_buffer();
            if let Some(packet) = self.on_handshake_init(now, wall, from, &init, &mut out, 0) {
                self.tun_writes.push_back(packet.to_vec());
            }
            self.put_buffer(out);
        }
    }

    pub(super) fn on_hello_reply(&mut self, now: Instant, wall: UnixTime, from: Path, id: u64, cert: &[u8]) {
        let Some(target) = self.pending.iter().find(|(_, p)| p.hello_id == id).map(|(ip, _)| *ip) else {
            // Replies to the Hellos sent with handshakes (id 0) refresh certificates.
            if id == 0 {
                if let Some(v) = self.verify_wire_cert(now, wall, from, cert)
                    && let Some(&idx) = self.by_key.get(&v.cert().details().public_key)
                {
                    self.refresh_cert(idx, v);
                }
            } else {
                self.counters.rx_unsolicited += 1;
            }
            return;
        };
        let Some(v) = self.verify_wire_cert(now, wall, from, cert) else {
            return;
        };
        if !cert_addrs(v.cert()).any(|a| a == target) {
            self.counters.rx_cert_rejected += 1;
            self.events.push_back(Event::CertRejected {
                source: CertSource::of_path(from),
                reason: CertRefusal::WrongPeer {
                    expected: target,
                    name: v.cert().name().to_string(),
                    got: v.cert().vpn_ip(),
                },
            });
            return;
        }
        // Our Hello (random id) went to `from`: a path we chose. What waited is sent now.
        self.install_peer(now, v, Some(from), None);
    }

    /// A `Tunn` for a peer key, sharing the node's rate limiter (one cookie secret).
    pub(super) fn new_tunn(&self, key: [u8; 32], idx: u32) -> Tunn {
        Tunn::new(self.secret.clone(), PublicKey::from(key), None, None, idx, Some(self.limiter.clone()))
    }

    /// Creates the peer for a verified certificate, replacing one with the same overlay IP
    /// (a re-provisioned host with a new key), and sends the packets that waited for it.
    /// `trusted_from` is a path we chose or that authenticated (never a mere Hello source);
    /// `prebuilt` is a session whose initiation already authenticated. Returns the index.
    pub(super) fn install_peer(
        &mut self,
        now: Instant,
        v: VerifiedCert,
        trusted_from: Option<Path>,
        prebuilt: Option<(u32, Tunn)>,
    ) -> u32 {
        let key = v.cert().details().public_key;
        let vpn_ip = v.cert().vpn_ip().unwrap_or(Ipv4Addr::UNSPECIFIED);
        let idx = match self.by_key.get(&key) {
            Some(&idx) => {
                self.refresh_cert(idx, v);
                idx
            }
            None => {
                if let Some(old) = self.by_vpn_ip.get(&vpn_ip).copied() {
                    self.remove_peer(old, RemoveReason::Replaced);
                }
                let (idx, tunn) = match prebuilt {
                    Some(p) => p,
                    None => {
                        let idx = self.allocate_index();
                        (idx, self.new_tunn(key, idx))
                    }
                };
                let mut peer = Peer::new(v.clone(), self.policy.peer(&v), tunn);
                peer.since = Some(now);
                for addr in cert_addrs(v.cert()) {
                    peer.add_candidates(self.static_hosts.get(&addr).map(Vec::as_slice).unwrap_or_default());
                }
                if let Some(d) = self.discovered.get(&vpn_ip) {
                    peer.add_candidates(&d.addrs);
                    peer.relays = d.relays.clone();
                }
                self.by_vpn_ip.insert(vpn_ip, idx);
                self.index_addrs(idx, v.cert());
                self.by_key.insert(key, idx);
                self.peers.insert(idx, peer);
                if self.next_tick.is_none() {
                    self.next_tick = Some(now + TIMER_TICK);
                }
                idx
            }
        };
        if let Some(Path::Direct(a)) = trusted_from
            && self.remote_allowed(a.ip())
            && let Some(p) = self.peers.get_mut(&idx)
        {
            p.add_candidates(&[a]);
        }
        // Whatever waited for this peer, under any of its addresses, goes now (even when the
        // peer reached us first).
        let waited: Vec<Pending> = match self.peers.get(&idx) {
            Some(p) => cert_addrs(p.cert.cert()).filter_map(|a| self.pending.remove(&a)).collect(),
            None => vec![],
        };
        if !waited.is_empty() {
            let mut out = self.take_buffer();
            for (packet, control) in waited.into_iter().flat_map(|p| p.queue) {
                self.pending_packets = self.pending_packets.saturating_sub(1);
                if let Some((dst, d)) = self.encapsulate(now, idx, &packet, &mut out, control) {
                    self.transmits.push_back(Transmit { dst, data: d.to_vec() });
                }
            }
            self.put_buffer(out);
        }
        idx
    }

    /// Points every overlay address of `cert` (IPv4 and IPv6) at peer `idx`.
    fn index_addrs(&mut self, idx: u32, cert: &Certificate) {
        for addr in cert_addrs(cert) {
            self.by_addr.insert(addr, idx);
        }
    }

    /// Forgets the addresses of `cert` that still point at peer `idx`.
    fn unindex_addrs(&mut self, idx: u32, cert: &Certificate) {
        for addr in cert_addrs(cert) {
            if self.by_addr.get(&addr) == Some(&idx) {
                self.by_addr.remove(&addr);
            }
        }
    }

    /// A newer certificate for a peer's key (renewal, group change): adopt it if it names the
    /// same overlay IP, and rebuild what the firewall knows about the peer.
    pub(super) fn refresh_cert(&mut self, idx: u32, v: VerifiedCert) {
        let policy_peer = self.policy.peer(&v);
        let Some(p) = self.peers.get_mut(&idx) else { return };
        if v.cert().fingerprint() == p.cert.cert().fingerprint() || v.cert().vpn_ip() != Some(p.vpn_ip) {
            return;
        }
        let old = std::mem::replace(&mut p.cert, v.clone());
        p.name = v.cert().name().to_string();
        p.policy_peer = policy_peer;
        self.unindex_addrs(idx, old.cert());
        self.index_addrs(idx, v.cert());
    }

    pub(super) fn allocate_index(&mut self) -> u32 {
        loop {
            self.next_index = (self.next_index + 1) & 0x00ff_ffff;
            if self.next_index != 0 && !self.peers.contains_key(&self.next_index) {
                return self.next_index;
            }
        }
    }

    pub(super) fn remove_peer(&mut self, idx: u32, reason: RemoveReason) {
        if let Some(p) = self.peers.remove(&idx) {
            self.by_vpn_ip.remove(&p.vpn_ip);
            self.unindex_addrs(idx, p.cert.cert());
            self.by_key.remove(&p.public_key);
            if let Some(r) = p.remote_index
                && self.by_remote_index.get(&r) == Some(&idx)
            {
                self.by_remote_index.remove(&r);
            }
            self.registrations.remove(&p.vpn_ip);
            self.counters.peers_removed += 1;
            self.events.push_back(Event::PeerRemoved { name: p.name, vpn_ip: p.vpn_ip, reason });
        }
    }
}

/// The address a per-source budget charges: the sender, or the relay or lighthouse a message
/// came through.
fn budget_key(source: CertSource) -> IpAddr {
    match source {
        CertSource::Direct(a) => a.ip(),
        CertSource::Relay { relay, .. } => IpAddr::V4(relay),
        CertSource::Lighthouse { lighthouse, .. } => IpAddr::V4(lighthouse),
    }
}
