//! Interface configuration over rtnetlink, synchronously: link MTU / tx queue / up, IPv4
//! addresses and routes. About what `ip link set`, `ip addr add` and `ip route replace` send.
//!
//! Hand-written (no `rtnetlink` crate) because the daemon needs five requests at start and on
//! reload, and an async netlink stack would pull a runtime into a loop that has none. Each
//! request asks for an ACK and the kernel's errno comes back as an `io::Error` with context.
//!
//! A netlink socket talks to the network namespace of the thread that created it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use ipnet::Ipv4Net;

const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const IFLA_MTU: u16 = 4;
const IFLA_TXQLEN: u16 = 13;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_PRIORITY: u16 = 6;
const RTA_METRICS: u16 = 8;
const RTAX_MTU: u16 = 2;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;

/// A route through an interface, as `tun.routes` / `tun.unsafe_routes` describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Net,
    /// Route MTU (`ip route ... mtu N`); `None` inherits the interface's.
    pub mtu: Option<u32>,
    /// Route priority (`metric`); `None` is the kernel's default 0.
    pub metric: Option<u32>,
}

/// The index of interface `name` in this thread's network namespace.
pub fn if_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i),
    }
}

/// Sets the MTU and transmit queue length of interface `index` and brings it up.
pub fn set_link(index: u32, mtu: Option<u32>, tx_queue: Option<u32>, up: bool) -> io::Result<()> {
    let mut m = Message::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK);
    // struct ifinfomsg { family, pad, type, index, flags, change }
    m.push(&[libc::AF_UNSPEC as u8, 0]);
    m.push(&0u16.to_ne_bytes());
    m.push(&(index as i32).to_ne_bytes());
    let iff_up = libc::IFF_UP as u32;
    m.push(&(if up { iff_up } else { 0 }).to_ne_bytes());
    m.push(&iff_up.to_ne_bytes());
    if let Some(mtu) = mtu {
        m.attr(IFLA_MTU, &mtu.to_ne_bytes());
    }
    if let Some(q) = tx_queue {
        m.attr(IFLA_TXQLEN, &q.to_ne_bytes());
    }
    request(m).map_err(|e| context(e, format!("configuring link {index} (mtu {mtu:?}, txqueuelen {tx_queue:?})")))
}

/// Adds `addr` (address with prefix, e.g. 100.64.0.1/10) to interface `index`; the kernel adds
/// the prefix route once the link is up.
pub fn add_address(index: u32, addr: Ipv4Net) -> io::Result<()> {
    let mut m = Message::new(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
    // struct ifaddrmsg { family, prefixlen, flags, scope, index }
    m.push(&[libc::AF_INET as u8, addr.prefix_len(), 0, 0]);
    m.push(&index.to_ne_bytes());
    m.attr(IFA_LOCAL, &addr.addr().octets());
    m.attr(IFA_ADDRESS, &addr.addr().octets());
    request(m).map_err(|e| context(e, format!("adding address {addr} to link {index}")))
}

/// Adds or replaces a route to `route.dst` through interface `index`.
pub fn replace_route(index: u32, route: &Route) -> io::Result<()> {
    let mut m = Message::new(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
    let dst = route.dst.trunc();
    // struct rtmsg { family, dst_len, src_len, tos, table, protocol, scope, type, flags }
    m.push(&[libc::AF_INET as u8, dst.prefix_len(), 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_LINK, RTN_UNICAST]);
    m.push(&0u32.to_ne_bytes());
    m.attr(RTA_DST, &dst.addr().octets());
    m.attr(RTA_OIF, &index.to_ne_bytes());
    if let Some(metric) = route.metric {
        m.attr(RTA_PRIORITY, &metric.to_ne_bytes());
    }
    if let Some(mtu) = route.mtu {
        let mut nested = Vec::with_capacity(8);
        push_attr(&mut nested, RTAX_MTU, &mtu.to_ne_bytes());
        m.attr(RTA_METRICS, &nested);
    }
    request(m).map_err(|e| context(e, format!("adding route {dst} via link {index}")))
}

fn context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// One netlink request being built: header, fixed part, attributes.
struct Message(Vec<u8>);

impl Message {
    fn new(kind: u16, flags: u16) -> Message {
        let mut b = Vec::with_capacity(128);
        b.extend_from_slice(&0u32.to_ne_bytes()); // length, set in `finish`
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
        b.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        Message(b)
    }

    fn push(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    fn attr(&mut self, kind: u16, data: &[u8]) {
        push_attr(&mut self.0, kind, data);
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

/// Appends `struct rtattr { u16 len; u16 type; }` + data, padded to 4 bytes.
fn push_attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// Sends one request on a fresh socket and waits for its ACK.
fn request(m: Message) -> io::Result<()> {
    let msg = m.finish();
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_nl addresses the kernel (pid 0).
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: `msg` and `kernel` outlive the call; lengths match the buffers.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&raw const kernel).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if let Some(result) = parse_ack(&buf[..n as usize]) {
            return result;
        }
    }
}

/// Finds the NLMSG_ERROR reply in a datagram: `Some(Ok)` for an ACK, `Some(Err)` for an errno.
fn parse_ack(mut data: &[u8]) -> Option<io::Result<()>> {
    while data.len() >= NLMSG_HDR {
        let len = u32::from_ne_bytes(data[0..4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(data[4..6].try_into().ok()?);
        if len < NLMSG_HDR || len > data.len() {
            return Some(Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink reply")));
        }
        if kind == NLMSG_ERROR && len >= NLMSG_HDR + 4 {
            let errno = i32::from_ne_bytes(data[NLMSG_HDR..NLMSG_HDR + 4].try_into().ok()?);
            return Some(if errno == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-errno)) });
        }
        data = &data[len.next_multiple_of(4).min(data.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_length_prefixed() {
        let mut b = Vec::new();
        push_attr(&mut b, RTA_DST, &[1, 2, 3]);
        assert_eq!(b.len(), 8);
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), 7);
        assert_eq!(u16::from_ne_bytes([b[2], b[3]]), RTA_DST);
        let m = Message::new(RTM_NEWLINK, NLM_F_REQUEST).finish();
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 16);
    }

    #[test]
    fn acks_and_errors_are_recognised() {
        let mut ack = Message::new(NLMSG_ERROR, 0);
        ack.push(&0i32.to_ne_bytes());
        assert!(matches!(parse_ack(&ack.finish()), Some(Ok(()))));
        let mut err = Message::new(NLMSG_ERROR, 0);
        err.push(&(-libc::EEXIST).to_ne_bytes());
        let e = parse_ack(&err.finish()).unwrap().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        assert!(parse_ack(&[0u8; 3]).is_none());
    }
}
