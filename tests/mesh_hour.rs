//! Simulated hours: a quiet mesh stays quiet in its logs, and a ten-node mesh with rekeys runs
//! an hour of virtual time in well under a second of wall time (the clock jumps from event to
//! event). Needs `--features sim` (see tests/simnet).
#![cfg(feature = "sim")]

mod simnet;

use std::time::{Duration, Instant};

use cos_mesh::mesh::{Level, NodeConfig};
use simnet::{Ca, NatKind, Settings, Sim, private, thread_cpu, vpn};

const LH: u8 = 1;

fn member(ca: &Ca, name: &str, n: u8) -> NodeConfig {
    Settings::of(ca, ca.node(name, n, 86_400)).knows(&[LH]).lighthouses(&[LH]).relays(&[LH]).config()
}

/// Issue 15's must-show: a lighthouse that is also the relay, two nodes behind symmetric NATs
/// (so their traffic is relayed), an hour with traffic, a long idle spell (sessions close and
/// idle peers are forgotten) and traffic again. Nothing is wrong, so nothing may be logged at
/// WARN or above; every packet arrives.
#[test]
fn an_hour_of_a_healthy_relayed_mesh_logs_no_warning() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    sim.add(Settings::of(&ca, ca.node("lighthouse", LH, 86_400)).serves(true, true).config(), LH);
    sim.add_nat(1, NatKind::Symmetric);
    sim.add_nat(2, NatKind::Symmetric);
    let a = sim.add_at(member(&ca, "server", 11), private(1, 10), Some(1));
    let b = sim.add_at(member(&ca, "client", 21), private(2, 10), Some(2));
    sim.run(Duration::from_secs(2));
    let mut sent = 0;
    for minute in 0..60 {
        // Busy for 20 minutes, idle for 20 (sessions close, peers are forgotten), busy again.
        if !(20..40).contains(&minute) {
            for s in (0..60).step_by(10) {
                let tag = format!("{minute}:{s}");
                sim.send(a, vpn(21), format!("a{tag}").as_bytes());
                sim.send(b, vpn(11), format!("b{tag}").as_bytes());
                sent += 1;
                sim.run(Duration::from_secs(10));
            }
        } else {
            sim.run(Duration::from_secs(60));
        }
    }
    let mut missing = vec![];
    for minute in (0..60).filter(|m| !(20..40).contains(m)) {
        for s in (0..60).step_by(10) {
            let tag = format!("{minute}:{s}");
            if !sim.received(b, format!("a{tag}").as_bytes()) || !sim.received(a, format!("b{tag}").as_bytes()) {
                missing.push(tag);
            }
        }
    }
    // The first packet after the idle spell waits for the lighthouse and a new handshake:
    // it is queued, not lost.
    assert!(missing.is_empty(), "{} of {sent} exchanges lost: {missing:?}", missing.len());
    for n in &sim.nodes {
        let loud: Vec<String> = n.events.iter().filter(|e| e.level() >= Level::Warn).map(|e| e.to_string()).collect();
        assert!(loud.is_empty(), "{}: {loud:#?}", n.node.cert().name());
        assert_eq!(n.node.counters().rx_cert_rejected, 0);
    }
    let peer = sim.nodes[a].node.peers(sim.now).into_iter().find(|p| p.name == "client").expect("client");
    assert!(peer.relayed, "symmetric NATs on both sides: relayed ({peer:?})");
}

/// Ten nodes on the public segment, every pair talking once a minute for an hour (each session
/// rekeys every two minutes while used): all packets arrive, and the hour costs well under a
/// second of CPU.
#[test]
#[cfg_attr(debug_assertions, ignore = "a CPU-time figure: run with --release")]
fn ten_nodes_for_an_hour_in_seconds() {
    let mut sim = ten_nodes();
    let (started, cpu0) = (Instant::now(), thread_cpu());
    let mut lost = 0;
    for minute in 0..60u32 {
        for i in 0..10usize {
            for j in 0..10usize {
                if i != j {
                    sim.send(i, vpn(j as u8 + 1), format!("{minute}:{i}>{j}").as_bytes());
                }
            }
        }
        sim.run(Duration::from_secs(60));
        for i in 0..10usize {
            for j in (0..10usize).filter(|j| *j != i) {
                lost += usize::from(!sim.received(j, format!("{minute}:{i}>{j}").as_bytes()));
            }
        }
        for n in &mut sim.nodes {
            n.tun.clear();
        }
    }
    let (took, cpu) = (started.elapsed(), thread_cpu() - cpu0);
    let handshakes: u64 = sim.nodes.iter().map(|n| n.node.counters().handshakes_completed).sum();
    let crossed: u64 = sim.nodes.iter().map(|n| n.node.counters().rx_handshake_crossed).sum();
    eprintln!("10 nodes, 1 simulated hour: {cpu:?} CPU, {took:?} wall, {handshakes} handshakes ({crossed} crossed)");
    assert_eq!(lost, 0);
    // 45 sessions, each rekeyed by one end every two minutes of use: 30 an hour. Twice that
    // is both ends rekeying every session (crossed initiations both answered).
    assert!((45 * 29..=45 * 32).contains(&handshakes), "one rekey per session every two minutes: {handshakes}");
    // The clock jumps from event to event, so the cost is the crypto: 1,395 handshakes of
    // six X25519 multiplications and two key generations each (70% of the profile), which
    // WireGuard's two-minute rekeys call for. CPU time, not wall time: a loaded CI machine
    // stretches the wall clock, not the work. On a quiet core of this 2-core VM: 0.78 s (0.55 s
    // of it X25519); 0.89 s before each peer's tick became one lookup (`Peer::tick`); 2.35 s
    // before crossed rekeys were settled (2,700 handshakes). The bound is about four times the
    // figure: a return to stepping the clock took minutes.
    assert!(cpu < Duration::from_millis(3_000), "{cpu:?} of CPU ({took:?} wall)");
}

/// Regression (found by the hour below): when ten nodes start talking at once, two nodes with
/// packets queued answered each other's initiations with new ones for ever (the node flushed
/// boringtun's queue right after answering an initiation, before the session was usable), and
/// the first packets were never delivered.
#[test]
fn ten_nodes_opening_at_once_lose_no_packet() {
    let mut sim = ten_nodes();
    for i in 0..10usize {
        for j in (0..10usize).filter(|j| *j != i) {
            sim.send(i, vpn(j as u8 + 1), format!("{i}>{j}").as_bytes());
        }
    }
    sim.run(Duration::from_secs(5));
    let lost: Vec<String> = (0..10usize)
        .flat_map(|i| (0..10usize).filter(move |j| *j != i).map(move |j| (i, j)))
        .filter(|(i, j)| !sim.received(*j, format!("{i}>{j}").as_bytes()))
        .map(|(i, j)| format!("{i}>{j}"))
        .collect();
    assert!(lost.is_empty(), "{lost:?}");
}

fn ten_nodes() -> Sim {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let everyone: Vec<u8> = (1..=10).collect();
    for n in 1..=10u8 {
        sim.add(Settings::of(&ca, ca.node(&format!("node-{n}"), n, 86_400)).knows(&everyone).config(), n);
    }
    sim
}
