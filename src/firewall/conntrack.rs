//! Connection tracking: flows the rules allowed, so their replies pass and later packets skip
//! the rules. Keyed by [`Flow`], which is oriented local/remote, so a reply has the same key as
//! the packet that opened the flow. Like Nebula there is no TCP state machine: an entry lives
//! for its protocol's timeout after its last packet.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::packet::{Flow, PROTO_TCP, PROTO_UDP};

/// Idle timeouts per protocol (Nebula's `conntrack.tcp_timeout` etc.).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp: Duration,
    pub udp: Duration,
    pub default: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp: Duration::from_secs(12 * 60),
            udp: Duration::from_secs(3 * 60),
            default: Duration::from_secs(10 * 60),
        }
    }
}

impl Timeouts {
    fn for_proto(&self, proto: u8) -> Duration {
        match proto {
            PROTO_TCP => self.tcp,
            PROTO_UDP => self.udp,
            _ => self.default,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    expires: Instant,
    /// The rules version that allowed it; a reload makes it stale until re-checked.
    rules_version: u16,
    /// Which direction's rules allowed it, and so which rules re-check it.
    direction_inbound: bool,
}

/// What conntrack knows about a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Allowed by the current rules; its timeout has been refreshed.
    Hit,
    /// Allowed by an older rule set; re-check against the rules of the direction that opened it.
    Stale {
        opened_inbound: bool,
    },
    Miss,
}

/// The table of live flows.
#[derive(Debug, Clone, Default)]
pub struct Conntrack {
    flows: HashMap<Flow, Entry>,
    timeouts: Timeouts,
}

impl Conntrack {
    pub fn new(timeouts: Timeouts) -> Self {
        Conntrack { flows: HashMap::new(), timeouts }
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Applies new timeouts to entries refreshed from now on (a reload does this).
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
    }

    /// Looks `flow` up; a live entry's timeout is refreshed, an expired one removed.
    pub fn lookup(&mut self, flow: &Flow, now: Instant, rules_version: u16) -> Lookup {
        let Some(e) = self.flows.get_mut(flow) else {
            return Lookup::Miss;
        };
        if now >= e.expires {
            self.flows.remove(flow);
            return Lookup::Miss;
        }
        e.expires = now + self.timeouts.for_proto(flow.proto);
        if e.rules_version == rules_version {
            Lookup::Hit
        } else {
            Lookup::Stale { opened_inbound: e.direction_inbound }
        }
    }

    /// Records a flow the rules allowed.
    pub fn insert(&mut self, flow: Flow, inbound: bool, now: Instant, rules_version: u16) {
        let expires = now + self.timeouts.for_proto(flow.proto);
        self.flows.insert(flow, Entry { expires, rules_version, direction_inbound: inbound });
    }

    /// Marks a stale flow as re-checked under `rules_version`.
    pub fn confirm(&mut self, flow: &Flow, rules_version: u16) {
        if let Some(e) = self.flows.get_mut(flow) {
            e.rules_version = rules_version;
        }
    }

    pub fn remove(&mut self, flow: &Flow) {
        self.flows.remove(flow);
    }

    /// Drops every expired entry and returns how many; the daemon calls this from its timer so
    /// idle flows do not accumulate.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.flows.len();
        self.flows.retain(|_, e| now < e.expires);
        before - self.flows.len()
    }

    pub fn clear(&mut self) {
        self.flows.clear();
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}
