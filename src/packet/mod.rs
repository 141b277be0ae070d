//! Zero-copy views of the IP packets that cross the tunnel, just deep enough for the firewall:
//! addresses, protocol, ports and the fragment flags. Every accessor is bounds-checked once at
//! construction, so a truncated or lying header is an error, never a panic.

mod reject;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

pub use reject::{MAX_REJECT_LEN, RejectError, build_reject};

/// IP protocol numbers the firewall distinguishes.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// Why a packet could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PacketError {
    #[error("empty packet")]
    Empty,
    #[error("IP version {0} is not 4 or 6")]
    BadVersion(u8),
    #[error("packet shorter than its IP header")]
    TruncatedIpHeader,
    #[error("IP header length or total length is inconsistent with the packet")]
    BadLength,
    #[error("first fragment too short to hold the transport ports")]
    TruncatedTransport,
    #[error("IPv6 extension header chain is truncated or too long")]
    BadExtensionHeaders,
}

/// A validated IPv4 header (RFC 791) and the bytes it covers.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<'a> {
    bytes: &'a [u8],
}

impl<'a> Ipv4Packet<'a> {
    /// Checks version, header length and total length against the buffer. Trailing bytes past
    /// the total length (link padding) are ignored.
    pub fn new(bytes: &'a [u8]) -> Result<Self, PacketError> {
        if bytes.len() < 20 {
            return Err(PacketError::TruncatedIpHeader);
        }
        if bytes[0] >> 4 != 4 {
            return Err(PacketError::BadVersion(bytes[0] >> 4));
        }
        let ihl = usize::from(bytes[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        if ihl < 20 || total < ihl || total > bytes.len() {
            return Err(PacketError::BadLength);
        }
        Ok(Ipv4Packet { bytes: &bytes[..total] })
    }
    pub fn header_len(&self) -> usize {
        usize::from(self.bytes[0] & 0x0f) * 4
    }
    pub fn header(&self) -> &'a [u8] {
        &self.bytes[..self.header_len()]
    }
    pub fn protocol(&self) -> u8 {
        self.bytes[9]
    }
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.bytes[12], self.bytes[13], self.bytes[14], self.bytes[15])
    }
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.bytes[16], self.bytes[17], self.bytes[18], self.bytes[19])
    }
    /// Fragment offset in 8-byte units; non-zero means a non-first fragment without ports.
    pub fn fragment_offset(&self) -> u16 {
        u16::from_be_bytes([self.bytes[6], self.bytes[7]]) & 0x1fff
    }
    pub fn more_fragments(&self) -> bool {
        self.bytes[6] & 0x20 != 0
    }
    /// The first (or only) fragment: the one that carries the transport header.
    pub fn is_first_fragment(&self) -> bool {
        self.fragment_offset() == 0
    }
    /// The transport payload (bytes after the header, up to the total length).
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[self.header_len()..]
    }
}

/// A validated IPv6 header (RFC 8200) with its extension-header chain walked to the transport.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<'a> {
    bytes: &'a [u8],
    protocol: u8,
    transport_offset: usize,
    fragment_offset: u16,
}

impl<'a> Ipv6Packet<'a> {
    /// Extension headers walked before giving up; real traffic has one or two.
    const MAX_EXTENSIONS: usize = 8;

    pub fn new(bytes: &'a [u8]) -> Result<Self, PacketError> {
        if bytes.len() < 40 {
            return Err(PacketError::TruncatedIpHeader);
        }
        if bytes[0] >> 4 != 6 {
            return Err(PacketError::BadVersion(bytes[0] >> 4));
        }
        let total = 40 + usize::from(u16::from_be_bytes([bytes[4], bytes[5]]));
        if total > bytes.len() {
            return Err(PacketError::BadLength);
        }
        let bytes = &bytes[..total];
        let mut next = bytes[6];
        let mut offset = 40;
        let mut fragment_offset = 0;
        for _ in 0..Self::MAX_EXTENSIONS {
            match next {
                // Hop-by-hop, routing, destination options: length in 8-octet units after the first 8.
                0 | 43 | 60 => {
                    let h = bytes.get(offset..offset + 2).ok_or(PacketError::BadExtensionHeaders)?;
                    next = h[0];
                    offset += 8 + usize::from(h[1]) * 8;
                }
                44 => {
                    let h = bytes.get(offset..offset + 8).ok_or(PacketError::BadExtensionHeaders)?;
                    next = h[0];
                    fragment_offset = u16::from_be_bytes([h[2], h[3]]) >> 3;
                    offset += 8;
                }
                _ => {
                    if offset > bytes.len() {
                        return Err(PacketError::BadExtensionHeaders);
                    }
                    return Ok(Ipv6Packet { bytes, protocol: next, transport_offset: offset, fragment_offset });
                }
            }
        }
        Err(PacketError::BadExtensionHeaders)
    }
    /// The upper-layer protocol after the extension headers.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }
    pub fn src(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.bytes[8..24]);
        Ipv6Addr::from(a)
    }
    pub fn dst(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.bytes[24..40]);
        Ipv6Addr::from(a)
    }
    pub fn fragment_offset(&self) -> u16 {
        self.fragment_offset
    }
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[self.transport_offset..]
    }
}

/// The start of a TCP, UDP or ICMP header, as far as the firewall reads it. Every accessor
/// returns `None` when the header is too short or belongs to another protocol.
#[derive(Debug, Clone, Copy)]
pub struct Transport<'a> {
    proto: u8,
    bytes: &'a [u8],
}

impl<'a> Transport<'a> {
    /// `payload` is the IP payload of a first (or only) fragment.
    pub fn new(proto: u8, payload: &'a [u8]) -> Self {
        Transport { proto, bytes: payload }
    }
    /// `(source, destination)` ports of TCP or UDP.
    pub fn ports(&self) -> Option<(u16, u16)> {
        if self.proto != PROTO_TCP && self.proto != PROTO_UDP {
            return None;
        }
        let p = self.bytes.get(..4)?;
        Some((u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]])))
    }
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10).
    pub fn tcp_flags(&self) -> Option<u8> {
        if self.proto != PROTO_TCP {
            return None;
        }
        self.bytes.get(13).copied()
    }
    /// ICMP or ICMPv6 `(type, code)`.
    pub fn icmp_type_code(&self) -> Option<(u8, u8)> {
        if self.proto != PROTO_ICMP && self.proto != PROTO_ICMPV6 {
            return None;
        }
        Some((*self.bytes.first()?, *self.bytes.get(1)?))
    }
}

/// What the firewall matches on, oriented from this node's point of view: for an inbound packet
/// the local side is the destination, for an outbound one the source. Replies therefore produce
/// the same `Flow` as the packets that opened the connection, which is what conntrack keys on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub proto: u8,
    pub local_ip: IpAddr,
    pub remote_ip: IpAddr,
    /// 0 for protocols without ports and for non-first fragments.
    pub local_port: u16,
    pub remote_port: u16,
    /// A non-first fragment: no transport header, matches only `port: fragment` or `port: any`.
    pub fragment: bool,
}

impl Flow {
    /// Reads the flow of `packet`; `inbound` says whether it arrived from the tunnel.
    pub fn parse(packet: &[u8], inbound: bool) -> Result<Flow, PacketError> {
        let (proto, src, dst, fragment_offset, payload) = match packet.first().map(|b| b >> 4) {
            None => return Err(PacketError::Empty),
            Some(4) => {
                let p = Ipv4Packet::new(packet)?;
                (p.protocol(), IpAddr::V4(p.src()), IpAddr::V4(p.dst()), p.fragment_offset(), p.payload())
            }
            Some(6) => {
                let p = Ipv6Packet::new(packet)?;
                (p.protocol(), IpAddr::V6(p.src()), IpAddr::V6(p.dst()), p.fragment_offset(), p.payload())
            }
            Some(v) => return Err(PacketError::BadVersion(v)),
        };
        let fragment = fragment_offset != 0;
        let (mut src_port, mut dst_port) = (0, 0);
        if !fragment && (proto == PROTO_TCP || proto == PROTO_UDP) {
            (src_port, dst_port) = Transport::new(proto, payload).ports().ok_or(PacketError::TruncatedTransport)?;
        }
        Ok(if inbound {
            Flow { proto, local_ip: dst, remote_ip: src, local_port: dst_port, remote_port: src_port, fragment }
        } else {
            Flow { proto, local_ip: src, remote_ip: dst, local_port: src_port, remote_port: dst_port, fragment }
        })
    }
}

/// Internet checksum (RFC 1071) over `data`, continuing from a partial sum.
pub(crate) fn checksum_add(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// Folds a partial sum into the final one's-complement checksum.
pub(crate) fn checksum_finish(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
pub(crate) mod testpkt;

#[cfg(test)]
mod tests {
    use super::testpkt::*;
    use super::*;

    #[test]
    fn reads_flows_oriented_local_remote() {
        let a = Ipv4Addr::new(100, 64, 0, 1);
        let b = Ipv4Addr::new(100, 64, 0, 2);
        let pkt = ipv4_tcp(a, b, 40000, 4646, 0x02, &[]);
        let f = Flow::parse(&pkt, true).unwrap();
        assert_eq!((f.local_ip, f.local_port, f.remote_ip, f.remote_port), (b.into(), 4646, a.into(), 40000));
        let f = Flow::parse(&pkt, false).unwrap();
        assert_eq!((f.local_ip, f.local_port, f.remote_port, f.proto, f.fragment), (a.into(), 40000, 4646, 6, false));
        let udp = ipv4_udp(a, b, 5000, 4648, &[0; 8]);
        assert_eq!(Flow::parse(&udp, true).unwrap().local_port, 4648);
        let ping = ipv4_icmp_echo(a, b);
        let f = Flow::parse(&ping, true).unwrap();
        assert_eq!((f.proto, f.local_port, f.remote_port), (PROTO_ICMP, 0, 0));
    }

    #[test]
    fn transport_views() {
        let t = Transport::new(PROTO_TCP, &[0x9c, 0x40, 0x12, 0x36, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x12]);
        assert_eq!((t.ports(), t.tcp_flags(), t.icmp_type_code()), (Some((40000, 4662)), Some(0x12), None));
        assert_eq!(Transport::new(PROTO_TCP, &[0, 1, 0, 2]).tcp_flags(), None, "truncated");
        assert_eq!(Transport::new(PROTO_UDP, &[0, 1, 0]).ports(), None, "truncated");
        let i = Transport::new(PROTO_ICMP, &[3, 13]);
        assert_eq!((i.ports(), i.icmp_type_code()), (None, Some((3, 13))));
        assert_eq!(Transport::new(PROTO_ICMPV6, &[128]).icmp_type_code(), None);
    }

    #[test]
    fn fragments() {
        let a = Ipv4Addr::new(10, 0, 0, 1);
        let b = Ipv4Addr::new(10, 0, 0, 2);
        let mut first = ipv4_udp(a, b, 5000, 4648, &[0; 8]);
        first[6] = 0x20; // MF, offset 0: the first fragment carries ports
        let f = Flow::parse(&first, true).unwrap();
        assert_eq!((f.fragment, f.local_port), (false, 4648));
        let mut later = ipv4_udp(a, b, 5000, 4648, &[0; 8]);
        later[6] = 0x00;
        later[7] = 0xaf; // offset 175*8: the payload's first bytes are not ports
        set_ipv4_checksum(&mut later);
        let f = Flow::parse(&later, true).unwrap();
        assert_eq!((f.fragment, f.local_port, f.remote_port), (true, 0, 0));
    }

    #[test]
    fn ipv6_with_fragment_header() {
        let src: Ipv6Addr = "fd00::1".parse().unwrap();
        let dst: Ipv6Addr = "fd00::2".parse().unwrap();
        let pkt = ipv6(src, dst, PROTO_UDP, &[0x13, 0x88, 0x12, 0x28, 0, 8, 0, 0]);
        let f = Flow::parse(&pkt, true).unwrap();
        assert_eq!((f.remote_port, f.local_port, f.remote_ip), (5000, 4648, IpAddr::V6(src)));
        // Fragment header (44) with offset 8, then UDP continuation bytes.
        let mut body = vec![PROTO_UDP, 0, 0, 8 << 3, 0, 0, 0, 1];
        body.extend_from_slice(&[9; 16]);
        let frag = ipv6(src, dst, 44, &body);
        let f = Flow::parse(&frag, true).unwrap();
        assert_eq!((f.proto, f.fragment, f.local_port), (PROTO_UDP, true, 0));
    }

    #[test]
    fn truncated_and_lying_headers_are_errors() {
        let good = ipv4_tcp(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 1, 2, 0x02, &[]);
        let mut lying_total = good.clone();
        lying_total[3] = 200;
        let mut lying_ihl = good.clone();
        lying_ihl[0] = 0x4f;
        let mut short_ihl = good.clone();
        short_ihl[0] = 0x44;
        let mut v6_lying = ipv6("::1".parse().unwrap(), "::1".parse().unwrap(), PROTO_TCP, &[0; 20]);
        v6_lying[5] = 200;
        let v6_hop_loop = ipv6("::1".parse().unwrap(), "::1".parse().unwrap(), 0, &[0, 200, 0, 0, 0, 0, 0, 0]);
        let cases: Vec<(&str, Vec<u8>, PacketError)> = vec![
            ("empty", vec![], PacketError::Empty),
            ("version 5", vec![0x50; 40], PacketError::BadVersion(5)),
            ("short v4", good[..19].to_vec(), PacketError::TruncatedIpHeader),
            ("total > buffer", lying_total, PacketError::BadLength),
            ("ihl > total", lying_ihl, PacketError::BadLength),
            ("ihl < 5", short_ihl, PacketError::BadLength),
            ("no ports", ipv4_raw(PROTO_TCP, &[0, 1]), PacketError::TruncatedTransport),
            ("short v6", vec![0x60; 39], PacketError::TruncatedIpHeader),
            ("v6 payload len", v6_lying, PacketError::BadLength),
            ("v6 ext past end", v6_hop_loop, PacketError::BadExtensionHeaders),
        ];
        for (name, pkt, want) in cases {
            assert_eq!(Flow::parse(&pkt, true), Err(want), "{name}");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u32 = 0x1234_5678;
        let mut buf = [0u8; 80];
        for _ in 0..20_000 {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            buf[0] = if x & 1 == 0 { 0x45 } else { 0x60 };
            let len = (x as usize >> 8) % buf.len();
            let _ = Flow::parse(&buf[..len], true);
            let mut out = [0u8; 128];
            let _ = build_reject(&buf[..len], &mut out);
        }
    }
}
