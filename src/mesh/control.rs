//! Control messages that travel inside tunnels: lighthouse registration and queries, punch
//! requests, relayed datagrams and member lists.
//!
//! boringtun only delivers IP packets, so a control message is an IP packet between the two
//! peers' overlay addresses with protocol (IPv6: next header) 253 (RFC 3692, "for
//! experimentation"): IPv4 when both peers have an IPv4 address, as every cos-mesh before IPv6
//! sends it, else IPv6 ([`Framing`]). The core consumes such packets addressed to one of its
//! own addresses before the firewall or the TUN see them, and only from a peer whose
//! certificate holds the packet's source: nothing in the clear, nothing spoofable.
//!
//! Identities (which node a message is about: a relay, a punch target, a relayed datagram's
//! end) are overlay addresses, v4 or v6. A message about IPv4 identities keeps its kind and
//! layout from before IPv6, so older versions still read it; one about an IPv6 identity has a
//! kind of its own, which an older version counts as malformed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

use thiserror::Error;

use super::ping::{Probe, ProbeVerdict};

pub const PROTO: u8 = 253;
const VERSION: u8 = 1;
/// Most addresses carried in one message.
pub const MAX_ADDRS: usize = 16;
/// Kinds of the queries and answers about an IPv6 overlay address. One about an IPv4 address
/// keeps kinds 3 and 4 and their layout, so cos-mesh versions before IPv6 still understand
/// it (and count a v6 kind they do not know as malformed).
const KIND_HOST_QUERY_V6: u8 = 0x20;
const KIND_HOST_QUERY_REPLY_V6: u8 = 0x21;
/// A host update or query reply whose relays include an IPv6 identity: every address in it
/// carries a family byte (4 or 6). With only IPv4 relays, kinds 1, 4 and 0x21 keep their layout.
const KIND_HOST_UPDATE_MIXED: u8 = 0x22;
const KIND_HOST_QUERY_REPLY_MIXED: u8 = 0x23;
/// Punch requests and relayed datagrams about an IPv6 identity (16 address bytes where kinds
/// 5, 6 and 10 have 4).
const KIND_HOST_PUNCH_V6: u8 = 0x24;
const KIND_RELAY_TO_V6: u8 = 0x25;
const KIND_RELAY_FROM_V6: u8 = 0x26;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Node → lighthouse: where I can be reached, and which relays serve me.
    HostUpdate {
        addrs: Vec<SocketAddr>,
        relays: Vec<IpAddr>,
    },
    HostUpdateAck,
    /// Node → lighthouse: where is `vpn_ip` (any overlay address of a node, v4 or v6)?
    HostQuery {
        vpn_ip: IpAddr,
    },
    /// Lighthouse → node: `vpn_ip` is at `addrs` (observed first, then reported), served by
    /// `relays`, and this is its certificate (so the handshake can start at once).
    HostQueryReply {
        vpn_ip: IpAddr,
        addrs: Vec<SocketAddr>,
        relays: Vec<IpAddr>,
        cert: Vec<u8>,
    },
    /// Lighthouse → node: `vpn_ip` is about to contact you from `addrs`; punch toward them.
    HostPunch {
        vpn_ip: IpAddr,
        addrs: Vec<SocketAddr>,
    },
    /// Node → relay: forward this datagram to `peer`. It is a WireGuard (or Hello) datagram
    /// between the two end peers, so the relay sees only ciphertext.
    RelayTo {
        peer: IpAddr,
        datagram: Vec<u8>,
    },
    /// Relay → node: this datagram comes from `peer`.
    RelayFrom {
        peer: IpAddr,
        datagram: Vec<u8>,
    },
    /// Keeps a tunnel (to a relay) alive and proves it works; no answer.
    Ping,
    /// Node → lighthouse: send me the certificates of every registered node.
    MembersQuery,
    /// Lighthouse → node: some of the members' certificates; `last` ends the list.
    MembersReply {
        certs: Vec<Vec<u8>>,
        last: bool,
    },
    /// Node → peer, sent on one direct path: do my datagrams on this path reach you?
    PathProbe {
        nonce: u64,
    },
    /// Peer → node, by any path: yes, probe `nonce` arrived.
    PathAck {
        nonce: u64,
    },
    /// Node → peer (`cos-mesh ping`): would your firewall let `probe` from me in?
    PingRequest {
        nonce: u64,
        probe: Probe,
    },
    /// Peer → node: its firewall's verdict on the probe of ping `nonce`.
    PingReply {
        nonce: u64,
        verdict: ProbeVerdict,
    },
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("truncated control message")]
    Truncated,
    #[error("unknown control message kind {0}")]
    UnknownKind(u8),
    #[error("unsupported control message version {0}")]
    Version(u8),
    #[error("too many addresses")]
    TooMany,
    #[error("unknown value {0} in a ping message")]
    UnknownValue(u8),
}

/// The overlay addresses a control message travels between, and so its IP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    V4 { src: Ipv4Addr, dst: Ipv4Addr },
    V6 { src: Ipv6Addr, dst: Ipv6Addr },
}

impl Framing {
    /// Between a node with networks `ours` and a peer with networks `theirs`: IPv4 between the
    /// first IPv4 addresses when both have one (what cos-mesh before IPv6 sends and expects),
    /// else IPv6 between the first IPv6 ones; none when they share no family.
    pub fn between(ours: &[IpNet], theirs: &[IpNet]) -> Option<Framing> {
        match (first_v4(ours), first_v4(theirs), first_v6(ours), first_v6(theirs)) {
            (Some(src), Some(dst), _, _) => Some(Framing::V4 { src, dst }),
            (_, _, Some(src), Some(dst)) => Some(Framing::V6 { src, dst }),
            _ => None,
        }
    }

    /// Toward overlay address `dst` of a peer whose certificate we lack yet: from our first
    /// address of `dst`'s family; none when we have no address of that family.
    pub fn toward(ours: &[IpNet], dst: IpAddr) -> Option<Framing> {
        match dst {
            IpAddr::V4(dst) => first_v4(ours).map(|src| Framing::V4 { src, dst }),
            IpAddr::V6(dst) => first_v6(ours).map(|src| Framing::V6 { src, dst }),
        }
    }
}

impl Framing {
    /// The source and destination addresses.
    pub fn addrs(self) -> (IpAddr, IpAddr) {
        match self {
            Framing::V4 { src, dst } => (src.into(), dst.into()),
            Framing::V6 { src, dst } => (src.into(), dst.into()),
        }
    }
}

fn first_v4(nets: &[IpNet]) -> Option<Ipv4Addr> {
    nets.iter().find_map(|n| match n.addr() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    })
}

fn first_v6(nets: &[IpNet]) -> Option<Ipv6Addr> {
    nets.iter().find_map(|n| match n.addr() {
        IpAddr::V6(ip) => Some(ip),
        IpAddr::V4(_) => None,
    })
}

/// If `packet` is a control message (IPv4 protocol 253 without options, or IPv6 whose last
/// next header is 253) addressed to one of `ours`: its source address and payload.
pub fn payload_for<'a>(packet: &'a [u8], ours: &[IpNet]) -> Option<(IpAddr, &'a [u8])> {
    let (src, dst, payload) = match packet.first()? >> 4 {
        4 => {
            let ip = crate::packet::Ipv4Packet::new(packet).ok()?;
            if ip.protocol() != PROTO || ip.header_len() != 20 {
                return None;
            }
            (IpAddr::V4(ip.src()), IpAddr::V4(ip.dst()), ip.payload())
        }
        6 => {
            let ip = crate::packet::Ipv6Packet::new(packet).ok()?;
            if ip.protocol() != PROTO {
                return None;
            }
            (IpAddr::V6(ip.src()), IpAddr::V6(ip.dst()), ip.payload())
        }
        _ => return None,
    };
    ours.iter().any(|n| n.addr() == dst).then_some((src, payload))
}

impl Control {
    /// The whole IP packet carrying this message, framed as `framing` says.
    pub fn to_packet(&self, framing: Framing) -> Vec<u8> {
        match framing {
            Framing::V4 { src, dst } => {
                let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, PROTO, 0, 0];
                p.extend_from_slice(&src.octets());
                p.extend_from_slice(&dst.octets());
                self.encode(&mut p);
                let len = p.len() as u16;
                p[2..4].copy_from_slice(&len.to_be_bytes());
                let sum = checksum(&p[..20]);
                p[10..12].copy_from_slice(&sum.to_be_bytes());
                p
            }
            Framing::V6 { src, dst } => {
                // Version 6, no traffic class or flow label; payload length set below; hop limit 64.
                let mut p = vec![0x60, 0, 0, 0, 0, 0, PROTO, 64];
                p.extend_from_slice(&src.octets());
                p.extend_from_slice(&dst.octets());
                self.encode(&mut p);
                let len = (p.len() - 40) as u16;
                p[4..6].copy_from_slice(&len.to_be_bytes());
                p
            }
        }
    }

    fn encode(&self, v: &mut Vec<u8>) {
        let kind = match self {
            Control::HostUpdate { relays, .. } if all_v4(relays) => 1,
            Control::HostUpdate { .. } => KIND_HOST_UPDATE_MIXED,
            Control::HostUpdateAck => 2,
            Control::HostQuery { vpn_ip: IpAddr::V4(_) } => 3,
            Control::HostQuery { vpn_ip: IpAddr::V6(_) } => KIND_HOST_QUERY_V6,
            Control::HostQueryReply { relays, .. } if !all_v4(relays) => KIND_HOST_QUERY_REPLY_MIXED,
            Control::HostQueryReply { vpn_ip: IpAddr::V4(_), .. } => 4,
            Control::HostQueryReply { vpn_ip: IpAddr::V6(_), .. } => KIND_HOST_QUERY_REPLY_V6,
            Control::HostPunch { vpn_ip: IpAddr::V4(_), .. } => 5,
            Control::HostPunch { vpn_ip: IpAddr::V6(_), .. } => KIND_HOST_PUNCH_V6,
            Control::RelayTo { peer: IpAddr::V4(_), .. } => 6,
            Control::RelayTo { peer: IpAddr::V6(_), .. } => KIND_RELAY_TO_V6,
            Control::RelayFrom { peer: IpAddr::V4(_), .. } => 10,
            Control::RelayFrom { peer: IpAddr::V6(_), .. } => KIND_RELAY_FROM_V6,
            Control::Ping => 7,
            Control::MembersQuery => 8,
            Control::MembersReply { .. } => 9,
            Control::PathProbe { .. } => 11,
            Control::PathAck { .. } => 12,
            Control::PingRequest { .. } => 13,
            Control::PingReply { .. } => 14,
        };
        v.extend_from_slice(&[kind, VERSION]);
        let mixed = matches!(kind, KIND_HOST_UPDATE_MIXED | KIND_HOST_QUERY_REPLY_MIXED);
        match self {
            Control::HostUpdate { addrs, relays } => {
                put_addrs(v, addrs);
                put_ips(v, relays, mixed);
            }
            Control::HostUpdateAck | Control::Ping | Control::MembersQuery => {}
            Control::HostQuery { vpn_ip } => put_ip(v, *vpn_ip),
            Control::HostQueryReply { vpn_ip, addrs, relays, cert } => {
                if mixed {
                    put_tagged_ip(v, *vpn_ip);
                } else {
                    put_ip(v, *vpn_ip);
                }
                put_addrs(v, addrs);
                put_ips(v, relays, mixed);
                put_bytes(v, cert);
            }
            Control::HostPunch { vpn_ip, addrs } => {
                put_ip(v, *vpn_ip);
                put_addrs(v, addrs);
            }
            Control::RelayTo { peer, datagram } | Control::RelayFrom { peer, datagram } => {
                put_ip(v, *peer);
                v.extend_from_slice(datagram);
            }
            Control::PathProbe { nonce } | Control::PathAck { nonce } => v.extend_from_slice(&nonce.to_be_bytes()),
            Control::PingRequest { nonce, probe } => {
                let (proto, port) = probe.to_wire();
                v.extend_from_slice(&nonce.to_be_bytes());
                v.push(proto);
                v.extend_from_slice(&port.to_be_bytes());
            }
            Control::PingReply { nonce, verdict } => {
                v.extend_from_slice(&nonce.to_be_bytes());
                v.push(verdict.to_wire());
            }
            Control::MembersReply { certs, last } => {
                v.push(u8::from(*last));
                v.push(certs.len() as u8);
                for c in certs {
                    put_bytes(v, c);
                }
            }
        }
    }

    pub fn decode(d: &[u8]) -> Result<Control, ControlError> {
        let mut r = Reader(d);
        let kind = r.u8()?;
        let version = r.u8()?;
        if version != VERSION {
            return Err(ControlError::Version(version));
        }
        Ok(match kind {
            1 | KIND_HOST_UPDATE_MIXED => {
                Control::HostUpdate { addrs: r.addrs()?, relays: r.ips(kind == KIND_HOST_UPDATE_MIXED)? }
            }
            2 => Control::HostUpdateAck,
            3 => Control::HostQuery { vpn_ip: IpAddr::V4(r.ip()?) },
            KIND_HOST_QUERY_V6 => Control::HostQuery { vpn_ip: IpAddr::V6(r.ip6()?) },
            4 | KIND_HOST_QUERY_REPLY_V6 | KIND_HOST_QUERY_REPLY_MIXED => Control::HostQueryReply {
                vpn_ip: match kind {
                    4 => IpAddr::V4(r.ip()?),
                    KIND_HOST_QUERY_REPLY_V6 => IpAddr::V6(r.ip6()?),
                    _ => r.tagged_ip()?,
                },
                addrs: r.addrs()?,
                relays: r.ips(kind == KIND_HOST_QUERY_REPLY_MIXED)?,
                cert: r.bytes()?.to_vec(),
            },
            5 => Control::HostPunch { vpn_ip: IpAddr::V4(r.ip()?), addrs: r.addrs()? },
            KIND_HOST_PUNCH_V6 => Control::HostPunch { vpn_ip: IpAddr::V6(r.ip6()?), addrs: r.addrs()? },
            6 => Control::RelayTo { peer: IpAddr::V4(r.ip()?), datagram: r.0.to_vec() },
            KIND_RELAY_TO_V6 => Control::RelayTo { peer: IpAddr::V6(r.ip6()?), datagram: r.0.to_vec() },
            10 => Control::RelayFrom { peer: IpAddr::V4(r.ip()?), datagram: r.0.to_vec() },
            KIND_RELAY_FROM_V6 => Control::RelayFrom { peer: IpAddr::V6(r.ip6()?), datagram: r.0.to_vec() },
            7 => Control::Ping,
            8 => Control::MembersQuery,
            9 => {
                let last = r.u8()? != 0;
                let n = r.u8()?;
                let certs = (0..n).map(|_| r.bytes().map(<[u8]>::to_vec)).collect::<Result<_, _>>()?;
                Control::MembersReply { certs, last }
            }
            11 => Control::PathProbe { nonce: r.u64()? },
            12 => Control::PathAck { nonce: r.u64()? },
            13 => {
                let nonce = r.u64()?;
                let proto = r.u8()?;
                let port = r.take(2)?;
                let port = u16::from_be_bytes([port[0], port[1]]);
                let probe = Probe::from_wire(proto, port).ok_or(ControlError::UnknownValue(proto))?;
                Control::PingRequest { nonce, probe }
            }
            14 => {
                let nonce = r.u64()?;
                let v = r.u8()?;
                Control::PingReply { nonce, verdict: ProbeVerdict::from_wire(v).ok_or(ControlError::UnknownValue(v))? }
            }
            k => return Err(ControlError::UnknownKind(k)),
        })
    }
}

fn put_addrs(v: &mut Vec<u8>, addrs: &[SocketAddr]) {
    let addrs = &addrs[..addrs.len().min(MAX_ADDRS)];
    v.push(addrs.len() as u8);
    for a in addrs {
        match a.ip() {
            IpAddr::V4(ip) => {
                v.push(4);
                v.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                v.push(6);
                v.extend_from_slice(&ip.octets());
            }
        }
        v.extend_from_slice(&a.port().to_be_bytes());
    }
}

/// An overlay address without a family byte (the message kind says which).
fn put_ip(v: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(ip) => v.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => v.extend_from_slice(&ip.octets()),
    }
}

/// An overlay address with a family byte (4 or 6), as the mixed kinds carry them.
fn put_tagged_ip(v: &mut Vec<u8>, ip: IpAddr) {
    v.push(if ip.is_ipv4() { 4 } else { 6 });
    put_ip(v, ip);
}

/// A list of overlay addresses: bare IPv4 ones (`tagged` false: the layout before IPv6, for
/// lists with only IPv4 addresses) or each with its family byte.
fn put_ips(v: &mut Vec<u8>, ips: &[IpAddr], tagged: bool) {
    let ips = &ips[..ips.len().min(MAX_ADDRS)];
    v.push(ips.len() as u8);
    for ip in ips {
        if tagged {
            put_tagged_ip(v, *ip);
        } else {
            put_ip(v, *ip);
        }
    }
}

fn all_v4(ips: &[IpAddr]) -> bool {
    ips.iter().take(MAX_ADDRS).all(IpAddr::is_ipv4)
}

fn put_bytes(v: &mut Vec<u8>, b: &[u8]) {
    v.extend_from_slice(&(b.len() as u16).to_be_bytes());
    v.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ControlError> {
        if self.0.len() < n {
            return Err(ControlError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, ControlError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, ControlError> {
        let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| ControlError::Truncated)?;
        Ok(u64::from_be_bytes(b))
    }
    fn ip(&mut self) -> Result<Ipv4Addr, ControlError> {
        let b = self.take(4)?;
        Ok(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
    fn ip6(&mut self) -> Result<Ipv6Addr, ControlError> {
        let b: [u8; 16] = self.take(16)?.try_into().map_err(|_| ControlError::Truncated)?;
        Ok(Ipv6Addr::from(b))
    }
    fn bytes(&mut self) -> Result<&'a [u8], ControlError> {
        let n = self.take(2)?;
        let n = usize::from(u16::from_be_bytes([n[0], n[1]]));
        self.take(n)
    }
    fn tagged_ip(&mut self) -> Result<IpAddr, ControlError> {
        match self.u8()? {
            4 => Ok(IpAddr::V4(self.ip()?)),
            6 => Ok(IpAddr::V6(self.ip6()?)),
            f => Err(ControlError::UnknownValue(f)),
        }
    }
    fn ips(&mut self, tagged: bool) -> Result<Vec<IpAddr>, ControlError> {
        let n = usize::from(self.u8()?);
        if n > MAX_ADDRS {
            return Err(ControlError::TooMany);
        }
        (0..n).map(|_| if tagged { self.tagged_ip() } else { self.ip().map(IpAddr::V4) }).collect()
    }
    fn addrs(&mut self) -> Result<Vec<SocketAddr>, ControlError> {
        let n = usize::from(self.u8()?);
        if n > MAX_ADDRS {
            return Err(ControlError::TooMany);
        }
        (0..n)
            .map(|_| {
                let ip = match self.u8()? {
                    4 => IpAddr::V4(self.ip()?),
                    6 => IpAddr::V6(self.ip6()?),
                    _ => return Err(ControlError::Truncated),
                };
                let p = self.take(2)?;
                Ok(SocketAddr::new(ip, u16::from_be_bytes([p[0], p[1]])))
            })
            .collect()
    }
}

/// The IPv4 header checksum (RFC 1071).
fn checksum(header: &[u8]) -> u16 {
    crate::packet::checksum_finish(crate::packet::checksum_add(0, header))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn v6(n: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, n)
    }

    fn every_kind() -> Vec<Control> {
        let a: SocketAddr = "198.18.0.1:4242".parse().unwrap();
        let b: SocketAddr = "[2001:db8::1]:9".parse().unwrap();
        let ip = IpAddr::V4(Ipv4Addr::new(100, 64, 0, 9));
        let ip6 = IpAddr::V6(v6(9));
        vec![
            Control::HostUpdate { addrs: vec![a, b], relays: vec![ip] },
            Control::HostUpdate { addrs: vec![a], relays: vec![ip, ip6] },
            Control::HostUpdateAck,
            Control::HostQuery { vpn_ip: ip },
            Control::HostQuery { vpn_ip: ip6 },
            Control::HostQueryReply { vpn_ip: ip, addrs: vec![a], relays: vec![], cert: vec![1, 2, 3] },
            Control::HostQueryReply { vpn_ip: ip6, addrs: vec![b, a], relays: vec![ip], cert: vec![7; 30] },
            Control::HostQueryReply { vpn_ip: ip, addrs: vec![a], relays: vec![ip6], cert: vec![8; 3] },
            Control::HostQueryReply { vpn_ip: ip6, addrs: vec![], relays: vec![ip6, ip], cert: vec![] },
            Control::HostPunch { vpn_ip: ip, addrs: vec![b] },
            Control::HostPunch { vpn_ip: ip6, addrs: vec![a, b] },
            Control::RelayTo { peer: ip, datagram: vec![4; 100] },
            Control::RelayTo { peer: ip6, datagram: vec![4; 10] },
            Control::RelayFrom { peer: ip, datagram: vec![5; 10] },
            Control::RelayFrom { peer: ip6, datagram: vec![] },
            Control::Ping,
            Control::MembersQuery,
            Control::MembersReply { certs: vec![vec![1], vec![2, 2]], last: true },
            Control::PathProbe { nonce: 7 },
            Control::PathAck { nonce: u64::MAX },
            Control::PingRequest { nonce: 3, probe: Probe::Tcp(4647) },
            Control::PingRequest { nonce: 4, probe: Probe::IcmpEcho },
            Control::PingReply { nonce: 5, verdict: ProbeVerdict::Drop },
        ]
    }

    #[test]
    fn round_trips_every_kind_in_both_framings() {
        let us = nets(&["100.64.0.1/10", "fd00::1/64"]);
        let them = nets(&["100.64.0.2/10", "fd00::2/64"]);
        let v4 = Framing::between(&them, &us).unwrap();
        let v6 = Framing::V6 { src: self::v6(2), dst: self::v6(1) };
        for c in every_kind() {
            let p = c.to_packet(v4);
            assert_eq!(checksum(&p[..20]), 0, "header checksum");
            let (src, payload) = payload_for(&p, &us).unwrap();
            assert_eq!((src, Control::decode(payload)), ("100.64.0.2".parse().unwrap(), Ok(c.clone())));
            assert!(payload_for(&p, &them).is_none(), "not for someone else");
            let p = c.to_packet(v6);
            let ip = crate::packet::Ipv6Packet::new(&p).unwrap();
            assert_eq!((ip.protocol(), ip.payload().len()), (PROTO, p.len() - 40));
            let (src, payload) = payload_for(&p, &us).unwrap();
            assert_eq!((src, Control::decode(payload)), (IpAddr::V6(self::v6(2)), Ok(c)));
            assert!(payload_for(&p, &them).is_none(), "not for someone else");
        }
    }

    /// IPv4 between peers that both have IPv4 (as before IPv6), IPv6 when either lacks it.
    #[test]
    fn framing_prefers_ipv4_and_falls_back_to_ipv6() {
        let dual = nets(&["100.64.0.1/10", "fd00::1/64"]);
        let v4_only = nets(&["100.64.0.3/10"]);
        let v6_only = nets(&["fd00::4/64"]);
        let v4 = |a: [u8; 4], b: [u8; 4]| Some(Framing::V4 { src: a.into(), dst: b.into() });
        assert_eq!(Framing::between(&dual, &v4_only), v4([100, 64, 0, 1], [100, 64, 0, 3]));
        assert_eq!(Framing::between(&dual, &v6_only), Some(Framing::V6 { src: v6(1), dst: v6(4) }));
        assert_eq!(Framing::between(&v6_only, &dual), Some(Framing::V6 { src: v6(4), dst: v6(1) }));
        assert_eq!(Framing::between(&v4_only, &v6_only), None, "no common family");
        assert_eq!(Framing::toward(&dual, IpAddr::V6(v6(7))), Some(Framing::V6 { src: v6(1), dst: v6(7) }));
        assert_eq!(Framing::toward(&v6_only, "100.64.0.1".parse().unwrap()), None);
    }

    #[test]
    fn malformed_never_panics() {
        let us = nets(&["127.0.0.1/8"]);
        let f = Framing::V4 { src: Ipv4Addr::LOCALHOST, dst: Ipv4Addr::LOCALHOST };
        for c in every_kind() {
            let p = c.to_packet(f);
            let payload = payload_for(&p, &us).unwrap().1;
            for n in 0..payload.len() {
                let _ = Control::decode(&payload[..n]);
            }
        }
        assert_eq!(Control::decode(&[42, 1]), Err(ControlError::UnknownKind(42)));
        assert_eq!(Control::decode(&[0x27, 1]), Err(ControlError::UnknownKind(0x27)));
        assert_eq!(Control::decode(&[1, 2]), Err(ControlError::Version(2)));
        assert_eq!(Control::decode(&[1, 1, 200]), Err(ControlError::TooMany));
        // A family byte that is neither 4 nor 6.
        assert_eq!(
            Control::decode(&[KIND_HOST_UPDATE_MIXED, 1, 0, 1, 5, 1, 2, 3, 4]),
            Err(ControlError::UnknownValue(5))
        );
        let ping = [13, 1, 0, 0, 0, 0, 0, 0, 0, 1, 132, 0, 9];
        assert_eq!(Control::decode(&ping), Err(ControlError::UnknownValue(132)), "SCTP probes are unknown");
        assert_eq!(Control::decode(&[14, 1, 0, 0, 0, 0, 0, 0, 0, 1, 7]), Err(ControlError::UnknownValue(7)));
        // An IPv6 packet of another next header, or too short, is no control message.
        assert!(
            payload_for(&crate::packet::testpkt::ipv6(v6(2), v6(1), 17, &[1, 1]), &nets(&["fd00::1/64"])).is_none()
        );
        assert!(payload_for(&[0x60, 0, 0], &nets(&["fd00::1/64"])).is_none());
    }

    /// Messages about IPv4 identities keep the kinds and layouts of cos-mesh before IPv6, so
    /// an older node reads them; those about IPv6 ones use kinds it counts as malformed.
    #[test]
    fn messages_about_ipv4_keep_the_previous_layout() {
        let ip = IpAddr::V4(Ipv4Addr::new(100, 64, 0, 9));
        let ip6 = IpAddr::V6(v6(9));
        let f = Framing::V4 { src: Ipv4Addr::new(100, 64, 0, 2), dst: Ipv4Addr::new(100, 64, 0, 1) };
        let body = |c: Control| c.to_packet(f)[20..].to_vec();
        assert_eq!(body(Control::HostQuery { vpn_ip: ip }), [3, 1, 100, 64, 0, 9]);
        assert_eq!(body(Control::HostPunch { vpn_ip: ip, addrs: vec![] }), [5, 1, 100, 64, 0, 9, 0]);
        assert_eq!(body(Control::RelayTo { peer: ip, datagram: vec![7] }), [6, 1, 100, 64, 0, 9, 7]);
        assert_eq!(body(Control::RelayFrom { peer: ip, datagram: vec![7] }), [10, 1, 100, 64, 0, 9, 7]);
        assert_eq!(body(Control::HostUpdate { addrs: vec![], relays: vec![ip] }), [1, 1, 0, 1, 100, 64, 0, 9]);
        let reply = Control::HostQueryReply { vpn_ip: ip, addrs: vec![], relays: vec![ip], cert: vec![] };
        assert_eq!(body(reply), [4, 1, 100, 64, 0, 9, 0, 1, 100, 64, 0, 9, 0, 0]);

        let v6_query = body(Control::HostQuery { vpn_ip: ip6 });
        assert_eq!((v6_query[..2].to_vec(), v6_query.len()), (vec![KIND_HOST_QUERY_V6, 1], 2 + 16));
        assert_eq!(Control::decode(&v6_query[..1 + 16]), Err(ControlError::Truncated));
        let kind = |c: Control| body(c)[0];
        assert_eq!(kind(Control::HostPunch { vpn_ip: ip6, addrs: vec![] }), KIND_HOST_PUNCH_V6);
        assert_eq!(kind(Control::RelayTo { peer: ip6, datagram: vec![] }), KIND_RELAY_TO_V6);
        assert_eq!(kind(Control::RelayFrom { peer: ip6, datagram: vec![] }), KIND_RELAY_FROM_V6);
        let update = body(Control::HostUpdate { addrs: vec![], relays: vec![ip6] });
        assert_eq!(update[..5], [KIND_HOST_UPDATE_MIXED, 1, 0, 1, 6]);
        let reply = body(Control::HostQueryReply { vpn_ip: ip, addrs: vec![], relays: vec![ip6], cert: vec![] });
        assert_eq!(reply[..7], [KIND_HOST_QUERY_REPLY_MIXED, 1, 4, 100, 64, 0, 9]);
    }
}
