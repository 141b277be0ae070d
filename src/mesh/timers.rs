//! Periodic work: boringtun timers (keepalives, rekeys, expiry), our fast initiation retries,
//! Hello retries, per-second budgets, discovery, and re-checking peer certificates.

use super::*;

/// boringtun gives up a handshake after 90 s (REKEY_ATTEMPT_TIME); an expiry after this long
/// of unanswered initiations is a peer that stopped answering, not an idle close.
const NO_ANSWER_AFTER: Duration = Duration::from_secs(60);

impl<P: Policy> Node<P> {
    pub fn handle_timeout(&mut self, now: Instant, wall: UnixTime) {
        if now >= self.next_second {
            self.next_second = now + Duration::from_secs(1);
            self.verify_budget.clear();
            self.verify_budget_total = VERIFY_PER_SEC;
            self.refusals_to_log = REFUSALS_LOGGED_PER_SEC;
            self.limiter.reset_count();
            self.unknown_index_budget = 10;
            self.held_inits.retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(5));
            self.recheck_peers(wall, false);
            self.forget_idle_peers(now);
        }
        let due: Vec<Ipv4Addr> = self.pending.iter().filter(|(_, p)| p.next_try <= now).map(|(ip, _)| *ip).collect();
        for ip in due {
            self.try_pending(now, ip);
        }
        self.discovery_timers(now);
        if self.next_tick.is_some_and(|t| t <= now) {
            self.next_tick = if self.peers.is_empty() { None } else { Some(now + TIMER_TICK) };
            self.peer_timers(now);
        }
    }

    fn peer_timers(&mut self, now: Instant) {
        let mut buf = self.take_buffer();
        let ids: Vec<u32> = self.peers.keys().copied().collect();
        for idx in ids {
            let Some(peer) = self.peers.get_mut(&idx) else {
                continue;
            };
            // boringtun logs its timer decisions itself, at ERROR for a normal idle expiry and
            // without naming the peer: silenced here, and turned into events that say who.
            let result =
                tracing::dispatcher::with_default(&tracing::Dispatch::none(), || peer.tunn.update_timers(&mut buf));
            match result {
                TunnResult::WriteToNetwork(d) => {
                    let d = d.to_vec();
                    if is_handshake_init(&d) {
                        self.send_initiation(now, idx, d);
                    } else if let Some(path) = peer.endpoint {
                        self.send_path(now, path, d);
                    }
                }
                TunnResult::Err(boringtun::noise::errors::WireGuardError::ConnectionExpired) => {
                    let gave_up =
                        peer.handshaking_since.take().is_some_and(|t| now.duration_since(t) >= NO_ANSWER_AFTER);
                    if peer.up || gave_up {
                        peer.up = false;
                        self.counters.sessions_expired += 1;
                        let cause = if gave_up { SessionEnd::NoAnswer } else { SessionEnd::Idle };
                        self.events.push_back(Event::SessionEnded {
                            name: peer.name.clone(),
                            vpn_ip: peer.vpn_ip,
                            cause,
                        });
                    }
                }
                _ => {}
            }
            // Our own faster retries of the initiation in flight (boringtun waits 5 s).
            let Some(peer) = self.peers.get_mut(&idx) else {
                continue;
            };
            let retry = match &mut peer.init {
                Some(init) if now.duration_since(init.sent) >= FAST_RETRY_FOR => {
                    peer.init = None;
                    false
                }
                Some(init) if now >= init.next => {
                    init.retries += 1;
                    init.next = now + self.try_interval * (init.retries + 1);
                    true
                }
                _ => false,
            };
            if retry {
                self.resend_initiation(now, idx);
            }
        }
        self.put_buffer(buf);
    }

    fn forget_idle_peers(&mut self, now: Instant) {
        let keep: Vec<Ipv4Addr> = self.disc.lighthouses.iter().chain(&self.disc.relays).copied().collect();
        let idle: Vec<u32> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.up && p.init.is_none() && !keep.contains(&p.vpn_ip))
            .filter(|(_, p)| p.last_rx.or(p.since).is_some_and(|t| now.duration_since(t) >= IDLE_PEER))
            .map(|(i, _)| *i)
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
            .filter_map(|(idx, p)| self.pool.recheck(&p.cert, wall, &self.blocklist).err().map(|e| (*idx, e)))
            .collect();
        for (idx, e) in bad {
            self.remove_peer(idx, RemoveReason::CertInvalid(e));
        }
    }
}
