//! The underlay UDP socket. `quinn-udp` does the msghdr/cmsg work: batched receive
//! (`recvmmsg`) with UDP GRO (several datagrams of one sender arrive as one buffer with a
//! stride), and sends with UDP GSO (`UDP_SEGMENT`: a run of equal-size datagrams to one peer
//! leaves in one `sendmsg`). Both are probed when the socket opens; a device that refuses GSO
//! later (`EIO`) turns it off for good and the run goes out one datagram at a time.
//! Nothing is allocated per datagram: receive buffers belong to the caller and are reused.

use std::cell::Cell;
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use nix::sys::socket::{setsockopt, sockopt};
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};

/// Largest UDP payload.
pub const MAX_DATAGRAM: usize = 65535;
/// Socket buffer size asked for when the configuration names none: a few milliseconds of
/// multi-gigabit traffic, so a burst of GSO runs is not dropped while the loop is busy.
pub const DEFAULT_SOCKET_BUFFER: u32 = 4 << 20;
/// Buffers per receive call (one `recvmmsg`).
pub const RECV_BATCH: usize = 32;
/// Largest number of datagrams in one GSO send (the kernel's `UDP_MAX_SEGMENTS` is 128; 64
/// keeps a run within one 64 KB super-packet).
pub const MAX_SEGMENTS: usize = 64;
/// Largest payload of one GSO send.
pub const MAX_RUN_BYTES: usize = 65_000;

/// How the socket is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpOptions {
    /// `SO_RCVBUF(FORCE)` in bytes.
    pub read_buffer: u32,
    /// `SO_SNDBUF(FORCE)` in bytes.
    pub write_buffer: u32,
    /// Use UDP GSO and GRO where the kernel has them (`listen.udp_offloads`).
    pub offloads: bool,
}

impl UdpOptions {
    /// The options the `listen` section asks for.
    pub fn from_listen(listen: &crate::config::Listen) -> UdpOptions {
        let d = UdpOptions::default();
        UdpOptions {
            read_buffer: listen.read_buffer.unwrap_or(d.read_buffer),
            write_buffer: listen.write_buffer.unwrap_or(d.write_buffer),
            offloads: listen.udp_offloads,
        }
    }
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions { read_buffer: DEFAULT_SOCKET_BUFFER, write_buffer: DEFAULT_SOCKET_BUFFER, offloads: true }
    }
}

/// A bound, nonblocking underlay socket.
#[derive(Debug)]
pub struct Udp {
    socket: UdpSocket,
    state: UdpSocketState,
    offloads: bool,
    gro: bool,
    /// Smallest segment size the kernel refused to segment (larger than the path MTU): runs of
    /// this size or more go out one datagram at a time; smaller ones keep GSO.
    gso_refused_at: Cell<usize>,
}

/// Socket buffer sizes actually in effect (the kernel doubles what is asked, and caps `SO_*BUF`
/// without `CAP_NET_ADMIN`), for the startup log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffers {
    pub read: usize,
    pub write: usize,
}

/// What one [`Udp::send`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sent {
    /// The run left in one `sendmsg` with `UDP_SEGMENT`.
    pub gso: bool,
    /// GSO was refused and the run went out one datagram at a time. A device that refuses GSO
    /// (`EIO`) turns it off for good; segments larger than the path allows turn it off for that
    /// size and above.
    pub fell_back: bool,
}

impl Udp {
    /// Binds `addr` (port 0 = random), nonblocking, with offloads on where available. Buffer
    /// sizes use `SO_RCVBUFFORCE` / `SO_SNDBUFFORCE` (which need `CAP_NET_ADMIN`), falling back
    /// to the capped `SO_RCVBUF` / `SO_SNDBUF`, as Nebula does.
    pub fn bind(addr: SocketAddr, read_buffer: Option<u32>, write_buffer: Option<u32>) -> io::Result<Udp> {
        let d = UdpOptions::default();
        Udp::bind_with(
            addr,
            UdpOptions {
                read_buffer: read_buffer.unwrap_or(d.read_buffer),
                write_buffer: write_buffer.unwrap_or(d.write_buffer),
                offloads: true,
            },
        )
    }

    /// Binds `addr` as `opts` say.
    pub fn bind_with(addr: SocketAddr, opts: UdpOptions) -> io::Result<Udp> {
        if addr.port() != 0 {
            // The socket joins a SO_REUSEPORT group (for the peer sockets below), which would let
            // a second daemon on the same port start and silently take half the traffic: a
            // plain bind first still refuses a port in use.
            drop(
                bind_dual_stack(addr, false)
                    .map_err(|e| io::Error::new(e.kind(), format!("binding UDP {addr}: {e}")))?,
            );
        }
        let socket =
            bind_dual_stack(addr, true).map_err(|e| io::Error::new(e.kind(), format!("binding UDP {addr}: {e}")))?;
        Udp::configure(socket, addr.is_ipv4(), opts)
    }

    /// A socket of its own for datagrams from `peer`: bound to `local` (the address of the
    /// listening [`Udp`], in its `SO_REUSEPORT` group) and connected to `peer`. Linux delivers
    /// `peer`'s datagrams to it rather than to the listening socket (a connected socket scores
    /// higher in the lookup), so a flood into the listening socket's queue neither delays nor
    /// drops them. Only for receiving: sends still leave from the listening socket, same port.
    pub fn connected(local: SocketAddr, peer: SocketAddr, opts: UdpOptions) -> io::Result<Udp> {
        let peer = match (local, peer) {
            (SocketAddr::V6(_), SocketAddr::V4(v4)) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
            (SocketAddr::V4(_), SocketAddr::V6(_)) => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "an IPv6 peer on an IPv4 listen socket"));
            }
            _ => peer,
        };
        let socket = bind_dual_stack(local, true)?;
        socket.connect(peer)?;
        Udp::configure(socket, local.is_ipv4(), opts)
    }

    /// Another listening socket on `local` (the address of a listening [`Udp`]), in its
    /// `SO_REUSEPORT` group, for another worker: Linux spreads datagrams over the group by a hash
    /// of their source and destination (while the group's membership stays the same, one sender's
    /// datagrams reach one socket).
    pub fn sibling(local: SocketAddr, opts: UdpOptions) -> io::Result<Udp> {
        let socket = bind_dual_stack(local, true)?;
        Udp::configure(socket, local.is_ipv4(), opts)
    }

    fn configure(socket: UdpSocket, ipv4: bool, opts: UdpOptions) -> io::Result<Udp> {
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        allow_fragments(&socket, ipv4)?;
        if setsockopt(&socket, sockopt::RcvBufForce, &(opts.read_buffer as usize)).is_err() {
            setsockopt(&socket, sockopt::RcvBuf, &(opts.read_buffer as usize))?;
        }
        if setsockopt(&socket, sockopt::SndBufForce, &(opts.write_buffer as usize)).is_err() {
            setsockopt(&socket, sockopt::SndBuf, &(opts.write_buffer as usize))?;
        }
        let mut gro = state.gro_segments() > 1;
        if gro && !opts.offloads {
            setsockopt(&socket, sockopt::UdpGroSegment, &false)?;
            gro = false;
        }
        Ok(Udp { socket, state, offloads: opts.offloads, gro, gso_refused_at: Cell::new(usize::MAX) })
    }

    /// Binds as the `listen` section says.
    pub fn from_config(listen: &crate::config::Listen) -> io::Result<Udp> {
        Udp::bind_with(SocketAddr::new(listen.host, listen.port), UdpOptions::from_listen(listen))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The std socket, for single `send_to` / `recv_from` (e.g. a 1-byte punch).
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    pub fn buffers(&self) -> io::Result<Buffers> {
        Ok(Buffers {
            read: nix::sys::socket::getsockopt(&self.socket, sockopt::RcvBuf)?,
            write: nix::sys::socket::getsockopt(&self.socket, sockopt::SndBuf)?,
        })
    }

    /// Datagrams one [`Udp::send`] may carry: more than 1 while GSO is on.
    pub fn max_segments(&self) -> usize {
        if self.offloads { self.state.max_gso_segments().min(MAX_SEGMENTS) } else { 1 }
    }

    /// Whether receives may return several datagrams per buffer (UDP GRO is on).
    pub fn gro(&self) -> bool {
        self.gro
    }

    /// Sends `contents` to `to` as datagrams of `segment` bytes each (the last may be shorter):
    /// one `sendmsg` with `UDP_SEGMENT` when there are several and GSO is on, else one call per
    /// datagram. `WouldBlock` when the socket is full (nothing of a GSO run went).
    pub fn send(&self, to: SocketAddr, contents: &[u8], segment: usize) -> io::Result<Sent> {
        let segment = segment.max(1);
        if contents.len() <= segment || self.max_segments() <= 1 || segment >= self.gso_refused_at.get() {
            for d in contents.chunks(segment) {
                self.send_one(to, d, None)?;
            }
            return Ok(Sent::default());
        }
        match self.send_one(to, contents, Some(segment)) {
            Ok(()) => Ok(Sent { gso: true, fell_back: false }),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
            Err(_) => {
                // quinn-udp turns GSO off after EIO/EINVAL; a segment too large for the path
                // (EMSGSIZE) rules out GSO for that size. Either way the run still goes.
                self.gso_refused_at.set(self.gso_refused_at.get().min(segment));
                for d in contents.chunks(segment) {
                    self.send_one(to, d, None)?;
                }
                Ok(Sent { gso: false, fell_back: true })
            }
        }
    }

    fn send_one(&self, to: SocketAddr, contents: &[u8], segment_size: Option<usize>) -> io::Result<()> {
        let t = Transmit { destination: to, ecn: None, contents, segment_size, src_ip: None };
        self.state.try_send(UdpSockRef::from(&self.socket), &t)
    }

    /// Receives into `rx` with one `recvmmsg`. Returns how many buffers were filled (each one
    /// datagram, or several of one sender with GRO; read them with [`UdpRecv::datagrams`]);
    /// `WouldBlock` when none is waiting.
    pub fn recv(&self, rx: &mut UdpRecv) -> io::Result<usize> {
        rx.filled = 0;
        let mut chunks = rx.buf.chunks_mut(rx.slot);
        let mut slices: [IoSliceMut<'_>; RECV_BATCH] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        let n = self.state.recv(UdpSockRef::from(&self.socket), &mut slices[..rx.count], &mut rx.meta[..rx.count])?;
        rx.filled = n;
        Ok(n)
    }
}

impl AsRawFd for Udp {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsFd for Udp {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// Binds `addr` (with `SO_REUSEPORT` if `reuse_port`); an IPv6 socket also takes IPv4
/// (`IPV6_V6ONLY` off whatever `net.ipv6.bindv6only` says, as Nebula does), so
/// `listen.host: "::"` serves peers of both families. IPv4 peers then appear as
/// `::ffff:a.b.c.d`, which [`UdpRecv::buffer`] gives back as IPv4; IPv4 destinations are sent
/// to as they are (Linux accepts them on a dual-stack socket).
fn bind_dual_stack(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, bind, socket};
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    if reuse_port {
        setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    match addr {
        SocketAddr::V4(v4) => bind(fd.as_raw_fd(), &SockaddrIn::from(v4))?,
        SocketAddr::V6(v6) => {
            setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
            bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))?;
        }
    }
    Ok(UdpSocket::from(fd))
}

/// quinn-udp forbids fragmentation (`IP_PMTUDISC_PROBE`, for QUIC's own path MTU discovery);
/// the overlay has none, so a datagram larger than the path (a relayed full-size packet) must
/// still be fragmented by the kernel as before. Back to the Linux default, `PMTUDISC_WANT`.
fn allow_fragments(socket: &UdpSocket, ipv4: bool) -> io::Result<()> {
    let opts: &[(libc::c_int, libc::c_int, libc::c_int)] = if ipv4 {
        &[(libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_WANT)]
    } else {
        &[
            (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_WANT),
            (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, libc::IPV6_PMTUDISC_WANT),
        ]
    };
    for &(level, name, value) in opts {
        // SAFETY: `value` is a live c_int for the duration of the call and its size is passed;
        // the fd is open for the borrow of `socket`. (nix has no wrapper for IP_MTU_DISCOVER.)
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                (&raw const value).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            // A v6-only socket has no IPv4 level; nothing to undo there.
            if level != libc::IPPROTO_IP || ipv4 {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Caller-owned storage for [`Udp::recv`]: up to [`RECV_BATCH`] buffers of 64 KB (a GRO
/// buffer holds up to 64 datagrams of one sender). Allocated once per worker; the pages no
/// datagram touches stay out of the resident set.
pub struct UdpRecv {
    buf: Vec<u8>,
    slot: usize,
    count: usize,
    meta: [RecvMeta; RECV_BATCH],
    filled: usize,
}

impl UdpRecv {
    /// Storage for `count` buffers per receive (at most [`RECV_BATCH`]).
    pub fn new(count: usize) -> UdpRecv {
        let count = count.clamp(1, RECV_BATCH);
        let slot = MAX_DATAGRAM + 1;
        UdpRecv { buf: vec![0; count * slot], slot, count, meta: [RecvMeta::default(); RECV_BATCH], filled: 0 }
    }

    /// Buffers per receive.
    pub fn capacity(&self) -> usize {
        self.count
    }

    /// Buffers filled by the last receive.
    pub fn len(&self) -> usize {
        self.filled
    }

    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Buffer `i` of the last receive: its sender, its bytes and the size of each datagram in it
    /// (the stride; the last one may be shorter).
    pub fn buffer(&self, i: usize) -> Option<(SocketAddr, &[u8], usize)> {
        if i >= self.filled {
            return None;
        }
        let m = &self.meta[i];
        let len = m.len.min(self.slot);
        let from = SocketAddr::new(m.addr.ip().to_canonical(), m.addr.port());
        Some((from, &self.buf[i * self.slot..i * self.slot + len], m.stride.max(1)))
    }

    /// Every datagram of the last receive, GRO buffers split at their stride, in order.
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        (0..self.filled)
            .filter_map(|i| self.buffer(i))
            .flat_map(|(from, data, stride)| data.chunks(stride).map(move |d| (from, d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gso_run_arrives_as_its_datagrams_in_order() {
        let a = Udp::bind("127.0.0.1:0".parse().unwrap(), None, None).unwrap();
        let b = Udp::bind("127.0.0.1:0".parse().unwrap(), None, None).unwrap();
        let run: Vec<u8> = (0..10 * 1000 + 300).map(|i| (i / 1000) as u8).collect();
        let sent = a.send(b.local_addr().unwrap(), &run, 1000).unwrap();
        assert_eq!(sent.gso, a.max_segments() > 1);
        let mut rx = UdpRecv::new(8);
        let mut got = Vec::new();
        for _ in 0..100 {
            match b.recv(&mut rx) {
                Ok(_) => got.extend(rx.datagrams().map(|(from, d)| (from, d.to_vec()))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if got.len() == 11 {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got.len(), 11);
        for (i, (from, d)) in got.iter().enumerate() {
            assert_eq!(*from, a.local_addr().unwrap());
            assert_eq!(d.len(), if i == 10 { 300 } else { 1000 });
            assert!(d.iter().all(|&x| x == i as u8), "datagram {i} out of order or mixed");
        }
    }

    #[test]
    fn a_socket_on_any_ipv6_address_talks_to_ipv4_peers_too() {
        let dual = Udp::bind("[::]:0".parse().unwrap(), None, None).unwrap();
        let v4 = Udp::bind("127.0.0.1:0".parse().unwrap(), None, None).unwrap();
        let dual_port = dual.local_addr().unwrap().port();
        dual.send(v4.local_addr().unwrap(), b"to v4", 1000).unwrap();
        let mut rx = UdpRecv::new(4);
        let from = receive_one(&v4, &mut rx, b"to v4");
        assert_eq!(from, SocketAddr::from(([127, 0, 0, 1], dual_port)));
        v4.send(from, b"back", 1000).unwrap();
        // The IPv4 peer shows as IPv4, not as ::ffff:127.0.0.1: the address the core keys on.
        assert_eq!(receive_one(&dual, &mut rx, b"back"), v4.local_addr().unwrap());
    }

    /// Waits for one datagram with `want` on `udp`; returns its sender.
    fn receive_one(udp: &Udp, rx: &mut UdpRecv, want: &[u8]) -> SocketAddr {
        for _ in 0..100 {
            match udp.recv(rx) {
                Ok(_) => {
                    let (from, d) = rx.datagrams().next().unwrap();
                    assert_eq!(d, want);
                    return from;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("nothing arrived")
    }

    #[test]
    fn without_offloads_a_run_leaves_as_single_datagrams() {
        let opts = UdpOptions { offloads: false, ..UdpOptions::default() };
        let a = Udp::bind_with("127.0.0.1:0".parse().unwrap(), opts).unwrap();
        let b = Udp::bind_with("127.0.0.1:0".parse().unwrap(), opts).unwrap();
        assert_eq!((a.max_segments(), b.gro()), (1, false));
        assert_eq!(a.send(b.local_addr().unwrap(), &[7u8; 3000], 1000).unwrap(), Sent::default());
        let mut rx = UdpRecv::new(8);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(b.recv(&mut rx).unwrap(), 3);
        assert!(rx.datagrams().all(|(_, d)| d.len() == 1000));
    }
}
