//! Per-second allowances for work a stranger can make the node do: certificate verifications
//! (an Ed25519 check each), refusals worth logging, Hello replies, replies to unknown session indexes,
//! cookie replies. One type
//! for all of them, refilled by the node's once-a-second timer. (Handshake initiations have
//! their own limiter inside boringtun, which also formats the cookies.)

use std::collections::HashMap;
use std::net::IpAddr;

/// Certificate verifications per second from one source address.
pub const VERIFY_PER_SOURCE_PER_SEC: u32 = 20;
/// Certificate verifications per second in all (a spoofer picks any source address).
pub const VERIFY_PER_SEC: u32 = 200;
/// Refused certificates reported as events (logged) per second; all are counted.
pub const REFUSALS_LOGGED_PER_SEC: u32 = 5;
/// `HelloReply`s per second to one source address, and in all. A Hello for a certificate already
/// verified costs no signature check, so without these a replayed genuine Hello would make the
/// node answer (and reflect toward a spoofed source) as fast as it arrives.
pub const HELLO_REPLIES_PER_SOURCE_PER_SEC: u32 = 20;
pub const HELLO_REPLIES_PER_SEC: u32 = 200;
/// `UnknownIndex` replies per second to one source address (nodes behind one NAT share it), and
/// in all (each tells a peer that
/// we restarted: handshake again). A reply (8 bytes) is smaller than the data packet that calls
/// for it and costs no cryptography; the total lets a restarted lighthouse or relay answer every
/// node that reports within a second or two (10 in all made a lighthouse restart cost the demo's
/// 8 nodes two report intervals, and 1,000 nodes a hundred seconds).
pub const UNKNOWN_INDEX_REPLIES_PER_SOURCE_PER_SEC: u32 = 20;
pub const UNKNOWN_INDEX_REPLIES_PER_SEC: u32 = 200;

/// Cookie replies per second to one source address (boringtun formats one for every initiation
/// with a valid mac1 over `HANDSHAKES_PER_SEC`; anyone can compute mac1 from the public key in a
/// certificate). A genuine initiator needs one cookie per two minutes, and cos-mesh resends at
/// once with it. No cap in all: a sender drawing spoofed source addresses could otherwise spend
/// every genuine initiator's cookie (a reply, 64 bytes, is smaller than the initiation).
pub const COOKIE_REPLIES_PER_SOURCE_PER_SEC: u32 = 20;

/// So many actions per second.
#[derive(Debug, Clone)]
pub struct Budget {
    per_sec: u32,
    left: u32,
}

impl Budget {
    pub const fn per_sec(per_sec: u32) -> Self {
        Budget { per_sec, left: per_sec }
    }

    /// Spends one unit; false when the second's allowance is used up.
    pub fn take(&mut self) -> bool {
        let ok = self.left > 0;
        self.left = self.left.saturating_sub(1);
        ok
    }

    pub fn refill(&mut self) {
        self.left = self.per_sec;
    }
}

/// A budget per source address within a budget for all sources.
#[derive(Debug, Clone)]
pub struct SourceBudget {
    per_source: u32,
    used: HashMap<IpAddr, u32>,
    total: Budget,
}

impl SourceBudget {
    pub fn new(per_source: u32, total: u32) -> Self {
        SourceBudget { per_source, used: HashMap::new(), total: Budget::per_sec(total) }
    }

    /// Spends one unit of `source`'s allowance and of the total.
    pub fn take(&mut self, source: IpAddr) -> bool {
        let used = self.used.entry(source).or_insert(0);
        if *used >= self.per_source || !self.total.take() {
            return false;
        }
        *used += 1;
        true
    }

    pub fn refill(&mut self) {
        self.used.clear();
        self.total.refill();
    }
}

#[cfg(test)]
mod tests {
    use super::{Budget, SourceBudget};
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn a_budget_runs_out_and_refills() {
        let mut b = Budget::per_sec(2);
        assert!(b.take() && b.take());
        assert!(!b.take());
        b.refill();
        assert!(b.take());
    }

    #[test]
    fn one_source_cannot_spend_the_others_share() {
        let (a, b) = (IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)));
        let mut s = SourceBudget::new(2, 3);
        assert!(s.take(a) && s.take(a));
        assert!(!s.take(a), "per source");
        assert!(s.take(b));
        assert!(!s.take(b), "in all");
        s.refill();
        assert!(s.take(a));
    }
}
