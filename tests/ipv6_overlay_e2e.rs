//! The IPv6 overlay end to end: real daemons in network namespaces with v2 dual-stack
//! certificates (`100.64.0.n/10` and `fd00:64::n/64`) made by `cos-mesh ca --networks` and
//! `cos-mesh sign`. Three nodes on one segment, known to each other only by IPv6
//! `static_host_map` keys: `ping -6`, a checksummed TCP stream and a firewall group rule over
//! the IPv6 overlay. Then a lighthouse and two nodes behind NAT routers (`nft` masquerade): a
//! node that knows its peer only by the peer's IPv6 overlay address finds it through the
//! lighthouse and punches through both NATs.

mod support;

use std::time::Duration;

use support::daemon::{Host, Pki, Segment, checksummed_stream, connect};
use support::{Netns, Router, default_route, veth, wait_until};

/// The CA's networks: every node's v4 and v6 networks must lie inside them.
const CA_NETWORKS: &str = "100.64.0.0/10,fd00::/16";
/// Inbound: ICMP (and ICMPv6) from everyone, TCP 5001 from group `ops` only; the rest is
/// rejected (a TCP RST back through the tunnel).
const FIREWALL: &str = "  outbound:\n    - {port: any, proto: any, host: any}\n  inbound:\n    - {port: any, proto: icmp, host: any}\n    - {port: 5001, proto: tcp, group: ops}\n  inbound_action: reject";

/// A v2 CA with an IPv4 and an IPv6 network.
fn pki() -> Pki {
    Pki::v2("v6 CA", CA_NETWORKS)
}

/// Signs node `h` as number `n` (`100.64.0.n/10`, `fd00:64::n/64`) in `groups` and writes its
/// config.
fn configure(pki: &Pki, h: &Host, n: u8, groups: &str, statics: &[(&str, &str)], extra: &str) {
    let (crt, key) = pki.sign_networks(&h.name, &format!("{},{}/64", v4(n), v6(n)), groups);
    h.configure(&pki.ca_crt(), &crt, &key, statics, FIREWALL, extra);
}

fn v4(n: u8) -> String {
    format!("100.64.0.{n}/10")
}

fn v6(n: u8) -> String {
    format!("fd00:64::{n}")
}

fn assert_ping6(from: &Host, to: &Host, ip: &str) {
    assert!(
        wait_until(Duration::from_secs(10), || from.ping6(ip)),
        "{} cannot ping -6 {} ({ip}):\n{}\n{}",
        from.name,
        to.name,
        from.log(),
        to.log()
    );
}

fn peer_field(host: &Host, name: &str, field: &str) -> serde_json::Value {
    let status = host.status();
    let peers = status["peers"].as_array().cloned().unwrap_or_default();
    let p = peers.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no peer {name} in {status}"));
    p[field].clone()
}

#[test]
fn dual_stack_daemons_ping6_stream_and_filter_by_group_over_ipv6() {
    let pki = pki();
    let seg = Segment::new();
    // (name, n, groups): `c` runs the service; `a` is in ops, `b` is not.
    let nodes = [("a", 1u8, "ops"), ("b", 2, "dev"), ("c", 3, "ops,service")];
    let v6s: Vec<String> = nodes.iter().map(|(_, n, _)| v6(*n)).collect();
    let unders: Vec<String> = nodes.iter().map(|(_, n, _)| format!("198.18.0.{n}")).collect();
    let mut hosts: Vec<Host> = nodes
        .iter()
        .zip(&unders)
        .map(|((name, n, _), under)| Host::new(&seg, name, under, &v4(*n).replace("/10", "")))
        .collect();
    for (i, (h, (_, n, groups))) in hosts.iter().zip(&nodes).enumerate() {
        // Each node knows the others only by their IPv6 overlay addresses.
        let statics: Vec<(&str, &str)> =
            (0..nodes.len()).filter(|j| *j != i).map(|j| (v6s[j].as_str(), unders[j].as_str())).collect();
        configure(&pki, h, *n, groups, &statics, "");
    }
    for h in &mut hosts {
        h.start();
    }
    // nebula1 carries both addresses, with a route for each prefix.
    let addrs = hosts[0].ns.exec_ok("ip", &["addr", "show", "dev", &hosts[0].tun]);
    assert!(addrs.contains("inet 100.64.0.1/10") && addrs.contains("inet6 fd00:64::1/64"), "{addrs}");
    let routes = hosts[0].ns.exec_ok("ip", &["-6", "route", "show", "dev", &hosts[0].tun]);
    assert!(routes.contains("fd00:64::/64"), "{routes}");

    for (i, j) in [(0, 1), (1, 0), (0, 2), (2, 1)] {
        assert_ping6(&hosts[i], &hosts[j], &v6s[j]);
    }
    // The v4 overlay runs over the same tunnels.
    assert!(hosts[0].ping("100.64.0.3"));
    // `cos-mesh ping` takes an IPv6 overlay address and names the member that holds it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cos-mesh"))
        .args(["ping", "-n", "1", "--socket", &hosts[0].socket().to_string_lossy(), &v6s[2]])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("reply from c (100.64.0.3) directly at 198.18.0.3:"), "{text}");
    // status names both families: ours and each peer's IPv6 addresses.
    assert_eq!(hosts[0].status()["node"]["ipv6"], serde_json::json!(["fd00:64::1/64"]));
    assert_eq!(peer_field(&hosts[0], "c", "ipv6"), serde_json::json!(["fd00:64::3"]));

    // A checksummed TCP stream over the IPv6 overlay: a (ops) → c:5001.
    let took = checksummed_stream(&hosts[0], &hosts[2], "[fd00:64::3]:5001", 64);
    eprintln!("4 MiB over the IPv6 overlay, checksummed: {took:?}");
    assert!(took < Duration::from_secs(30), "4 MiB took {took:?}");
    // The group rule: b (dev) is dropped at c's firewall on the same port, and c counts it.
    let dropped_before = peer_field(&hosts[2], "b", "firewall_dropped").as_u64().unwrap_or(0);
    let listener = hosts[2].ns.run(|| std::net::TcpListener::bind("[fd00:64::3]:5001").unwrap());
    // c's firewall rejects: b's SYN is answered with an IPv6 TCP RST through the tunnel.
    let refused = connect(&hosts[1].ns, "[fd00:64::3]:5001");
    assert_eq!(refused, Err(std::io::ErrorKind::ConnectionRefused), "b (group dev) to c:5001 over IPv6");
    assert_eq!(connect(&hosts[0].ns, "[fd00:64::3]:5001"), Ok(()), "a (group ops) to c:5001 over IPv6");
    drop(listener);
    let dropped_after = peer_field(&hosts[2], "b", "firewall_dropped").as_u64().unwrap_or(0);
    assert!(dropped_after > dropped_before, "c did not count b's SYNs as dropped: {dropped_before} → {dropped_after}");
}

/// A host behind its own NAT router: the router at `198.18.0.<10n>` on the public segment
/// masquerades `198.19.<n>.0/24`; the host is `198.19.<n>.2`.
fn behind_nat(public: &Segment, n: u8, name: &str, vpn: &str) -> (Router, Host) {
    let router = Router::new();
    let wan = public.attach(&router.ns, &format!("198.18.0.{}/24", 10 * n));
    router.masquerade(&wan);
    let ns = Netns::new("h");
    veth(&router.ns, &format!("198.19.{n}.1/24"), &ns, &format!("198.19.{n}.2/24"));
    default_route(&ns, &format!("198.19.{n}.1"));
    (router, Host::in_ns(ns, name, &format!("198.19.{n}.2"), vpn))
}

#[test]
fn nodes_behind_nat_find_each_other_by_ipv6_overlay_address_via_the_lighthouse() {
    let pki = pki();
    let public = Segment::new();
    let mut lighthouse = Host::new(&public, "lighthouse", "198.18.0.1", "100.64.0.1");
    configure(&pki, &lighthouse, 1, "lighthouse", &[], "lighthouse:\n  am_lighthouse: true\n");
    lighthouse.start();
    // Nodes know the lighthouse (by its v4 overlay IP, as lighthouse.hosts lists it) and
    // nothing else: no relay, so only a punched direct path can carry their traffic.
    let extra = "lighthouse:\n  hosts: [100.64.0.1]\n  interval: 2\n";
    let statics = [("100.64.0.1", "198.18.0.1")];
    let (_ra, mut a) = behind_nat(&public, 1, "a", "100.64.0.11");
    let (_rb, mut b) = behind_nat(&public, 2, "b", "100.64.0.21");
    configure(&pki, &a, 11, "ops", &statics, extra);
    configure(&pki, &b, 21, "ops", &statics, extra);
    a.start();
    b.start();
    for h in [&a, &b] {
        let registered = wait_until(Duration::from_secs(10), || {
            h.try_status()
                .is_some_and(|s| s["lighthouses"].as_array().is_some_and(|l| l.iter().all(|x| x["up"] == true)))
        });
        assert!(registered, "{} did not reach the lighthouse:\n{}", h.name, h.log());
    }
    // a has never heard of fd00:64::21: the lighthouse answers the query for that v6 address.
    assert_ping6(&a, &b, &v6(21));
    assert_ping6(&b, &a, &v6(11));
    // Direct, through both NATs: a sees b at b's router's public address.
    let endpoint = peer_field(&a, "b", "endpoint");
    assert!(endpoint.as_str().is_some_and(|e| e.starts_with("198.18.0.20:")), "a reaches b at {endpoint}");
    assert_eq!(peer_field(&a, "b", "relayed"), false);
    let lh = lighthouse.status();
    let queries = lh["counters"]["lighthouse_queries"].as_u64();
    assert!(queries.is_some_and(|q| q >= 1), "the lighthouse answered no query: {}", lh["counters"]);
}

/// A host on `seg` with only an IPv6 underlay address, `2001:db8::<n>/64` (duplicate address
/// detection off, so the address works at once).
fn v6_underlay_host(seg: &Segment, name: &str, n: u8, vpn: &str) -> Host {
    let ns = Netns::new("h");
    for conf in ["all", "default"] {
        ns.exec_ok("sysctl", &["-q", "-w", &format!("net.ipv6.conf.{conf}.accept_dad=0")]);
    }
    seg.attach(&ns, &format!("2001:db8::{n}/64"));
    Host::in_ns(ns, name, &format!("[2001:db8::{n}]"), vpn)
}

/// `listen.host: "::"` instead of the helper's `0.0.0.0`.
fn listen_on_any_v6(h: &Host) {
    let text = std::fs::read_to_string(h.config_path()).unwrap();
    let text = text.replacen("listen:\n  host: 0.0.0.0\n", "listen:\n  host: \"::\"\n", 1);
    assert!(text.contains("host: \"::\""), "{text}");
    std::fs::write(h.config_path(), text).unwrap();
}

#[test]
fn an_ipv6_underlay_carries_the_overlay_and_the_lighthouse_protocol() {
    let pki = pki();
    let seg = Segment::new();
    let mut lighthouse = v6_underlay_host(&seg, "lighthouse", 1, "100.64.0.1");
    configure(&pki, &lighthouse, 1, "lighthouse", &[], "lighthouse:\n  am_lighthouse: true\n");
    listen_on_any_v6(&lighthouse);
    lighthouse.start();
    // The lighthouse's static_host_map entry is `[2001:db8::1]:4242`; a and b report their v6
    // addresses to it and learn each other's from its answer.
    let extra = "lighthouse:\n  hosts: [100.64.0.1]\n  interval: 2\n";
    let statics = [("100.64.0.1", "[2001:db8::1]")];
    let mut a = v6_underlay_host(&seg, "a", 2, "100.64.0.2");
    let mut b = v6_underlay_host(&seg, "b", 3, "100.64.0.3");
    for (h, n) in [(&a, 2), (&b, 3)] {
        configure(&pki, h, n, "ops", &statics, extra);
        listen_on_any_v6(h);
    }
    a.start();
    b.start();
    assert!(
        wait_until(Duration::from_secs(10), || b.try_status().is_some_and(|s| s["lighthouses"][0]["up"] == true)),
        "b did not reach the lighthouse over IPv6:\n{}",
        b.log()
    );
    assert_ping6(&a, &b, &v6(3));
    assert!(a.ping("100.64.0.3"), "the v4 overlay over the v6 underlay");
    let endpoint = peer_field(&a, "b", "endpoint");
    assert_eq!(endpoint, "[2001:db8::3]:4242", "a reaches b over the IPv6 underlay");

    // The lighthouse's socket on :: is dual-stack: a node with only an IPv4 underlay reaches it
    // at 198.18.0.1 and is seen as IPv4 (not ::ffff:198.18.0.5).
    seg.attach(&lighthouse.ns, "198.18.0.1/24");
    let mut c = Host::new(&seg, "c", "198.18.0.5", "100.64.0.5");
    configure(&pki, &c, 5, "ops", &[("100.64.0.1", "198.18.0.1")], extra);
    c.start();
    assert_ping6(&c, &lighthouse, &v6(1));
    assert_eq!(peer_field(&lighthouse, "c", "endpoint"), "198.18.0.5:4242");
}

/// `cos-mesh check` on a dual-stack node: a `tun.mtu` IPv6 cannot run on, and an IPv6
/// `static_host_map` key outside the certificate's v6 network, are refused naming the key.
#[test]
fn check_refuses_what_an_ipv6_overlay_cannot_use() {
    let pki = pki();
    let (crt, key) = pki.sign_networks("n", &format!("{},{}/64", v4(5), v6(5)), "ops");
    let check = |extra: &str| {
        let config = pki.dir.path().join("config.yml");
        let text = format!(
            "pki:\n  ca: {}\n  cert: {}\n  key: {}\n{extra}",
            pki.ca_crt().display(),
            crt.display(),
            key.display()
        );
        std::fs::write(&config, text).unwrap();
        let out = std::process::Command::new(support::daemon::BIN)
            .args(["check", "-c", &config.to_string_lossy()])
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = check("static_host_map:\n  \"fd00:64::9\": [\"[2001:db8::9]:4242\"]\n");
    assert!(ok, "{err}");
    let (ok, err) = check("tun:\n  mtu: 1200\n");
    assert!(!ok && err.contains("tun.mtu: 1200 is below 1280, the smallest MTU IPv6 allows"), "{err}");
    let (ok, err) = check("static_host_map:\n  \"fd00:99::9\": [\"198.18.0.9:4242\"]\n");
    assert!(
        !ok && err.contains("static_host_map.fd00:99::9: fd00:99::9 is outside the IPv6 overlay networks fd00:64::/64"),
        "{err}"
    );
}
