//! The firewall's packet path: a compiled rule set (the shipped `firewall/base.yaml` plus role
//! rules) with conntrack, fed a sequence of packets in both directions from several peers.
//! Input: records of `[control, length, packet…]`; control bit 0 is the direction, bits 1–2
//! the peer, bits 3–7 seconds that pass first (conntrack expiry).

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cos_mesh::cert::pool::Blocklist;
use cos_mesh::firewall::{Direction, Firewall, FirewallConfig, PeerIdentity, Verdict, config};
use cos_mesh::packet::Flow;
use cos_mesh::unixtime::UnixTime;

use super::fixtures::{WALL0, pki, vpn};

/// The rules: base outbound (anything), ICMP from anyone, SSH from `ops`, DNS from anyone, a
/// port range for one host, reject as the inbound action.
const RULES: &str = "\
inbound_action: reject
outbound:
  - {port: any, proto: any, host: any}
inbound:
  - {port: any, proto: icmp, host: any}
  - {port: 22, proto: tcp, group: ops}
  - {port: 53, proto: udp, host: any}
  - {port: 20000-20100, proto: any, host: node-4}
  - {port: fragment, proto: any, cidr: 100.64.0.0/24}
";

fn section() -> &'static FirewallConfig {
    static S: OnceLock<FirewallConfig> = OnceLock::new();
    S.get_or_init(|| config::parse_rules_str(RULES, "rules.yaml".as_ref()).expect("fixture rules parse"))
}

/// The firewall identities of the fixture nodes 2, 3, 4 and the foreign one (unknown CA),
/// verified once per process.
pub fn identities() -> &'static [PeerIdentity] {
    static IDS: OnceLock<Vec<PeerIdentity>> = OnceLock::new();
    IDS.get_or_init(|| {
        let pool = pki().pool();
        let mut v: Vec<PeerIdentity> = (2..=4)
            .map(|n| {
                PeerIdentity::from(
                    &pool.verify(&pki().node(n).cert, UnixTime(WALL0), &Blocklist::default()).expect("fixture"),
                )
            })
            .collect();
        let f = pki().foreign.details();
        v.push(PeerIdentity::new(
            &f.name,
            f.groups.clone(),
            vec![IpAddr::V4(f.ips[0].addr())],
            vec![],
            "other",
            pki().foreign.fingerprint(),
        ));
        v
    })
}

/// Real packets between the fixture nodes: ICMP echo, TCP SYN to 22, UDP 53, a fragment.
pub fn packets() -> &'static [Vec<u8>] {
    static P: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    P.get_or_init(|| {
        vec![
            ipv4(vpn(3), vpn(1), 1, 0, &[8, 0, 0, 0, 0, 1, 0, 1]),
            ipv4(vpn(3), vpn(1), 6, 0, &tcp(40000, 22, 0x02)),
            ipv4(vpn(2), vpn(1), 6, 0, &tcp(40000, 22, 0x02)),
            ipv4(vpn(2), vpn(1), 17, 0, &[0x9c, 0x40, 0, 53, 0, 9, 0, 0, 7]),
            ipv4(vpn(4), vpn(1), 17, 0, &[0x9c, 0x40, 0x4e, 0x21, 0, 9, 0, 0, 7]),
            ipv4(vpn(2), vpn(1), 17, 185, &[1, 2, 3, 4]),
        ]
    })
}

/// An IPv4 packet (header checksum left zero: the firewall does not read it).
pub fn ipv4(src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr, proto: u8, frag: u16, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 1]);
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

pub fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

pub fn run(data: &[u8]) {
    let mut fw = Firewall::compile(section(), &["100.64.0.1/32".parse().expect("net")]).expect("fixture rules compile");
    let peers = identities();
    let mut now = Instant::now();
    let mut rest = data;
    while let [ctl, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (packet, next) = tail.split_at(n);
        rest = next;
        now += Duration::from_secs(u64::from(ctl >> 3));
        let peer = &peers[usize::from(ctl >> 1 & 3)];
        let dir = if ctl & 1 == 0 { Direction::Inbound } else { Direction::Outbound };
        let verdict = fw.packet(dir, packet, peer, now);
        if verdict == Verdict::Allow {
            // Whatever passes comes from (or goes to) an address the peer's certificate owns.
            let flow = Flow::parse(packet, dir == Direction::Inbound).expect("an allowed packet parses");
            assert!(peer.owns_address(flow.remote_ip), "{flow:?} allowed for {}", peer.name);
        }
        fw.expire(now);
    }
}
