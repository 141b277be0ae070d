//! Whether our datagrams on a peer's direct path still arrive.
//!
//! Hearing a peer on its direct address proves only that its datagrams reach us. When the path
//! fails one way (ours dropped on the far side, the peer's still arriving), WireGuard alone never
//! notices: the endpoint stays where the peer is heard. So while the host sends to a peer over a
//! direct path, the node sends a small probe on that path every [`PROBE_EVERY`]; the peer
//! answers through its tunnel by whatever path it uses. A probe unanswered for
//! [`PROBE_TIMEOUT`] marks the address failed: traffic moves to a relay, and being heard from
//! that address does not bring traffic back to it until a later probe on it is answered
//! (tried every [`RETRY_FAILED_EVERY`]). Idle peers are not probed. (A peer too old to answer
//! probes is reached through a relay: slower, never cut off.)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::peer::Path;

/// How often a probe goes out on a direct path that carries host traffic.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How long a probe may go unanswered before its path counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a failed direct address is probed again (it may heal).
pub const RETRY_FAILED_EVERY: Duration = Duration::from_secs(5);

/// What the node should do after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathAction {
    #[default]
    Nothing,
    /// Send a probe with this nonce on this direct path.
    Probe { nonce: u64, path: SocketAddr },
    /// The direct path at this address stopped carrying our datagrams.
    Lost(SocketAddr),
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    nonce: u64,
    path: SocketAddr,
    sent: Instant,
}

/// The probe state of one peer's direct path.
#[derive(Debug, Default)]
pub struct PathCheck {
    outstanding: Option<Probe>,
    last_sent: Option<Instant>,
    next_nonce: u64,
    /// Host packets sent to the peer when the last probe went out.
    tx_seen: u64,
    failed: Option<SocketAddr>,
    /// The round trip of the last answered probe, and when its answer came.
    last_rtt: Option<(Duration, Instant)>,
}

impl PathCheck {
    /// Called on the node's timer tick with the peer's current endpoint and its count of host
    /// packets sent.
    pub fn on_tick(&mut self, now: Instant, endpoint: Option<Path>, tx_packets: u64) -> PathAction {
        // Traffic went direct to another address since one failed (the peer roamed and was
        // heard there): the old failure says nothing of the new path, which must be probed.
        if matches!(endpoint, Some(Path::Direct(a)) if self.failed.is_some_and(|f| f != a)) {
            self.failed = None;
        }
        if let Some(p) = self.outstanding {
            if now.duration_since(p.sent) < PROBE_TIMEOUT {
                return PathAction::Nothing;
            }
            self.outstanding = None;
            if self.failed.is_none() && endpoint == Some(Path::Direct(p.path)) {
                self.failed = Some(p.path);
                return PathAction::Lost(p.path);
            }
        }
        let since_last = self.last_sent.map_or(Duration::MAX, |t| now.duration_since(t));
        let target = match (self.failed, endpoint) {
            (Some(a), _) if since_last >= RETRY_FAILED_EVERY => a,
            (None, Some(Path::Direct(a))) if tx_packets > self.tx_seen && since_last >= PROBE_EVERY => a,
            _ => return PathAction::Nothing,
        };
        self.tx_seen = tx_packets;
        self.next_nonce += 1;
        self.last_sent = Some(now);
        self.outstanding = Some(Probe { nonce: self.next_nonce, path: target, sent: now });
        PathAction::Probe { nonce: self.next_nonce, path: target }
    }

    /// The peer answered probe `nonce`: returns the address it confirmed, if it was ours.
    /// The time from probe to answer is kept as the peer's round trip.
    pub fn on_ack(&mut self, now: Instant, nonce: u64) -> Option<SocketAddr> {
        let p = self.outstanding.filter(|p| p.nonce == nonce)?;
        self.outstanding = None;
        self.last_rtt = Some((now.saturating_duration_since(p.sent), now));
        if self.failed == Some(p.path) {
            self.failed = None;
        }
        Some(p.path)
    }

    /// The round trip of the last answered probe and when it was measured.
    pub fn last_rtt(&self) -> Option<(Duration, Instant)> {
        self.last_rtt
    }

    /// Whether being heard from `addr` may make it the endpoint again (not while it is failed).
    pub fn usable(&self, addr: SocketAddr) -> bool {
        self.failed != Some(addr)
    }

    /// Forgets a failure (the peer's address changed, a new session on another path).
    pub fn reset_failure(&mut self) {
        self.failed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::{PROBE_EVERY, PROBE_TIMEOUT, Path, PathAction, PathCheck, RETRY_FAILED_EVERY};
    use std::net::SocketAddr;
    use std::time::Instant;

    fn addr() -> SocketAddr {
        "198.18.0.2:4242".parse().unwrap()
    }

    #[test]
    fn idle_peers_are_not_probed() {
        let mut c = PathCheck::default();
        let t = Instant::now();
        assert_eq!(c.on_tick(t, Some(Path::Direct(addr())), 0), PathAction::Nothing);
    }

    #[test]
    fn an_unanswered_probe_fails_the_path_until_a_probe_on_it_is_answered() {
        let mut c = PathCheck::default();
        let t = Instant::now();
        let ep = Some(Path::Direct(addr()));
        let PathAction::Probe { nonce, path } = c.on_tick(t, ep, 1) else { panic!("probe") };
        assert_eq!(c.on_ack(t + PROBE_EVERY / 4, nonce), Some(path));
        assert_eq!(c.last_rtt(), Some((PROBE_EVERY / 4, t + PROBE_EVERY / 4)), "the probe's round trip is kept");
        assert_eq!(c.on_tick(t + PROBE_EVERY / 2, ep, 2), PathAction::Nothing, "not before PROBE_EVERY");
        let t2 = t + PROBE_EVERY;
        assert!(matches!(c.on_tick(t2, ep, 2), PathAction::Probe { .. }));
        assert_eq!(c.on_tick(t2 + PROBE_TIMEOUT, ep, 3), PathAction::Lost(addr()));
        assert!(!c.usable(addr()));
        // Retried later on the failed address; an answer makes it usable again.
        let t3 = t2 + PROBE_TIMEOUT + RETRY_FAILED_EVERY;
        let relay = Some(Path::Relay { relay: "100.64.0.3".parse().unwrap(), peer: "100.64.0.2".parse().unwrap() });
        let PathAction::Probe { nonce, path } = c.on_tick(t3, relay, 9) else { panic!("retry") };
        assert_eq!(path, addr());
        assert_eq!(c.on_ack(t3, nonce + 1), None, "a stale nonce confirms nothing");
        assert_eq!(c.on_ack(t3, nonce), Some(addr()));
        assert!(c.usable(addr()));
    }

    /// Seed 5387 of the reference model: a failed address must not keep the peer's next direct
    /// address (it roamed and was heard there) from being probed and failed in its turn.
    #[test]
    fn a_new_direct_path_after_a_failed_one_is_probed_too() {
        let mut c = PathCheck::default();
        let t = Instant::now();
        let PathAction::Probe { .. } = c.on_tick(t, Some(Path::Direct(addr())), 1) else { panic!("probe") };
        assert_eq!(c.on_tick(t + PROBE_TIMEOUT, Some(Path::Direct(addr())), 2), PathAction::Lost(addr()));
        let moved: SocketAddr = "198.19.0.2:30007".parse().unwrap();
        let t2 = t + PROBE_TIMEOUT + PROBE_EVERY;
        let PathAction::Probe { path, .. } = c.on_tick(t2, Some(Path::Direct(moved)), 3) else { panic!("probe") };
        assert_eq!(path, moved);
        assert_eq!(c.on_tick(t2 + PROBE_TIMEOUT, Some(Path::Direct(moved)), 4), PathAction::Lost(moved));
    }
}
