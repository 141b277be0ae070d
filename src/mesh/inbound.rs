//! Network → TUN: demultiplexing datagrams, WireGuard handshakes and data, roaming,
//! anti-spoofing, in-tunnel control messages and the inbound firewall.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, TunnResult};

use super::control::{self, Control};
use super::event::Event;
use super::peer::Path;
use super::peer_table::cert_addrs;
use super::wire::{self, WgType};
use super::{Direction, Node, Policy, Verdict};
use crate::unixtime::UnixTime;

/// An initiation offered to a peer on a hint (its sender index) carried another key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NotThisPeer;

/// A relayed datagram carries no further relay message (no relay chains).
const MAX_RELAY_DEPTH: u8 = 1;

/// How a datagram reached us: its path, and how many relay wrappings were taken off it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Arrival {
    from: Path,
    depth: u8,
}

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
        self.out.counters.rx_datagrams += 1;
        self.receive(now, wall, Path::Direct(from), data, out, 0)
    }

    fn receive<'b>(
        &mut self,
        now: Instant,
        wall: UnixTime,
        from: Path,
        data: &[u8],
        out: &'b mut [u8],
        depth: u8,
    ) -> Option<&'b [u8]> {
        let kind = match wire::classify(data) {
            Ok(k) => k,
            Err(_) => {
                self.out.counters.rx_malformed += 1;
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
            wire::Kind::Punch => {
                self.out.counters.rx_punches += 1;
                None
            }
            // `lighthouse.remote_allow_list` (as in Nebula): no handshake with a forbidden
            // address, so no session ever answers to it.
            wire::Kind::WireGuard { msg_type: WgType::HandshakeInit | WgType::HandshakeResponse, .. } if matches!(from, Path::Direct(a) if !self.disc.remote_allowed(a.ip())) =>
            {
                self.out.counters.rx_remote_not_allowed += 1;
                None
            }
            wire::Kind::WireGuard { msg_type: WgType::HandshakeInit, .. } => {
                self.on_handshake_init(now, wall, from, data, out, depth)
            }
            wire::Kind::WireGuard { msg_type, receiver: Some(r) } => {
                let idx = r >> 8;
                if !self.peers.contains(idx) {
                    self.out.counters.rx_unknown_index += 1;
                    if msg_type == WgType::Data && self.admission.take_unknown_index_reply(from.source_ip()) {
                        self.send_path(now, from, wire::unknown_index(r).to_vec());
                    }
                    return None;
                }
                self.decapsulate(now, wall, idx, Arrival { from, depth }, data, out)
            }
            wire::Kind::WireGuard { .. } => {
                self.out.counters.rx_malformed += 1;
                None
            }
        }
    }

    pub(super) fn on_handshake_init<'b>(
        &mut self,
        now: Instant,
        wall: UnixTime,
        from: Path,
        data: &[u8],
        out: &'b mut [u8],
        depth: u8,
    ) -> Option<&'b [u8]> {
        // mac1 first (cheap, keyed by our public key): garbage never reaches the DH. Over the
        // rate limit, the initiator gets a cookie and must prove its address.
        let mut cookie = [0u8; 64];
        let half = match self.admission.limiter.verify_packet(Some(from.source_ip()), data, &mut cookie) {
            Ok(Packet::HandshakeInit(init)) => {
                // A peer we know by its session index: its `Tunn` proves the key itself, and an
                // initiation yields no packet for the TUN. Only a key that is not this peer's
                // (an index another sender also uses) goes on to the anonymous parse.
                if let Some(idx) = self.hinted_initiator(from, data)
                    && self.keeps_own_rekey(idx)
                {
                    self.out.counters.rx_handshake_crossed += 1;
                    return None;
                }
                if let Some(idx) = self.hinted_initiator(from, data)
                    && self.offer(now, wall, idx, Arrival { from, depth }, data, &mut *out) != Err(NotThisPeer)
                {
                    self.out.counters.rx_handshake_by_index += 1;
                    return None;
                }
                parse_handshake_anon(&self.id.secret, &self.id.public, &init)
            }
            Ok(_) => {
                self.out.counters.rx_malformed += 1;
                return None;
            }
            Err(TunnResult::WriteToNetwork(reply)) => {
                let reply = reply.to_vec();
                self.send_cookie(now, from, reply);
                return None;
            }
            Err(_) => {
                self.out.counters.rx_handshake_invalid += 1;
                return None;
            }
        };
        let Ok(half) = half else {
            self.out.counters.rx_handshake_invalid += 1;
            return None;
        };
        if let Some(idx) = self.peers.index_of_key(&half.peer_static_public) {
            return self.decapsulate(now, wall, idx, Arrival { from, depth }, data, out);
        }
        let Some(v) = self.admission.known(&half.peer_static_public) else {
            // The Hello carrying its certificate may still be on its way.
            self.out.counters.rx_unknown_key += 1;
            self.admission.hold_init(now, from, data);
            return None;
        };
        let v = v.clone();
        if let Path::Relay { peer: claimed, .. } = from
            && Some(claimed) != v.cert().identity()
        {
            self.out.counters.rx_spoofed += 1;
            return None;
        }
        // A new peer exists (and replaces one with the same overlay IP) only once its
        // initiation has authenticated: parse_handshake_anon alone does not prove the key.
        let idx = self.peers.allocate_index();
        let mut tunn = self.new_tunn(half.peer_static_public, idx);
        let response = match tunn.decapsulate(Some(from.source_ip()), data, out) {
            TunnResult::WriteToNetwork(b) if WgType::HandshakeResponse.is(b) => b.to_vec(),
            TunnResult::WriteToNetwork(cookie) => {
                let cookie = cookie.to_vec();
                self.send_cookie(now, from, cookie);
                return None;
            }
            _ => {
                self.out.counters.rx_handshake_invalid += 1;
                return None;
            }
        };
        let idx = self.install_peer(now, v, Some(from), Some((idx, tunn)));
        self.note_remote_index(idx, data);
        self.authenticated(now, idx, from, WgType::HandshakeInit);
        self.send_path(now, from, response);
        None
    }

    pub(super) fn decapsulate<'b>(
        &mut self,
        now: Instant,
        wall: UnixTime,
        idx: u32,
        arrival: Arrival,
        data: &[u8],
        out: &'b mut [u8],
    ) -> Option<&'b [u8]> {
        match self.offer(now, wall, idx, arrival, data, out) {
            Ok(packet) => packet,
            Err(NotThisPeer) => {
                self.out.counters.rx_wireguard_errors += 1;
                None
            }
        }
    }

    /// The peer whose session index the initiation's sender index continues, if any (and, for
    /// a relayed initiation, the peer the relay names).
    fn hinted_initiator(&self, from: Path, data: &[u8]) -> Option<u32> {
        let idx = self.peers.index_of_remote(wire::sender_index(data)? >> 8)?;
        let peer = self.peers.get(idx)?;
        match from {
            Path::Relay { peer: claimed, .. } if claimed != peer.vpn_ip => None,
            _ => Some(idx),
        }
    }

    /// Both ends started a rekey at once (their timers agree) and the initiations crossed:
    /// answering both would make two sessions where one does, and both ends would stay
    /// initiators and cross again at the next rekey. The end with the lower static key keeps its
    /// own and ignores the peer's; the other answers ours and stops resending its own (see
    /// `authenticated`). A probe for a direct path neither gives way nor wins.
    fn keeps_own_rekey(&self, idx: u32) -> bool {
        self.peers.get(idx).is_some_and(|p| {
            p.session.rekey_in_flight() && self.id.public.as_bytes() < &p.cert.cert().details().public_key
        })
    }

    /// Remembers the sender's session index of a handshake message that authenticated as peer
    /// `idx` (see `by_remote_index`).
    fn note_remote_index(&mut self, idx: u32, data: &[u8]) {
        if let Some(remote) = wire::sender_index(data) {
            self.peers.note_remote_index(idx, remote >> 8);
        }
    }

    /// [`Node::decapsulate`], except that an initiation carrying another key than the peer's
    /// is handed back (`NotThisPeer`) rather than counted: it came to this peer on a hint.
    fn offer<'b>(
        &mut self,
        now: Instant,
        wall: UnixTime,
        idx: u32,
        arrival: Arrival,
        data: &[u8],
        out: &'b mut [u8],
    ) -> Result<Option<&'b [u8]>, NotThisPeer> {
        let Arrival { from, depth } = arrival;
        let Some(peer) = self.peers.get_mut(idx) else { return Ok(None) };
        if let Path::Relay { peer: claimed, .. } = from
            && claimed != peer.vpn_ip
        {
            // A relay may only deliver a peer's datagrams under that peer's name.
            self.out.counters.rx_spoofed += 1;
            return Ok(None);
        }
        // Only what proves the peer's key may change its state: decrypted data (a keepalive is
        // `Done` for a data message), a response to our initiation (we answer with a keepalive,
        // type 4) or a fresh initiation we answer (type 2). A cookie reply (type 3, boringtun is
        // under load) proves nothing: it goes back to the source and changes nothing.
        let Some(msg_type) = WgType::of(data) else { return Ok(None) };
        let (packet_len, reply, proven) = match peer.tunn.decapsulate(Some(from.source_ip()), data, out) {
            TunnResult::Done => (None, None, msg_type == WgType::Data),
            TunnResult::Err(WireGuardError::WrongKey) if msg_type == WgType::HandshakeInit => {
                return Err(NotThisPeer);
            }
            TunnResult::Err(e) => {
                // Attacker-controlled input: counted, never logged per packet.
                self.out.counters.rx_wireguard_errors += 1;
                if matches!(e, WireGuardError::WrongTai64nTimestamp) {
                    self.out.counters.rx_handshake_stale += 1;
                }
                return Ok(None);
            }
            TunnResult::WriteToNetwork(b) => {
                (None, Some(b.to_vec()), matches!(WgType::of(b), Some(WgType::HandshakeResponse | WgType::Data)))
            }
            TunnResult::WriteToTunnelV4(b, src) => {
                if !peer.owns(IpAddr::V4(src)) {
                    self.out.counters.rx_spoofed += 1;
                    return Ok(None);
                }
                (Some(b.len()), None, true)
            }
            TunnResult::WriteToTunnelV6(b, src) => {
                if !peer.owns(IpAddr::V6(src)) {
                    self.out.counters.rx_spoofed += 1;
                    return Ok(None);
                }
                (Some(b.len()), None, true)
            }
        };
        if !proven {
            if let Some(cookie) = reply {
                self.send_cookie(now, from, cookie);
            } else if msg_type == WgType::CookieReply {
                // The peer is under load and sent a cookie for our initiation: the copy we
                // retry is stale (no mac2), so a fresh one, carrying the cookie, goes now.
                self.refresh_initiation(now, idx);
            }
            return Ok(None);
        }
        self.authenticated(now, idx, from, msg_type);
        if matches!(msg_type, WgType::HandshakeInit | WgType::HandshakeResponse) {
            self.note_remote_index(idx, data);
        }
        let Some(peer) = self.peers.get_mut(idx) else { return Ok(None) };
        if let Some(reply) = reply {
            // A response goes back the way its initiation came (the initiator chose that path,
            // and a relay's copy may be the only one that reaches it) unless that is a direct
            // address whose probe went unanswered; anything else follows the endpoint.
            let path = match (msg_type, from) {
                (WgType::HandshakeInit, Path::Direct(a)) if !peer.path_check.usable(a) => peer.endpoint.unwrap_or(from),
                (WgType::HandshakeInit, _) => from,
                _ => peer.endpoint.unwrap_or(from),
            };
            self.send_path(now, path, reply);
            // Our handshake completed: the new session is current. (After we answer the
            // peer's initiation it is not, until the peer's first data: flushing then would
            // make boringtun start yet another handshake, and two nodes with packets queued
            // would answer each other's initiations with new ones for ever.)
            if msg_type == WgType::HandshakeResponse {
                self.flush_session_queue(now, idx, path);
            }
            return Ok(None);
        }
        if peer.queued_in_session && msg_type == WgType::Data {
            let path = peer.endpoint.unwrap_or(from);
            self.flush_session_queue(now, idx, path);
        }
        let Some(peer) = self.peers.get_mut(idx) else { return Ok(None) };
        let Some(len) = packet_len else { return Ok(None) };
        // Control messages addressed to us from the peer itself are ours, not the host's.
        if let Some((src, payload)) = control::payload_for(&out[..len], self.id.networks()) {
            if !cert_addrs(peer.cert.cert()).any(|a| a == src) {
                self.out.counters.rx_spoofed += 1;
                return Ok(None);
            }
            let Ok(msg) = Control::decode(payload) else {
                self.out.counters.rx_malformed += 1;
                return Ok(None);
            };
            if let Control::RelayFrom { peer: origin, datagram } = msg {
                let relay = peer.vpn_ip;
                // Only a relay that serves us or the origin may speak for the origin.
                if depth >= MAX_RELAY_DEPTH || !from.is_direct() || !self.is_relay_for(relay, origin) {
                    self.out.counters.rx_malformed += 1;
                    return Ok(None);
                }
                return Ok(self.receive(now, wall, Path::Relay { relay, peer: origin }, &datagram, out, depth + 1));
            }
            self.handle_control(now, wall, idx, msg);
            return Ok(None);
        }
        // Only packets for this node (or the networks its certificate routes for) reach the
        // host: anything else would be forwarded by a host with IP forwarding on.
        if !self.id.addressed_to_us(&out[..len]) {
            self.out.counters.rx_not_for_us += 1;
            return Ok(None);
        }
        match self.policy.check(now, Direction::Inbound, &peer.policy_peer, &out[..len]) {
            Verdict::Allow => {
                peer.rx_packets += 1;
                peer.rx_bytes += len as u64;
                Ok(Some(&out[..len]))
            }
            Verdict::Drop => {
                self.out.counters.firewall_dropped_inbound += 1;
                peer.fw_dropped += 1;
                Ok(None)
            }
            Verdict::Reject(reply) => {
                self.out.counters.firewall_dropped_inbound += 1;
                peer.fw_dropped += 1;
                // The reject travels back through the tunnel to the sender (not firewalled itself).
                let mut buf = vec![0; wire::encapsulate_len(reply.len())];
                if let Some((dst, d)) = self.encapsulate(now, idx, &reply, &mut buf, true) {
                    let data = d.to_vec();
                    self.out.send(dst, data);
                }
                Ok(None)
            }
        }
    }

    /// Bookkeeping after a datagram from peer `idx` authenticated: roaming (`Peer::heard_from`)
    /// and session state.
    fn authenticated(&mut self, now: Instant, idx: u32, from: Path, msg_type: WgType) {
        let allowed = match from {
            Path::Direct(a) => self.disc.remote_allowed(a.ip()),
            Path::Relay { .. } => true,
        };
        let is_lighthouse = self.peers.get(idx).is_some_and(|p| self.disc.is_lighthouse(&self.peers, p.vpn_ip));
        let Some(peer) = self.peers.get_mut(idx) else {
            return;
        };
        if let Some(old) = peer.heard_from(now, from, msg_type, allowed) {
            self.out.event(Event::Roamed { name: peer.name.clone(), vpn_ip: peer.vpn_ip, from: old, to: from });
        }
        let forced = peer.last_forced_handshake.is_some_and(|t| now.duration_since(t) < Duration::from_secs(5));
        if msg_type == WgType::HandshakeResponse && forced && is_lighthouse {
            // A lighthouse that restarted asked for this handshake (UnknownIndex): it lost our
            // registration, and the report that met the unknown session is gone. Report again
            // now that the new session is up, not an interval later.
            self.disc.next_update = now;
        }
        if matches!(msg_type, WgType::HandshakeInit | WgType::HandshakeResponse) {
            peer.last_handshake = Some(now);
            self.out.counters.handshakes_completed += u64::from(msg_type == WgType::HandshakeResponse);
        }
        // We answered the peer's rekey across ours, and its key wins (`keeps_own_rekey`): it
        // ignores ours, so ours is not resent (boringtun stopped when it answered).
        if msg_type == WgType::HandshakeInit
            && peer.session.rekey_in_flight()
            && self.id.public.as_bytes() > &peer.cert.cert().details().public_key
        {
            peer.session.stop_fast_retries();
        }
        // A response (we initiated) or any data (the initiator confirmed) means a usable session.
        if msg_type != WgType::HandshakeInit {
            peer.session.stop_fast_retries();
            if peer.session.confirmed(now) {
                let path = peer.endpoint.unwrap_or(from);
                self.out.event(Event::PeerUp { name: peer.name.clone(), vpn_ip: peer.vpn_ip, path });
            }
        }
    }

    /// Sends the packets boringtun queued while a handshake ran.
    fn flush_session_queue(&mut self, now: Instant, idx: u32, path: Path) {
        let mut buf = self.take_buffer();
        while let Some(peer) = self.peers.get_mut(idx)
            && let TunnResult::WriteToNetwork(b) = peer.tunn.decapsulate(None, &[], &mut buf)
        {
            let b = b.to_vec();
            if wire::is_handshake_init(&b) {
                // No current session after all: the packets wait for this handshake.
                self.send_initiation(now, idx, b);
                break;
            }
            self.send_path(now, path, b);
        }
        if let Some(peer) = self.peers.get_mut(idx) {
            peer.queued_in_session = false;
        }
        self.put_buffer(buf);
    }

    /// boringtun's cookie reply to an initiation over the handshake budget, sent within
    /// `from`'s cookie budget: one cookie serves a genuine initiator for two minutes, the rest
    /// would only answer a flood.
    fn send_cookie(&mut self, now: Instant, from: Path, cookie: Vec<u8>) {
        self.out.counters.rx_rate_limited += 1;
        if self.admission.take_cookie_reply(from.source_ip()) {
            self.send_path(now, from, cookie);
        }
    }

    /// Replaces the initiation in flight with a freshly formatted one (boringtun adds the
    /// cookie it holds) and sends it on every path.
    fn refresh_initiation(&mut self, now: Instant, idx: u32) {
        let mut buf = self.take_buffer();
        if let Some(peer) = self.peers.get_mut(idx)
            && peer.session.init().is_some()
            && let TunnResult::WriteToNetwork(init) = peer.tunn.format_handshake_initiation(&mut buf, true)
        {
            let bytes = init.to_vec();
            if let Some(inflight) = peer.session.init_mut() {
                inflight.bytes = bytes;
            }
            self.resend_initiation(now, idx);
        }
        self.put_buffer(buf);
    }

    /// The peer at `from` lost our session (it restarted). The index it echoes is its own, so
    /// the peer is found by path; only a peer's current path can trigger this, at most once a
    /// second, and all it can cause is a new handshake.
    fn on_unknown_index(&mut self, now: Instant, from: Path) {
        let Some((idx, peer)) = self.peers.iter_mut().find(|(_, p)| p.endpoint == Some(from)) else {
            self.out.counters.rx_unsolicited += 1;
            return;
        };
        if peer.last_forced_handshake.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            return;
        }
        peer.last_forced_handshake = Some(now);
        peer.session.lost();
        let mut buf = self.take_buffer();
        if let Some(peer) = self.peers.get_mut(idx)
            && let TunnResult::WriteToNetwork(init) = peer.tunn.format_handshake_initiation(&mut buf, true)
        {
            let init = init.to_vec();
            self.send_initiation(now, idx, init);
        }
        self.put_buffer(buf);
    }
}
