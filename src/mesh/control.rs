//! Control messages that travel inside tunnels: lighthouse registration and queries, punch
//! requests, relayed datagrams and member lists.
//!
//! boringtun only delivers IP packets, so a control message is an IPv4 packet between the two
//! peers' overlay IPs with protocol 253 (RFC 3692, "for experimentation"). The core consumes
//! such packets addressed to itself before the firewall or the TUN see them, and only from a
//! peer whose certificate IP is the packet's source: nothing in the clear, nothing spoofable.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Node → lighthouse: where I can be reached, and which relays serve me.
    HostUpdate {
        addrs: Vec<SocketAddr>,
        relays: Vec<Ipv4Addr>,
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
        relays: Vec<Ipv4Addr>,
        cert: Vec<u8>,
    },
    /// Lighthouse → node: `vpn_ip` is about to contact you from `addrs`; punch toward them.
    HostPunch {
        vpn_ip: Ipv4Addr,
        addrs: Vec<SocketAddr>,
    },
    /// Node → relay: forward this datagram to `peer`. It is a WireGuard (or Hello) datagram
    /// between the two end peers, so the relay sees only ciphertext.
    RelayTo {
        peer: Ipv4Addr,
        datagram: Vec<u8>,
    },
    /// Relay → node: this datagram comes from `peer`.
    RelayFrom {
        peer: Ipv4Addr,
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

/// If `packet` is a control message for `us`, its payload.
pub fn payload_for(packet: &[u8], us: Ipv4Addr) -> Option<&[u8]> {
    let ip = crate::packet::Ipv4Packet::new(packet).ok()?;
    (ip.protocol() == PROTO && ip.dst() == us && ip.header_len() == 20).then(|| ip.payload())
}

impl Control {
    /// The whole IPv4 packet from `src` to `dst` carrying this message.
    pub fn to_packet(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
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

    fn encode(&self, v: &mut Vec<u8>) {
        let kind = match self {
            Control::HostUpdate { .. } => 1,
            Control::HostUpdateAck => 2,
            Control::HostQuery { vpn_ip: IpAddr::V4(_) } => 3,
            Control::HostQuery { vpn_ip: IpAddr::V6(_) } => KIND_HOST_QUERY_V6,
            Control::HostQueryReply { vpn_ip: IpAddr::V4(_), .. } => 4,
            Control::HostQueryReply { vpn_ip: IpAddr::V6(_), .. } => KIND_HOST_QUERY_REPLY_V6,
            Control::HostPunch { .. } => 5,
            Control::RelayTo { .. } => 6,
            Control::RelayFrom { .. } => 10,
            Control::Ping => 7,
            Control::MembersQuery => 8,
            Control::MembersReply { .. } => 9,
            Control::PathProbe { .. } => 11,
            Control::PathAck { .. } => 12,
            Control::PingRequest { .. } => 13,
            Control::PingReply { .. } => 14,
        };
        v.extend_from_slice(&[kind, VERSION]);
        match self {
            Control::HostUpdate { addrs, relays } => {
                put_addrs(v, addrs);
                put_ips(v, relays);
            }
            Control::HostUpdateAck | Control::Ping | Control::MembersQuery => {}
            Control::HostQuery { vpn_ip } => put_ip(v, *vpn_ip),
            Control::HostQueryReply { vpn_ip, addrs, relays, cert } => {
                put_ip(v, *vpn_ip);
                put_addrs(v, addrs);
                put_ips(v, relays);
                put_bytes(v, cert);
            }
            Control::HostPunch { vpn_ip, addrs } => {
                v.extend_from_slice(&vpn_ip.octets());
                put_addrs(v, addrs);
            }
            Control::RelayTo { peer, datagram } | Control::RelayFrom { peer, datagram } => {
                v.extend_from_slice(&peer.octets());
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
            1 => Control::HostUpdate { addrs: r.addrs()?, relays: r.ips()? },
            2 => Control::HostUpdateAck,
            3 => Control::HostQuery { vpn_ip: IpAddr::V4(r.ip()?) },
            KIND_HOST_QUERY_V6 => Control::HostQuery { vpn_ip: IpAddr::V6(r.ip6()?) },
            4 | KIND_HOST_QUERY_REPLY_V6 => Control::HostQueryReply {
                vpn_ip: if kind == 4 { IpAddr::V4(r.ip()?) } else { IpAddr::V6(r.ip6()?) },
                addrs: r.addrs()?,
                relays: r.ips()?,
                cert: r.bytes()?.to_vec(),
            },
            5 => Control::HostPunch { vpn_ip: r.ip()?, addrs: r.addrs()? },
            6 => Control::RelayTo { peer: r.ip()?, datagram: r.0.to_vec() },
            10 => Control::RelayFrom { peer: r.ip()?, datagram: r.0.to_vec() },
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

fn put_ips(v: &mut Vec<u8>, ips: &[Ipv4Addr]) {
    let ips = &ips[..ips.len().min(MAX_ADDRS)];
    v.push(ips.len() as u8);
    for ip in ips {
        v.extend_from_slice(&ip.octets());
    }
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
    fn ips(&mut self) -> Result<Vec<Ipv4Addr>, ControlError> {
        let n = usize::from(self.u8()?);
        if n > MAX_ADDRS {
            return Err(ControlError::TooMany);
        }
        (0..n).map(|_| self.ip()).collect()
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

    #[test]
    fn round_trips_every_kind() {
        let a: SocketAddr = "198.18.0.1:4242".parse().unwrap();
        let b: SocketAddr = "[2001:db8::1]:9".parse().unwrap();
        let ip = Ipv4Addr::new(100, 64, 0, 9);
        let all = vec![
            Control::HostUpdate { addrs: vec![a, b], relays: vec![ip] },
            Control::HostUpdateAck,
            Control::HostQuery { vpn_ip: IpAddr::V4(ip) },
            Control::HostQuery { vpn_ip: IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 9)) },
            Control::HostQueryReply { vpn_ip: IpAddr::V4(ip), addrs: vec![a], relays: vec![], cert: vec![1, 2, 3] },
            Control::HostQueryReply {
                vpn_ip: IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 9)),
                addrs: vec![b, a],
                relays: vec![ip],
                cert: vec![7; 30],
            },
            Control::HostPunch { vpn_ip: ip, addrs: vec![b] },
            Control::RelayTo { peer: ip, datagram: vec![4; 100] },
            Control::RelayFrom { peer: ip, datagram: vec![5; 10] },
            Control::Ping,
            Control::MembersQuery,
            Control::MembersReply { certs: vec![vec![1], vec![2, 2]], last: true },
            Control::PathProbe { nonce: 7 },
            Control::PathAck { nonce: u64::MAX },
            Control::PingRequest { nonce: 3, probe: Probe::Tcp(4647) },
            Control::PingRequest { nonce: 4, probe: Probe::IcmpEcho },
            Control::PingReply { nonce: 5, verdict: ProbeVerdict::Drop },
        ];
        let us = Ipv4Addr::new(100, 64, 0, 1);
        for c in all {
            let p = c.to_packet(Ipv4Addr::new(100, 64, 0, 2), us);
            assert_eq!(checksum(&p[..20]), 0, "header checksum");
            let payload = payload_for(&p, us).unwrap();
            assert_eq!(Control::decode(payload), Ok(c));
            assert!(payload_for(&p, Ipv4Addr::new(100, 64, 0, 3)).is_none(), "not for someone else");
        }
    }

    #[test]
    fn malformed_never_panics() {
        let good = Control::HostQueryReply {
            vpn_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            addrs: vec!["1.2.3.4:5".parse().unwrap()],
            relays: vec![Ipv4Addr::LOCALHOST],
            cert: vec![9; 40],
        }
        .to_packet(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST);
        let payload = &good[20..];
        for n in 0..payload.len() {
            let _ = Control::decode(&payload[..n]);
        }
        assert_eq!(Control::decode(&[42, 1]), Err(ControlError::UnknownKind(42)));
        assert_eq!(Control::decode(&[1, 2]), Err(ControlError::Version(2)));
        assert_eq!(Control::decode(&[1, 1, 200]), Err(ControlError::TooMany));
        let ping = [13, 1, 0, 0, 0, 0, 0, 0, 0, 1, 132, 0, 9];
        assert_eq!(Control::decode(&ping), Err(ControlError::UnknownValue(132)), "SCTP probes are unknown");
        assert_eq!(Control::decode(&[14, 1, 0, 0, 0, 0, 0, 0, 0, 1, 7]), Err(ControlError::UnknownValue(7)));
    }

    #[test]
    fn queries_about_ipv4_keep_the_previous_layout() {
        // Kind 3, version 1, four address bytes: what cos-mesh before IPv6 sends and reads.
        let q = Control::HostQuery { vpn_ip: IpAddr::V4(Ipv4Addr::new(100, 64, 0, 9)) };
        let p = q.to_packet(Ipv4Addr::new(100, 64, 0, 2), Ipv4Addr::new(100, 64, 0, 1));
        assert_eq!(&p[20..], &[3, 1, 100, 64, 0, 9]);
        let v6 = Control::HostQuery { vpn_ip: IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 9)) };
        let p = v6.to_packet(Ipv4Addr::new(100, 64, 0, 2), Ipv4Addr::new(100, 64, 0, 1));
        assert_eq!(p[20..22], [KIND_HOST_QUERY_V6, 1]);
        assert_eq!(p.len(), 20 + 2 + 16);
        assert_eq!(Control::decode(&p[20..21 + 16]), Err(ControlError::Truncated));
    }
}
