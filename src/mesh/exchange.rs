//! The certificate exchange that precedes WireGuard handshakes, and the peer lifecycle: a
//! certificate is verified (rate-limited per source, cached by fingerprint), a peer is created
//! only when its key is bound to a verified certificate, and removed when that stops holding.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use boringtun::noise::Tunn;
use boringtun::x25519::PublicKey;

use super::admission::{CertOffer, NotAdmitted};
use super::event::{CertRefusal, CertSource, Event, RemoveReason};
use super::peer::{Path, Peer};
use super::peer_table::cert_addrs;
use super::{Node, Policy, TIMER_TICK, wire};
use crate::cert::pool::VerifiedCert;
use crate::unixtime::UnixTime;

impl<P: Policy> Node<P> {
    /// Parses and verifies a peer certificate from the wire, with rate limiting per source and
    /// per node. Refusals are counted; a few a second become events.
    pub(super) fn verify_wire_cert(
        &mut self,
        now: Instant,
        wall: UnixTime,
        from: Path,
        cert: &[u8],
    ) -> Option<VerifiedCert> {
        self.verify_cert(now, wall, CertOffer { source: CertSource::of_path(from), bytes: cert, budgeted: true })
    }

    /// As [`Node::verify_wire_cert`], for any offer; `budgeted: false` for certificates an
    /// authenticated lighthouse sent (member lists), which must not be cut short by the
    /// per-source budget.
    pub(super) fn verify_cert(&mut self, now: Instant, wall: UnixTime, offer: CertOffer<'_>) -> Option<VerifiedCert> {
        let source = offer.source;
        match self.admission.verify(now, wall, offer, &self.id) {
            Ok(v) => Some(v),
            Err(NotAdmitted::OverBudget) => {
                self.out.counters.rx_rate_limited += 1;
                None
            }
            Err(NotAdmitted::Refused(reason)) => {
                self.out.counters.rx_cert_rejected += 1;
                if self.admission.log_refusal() {
                    self.out.event(Event::CertRejected { source, reason });
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
        if let Some(idx) = self.peers.index_of_key(&key) {
            // A Hello's source is not authenticated: it never becomes a candidate address.
            self.refresh_cert(idx, v);
        }
        if !self.admission.take_hello_reply(CertSource::of_path(from)) {
            self.out.counters.tx_hello_reply_limited += 1;
        } else if let Some(reply) = wire::hello_reply(id, &self.id.hello_cert, request_len) {
            self.out.counters.tx_hello_replies += 1;
            self.send_path(now, from, reply);
        } else {
            self.out.counters.tx_reply_suppressed += 1;
        }
        // An initiation that raced ahead of this Hello can be processed now.
        if let Some(init) = self.admission.release_init(from) {
            let mut out = self.take_buffer();
            if let Some(packet) = self.on_handshake_init(now, wall, from, &init, &mut out, 0) {
                self.out.tun_writes.push_back(packet.to_vec());
            }
            self.put_buffer(out);
        }
    }

    pub(super) fn on_hello_reply(&mut self, now: Instant, wall: UnixTime, from: Path, id: u64, cert: &[u8]) {
        let Some(target) = self.pending.by_hello_id(id) else {
            // Replies to the Hellos sent with handshakes (id 0) refresh certificates.
            if id == 0 {
                if let Some(v) = self.verify_wire_cert(now, wall, from, cert)
                    && let Some(idx) = self.peers.index_of_key(&v.cert().details().public_key)
                {
                    self.refresh_cert(idx, v);
                }
            } else {
                self.out.counters.rx_unsolicited += 1;
            }
            return;
        };
        let Some(v) = self.verify_wire_cert(now, wall, from, cert) else {
            return;
        };
        if !cert_addrs(v.cert()).any(|a| a == target) {
            self.out.counters.rx_cert_rejected += 1;
            self.out.event(Event::CertRejected {
                source: CertSource::of_path(from),
                reason: CertRefusal::WrongPeer {
                    expected: target,
                    name: v.cert().name().to_string(),
                    got: v.cert().identity(),
                },
            });
            return;
        }
        // Our Hello (random id) went to `from`: a path we chose. What waited is sent now.
        self.install_peer(now, v, Some(from), None);
    }

    /// A `Tunn` for a peer key, sharing the node's rate limiter (one cookie secret).
    pub(super) fn new_tunn(&self, key: [u8; 32], idx: u32) -> Tunn {
        Tunn::new(self.id.secret.clone(), PublicKey::from(key), None, None, idx, Some(self.admission.limiter.clone()))
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
        let vpn_ip = v.cert().identity().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let idx = match self.peers.index_of_key(&key) {
            Some(idx) => {
                self.refresh_cert(idx, v);
                idx
            }
            None => {
                if let Some(old) = self.peers.index_of_vpn_ip(vpn_ip) {
                    self.remove_peer(old, RemoveReason::Replaced);
                }
                let (idx, tunn) = match prebuilt {
                    Some(p) => p,
                    None => {
                        let idx = self.peers.allocate_index();
                        (idx, self.new_tunn(key, idx))
                    }
                };
                let mut peer = Peer::new(v.clone(), self.policy.peer(&v), tunn);
                peer.since = Some(now);
                for addr in cert_addrs(v.cert()) {
                    peer.add_candidates(self.static_hosts.get(&addr).map(Vec::as_slice).unwrap_or_default());
                }
                if let Some(d) = self.disc.discovered(vpn_ip) {
                    peer.add_candidates(&d.addrs);
                    peer.relays = d.relays.clone();
                }
                self.peers.insert(idx, peer);
                if self.next_tick.is_none() {
                    self.next_tick = Some(now + TIMER_TICK);
                }
                idx
            }
        };
        if let Some(Path::Direct(a)) = trusted_from
            && self.disc.remote_allowed(a.ip())
            && let Some(p) = self.peers.get_mut(idx)
        {
            p.add_candidates(&[a]);
        }
        // Whatever waited for this peer, under any of its addresses, goes now (even when the
        // peer reached us first).
        let waited = match self.peers.get(idx) {
            Some(p) => self.pending.take(cert_addrs(p.cert.cert())),
            None => Default::default(),
        };
        if !waited.is_empty() {
            let mut out = self.take_buffer();
            for (packet, control) in waited {
                if let Some((dst, d)) = self.encapsulate(now, idx, &packet, &mut out, control) {
                    self.out.send(dst, d.to_vec());
                }
            }
            self.put_buffer(out);
        }
        idx
    }

    /// A newer certificate for a peer's key (renewal, group change): adopt it if it names the
    /// same overlay IP, and rebuild what the firewall knows about the peer.
    pub(super) fn refresh_cert(&mut self, idx: u32, v: VerifiedCert) {
        let policy_peer = self.policy.peer(&v);
        let Some(p) = self.peers.get_mut(idx) else { return };
        if v.cert().fingerprint() == p.cert.cert().fingerprint() || v.cert().identity() != Some(p.vpn_ip) {
            return;
        }
        let old = std::mem::replace(&mut p.cert, v.clone());
        p.name = v.cert().name().to_string();
        p.policy_peer = policy_peer;
        self.peers.reindex_addrs(idx, old.cert(), v.cert());
    }

    pub(super) fn remove_peer(&mut self, idx: u32, reason: RemoveReason) {
        if let Some(p) = self.peers.remove(idx) {
            self.disc.unregister(p.vpn_ip);
            self.out.counters.peers_removed += 1;
            self.out.event(Event::PeerRemoved { name: p.name, vpn_ip: p.vpn_ip, reason });
        }
    }
}
