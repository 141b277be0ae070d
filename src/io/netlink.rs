//! Interface configuration over rtnetlink, synchronously: link MTU / tx queue / up, IPv4 and
//! IPv6 addresses, and IPv4 routes. About what `ip link set`, `ip addr add` and `ip route replace` send.
//!
//! Messages are built by `netlink-packet-route` and sent on a `netlink-sys` socket, blocking:
//! the daemon needs five requests at start and on reload, and an async netlink stack
//! (`rtnetlink`) would pull a runtime into a loop that has none. Each request asks for an ACK
//! and the kernel's errno comes back as an `io::Error` with context.
//!
//! A netlink socket talks to the network namespace of the thread that created it.

#![forbid(unsafe_code)]

use std::io;

use ipnet::IpNet;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// A route through an interface, as `tun.routes` / `tun.unsafe_routes` describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// IPv4 or IPv6.
    pub dst: IpNet,
    /// Route MTU (`ip route ... mtu N`); `None` inherits the interface's.
    pub mtu: Option<u32>,
    /// Route priority (`metric`); `None` is the kernel's default 0.
    pub metric: Option<u32>,
}

/// The index of interface `name` in this thread's network namespace.
pub fn if_index(name: &str) -> io::Result<u32> {
    Ok(nix::net::if_::if_nametoindex(name)?)
}

/// Sets the MTU and transmit queue length of interface `index` and brings it up.
pub fn set_link(index: u32, mtu: Option<u32>, tx_queue: Option<u32>, up: bool) -> io::Result<()> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = if up { LinkFlags::Up } else { LinkFlags::empty() };
    m.header.change_mask = LinkFlags::Up;
    m.attributes.extend(mtu.map(LinkAttribute::Mtu));
    m.attributes.extend(tx_queue.map(LinkAttribute::TxQueueLen));
    request(RouteNetlinkMessage::NewLink(m), 0)
        .map_err(|e| context(e, format!("configuring link {index} (mtu {mtu:?}, txqueuelen {tx_queue:?})")))
}

/// Adds `addr` (address with prefix, e.g. 100.64.0.1/10 or fd00::1/64) to interface `index`;
/// the kernel adds the prefix route (IPv4: once the link is up).
pub fn add_address(index: u32, addr: IpNet) -> io::Result<()> {
    let mut m = AddressMessage::default();
    m.header.family = match addr {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    };
    m.header.prefix_len = addr.prefix_len();
    m.header.index = index;
    let ip = addr.addr();
    m.attributes = vec![AddressAttribute::Local(ip), AddressAttribute::Address(ip)];
    request(RouteNetlinkMessage::NewAddress(m), NLM_F_CREATE | NLM_F_EXCL)
        .map_err(|e| context(e, format!("adding address {addr} to link {index}")))
}

/// Adds or replaces a route to `route.dst` through interface `index`.
pub fn replace_route(index: u32, route: &Route) -> io::Result<()> {
    let dst = route.dst.trunc();
    let (family, address) = match dst {
        IpNet::V4(n) => (AddressFamily::Inet, RouteAddress::Inet(n.addr())),
        IpNet::V6(n) => (AddressFamily::Inet6, RouteAddress::Inet6(n.addr())),
    };
    let mut m = RouteMessage::default();
    m.header.address_family = family;
    m.header.destination_prefix_length = dst.prefix_len();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Static;
    m.header.scope = RouteScope::Link;
    m.header.kind = RouteType::Unicast;
    m.attributes = vec![RouteAttribute::Destination(address), RouteAttribute::Oif(index)];
    m.attributes.extend(route.metric.map(RouteAttribute::Priority));
    m.attributes.extend(route.mtu.map(|mtu| RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)])));
    request(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_REPLACE)
        .map_err(|e| context(e, format!("adding route {dst} via link {index}")))
}

fn context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Sends one request (with `NLM_F_REQUEST | NLM_F_ACK` and `flags`) on a fresh socket and waits
/// for its ACK.
fn request(body: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
    let mut msg = NetlinkMessage::from(body);
    msg.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    msg.header.sequence_number = 1;
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    let socket = Socket::new(NETLINK_ROUTE)?;
    socket.send_to(&buf, &SocketAddr::new(0, 0), 0)?;
    loop {
        let (reply, _) = socket.recv_from_full()?;
        if let Some(result) = parse_ack(&reply) {
            return result;
        }
    }
}

/// Finds the ACK or error in a datagram from the kernel: `Some(Ok)` for an ACK, `Some(Err)` for
/// an errno or an undecodable reply, `None` when the datagram holds neither.
fn parse_ack(mut data: &[u8]) -> Option<io::Result<()>> {
    while !data.is_empty() {
        let msg = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(data) {
            Ok(msg) => msg,
            Err(e) => return Some(Err(io::Error::new(io::ErrorKind::InvalidData, format!("netlink reply: {e}")))),
        };
        if let NetlinkPayload::Error(e) = msg.payload {
            return Some(match e.code {
                None => Ok(()),
                Some(_) => Err(e.to_io()),
            });
        }
        let len = (msg.header.length as usize).next_multiple_of(4);
        data = data.get(len.max(1)..).unwrap_or_default();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{ErrorMessage, NetlinkHeader};
    use std::num::NonZeroI32;

    fn reply(code: i32) -> Vec<u8> {
        let mut e = ErrorMessage::default();
        e.code = NonZeroI32::new(code);
        let mut msg = NetlinkMessage::<RouteNetlinkMessage>::new(NetlinkHeader::default(), NetlinkPayload::Error(e));
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }

    #[test]
    fn acks_and_errors_are_recognised() {
        assert!(matches!(parse_ack(&reply(0)), Some(Ok(()))));
        let e = parse_ack(&reply(-libc::EEXIST)).unwrap().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        assert!(parse_ack(&[0u8; 3]).unwrap().is_err(), "a truncated reply is an error, not a hang");
    }
}
