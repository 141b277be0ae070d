//! Where a peer's WireGuard session stands, as one state with the data each state needs.
//!
//! boringtun owns the keys and its own timers; this is the node's view, which decides what
//! `status` says, whether traffic may be relayed for the peer and when our faster initiation
//! retries run:
//!
//! ```text
//! Handshaking --confirmed--> Up --initiating--> Rekeying --confirmed--> Up
//!      ^                      |                    |
//!      +------- lost ---------+------- lost -------+        any --expired--> Expired
//! ```

use std::time::{Duration, Instant};

use super::event::SessionEnd;

/// boringtun gives up a handshake after 90 s (REKEY_ATTEMPT_TIME); an expiry after this long
/// of unanswered initiations is a peer that stopped answering, not an idle close.
pub const NO_ANSWER_AFTER: Duration = Duration::from_secs(60);

/// Our initiation in flight, resent on our own (faster than boringtun's 5 s) schedule while NAT
/// mappings open.
pub struct InitInFlight {
    pub bytes: Vec<u8>,
    pub sent: Instant,
    pub retries: u32,
    pub next: Instant,
    /// A probe for a direct path while the session runs through a relay: never via relays.
    pub direct_only: bool,
}

/// A handshake of ours that has not been answered yet.
pub struct Attempt {
    /// When its first initiation went out.
    pub started: Instant,
    /// `None` once our fast retries stopped (boringtun keeps retrying).
    pub init: Option<InitInFlight>,
}

pub enum Session {
    /// No confirmed session yet.
    Handshaking { attempt: Option<Attempt> },
    /// A session the peer has confirmed.
    Up { since: Instant },
    /// A confirmed session while a new handshake of ours runs (rekey, direct probe).
    Rekeying { since: Instant, attempt: Attempt },
    /// The session ended; the next packet starts a handshake.
    Expired,
}

impl Session {
    pub fn is_up(&self) -> bool {
        matches!(self, Session::Up { .. } | Session::Rekeying { .. })
    }

    /// When the session came up (a rekey keeps the time of the first confirmation).
    pub fn up_since(&self) -> Option<Instant> {
        match self {
            Session::Up { since } | Session::Rekeying { since, .. } => Some(*since),
            _ => None,
        }
    }

    pub fn init(&self) -> Option<&InitInFlight> {
        match self {
            Session::Handshaking { attempt: Some(a) } | Session::Rekeying { attempt: a, .. } => a.init.as_ref(),
            _ => None,
        }
    }

    pub fn init_mut(&mut self) -> Option<&mut InitInFlight> {
        match self {
            Session::Handshaking { attempt: Some(a) } | Session::Rekeying { attempt: a, .. } => a.init.as_mut(),
            _ => None,
        }
    }

    /// We sent an initiation: it is retried fast until answered.
    pub fn initiating(&mut self, now: Instant, init: InitInFlight) {
        match self {
            Session::Handshaking { attempt: Some(a) } | Session::Rekeying { attempt: a, .. } => a.init = Some(init),
            Session::Up { since } => {
                *self = Session::Rekeying { since: *since, attempt: Attempt { started: now, init: Some(init) } }
            }
            Session::Handshaking { attempt: None } | Session::Expired => {
                *self = Session::Handshaking { attempt: Some(Attempt { started: now, init: Some(init) }) }
            }
        }
    }

    /// A rekey of ours is in flight (not a probe for a direct path) and still being retried:
    /// when the peer's initiation crosses it, one of the two must give way.
    pub fn rekey_in_flight(&self) -> bool {
        matches!(self, Session::Rekeying { attempt: Attempt { init: Some(i), .. }, .. } if !i.direct_only)
    }

    /// Our fast retries end (boringtun's own continue).
    pub fn stop_fast_retries(&mut self) {
        if let Session::Handshaking { attempt: Some(a) } | Session::Rekeying { attempt: a, .. } = self {
            a.init = None;
        }
    }

    /// The peer proved the session (a response, or data on it). True when it was not up before.
    pub fn confirmed(&mut self, now: Instant) -> bool {
        match self {
            Session::Up { .. } => false,
            Session::Rekeying { since, .. } => {
                *self = Session::Up { since: *since };
                false
            }
            _ => {
                *self = Session::Up { since: now };
                true
            }
        }
    }

    /// The peer lost our session (it restarted): not up until a new handshake completes.
    pub fn lost(&mut self) {
        match std::mem::replace(self, Session::Handshaking { attempt: None }) {
            Session::Rekeying { attempt, .. } => *self = Session::Handshaking { attempt: Some(attempt) },
            Session::Up { .. } => {}
            other => *self = other,
        }
    }

    /// boringtun expired the session: why, if that is worth telling.
    pub fn expired(&mut self, now: Instant) -> Option<SessionEnd> {
        let gave_up = match self {
            Session::Handshaking { attempt: Some(a) } | Session::Rekeying { attempt: a, .. } => {
                now.duration_since(a.started) >= NO_ANSWER_AFTER
            }
            _ => false,
        };
        let was_up = self.is_up();
        *self = Session::Expired;
        match (gave_up, was_up) {
            (true, _) => Some(SessionEnd::NoAnswer),
            (false, true) => Some(SessionEnd::Idle),
            (false, false) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{InitInFlight, NO_ANSWER_AFTER, Session, SessionEnd};
    use std::time::{Duration, Instant};

    fn init(at: Instant) -> InitInFlight {
        InitInFlight { bytes: vec![1], sent: at, retries: 0, next: at, direct_only: false }
    }

    #[test]
    fn handshake_up_rekey_and_back() {
        let t = Instant::now();
        let mut s = Session::Handshaking { attempt: None };
        s.initiating(t, init(t));
        assert!(!s.is_up() && s.init().is_some());
        assert!(s.confirmed(t), "first confirmation brings it up");
        s.initiating(t + Duration::from_secs(120), init(t));
        assert!(matches!(s, Session::Rekeying { .. }) && s.is_up(), "a rekey keeps the session up");
        assert!(!s.confirmed(t + Duration::from_secs(121)), "already up");
        assert!(matches!(s, Session::Up { since } if since == t));
        assert_eq!(s.up_since(), Some(t), "the tunnel's age counts from the first confirmation");
    }

    #[test]
    fn a_lost_session_is_down_until_a_new_handshake() {
        let t = Instant::now();
        let mut s = Session::Up { since: t };
        s.initiating(t, init(t));
        s.lost();
        assert!(!s.is_up() && s.init().is_some(), "the attempt in flight is kept");
        assert!(s.confirmed(t));
    }

    #[test]
    fn expiry_says_why() {
        let t = Instant::now();
        let mut idle = Session::Up { since: t };
        assert_eq!(idle.expired(t + Duration::from_secs(540)), Some(SessionEnd::Idle));
        let mut silent = Session::Up { since: t };
        silent.initiating(t, init(t));
        silent.stop_fast_retries();
        assert_eq!(silent.expired(t + NO_ANSWER_AFTER), Some(SessionEnd::NoAnswer));
        let mut never = Session::Handshaking { attempt: None };
        assert_eq!(never.expired(t), None, "nothing was up, nothing to tell");
        assert!(!never.is_up());
    }
}
