//! What the node hands its caller between calls: datagrams for the underlay, packets for the
//! TUN, events for the operator, and the counters.

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::event::Event;
use super::stats::Counters;

/// A datagram to send on the underlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dst: SocketAddr,
    pub data: Vec<u8>,
}

/// The queues drained by `Node::poll_*`, and the counters.
#[derive(Default)]
pub(super) struct Output {
    pub transmits: VecDeque<Transmit>,
    pub tun_writes: VecDeque<Vec<u8>>,
    pub events: VecDeque<Event>,
    pub counters: Counters,
}

impl Output {
    /// Queues a datagram for the underlay.
    pub fn send(&mut self, dst: SocketAddr, data: Vec<u8>) {
        self.transmits.push_back(Transmit { dst, data });
    }

    pub fn event(&mut self, e: Event) {
        self.events.push_back(e);
    }
}
