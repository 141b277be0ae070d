//! Periodic work: boringtun timers (keepalives, rekeys, expiry), our fast initiation retries,
//! Hello retries, per-second budgets, discovery, and re-checking peer certificates.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::control::Control;
use super::event::{Event, RemoveReason};
use super::path_check::PathAction;
use super::peer::Path;
use super::{IDLE_PEER, Node, Policy, TIMER_TICK, wire};
use crate::cert::pool::VerifyError;
use crate::unixtime::UnixTime;

impl<P: Policy> Node<P> {
    pub fn handle_timeout(&mut self, now: Instant, wall: UnixTime) {
        if now >= self.next_second {
            self.next_second = now + Duration::from_secs(1);
            self.admission.each_second(now);
            self.recheck_peers(wall, false);
            self.forget_idle_peers(now);
        }
        for ip in self.pending.due(now) {
            self.try_pending(now, ip);
        }
        self.discovery_timers(now);
        self.expire_pings(now);
        if self.next_tick.is_some_and(|t| t <= now) {
            self.next_tick = if self.peers.is_empty() { None } else { Some(now + TIMER_TICK) };
            // boringtun logs its timer decisions itself, at ERROR for a normal idle expiry and
            // without naming the peer: silenced here, and turned into events that say who.
            tracing::dispatcher::with_default(&tracing::Dispatch::none(), || self.peer_timers(now));
        }
    }

    /// Every peer's tick (`Peer::tick`), in index order: the node sends and reports what
    /// each asks for. One map lookup per peer when nothing is due.
    fn peer_timers(&mut self, now: Instant) {
        let mut buf = self.take_buffer();
        // In index order, not the map's (seeded per process): what goes out, and so which
        // datagrams a simulation's seeded loss drops, is the same in every run.
        for idx in self.peers.sorted_indexes() {
            let Some(peer) = self.peers.get_mut(idx) else {
                continue;
            };
            let Some(due) = peer.tick(now, &mut buf, self.try_interval) else {
                continue;
            };
            if let Some(cause) = due.ended {
                self.out.counters.sessions_expired += 1;
                self.out.event(Event::SessionEnded { name: peer.name.clone(), vpn_ip: peer.vpn_ip, cause });
            }
            match due.datagram {
                Some(d) if wire::is_handshake_init(&d) => self.send_initiation(now, idx, d),
                Some(d) => {
                    if let Some(path) = peer.endpoint {
                        self.send_path(now, path, d);
                    }
                }
                None => {}
            }
            match due.path {
                PathAction::Probe { nonce, path } => {
                    self.out.counters.path_probes += 1;
                    self.send_control_on(now, idx, &Control::PathProbe { nonce }, Path::Direct(path));
                }
                PathAction::Lost(addr) => self.direct_path_lost(idx, addr),
                PathAction::Nothing => {}
            }
            if due.retry {
                self.resend_initiation(now, idx);
            }
        }
        self.put_buffer(buf);
    }

    /// A probe of the direct path to peer `idx` went unanswered: its traffic moves to a relay
    /// (see `path_check`), if one serves it.
    fn direct_path_lost(&mut self, idx: u32, addr: SocketAddr) {
        self.out.counters.direct_paths_lost += 1;
        let us = self.id.vpn_ip;
        // Relays by identity (the lists name them by any address), never ourselves.
        let relays: Vec<IpAddr> = self.peers.get(idx).map_or_else(Vec::new, |p| {
            let listed = p.relays.iter().chain(&self.disc.settings.relays);
            listed.filter(|r| !self.id.is_own(**r)).map(|r| self.peers.identity_of(*r)).collect()
        });
        let Some(peer) = self.peers.get_mut(idx) else { return };
        let vpn_ip = peer.vpn_ip;
        let relay = relays.into_iter().find(|r| *r != us && *r != vpn_ip);
        let now_via = relay.map(|relay| Path::Relay { relay, peer: vpn_ip });
        if now_via.is_some() {
            peer.endpoint = now_via;
        }
        self.out.event(Event::DirectPathLost { name: peer.name.clone(), vpn_ip, path: addr, now_via });
    }

    fn forget_idle_peers(&mut self, now: Instant) {
        let settings = &self.disc.settings;
        let keep: Vec<IpAddr> = settings.lighthouses.iter().chain(&settings.relays).copied().collect();
        let idle: Vec<u32> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.session.is_up() && p.session.init().is_none() && !self.peers.names(&keep, p.vpn_ip))
            .filter(|(_, p)| p.last_rx.or(p.since).is_some_and(|t| now.duration_since(t) >= IDLE_PEER))
            .map(|(i, _)| i)
            .collect();
        for idx in idle {
            self.remove_peer(idx, RemoveReason::Idle { minutes: IDLE_PEER.as_secs() / 60 });
        }
    }

    /// Disconnects peers whose certificates stopped verifying (expiry; blocklist or CA change
    /// when `reload` is set).
    pub(super) fn recheck_peers(&mut self, wall: UnixTime, reload: bool) {
        if !self.disconnect_invalid && !reload {
            return;
        }
        let bad: Vec<(u32, VerifyError)> = self
            .peers
            .iter()
            .filter_map(|(idx, p)| self.admission.recheck(&p.cert, wall).err().map(|e| (idx, e)))
            .collect();
        for (idx, e) in bad {
            self.remove_peer(idx, RemoveReason::CertInvalid(e));
        }
    }
}
