//! The underlay UDP socket, with batched receive (`recvmmsg`) and send (`sendmmsg`) into
//! caller-owned buffers: one system call moves up to `listen.batch` datagrams, and nothing is
//! allocated per datagram (the batches are allocated once per worker and reused).

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

/// Largest UDP payload; the default slot size of a batch.
pub const MAX_DATAGRAM: usize = 65535;

/// A bound, nonblocking underlay socket.
#[derive(Debug)]
pub struct Udp {
    socket: UdpSocket,
}

/// Socket buffer sizes actually in effect (the kernel doubles what is asked, and caps `SO_*BUF`
/// without `CAP_NET_ADMIN`), for the startup log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffers {
    pub read: usize,
    pub write: usize,
}

impl Udp {
    /// Binds `addr` (port 0 = random), nonblocking. Buffer sizes use `SO_RCVBUFFORCE` /
    /// `SO_SNDBUFFORCE` (which need `CAP_NET_ADMIN`), falling back to the capped `SO_RCVBUF` /
    /// `SO_SNDBUF`, as Nebula does.
    pub fn bind(addr: SocketAddr, read_buffer: Option<u32>, write_buffer: Option<u32>) -> io::Result<Udp> {
        let socket = UdpSocket::bind(addr).map_err(|e| io::Error::new(e.kind(), format!("binding UDP {addr}: {e}")))?;
        socket.set_nonblocking(true)?;
        let fd = socket.as_raw_fd();
        if let Some(n) = read_buffer {
            set_buffer(fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, n)?;
        }
        if let Some(n) = write_buffer {
            set_buffer(fd, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, n)?;
        }
        Ok(Udp { socket })
    }

    /// Binds as the `listen` section says.
    pub fn from_config(listen: &crate::config::Listen) -> io::Result<Udp> {
        Udp::bind(SocketAddr::new(listen.host, listen.port), listen.read_buffer, listen.write_buffer)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The std socket, for single `send_to` / `recv_from` (e.g. a 1-byte punch).
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    pub fn buffers(&self) -> io::Result<Buffers> {
        let fd = self.socket.as_raw_fd();
        Ok(Buffers { read: get_int(fd, libc::SO_RCVBUF)? as usize, write: get_int(fd, libc::SO_SNDBUF)? as usize })
    }

    /// Receives up to `batch.capacity()` datagrams in one `recvmmsg`. Returns how many arrived
    /// (read them with [`RecvBatch::get`]); `WouldBlock` when none is waiting.
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.prepare();
        let n = loop {
            // SAFETY: `prepare` pointed every header at this batch's own iovecs, buffers and
            // address slots, which live (and do not move) for the duration of the call.
            let n = unsafe {
                libc::recvmmsg(
                    self.socket.as_raw_fd(),
                    batch.hdrs.as_mut_ptr(),
                    batch.hdrs.len() as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        batch.filled = n;
        Ok(n)
    }

    /// Sends the queued datagrams with as few `sendmmsg` calls as possible. Returns how many
    /// were sent; those stay out of the batch. On `WouldBlock` the rest stay queued (wait for
    /// the socket to be writable and call again). A datagram the kernel refuses outright
    /// (unreachable destination, too large) is dropped, counted in [`SendBatch::dropped`], and
    /// the rest still go.
    pub fn send_batch(&self, batch: &mut SendBatch) -> io::Result<usize> {
        let mut sent = 0;
        while batch.next < batch.len {
            batch.prepare();
            let pending = &mut batch.hdrs[batch.next..batch.len];
            // SAFETY: `prepare` pointed the headers at this batch's buffers and addresses,
            // which live for the call; `pending` is within the initialised headers.
            let n = unsafe {
                libc::sendmmsg(self.socket.as_raw_fd(), pending.as_mut_ptr(), pending.len() as u32, libc::MSG_DONTWAIT)
            };
            if n > 0 {
                batch.next += n as usize;
                sent += n as usize;
                continue;
            }
            if n == 0 {
                break; // nothing pending after all
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock if sent > 0 => return Ok(sent),
                io::ErrorKind::WouldBlock => return Err(e),
                _ => {
                    // The first pending datagram failed; drop it and carry on.
                    batch.next += 1;
                    batch.dropped += 1;
                    batch.last_error = Some(e);
                }
            }
        }
        batch.clear();
        Ok(sent)
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

/// Caller-owned storage for one `recvmmsg`: `capacity` slots of `slot` bytes each, their source
/// addresses and lengths.
pub struct RecvBatch {
    buf: Vec<u8>,
    slot: usize,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    filled: usize,
}

// SAFETY: the raw pointers inside `iovs`/`hdrs` only ever point into this struct's own vectors
// and are rewritten before each use; nothing is shared.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// `capacity` datagrams (`listen.batch`) of up to `slot` bytes each (a datagram longer
    /// than `slot` is truncated; use [`MAX_DATAGRAM`] or the path MTU).
    pub fn new(capacity: usize, slot: usize) -> RecvBatch {
        let capacity = capacity.max(1);
        RecvBatch {
            buf: vec![0; capacity * slot],
            slot,
            // SAFETY: all-zero is a valid sockaddr_storage / iovec / mmsghdr.
            addrs: vec![unsafe { zeroed() }; capacity],
            iovs: vec![unsafe { zeroed() }; capacity],
            hdrs: vec![unsafe { zeroed() }; capacity],
            filled: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Datagrams from the last receive.
    pub fn len(&self) -> usize {
        self.filled
    }

    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Datagram `i` of the last receive: its source and its bytes.
    pub fn get(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        if i >= self.filled {
            return None;
        }
        let from = from_storage(&self.addrs[i])?;
        let len = (self.hdrs[i].msg_len as usize).min(self.slot);
        Some((from, &self.buf[i * self.slot..i * self.slot + len]))
    }

    /// The datagrams of the last receive, in order.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        (0..self.filled).filter_map(|i| self.get(i))
    }

    fn prepare(&mut self) {
        self.filled = 0;
        // One base pointer for all slots: re-borrowing the Vec per slot would invalidate the
        // pointers already stored in earlier headers.
        let base = self.buf.as_mut_ptr();
        let name_len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        for (i, ((hdr, iov), addr)) in self.hdrs.iter_mut().zip(&mut self.iovs).zip(&mut self.addrs).enumerate() {
            // SAFETY: slot i lies within `buf` (capacity * slot bytes).
            point(hdr, iov, unsafe { base.add(i * self.slot) }, self.slot, addr, name_len);
        }
    }
}

/// Caller-owned storage for outgoing datagrams: fill with [`SendBatch::push`] (copy) or
/// [`SendBatch::push_with`] (write in place, e.g. encrypt straight into the slot), then
/// [`Udp::send_batch`].
pub struct SendBatch {
    buf: Vec<u8>,
    slot: usize,
    lens: Vec<usize>,
    addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    len: usize,
    next: usize,
    /// Datagrams dropped because the kernel refused them (see [`Udp::send_batch`]).
    pub dropped: u64,
    /// The error of the last dropped datagram.
    pub last_error: Option<io::Error>,
}

// SAFETY: as for RecvBatch, the raw pointers only point into this struct's own vectors.
unsafe impl Send for SendBatch {}

impl SendBatch {
    pub fn new(capacity: usize, slot: usize) -> SendBatch {
        let capacity = capacity.max(1);
        SendBatch {
            buf: vec![0; capacity * slot],
            slot,
            lens: vec![0; capacity],
            // SAFETY: all-zero is a valid sockaddr_storage / iovec / mmsghdr.
            addrs: vec![(unsafe { zeroed() }, 0); capacity],
            iovs: vec![unsafe { zeroed() }; capacity],
            hdrs: vec![unsafe { zeroed() }; capacity],
            len: 0,
            next: 0,
            dropped: 0,
            last_error: None,
        }
    }

    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Datagrams queued and not yet sent.
    pub fn len(&self) -> usize {
        self.len - self.next
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == self.capacity()
    }

    /// Queues a copy of `payload` for `to`. False (nothing queued) when the batch is full or
    /// the payload is empty or larger than a slot.
    pub fn push(&mut self, to: SocketAddr, payload: &[u8]) -> bool {
        if payload.len() > self.slot || payload.is_empty() {
            return false;
        }
        self.push_with(to, |slot| {
            slot[..payload.len()].copy_from_slice(payload);
            payload.len()
        })
    }

    /// Queues a datagram for `to` written by `fill` into the slot; `fill` returns its length
    /// (0 queues nothing). False when the batch is full.
    pub fn push_with(&mut self, to: SocketAddr, fill: impl FnOnce(&mut [u8]) -> usize) -> bool {
        if self.is_full() {
            return false;
        }
        let i = self.len;
        let n = fill(&mut self.buf[i * self.slot..(i + 1) * self.slot]).min(self.slot);
        if n == 0 {
            return true;
        }
        self.lens[i] = n;
        self.addrs[i] = to_storage(to);
        self.len += 1;
        true
    }

    /// Forgets every queued datagram.
    pub fn clear(&mut self) {
        self.len = 0;
        self.next = 0;
    }

    fn prepare(&mut self) {
        let base = self.buf.as_mut_ptr();
        let slots = self.hdrs.iter_mut().zip(&mut self.iovs).zip(&mut self.addrs).zip(&self.lens).take(self.len);
        for (i, (((hdr, iov), (addr, name_len)), &len)) in slots.enumerate() {
            // SAFETY: slot i lies within `buf`, and `len` <= slot.
            point(hdr, iov, unsafe { base.add(i * self.slot) }, len, addr, *name_len);
        }
    }
}

/// Points one `mmsghdr` at one buffer (through its iovec) and one address slot.
fn point(
    hdr: &mut libc::mmsghdr,
    iov: &mut libc::iovec,
    data: *mut u8,
    len: usize,
    addr: &mut libc::sockaddr_storage,
    name_len: libc::socklen_t,
) {
    iov.iov_base = data.cast();
    iov.iov_len = len;
    hdr.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
    hdr.msg_hdr.msg_namelen = name_len;
    hdr.msg_hdr.msg_iov = iov;
    hdr.msg_hdr.msg_iovlen = 1;
    hdr.msg_hdr.msg_control = std::ptr::null_mut();
    hdr.msg_hdr.msg_controllen = 0;
    hdr.msg_hdr.msg_flags = 0;
    hdr.msg_len = 0;
}

fn set_buffer(fd: RawFd, force: libc::c_int, plain: libc::c_int, bytes: u32) -> io::Result<()> {
    let v = bytes.min(i32::MAX as u32) as libc::c_int;
    if set_int(fd, force, v).is_ok() {
        return Ok(());
    }
    set_int(fd, plain, v)
}

fn set_int(fd: RawFd, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: `v` is a valid int for the call's duration.
    let r =
        unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, opt, (&raw const v).cast(), size_of::<libc::c_int>() as u32) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn get_int(fd: RawFd, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut v).cast(), &mut len) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(v) }
}

fn to_storage(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage, and it is large and aligned enough to be
    // viewed as sockaddr_in or sockaddr_in6.
    let mut s: libc::sockaddr_storage = unsafe { zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = unsafe { &mut *(&raw mut s).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            (s, size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(a) => {
            let sin6 = unsafe { &mut *(&raw mut s).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            (s, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            // A v4-mapped source on a dual-stack socket is shown as the IPv4 address it is.
            match ip.to_ipv4_mapped() {
                Some(v4) => Some(SocketAddr::new(IpAddr::V4(v4), port)),
                None => Some(SocketAddr::V6(SocketAddrV6::new(ip, port, sin6.sin6_flowinfo, sin6.sin6_scope_id))),
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_round_trip() {
        for a in ["198.18.0.1:4242", "[2001:db8::1]:4242", "0.0.0.0:0"] {
            let addr: SocketAddr = a.parse().unwrap();
            assert_eq!(from_storage(&to_storage(addr).0), Some(addr));
        }
        let mapped: SocketAddr = "[::ffff:198.18.0.1]:9".parse().unwrap();
        assert_eq!(from_storage(&to_storage(mapped).0), Some("198.18.0.1:9".parse().unwrap()));
    }

    #[test]
    fn send_batch_refuses_when_full_or_oversized() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut b = SendBatch::new(2, 4);
        assert!(!b.push(to, b"too long"));
        assert!(b.push(to, b"ab"));
        assert!(b.push_with(to, |s| {
            s[0] = 1;
            1
        }));
        assert!(b.is_full() && !b.push(to, b"x"));
        assert_eq!(b.len(), 2);
    }
}
