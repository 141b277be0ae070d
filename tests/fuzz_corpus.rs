//! Replays every committed fuzz corpus input (`fuzz/corpus/<target>/`, crash reproducers
//! included) through the same entry functions the libFuzzer targets call, on stable Rust: CI
//! exercises every parser and the mesh core with them without a nightly toolchain.
//! `COS_MESH_FUZZ_TARGET=mesh` replays one target only.

#[path = "../fuzz/src/cert.rs"]
mod cert;
#[path = "../fuzz/src/config.rs"]
mod config;
#[path = "../fuzz/src/control_socket.rs"]
mod control_socket;
#[path = "../fuzz/src/firewall_packet.rs"]
mod firewall_packet;
#[path = "../fuzz/src/firewall_rules.rs"]
mod firewall_rules;
#[path = "../fuzz/src/fixtures.rs"]
mod fixtures;
#[path = "../fuzz/src/mesh.rs"]
mod mesh;
#[path = "../fuzz/src/mesh_control.rs"]
mod mesh_control;
#[path = "../fuzz/src/packet.rs"]
mod packet;

use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};

/// A target's entry function.
type Entry = fn(&[u8]);

/// Every target with its entry function (the structured one decodes as `fuzz_target!` does).
const TARGETS: &[(&str, Entry)] = &[
    ("cert", cert::run),
    ("config_file", config::file),
    ("config_dir", config::dir),
    ("firewall_rules", firewall_rules::run),
    ("packet", packet::run),
    ("firewall_packet", firewall_packet::run),
    ("control_socket", control_socket::run),
    ("mesh_control", mesh_control::run),
    ("mesh", |data| {
        if let Ok(input) = mesh::MeshInput::arbitrary_take_rest(Unstructured::new(data)) {
            mesh::run(input);
        }
    }),
];

#[test]
fn every_corpus_input_replays_without_a_crash() {
    let only = std::env::var("COS_MESH_FUZZ_TARGET").ok();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, entry) in TARGETS {
        if only.as_deref().is_some_and(|o| o != *name) {
            continue;
        }
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{name}: the seed corpus is empty");
        for f in &files {
            let data = std::fs::read(f).unwrap();
            // A panic names the input: `cargo fuzz run <target> <file>` reproduces it.
            let result = std::panic::catch_unwind(|| entry(&data));
            assert!(result.is_ok(), "{name}: {} panics", f.display());
        }
        eprintln!("{name}: {} inputs", files.len());
    }
    fixtures::remove_scratch();
}

/// The mesh target is only worth its runs if inputs reach what matters: a live session with a
/// member, a lighthouse with a registration, the refusal paths. One hand-written input each.
#[test]
fn mesh_harness_reaches_sessions_lighthouse_and_refusals() {
    use fixtures::vpn;
    use mesh::{CertPick, Message, Op, Source};
    let r = mesh::run(mesh::MeshInput {
        with_registered: true,
        ops: vec![
            Op::Tunnel { packet: mesh::ping(vpn(3), vpn(1)) },
            Op::Message(Message::Query(2)),
            Op::Control { src: Some(2), kind: 3, body: vec![100, 64, 0, 2] },
            Op::Hello { from: Source::Other(1), cert: CertPick::Foreign, id: 1, pad: 0, flip: None },
            Op::ToSession { cookie: false, data: vec![0; 64] },
            Op::Message(Message::RelayTo { peer: 2, datagram: vec![4, 0, 0, 0, 1, 2, 3, 4] }),
            Op::Wait { ms: 2000 },
        ],
    });
    assert!(r.member_session, "node 3's session came up");
    assert_eq!(r.delivered, 1, "the ping reached node 1's host: {r:?}");
    let c = &r.counters;
    assert!(c.lighthouse_queries >= 1, "node 2 registered and the query was answered: {c:?}");
    assert_eq!(c.rx_spoofed, 1, "a control message with a forged inner source is refused");
    assert_eq!(c.rx_cert_rejected, 1, "a certificate from another CA is refused");
    assert_eq!(c.rx_wireguard_errors, 1, "garbage on a live session fails decryption");
    assert_eq!(c.relay_forwarded, 1, "node 1 relays for its members");
}
