//! Packet builders for tests: well-formed IPv4/IPv6 packets with valid checksums.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{PROTO_ICMP, PROTO_TCP, PROTO_UDP, checksum_add, checksum_finish};

pub fn set_ipv4_checksum(pkt: &mut [u8]) {
    pkt[10] = 0;
    pkt[11] = 0;
    let ihl = usize::from(pkt[0] & 0xf) * 4;
    let c = checksum_finish(checksum_add(0, &pkt[..ihl]));
    pkt[10..12].copy_from_slice(&c.to_be_bytes());
}

pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut p = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    set_ipv4_checksum(&mut p);
    p
}

pub fn ipv4_raw(proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), proto, payload)
}

pub fn ipv4_tcp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + data.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&1000u32.to_be_bytes()); // seq
    t.extend_from_slice(&if flags & 0x10 != 0 { 7000u32 } else { 0 }.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(data);
    ipv4(src, dst, PROTO_TCP, &t)
}

pub fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    ipv4(src, dst, PROTO_UDP, &u)
}

pub fn ipv4_icmp_echo(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    ipv4(src, dst, PROTO_ICMP, &[8, 0, 0, 0, 0, 1, 0, 1])
}

pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}
