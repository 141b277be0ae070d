//! Discovery across NATs in simulation: lighthouses, hole punching, relays, lighthouse loss.
//! Needs `--features sim` (see tests/simnet).
#![cfg(feature = "sim")]

mod simnet;

use std::time::Duration;

use cos_mesh::cert::Certificate;
use cos_mesh::cert::keys::HostSecret;
use cos_mesh::mesh::{Event, NodeConfig};
use simnet::{Ca, NatKind, Settings, Sim, private, vpn};

/// Lighthouses at 100.64.0.1 and .2 on the public segment.
const LH1: u8 = 1;
const LH2: u8 = 2;
/// A relay at 100.64.0.3 on the public segment.
const RELAY: u8 = 3;

fn node_config(ca: &Ca, name: &str, n: u8, relays: &[u8]) -> NodeConfig {
    let id = ca.node_with_groups(name, n, 86_400, &["nomad-client"]);
    Settings::of(ca, id).knows(&[LH1, LH2, RELAY]).lighthouses(&[LH1, LH2]).relays(relays).config()
}

/// A host of the public segment: a lighthouse, or a relay.
fn backbone_config(ca: &Ca, cert: Certificate, key: HostSecret, am_lighthouse: bool) -> NodeConfig {
    Settings::of(ca, (cert, key)).serves(am_lighthouse, !am_lighthouse).lighthouses(&[LH1, LH2]).config()
}

/// The public segment: two lighthouses and a relay.
fn backbone(sim: &mut Sim, ca: &Ca) -> [usize; 3] {
    let mut lh = |name: &str, n: u8, am_lighthouse: bool| {
        let (cert, key) = ca.node(name, n, 86_400);
        sim.add(backbone_config(ca, cert, key, am_lighthouse), n)
    };
    [lh("lighthouse-1", LH1, true), lh("lighthouse-2", LH2, true), lh("relay", RELAY, false)]
}

/// Two environments, each behind its own NAT: a Nomad server in site 1, a client in site 2.
fn two_sites(sim: &mut Sim, ca: &Ca, nat1: NatKind, nat2: NatKind) -> (usize, usize) {
    sim.add_nat(1, nat1);
    sim.add_nat(2, nat2);
    let server = sim.add_at(node_config(ca, "server", 11, &[RELAY]), private(1, 10), Some(1));
    let client = sim.add_at(node_config(ca, "client", 21, &[RELAY]), private(2, 10), Some(2));
    (server, client)
}

#[test]
fn nodes_register_with_every_lighthouse() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    backbone(&mut sim, &ca);
    let (server, _) = two_sites(&mut sim, &ca, NatKind::PortRestricted, NatKind::PortRestricted);
    sim.run(Duration::from_secs(2));
    let acks: Vec<_> = sim.nodes[server]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Registered { lighthouse } => Some(*lighthouse),
            _ => None,
        })
        .collect();
    assert!(acks.contains(&vpn(LH1).into()) && acks.contains(&vpn(LH2).into()), "{acks:?}");
    // Each lighthouse holds where the server is heard from (its NAT) and when it registered.
    for lh in [LH1, LH2] {
        let regs = sim.nodes[usize::from(lh - 1)].node.registrations(sim.now);
        let r = regs.iter().find(|r| r.vpn_ip == vpn(11)).unwrap_or_else(|| panic!("{regs:?}"));
        assert!(r.underlay.first().is_some_and(|a| a.ip().to_string() == "198.19.0.1"), "{r:?}");
        assert!(r.ago < Duration::from_secs(2), "{r:?}");
    }
    assert!(sim.nodes[server].node.registrations(sim.now).is_empty(), "only lighthouses hold registrations");
}

#[test]
fn punching_finds_a_direct_path_through_two_nats_in_under_a_second() {
    for (nat1, nat2) in [
        (NatKind::FullCone, NatKind::FullCone),
        (NatKind::PortRestricted, NatKind::PortRestricted),
        (NatKind::FullCone, NatKind::Symmetric),
        (NatKind::Symmetric, NatKind::FullCone),
    ] {
        let mut sim = Sim::new();
        let ca = Ca::new("ca");
        let [_, _, relay] = backbone(&mut sim, &ca);
        let (server, client) = two_sites(&mut sim, &ca, nat1, nat2);
        sim.run(Duration::from_secs(2)); // registration
        // The client talks to the server's overlay IP with no address of it configured.
        sim.send(client, vpn(11), b"hello-server");
        let took = sim.run_until(Duration::from_secs(5), |s| s.received(server, b"hello-server"));
        let took =
            took.unwrap_or_else(|| panic!("{nat1:?}/{nat2:?}: no packet: {:?}", sim.nodes[client].node.counters()));
        assert!(took < Duration::from_secs(1), "{nat1:?}/{nat2:?}: first packet after {took:?}");
        sim.run(Duration::from_secs(1));
        let peer = sim.nodes[server].node.peers(sim.now).into_iter().find(|p| p.name == "client").unwrap();
        assert!(!peer.relayed, "{nat1:?}/{nat2:?}: expected a direct path, got {:?}", peer.endpoint);
        assert!(peer.endpoint.unwrap().starts_with("198.19.0.2:"), "via the client's NAT");
        // Between cone NATs punching wins outright; with a symmetric NAT the relay may carry
        // the first packets while punching completes, but the path ends up direct (above).
        if nat1 != NatKind::Symmetric && nat2 != NatKind::Symmetric {
            assert_eq!(sim.nodes[relay].node.counters().relay_forwarded, 0, "{nat1:?}/{nat2:?}");
        }
        eprintln!("{nat1:?}/{nat2:?}: first packet after {took:?}");
    }
}

/// Where punching cannot work (a symmetric NAT's per-destination port is filtered by a
/// symmetric or port-restricted NAT on the other side), traffic goes through the relay.
#[test]
fn unpunchable_nats_fall_back_to_the_relay() {
    for (nat1, nat2) in [(NatKind::Symmetric, NatKind::Symmetric), (NatKind::Symmetric, NatKind::PortRestricted)] {
        relay_between(nat1, nat2);
    }
}

fn relay_between(nat1: NatKind, nat2: NatKind) {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let [_, _, relay] = backbone(&mut sim, &ca);
    let (server, client) = two_sites(&mut sim, &ca, nat1, nat2);
    sim.run(Duration::from_secs(2));
    sim.send(client, vpn(11), b"via-relay");
    let took = sim.run_until(Duration::from_secs(5), |s| s.received(server, b"via-relay"));
    assert!(took.is_some(), "relayed packet never arrived: {:?}", sim.nodes[client].node.counters());
    for i in 0..20 {
        sim.send(client, vpn(11), format!("c{i}").as_bytes());
        sim.send(server, vpn(21), format!("s{i}").as_bytes());
        sim.run(Duration::from_millis(50));
    }
    for i in 0..20 {
        assert!(
            sim.received(server, format!("c{i}").as_bytes()) && sim.received(client, format!("s{i}").as_bytes()),
            "message {i}"
        );
    }
    let peer = sim.nodes[server].node.peers(sim.now).into_iter().find(|p| p.name == "client").unwrap();
    assert!(peer.relayed, "{peer:?}");
    assert!(sim.nodes[relay].node.counters().relay_forwarded >= 40);
    eprintln!("{nat1:?}/{nat2:?}: first packet via relay after {took:?}");
}

#[test]
fn losing_a_lighthouse_loses_nothing_that_is_up() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let [lh1, _, _] = backbone(&mut sim, &ca);
    let (server, client) = two_sites(&mut sim, &ca, NatKind::PortRestricted, NatKind::FullCone);
    sim.run(Duration::from_secs(2));
    sim.send(client, vpn(11), b"before");
    sim.run(Duration::from_secs(1));
    assert!(sim.received(server, b"before"));
    sim.nodes[lh1].up = false; // lighthouse-1 dies
    sim.run(Duration::from_secs(30));
    sim.send(client, vpn(11), b"after");
    sim.run(Duration::from_millis(100));
    assert!(sim.received(server, b"after"), "the established tunnel does not need lighthouses");
    // A newcomer in a third environment still joins through lighthouse-2.
    sim.add_nat(3, NatKind::PortRestricted);
    let newcomer = sim.add_at(node_config(&ca, "newcomer", 31, &[RELAY]), private(3, 10), Some(3));
    sim.run(Duration::from_secs(2));
    sim.send(newcomer, vpn(11), b"newcomer");
    let took = sim.run_until(Duration::from_secs(10), |s| s.received(server, b"newcomer"));
    assert!(took.is_some(), "newcomer could not reach the server: {:?}", sim.nodes[newcomer].node.counters());
}

#[test]
fn members_are_listed_by_the_lighthouses() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    backbone(&mut sim, &ca);
    let (server, client) = two_sites(&mut sim, &ca, NatKind::PortRestricted, NatKind::PortRestricted);
    sim.run(Duration::from_secs(12)); // one report and one members refresh after registration
    let names: Vec<String> = sim.nodes[client].node.members().iter().map(|c| c.name().to_string()).collect();
    for want in ["lighthouse-1", "lighthouse-2", "relay", "server", "client"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    let servers: Vec<_> = sim.nodes[server]
        .node
        .members()
        .into_iter()
        .filter(|c| c.details().groups.iter().any(|g| g == "nomad-client"))
        .collect();
    assert_eq!(servers.len(), 2);
}

#[test]
fn a_roaming_node_keeps_its_tunnels() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    backbone(&mut sim, &ca);
    let (server, client) = two_sites(&mut sim, &ca, NatKind::FullCone, NatKind::FullCone);
    sim.run(Duration::from_secs(2));
    sim.send(client, vpn(11), b"one");
    sim.run(Duration::from_secs(1));
    assert!(sim.received(server, b"one"));
    // The client moves to another environment (new private address, another NAT).
    sim.add_nat(4, NatKind::FullCone);
    sim.nodes[client].addr = private(4, 77);
    sim.nodes[client].site = Some(4);
    let now = sim.now;
    sim.nodes[client].node.set_local_addrs(now, vec![private(4, 77)]);
    sim.send(client, vpn(11), b"two");
    sim.run(Duration::from_millis(100));
    assert!(sim.received(server, b"two"));
    sim.send(server, vpn(21), b"back");
    sim.run(Duration::from_millis(100));
    assert!(sim.received(client, b"back"), "the server follows the client to its new address");
}

#[test]
fn remote_allow_list_keeps_a_node_off_forbidden_addresses() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let [_, _, relay] = backbone(&mut sim, &ca);
    sim.add_nat(1, NatKind::FullCone);
    sim.add_nat(2, NatKind::FullCone);
    let server = sim.add_at(node_config(&ca, "server", 11, &[RELAY]), private(1, 10), Some(1));
    let mut cfg = node_config(&ca, "client", 21, &[RELAY]);
    // The server's environment (its NAT's public address) is off limits for this client.
    cfg.discovery.remote_allow_list = vec![("198.19.0.1/32".parse().unwrap(), false)];
    let client = sim.add_at(cfg, private(2, 10), Some(2));
    sim.run(Duration::from_secs(2));
    sim.send(client, vpn(11), b"allowed-path-only");
    let took = sim.run_until(Duration::from_secs(5), |s| s.received(server, b"allowed-path-only"));
    assert!(took.is_some(), "{:?}", sim.nodes[client].node.counters());
    let peer = sim.nodes[client].node.peers(sim.now).into_iter().find(|p| p.name == "server").unwrap();
    assert!(peer.relayed, "the forbidden direct address was not used: {peer:?}");
    assert!(sim.nodes[relay].node.counters().relay_forwarded > 0);
}

/// Regression (issue 15): every node logged, at each lighthouse interval, that the
/// lighthouse's member list carried "a certificate that claims our own overlay IP" — its own,
/// listed back to it. A member list naming us is no refusal.
#[test]
fn own_certificate_in_a_member_list_is_not_refused() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    backbone(&mut sim, &ca);
    let (server, client) = two_sites(&mut sim, &ca, NatKind::PortRestricted, NatKind::PortRestricted);
    sim.run(Duration::from_secs(65));
    for n in &sim.nodes {
        let name = n.node.cert().name().to_string();
        let refused: Vec<_> = n.events.iter().filter(|e| matches!(e, Event::CertRejected { .. })).collect();
        assert!(refused.is_empty(), "{name}: {refused:?}");
        assert_eq!(n.node.counters().rx_cert_rejected, 0, "{name}");
    }
    for i in [server, client] {
        // Both lighthouses, the relay (a peer) and the two nodes.
        assert_eq!(sim.nodes[i].node.members().len(), 5, "the member list is still learnt");
    }
}

/// Asymmetric path loss (issue 16): the server's datagrams to the client are dropped at the
/// client's side while the client's reach the server. The server hears the client directly,
/// so only an answered probe can tell it that its own datagrams no longer arrive: within about
/// two seconds its traffic moves to the relay and stays there without flapping; when the path
/// heals, it comes back to the direct path.
#[test]
fn one_way_direct_path_moves_to_the_relay_within_two_seconds() {
    use std::cell::Cell;
    use std::rc::Rc;
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let [_, _, relay] = backbone(&mut sim, &ca);
    let (server, client) = two_sites(&mut sim, &ca, NatKind::FullCone, NatKind::FullCone);
    sim.run(Duration::from_secs(2));
    sim.send(client, vpn(11), b"hello");
    sim.send(server, vpn(21), b"hello");
    sim.run(Duration::from_secs(2));
    let peer = sim.nodes[server].node.peers(sim.now).into_iter().find(|p| p.name == "client").unwrap();
    assert!(!peer.relayed, "direct to begin with: {peer:?}");
    let cut = Rc::new(Cell::new(true));
    let c = cut.clone();
    // The server's NAT (198.19.0.1) to the client's NAT (198.19.0.2): dropped.
    sim.filter = Box::new(move |_, from, to, _| {
        !(c.get() && from.ip().to_string() == "198.19.0.1" && to.ip().to_string() == "198.19.0.2")
    });
    let start = sim.now;
    let mut first_after = None;
    let mut lost_after_recovery = 0;
    for i in 0..300 {
        // Traffic both ways every 100 ms for 30 s.
        let s2c = format!("s2c-{i}");
        sim.send(server, vpn(21), s2c.as_bytes());
        sim.send(client, vpn(11), format!("c2s-{i}").as_bytes());
        sim.run(Duration::from_millis(100));
        let arrived = sim.received(client, s2c.as_bytes());
        if first_after.is_none() && arrived {
            first_after = Some(sim.now.duration_since(start));
        } else if first_after.is_some() && !arrived {
            lost_after_recovery += 1;
        }
        assert!(sim.received(server, format!("c2s-{i}").as_bytes()) || i < 3, "client to server {i}");
    }
    let took = first_after.expect("the server's traffic never reached the client");
    eprintln!("one-way loss: server traffic back after {took:?}");
    assert!(took <= Duration::from_millis(2500), "took {took:?}");
    assert!(lost_after_recovery <= 2, "{lost_after_recovery} packets lost after the move (flapping)");
    assert!(sim.nodes[relay].node.counters().relay_forwarded > 200);
    assert!(
        sim.nodes[server].events.iter().any(|e| matches!(e, Event::DirectPathLost { name, .. } if name == "client")),
        "the server says why"
    );
    // The path heals: traffic returns to it.
    cut.set(false);
    sim.run_until(Duration::from_secs(15), |s| {
        s.nodes[server].node.peers(s.now).iter().any(|p| p.name == "client" && !p.relayed)
    })
    .expect("back on the direct path after it healed");
}

#[test]
fn a_restarted_lighthouse_knows_every_node_again_at_their_next_report() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let mut host = |name: &str, n: u8, am_lighthouse: bool| {
        let (cert, key) = ca.node(name, n, 86_400);
        let config = |key| backbone_config(&ca, cert.clone(), key, am_lighthouse);
        let restart = config(HostSecret::from_pem(key.to_pem().as_bytes()).unwrap());
        (sim.add(config(key), n), restart)
    };
    let (lh1, restart) = host("lighthouse-1", LH1, true);
    host("lighthouse-2", LH2, true);
    host("relay", RELAY, false);
    two_sites(&mut sim, &ca, NatKind::PortRestricted, NatKind::PortRestricted);
    sim.run(Duration::from_secs(3));
    let registered = sim.nodes[lh1].node.registrations(sim.now).len();
    assert!(registered >= 2, "the server and the client registered: {registered}");
    // lighthouse-1 restarts with its identity and nothing else, between two reports. The
    // nodes' next report meets an unknown session: they handshake again and report at once,
    // not an interval later.
    sim.restart(lh1, restart);
    let took = sim.run_until(Duration::from_secs(25), |s| s.nodes[lh1].node.registrations(s.now).len() == registered);
    let took = took.expect("every node registered again");
    let interval = node_config(&ca, "probe", 99, &[]).discovery.interval;
    eprintln!("registered again {took:?} after the restart");
    assert!(took <= interval, "registered again {took:?} after the restart (report interval {interval:?})");
}

#[test]
fn a_direct_path_lost_both_ways_moves_to_the_relay_within_two_seconds() {
    use std::cell::Cell;
    use std::rc::Rc;
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    backbone(&mut sim, &ca);
    let (server, client) = two_sites(&mut sim, &ca, NatKind::FullCone, NatKind::FullCone);
    sim.run(Duration::from_secs(2));
    sim.send(client, vpn(11), b"hello");
    sim.send(server, vpn(21), b"hello");
    sim.run(Duration::from_secs(2));
    let cut = Rc::new(Cell::new(false));
    let c = cut.clone();
    // Both NATs' datagrams to each other dropped once `cut` is set.
    sim.filter = Box::new(move |_, from, to, _| {
        let (a, b) = (from.ip().to_string(), to.ip().to_string());
        !(c.get() && a.starts_with("198.19.0.") && b.starts_with("198.19.0."))
    });
    // The server asks every 100 ms; the client only answers (as a service does), so it has
    // nothing of its own that would make it probe the path. A quiet second, then the cut.
    let mut answered_since_cut = None;
    for i in 0..50 {
        if (5..15).contains(&i) {
            sim.run(Duration::from_millis(100));
            continue;
        }
        if i == 15 {
            cut.set(true);
        }
        let (ask, answer) = (format!("ask-{i}"), format!("answer-{i}"));
        sim.send(server, vpn(21), ask.as_bytes());
        sim.run(Duration::from_millis(50));
        if sim.received(client, ask.as_bytes()) {
            sim.send(client, vpn(11), answer.as_bytes());
        }
        sim.run(Duration::from_millis(50));
        if i >= 15 && answered_since_cut.is_none() && sim.received(server, answer.as_bytes()) {
            answered_since_cut = Some(Duration::from_millis(100) * (i - 15));
        }
    }
    let took = answered_since_cut.expect("no answer through the relay");
    assert!(took <= Duration::from_secs(2), "answers back {took:?} after the cut");
    let relayed = |i: usize, peer: &str| sim.nodes[i].node.peers(sim.now).iter().any(|p| p.name == peer && p.relayed);
    assert!(relayed(server, "client") && relayed(client, "server"), "both sides on the relay");
}
