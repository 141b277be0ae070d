//! Table-driven tests of the firewall's semantics, with a virtual clock.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use super::config::parse_rules_str;
use super::*;
use crate::cert::Fingerprint;
use crate::packet::testpkt::*;
use crate::packet::{MAX_REJECT_LEN, PROTO_ICMP, PROTO_TCP, PROTO_UDP, build_reject};

const ME: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const CA_A: Fingerprint = Fingerprint([0xaa; 32]);

fn fw(yaml: &str) -> Firewall {
    fw_local(yaml, &[])
}

fn fw_local(yaml: &str, local: &[IpNet]) -> Firewall {
    let cfg = parse_rules_str(yaml, Path::new("test.yaml")).unwrap();
    Firewall::compile(&cfg, local).unwrap_or_else(|e| panic!("{e}"))
}

fn peer(name: &str, groups: &[&str], ip: [u8; 4]) -> PeerIdentity {
    PeerIdentity::new(name, groups.iter().copied(), vec![IpAddr::from(ip)], vec![], "ca-a", CA_A)
}

fn flow(proto: u8, remote: [u8; 4], remote_port: u16, local_port: u16) -> Flow {
    Flow { proto, local_ip: ME.into(), remote_ip: IpAddr::from(remote), local_port, remote_port, fragment: false }
}

const RULES: &str = "\
inbound:
  - {port: 4646, proto: tcp, group: ops}
  - {port: 4647, proto: tcp, groups: [nomad-client, prod]}
  - {port: 4648, proto: any, host: server-2}
  - {port: 20000-32000, proto: any, cidr: 100.64.5.0/24}
  - {port: 53, proto: udp, ca_name: ca-b, host: any}
  - {port: 8080, proto: tcp, ca_sha: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa}
  - {port: 9000, proto: tcp, local_cidr: 100.64.0.1/32}
  - {proto: icmp, port: 4646, group: any}
outbound:
  - {port: 443, proto: tcp, host: any}
";

#[test]
fn rule_semantics() {
    let f = fw(RULES);
    let ops = peer("laptop", &["ops"], [100, 64, 9, 9]);
    let client = peer("client-1", &["nomad-client", "prod"], [100, 64, 1, 1]);
    let half = peer("client-2", &["nomad-client"], [100, 64, 1, 2]);
    let server2 = peer("server-2", &[], [100, 64, 2, 2]);
    let in5 = peer("alloc", &[], [100, 64, 5, 7]);
    let cases: Vec<(&str, Direction, &PeerIdentity, Flow, Option<u32>)> = vec![
        ("group matches", Direction::Inbound, &ops, flow(PROTO_TCP, [100, 64, 9, 9], 5000, 4646), Some(2)),
        ("wrong proto", Direction::Inbound, &ops, flow(PROTO_UDP, [100, 64, 9, 9], 5000, 4646), None),
        ("wrong port", Direction::Inbound, &ops, flow(PROTO_TCP, [100, 64, 9, 9], 5000, 4647), None),
        ("port is the local one inbound", Direction::Inbound, &ops, flow(PROTO_TCP, [100, 64, 9, 9], 4646, 5000), None),
        ("groups: all of", Direction::Inbound, &client, flow(PROTO_TCP, [100, 64, 1, 1], 5000, 4647), Some(3)),
        ("groups: one missing", Direction::Inbound, &half, flow(PROTO_TCP, [100, 64, 1, 2], 5000, 4647), None),
        ("host", Direction::Inbound, &server2, flow(PROTO_UDP, [100, 64, 2, 2], 5000, 4648), Some(4)),
        ("host other", Direction::Inbound, &ops, flow(PROTO_UDP, [100, 64, 9, 9], 5000, 4648), None),
        ("cidr in range", Direction::Inbound, &in5, flow(PROTO_UDP, [100, 64, 5, 7], 1, 25417), Some(5)),
        ("cidr range end", Direction::Inbound, &in5, flow(PROTO_TCP, [100, 64, 5, 7], 1, 32000), Some(5)),
        ("cidr past range", Direction::Inbound, &in5, flow(PROTO_TCP, [100, 64, 5, 7], 1, 32001), None),
        ("cidr outside", Direction::Inbound, &ops, flow(PROTO_TCP, [100, 64, 9, 9], 1, 25417), None),
        ("ca_name other CA", Direction::Inbound, &ops, flow(PROTO_UDP, [100, 64, 9, 9], 1, 53), None),
        ("ca_sha", Direction::Inbound, &ops, flow(PROTO_TCP, [100, 64, 9, 9], 1, 8080), Some(7)),
        ("local_cidr", Direction::Inbound, &ops, flow(PROTO_TCP, [100, 64, 9, 9], 1, 9000), Some(8)),
        ("icmp ignores port", Direction::Inbound, &half, flow(PROTO_ICMP, [100, 64, 1, 2], 0, 0), Some(9)),
        ("outbound remote port", Direction::Outbound, &ops, flow(PROTO_TCP, [100, 64, 9, 9], 443, 40000), Some(11)),
        ("outbound default deny", Direction::Outbound, &ops, flow(PROTO_TCP, [100, 64, 9, 9], 80, 40000), None),
    ];
    for (name, dir, p, fl, want) in cases {
        let got = f.evaluate(dir, &fl, p).map(|r| r.origin.line);
        assert_eq!(got, want, "{name}");
    }
    let mut other_ca = peer("dns", &[], [100, 64, 9, 8]);
    other_ca.ca_name = "ca-b".into();
    other_ca.ca_fingerprint = Fingerprint([0xbb; 32]);
    assert_eq!(
        f.evaluate(Direction::Inbound, &flow(PROTO_UDP, [100, 64, 9, 8], 1, 53), &other_ca).map(|r| r.origin.line),
        Some(6)
    );
    assert!(f.evaluate(Direction::Inbound, &flow(PROTO_TCP, [100, 64, 9, 8], 1, 8080), &other_ca).is_none());
    let mut elsewhere = flow(PROTO_TCP, [100, 64, 9, 9], 1, 9000);
    elsewhere.local_ip = Ipv4Addr::new(100, 64, 0, 99).into();
    assert!(f.evaluate(Direction::Inbound, &elsewhere, &ops).is_none(), "local_cidr excludes other local addresses");
}

#[test]
fn spoofed_source_is_dropped_before_rules() {
    let mut f = fw("inbound:\n  - {port: any, proto: any, host: any}\n");
    let p = peer("a", &[], [100, 64, 0, 2]);
    let now = Instant::now();
    let pkt = ipv4_tcp(Ipv4Addr::new(100, 64, 0, 3), ME, 1, 22, 0x02, &[]);
    assert_eq!(f.inbound(&pkt, &p, now), Verdict::Drop(DropReason::RemoteAddress));
    let mut routed = p.clone();
    routed.subnets.push("10.9.0.0/16".parse().unwrap());
    let pkt = ipv4_tcp(Ipv4Addr::new(10, 9, 3, 4), ME, 1, 22, 0x02, &[]);
    assert_eq!(f.inbound(&pkt, &routed, now), Verdict::Allow, "a peer's unsafe_routes subnet is its own");
    assert_eq!(f.inbound(&[0x45, 0, 0], &p, now), Verdict::Drop(DropReason::Malformed));
    let c = f.counters();
    assert_eq!(c.dropped_remote_address.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(c.dropped_malformed.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn conntrack_lets_replies_through_and_expires() {
    let mut f = fw("outbound:\n  - {port: any, proto: any, host: any}\nconntrack: {udp_timeout: 1m}\n");
    let p = peer("srv", &[], [100, 64, 0, 2]);
    let them = Ipv4Addr::new(100, 64, 0, 2);
    let t0 = Instant::now();
    let cases = [
        // (what, request, reply, timeout)
        (
            "tcp",
            ipv4_tcp(ME, them, 40000, 4646, 0x02, &[]),
            ipv4_tcp(them, ME, 4646, 40000, 0x12, &[]),
            Duration::from_secs(12 * 60),
        ),
        (
            "udp (configured)",
            ipv4_udp(ME, them, 40001, 53, &[]),
            ipv4_udp(them, ME, 53, 40001, &[]),
            Duration::from_secs(60),
        ),
        (
            "icmp",
            ipv4_icmp_echo(ME, them),
            ipv4(them, ME, PROTO_ICMP, &[0, 0, 0, 0, 0, 1, 0, 1]),
            Duration::from_secs(10 * 60),
        ),
    ];
    for (what, req, reply, timeout) in &cases {
        assert_eq!(f.inbound(reply, &p, t0), Verdict::Drop(DropReason::NoRule), "{what}: unsolicited reply");
        assert_eq!(f.outbound(req, &p, t0), Verdict::Allow, "{what}: request");
        let t1 = t0 + *timeout - Duration::from_millis(1);
        assert_eq!(f.inbound(reply, &p, t1), Verdict::Allow, "{what}: reply just before timeout");
        // That reply refreshed the entry: it lives a full timeout from t1.
        assert_eq!(f.inbound(reply, &p, t1 + *timeout - Duration::from_millis(1)), Verdict::Allow, "{what}: refreshed");
        let late = t1 + *timeout - Duration::from_millis(1) + *timeout;
        assert_eq!(f.inbound(reply, &p, late), Verdict::Drop(DropReason::NoRule), "{what}: expired");
    }
    assert_eq!(f.outbound(&cases[0].1, &p, t0), Verdict::Allow);
    assert_eq!(f.conntrack().len(), 1);
    assert_eq!(f.expire(t0 + Duration::from_secs(11 * 60)), 0);
    assert_eq!(f.expire(t0 + Duration::from_secs(12 * 60)), 1);
}

#[test]
fn reload_keeps_flows_but_rechecks_them() {
    let wide = "inbound:\n  - {port: 4646, proto: tcp, group: ops}\n  - {port: 4647, proto: tcp, group: ops}\n";
    let narrow = "inbound:\n  - {port: 4647, proto: tcp, group: ops}\n";
    let mut f = fw(wide);
    let p = peer("laptop", &["ops"], [100, 64, 0, 9]);
    let them = Ipv4Addr::new(100, 64, 0, 9);
    let t = Instant::now();
    let http = ipv4_tcp(them, ME, 5000, 4646, 0x02, &[]);
    let http_reply = ipv4_tcp(ME, them, 4646, 5000, 0x12, &[]);
    let rpc = ipv4_tcp(them, ME, 5001, 4647, 0x02, &[]);
    assert!(f.inbound(&http, &p, t).is_allow());
    assert!(f.inbound(&rpc, &p, t).is_allow());
    assert!(
        f.outbound(&http_reply, &p, t).is_allow(),
        "reply of an inbound flow passes outbound with no outbound rules"
    );

    f.reload(fw(narrow));
    assert_eq!(f.rules_version(), 1);
    assert_eq!(f.conntrack().len(), 2, "reload keeps conntrack");
    // The reply is checked against the inbound rules that opened the flow, and now fails.
    assert_eq!(f.outbound(&http_reply, &p, t), Verdict::Drop(DropReason::RulesChanged));
    assert_eq!(f.inbound(&http, &p, t), Verdict::Drop(DropReason::NoRule), "entry was deleted");
    assert!(f.inbound(&rpc, &p, t).is_allow(), "a flow the new rules still allow continues");
    assert_eq!(f.conntrack().len(), 1);
    assert_eq!(f.counters().dropped_rules_changed.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn fragments_match_only_fragment_or_any_rules() {
    let only_port = "inbound:\n  - {port: 4648, proto: udp, group: nomad-server}\n";
    let with_frag = "inbound:\n  - {port: 4648, proto: udp, group: nomad-server}\n  - {port: fragment, proto: udp, group: nomad-server}\n";
    let any_port = "inbound:\n  - {port: any, proto: udp, group: nomad-server}\n";
    let p = peer("server-2", &["nomad-server"], [100, 64, 0, 2]);
    let them = Ipv4Addr::new(100, 64, 0, 2);
    let mut first = ipv4_udp(them, ME, 4648, 4648, &[0; 1272]);
    first[6] = 0x20; // more fragments
    set_ipv4_checksum(&mut first);
    let mut rest = ipv4(them, ME, PROTO_UDP, &[0; 120]);
    rest[7] = 160; // offset 1280 bytes
    set_ipv4_checksum(&mut rest);
    let t = Instant::now();
    for (rules, want_rest) in [(only_port, false), (with_frag, true), (any_port, true)] {
        let mut f = fw(rules);
        assert!(f.inbound(&first, &p, t).is_allow(), "{rules}: first fragment carries the port");
        assert_eq!(f.inbound(&rest, &p, t).is_allow(), want_rest, "{rules}: later fragment");
    }
    let stranger = peer("x", &[], [100, 64, 0, 2]);
    assert!(!fw(with_frag).inbound(&rest, &stranger, t).is_allow(), "fragment rules still check the peer");
}

#[test]
fn reject_action_yields_rst_and_icmp() {
    let mut f = fw("inbound_action: reject\ninbound:\n  - {port: 22, proto: tcp, group: ops}\n");
    let p = peer("x", &[], [100, 64, 0, 2]);
    let them = Ipv4Addr::new(100, 64, 0, 2);
    let t = Instant::now();
    let syn = ipv4_tcp(them, ME, 5000, 22, 0x02, &[]);
    assert_eq!(f.inbound(&syn, &p, t), Verdict::Reject(DropReason::NoRule));
    let mut out = [0u8; MAX_REJECT_LEN];
    let n = build_reject(&syn, &mut out).unwrap();
    let rst = Flow::parse(&out[..n], false).unwrap();
    assert_eq!((rst.proto, rst.remote_ip, rst.remote_port, rst.local_port), (PROTO_TCP, them.into(), 5000, 22));
    assert_eq!(out[33] & 0x04, 0x04, "RST flag");
    let udp = ipv4_udp(them, ME, 5000, 4648, &[1; 10]);
    assert_eq!(f.inbound(&udp, &p, t), Verdict::Reject(DropReason::NoRule));
    let n = build_reject(&udp, &mut out).unwrap();
    assert_eq!((out[9], out[20], out[21], n), (PROTO_ICMP, 3, 13, 56));
    assert_eq!(f.outbound(&syn, &p, t), Verdict::Drop(DropReason::RemoteAddress));
    let mut drop_out = fw("outbound: []\n");
    let out_syn = ipv4_tcp(ME, them, 5000, 22, 0x02, &[]);
    assert_eq!(drop_out.outbound(&out_syn, &p, t), Verdict::Drop(DropReason::NoRule), "drop is the default action");
}

#[test]
fn local_scope_limits_rules_without_local_cidr() {
    let mine: Vec<IpNet> = vec!["100.64.0.1/16".parse().unwrap()];
    let rules = "inbound:\n  - {port: 80, proto: tcp, host: any}\n  - {port: 81, proto: tcp, host: any, local_cidr: 10.20.0.0/16}\n";
    let f = fw_local(rules, &mine);
    let p = peer("x", &[], [100, 64, 0, 2]);
    let mut to_me = flow(PROTO_TCP, [100, 64, 0, 2], 1, 80);
    assert!(f.evaluate(Direction::Inbound, &to_me, &p).is_some());
    to_me.local_ip = Ipv4Addr::new(10, 20, 1, 1).into(); // an unsafe_routes network behind this node
    assert!(f.evaluate(Direction::Inbound, &to_me, &p).is_none(), "rule without local_cidr stays on the overlay");
    to_me.local_port = 81;
    assert!(f.evaluate(Direction::Inbound, &to_me, &p).is_some(), "local_cidr reaches the routed network");
    let any = fw_local(&format!("default_local_cidr_any: true\n{rules}"), &mine);
    to_me.local_port = 80;
    assert!(any.evaluate(Direction::Inbound, &to_me, &p).is_some(), "default_local_cidr_any: true");
}

#[test]
fn compile_errors_name_file_line_and_field() {
    let cases = [
        ("inbound:\n  - {port: 22, proto: tcp}\n", "test.yaml:2: host: a rule needs at least one of"),
        ("inbound:\n  - port: 32000-20000\n    proto: tcp\n    host: any\n", "test.yaml:2: port:"),
        ("inbound:\n  - {port: 22, proto: sctp, host: any}\n", "test.yaml:2: proto:"),
        (
            "inbound:\n  - port: 22\n    proto: tcp\n    group: a\n    groups: [b]\n",
            "test.yaml:5: groups: use either group",
        ),
        ("inbound:\n  - {proto: tcp, host: any}\n", "test.yaml:2: port: missing"),
        ("inbound:\n  - {port: 1, proto: tcp, cidr: 10.0.0.0/33}\n", "test.yaml:2: cidr:"),
        ("inbound:\n  - {port: 1, proto: tcp, ca_sha: abc}\n", "test.yaml:2: ca_sha:"),
        ("conntrack:\n  tcp_timeout: 12 minutes\n", "test.yaml:2: conntrack.tcp_timeout:"),
        ("inbound_action: deny\n", "test.yaml:1:17: unknown variant `deny`"),
    ];
    for (yaml, want) in cases {
        let err = parse_rules_str(yaml, Path::new("test.yaml"))
            .and_then(|c| Firewall::compile(&c, &[]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(want), "{yaml}\n got: {err}\nwant: {want}");
    }
    assert!(parse_rules_str("inbound:\n  - port: 32000-20000\n", Path::new("t")).is_ok(), "YAML itself parses");
}

#[test]
fn rules_version_wrap_resets_conntrack() {
    let rules = "inbound:\n  - {port: 22, proto: tcp, group: ops}\n";
    let mut f = fw(rules);
    let p = peer("x", &["ops"], [100, 64, 0, 2]);
    let t = Instant::now();
    assert!(f.inbound(&ipv4_tcp(Ipv4Addr::new(100, 64, 0, 2), ME, 1, 22, 0x02, &[]), &p, t).is_allow());
    f.rules_version = u16::MAX - 1;
    f.reload(fw(rules));
    assert_eq!((f.rules_version(), f.conntrack().len()), (u16::MAX, 1), "an ordinary reload keeps flows");
    f.reload(fw(rules));
    assert_eq!((f.rules_version(), f.conntrack().len()), (0, 0), "on wrap an old entry could look current");
}

/// A dual-stack node (v2 certificate with 100.64.0.1/10 and fd00::1/64) filters IPv6 overlay
/// traffic with the same rules: groups, v6 `cidr` and `local_cidr`, and `proto: icmp` matching
/// ICMPv6 as in Nebula; rules without `local_cidr` cover the v6 network of the certificate.
#[test]
fn ipv6_packets_meet_groups_v6_cidrs_local_cidr_and_icmpv6() {
    use crate::packet::PROTO_ICMPV6;
    use std::net::Ipv6Addr;
    let me6: Ipv6Addr = "fd00::1".parse().unwrap();
    let local: Vec<IpNet> = vec!["100.64.0.1/10".parse().unwrap(), "fd00::1/64".parse().unwrap()];
    let mut f = fw_local(
        "inbound:\n  - {port: 22, proto: tcp, group: ops}\n  - {port: 8000-8999, proto: udp, cidr: \"fd00::40/122\"}\n  - {port: 9000, proto: tcp, host: any, local_cidr: \"fd00::1/128\"}\n  - {port: any, proto: icmp, host: any}\n",
        &local,
    );
    let v6_peer = |name: &str, groups: &[&str], ip: &str| {
        let ips = vec!["100.64.0.9".parse().unwrap(), ip.parse().unwrap()];
        PeerIdentity::new(name, groups.iter().copied(), ips, vec![], "ca-a", CA_A)
    };
    let ops = v6_peer("laptop", &["ops"], "fd00::9");
    let dev = v6_peer("dev", &["dev"], "fd00::a");
    let in_cidr = v6_peer("alloc", &[], "fd00::41");
    let tcp = |src: &str, dst: Ipv6Addr, dport: u16| {
        let mut t = vec![0x9c, 0x40];
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        ipv6(src.parse().unwrap(), dst, PROTO_TCP, &t)
    };
    let udp = |src: &str, dport: u16| {
        let mut u = vec![0x9c, 0x40];
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&[0, 8, 0, 0]);
        ipv6(src.parse().unwrap(), me6, PROTO_UDP, &u)
    };
    let echo = |src: &str| ipv6(src.parse().unwrap(), me6, PROTO_ICMPV6, &[128, 0, 0, 0, 0, 1, 0, 1]);
    let now = Instant::now();
    let cases: Vec<(&str, &PeerIdentity, Vec<u8>, bool)> = vec![
        ("group ops allowed over v6", &ops, tcp("fd00::9", me6, 22), true),
        ("group dev dropped over v6", &dev, tcp("fd00::a", me6, 22), false),
        ("v6 cidr inside", &in_cidr, udp("fd00::41", 8080), true),
        ("v6 cidr outside", &dev, udp("fd00::a", 8080), false),
        ("local_cidr v6 matches", &dev, tcp("fd00::a", me6, 9000), true),
        ("ICMPv6 echo is proto icmp", &dev, echo("fd00::a"), true),
        ("a source the certificate lacks", &ops, tcp("fd00::99", me6, 22), false),
    ];
    for (name, p, packet, allowed) in cases {
        assert_eq!(f.inbound(&packet, p, now).is_allow(), allowed, "{name}");
    }
    // A v6 destination outside the node's networks: rules without local_cidr do not cover it.
    let elsewhere: Ipv6Addr = "fd01::1".parse().unwrap();
    assert!(!f.inbound(&tcp("fd00::9", elsewhere, 22), &ops, now).is_allow(), "scope is the certificate's networks");
}
