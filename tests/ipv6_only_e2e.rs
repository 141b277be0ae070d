//! IPv6-only certificates end to end: real daemons in network namespaces with v2 certificates
//! made by `cos-mesh ca --version 2` and `cos-mesh sign --networks`. A dual-stack lighthouse
//! (which also relays), a dual-stack node `d`, a v4-only node `f` and a v6-only node `s`, each
//! knowing only the lighthouse: `d` talks to `f` over the v4 overlay and to `s` over the v6
//! overlay (`ping`, `ping -6`, a checksummed TCP stream, a firewall group rule), `s` finds `d`
//! by its IPv6 overlay address through the lighthouse, and `s` runs with no IPv4 address on
//! its TUN.

mod support;

use std::time::Duration;

use support::daemon::{BIN, Host, Pki, Segment, checksummed_stream, connect};
use support::wait_until;

/// Inbound: ICMP from everyone, TCP 5001 from group `ops` only; the rest is rejected.
const FIREWALL: &str = "  outbound:\n    - {port: any, proto: any, host: any}\n  inbound:\n    - {port: any, proto: icmp, host: any}\n    - {port: 5001, proto: tcp, group: ops}\n  inbound_action: reject";

/// A v2 CA over `100.64.0.0/10` and `fd00::/16`.
fn pki() -> Pki {
    Pki::v2("v6-only CA", "100.64.0.0/10,fd00::/16")
}

/// Signs `h` for exactly `networks` (comma-separated) in `groups` and writes its config.
fn configure(pki: &Pki, h: &Host, networks: &str, groups: &str, statics: &[(&str, &str)], extra: &str) {
    let (crt, key) = pki.sign_networks(&h.name, networks, groups);
    h.configure(&pki.ca_crt(), &crt, &key, statics, FIREWALL, extra);
}

fn peer<'a>(status: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    status["peers"].as_array().and_then(|p| p.iter().find(|p| p["name"] == name))
}

fn registered(h: &Host) -> bool {
    wait_until(Duration::from_secs(10), || {
        h.try_status().is_some_and(|s| s["lighthouses"].as_array().is_some_and(|l| l.iter().all(|x| x["up"] == true)))
    })
}

#[test]
fn a_dual_stack_node_talks_to_v4_only_and_v6_only_peers() {
    let pki = pki();
    let seg = Segment::new();
    let mut lighthouse = Host::new(&seg, "lighthouse", "198.18.0.1", "100.64.0.1");
    let lh_extra = "lighthouse:\n  am_lighthouse: true\nrelay:\n  am_relay: true\n";
    configure(&pki, &lighthouse, "100.64.0.1/10,fd00:64::1/64", "lighthouse", &[], lh_extra);
    lighthouse.start();

    // d and f know the lighthouse by its IPv4 overlay address, s (no IPv4) by its IPv6 one.
    let by_v4 = "lighthouse:\n  hosts: [100.64.0.1]\n  interval: 2\n";
    let by_v6 = "lighthouse:\n  hosts: [\"fd00:64::1\"]\n  interval: 2\nrelay:\n  relays: [\"fd00:64::1\"]\n";
    let mut d = Host::new(&seg, "d", "198.18.0.2", "100.64.0.2");
    let mut f = Host::new(&seg, "f", "198.18.0.3", "100.64.0.3");
    let mut s = Host::new(&seg, "s", "198.18.0.4", "fd00:64::4");
    configure(&pki, &d, "100.64.0.2/10,fd00:64::2/64", "ops", &[("100.64.0.1", "198.18.0.1")], by_v4);
    configure(&pki, &f, "100.64.0.3/10", "ops", &[("100.64.0.1", "198.18.0.1")], by_v4);
    configure(&pki, &s, "fd00:64::4/64", "service", &[("fd00:64::1", "198.18.0.1")], by_v6);
    for h in [&mut d, &mut f, &mut s] {
        h.start();
    }
    for h in [&d, &f, &s] {
        assert!(registered(h), "{} did not reach the lighthouse:\n{}", h.name, h.log());
    }

    // s's TUN has its IPv6 address and no IPv4 one.
    let addrs = s.ns.exec_ok("ip", &["addr", "show", "dev", &s.tun]);
    assert!(addrs.contains("inet6 fd00:64::4/64") && !addrs.contains("inet "), "{addrs}");
    let status = s.status();
    assert_eq!(status["node"]["vpn_ip"], "fd00:64::4", "{status}");

    // s has never heard of d: the lighthouse answers its query for d's IPv6 address.
    assert!(wait_until(Duration::from_secs(10), || s.ping6("fd00:64::2")), "s → d:\n{}\n{}", s.log(), d.log());
    assert!(wait_until(Duration::from_secs(10), || d.ping6("fd00:64::4")), "d → s:\n{}\n{}", d.log(), s.log());
    // d reaches the v4-only f over the v4 overlay, and f reaches d.
    assert!(wait_until(Duration::from_secs(10), || d.ping("100.64.0.3")), "d → f:\n{}\n{}", d.log(), f.log());
    assert!(wait_until(Duration::from_secs(10), || f.ping("100.64.0.2")), "f → d:\n{}", f.log());
    // Each side names the other by its identity: the first network of its certificate.
    let d_status = d.status();
    assert_eq!(peer(&d_status, "s").map(|p| p["vpn_ip"].clone()), Some("fd00:64::4".into()), "{d_status}");
    assert_eq!(peer(&d_status, "f").map(|p| p["vpn_ip"].clone()), Some("100.64.0.3".into()), "{d_status}");
    let s_status = s.status();
    assert_eq!(peer(&s_status, "d").map(|p| p["vpn_ip"].clone()), Some("100.64.0.2".into()), "{s_status}");
    assert_eq!(peer(&s_status, "d").map(|p| p["relayed"].clone()), Some(false.into()), "{s_status}");

    // `cos-mesh ping` to the v6-only member, by name.
    let out = std::process::Command::new(BIN)
        .args(["ping", "-n", "1", "--socket", &d.socket().to_string_lossy(), "s"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("reply from s (fd00:64::4) directly at 198.18.0.4:"), "{text}");

    // A checksummed TCP stream d (ops) → s:5001 over the IPv6 overlay.
    let took = checksummed_stream(&d, &s, "[fd00:64::4]:5001", 32);
    assert!(took < Duration::from_secs(30), "2 MiB took {took:?}");
    // The group rule on s: the lighthouse (group lighthouse) is rejected on the same port.
    let listener = s.ns.run(|| std::net::TcpListener::bind("[fd00:64::4]:5001").unwrap());
    assert_eq!(connect(&lighthouse.ns, "[fd00:64::4]:5001"), Err(std::io::ErrorKind::ConnectionRefused));
    assert_eq!(connect(&d.ns, "[fd00:64::4]:5001"), Ok(()));
    drop(listener);
    let lh_status = lighthouse.status();
    assert_eq!(lh_status["counters"]["rx_malformed"].as_u64().unwrap_or(0), 0, "{}", lh_status["counters"]);
}
