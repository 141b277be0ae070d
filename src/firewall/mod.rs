//! The stateful firewall between the tunnel and the local network stack, with Nebula's
//! semantics: default deny, allow rules per direction, conntrack so replies pass, and reloads
//! that keep flows but re-check each one on its next packet.
//!
//! Pure: no IO, no clock. The daemon builds a [`PeerIdentity`] per verified peer, compiles a
//! [`Firewall`] from the config, and asks [`Firewall::inbound`] / [`Firewall::outbound`] for a
//! verdict per packet with `now`. A [`Verdict::Reject`] is answered with
//! [`crate::packet::build_reject`]. [`Firewall::reload`] swaps in new rules.
//!
//! ```
//! use std::time::Instant;
//! use cos_mesh::cert::Fingerprint;
//! use cos_mesh::firewall::{config::parse_rules_str, Direction, Firewall, PeerIdentity};
//! use cos_mesh::packet::{Flow, PROTO_TCP};
//!
//! let yaml = "inbound:\n  - {port: 4647, proto: tcp, group: nomad-client}\n";
//! let cfg = parse_rules_str(yaml, "rules.yaml".as_ref()).unwrap();
//! let mut fw = Firewall::compile(&cfg, &[]).unwrap();
//! // Once per peer, from its verified certificate: `PeerIdentity::from(&verified_cert)`.
//! let ip = "100.64.0.2".parse().unwrap();
//! let peer = PeerIdentity::new("client-1", ["nomad-client"], vec![ip], vec![], "ca", Fingerprint([0; 32]));
//! let flow = Flow { proto: PROTO_TCP, local_ip: "100.64.0.1".parse().unwrap(), remote_ip: ip,
//!                   local_port: 4647, remote_port: 40000, fragment: false };
//! assert!(fw.flow(Direction::Inbound, &flow, &peer, Instant::now()).is_allow());
//! assert_eq!(fw.evaluate(Direction::Inbound, &flow, &peer).unwrap().origin.to_string(), "rules.yaml:2");
//! // Per packet the daemon calls `fw.inbound(&packet, &peer, now)` / `fw.outbound(..)`.
//! ```

pub mod config;
pub mod conntrack;
pub mod lint;
pub mod peer;
pub mod rules;
pub mod table;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ipnet::IpNet;

pub use config::{Action, FirewallConfig, Origin, RulesError, load_config_or_rules, load_rules_file};
pub use conntrack::{Conntrack, Lookup, Timeouts};
pub use peer::PeerIdentity;
pub use rules::{Direction, LocalScope, Rule};
pub use table::RuleTable;

use crate::packet::Flow;

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Discard silently.
    Drop(DropReason),
    /// Discard and answer with [`crate::packet::build_reject`] (the `reject` action).
    Reject(DropReason),
}

impl Verdict {
    pub fn is_allow(self) -> bool {
        self == Verdict::Allow
    }
}

/// Why a packet was not allowed; each has a counter in [`Counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not a readable IPv4/IPv6 packet.
    Malformed,
    /// The peer's side of the packet is not the peer's overlay IP nor in its subnets.
    RemoteAddress,
    /// Conntrack had no flow and no rule allows it (default deny).
    NoRule,
    /// A flow allowed before a reload that the new rules no longer allow.
    RulesChanged,
}

/// Plain counters the daemon exports as metrics; shared so a metrics thread can read them.
#[derive(Debug, Default)]
pub struct Counters {
    pub allowed_by_rule: AtomicU64,
    pub allowed_by_conntrack: AtomicU64,
    pub dropped_malformed: AtomicU64,
    pub dropped_remote_address: AtomicU64,
    pub dropped_no_rule: AtomicU64,
    pub dropped_rules_changed: AtomicU64,
    /// Of the drops above, how many the `reject` action answered.
    pub rejected: AtomicU64,
}

impl Counters {
    /// `(metric name, value)` pairs, for an exporter.
    pub fn snapshot(&self) -> [(&'static str, u64); 7] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("allowed_by_rule", get(&self.allowed_by_rule)),
            ("allowed_by_conntrack", get(&self.allowed_by_conntrack)),
            ("dropped_malformed", get(&self.dropped_malformed)),
            ("dropped_remote_address", get(&self.dropped_remote_address)),
            ("dropped_no_rule", get(&self.dropped_no_rule)),
            ("dropped_rules_changed", get(&self.dropped_rules_changed)),
            ("rejected", get(&self.rejected)),
        ]
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Compiled rules plus connection state.
#[derive(Debug)]
pub struct Firewall {
    inbound: RuleTable,
    outbound: RuleTable,
    inbound_action: Action,
    outbound_action: Action,
    scope: LocalScope,
    conntrack: Conntrack,
    /// Bumped by every reload; conntrack entries from older versions are re-checked.
    rules_version: u16,
    counters: Arc<Counters>,
}

impl Firewall {
    /// Compiles a firewall section (reading its includes). `local_networks` are this node's
    /// overlay networks (from its certificate): unless `default_local_cidr_any` is set, rules
    /// without `local_cidr` only match traffic addressed to them. Empty means no restriction.
    pub fn compile(cfg: &FirewallConfig, local_networks: &[IpNet]) -> Result<Firewall, RulesError> {
        Self::compile_sections(std::slice::from_ref(cfg), local_networks)
    }

    /// Compiles the `firewall` sections of several config files (a config directory) as one:
    /// rules append in order, each keeping its own `file:line`; for the other settings the
    /// last section that sets one wins.
    pub fn compile_sections(sections: &[FirewallConfig], local_networks: &[IpNet]) -> Result<Firewall, RulesError> {
        let compile = |list: &[config::SourcedRule]| list.iter().map(Rule::compile).collect::<Result<Vec<_>, _>>();
        let (mut inbound, mut outbound) = (Vec::new(), Vec::new());
        let mut timeouts = Timeouts::default();
        let mut cfg = FirewallConfig::default();
        for section in sections {
            let resolved = config::resolve(section)?;
            inbound.extend(compile(&resolved.inbound)?);
            outbound.extend(compile(&resolved.outbound)?);
            if let Some(ct) = &section.conntrack {
                for (value, field, slot) in [
                    (&ct.tcp_timeout, "conntrack.tcp_timeout", &mut timeouts.tcp),
                    (&ct.udp_timeout, "conntrack.udp_timeout", &mut timeouts.udp),
                    (&ct.default_timeout, "conntrack.default_timeout", &mut timeouts.default),
                ] {
                    if let Some(v) = value {
                        *slot = crate::duration::parse(&v.value)
                            .map_err(|e| RulesError::field(section.origin(v), field, e.to_string()))?;
                    }
                }
            }
            if section.inbound_action.is_some() {
                cfg.inbound_action = section.inbound_action.clone();
            }
            if section.outbound_action.is_some() {
                cfg.outbound_action = section.outbound_action.clone();
            }
            if section.default_local_cidr_any.is_some() {
                cfg.default_local_cidr_any = section.default_local_cidr_any;
            }
        }
        let (inbound, outbound) = (RuleTable::new(inbound), RuleTable::new(outbound));
        let scope = if cfg.default_local_cidr_any.unwrap_or(false) || local_networks.is_empty() {
            LocalScope::Any
        } else {
            LocalScope::Networks(local_networks.iter().map(IpNet::trunc).collect())
        };
        Ok(Firewall {
            inbound,
            outbound,
            inbound_action: cfg.inbound_action.as_ref().map(|a| a.value).unwrap_or_default(),
            outbound_action: cfg.outbound_action.as_ref().map(|a| a.value).unwrap_or_default(),
            scope,
            conntrack: Conntrack::new(timeouts),
            rules_version: 0,
            counters: Arc::default(),
        })
    }

    /// Verdict for a packet that arrived from `peer` through the tunnel.
    pub fn inbound(&mut self, packet: &[u8], peer: &PeerIdentity, now: Instant) -> Verdict {
        self.packet(Direction::Inbound, packet, peer, now)
    }

    /// Verdict for a packet this node is about to send to `peer`.
    pub fn outbound(&mut self, packet: &[u8], peer: &PeerIdentity, now: Instant) -> Verdict {
        self.packet(Direction::Outbound, packet, peer, now)
    }

    /// Verdict for a raw IP packet in `direction`.
    pub fn packet(&mut self, direction: Direction, packet: &[u8], peer: &PeerIdentity, now: Instant) -> Verdict {
        match Flow::parse(packet, direction == Direction::Inbound) {
            Ok(flow) => self.flow(direction, &flow, peer, now),
            Err(_) => {
                bump(&self.counters.dropped_malformed);
                Verdict::Drop(DropReason::Malformed)
            }
        }
    }

    /// Verdict for an already parsed flow: conntrack first, then the rules.
    pub fn flow(&mut self, direction: Direction, flow: &Flow, peer: &PeerIdentity, now: Instant) -> Verdict {
        if !peer.owns_address(flow.remote_ip) {
            bump(&self.counters.dropped_remote_address);
            return Verdict::Drop(DropReason::RemoteAddress);
        }
        match self.conntrack.lookup(flow, now, self.rules_version) {
            Lookup::Hit => {
                bump(&self.counters.allowed_by_conntrack);
                Verdict::Allow
            }
            Lookup::Stale { opened_inbound } => {
                let opened = if opened_inbound { Direction::Inbound } else { Direction::Outbound };
                if self.evaluate(opened, flow, peer).is_some() {
                    self.conntrack.confirm(flow, self.rules_version);
                    bump(&self.counters.allowed_by_conntrack);
                    Verdict::Allow
                } else {
                    self.conntrack.remove(flow);
                    bump(&self.counters.dropped_rules_changed);
                    self.deny(direction, DropReason::RulesChanged)
                }
            }
            Lookup::Miss => {
                if self.evaluate(direction, flow, peer).is_some() {
                    self.conntrack.insert(*flow, direction == Direction::Inbound, now, self.rules_version);
                    bump(&self.counters.allowed_by_rule);
                    Verdict::Allow
                } else {
                    bump(&self.counters.dropped_no_rule);
                    self.deny(direction, DropReason::NoRule)
                }
            }
        }
    }

    /// The rule that allows `flow` in `direction`, ignoring conntrack; `None` is default deny.
    pub fn evaluate(&self, direction: Direction, flow: &Flow, peer: &PeerIdentity) -> Option<&Rule> {
        self.table(direction).first_match(flow, direction, peer, &self.scope)
    }

    /// Replaces the rules, actions and timeouts with those of `new`, keeping conntrack and the
    /// counters. Existing flows are re-checked against the new rules on their next packet;
    /// tunnels are not touched.
    pub fn reload(&mut self, new: Firewall) {
        let mut conntrack = std::mem::take(&mut self.conntrack);
        conntrack.set_timeouts(new.conntrack.timeouts());
        let rules_version = self.rules_version.wrapping_add(1);
        if rules_version == 0 {
            // After 65536 reloads an old entry's version could equal the current one again.
            conntrack.clear();
        }
        let counters = Arc::clone(&self.counters);
        *self = Firewall { conntrack, rules_version, counters, ..new };
    }

    /// Removes idle flows; call from the daemon's timer (e.g. every few seconds).
    pub fn expire(&mut self, now: Instant) -> usize {
        self.conntrack.expire(now)
    }

    pub fn table(&self, direction: Direction) -> &RuleTable {
        match direction {
            Direction::Inbound => &self.inbound,
            Direction::Outbound => &self.outbound,
        }
    }

    /// The configured response to a packet no rule allows in `direction`.
    pub fn action(&self, direction: Direction) -> Action {
        match direction {
            Direction::Inbound => self.inbound_action,
            Direction::Outbound => self.outbound_action,
        }
    }

    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    pub fn conntrack(&self) -> &Conntrack {
        &self.conntrack
    }

    pub fn rules_version(&self) -> u16 {
        self.rules_version
    }

    fn deny(&self, direction: Direction, reason: DropReason) -> Verdict {
        match self.action(direction) {
            Action::Drop => Verdict::Drop(reason),
            Action::Reject => {
                bump(&self.counters.rejected);
                Verdict::Reject(reason)
            }
        }
    }
}
