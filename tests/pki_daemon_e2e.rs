//! Real daemons in network namespaces with certificates of both versions under a mixed CA pool:
//! `a` holds a v2 dual-stack certificate of a v2 CA, `b` a v1 certificate of a v1 CA, `c` a v1
//! and a v2 certificate for one key (`pki.initiating_version: 2`). Every node trusts a bundle of
//! both CAs plus a P-256 CA block, which is skipped with a warning. All three ping each other.

mod support;

use std::fs;
use std::time::Duration;

use support::daemon::{Host, Segment, cli};
use support::wait_until;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn v1_and_v2_nodes_under_a_mixed_ca_pool_exchange_traffic() {
    let pki = tempfile::tempdir().unwrap();
    let d = pki.path();
    cli(
        d,
        &[
            "ca",
            "--name",
            "old CA",
            "--version",
            "1",
            "--ips",
            "100.64.0.0/10",
            "--out-crt",
            "old.crt",
            "--out-key",
            "old.key",
        ],
    );
    cli(
        d,
        &[
            "ca",
            "--name",
            "new CA",
            "--networks",
            "100.64.0.0/10,fd00::/16",
            "--out-crt",
            "new.crt",
            "--out-key",
            "new.key",
        ],
    );
    let new_ca = ["--ca-crt", "new.crt", "--ca-key", "new.key"];
    let sign = |args: &[&str]| cli(d, &[&["sign"][..], args].concat());
    sign(
        &[
            &new_ca[..],
            &["--name", "a", "--networks", "100.64.0.1/10,fd00::1/64", "--out-crt", "a.crt", "--out-key", "a.key"],
        ]
        .concat(),
    );
    sign(&[
        "--ca-crt",
        "old.crt",
        "--ca-key",
        "old.key",
        "--name",
        "b",
        "--ip",
        "100.64.0.2/10",
        "--out-crt",
        "b.crt",
        "--out-key",
        "b.key",
    ]);
    cli(d, &["keygen", "--out-key", "c.key", "--out-pub", "c.pub"]);
    sign(
        &[
            &new_ca[..],
            &["--name", "c", "--version", "1", "--ip", "100.64.0.3/10", "--in-pub", "c.pub", "--out-crt", "c1.crt"],
        ]
        .concat(),
    );
    sign(
        &[
            &new_ca[..],
            &["--name", "c", "--networks", "100.64.0.3/10,fd00::3/64", "--in-pub", "c.pub", "--out-crt", "c2.crt"],
        ]
        .concat(),
    );
    let read = |f: &str| fs::read_to_string(d.join(f)).unwrap();
    fs::write(d.join("c.crt"), read("c1.crt") + &read("c2.crt")).unwrap();
    let p256 = read(&format!("{REPO}/tests/vectors/v2-mobile-nebula-p256-ca.pem"));
    fs::write(d.join("bundle.crt"), read("old.crt") + &p256 + &read("new.crt")).unwrap();

    let seg = Segment::new();
    let names =
        [("a", "198.18.0.1", "100.64.0.1"), ("b", "198.18.0.2", "100.64.0.2"), ("c", "198.18.0.3", "100.64.0.3")];
    let firewall = format!("  include: [{REPO}/firewall/base.yaml]");
    let mut hosts: Vec<Host> = names.iter().map(|(n, under, vpn)| Host::new(&seg, n, under, vpn)).collect();
    for h in &hosts {
        let statics: Vec<(&str, &str)> =
            names.iter().filter(|(n, _, _)| *n != h.name).map(|(_, under, vpn)| (*vpn, *under)).collect();
        let key = d.join(format!("{}.key", h.name));
        h.configure(&d.join("bundle.crt"), &d.join(format!("{}.crt", h.name)), &key, &statics, &firewall, "");
        if h.name == "c" {
            // initiating_version belongs to the pki section, written first by configure.
            let text =
                read(&h.config_path().to_string_lossy()).replacen("pki:\n", "pki:\n  initiating_version: 2\n", 1);
            fs::write(h.config_path(), text).unwrap();
        }
    }
    for h in &mut hosts {
        h.start();
    }
    for (i, j) in [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)] {
        let target = hosts[j].vpn_ip.clone();
        assert!(
            wait_until(Duration::from_secs(10), || hosts[i].ping(&target)),
            "{} cannot reach {}:\n{}\n{}",
            hosts[i].name,
            hosts[j].name,
            hosts[i].log(),
            hosts[j].log()
        );
    }
    // c presents its v2 certificate (initiating_version 2), b its v1 one: peers see their fingerprints.
    let fingerprint = |f: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(&cli(d, &["print", "--json", f])).unwrap();
        v["fingerprint"].as_str().unwrap().to_string()
    };
    let seen = hosts[0].status();
    let seen_fp = |name: &str| {
        let p = seen["peers"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap();
        p["cert_fingerprint"].as_str().unwrap().to_string()
    };
    assert_eq!(seen_fp("c"), fingerprint("c2.crt"));
    assert_eq!(seen_fp("b"), fingerprint("b.crt"));
    // Each node names the others by their certificates, and started with a warning naming the
    // skipped P-256 block.
    for h in &hosts {
        let status = h.status();
        let mut peers: Vec<String> =
            status["peers"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_string()).collect();
        peers.sort();
        let want: Vec<String> = names.iter().map(|(n, _, _)| n.to_string()).filter(|n| *n != h.name).collect();
        assert_eq!(peers, want, "{}", h.name);
        let log = h.log();
        assert!(log.contains("(NEBULA CERTIFICATE V2) skipped: certificate \"test\" uses P-256"), "{}:\n{log}", h.name);
    }
}
