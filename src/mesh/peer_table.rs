//! Who the node knows and who it is meeting: the peers by session index with the lookups that
//! lead to them (overlay IP, every certificate address, WireGuard key, the peer's own session
//! index), kept consistent by insert and remove; and the peers being met, with the packets
//! waiting for them under a bound.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

use ipnet::IpNet;

use super::peer::{Peer, Pending};
use crate::cert::Certificate;

/// Packets held per peer while its certificate exchange runs, peers waiting at once, and packets
/// held in all (a scan of the overlay network must not grow memory without bound).
const PENDING_QUEUE: usize = 64;
const PENDING_PEERS: usize = 1024;
const PENDING_PACKETS: usize = 8192;

/// Our session indexes use the lower 24 bits of WireGuard's 32-bit index (boringtun keeps the
/// upper byte for the handshake counter).
const INDEX_MASK: u32 = 0x00ff_ffff;

/// The peers, by our session index, and every way of finding one.
pub(super) struct PeerTable<I> {
    peers: HashMap<u32, Peer<I>>,
    /// Peers by identity (their certificate's first network, IPv4 when it has one).
    by_vpn_ip: HashMap<IpAddr, u32>,
    /// Every overlay address of every peer's certificate (IPv4 and IPv6) → the peer.
    by_addr: HashMap<IpAddr, u32>,
    by_key: HashMap<[u8; 32], u32>,
    /// Peers by the upper 24 bits of their own session index (boringtun keeps them for every
    /// handshake of a session object): a peer's next initiation goes to its `Tunn` at once,
    /// which proves the key, instead of costing one more Diffie-Hellman to learn who sent it.
    by_remote_index: HashMap<u32, u32>,
    next_index: u32,
}

impl<I> PeerTable<I> {
    /// `first_index`: where index allocation starts (drawn from the node's seeded RNG).
    pub fn new(first_index: u32) -> Self {
        PeerTable {
            peers: HashMap::new(),
            by_vpn_ip: HashMap::new(),
            by_addr: HashMap::new(),
            by_key: HashMap::new(),
            by_remote_index: HashMap::new(),
            next_index: (first_index & INDEX_MASK).max(1),
        }
    }

    pub fn get(&self, idx: u32) -> Option<&Peer<I>> {
        self.peers.get(&idx)
    }

    pub fn get_mut(&mut self, idx: u32) -> Option<&mut Peer<I>> {
        self.peers.get_mut(&idx)
    }

    pub fn contains(&self, idx: u32) -> bool {
        self.peers.contains_key(&idx)
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    pub fn values(&self) -> impl Iterator<Item = &Peer<I>> {
        self.peers.values()
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Peer<I>> {
        self.peers.values_mut()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &Peer<I>)> {
        self.peers.iter().map(|(i, p)| (*i, p))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u32, &mut Peer<I>)> {
        self.peers.iter_mut().map(|(i, p)| (*i, p))
    }

    /// Every index in ascending order (the map's order is seeded per process; a simulation
    /// must see the same order in every run).
    pub fn sorted_indexes(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.peers.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// The index of the peer whose identity is `ip`.
    pub fn index_of_vpn_ip(&self, ip: IpAddr) -> Option<u32> {
        self.by_vpn_ip.get(&ip).copied()
    }

    /// The index of the peer whose certificate holds overlay address `addr` (v4 or v6).
    pub fn index_of_addr(&self, addr: IpAddr) -> Option<u32> {
        self.by_addr.get(&addr).copied()
    }

    /// The index of the peer with WireGuard static key `key`.
    pub fn index_of_key(&self, key: &[u8; 32]) -> Option<u32> {
        self.by_key.get(key).copied()
    }

    /// The index of the peer whose own session index continues `remote` (upper 24 bits).
    pub fn index_of_remote(&self, remote: u32) -> Option<u32> {
        self.by_remote_index.get(&remote).copied()
    }

    pub fn by_vpn_ip(&self, ip: IpAddr) -> Option<&Peer<I>> {
        self.index_of_vpn_ip(ip).and_then(|i| self.peers.get(&i))
    }

    pub fn by_addr(&self, addr: IpAddr) -> Option<&Peer<I>> {
        self.index_of_addr(addr).and_then(|i| self.peers.get(&i))
    }

    pub fn by_addr_mut(&mut self, addr: IpAddr) -> Option<&mut Peer<I>> {
        self.index_of_addr(addr).and_then(|i| self.peers.get_mut(&i))
    }

    /// Whether an address in `list` (lighthouses, relays: any overlay address of a node) names
    /// the peer whose identity is `vpn_ip`.
    pub fn names(&self, list: &[IpAddr], vpn_ip: IpAddr) -> bool {
        let idx = self.index_of_vpn_ip(vpn_ip);
        list.iter().any(|a| *a == vpn_ip || (idx.is_some() && self.index_of_addr(*a) == idx))
    }

    /// The identity of the peer that holds overlay address `ip`; `ip` itself when no peer does.
    pub fn identity_of(&self, ip: IpAddr) -> IpAddr {
        self.by_addr(ip).map_or(ip, |p| p.vpn_ip)
    }

    /// A fresh session index no peer uses.
    pub fn allocate_index(&mut self) -> u32 {
        loop {
            self.next_index = (self.next_index + 1) & INDEX_MASK;
            if self.next_index != 0 && !self.peers.contains_key(&self.next_index) {
                return self.next_index;
            }
        }
    }

    /// Adds a peer under `idx`, indexed by its overlay IP, addresses and key. The caller has
    /// removed any peer holding the same overlay IP or key.
    pub fn insert(&mut self, idx: u32, peer: Peer<I>) {
        self.by_vpn_ip.insert(peer.vpn_ip, idx);
        index_addrs(&mut self.by_addr, idx, peer.cert.cert());
        self.by_key.insert(peer.public_key, idx);
        self.peers.insert(idx, peer);
    }

    /// Removes peer `idx` and every index entry that still points at it.
    pub fn remove(&mut self, idx: u32) -> Option<Peer<I>> {
        let p = self.peers.remove(&idx)?;
        if self.by_vpn_ip.get(&p.vpn_ip) == Some(&idx) {
            self.by_vpn_ip.remove(&p.vpn_ip);
        }
        unindex_addrs(&mut self.by_addr, idx, p.cert.cert());
        if self.by_key.get(&p.public_key) == Some(&idx) {
            self.by_key.remove(&p.public_key);
        }
        if let Some(r) = p.remote_index
            && self.by_remote_index.get(&r) == Some(&idx)
        {
            self.by_remote_index.remove(&r);
        }
        Some(p)
    }

    /// Peer `idx` now holds `new` (a renewed certificate): its addresses are indexed afresh.
    pub fn reindex_addrs(&mut self, idx: u32, old: &Certificate, new: &Certificate) {
        unindex_addrs(&mut self.by_addr, idx, old);
        index_addrs(&mut self.by_addr, idx, new);
    }

    /// Remembers the peer's own session index `remote` from a handshake message that
    /// authenticated as peer `idx` (see `by_remote_index`).
    pub fn note_remote_index(&mut self, idx: u32, remote: u32) {
        let Some(peer) = self.peers.get_mut(&idx) else { return };
        if let Some(old) = peer.remote_index.replace(remote)
            && old != remote
            && self.by_remote_index.get(&old) == Some(&idx)
        {
            self.by_remote_index.remove(&old);
        }
        self.by_remote_index.insert(remote, idx);
    }
}

/// The overlay addresses of a certificate (its networks without their prefixes), v4 and v6.
pub(super) fn cert_addrs(cert: &Certificate) -> impl Iterator<Item = IpAddr> + '_ {
    cert.networks().iter().map(IpNet::addr)
}

fn index_addrs(by_addr: &mut HashMap<IpAddr, u32>, idx: u32, cert: &Certificate) {
    for addr in cert_addrs(cert) {
        by_addr.insert(addr, idx);
    }
}

/// Forgets the addresses of `cert` that still point at peer `idx`.
fn unindex_addrs(by_addr: &mut HashMap<IpAddr, u32>, idx: u32, cert: &Certificate) {
    for addr in cert_addrs(cert) {
        if by_addr.get(&addr) == Some(&idx) {
            by_addr.remove(&addr);
        }
    }
}

/// A packet held by [`PendingPeers::queue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Queued {
    /// No attempt to meet the peer has been made yet: start one now.
    pub first: bool,
    /// A packet was dropped to make room (the peer's oldest, if it had any).
    pub dropped: bool,
}

/// A packet refused by [`PendingPeers::queue`]: too many peers are being met already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TooManyPending;

/// The peers being met (no certificate yet), by the overlay address a packet was for (any of
/// the peer's addresses), and their waiting packets.
#[derive(Default)]
pub(super) struct PendingPeers {
    peers: HashMap<IpAddr, Pending>,
    /// Packets held in all.
    packets: usize,
}

impl PendingPeers {
    /// Holds `packet` (`control`: a control message, which bypasses the firewall) for the peer
    /// at `addr`; `hello_id` is used if this starts a new meeting.
    pub fn queue(
        &mut self,
        now: Instant,
        addr: IpAddr,
        packet: Vec<u8>,
        control: bool,
        hello_id: u64,
    ) -> Result<Queued, TooManyPending> {
        if !self.peers.contains_key(&addr) && self.peers.len() >= PENDING_PEERS {
            return Err(TooManyPending);
        }
        let p = self.peers.entry(addr).or_insert_with(|| Pending::new(now, hello_id));
        let mut dropped = false;
        if p.queue.len() >= PENDING_QUEUE || self.packets >= PENDING_PACKETS {
            if p.queue.pop_front().is_some() {
                self.packets -= 1;
            }
            dropped = true;
        }
        p.queue.push_back((packet, control));
        self.packets += 1;
        Ok(Queued { first: p.attempts == 0, dropped })
    }

    pub fn get_mut(&mut self, addr: IpAddr) -> Option<&mut Pending> {
        self.peers.get_mut(&addr)
    }

    /// Gives up on the peer at `addr`; returns how many packets were dropped.
    pub fn abandon(&mut self, addr: IpAddr) -> usize {
        let n = self.peers.remove(&addr).map_or(0, |p| p.queue.len());
        self.packets -= n;
        n
    }

    /// The packets that waited under any of `addrs`, in order, each with its `control` flag.
    pub fn take(&mut self, addrs: impl IntoIterator<Item = IpAddr>) -> VecDeque<(Vec<u8>, bool)> {
        let mut out = VecDeque::new();
        for a in addrs {
            if let Some(p) = self.peers.remove(&a) {
                self.packets -= p.queue.len();
                out.extend(p.queue);
            }
        }
        out
    }

    /// The address a Hello with id `hello_id` was sent for.
    pub fn by_hello_id(&self, hello_id: u64) -> Option<IpAddr> {
        self.peers.iter().find(|(_, p)| p.hello_id == hello_id).map(|(ip, _)| *ip)
    }

    /// The addresses whose next attempt is due.
    pub fn due(&self, now: Instant) -> Vec<IpAddr> {
        self.peers.iter().filter(|(_, p)| p.next_try <= now).map(|(ip, _)| *ip).collect()
    }

    /// When the next attempt is due.
    pub fn next_try(&self) -> Option<Instant> {
        self.peers.values().map(|p| p.next_try).min()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Instant;

    use super::{PENDING_PEERS, PENDING_QUEUE, PeerTable, PendingPeers, Queued, TooManyPending};
    use crate::mesh::test_support::peer;

    #[test]
    fn lookups_follow_insert_and_remove() {
        let mut t: PeerTable<()> = PeerTable::new(0);
        let a = peer("100.64.0.2/10");
        let key = a.public_key;
        let idx = t.allocate_index();
        assert_ne!(idx, 0);
        t.insert(idx, a);
        let ip = IpAddr::V4(Ipv4Addr::new(100, 64, 0, 2));
        assert_eq!(t.index_of_vpn_ip(ip), Some(idx));
        assert_eq!(t.index_of_addr(ip), Some(idx));
        assert!(t.names(&[ip], ip) && !t.names(&[IpAddr::V4(Ipv4Addr::new(100, 64, 0, 3))], ip));
        assert_eq!(t.index_of_key(&key), Some(idx));
        assert_ne!(t.allocate_index(), idx, "an index in use is never handed out again");
        t.note_remote_index(idx, 0x42);
        t.note_remote_index(idx, 0x43);
        assert_eq!(t.index_of_remote(0x42), None, "the peer's old index is forgotten");
        assert_eq!(t.index_of_remote(0x43), Some(idx));
        assert!(t.remove(idx).is_some());
        assert!(t.is_empty());
        assert_eq!(t.index_of_vpn_ip(ip), None);
        assert_eq!(t.index_of_addr(ip), None);
        assert_eq!(t.index_of_key(&key), None);
        assert_eq!(t.index_of_remote(0x43), None);
        assert!(t.remove(idx).is_none());
    }

    #[test]
    fn index_allocation_wraps_within_24_bits_and_skips_zero() {
        let mut t: PeerTable<()> = PeerTable::new(0x00ff_fffe);
        assert_eq!(t.allocate_index(), 0x00ff_ffff);
        assert_eq!(t.allocate_index(), 1);
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x6440_0000 + n))
    }

    #[test]
    fn pending_packets_are_bounded_per_peer_and_taken_in_order() {
        let now = Instant::now();
        let mut p = PendingPeers::default();
        assert_eq!(p.queue(now, ip(1), vec![0], false, 7), Ok(Queued { first: true, dropped: false }));
        for i in 1..PENDING_QUEUE {
            assert_eq!(p.queue(now, ip(1), vec![i as u8], false, 7), Ok(Queued { first: true, dropped: false }));
        }
        // One more pushes the oldest out.
        assert_eq!(p.queue(now, ip(1), vec![0xff], true, 7), Ok(Queued { first: true, dropped: true }));
        assert_eq!(p.by_hello_id(7 | 1), Some(ip(1)));
        let taken = p.take([ip(2), ip(1)]);
        assert_eq!(taken.len(), PENDING_QUEUE);
        assert_eq!(taken.front().map(|(d, _)| d.clone()), Some(vec![1]));
        assert_eq!(taken.back().cloned(), Some((vec![0xff], true)));
        assert_eq!(p.packets, 0);
        assert_eq!(p.by_hello_id(7 | 1), None);
    }

    #[test]
    fn too_many_pending_peers_are_refused_and_abandoning_frees_packets() {
        let now = Instant::now();
        let mut p = PendingPeers::default();
        for n in 0..PENDING_PEERS as u32 {
            assert_eq!(
                p.queue(now, ip(n), vec![1, 2], false, u64::from(n)),
                Ok(Queued { first: true, dropped: false })
            );
        }
        assert_eq!(p.queue(now, ip(PENDING_PEERS as u32), vec![1], false, 0), Err(TooManyPending));
        assert_eq!(p.abandon(ip(0)), 1);
        assert_eq!(p.abandon(ip(0)), 0);
        assert_eq!(p.packets, PENDING_PEERS - 1);
        assert!(p.queue(now, ip(PENDING_PEERS as u32), vec![1], false, 0).is_ok());
        assert_eq!(p.due(now).len(), PENDING_PEERS);
    }
}
