//! Verdicts per second: `cargo bench --bench firewall`.
//!
//! Rule lookup alone (`Firewall::evaluate`), and the whole per-packet path (parse + conntrack +
//! rules) for new and established flows, with 1,000 generated rules and with the role files.

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use cos_mesh::cert::Fingerprint;
use cos_mesh::firewall::config::parse_rules_str;
use cos_mesh::firewall::{Direction, Firewall, PeerIdentity, load_config_or_rules};
use cos_mesh::packet::Flow;

const ME: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);

/// Runs `f` `n` times and prints the rate.
fn measure(name: &str, n: u64, mut f: impl FnMut(u64) -> bool) {
    for i in 0..n / 10 {
        black_box(f(i)); // warm up
    }
    let start = Instant::now();
    let mut allowed = 0u64;
    for i in 0..n {
        allowed += u64::from(black_box(f(black_box(i))));
    }
    let el = start.elapsed();
    let per = el.as_nanos() as f64 / n as f64;
    println!("{name:<58} {:>8.1} ns/verdict {:>7.2} M verdicts/s  ({allowed}/{n} allowed)", per, 1e3 / per);
}

fn peer(groups: &[&str]) -> PeerIdentity {
    PeerIdentity::new("bench-peer", groups.iter().copied(), vec![IpAddr::V4(PEER)], vec![], "ca", Fingerprint([1; 32]))
}

/// 1,000 rules: 600 single ports, 300 ranges, 100 any-port, over 50 groups.
fn thousand_rules() -> String {
    let mut y = String::from("inbound:\n");
    for i in 0..1000u32 {
        let group = format!("g{}", i % 50);
        let (port, proto) = match i % 10 {
            0..=5 => ((1000 + i).to_string(), ["tcp", "udp"][(i % 2) as usize]),
            6..=8 => (format!("{}-{}", 20000 + i * 10, 20000 + i * 10 + 500), "any"),
            _ => ("any".to_string(), "icmp"),
        };
        writeln!(y, "  - {{port: {port}, proto: {proto}, group: {group}}}").unwrap();
    }
    y
}

/// 1,000 rules on one port, none matching the peer but the last: the worst case for a bucket.
fn thousand_on_one_port() -> String {
    let mut y = String::from("inbound:\n");
    for i in 0..1000 {
        writeln!(y, "  - {{port: 443, proto: tcp, groups: [team-{i}, prod]}}").unwrap();
    }
    y.push_str("  - {port: 443, proto: tcp, group: web}\n");
    y
}

fn flow(proto: u8, port: u16) -> Flow {
    Flow { proto, local_ip: ME.into(), remote_ip: PEER.into(), local_port: port, remote_port: 40000, fragment: false }
}

fn tcp_packet(src_port: u16, dst_port: u16) -> [u8; 40] {
    let mut p = [0u8; 40];
    p[..12].copy_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    p[12..16].copy_from_slice(&PEER.octets());
    p[16..20].copy_from_slice(&ME.octets());
    p[20..22].copy_from_slice(&src_port.to_be_bytes());
    p[22..24].copy_from_slice(&dst_port.to_be_bytes());
    p[32] = 0x50;
    p[33] = 0x02;
    p
}

fn compile(name: &str, yaml: &str) -> Firewall {
    let start = Instant::now();
    let cfg = parse_rules_str(yaml, Path::new(name)).unwrap();
    let fw = Firewall::compile(&cfg, &[]).unwrap();
    println!("{name:<58} compiled in {:?}", start.elapsed());
    fw
}

fn main() {
    const N: u64 = 2_000_000;
    let fw = compile("1000 rules", &thousand_rules());
    let p = peer(&["g7", "g13", "g21"]);
    let ports: Vec<u16> = (0..1024).map(|i| [1007, 1013, 25000, 20077 + i, 1500, 22][(i % 6) as usize]).collect();
    measure("1000 rules: evaluate, mixed ports (hits and misses)", N, |i| {
        let port = ports[(i % 1024) as usize];
        fw.evaluate(Direction::Inbound, &flow([6, 17][(i % 2) as usize], port), &p).is_some()
    });
    measure("1000 rules: evaluate, default deny (22/tcp)", N, |_| {
        fw.evaluate(Direction::Inbound, &flow(6, 22), &p).is_some()
    });

    let one_port = compile("1001 rules on 443/tcp", &thousand_on_one_port());
    let web = peer(&["web"]);
    measure("1001 rules on 443/tcp: evaluate, only the last matches", N / 20, |_| {
        one_port.evaluate(Direction::Inbound, &flow(6, 443), &web).is_some()
    });

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("firewall");
    let dir = std::env::temp_dir().join(format!("cos-mesh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg_path = dir.join("server.yaml");
    let inc = |f: &str| root.join(f).display().to_string();
    std::fs::write(&cfg_path, format!("firewall:\n  include: [{}, {}]\n", inc("base.yaml"), inc("nomad-server.yaml")))
        .unwrap();
    let mut server = Firewall::compile(&load_config_or_rules(&cfg_path).unwrap(), &[]).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let client = peer(&["nomad-client"]);
    measure("role files (base + nomad-server): evaluate 4647/tcp", N, |_| {
        server.evaluate(Direction::Inbound, &flow(6, 4647), &client).is_some()
    });

    // Whole packet path. New flows: a fresh source port each time, so conntrack misses and
    // inserts (the table grows to N entries: this includes HashMap growth).
    let t0 = Instant::now();
    measure("role files: packet path, new flow each packet (miss+insert)", N / 4, |i| {
        let pkt = tcp_packet(1024 + (i % 60000) as u16, 4647);
        server.inbound(&pkt, &client, t0 + Duration::from_nanos(i)).is_allow()
    });
    let pkt = tcp_packet(40000, 4647);
    measure("role files: packet path, established flow (conntrack hit)", N, |i| {
        server.inbound(&pkt, &client, t0 + Duration::from_nanos(i)).is_allow()
    });
    let denied = tcp_packet(40000, 22);
    measure("role files: packet path, denied (22/tcp)", N, |i| {
        server.inbound(&denied, &client, t0 + Duration::from_nanos(i)).is_allow()
    });
}
