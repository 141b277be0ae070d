//! Discovery across real NAT: a "public" segment (198.18.0.0/24) with two lighthouses and a
//! relay; environment A (198.19.1.0/24) and environment B (198.19.2.0/24) each behind its own
//! router namespace doing `nft` masquerade. Nodes know only the lighthouses' addresses.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::daemon::{Host, Pki, Segment};
use support::{Netns, Router, default_route, veth, wait_until};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn rules(roles: &[&str]) -> String {
    let files: Vec<String> = roles.iter().map(|r| format!("{REPO}/firewall/{r}.yaml")).collect();
    format!("  include: [{}]", files.join(", "))
}

const LIGHTHOUSES: [(&str, &str); 2] = [("100.64.0.1", "198.18.0.1"), ("100.64.0.2", "198.18.0.2")];

struct World {
    pki: Pki,
    public: Segment,
    routers: Vec<(Router, String)>,
    lighthouses: Vec<Host>,
    relay: Host,
    server: Host,
    client: Host,
}

/// An environment behind NAT: router `n` (public 198.18.0.1n) in front of 198.19.n.0/24.
fn environment(public: &Segment, n: u8) -> (Router, String) {
    let router = Router::new();
    let public_if = public.attach(&router.ns, &format!("198.18.0.{}/24", 10 * n));
    router.masquerade(&public_if);
    (router, public_if)
}

/// A host on its own link 198.19.n.0/24 behind `router` (at 198.19.n.1), at 198.19.n.`h`.
fn env_host(router: &Router, n: u8, h: u8, name: &str, vpn: &str) -> Host {
    let ns = Netns::new("h");
    veth(&router.ns, &format!("198.19.{n}.1/24"), &ns, &format!("198.19.{n}.{h}/24"));
    default_route(&ns, &format!("198.19.{n}.1"));
    Host::in_ns(ns, name, &format!("198.19.{n}.{h}"), vpn)
}

fn node_extra(relay: bool) -> String {
    let mut s = String::from("lighthouse:\n  hosts: [100.64.0.1, 100.64.0.2]\n  interval: 2\n");
    if relay {
        s.push_str("relay:\n  relays: [100.64.0.3]\n");
    }
    s
}

impl World {
    fn new() -> World {
        let pki = Pki::new("nat");
        let public = Segment::new();
        let mut lighthouses = vec![];
        for (i, (vpn, under)) in LIGHTHOUSES.iter().enumerate() {
            let name = format!("lighthouse-{}", i + 1);
            let mut h = Host::new(&public, &name, under, vpn);
            let (crt, key) = pki.sign(&name, &format!("{vpn}/10"), "lighthouse");
            // The first lighthouse and the relay run two data-path workers (`routines`), the
            // second lighthouse one: discovery and relaying must not care.
            let workers = if i == 0 { "routines: 2\n" } else { "" };
            h.configure(
                &pki.ca_crt(),
                &crt,
                &key,
                &[],
                &rules(&["base"]),
                &format!("lighthouse:\n  am_lighthouse: true\n{workers}"),
            );
            h.start();
            lighthouses.push(h);
        }
        let statics: Vec<(&str, &str)> = LIGHTHOUSES.to_vec();
        let mut relay = Host::new(&public, "relay", "198.18.0.3", "100.64.0.3");
        let (crt, key) = pki.sign("relay", "100.64.0.3/10", "relay");
        relay.configure(
            &pki.ca_crt(),
            &crt,
            &key,
            &statics,
            &rules(&["base"]),
            &format!("{}relay:\n  am_relay: true\nroutines: 2\n", node_extra(false)),
        );
        relay.start();
        let routers = vec![environment(&public, 1), environment(&public, 2)];
        let mut server = env_host(&routers[0].0, 1, 2, "server", "100.64.0.11");
        let (crt, key) = pki.sign("server", "100.64.0.11/10", "nomad-server");
        server.configure(&pki.ca_crt(), &crt, &key, &statics, &rules(&["base", "nomad-server"]), &node_extra(true));
        server.start();
        let mut client = env_host(&routers[1].0, 2, 2, "client", "100.64.0.21");
        let (crt, key) = pki.sign("client", "100.64.0.21/10", "nomad-client");
        client.configure(&pki.ca_crt(), &crt, &key, &statics, &rules(&["base", "nomad-client"]), &node_extra(true));
        client.start();
        for h in [&lighthouses[0], &relay] {
            assert!(h.log().contains("2 workers (routines)"), "{}", h.log());
        }
        let w = World { pki, public, routers, lighthouses, relay, server, client };
        for h in [&w.server, &w.client, &w.relay] {
            let registered = wait_until(Duration::from_secs(10), || {
                h.try_status()
                    .is_some_and(|s| s["lighthouses"].as_array().is_some_and(|l| l.iter().all(|x| x["up"] == true)))
            });
            assert!(registered, "{} did not reach both lighthouses:\n{}", h.name, h.log());
        }
        w
    }

    /// Blocks UDP between the two environments' public addresses (a firewall between them,
    /// or NATs too hostile to punch): only the relay can connect them.
    fn block_direct(&self) {
        for (n, other) in [(0usize, "198.18.0.20"), (1, "198.18.0.10")] {
            let ns = &self.routers[n].0.ns;
            ns.exec_ok("nft", &["add", "table", "ip", "block"]);
            ns.exec_ok("nft", &["add chain ip block blockfwd { type filter hook forward priority 0 ; }"]);
            ns.exec_ok("nft", &["add chain ip block blockin { type filter hook prerouting priority -300 ; }"]);
            ns.exec_ok("nft", &["add", "rule", "ip", "block", "blockin", "ip", "saddr", other, "drop"]);
            ns.exec_ok("nft", &["add", "rule", "ip", "block", "blockfwd", "ip", "daddr", other, "drop"]);
        }
    }
}

/// Pings `ip` from `host` every 50 ms; the time from the first echo sent to the first answer
/// received (the answered echo's send time plus its round trip, which includes any wait for
/// the handshake).
fn first_answer(host: &Host, ip: &str) -> Option<Duration> {
    let out = host.ns.exec("ping", &["-c", "100", "-i", "0.05", "-W", "2", "-w", "8", ip]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("icmp_seq="))?;
    let seq: u64 = line.split("icmp_seq=").nth(1)?.split_whitespace().next()?.parse().ok()?;
    let rtt_ms: f64 = line.split("time=").nth(1)?.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_millis((seq - 1) * 50) + Duration::from_secs_f64(rtt_ms / 1000.0))
}

fn can_connect(ns: &Netns, addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(3)).is_ok())
}

fn peer<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no peer {name} in {status}"))
}

#[test]
fn nodes_behind_two_nats_find_each_other_directly() {
    let w = World::new();
    // The client has never seen the server and has no address for it.
    let took = first_answer(&w.client, "100.64.0.11")
        .unwrap_or_else(|| panic!("no answer:\n{}\n{}", w.client.log(), w.server.log()));
    eprintln!("time to first packet across two NATs: {took:?} (50 ms resolution)");
    assert!(took < Duration::from_secs(1), "first packet after {took:?}");
    let s = w.client.status();
    let p = peer(&s, "server");
    assert_eq!(p["relayed"], false, "expected a punched direct path: {p}");
    assert!(p["endpoint"].as_str().unwrap().starts_with("198.18.0.10:"), "via router A's public address: {p}");
    // Each reaches the other's Nomad RPC port across the overlay.
    let _rpc_server = w.server.ns.spawn("memcached", &["-u", "root", "-l", "100.64.0.11", "-p", "4647", "-U", "0"]);
    let _rpc_client = w.client.ns.spawn("memcached", &["-u", "root", "-l", "100.64.0.21", "-p", "4647", "-U", "0"]);
    assert!(wait_until(Duration::from_secs(5), || can_connect(&w.client.ns, "100.64.0.11:4647")));
    assert!(wait_until(Duration::from_secs(5), || can_connect(&w.server.ns, "100.64.0.21:4647")));
    // members, as Nomad's retry_join would run it, lists the server.
    let out = std::process::Command::new(support::daemon::BIN)
        .args([
            "members",
            "--group",
            "nomad-server",
            "--format",
            "addrs",
            "--socket",
            &w.client.socket().to_string_lossy(),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "100.64.0.11", "{out:?}");
    drop(w.pki);
}

#[test]
fn blocked_environments_talk_through_the_relay() {
    let w = World::new();
    w.block_direct();
    let took = first_answer(&w.client, "100.64.0.11");
    eprintln!("time to first packet through the relay: {took:?}");
    assert!(took.is_some(), "no answer through the relay:\n{}\n{}\n{}", w.client.log(), w.server.log(), w.relay.log());
    let s = w.client.status();
    assert_eq!(peer(&s, "server")["relayed"], true, "{s}");
    let _rpc = w.server.ns.spawn("memcached", &["-u", "root", "-l", "100.64.0.11", "-p", "4647", "-U", "0"]);
    assert!(wait_until(Duration::from_secs(5), || can_connect(&w.client.ns, "100.64.0.11:4647")));
    let forwarded = w.relay.status()["counters"]["relay_forwarded"].as_u64().unwrap();
    assert!(forwarded > 0);
}

#[test]
fn losing_a_lighthouse_loses_nothing_that_is_up() {
    let mut w = World::new();
    assert!(first_answer(&w.client, "100.64.0.11").is_some());
    w.lighthouses[0].kill();
    std::thread::sleep(Duration::from_secs(3));
    assert!(w.client.ping("100.64.0.11"), "the established tunnel does not need the lighthouse");
    // A newcomer in environment A joins through lighthouse-2 alone and reaches the client in B.
    let mut newcomer = env_host(&w.routers[0].0, 3, 2, "newcomer", "100.64.0.31");
    let (crt, key) = w.pki.sign("newcomer", "100.64.0.31/10", "nomad-client");
    newcomer.configure(&w.pki.ca_crt(), &crt, &key, &LIGHTHOUSES, &rules(&["base", "nomad-client"]), &node_extra(true));
    newcomer.start();
    let took = first_answer(&newcomer, "100.64.0.21");
    assert!(took.is_some(), "newcomer could not reach the client:\n{}", newcomer.log());
}

#[test]
fn a_node_that_moves_keeps_its_tunnels() {
    let w = World::new();
    assert!(first_answer(&w.client, "100.64.0.11").is_some());
    // The client leaves environment B for the public segment (a new underlay address).
    let old_if = w.client.ns.exec_ok("ip", &["-o", "-4", "addr", "show", "to", "198.19.2.2"]);
    let old_if = old_if.split_whitespace().nth(1).unwrap().to_string();
    w.client.ns.exec_ok("ip", &["link", "set", &old_if, "down"]);
    w.public.attach(&w.client.ns, "198.18.0.50/24");
    let moved = Instant::now();
    let back = wait_until(Duration::from_secs(20), || w.client.ping("100.64.0.11"));
    eprintln!("tunnel working again {:?} after the move", moved.elapsed());
    assert!(back, "the tunnel did not follow:\n{}\n{}", w.client.log(), w.server.log());
    assert!(wait_until(Duration::from_secs(5), || w.server.ping("100.64.0.21")));
    // The move may first land on the relay (the old direct path is probed, found dead and left);
    // a direct path is re-adopted once a probe on it is answered (every 5 s): the server must
    // follow the client to its new underlay address.
    let mut endpoint = String::new();
    let direct = wait_until(Duration::from_secs(15), || {
        endpoint = peer(&w.server.status(), "client")["endpoint"].as_str().unwrap_or_default().to_string();
        endpoint.starts_with("198.18.0.50:")
    });
    assert!(direct, "the server follows the client to {endpoint}");
}
