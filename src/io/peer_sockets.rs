//! Receive sockets of their own for established peers, so a flood into the listening socket
//! does not delay or drop their datagrams.
//!
//! Each is a UDP socket bound to the listening socket's address in its `SO_REUSEPORT` group and
//! `connect()`ed to one peer's direct endpoint: Linux hands that endpoint's datagrams to it, not
//! to the listening socket. One `epoll` instance holds them all, so the event loop polls one
//! descriptor however many peers there are. Bounded ([`MAX_PEER_SOCKETS`], and half the
//! open-file limit); peers beyond the cap share the listening socket as before. Sends always leave
//! from the listening socket.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use super::udp::{Udp, UdpOptions};

/// The most peers with a socket of their own (each one descriptor).
pub const MAX_PEER_SOCKETS: usize = 1024;
/// Share of the open-file limit (`RLIMIT_NOFILE`, often 1,024 under systemd) peer sockets may
/// take: the TUN, control connections and the rest keep the other half.
const FD_LIMIT_SHARE: u64 = 2;
/// Ready sockets taken from epoll per call.
const READY_BATCH: usize = 64;
/// Receive buffer of a peer socket: one peer's burst, not the whole mesh's.
const PEER_READ_BUFFER: u32 = 2 << 20;

/// The peer sockets of one listening socket.
pub struct PeerSockets {
    local: SocketAddr,
    opts: UdpOptions,
    cap: usize,
    epoll: Epoll,
    /// Slot → socket; a slot's index is its epoll data.
    slots: Vec<Option<Udp>>,
    by_peer: HashMap<SocketAddr, usize>,
    events: Vec<EpollEvent>,
    /// Events the last [`PeerSockets::poll_ready`] filled.
    ready: usize,
}

impl PeerSockets {
    /// Peer sockets beside the listening socket bound at `local` (at most `cap`).
    pub fn new(local: SocketAddr, opts: UdpOptions, cap: usize) -> io::Result<PeerSockets> {
        Ok(PeerSockets {
            local,
            opts: UdpOptions { read_buffer: PEER_READ_BUFFER.min(opts.read_buffer), ..opts },
            cap: cap.min(MAX_PEER_SOCKETS).min(fd_budget()),
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            slots: Vec::new(),
            by_peer: HashMap::new(),
            events: vec![EpollEvent::empty(); READY_BATCH],
            ready: 0,
        })
    }

    /// How many peers have a socket of their own.
    pub fn len(&self) -> usize {
        self.by_peer.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_peer.is_empty()
    }

    /// Makes the set of sockets match `wanted` (the direct endpoints of established peers):
    /// closes those no longer wanted (an endpoint moved, a session ended), opens the new ones up
    /// to the cap. A socket that cannot be opened is skipped; that peer stays on the listening
    /// socket. Returns the errors met, for a debug log.
    pub fn sync(&mut self, wanted: impl IntoIterator<Item = SocketAddr>) -> Vec<io::Error> {
        let wanted: HashSet<SocketAddr> = wanted.into_iter().collect();
        let gone: Vec<SocketAddr> = self.by_peer.keys().filter(|p| !wanted.contains(p)).copied().collect();
        for peer in gone {
            self.close(peer);
        }
        let mut errors = Vec::new();
        for peer in wanted {
            if self.by_peer.len() >= self.cap {
                break;
            }
            if !self.by_peer.contains_key(&peer)
                && let Err(e) = self.open(peer)
            {
                errors.push(io::Error::new(e.kind(), format!("a receive socket for {peer}: {e}")));
            }
        }
        errors
    }

    fn open(&mut self, peer: SocketAddr) -> io::Result<()> {
        let udp = Udp::connected(self.local, peer, self.opts)?;
        let slot = self.slots.iter().position(Option::is_none).unwrap_or(self.slots.len());
        self.epoll.add(udp.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, slot as u64))?;
        if slot == self.slots.len() {
            self.slots.push(Some(udp));
        } else {
            self.slots[slot] = Some(udp);
        }
        self.by_peer.insert(peer, slot);
        Ok(())
    }

    fn close(&mut self, peer: SocketAddr) {
        let Some(slot) = self.by_peer.remove(&peer) else { return };
        if let Some(udp) = self.slots[slot].take() {
            let _ = self.epoll.delete(udp.as_fd());
        }
    }

    /// Asks epoll (without blocking) which sockets have datagrams waiting; returns how many.
    /// Read them with [`PeerSockets::ready_socket`].
    pub fn poll_ready(&mut self) -> usize {
        self.ready = self.epoll.wait(&mut self.events, 0u8).unwrap_or(0);
        self.ready
    }

    /// The `i`-th socket the last [`PeerSockets::poll_ready`] found ready.
    pub fn ready_socket(&self, i: usize) -> Option<&Udp> {
        let slot = self.events[..self.ready].get(i)?.data() as usize;
        self.slots.get(slot).and_then(Option::as_ref)
    }
}

/// The peer sockets each of `workers` workers may open: a share of the cap and of the
/// open-file budget, so that together they stay within both.
pub fn per_worker(workers: usize) -> usize {
    MAX_PEER_SOCKETS.min(fd_budget()) / workers.max(1)
}

/// Half the soft open-file limit (unlimited or unknown: [`MAX_PEER_SOCKETS`]).
fn fd_budget() -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    getrlimit(Resource::RLIMIT_NOFILE)
        .map_or(MAX_PEER_SOCKETS, |(soft, _)| usize::try_from(soft / FD_LIMIT_SHARE).unwrap_or(MAX_PEER_SOCKETS))
}

impl AsFd for PeerSockets {
    /// Readable while any peer socket has datagrams waiting.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::io::UdpRecv;

    /// Waits for one datagram on `udp`.
    fn recv_one(udp: &Udp, rx: &mut UdpRecv) -> Option<(SocketAddr, Vec<u8>)> {
        for _ in 0..50 {
            if udp.recv(rx).is_ok() {
                return rx.datagrams().next().map(|(f, d)| (f, d.to_vec()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    #[test]
    fn a_peers_datagrams_arrive_on_its_own_socket_and_others_on_the_listening_one() {
        let listen = Udp::bind("127.0.0.1:0".parse().unwrap(), None, None).unwrap();
        let local = listen.local_addr().unwrap();
        let peer = Udp::bind("127.0.0.1:0".parse().unwrap(), None, None).unwrap();
        let stranger = Udp::bind("127.0.0.1:0".parse().unwrap(), None, None).unwrap();
        let mut socks = PeerSockets::new(local, UdpOptions::default(), 4).unwrap();
        assert!(socks.sync([peer.local_addr().unwrap()]).is_empty());
        assert_eq!(socks.len(), 1);
        peer.send(local, b"from the peer", 1000).unwrap();
        stranger.send(local, b"from a stranger", 1000).unwrap();
        let mut rx = UdpRecv::new(4);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(socks.poll_ready(), 1);
        let own = socks.ready_socket(0).unwrap();
        assert_eq!(recv_one(own, &mut rx), Some((peer.local_addr().unwrap(), b"from the peer".to_vec())));
        assert_eq!(recv_one(&listen, &mut rx), Some((stranger.local_addr().unwrap(), b"from a stranger".to_vec())));
        // Its endpoint moved: the socket closes and the listening socket takes the peer again.
        assert!(socks.sync([]).is_empty());
        assert!(socks.is_empty() && socks.poll_ready() == 0);
        peer.send(local, b"again", 1000).unwrap();
        assert_eq!(recv_one(&listen, &mut rx), Some((peer.local_addr().unwrap(), b"again".to_vec())));
    }

    #[test]
    fn an_ipv4_peer_of_a_dual_stack_listening_socket_gets_its_own_socket_too() {
        let listen = Udp::bind("[::]:0".parse().unwrap(), None, None).unwrap();
        let port = listen.local_addr().unwrap().port();
        let peer = Udp::bind("127.0.0.1:0".parse().unwrap(), None, None).unwrap();
        let mut socks = PeerSockets::new(listen.local_addr().unwrap(), UdpOptions::default(), 4).unwrap();
        assert!(socks.sync([peer.local_addr().unwrap()]).is_empty());
        peer.send(SocketAddr::from(([127, 0, 0, 1], port)), b"v4", 1000).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(socks.poll_ready(), 1);
        let mut rx = UdpRecv::new(4);
        let own = socks.ready_socket(0).unwrap();
        assert_eq!(recv_one(own, &mut rx), Some((peer.local_addr().unwrap(), b"v4".to_vec())));
    }

    #[test]
    fn the_cap_bounds_the_sockets_and_a_taken_port_is_still_refused() {
        let listen = Udp::bind("127.0.0.1:0".parse().unwrap(), None, None).unwrap();
        let local = listen.local_addr().unwrap();
        let mut socks = PeerSockets::new(local, UdpOptions::default(), 2).unwrap();
        let peers: Vec<SocketAddr> = (1..=5).map(|p| SocketAddr::from(([127, 0, 0, 1], 40_000 + p))).collect();
        socks.sync(peers.clone());
        assert_eq!(socks.len(), 2);
        // A second daemon on the same port still fails, although the socket is in a reuseport group.
        let err = Udp::bind(local, None, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
