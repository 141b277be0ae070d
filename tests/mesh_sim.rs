//! In-memory meshes on a virtual clock: whole nodes (`mesh::Node`, real boringtun sessions, real
//! certificates) exchange datagrams through a simulated network, so a rekey at 120 s or a
//! retry after a lost handshake is a millisecond test. Needs `--features sim` (boringtun's
//! clock becomes the thread-local mock that this harness advances).
#![cfg(feature = "sim")]

mod simnet;

use std::net::SocketAddr;
use std::time::Duration;

use cos_mesh::cert::keys::HostSecret;
use cos_mesh::cert::pool::Blocklist;
use cos_mesh::mesh::{Event, MIN_BUFFER, Path};
use simnet::{Ca, Sim, ip_packet, underlay, vpn};

/// Two nodes that know each other's underlay address.
fn pair(sim: &mut Sim, ca: &Ca) -> (usize, usize) {
    sim.add_pair(ca, ca.node("a", 1, 86_400), ca.node("b", 2, 86_400))
}

#[test]
fn handshake_then_data_both_ways() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (a, b) = pair(&mut sim, &ca);
    sim.send(a, vpn(2), b"ping-1");
    sim.send(a, vpn(2), b"ping-2");
    sim.run(Duration::from_millis(50));
    // Hello, reply, initiation, response: four one-way trips of 5 ms, and both packets arrive.
    assert!(sim.received(b, b"ping-1") && sim.received(b, b"ping-2"), "{:?}", sim.nodes[b].tun);
    sim.send(b, vpn(1), b"pong");
    sim.run(Duration::from_millis(20));
    assert!(sim.received(a, b"pong"));
    for (i, other) in [(a, "b"), (b, "a")] {
        let peers = sim.nodes[i].node.peers(sim.now);
        assert_eq!(peers.len(), 1);
        assert!(peers[0].up && peers[0].name == other, "{peers:?}");
    }
    assert!(sim.nodes[a].events.iter().any(|e| matches!(e, Event::PeerUp { name, .. } if name == "b")));
}

/// What `status` shows of a tunnel is measured, not guessed: the round trip (5 ms each way
/// here), how long the session has been up, how long ago the peer was last heard, and the path
/// as a value.
#[test]
fn status_measures_round_trip_tunnel_age_and_last_rx() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (a, b) = pair(&mut sim, &ca);
    let start = sim.now;
    sim.send(a, vpn(2), b"hello");
    sim.run(Duration::from_millis(50));
    for _ in 0..10 {
        sim.send(a, vpn(2), b"ping");
        sim.run(Duration::from_millis(100));
        sim.send(b, vpn(1), b"pong");
        sim.run(Duration::from_millis(100));
    }
    let elapsed = sim.now - start;
    for (i, other) in [(a, 2), (b, 1)] {
        let p = sim.nodes[i].node.peers(sim.now).remove(0);
        assert_eq!(p.path, Some(Path::Direct(underlay(other))), "{p:?}");
        let rtt = p.rtt.unwrap_or_else(|| panic!("node {i}: no rtt measured: {p:?}"));
        assert!(rtt >= 2 * sim.latency && rtt < 3 * sim.latency, "node {i}: rtt {rtt:?}, the network's is 10 ms");
        let age = p.tunnel_age.unwrap_or_else(|| panic!("node {i}: up but no tunnel age: {p:?}"));
        assert!(age > Duration::from_secs(1) && age <= elapsed, "node {i}: age {age:?} of {elapsed:?}");
        let last_rx = p.last_rx_ago.unwrap_or_else(|| panic!("node {i}: no last rx: {p:?}"));
        assert!(last_rx <= Duration::from_millis(200), "node {i}: last rx {last_rx:?} ago, traffic just flowed");
    }
    // Silence: the tunnel ages, the last datagram from b recedes (only a sends, a keepalive
    // 10 s after the last pong), the round trip stays what it was.
    sim.run(Duration::from_secs(30));
    let p = sim.nodes[a].node.peers(sim.now).remove(0);
    assert!(p.up && p.tunnel_age.unwrap() > Duration::from_secs(31), "{p:?}");
    assert!(p.last_rx_ago.unwrap() >= Duration::from_secs(15), "a heard nothing for a while: {p:?}");
    assert!(p.rtt.is_some());
}

#[test]
fn rekeys_after_two_minutes_without_losing_packets() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (a, b) = pair(&mut sim, &ca);
    let mut sent = 0;
    for second in 0..400 {
        let msg = format!("m{second}");
        sim.send(a, vpn(2), msg.as_bytes());
        if second % 3 == 0 {
            sim.send(b, vpn(1), format!("r{second}").as_bytes());
        }
        sent += 1;
        sim.run(Duration::from_secs(1));
    }
    let got = (0..sent).filter(|s| sim.received(b, format!("m{s}").as_bytes())).count();
    assert_eq!(got, sent, "every packet arrives across rekeys");
    // A new session at least every 120 s of traffic (REKEY_AFTER_TIME).
    let handshakes =
        sim.nodes[a].node.counters().handshakes_completed + sim.nodes[b].node.counters().handshakes_completed;
    assert!(handshakes >= 3, "handshakes: {handshakes}");
}

#[test]
fn lost_handshakes_are_retried() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (a, b) = pair(&mut sim, &ca);
    // Drop everything for the first 3 seconds: Hellos and then initiations are lost.
    let t0 = sim.now;
    sim.filter = Box::new(move |now, _, _, _| now.duration_since(t0) > Duration::from_secs(3));
    sim.send(a, vpn(2), b"early");
    sim.run(Duration::from_secs(12));
    assert!(sim.dropped > 0);
    assert!(sim.received(b, b"early"), "the queued packet arrives after retries");
    assert!(sim.nodes[a].node.counters().handshakes_initiated >= 1);
}

#[test]
fn unreachable_peer_times_out_and_says_so() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (a, _b) = pair(&mut sim, &ca);
    sim.filter = Box::new(|_, _, _, _| false);
    sim.send(a, vpn(2), b"void");
    sim.run(Duration::from_secs(10));
    assert!(sim.nodes[a].events.contains(&Event::HandshakeTimedOut { vpn_ip: vpn(2).into() }));
    assert_eq!(sim.nodes[a].node.counters().handshakes_timed_out, 1);
}

#[test]
fn simultaneous_open_converges() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (a, b) = pair(&mut sim, &ca);
    sim.send(a, vpn(2), b"from-a");
    sim.send(b, vpn(1), b"from-b");
    sim.run(Duration::from_millis(100));
    assert!(sim.received(b, b"from-a") && sim.received(a, b"from-b"));
    sim.run(Duration::from_secs(5));
    for i in 0..50 {
        sim.send(a, vpn(2), format!("a{i}").as_bytes());
        sim.send(b, vpn(1), format!("b{i}").as_bytes());
        sim.run(Duration::from_millis(20));
    }
    for i in 0..50 {
        assert!(
            sim.received(b, format!("a{i}").as_bytes()) && sim.received(a, format!("b{i}").as_bytes()),
            "message {i}"
        );
    }
    assert_eq!(sim.nodes[a].node.peers(sim.now).len(), 1);
    assert_eq!(sim.nodes[b].node.peers(sim.now).len(), 1);
}

#[test]
fn restarted_peer_is_back_within_seconds() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (ca_cert, ka) = ca.node("a", 1, 86_400);
    let (cb_cert, kb) = ca.node("b", 2, 86_400);
    let kb_pem = kb.to_pem();
    let a = sim.add(Sim::config(&ca, ca_cert, ka, &[(2, underlay(2))]), 1);
    let b = sim.add(Sim::config(&ca, cb_cert.clone(), kb, &[]), 2);
    sim.send(a, vpn(2), b"before");
    sim.run(Duration::from_millis(100));
    assert!(sim.received(b, b"before"));
    // b restarts with the same identity but no state; it knows nothing about a.
    let kb2 = HostSecret::from_pem(kb_pem.as_bytes()).unwrap();
    sim.restart(b, Sim::config(&ca, cb_cert, kb2, &[]));
    sim.send(a, vpn(2), b"lost");
    sim.run(Duration::from_millis(200));
    for i in 0..20 {
        sim.send(a, vpn(2), format!("after{i}").as_bytes());
        sim.run(Duration::from_millis(100));
    }
    let first = (0..20).find(|i| sim.received(b, format!("after{i}").as_bytes()));
    assert!(matches!(first, Some(i) if i <= 3), "traffic resumes within 0.5 s of the restart: {first:?}");
    assert!(sim.nodes[a].node.counters().handshakes_initiated >= 2);
}

#[test]
fn roaming_peer_is_followed() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (a, b) = pair(&mut sim, &ca);
    sim.send(a, vpn(2), b"hello");
    sim.run(Duration::from_millis(100));
    assert!(sim.received(b, b"hello"));
    // a's underlay address changes (new DHCP lease, NAT rebinding).
    let new_addr = SocketAddr::from(([198, 18, 7, 7], 50_000));
    sim.nodes[a].addr = new_addr;
    sim.send(a, vpn(2), b"from-new-address");
    sim.run(Duration::from_millis(50));
    assert!(sim.received(b, b"from-new-address"));
    sim.send(b, vpn(1), b"reply");
    sim.run(Duration::from_millis(50));
    assert!(sim.received(a, b"reply"), "b answers at the new address");
    assert_eq!(sim.nodes[b].node.peers(sim.now)[0].endpoint, Some(new_addr.to_string()));
    assert!(sim.nodes[b].events.iter().any(|e| matches!(e, Event::Roamed { to, .. } if *to == Path::Direct(new_addr))));
}

#[test]
fn blocklist_on_reload_disconnects_and_refuses() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (a, b) = pair(&mut sim, &ca);
    sim.send(a, vpn(2), b"ok");
    sim.run(Duration::from_millis(100));
    assert!(sim.received(b, b"ok"));
    let fp = sim.nodes[a].node.cert().fingerprint();
    let mut bl = Blocklist::default();
    bl.insert(fp);
    let wall = sim.wall();
    let own = (**sim.nodes[b].node.cert()).clone();
    sim.nodes[b].node.reload_trust(ca.pool(), bl, own, wall).unwrap();
    sim.drain(b);
    assert!(
        sim.nodes[b]
            .events
            .iter()
            .any(|e| matches!(e, Event::PeerRemoved { name, reason, .. } if name == "a" && reason.to_string().contains("blocked")))
    );
    for i in 0..30 {
        sim.send(a, vpn(2), format!("blocked{i}").as_bytes());
        sim.run(Duration::from_millis(500));
    }
    assert!((0..30).all(|i| !sim.received(b, format!("blocked{i}").as_bytes())));
    assert!(sim.nodes[b].node.counters().rx_cert_rejected > 0);
    assert!(sim.nodes[b].node.peers(sim.now).is_empty());
}

#[test]
fn expired_peer_is_disconnected() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (a, b) = sim.add_pair(&ca, ca.node("short", 1, 30), ca.node("b", 2, 86_400));
    sim.send(a, vpn(2), b"while-valid");
    sim.run(Duration::from_secs(1));
    assert!(sim.received(b, b"while-valid"));
    sim.run(Duration::from_secs(40));
    assert!(sim.nodes[b].events.iter().any(
        |e| matches!(e, Event::PeerRemoved { name, reason, .. } if name == "short" && reason.to_string().contains("expired"))
    ));
    sim.send(a, vpn(2), b"after-expiry");
    sim.run(Duration::from_secs(10));
    assert!(!sim.received(b, b"after-expiry"));
}

#[test]
fn certificate_from_another_ca_is_refused() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let rogue = Ca::new("rogue");
    let (cb_cert, kb) = ca.node("b", 2, 86_400);
    let (cm_cert, km) = rogue.node("mallory", 3, 86_400);
    let b = sim.add(Sim::config(&ca, cb_cert, kb, &[]), 2);
    let m = sim.add(Sim::config(&rogue, cm_cert, km, &[(2, underlay(2))]), 3);
    sim.send(m, vpn(2), b"let-me-in");
    sim.run(Duration::from_secs(8));
    assert!(!sim.received(b, b"let-me-in"));
    assert!(sim.nodes[b].node.counters().rx_cert_rejected > 0);
    assert!(
        sim.nodes[b].events.iter().any(
            |e| matches!(e, Event::CertRejected { reason, .. } if reason.to_string().contains("could not find ca"))
        )
    );
    assert!(sim.nodes[b].node.peers(sim.now).is_empty());
}

#[test]
fn stolen_certificate_without_its_key_is_useless() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (a, b) = pair(&mut sim, &ca);
    // Mallory has a valid certificate of her own (100.64.0.3) and a copy of a's certificate.
    let (cm_cert, km) = ca.node("mallory", 3, 86_400);
    let m = sim.add(Sim::config(&ca, cm_cert, km, &[(2, underlay(2))]), 3);
    let stolen = sim.nodes[a].node.cert().to_bytes().to_vec();
    // 1. She presents a's certificate, then runs a handshake with her own key: refused.
    let hello = cos_mesh::mesh::wire::hello(9, &stolen);
    let (addr_m, addr_b) = (sim.nodes[m].addr, sim.nodes[b].addr);
    sim.transmit(addr_m, addr_b, None, hello);
    sim.run(Duration::from_millis(50));
    assert!(sim.nodes[b].node.peers(sim.now).is_empty(), "a Hello alone creates no session");
    // 2. With her own certificate she gets a session, but packets claiming a's address drop.
    sim.send(m, vpn(2), b"honest");
    sim.run(Duration::from_millis(100));
    assert!(sim.received(b, b"honest"));
    let spoofed = ip_packet(vpn(1), vpn(2), b"spoofed");
    let now = sim.now;
    let mut buf = vec![0; MIN_BUFFER];
    // Encrypt the spoofed packet on mallory's session by bypassing her own routing check.
    if let Some((to, d)) = sim.nodes[m].node.handle_tun_packet(now, &spoofed, &mut buf) {
        let d = d.to_vec();
        sim.transmit(addr_m, to, None, d);
    }
    sim.run(Duration::from_millis(50));
    assert!(!sim.received(b, b"spoofed"));
    assert_eq!(sim.nodes[b].node.peers(sim.now).iter().filter(|p| p.name == "a").count(), 0, "a never talked to b");
}

#[test]
fn malformed_datagrams_are_counted_and_harmless() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (a, b) = pair(&mut sim, &ca);
    sim.send(a, vpn(2), b"first");
    sim.run(Duration::from_millis(100));
    assert!(sim.received(b, b"first"));
    let attacker = SocketAddr::from(([198, 18, 9, 9], 666));
    let addr_b = sim.nodes[b].addr;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut garbage: Vec<Vec<u8>> =
        vec![vec![], vec![4, 0, 0, 0], vec![1; 148], vec![0x80; 1300], vec![0x81; 20], vec![0x82, 1, 0, 0, 0, 0, 0, 0]];
    for _ in 0..2000 {
        let len = (next() % 1500) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if let Some(first) = d.first_mut() {
            *first = (next() % 5) as u8; // mostly plausible WireGuard types
        }
        if d.len() >= 4 {
            d[1..4].fill(0);
        }
        garbage.push(d);
    }
    // Forged data packets carrying b's real receiver indexes (guessed low bits) and junk.
    for idx in 0..300u32 {
        let mut d = vec![4, 0, 0, 0];
        d.extend_from_slice(&((idx << 8) | (idx % 8)).to_le_bytes());
        d.extend_from_slice(&[0xaa; 80]);
        garbage.push(d);
    }
    let n = garbage.len() as u64;
    for d in garbage {
        sim.transmit(attacker, addr_b, None, d);
    }
    sim.run(Duration::from_millis(20));
    let c = sim.nodes[b].node.counters().clone();
    let dropped = c.rx_malformed
        + c.rx_unknown_index
        + c.rx_handshake_invalid
        + c.rx_wireguard_errors
        + c.rx_unknown_key
        + c.rx_unsolicited;
    assert!(dropped >= n - 5, "counted drops {dropped} of {n}: {c:?}");
    sim.send(a, vpn(2), b"still-working");
    sim.run(Duration::from_millis(20));
    assert!(sim.received(b, b"still-working"), "the established tunnel still works");
}

#[test]
fn packets_not_addressed_to_the_node_are_dropped() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    // b routes for 10.9.0.0/16 (its certificate says so); a sends 10.9.0.0/16 and 10.8.0.0/16 via b.
    let (ca_cert, ka) = ca.node("a", 1, 86_400);
    let (cb_cert, kb) = ca.node_full("b", 2, 86_400, &[], &["10.9.0.0/16"]);
    let mut cfg_a = Sim::config(&ca, ca_cert, ka, &[(2, underlay(2))]);
    cfg_a.unsafe_routes =
        vec![("10.9.0.0/16".parse().unwrap(), vpn(2).into()), ("10.8.0.0/16".parse().unwrap(), vpn(2).into())];
    let a = sim.add(cfg_a, 1);
    let b = sim.add(Sim::config(&ca, cb_cert, kb, &[(1, underlay(1))]), 2);
    sim.send(a, "10.9.1.1".parse().unwrap(), b"routed");
    sim.send(a, "10.8.1.1".parse().unwrap(), b"not-routed-here");
    sim.run(Duration::from_millis(100));
    assert!(sim.received(b, b"routed"), "b delivers what its certificate routes for");
    assert!(!sim.received(b, b"not-routed-here"), "and nothing else");
    assert_eq!(sim.nodes[b].node.counters().rx_not_for_us, 1);
}

#[test]
fn replayed_initiations_cannot_move_a_peer() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (a, b) = pair(&mut sim, &ca);
    let inits: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
    let seen = inits.clone();
    sim.filter = Box::new(move |_, _, _, d: &[u8]| {
        if d.len() == 148 && d[0] == 1 {
            seen.borrow_mut().push(d.to_vec());
        }
        true
    });
    sim.send(a, vpn(2), b"hi");
    sim.run(Duration::from_millis(100));
    assert!(sim.received(b, b"hi"));
    // An off-path attacker replays a's initiation until boringtun answers with cookies.
    let init = inits.borrow()[0].clone();
    let attacker: SocketAddr = "198.18.66.66:6666".parse().unwrap();
    for _ in 0..30 {
        sim.transmit(attacker, underlay(2), None, init.clone());
    }
    sim.run(Duration::from_millis(10));
    let peer = sim.nodes[b].node.peers(sim.now).into_iter().find(|p| p.name == "a").unwrap();
    assert_eq!(peer.endpoint.as_deref(), Some("198.18.0.1:4242"), "the endpoint stays with the real peer");
    sim.send(b, vpn(1), b"still-routed-to-a");
    sim.run(Duration::from_millis(20));
    assert!(sim.received(a, b"still-routed-to-a"));
}

#[test]
fn spoofed_hellos_never_become_addresses_we_send_to() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (a, b) = pair(&mut sim, &ca);
    sim.send(a, vpn(2), b"hi");
    sim.run(Duration::from_millis(100));
    // a's certificate is public; replay a Hello carrying it from eight spoofed sources.
    let hello = cos_mesh::mesh::wire::hello(77, sim.nodes[a].node.cert().to_bytes());
    for i in 0..8u8 {
        sim.transmit(SocketAddr::from(([198, 18, 99, i], 9999)), underlay(2), None, hello.clone());
    }
    sim.run(Duration::from_millis(20));
    // Count what b sends to the spoofed sources from now on. a falls silent for 30 s, so b
    // re-initiates (every path gets a Hello and an initiation), then a answers again.
    let to_victims = std::rc::Rc::new(std::cell::Cell::new(0));
    let counter = to_victims.clone();
    let t0 = sim.now;
    sim.filter = Box::new(move |now, from, to, _| {
        if to.ip().to_string().starts_with("198.18.99.") {
            counter.set(counter.get() + 1);
        }
        from != underlay(1) || now.duration_since(t0) > Duration::from_secs(30)
    });
    for i in 0..45 {
        sim.send(b, vpn(1), format!("m{i}").as_bytes());
        sim.run(Duration::from_secs(1));
    }
    assert!(sim.nodes[b].node.counters().handshakes_initiated >= 1, "b did re-initiate");
    assert!(sim.received(a, b"m44"), "and the session recovered");
    assert_eq!(to_victims.get(), 0, "b sent handshakes or data to spoofed addresses");
}

#[test]
fn a_replayed_hello_is_answered_within_the_reply_budget() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (a, b) = pair(&mut sim, &ca);
    sim.send(a, vpn(2), b"hi");
    sim.run(Duration::from_millis(100));
    // a's genuine Hello (its certificate is already verified and cached at b) replayed 500
    // times within a second from one source: each costs b no signature check, so only the
    // reply budget stops b answering every one of them.
    let hello = cos_mesh::mesh::wire::hello(78, sim.nodes[a].node.cert().to_bytes());
    let attacker = SocketAddr::from(([198, 18, 99, 1], 9999));
    let before = sim.nodes[b].node.counters().tx_hello_replies;
    for _ in 0..500 {
        sim.transmit(attacker, underlay(2), None, hello.clone());
    }
    sim.run(Duration::from_millis(50));
    let c = sim.nodes[b].node.counters();
    let replies = c.tx_hello_replies - before;
    assert!(replies <= 20, "{replies} replies to one source in a second");
    assert!(c.tx_hello_reply_limited >= 480, "{} limited", c.tx_hello_reply_limited);
    // The tunnel is untouched and a's own Hellos are answered again after the second.
    sim.send(a, vpn(2), b"after");
    sim.run(Duration::from_millis(100));
    assert!(sim.received(b, b"after"));
}

#[test]
fn the_host_cannot_speak_the_control_protocol() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (a, b) = pair(&mut sim, &ca);
    sim.send(a, vpn(2), b"hi");
    sim.run(Duration::from_millis(100));
    // A local process on a crafts a lighthouse update (protocol 253) to b, framed as IPv4 and
    // as IPv6 (next header 253).
    use cos_mesh::mesh::control::{Control, Framing};
    let update = Control::HostUpdate { addrs: vec![underlay(9)], relays: vec![] };
    sim.send_packet(a, &update.to_packet(Framing::V4 { src: vpn(1), dst: vpn(2) }));
    let (src, dst) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
    sim.send_packet(a, &update.to_packet(Framing::V6 { src, dst }));
    sim.run(Duration::from_millis(20));
    assert_eq!(sim.nodes[a].node.counters().tun_dropped_control, 2);
    assert_eq!(sim.nodes[b].node.counters().rx_control, 0);
}

#[test]
fn packets_queued_for_a_peer_leave_when_it_calls_first() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (ca_cert, ka) = ca.node("a", 1, 86_400);
    let (cb_cert, kb) = ca.node("b", 2, 86_400);
    // a has no address for b; b knows a.
    let a = sim.add(Sim::config(&ca, ca_cert, ka, &[]), 1);
    let b = sim.add(Sim::config(&ca, cb_cert, kb, &[(1, underlay(1))]), 2);
    sim.send(a, vpn(2), b"waiting");
    sim.run(Duration::from_millis(200));
    assert!(!sim.received(b, b"waiting"));
    sim.send(b, vpn(1), b"calling");
    sim.run(Duration::from_millis(200));
    assert!(sim.received(a, b"calling"));
    assert!(sim.received(b, b"waiting"), "the queued packet left once the session was up");
    assert!(!sim.nodes[a].events.iter().any(|e| matches!(e, Event::HandshakeTimedOut { .. })));
}

#[test]
fn a_node_whose_certificate_expired_recovers_with_a_reload() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (ca_cert, ka) = ca.node("a", 1, 30);
    let (a, b) = sim.add_pair(&ca, (ca_cert.clone(), ka), ca.node("b", 2, 86_400));
    sim.send(a, vpn(2), b"before");
    sim.run(Duration::from_secs(1));
    assert!(sim.received(b, b"before"));
    sim.run(Duration::from_secs(40)); // a's certificate expires; b drops a
    // The operator renews a's certificate for the same key and reloads.
    let renewed = ca.renew(&ca_cert, 86_400);
    let wall = sim.wall();
    sim.nodes[a]
        .node
        .reload_trust(ca.pool(), Default::default(), renewed, wall)
        .expect("the renewed certificate is accepted");
    // The first packet goes out on the session b dropped and makes a re-handshake (as in
    // WireGuard it is lost); the ones after it arrive.
    for i in 0..10 {
        sim.send(a, vpn(2), format!("after-renewal-{i}").as_bytes());
        sim.run(Duration::from_millis(200));
    }
    assert!(sim.received(b, b"after-renewal-9"), "b accepts a again with its renewed certificate");
    // A certificate for another overlay IP is refused, and nothing changes.
    let (other, _) = ca.node("a", 9, 86_400);
    let err = sim.nodes[a].node.reload_trust(ca.pool(), Default::default(), other, wall).unwrap_err();
    assert!(err.to_string().contains("needs a restart"), "{err}");
}

#[test]
fn idle_peers_are_forgotten_and_met_again() {
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (a, b) = pair(&mut sim, &ca);
    sim.send(a, vpn(2), b"hello");
    sim.run(Duration::from_millis(100));
    assert_eq!(sim.nodes[b].node.peers(sim.now).len(), 1);
    sim.run(Duration::from_secs(25 * 60)); // the session ends (9 min), then 10 silent minutes
    assert!(sim.nodes[a].node.peers(sim.now).is_empty() && sim.nodes[b].node.peers(sim.now).is_empty());
    assert!(
        sim.nodes[b]
            .events
            .iter()
            .any(|e| matches!(e, Event::PeerRemoved { reason, .. } if reason.to_string().starts_with("idle")))
    );
    sim.send(a, vpn(2), b"again");
    sim.run(Duration::from_millis(200));
    assert!(sim.received(b, b"again"));
}

/// A stranger floods b with initiations whose mac1 is valid (anyone can compute it from the public
/// key in b's certificate), far over b's handshake budget, so every initiation b sees must carry
/// a mac2 from a cookie. a restarts meanwhile: its first initiation is answered with a cookie,
/// and its tunnel must still be back at once, not after boringtun's 5 s retry.
#[test]
fn a_restarted_peer_comes_back_fast_while_strangers_flood_valid_mac1_initiations() {
    use boringtun::noise::{Tunn, TunnResult};
    use boringtun::x25519::{PublicKey, StaticSecret};
    let mut sim = Sim::new();
    let ca = Ca::new("ca");
    let (ca_cert, ka) = ca.node("a", 1, 86_400);
    let (cb_cert, kb) = ca.node("b", 2, 86_400);
    let ka_pem = ka.to_pem();
    let a = sim.add(Sim::config(&ca, ca_cert.clone(), ka, &[(2, underlay(2))]), 1);
    let b = sim.add(Sim::config(&ca, cb_cert.clone(), kb, &[(1, underlay(1))]), 2);
    sim.send(a, vpn(2), b"before");
    sim.run(Duration::from_millis(100));
    assert!(sim.received(b, b"before"));

    // 64 genuine initiations from a stranger's own key to b's (valid mac1, no mac2), replayed in turn.
    let mut stranger =
        Tunn::new(StaticSecret::from([7u8; 32]), PublicKey::from(*cb_cert.public_key()), None, None, 1, None);
    let mut buf = vec![0u8; MIN_BUFFER];
    let pool: Vec<Vec<u8>> = (0..64)
        .map(|_| match stranger.format_handshake_initiation(&mut buf, true) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            _ => panic!("no initiation"),
        })
        .collect();
    let attacker: SocketAddr = "198.18.66.66:6666".parse().unwrap();
    let answers = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let counted = answers.clone();
    sim.filter = Box::new(move |_, _, to, _| {
        counted.set(counted.get() + u64::from(to == attacker));
        true
    });
    let flood_start = sim.now;
    let mut sent = 0usize;
    let mut flood = |sim: &mut Sim, ms: u64| {
        // 20 initiations per virtual millisecond: 20,000/s, 200 times b's handshake budget.
        for _ in 0..ms {
            for _ in 0..20 {
                sim.transmit(attacker, underlay(2), None, pool[sent % pool.len()].clone());
                sent += 1;
            }
            sim.run(Duration::from_millis(1));
        }
    };
    flood(&mut sim, 1_500);
    assert!(sim.nodes[b].node.counters().rx_rate_limited > 10_000, "b is under load and answers with cookies");

    let ka2 = HostSecret::from_pem(ka_pem.as_bytes()).unwrap();
    sim.restart(a, Sim::config(&ca, ca_cert, ka2, &[(2, underlay(2))]));
    let mut back = None;
    for i in 0..60 {
        // A ping every 50 ms, as bench/attack.sh measures a restarted daemon: a's echo request,
        // b's reply (b still holds the session a lost, so this also exercises b's side).
        let (ping, pong) = (format!("ping{i}"), format!("pong{i}"));
        sim.send(a, vpn(2), ping.as_bytes());
        flood(&mut sim, 25);
        if sim.received(b, ping.as_bytes()) {
            sim.send(b, vpn(1), pong.as_bytes());
        }
        flood(&mut sim, 25);
        if sim.received(a, pong.as_bytes()) {
            back = Some(i);
            break;
        }
    }
    assert!(
        matches!(back, Some(i) if i <= 6),
        "a ping through the tunnel succeeds within 0.35 s of the restart, not {back:?} × 50 ms"
    );
    assert!(sim.nodes[b].node.counters().rx_rate_limited > 20_000, "the stranger was limited all along");
    // Answering every initiation over the budget with a cookie would answer the flood itself.
    let secs = sim.now.duration_since(flood_start).as_secs() + 1;
    assert!(answers.get() <= 20 * secs, "{} cookie replies to the stranger in {secs} s", answers.get());
}

/// Reordering (issue 16's chaos list; nft cannot hold a datagram back, so it is made here): every
/// datagram waits 5 ms plus up to 40 ms more, so handshake messages, the data queued behind them
/// and a stream sent 2 ms apart overtake each other. Over twenty seeds everything arrives and
/// nothing is refused (WireGuard's replay window takes data out of order).
#[test]
fn datagrams_overtaking_each_other_lose_nothing() {
    let mut out_of_order = 0;
    for seed in 0..20 {
        let mut sim = Sim::new();
        let ca = Ca::new("ca");
        let (a, b) = pair(&mut sim, &ca);
        sim.jitter(Duration::from_millis(40), seed);
        let tags: Vec<String> = (0..60).map(|n| format!("seq-{n:03}")).collect();
        for t in &tags[..20] {
            sim.send(a, vpn(2), t.as_bytes());
        }
        sim.run(Duration::from_millis(300));
        for t in &tags[20..] {
            sim.send(a, vpn(2), t.as_bytes());
            sim.run(Duration::from_millis(2));
        }
        sim.run(Duration::from_millis(200));
        let lost: Vec<&String> = tags.iter().filter(|t| !sim.received(b, t.as_bytes())).collect();
        assert!(lost.is_empty(), "seed {seed}: lost {lost:?}; b: {:?}", sim.nodes[b].node.counters());
        let order: Vec<Vec<u8>> = sim.nodes[b].tun.iter().map(|p| simnet::payload(p).to_vec()).collect();
        out_of_order += order.windows(2).filter(|w| w[0] > w[1]).count();
        assert_eq!(sim.nodes[b].node.counters().rx_wireguard_errors, 0, "seed {seed}: nothing refused as a replay");
    }
    eprintln!("{out_of_order} inversions in 20 runs of 60 packets");
    assert!(out_of_order > 100, "the network reordered: {out_of_order} inversions");
}
