//! The answer to a rejected packet, as Nebula's `reject` action sends it: a TCP RST for TCP,
//! otherwise an ICMP destination-unreachable, administratively prohibited (IPv4: type 3 code
//! 13; IPv6: ICMPv6 type 1 code 1). Built into a caller-owned buffer so rejecting allocates
//! nothing.

use std::net::{Ipv4Addr, Ipv6Addr};

use thiserror::Error;

use super::{
    Ipv4Packet, Ipv6Packet, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PacketError, Transport, checksum_add, checksum_finish,
};

/// Why no reject packet was built; the caller then simply drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RejectError {
    #[error("cannot parse the rejected packet: {0}")]
    Packet(#[from] PacketError),
    #[error("reject replies are built for IPv4 and IPv6 only")]
    NotIp,
    #[error("a non-first fragment gets no reply (RFC 1812 4.3.2.7)")]
    Fragment,
    #[error("never answer a TCP RST or an ICMP error with another error")]
    WouldAnswerError,
    #[error("output buffer too small: need {0} bytes")]
    BufferTooSmall(usize),
}

/// How much of the rejected IPv6 packet an ICMPv6 error quotes: its header, extension headers
/// and the start of the transport header, enough for the sender to match its socket (RFC 4443
/// asks for as much as fits in 1280 bytes; a short quote keeps the reply small).
const V6_QUOTE: usize = 128;
/// Largest reply: IPv6 header (40) + ICMPv6 header (8) + the quote (IPv4's is smaller: 20 + 8 +
/// a header of at most 60 + 8 payload bytes).
pub const MAX_REJECT_LEN: usize = IPV6_HEADER + 8 + V6_QUOTE;
const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const TCP_HEADER: usize = 20;
/// ICMPv6 types below 128 are errors (RFC 4443 2.1), never answered with another.
const ICMPV6_FIRST_INFO: u8 = 128;

/// Writes the reply to `original` into `out` and returns its length. The reply goes back to the
/// sender: its source is the original destination.
pub fn build_reject(original: &[u8], out: &mut [u8]) -> Result<usize, RejectError> {
    match original.first().map(|b| b >> 4) {
        None => Err(PacketError::Empty.into()),
        Some(4) => reject_v4(original, out),
        Some(6) => reject_v6(original, out),
        Some(_) => Err(RejectError::NotIp),
    }
}

fn reject_v4(original: &[u8], out: &mut [u8]) -> Result<usize, RejectError> {
    let ip = Ipv4Packet::new(original)?;
    if ip.fragment_offset() != 0 {
        return Err(RejectError::Fragment);
    }
    let payload = ip.payload();
    if ip.protocol() == PROTO_TCP && payload.len() >= TCP_HEADER {
        return tcp_rst(Ends::V4 { src: ip.src(), dst: ip.dst() }, payload, out);
    }
    // ICMP error types: destination unreachable, source quench, redirect, time exceeded, parameter problem.
    let icmp = Transport::new(ip.protocol(), payload).icmp_type_code();
    if ip.protocol() == PROTO_ICMP && matches!(icmp, None | Some((3 | 4 | 5 | 11 | 12, _))) {
        return Err(RejectError::WouldAnswerError);
    }
    icmp_prohibited(&ip, out)
}

fn reject_v6(original: &[u8], out: &mut [u8]) -> Result<usize, RejectError> {
    let ip = Ipv6Packet::new(original)?;
    if ip.fragment_offset() != 0 {
        return Err(RejectError::Fragment);
    }
    let ends = Ends::V6 { src: ip.src(), dst: ip.dst() };
    let payload = ip.payload();
    if ip.protocol() == PROTO_TCP && payload.len() >= TCP_HEADER {
        return tcp_rst(ends, payload, out);
    }
    let icmp = Transport::new(ip.protocol(), payload).icmp_type_code();
    if ip.protocol() == PROTO_ICMPV6 && icmp.is_none_or(|(t, _)| t < ICMPV6_FIRST_INFO) {
        return Err(RejectError::WouldAnswerError);
    }
    let quoted = &original[..original.len().min(V6_QUOTE)];
    let total = IPV6_HEADER + 8 + quoted.len();
    if out.len() < total {
        return Err(RejectError::BufferTooSmall(total));
    }
    ends.write_header(out, total, PROTO_ICMPV6);
    let icmp = &mut out[IPV6_HEADER..total];
    // Destination unreachable (1), communication administratively prohibited (1).
    icmp[..8].copy_from_slice(&[1, 1, 0, 0, 0, 0, 0, 0]);
    icmp[8..].copy_from_slice(quoted);
    let c = checksum_finish(checksum_add(ends.pseudo_header(PROTO_ICMPV6, icmp.len()), icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Ok(total)
}

/// The two ends of the rejected packet: the reply goes from `dst` back to `src`.
#[derive(Clone, Copy)]
enum Ends {
    V4 { src: Ipv4Addr, dst: Ipv4Addr },
    V6 { src: Ipv6Addr, dst: Ipv6Addr },
}

impl Ends {
    fn header_len(self) -> usize {
        match self {
            Ends::V4 { .. } => IPV4_HEADER,
            Ends::V6 { .. } => IPV6_HEADER,
        }
    }

    /// The reply's IP header, `total` bytes in all, carrying `proto`.
    fn write_header(self, out: &mut [u8], total: usize, proto: u8) {
        match self {
            Ends::V4 { src, dst } => {
                out[..20].copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                out[12..16].copy_from_slice(&dst.octets());
                out[16..20].copy_from_slice(&src.octets());
                let c = checksum_finish(checksum_add(0, &out[..20]));
                out[10..12].copy_from_slice(&c.to_be_bytes());
            }
            Ends::V6 { src, dst } => {
                out[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, proto, 64]);
                out[4..6].copy_from_slice(&((total - IPV6_HEADER) as u16).to_be_bytes());
                out[8..24].copy_from_slice(&dst.octets());
                out[24..40].copy_from_slice(&src.octets());
            }
        }
    }

    /// The checksum's pseudo-header for `len` bytes of `proto` in the reply (RFC 9293 3.1,
    /// RFC 8200 8.1).
    fn pseudo_header(self, proto: u8, len: usize) -> u32 {
        let sum = match self {
            Ends::V4 { src, dst } => checksum_add(checksum_add(0, &dst.octets()), &src.octets()),
            Ends::V6 { src, dst } => checksum_add(checksum_add(0, &dst.octets()), &src.octets()),
        };
        sum + u32::from(proto) + len as u32
    }
}

/// RFC 9293 3.10.7.1: with ACK set, RST carries seq = their ack; otherwise seq 0 and an ACK of
/// everything they sent (payload plus SYN and FIN, which each count as one).
fn tcp_rst(ends: Ends, tcp: &[u8], out: &mut [u8]) -> Result<usize, RejectError> {
    let flags = tcp[13];
    if flags & 0x04 != 0 {
        return Err(RejectError::WouldAnswerError);
    }
    let h = ends.header_len();
    let total = h + TCP_HEADER;
    if out.len() < total {
        return Err(RejectError::BufferTooSmall(total));
    }
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    let data_len = tcp.len().saturating_sub(data_offset.max(20)) as u32;
    let their_seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let their_ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    let (seq, ack, out_flags) = if flags & 0x10 != 0 {
        (their_ack, 0, 0x04)
    } else {
        let syn_fin = u32::from(flags & 0x02 != 0) + u32::from(flags & 0x01 != 0);
        (0, their_seq.wrapping_add(data_len).wrapping_add(syn_fin), 0x14)
    };
    ends.write_header(out, total, PROTO_TCP);
    let t = &mut out[h..total];
    t[0..2].copy_from_slice(&tcp[2..4]);
    t[2..4].copy_from_slice(&tcp[0..2]);
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12..20].copy_from_slice(&[0x50, out_flags, 0, 0, 0, 0, 0, 0]);
    let c = checksum_finish(checksum_add(ends.pseudo_header(PROTO_TCP, TCP_HEADER), t));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    Ok(total)
}

/// RFC 792 / RFC 1812: the original IP header and the first 8 bytes of its payload.
fn icmp_prohibited(ip: &Ipv4Packet<'_>, out: &mut [u8]) -> Result<usize, RejectError> {
    let header = ip.header();
    let quoted = &ip.payload()[..ip.payload().len().min(8)];
    let total = 20 + 8 + header.len() + quoted.len();
    if out.len() < total {
        return Err(RejectError::BufferTooSmall(total));
    }
    Ends::V4 { src: ip.src(), dst: ip.dst() }.write_header(out, total, PROTO_ICMP);
    let icmp = &mut out[20..total];
    icmp[..8].copy_from_slice(&[3, 13, 0, 0, 0, 0, 0, 0]);
    icmp[8..8 + header.len()].copy_from_slice(header);
    icmp[8 + header.len()..].copy_from_slice(quoted);
    let c = checksum_finish(checksum_add(0, icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Ok(total)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::super::testpkt::*;
    use super::super::{Flow, PROTO_UDP};
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);

    fn sums_to_zero(data: &[u8], start: u32) -> bool {
        checksum_finish(checksum_add(start, data)) == 0
    }

    fn tcp_checksum_ok(pkt: &[u8]) -> bool {
        let mut pseudo = checksum_add(0, &pkt[12..20]);
        pseudo += u32::from(PROTO_TCP) + (pkt.len() as u32 - 20);
        sums_to_zero(&pkt[20..], pseudo)
    }

    #[test]
    fn rst_for_syn_acks_the_syn() {
        let syn = ipv4_tcp(A, B, 40000, 22, 0x02, &[]);
        let mut out = [0u8; MAX_REJECT_LEN];
        let n = build_reject(&syn, &mut out).unwrap();
        let rst = &out[..n];
        assert_eq!(n, 40);
        assert!(sums_to_zero(&rst[..20], 0), "IPv4 header checksum");
        assert!(tcp_checksum_ok(rst), "TCP checksum");
        let f = Flow::parse(rst, false).unwrap();
        assert_eq!((f.local_ip, f.local_port, f.remote_ip, f.remote_port), (B.into(), 22, A.into(), 40000));
        assert_eq!(rst[33], 0x14, "RST|ACK");
        assert_eq!(&rst[24..28], &0u32.to_be_bytes(), "seq 0");
        assert_eq!(&rst[28..32], &1001u32.to_be_bytes(), "acks seq+1 for the SYN");
    }

    #[test]
    fn rst_for_ack_segment_uses_their_ack() {
        let seg = ipv4_tcp(A, B, 40000, 22, 0x18, b"hello");
        let mut out = [0u8; MAX_REJECT_LEN];
        let n = build_reject(&seg, &mut out).unwrap();
        assert!(tcp_checksum_ok(&out[..n]));
        assert_eq!(out[33], 0x04, "plain RST");
        assert_eq!(&out[24..28], &7000u32.to_be_bytes());
        // An RST is never answered.
        let rst = ipv4_tcp(A, B, 40000, 22, 0x04, &[]);
        assert_eq!(build_reject(&rst, &mut out), Err(RejectError::WouldAnswerError));
    }

    #[test]
    fn icmp_admin_prohibited_for_udp() {
        let udp = ipv4_udp(A, B, 5000, 4648, b"gossip-gossip");
        let mut out = [0u8; MAX_REJECT_LEN];
        let n = build_reject(&udp, &mut out).unwrap();
        let r = &out[..n];
        assert_eq!(n, 20 + 8 + 20 + 8);
        assert!(sums_to_zero(&r[..20], 0), "IPv4 header checksum");
        assert!(sums_to_zero(&r[20..], 0), "ICMP checksum");
        assert_eq!((r[9], r[20], r[21]), (PROTO_ICMP, 3, 13));
        assert_eq!(&r[12..16], &B.octets(), "from the rejected destination");
        assert_eq!(&r[16..20], &A.octets(), "to the sender");
        assert_eq!(&r[28..48], &udp[..20], "quotes the original header");
        assert_eq!(&r[48..56], &udp[20..28], "and 8 payload bytes");
        assert_eq!(r[28 + 9], PROTO_UDP);
    }

    #[test]
    fn no_reply_cases() {
        let mut out = [0u8; MAX_REJECT_LEN];
        let unreachable = ipv4(A, B, PROTO_ICMP, &[3, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(build_reject(&unreachable, &mut out), Err(RejectError::WouldAnswerError));
        let ping = ipv4_icmp_echo(A, B);
        assert!(build_reject(&ping, &mut out).is_ok(), "an echo request gets admin-prohibited");
        let mut frag = ipv4_udp(A, B, 1, 2, &[0; 8]);
        frag[7] = 10;
        assert_eq!(build_reject(&frag, &mut out), Err(RejectError::Fragment));
        assert_eq!(build_reject(&[0x50; 40], &mut out), Err(RejectError::NotIp));
        let syn = ipv4_tcp(A, B, 1, 2, 0x02, &[]);
        assert_eq!(build_reject(&syn, &mut out[..39]), Err(RejectError::BufferTooSmall(40)));
    }

    const A6: &str = "fd00::1";
    const B6: &str = "fd00::2";

    /// The ICMPv6 / TCP checksum of an IPv6 reply with no extension headers.
    fn v6_checksum_ok(pkt: &[u8]) -> bool {
        let mut pseudo = checksum_add(0, &pkt[8..40]);
        pseudo += u32::from(pkt[6]) + (pkt.len() as u32 - 40);
        sums_to_zero(&pkt[40..], pseudo)
    }

    #[test]
    fn ipv6_tcp_gets_a_rst_and_udp_an_icmpv6_prohibited() {
        let (a, b) = (A6.parse().unwrap(), B6.parse().unwrap());
        let mut syn = vec![0x9c, 0x40, 0, 22, 0, 0, 0x03, 0xe8, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0];
        let syn_packet = ipv6(a, b, PROTO_TCP, &syn);
        let mut out = [0u8; MAX_REJECT_LEN];
        let n = build_reject(&syn_packet, &mut out).unwrap();
        let rst = &out[..n];
        assert_eq!(n, 60);
        assert!(v6_checksum_ok(rst), "TCP checksum over the IPv6 pseudo-header");
        let f = Flow::parse(rst, false).unwrap();
        assert_eq!((f.local_ip, f.local_port, f.remote_ip, f.remote_port), (b.into(), 22, a.into(), 40000));
        assert_eq!((rst[53], &rst[48..52]), (0x14, &1001u32.to_be_bytes()[..]), "RST|ACK of the SYN");
        syn[13] = 0x04;
        assert_eq!(build_reject(&ipv6(a, b, PROTO_TCP, &syn), &mut out), Err(RejectError::WouldAnswerError));

        let udp = ipv6(a, b, PROTO_UDP, &[0x13, 0x88, 0x12, 0x28, 0, 12, 0, 0, 1, 2, 3, 4]);
        let n = build_reject(&udp, &mut out).unwrap();
        let r = &out[..n];
        assert_eq!(n, 40 + 8 + udp.len());
        assert!(v6_checksum_ok(r), "ICMPv6 checksum");
        assert_eq!((r[6], r[40], r[41]), (PROTO_ICMPV6, 1, 1));
        assert_eq!((&r[8..24], &r[24..40]), (&b.octets()[..], &a.octets()[..]), "from the destination back");
        assert_eq!(&r[48..], &udp[..], "quotes the packet");
        // An echo request is refused with an error; an ICMPv6 error never is.
        assert!(build_reject(&ipv6(a, b, PROTO_ICMPV6, &[128, 0, 0, 0, 0, 1, 0, 1]), &mut out).is_ok());
        let unreachable = ipv6(a, b, PROTO_ICMPV6, &[1, 4, 0, 0, 0, 0, 0, 0]);
        assert_eq!(build_reject(&unreachable, &mut out), Err(RejectError::WouldAnswerError));
        // A long packet is quoted only in part.
        let big = ipv6(a, b, PROTO_UDP, &[0; 1000]);
        assert_eq!(build_reject(&big, &mut out), Ok(MAX_REJECT_LEN));
    }
}
