//! The answer to a rejected packet, as Nebula's `reject` action sends it: a TCP RST for TCP,
//! otherwise an ICMP destination-unreachable, administratively prohibited (type 3 code 13).
//! Built into a caller-owned buffer so rejecting allocates nothing.

use thiserror::Error;

use super::{Ipv4Packet, PROTO_ICMP, PROTO_TCP, PacketError, Transport, checksum_add, checksum_finish};

/// Why no reject packet was built; the caller then simply drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RejectError {
    #[error("cannot parse the rejected packet: {0}")]
    Packet(#[from] PacketError),
    #[error("reject replies are built for IPv4 only")]
    NotIpv4,
    #[error("a non-first fragment gets no reply (RFC 1812 4.3.2.7)")]
    Fragment,
    #[error("never answer a TCP RST or an ICMP error with another error")]
    WouldAnswerError,
    #[error("output buffer too small: need {0} bytes")]
    BufferTooSmall(usize),
}

/// Largest reply: IPv4 header (20) + ICMP header (8) + original header (≤60) + 8 payload bytes.
pub const MAX_REJECT_LEN: usize = 20 + 8 + 60 + 8;

/// Writes the reply to `original` into `out` and returns its length. The reply goes back to the
/// sender: its source is the original destination.
pub fn build_reject(original: &[u8], out: &mut [u8]) -> Result<usize, RejectError> {
    if original.first().map(|b| b >> 4) != Some(4) {
        return Err(if original.is_empty() { PacketError::Empty.into() } else { RejectError::NotIpv4 });
    }
    let ip = Ipv4Packet::new(original)?;
    if ip.fragment_offset() != 0 {
        return Err(RejectError::Fragment);
    }
    let payload = ip.payload();
    if ip.protocol() == PROTO_TCP && payload.len() >= 20 {
        return tcp_rst(&ip, payload, out);
    }
    // ICMP error types: destination unreachable, source quench, redirect, time exceeded, parameter problem.
    let icmp = Transport::new(ip.protocol(), payload).icmp_type_code();
    if ip.protocol() == PROTO_ICMP && matches!(icmp, None | Some((3 | 4 | 5 | 11 | 12, _))) {
        return Err(RejectError::WouldAnswerError);
    }
    icmp_prohibited(&ip, out)
}

fn write_ipv4_header(out: &mut [u8], total: usize, proto: u8, orig: &Ipv4Packet<'_>) {
    out[..20].copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    out[12..16].copy_from_slice(&orig.dst().octets());
    out[16..20].copy_from_slice(&orig.src().octets());
    let c = checksum_finish(checksum_add(0, &out[..20]));
    out[10..12].copy_from_slice(&c.to_be_bytes());
}

/// RFC 9293 3.10.7.1: with ACK set, RST carries seq = their ack; otherwise seq 0 and an ACK of
/// everything they sent (payload plus SYN and FIN, which each count as one).
fn tcp_rst(ip: &Ipv4Packet<'_>, tcp: &[u8], out: &mut [u8]) -> Result<usize, RejectError> {
    let flags = tcp[13];
    if flags & 0x04 != 0 {
        return Err(RejectError::WouldAnswerError);
    }
    let total = 40;
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
    write_ipv4_header(out, total, PROTO_TCP, ip);
    let t = &mut out[20..40];
    t[0..2].copy_from_slice(&tcp[2..4]);
    t[2..4].copy_from_slice(&tcp[0..2]);
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12..20].copy_from_slice(&[0x50, out_flags, 0, 0, 0, 0, 0, 0]);
    let mut sum = checksum_add(0, &ip.dst().octets());
    sum = checksum_add(sum, &ip.src().octets());
    sum += u32::from(PROTO_TCP) + 20;
    let c = checksum_finish(checksum_add(sum, t));
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
    write_ipv4_header(out, total, PROTO_ICMP, ip);
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
        let v6 = ipv6("::1".parse().unwrap(), "::2".parse().unwrap(), PROTO_UDP, &[0; 8]);
        assert_eq!(build_reject(&v6, &mut out), Err(RejectError::NotIpv4));
        let syn = ipv4_tcp(A, B, 1, 2, 0x02, &[]);
        assert_eq!(build_reject(&syn, &mut out[..39]), Err(RejectError::BufferTooSmall(40)));
    }
}
