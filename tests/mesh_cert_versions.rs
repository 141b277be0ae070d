//! A v1 node and a v2 node of one mesh talk, dual-stack v2 nodes talk over IPv6, and a
//! dual-stack node talks to v4-only and v6-only peers: whole
//! `mesh::Node`s with real certificates of both
//! versions exchange handshakes and data through the in-memory network of `simnet`. Needs
//! `--features sim` (`cargo test --features sim --test mesh_cert_versions`).
#![cfg(feature = "sim")]

mod simnet;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use cos_mesh::cert::keys::{CaSecret, HostSecret};
use cos_mesh::cert::pool::{Blocklist, CaPool};
use cos_mesh::cert::{Certificate, Tbs, Version};
use cos_mesh::mesh::Event;
use cos_mesh::unixtime::UnixTime;
use simnet::{Ca, Settings, Sim, WALL0, underlay, vpn};

fn ca(version: Version, name: &str) -> Ca {
    let key = CaSecret::generate();
    let tbs = Tbs {
        version,
        name: name.into(),
        networks: vec!["100.64.0.0/10".parse().unwrap(), "fd00::/16".parse().unwrap()]
            .into_iter()
            .filter(|n: &ipnet::IpNet| version == Version::V2 || n.addr().is_ipv4())
            .collect(),
        unsafe_networks: vec![],
        groups: vec![],
        not_before: UnixTime(WALL0 - 10),
        not_after: UnixTime(WALL0 + 365 * 86_400),
        public_key: key.public(),
        is_ca: true,
        issuer: None,
    };
    let cert = Certificate::sign_tbs(&tbs, key.signing_key()).unwrap();
    Ca { key, cert }
}

/// A node certificate of `version` for `100.64.0.<n>` (and `fd00::<n>` when v2).
fn node(ca: &Ca, version: Version, name: &str, n: u8) -> (Certificate, HostSecret) {
    let mut networks = vec![format!("100.64.0.{n}/10").parse().unwrap()];
    if version == Version::V2 {
        networks.push(format!("fd00::{n}/64").parse().unwrap());
    }
    node_with_networks(ca, version, name, networks)
}

/// A node certificate of `version` for exactly `networks`, with a new key.
fn node_with_networks(ca: &Ca, version: Version, name: &str, networks: Vec<ipnet::IpNet>) -> (Certificate, HostSecret) {
    let key = HostSecret::generate();
    let tbs = Tbs {
        version,
        name: name.into(),
        networks,
        unsafe_networks: vec![],
        groups: vec![],
        not_before: UnixTime(WALL0 - 5),
        not_after: UnixTime(WALL0 + 86_400),
        public_key: key.public().0,
        is_ca: false,
        issuer: Some(ca.cert.fingerprint()),
    };
    (Certificate::sign_tbs(&tbs, ca.key.signing_key()).unwrap(), key)
}

/// Runs a two-node exchange and checks data flows both ways and each names the other.
fn exchange(sim: &mut Sim, a: usize, b: usize) {
    sim.send(a, vpn(2), b"from-a");
    sim.run(Duration::from_millis(100));
    assert!(sim.received(b, b"from-a"), "b got {:?}", sim.nodes[b].tun);
    sim.send(b, vpn(1), b"from-b");
    sim.run(Duration::from_millis(50));
    assert!(sim.received(a, b"from-b"), "a got {:?}", sim.nodes[a].tun);
    for (i, other) in [(a, "b"), (b, "a")] {
        let peers = sim.nodes[i].node.peers(sim.now);
        assert!(peers.len() == 1 && peers[0].up && peers[0].name == other, "{peers:?}");
    }
}

/// Nodes `a` (100.64.0.1) and `b` (100.64.0.2) of `ca` with certificates of `versions`, each
/// knowing the other by its IPv4 overlay IP.
fn pair(sim: &mut Sim, ca: &Ca, versions: [Version; 2]) -> (usize, usize) {
    sim.add_pair(ca, node(ca, versions[0], "a", 1), node(ca, versions[1], "b", 2))
}

/// Nebula's migration path: a v2 CA signs a v1 certificate for an old node and a v2
/// (dual-stack) certificate for a new one; the two nodes verify each other and talk.
#[test]
fn a_v1_node_and_a_v2_node_of_one_v2_ca_talk() {
    let mut sim = Sim::new();
    let ca = ca(Version::V2, "v2 ca");
    let (a, b) = pair(&mut sim, &ca, [Version::V1, Version::V2]);
    let version = |i: usize| sim.nodes[i].node.cert().version();
    assert_eq!((version(a), version(b)), (Version::V1, Version::V2));
    exchange(&mut sim, a, b);
}

/// A mixed CA pool: the v1 node's certificate comes from a v1 CA, the v2 node's from a v2 CA,
/// and both nodes trust both CAs (one bundle, as `pki.ca` holds it).
fn mixed_pool_pair(sim: &mut Sim, blocklist_b_on_a: bool) -> (usize, usize) {
    let (old, new) = (ca(Version::V1, "old ca"), ca(Version::V2, "new ca"));
    let bundle = format!("{}{}", old.cert.to_pem(), new.cert.to_pem());
    let (ca_cert, ka) = node(&old, Version::V1, "a", 1);
    let (cb_cert, kb) = node(&new, Version::V2, "b", 2);
    let mut cfg_a = Sim::config(&old, ca_cert, ka, &[(2, underlay(2))]);
    let mut cfg_b = Sim::config(&new, cb_cert.clone(), kb, &[(1, underlay(1))]);
    cfg_a.pool = CaPool::from_pem(bundle.as_bytes()).unwrap();
    cfg_b.pool = CaPool::from_pem(bundle.as_bytes()).unwrap();
    assert_eq!(cfg_a.pool.len(), 2);
    if blocklist_b_on_a {
        let mut blocklist = Blocklist::default();
        blocklist.insert(cb_cert.fingerprint());
        cfg_a.blocklist = blocklist;
    }
    (sim.add(cfg_a, 1), sim.add(cfg_b, 2))
}

#[test]
fn nodes_under_a_mixed_v1_v2_ca_pool_talk() {
    let mut sim = Sim::new();
    let (a, b) = mixed_pool_pair(&mut sim, false);
    exchange(&mut sim, a, b);
}

/// The blocklist takes a v2 fingerprint: the v1 node refuses the blocklisted v2 peer.
#[test]
fn a_blocklisted_v2_certificate_is_refused() {
    let mut sim = Sim::new();
    let (a, b) = mixed_pool_pair(&mut sim, true);
    sim.send(b, vpn(1), b"from-blocked-b");
    sim.send(a, vpn(2), b"to-blocked-b");
    sim.run(Duration::from_secs(2));
    assert!(!sim.received(a, b"from-blocked-b") && !sim.received(b, b"to-blocked-b"));
    assert!(sim.nodes[a].node.peers(sim.now).iter().all(|p| !p.up));
}

/// A v2 certificate verified once is not verified again: its fingerprint is not the hash of its
/// bytes (unlike v1's), and the verified-certificate cache must still find it. Fifty Hellos
/// carrying the known v2 certificate in one instant cost no verification budget.
#[test]
fn a_known_v2_certificate_is_served_from_the_cache() {
    let mut sim = Sim::new();
    let ca = ca(Version::V2, "v2 ca");
    let (ca_cert, ka) = node(&ca, Version::V1, "a", 1);
    let (cb_cert, kb) = node(&ca, Version::V2, "b", 2);
    let hello = cos_mesh::mesh::wire::hello(5, cb_cert.to_bytes());
    let (a, b) = sim.add_pair(&ca, (ca_cert, ka), (cb_cert, kb));
    exchange(&mut sim, a, b);
    let before = sim.nodes[a].node.counters().rx_rate_limited;
    for _ in 0..50 {
        sim.transmit(underlay(2), underlay(1), None, hello.clone());
    }
    sim.run(Duration::from_millis(20));
    assert_eq!(sim.nodes[a].node.counters().rx_rate_limited, before, "the known v2 certificate was verified again");
}

// ----- IPv6 overlay: dual-stack v2 certificates ----------------------------------------------

/// `fd00::<n>`, the IPv6 overlay address `node` gives a v2 certificate.
fn v6(n: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(n))
}

/// A minimal IPv6/UDP packet; the payload identifies it in assertions.
fn ip6_packet(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let udp_len = (UDP_HEADER + payload.len()) as u16;
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&udp_len.to_be_bytes());
    p.extend_from_slice(&[PROTO_UDP, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0x30, 0x39, 0x30, 0x39]);
    p.extend_from_slice(&udp_len.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

const UDP_HEADER: usize = 8;
const PROTO_UDP: u8 = 17;
/// Where the payload of [`ip6_packet`] starts.
const IP6_PAYLOAD_AT: usize = 40 + UDP_HEADER;

/// Whether node `i` wrote an IPv6 packet from `src` carrying `data` to its TUN.
fn received6(sim: &Sim, i: usize, src: Ipv6Addr, data: &[u8]) -> bool {
    sim.nodes[i].tun.iter().any(|p| p[0] >> 4 == 6 && p[8..24] == src.octets() && p.get(IP6_PAYLOAD_AT..) == Some(data))
}

/// Node `from`'s host sends `data` from `fd00::<src>` to `fd00::<dst>`; whether node `to`
/// wrote it to its TUN within 200 ms (time for a first handshake).
fn deliver6(sim: &mut Sim, (from, src): (usize, u8), (to, dst): (usize, u8), data: &[u8]) -> bool {
    sim.send_packet(from, &ip6_packet(v6(src), v6(dst), data));
    sim.run(Duration::from_millis(200));
    received6(sim, to, v6(src), data)
}

/// Two dual-stack nodes: node `a` knows `b` only by an IPv6 `static_host_map` key.
fn dual_stack_pair(sim: &mut Sim) -> (usize, usize) {
    let ca = ca(Version::V2, "v2 ca");
    let (ca_cert, ka) = node(&ca, Version::V2, "a", 1);
    let (cb_cert, kb) = node(&ca, Version::V2, "b", 2);
    let mut cfg_a = Sim::config(&ca, ca_cert, ka, &[]);
    cfg_a.static_hosts = HashMap::from([(IpAddr::V6(v6(2)), vec![underlay(2)])]);
    let a = sim.add(cfg_a, 1);
    let b = sim.add(Sim::config(&ca, cb_cert, kb, &[(1, underlay(1))]), 2);
    (a, b)
}

/// A packet to a peer's IPv6 overlay address reaches the peer whose certificate holds it, met
/// through an IPv6 static_host_map key, and the answer comes back over the same tunnel.
#[test]
fn dual_stack_nodes_talk_over_their_ipv6_overlay_addresses() {
    let mut sim = Sim::new();
    let (a, b) = dual_stack_pair(&mut sim);
    assert!(deliver6(&mut sim, (a, 1), (b, 2), b"v6-from-a"), "b got {:?}", sim.nodes[b].tun);
    assert!(deliver6(&mut sim, (b, 2), (a, 1), b"v6-from-b"), "a got {:?}", sim.nodes[a].tun);
    // One tunnel carries both families: the v4 overlay works on it too, with no new handshake.
    let handshakes =
        sim.nodes[a].node.counters().handshakes_initiated + sim.nodes[b].node.counters().handshakes_initiated;
    sim.send(a, vpn(2), b"v4-from-a");
    sim.run(Duration::from_millis(50));
    assert!(sim.received(b, b"v4-from-a"));
    assert_eq!(
        sim.nodes[a].node.counters().handshakes_initiated + sim.nodes[b].node.counters().handshakes_initiated,
        handshakes
    );
    let peers = sim.nodes[a].node.peers(sim.now);
    assert!(peers.len() == 1 && peers[0].up && peers[0].vpn_ip == vpn(2), "{peers:?}");
}

/// The address index follows certificates: when `b` is re-provisioned (new key, same IPv4
/// overlay IP, another IPv6 address), packets for its new v6 address reach it and its old v6
/// address no longer leads to it.
#[test]
fn the_address_index_follows_a_replaced_certificate() {
    let mut sim = Sim::new();
    let ca = ca(Version::V2, "v2 ca");
    let (a, b) = pair(&mut sim, &ca, [Version::V2, Version::V2]);
    // Met by its IPv4 address (the static_host_map key); then its certificate's v6 address
    // routes to it too.
    sim.send(a, vpn(2), b"hello b");
    sim.run(Duration::from_millis(200));
    assert!(deliver6(&mut sim, (a, 1), (b, 2), b"before"));
    let networks = vec!["100.64.0.2/10".parse().unwrap(), "fd00::77/64".parse().unwrap()];
    let (new_cert, new_key) = node_with_networks(&ca, Version::V2, "b-new", networks);
    sim.restart(b, Sim::config(&ca, new_cert, new_key, &[(1, underlay(1))]));
    sim.send(b, vpn(1), b"b is back");
    sim.run(Duration::from_millis(200));
    assert!(sim.received(a, b"b is back"));
    assert!(deliver6(&mut sim, (a, 1), (b, 0x77), b"to-the-new-address"), "b got {:?}", sim.nodes[b].tun);
    assert!(!deliver6(&mut sim, (a, 1), (b, 2), b"to-the-old-address"), "the old v6 address still routes to b");
    // The old address is unknown again (not a stale entry): a looks for it, and gives up.
    sim.run(Duration::from_secs(8));
    let gave_up = Event::HandshakeTimedOut { vpn_ip: IpAddr::V6(v6(2)) };
    assert!(sim.nodes[a].events.contains(&gave_up), "{:?}", sim.nodes[a].events);
    let peers = sim.nodes[a].node.peers(sim.now);
    assert!(peers.len() == 1 && peers[0].name == "b-new", "{peers:?}");
}

/// A reload whose certificate keeps the IPv4 overlay IP but changes the IPv6 network is
/// refused (the TUN carries the running one), as Nebula refuses it; a renewal is taken.
#[test]
fn a_reload_that_changes_the_ipv6_network_needs_a_restart() {
    let mut sim = Sim::new();
    let ca = ca(Version::V2, "v2 ca");
    let (a, _) = pair(&mut sim, &ca, [Version::V2, Version::V2]);
    let wall = sim.wall();
    let moved = vec!["100.64.0.1/10".parse().unwrap(), "fd00::99/64".parse().unwrap()];
    let (cert, _) = node_with_networks(&ca, Version::V2, "a", moved);
    let err = sim.nodes[a].node.reload_trust(ca.pool(), Blocklist::default(), cert, wall).unwrap_err();
    assert_eq!(
        err.to_string(),
        "pki.cert: the new certificate's networks (100.64.0.1/10, fd00::99/64) differ from those this node runs with (100.64.0.1/10, fd00::1/64); changing them needs a restart"
    );
    let mut tbs = sim.nodes[a].node.cert().tbs().clone();
    tbs.not_after = UnixTime(tbs.not_after.0 + 86_400);
    let renewed = Certificate::sign_tbs(&tbs, ca.key.signing_key()).unwrap();
    sim.nodes[a].node.reload_trust(ca.pool(), Blocklist::default(), renewed, wall).expect("a renewal is taken");
}

/// Anti-spoofing on IPv6: a peer may only send from its certificate's addresses.
#[test]
fn ipv6_packets_from_addresses_the_certificate_lacks_are_dropped() {
    let mut sim = Sim::new();
    let (a, b) = dual_stack_pair(&mut sim);
    assert!(deliver6(&mut sim, (a, 1), (b, 2), b"open"));
    let spoofed = sim.nodes[a].node.counters().rx_spoofed;
    // b's host forges a source in the overlay's v6 network that b's certificate does not hold.
    sim.send_packet(b, &ip6_packet(v6(9), v6(1), b"forged-source"));
    sim.run(Duration::from_millis(50));
    assert!(!received6(&sim, a, v6(9), b"forged-source"));
    assert_eq!(sim.nodes[a].node.counters().rx_spoofed, spoofed + 1);
}

/// A lighthouse (node 1) and a relay (node 3) on the public segment, and dual-stack nodes
/// `a` (2) and `b` (4) that know only them; `a` knows `b` by nothing. Returns (lighthouse, relay,
/// a, b).
fn lighthouse_world(sim: &mut Sim) -> [usize; 4] {
    let ca = ca(Version::V2, "v2 ca");
    let mut add = |name: &str, n: u8, am_lighthouse: bool, am_relay: bool| {
        let relays: &[u8] = if am_lighthouse || am_relay { &[] } else { &[3] };
        let cfg = Settings::of(&ca, node(&ca, Version::V2, name, n)).knows(&[1, 3]).lighthouses(&[1]);
        sim.add(cfg.relays(relays).serves(am_lighthouse, am_relay).config(), n)
    };
    let world = [
        add("lighthouse", 1, true, false),
        add("relay", 3, false, true),
        add("a", 2, false, false),
        add("b", 4, false, false),
    ];
    sim.run(Duration::from_secs(1));
    world
}

/// A node that knows a peer by nothing but its IPv6 overlay address asks the lighthouse, which
/// indexes registrations by every network of the certificate: the answer (with the certificate)
/// starts the handshake, and the packet that waited arrives.
#[test]
fn a_lighthouse_answers_a_query_for_an_ipv6_overlay_address() {
    let mut sim = Sim::new();
    let [lh, relay, a, b] = lighthouse_world(&mut sim);
    let queries = sim.nodes[lh].node.counters().lighthouse_queries;
    assert!(deliver6(&mut sim, (a, 2), (b, 4), b"found-by-v6"), "b got {:?}", sim.nodes[b].tun);
    assert_eq!(sim.nodes[lh].node.counters().lighthouse_queries, queries + 1, "one query, about fd00::4");
    assert_eq!(sim.nodes[lh].node.counters().lighthouse_unknown_queries, 0);
    let peers = sim.nodes[a].node.peers(sim.now);
    assert!(peers.iter().any(|p| p.name == "b" && p.up && !p.relayed), "{peers:?}");
    assert_eq!(sim.nodes[relay].node.counters().relay_forwarded, 0, "a direct path needs no relay");
}

/// With no direct path between `a` and `b`, IPv6 overlay traffic found by a v6 query goes
/// through the relay the lighthouse named (relayed datagrams are family-agnostic ciphertext).
#[test]
fn ipv6_overlay_traffic_goes_through_a_relay_when_no_direct_path_works() {
    let mut sim = Sim::new();
    let [_, relay, a, b] = lighthouse_world(&mut sim);
    let (ua, ub) = (underlay(2), underlay(4));
    sim.filter = Box::new(move |_, from, to, _| !((from == ua && to == ub) || (from == ub && to == ua)));
    sim.send_packet(a, &ip6_packet(v6(2), v6(4), b"via-relay-v6"));
    let took = sim.run_until(Duration::from_secs(5), |s| received6(s, b, v6(2), b"via-relay-v6"));
    assert!(took.is_some(), "never arrived: {:?}", sim.nodes[a].node.counters());
    assert!(deliver6(&mut sim, (b, 4), (a, 2), b"v6-reply-via-relay"));
    let peers = sim.nodes[a].node.peers(sim.now);
    assert!(peers.iter().any(|p| p.name == "b" && p.up && p.relayed), "{peers:?}");
    assert!(sim.nodes[relay].node.counters().relay_forwarded >= 2);
}

// ----- IPv6-only certificates: a dual-stack node talks to v4-only and v6-only peers -----------

/// A dual-stack lighthouse that also relays (node 1: `100.64.0.1`, `fd00::1`), a dual-stack node
/// `d` (2), a v4-only node `f` (3: `100.64.0.3` only) and a v6-only node `s` (4: `fd00::4` only),
/// all v2 certificates of one CA. `d` and `f` know the lighthouse (and relay) by its IPv4 overlay
/// address, `s` by its IPv6 one; nobody knows anybody else. Returns (lighthouse, d, f, s).
fn family_world(sim: &mut Sim) -> [usize; 4] {
    let ca = ca(Version::V2, "v2 ca");
    let lh = sim.add(Settings::of(&ca, node(&ca, Version::V2, "lighthouse", 1)).serves(true, true).config(), 1);
    let mut add = |name: &str, n: u8, networks: Vec<ipnet::IpNet>, lighthouse: IpAddr| {
        let cert = node_with_networks(&ca, Version::V2, name, networks);
        sim.add(Settings::of(&ca, cert).served_by_at(1, lighthouse).config(), n)
    };
    let by_v4 = IpAddr::V4(vpn(1));
    let d = add("d", 2, vec!["100.64.0.2/10".parse().unwrap(), "fd00::2/64".parse().unwrap()], by_v4);
    let f = add("f", 3, vec!["100.64.0.3/10".parse().unwrap()], by_v4);
    let s = add("s", 4, vec!["fd00::4/64".parse().unwrap()], IpAddr::V6(v6(1)));
    sim.run(Duration::from_secs(1));
    [lh, d, f, s]
}

fn peer_named(sim: &Sim, i: usize, name: &str) -> cos_mesh::mesh::PeerInfo {
    let peers = sim.nodes[i].node.peers(sim.now);
    peers.iter().find(|p| p.name == name).cloned().unwrap_or_else(|| panic!("no peer {name}: {peers:?}"))
}

/// The v6-only node registers with the lighthouse it knows by an IPv6 address and is known by
/// its IPv6 identity; it finds the dual-stack node by the latter's IPv6 address (query, punch,
/// handshake), while the dual-stack node talks IPv4 with the v4-only one. No control message
/// anywhere is refused as malformed.
#[test]
fn a_dual_stack_node_talks_to_v4_only_and_v6_only_peers() {
    let mut sim = Sim::new();
    let [lh, d, f, s] = family_world(&mut sim);
    assert_eq!(sim.nodes[s].node.vpn_ip(), IpAddr::V6(v6(4)), "a v6-only node's identity is its v6 address");
    let registered: Vec<IpAddr> = sim.nodes[lh].node.registrations(sim.now).iter().map(|r| r.vpn_ip).collect();
    assert_eq!(registered, vec![IpAddr::V4(vpn(2)), IpAddr::V4(vpn(3)), IpAddr::V6(v6(4))]);

    assert!(deliver6(&mut sim, (s, 4), (d, 2), b"v6-only to dual"), "d got {:?}", sim.nodes[d].tun);
    assert!(deliver6(&mut sim, (d, 2), (s, 4), b"dual to v6-only"), "s got {:?}", sim.nodes[s].tun);
    sim.send(d, vpn(3), b"dual to v4-only");
    sim.run(Duration::from_millis(200));
    assert!(sim.received(f, b"dual to v4-only"), "f got {:?}", sim.nodes[f].tun);
    sim.send(f, vpn(2), b"v4-only to dual");
    sim.run(Duration::from_millis(50));
    assert!(sim.received(d, b"v4-only to dual"));

    let (to_s, to_f, to_d) = (peer_named(&sim, d, "s"), peer_named(&sim, d, "f"), peer_named(&sim, s, "d"));
    assert_eq!((to_s.vpn_ip, to_s.up, to_s.relayed), (IpAddr::V6(v6(4)), true, false));
    assert_eq!((to_f.vpn_ip, to_f.up), (IpAddr::V4(vpn(3)), true));
    assert_eq!((to_d.vpn_ip, to_d.up, to_d.relayed), (IpAddr::V4(vpn(2)), true, false), "d's identity stays v4");
    assert!(sim.nodes[s].node.peers(sim.now).iter().all(|p| p.name != "f"), "s and f share no family");
    for (i, n) in sim.nodes.iter().enumerate() {
        assert_eq!(n.node.counters().rx_malformed, 0, "node {i}: {:?}", n.node.counters());
    }
}

/// With no direct path between the dual-stack node and the v6-only one, their traffic goes
/// through the relay each names by a different address: RelayTo about an IPv6 identity, and
/// RelayFrom framed as IPv6 toward the node without IPv4.
#[test]
fn a_v6_only_node_is_reached_through_a_relay_when_no_direct_path_works() {
    let mut sim = Sim::new();
    let [lh, d, _, s] = family_world(&mut sim);
    let (ud, us) = (underlay(2), underlay(4));
    sim.filter = Box::new(move |_, from, to, _| !((from == ud && to == us) || (from == us && to == ud)));
    sim.send_packet(d, &ip6_packet(v6(2), v6(4), b"via-relay"));
    let took = sim.run_until(Duration::from_secs(5), |sim| received6(sim, s, v6(2), b"via-relay"));
    assert!(took.is_some(), "never arrived: {:?}", sim.nodes[d].node.counters());
    assert!(deliver6(&mut sim, (s, 4), (d, 2), b"reply-via-relay"));
    assert!(peer_named(&sim, d, "s").relayed && peer_named(&sim, s, "d").relayed);
    assert!(sim.nodes[lh].node.counters().relay_forwarded >= 2);
    for (i, n) in sim.nodes.iter().enumerate() {
        assert_eq!(n.node.counters().rx_malformed, 0, "node {i}: {:?}", n.node.counters());
    }
}

/// `tun.unsafe_routes` with an IPv6 network (Nebula takes them with v2 certificates): packets
/// for `2001:db8:99::/48` go to the peer whose certificate routes it, named in the route by its
/// IPv6 overlay address, and answers from inside that network are taken as the peer's.
#[test]
fn an_ipv6_unsafe_route_leads_through_the_peer_that_routes_it() {
    let mut sim = Sim::new();
    let ca = ca(Version::V2, "v2 ca");
    let (ca_cert, ka) = node(&ca, Version::V2, "a", 1);
    let kb = HostSecret::generate();
    let tbs = Tbs {
        version: Version::V2,
        name: "b".into(),
        networks: vec!["100.64.0.2/10".parse().unwrap(), "fd00::2/64".parse().unwrap()],
        unsafe_networks: vec!["2001:db8:99::/48".parse().unwrap()],
        groups: vec![],
        not_before: UnixTime(WALL0 - 5),
        not_after: UnixTime(WALL0 + 86_400),
        public_key: kb.public().0,
        is_ca: false,
        issuer: Some(ca.cert.fingerprint()),
    };
    let cb_cert = Certificate::sign_tbs(&tbs, ca.key.signing_key()).unwrap();
    let mut cfg_a = Sim::config(&ca, ca_cert, ka, &[]);
    cfg_a.static_hosts = HashMap::from([(IpAddr::V6(v6(2)), vec![underlay(2)])]);
    cfg_a.unsafe_routes = vec![("2001:db8:99::/48".parse().unwrap(), IpAddr::V6(v6(2)))];
    let a = sim.add(cfg_a, 1);
    let b = sim.add(Sim::config(&ca, cb_cert, kb, &[(1, underlay(1))]), 2);
    let inside: Ipv6Addr = "2001:db8:99::5".parse().unwrap();
    sim.send_packet(a, &ip6_packet(v6(1), inside, b"into-the-route"));
    sim.run(Duration::from_millis(200));
    assert!(received6(&sim, b, v6(1), b"into-the-route"), "b got {:?}", sim.nodes[b].tun);
    sim.send_packet(b, &ip6_packet(inside, v6(1), b"from-the-route"));
    sim.run(Duration::from_millis(50));
    assert!(received6(&sim, a, inside, b"from-the-route"), "a got {:?}", sim.nodes[a].tun);
    // A v6 network nobody routes has no way in.
    let no_route = sim.nodes[a].node.counters().tun_dropped_no_route;
    sim.send_packet(a, &ip6_packet(v6(1), "2001:db8:77::1".parse().unwrap(), b"nowhere"));
    assert_eq!(sim.nodes[a].node.counters().tun_dropped_no_route, no_route + 1);
}
