//! The packet filter the core consults for every overlay packet: the stateful firewall in the
//! daemon, or a permissive one in simulations that test the tunnel machinery alone.

use std::time::Instant;

use crate::cert::pool::VerifiedCert;
use crate::packet::Flow;

pub use super::ping::ProbeVerdict;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From a peer to this host.
    Inbound,
    /// From this host to a peer.
    Outbound,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Drop,
    /// Drop and answer with this packet (a TCP RST or ICMP unreachable addressed to the sender).
    Reject(Vec<u8>),
}

pub trait Policy {
    /// What the policy needs to know about a peer, built once per peer from its certificate.
    type Peer;
    fn peer(&self, cert: &VerifiedCert) -> Self::Peer;
    /// Decides on one IP packet exchanged with `peer`.
    fn check(&mut self, now: Instant, dir: Direction, peer: &Self::Peer, packet: &[u8]) -> Verdict;
    /// Whether a new `flow` with `peer` would pass in `dir`, for `cos-mesh ping`'s probes. It
    /// only looks: no connection state is created or changed. A policy that filters nothing
    /// keeps this default.
    fn would_pass(&self, _dir: Direction, _peer: &Self::Peer, _flow: &Flow) -> ProbeVerdict {
        ProbeVerdict::Allow
    }
}

/// Allows everything: for tests of the tunnel machinery alone.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Policy for AllowAll {
    type Peer = ();
    fn peer(&self, _: &VerifiedCert) {}
    fn check(&mut self, _: Instant, _: Direction, _: &(), _: &[u8]) -> Verdict {
        Verdict::Allow
    }
}
