//! `cos-mesh ping` in simulation: the far node answers with its firewall's verdict, over a
//! direct path or a relay, and a ping without an answer says which stage failed.
//! Needs `--features sim` (see tests/simnet).
#![cfg(feature = "sim")]

mod simnet;

use std::time::Duration;

use cos_mesh::daemon::policy::FirewallPolicy;
use cos_mesh::firewall::{Firewall, config::parse_rules_str};
use cos_mesh::mesh::{NodeConfig, Path, PingFailure, PingId, PingOutcome, Probe, ProbeVerdict};
use simnet::{Ca, NatKind, Settings, Sim, private, underlay, vpn};

const TIMEOUT: Duration = Duration::from_secs(5);
const LH: u8 = 1;
const RELAY: u8 = 3;

/// Starts a ping from node `from` and runs the world until it ends.
fn ping(sim: &mut Sim, from: usize, target: u8, probe: Probe) -> PingOutcome {
    let now = sim.now;
    let id: PingId = sim.nodes[from].node.start_ping(now, vpn(target).into(), probe, TIMEOUT).expect("ping starts");
    sim.drain(from);
    sim.run_until(TIMEOUT + Duration::from_secs(1), |s| !s.nodes[from].node.ping_running(id)).expect("ping ends");
    sim.nodes[from].node.take_ping(id).expect("an outcome, once")
}

fn answered(o: PingOutcome) -> cos_mesh::mesh::PingAnswer {
    match o {
        PingOutcome::Answered(a) => a,
        PingOutcome::Failed(f) => panic!("no answer: {f}"),
    }
}

fn pair(sim: &mut Sim, ca: &Ca) -> (usize, usize) {
    sim.add_pair(ca, ca.node("a", 1, 86_400), ca.node_with_groups("b", 2, 86_400, &["nomad-server"]))
}

fn firewall(yaml: &str) -> FirewallPolicy {
    let cfg = parse_rules_str(yaml, "b.yaml".as_ref()).unwrap();
    FirewallPolicy { fw: Firewall::compile(&cfg, &[]).unwrap() }
}

#[test]
fn a_direct_ping_starts_the_tunnel_and_reports_the_path() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (a, _) = pair(&mut sim, &ca);
    let first = answered(ping(&mut sim, a, 2, Probe::IcmpEcho));
    assert_eq!(first.name, "b");
    assert_eq!(first.path, Some(Path::Direct(underlay(2))));
    assert_eq!((first.far, first.near), (ProbeVerdict::Allow, ProbeVerdict::Allow));
    // The first one waited for the handshake; the second is one round trip (2 × 5 ms).
    let second = answered(ping(&mut sim, a, 2, Probe::Tcp(4647)));
    assert_eq!(second.rtt, 2 * sim.latency, "first {:?}", first.rtt);
    assert!(first.rtt > second.rtt);
    assert_eq!(sim.nodes[a].node.take_ping(PingId(0)), None);
}

#[test]
fn the_far_firewall_verdict_comes_back_and_creates_no_flow() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (a, b) = pair(&mut sim, &ca);
    sim.nodes[b].node.policy_mut().0 = Some(firewall(
        "inbound:\n  - {port: any, proto: icmp, host: any}\n  - {port: 4646, proto: tcp, host: any}\noutbound:\n  - {port: any, proto: any, host: any}\n",
    ));
    assert_eq!(answered(ping(&mut sim, a, 2, Probe::IcmpEcho)).far, ProbeVerdict::Allow);
    assert_eq!(answered(ping(&mut sim, a, 2, Probe::Tcp(4646))).far, ProbeVerdict::Allow);
    assert_eq!(answered(ping(&mut sim, a, 2, Probe::Tcp(4647))).far, ProbeVerdict::Drop);
    assert_eq!(answered(ping(&mut sim, a, 2, Probe::Udp(4646))).far, ProbeVerdict::Drop);
    let fw = &sim.nodes[b].node.policy_mut().0.as_ref().unwrap().fw;
    assert!(fw.conntrack().is_empty(), "probes are looked at, never tracked");
}

/// Lighthouse and relay on the public segment, two nodes behind symmetric NATs: no punching.
fn relayed_world(sim: &mut Sim, ca: &Ca) -> (usize, usize, usize) {
    let mut public = |name: &str, n: u8, lighthouse: bool| {
        let cfg = Settings::of(ca, ca.node(name, n, 86_400)).serves(lighthouse, !lighthouse).lighthouses(&[LH]);
        sim.add(cfg.config(), n)
    };
    public("lighthouse", LH, true);
    let relay = public("relay-1", RELAY, false);
    let node = |name: &str, n: u8| -> NodeConfig {
        let cfg = Settings::of(ca, ca.node(name, n, 86_400)).knows(&[LH, RELAY]);
        cfg.lighthouses(&[LH]).relays(&[RELAY]).config()
    };
    sim.add_nat(1, NatKind::Symmetric);
    sim.add_nat(2, NatKind::Symmetric);
    let server = sim.add_at(node("server", 11), private(1, 10), Some(1));
    let client = sim.add_at(node("client", 21), private(2, 10), Some(2));
    sim.run(Duration::from_secs(2));
    (server, client, relay)
}

#[test]
fn a_ping_through_a_relay_names_it() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (_, client, relay) = relayed_world(&mut sim, &ca);
    let a = answered(ping(&mut sim, client, 11, Probe::Tcp(4647)));
    assert_eq!(a.name, "server");
    assert_eq!(a.path, Some(Path::Relay { relay: vpn(RELAY).into(), peer: vpn(11).into() }));
    assert_eq!(a.relay_name.as_deref(), Some("relay-1"));
    assert!(sim.nodes[relay].node.counters().relay_forwarded > 0);
}

#[test]
fn a_dead_relay_is_named_when_punching_fails() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (_, client, relay) = relayed_world(&mut sim, &ca);
    sim.nodes[relay].up = false;
    match ping(&mut sim, client, 11, Probe::IcmpEcho) {
        PingOutcome::Failed(f @ PingFailure::RelayUnreachable { .. }) => {
            assert_eq!(f, PingFailure::RelayUnreachable { relays: vec![vpn(RELAY).into()] });
            assert!(f.to_string().contains("punching failed"), "{f}");
        }
        other => panic!("expected an unreachable relay, got {other:?}"),
    }
}

#[test]
fn a_peer_nobody_registered_is_unknown_to_the_lighthouse() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (_, client, _) = relayed_world(&mut sim, &ca);
    let o = ping(&mut sim, client, 99, Probe::IcmpEcho);
    assert_eq!(o, PingOutcome::Failed(PingFailure::UnknownToLighthouses { lighthouses: vec![vpn(LH).into()] }));
    // With the lighthouse gone, the diagnosis says so instead.
    sim.nodes[0].up = false;
    sim.run(Duration::from_secs(200));
    let o = ping(&mut sim, client, 98, Probe::IcmpEcho);
    assert_eq!(o, PingOutcome::Failed(PingFailure::NoLighthouse { lighthouses: vec![vpn(LH).into()] }));
}

#[test]
fn without_lighthouse_or_address_there_is_no_way_to_find_it() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (a, _) = pair(&mut sim, &ca);
    assert_eq!(ping(&mut sim, a, 7, Probe::IcmpEcho), PingOutcome::Failed(PingFailure::NoWayToFind));
    let err = sim.nodes[a].node.start_ping(sim.now, vpn(1).into(), Probe::IcmpEcho, TIMEOUT).unwrap_err();
    assert_eq!(err.to_string(), "100.64.0.1 is this node's own overlay IP");
}

#[test]
fn a_peer_that_stops_answering_is_a_handshake_timeout() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (a, b) = pair(&mut sim, &ca);
    sim.nodes[b].up = false;
    match ping(&mut sim, a, 2, Probe::IcmpEcho) {
        PingOutcome::Failed(PingFailure::HandshakeTimedOut { addrs }) => assert_eq!(addrs, vec![underlay(2)]),
        other => panic!("expected a handshake timeout, got {other:?}"),
    }
}

#[test]
fn a_peer_that_never_answers_over_a_working_tunnel_is_called_older() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (a, _) = pair(&mut sim, &ca);
    answered(ping(&mut sim, a, 2, Probe::IcmpEcho));
    // What an older cos-mesh does with the request (an unknown control message, dropped and
    // counted) looks, from here, like the request vanishing on its way.
    sim.filter = Box::new(|_, from, to, _| !(from == underlay(1) && to == underlay(2)));
    let o = ping(&mut sim, a, 2, Probe::IcmpEcho);
    assert_eq!(o, PingOutcome::Failed(PingFailure::NoPingSupport { name: "b".into() }));
    let PingOutcome::Failed(f) = o else { unreachable!() };
    assert_eq!(f.to_string(), "the tunnel to b is up but the peer does not answer cos-mesh ping (older version?)");
}

#[test]
fn outcomes_nobody_collects_are_forgotten_after_a_minute() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (a, _) = pair(&mut sim, &ca);
    let now = sim.now;
    let kept = sim.nodes[a].node.start_ping(now, vpn(2).into(), Probe::IcmpEcho, TIMEOUT).unwrap();
    let dropped = sim.nodes[a].node.start_ping(now, vpn(2).into(), Probe::IcmpEcho, TIMEOUT).unwrap();
    sim.drain(a);
    sim.run(Duration::from_secs(30));
    assert!(matches!(sim.nodes[a].node.take_ping(kept), Some(PingOutcome::Answered(_))));
    sim.run(Duration::from_secs(40));
    assert_eq!(sim.nodes[a].node.take_ping(dropped), None, "a minute later it is gone");
}
