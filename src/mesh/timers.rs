//! Periodic work: boringtun timers (retries, keepalives, rekeys), Hello retries, per-second
//! budgets, and re-checking peer certificates for expiry.

use super::*;

impl<P: Policy> Node<P> {
    pub fn handle_timeout(&mut self, now: Instant, wall: UnixTime) {
        if now >= self.next_second {
            self.next_second = now + Duration::from_secs(1);
            self.verify_budget.clear();
            self.unknown_index_budget = 10;
            self.held_inits
                .retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(5));
            self.recheck_peers(wall, false);
        }
        let due: Vec<Ipv4Addr> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next_try <= now)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due {
            self.try_pending(now, ip);
        }
        if self.next_tick.is_some_and(|t| t <= now) {
            self.next_tick = if self.peers.is_empty() {
                None
            } else {
                Some(now + TIMER_TICK)
            };
            let mut buf = std::mem::take(&mut self.scratch);
            let ids: Vec<u32> = self.peers.keys().copied().collect();
            for idx in ids {
                let Some(peer) = self.peers.get_mut(&idx) else {
                    continue;
                };
                match peer.tunn.update_timers(&mut buf) {
                    TunnResult::WriteToNetwork(d) => {
                        if is_handshake_init(d) {
                            let init = d.to_vec();
                            self.send_initiation(idx, &init);
                        } else if let Some(dst) = peer.endpoint {
                            self.transmits.push_back(Transmit {
                                dst,
                                data: d.to_vec(),
                            });
                        }
                    }
                    TunnResult::Err(
                        boringtun::noise::errors::WireGuardError::ConnectionExpired,
                    ) if peer.up => {
                        peer.up = false;
                        self.counters.sessions_expired += 1;
                    }
                    _ => {}
                }
            }
            self.scratch = buf;
        }
    }

    /// Disconnects peers whose certificates stopped verifying (expiry; blocklist or CA change
    /// when `reload` is set).
    pub(super) fn recheck_peers(&mut self, wall: UnixTime, reload: bool) {
        if !self.disconnect_invalid && !reload {
            return;
        }
        let bad: Vec<(u32, String)> = self
            .peers
            .iter()
            .filter_map(|(idx, p)| {
                self.pool
                    .recheck(&p.cert, wall, &self.blocklist)
                    .err()
                    .map(|e| (*idx, e.to_string()))
            })
            .collect();
        for (idx, reason) in bad {
            self.remove_peer(idx, &reason);
        }
    }
}
