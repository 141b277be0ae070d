//! `cos-mesh ping` with real daemons in network namespaces: a public segment (198.18.0.0/24)
//! with a lighthouse that is also a relay, a Nomad server and a Nomad client. The client pings
//! the server directly, through the relay (the direct path blocked with nft), and with probes
//! the server's firewall drops; each time the printed path, verdict and exit status are checked.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use support::daemon::{BIN, Host, Pki, Segment};
use support::wait_until;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const LIGHTHOUSE: (&str, &str) = ("100.64.0.1", "198.18.0.1");

fn rules(roles: &[&str]) -> String {
    let files: Vec<String> = roles.iter().map(|r| format!("{REPO}/firewall/{r}.yaml")).collect();
    format!("  include: [{}]", files.join(", "))
}

struct World {
    _pki: Pki,
    _public: Segment,
    lighthouse: Host,
    server: Host,
    client: Host,
}

impl World {
    fn new() -> World {
        let pki = Pki::new("ping");
        let public = Segment::new();
        let (vpn, under) = LIGHTHOUSE;
        let mut lighthouse = Host::new(&public, "lighthouse", under, vpn);
        let (crt, key) = pki.sign("lighthouse", &format!("{vpn}/10"), "lighthouse");
        lighthouse.configure(
            &pki.ca_crt(),
            &crt,
            &key,
            &[],
            &rules(&["base"]),
            "lighthouse:\n  am_lighthouse: true\nrelay:\n  am_relay: true\n",
        );
        lighthouse.start();
        let node = |name: &str, n: u8, group: &str| {
            let h = Host::new(&public, name, &format!("198.18.0.{n}"), &format!("100.64.0.{n}"));
            let (crt, key) = pki.sign(name, &format!("100.64.0.{n}/10"), group);
            // The client runs two workers: the answers to its pings may reach either.
            let workers = if name == "client" { "routines: 2\n" } else { "" };
            let extra = format!("lighthouse:\n  hosts: [{vpn}]\n  interval: 2\nrelay:\n  relays: [{vpn}]\n{workers}");
            h.configure(&pki.ca_crt(), &crt, &key, &[LIGHTHOUSE], &rules(&["base", group]), &extra);
            h
        };
        let mut server = node("server", 11, "nomad-server");
        let mut client = node("client", 21, "nomad-client");
        server.start();
        client.start();
        for h in [&server, &client] {
            let registered = wait_until(Duration::from_secs(10), || {
                h.try_status().is_some_and(|s| s["lighthouses"][0]["up"] == true)
            });
            assert!(registered, "{} did not reach the lighthouse:\n{}", h.name, h.log());
        }
        // The client learns the server's name from the lighthouse's member list.
        let listed = wait_until(Duration::from_secs(10), || {
            let out = Command::new(BIN)
                .args(["members", "--format", "addrs", "--socket", &client.socket().to_string_lossy()])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).contains("100.64.0.11")
        });
        assert!(listed, "the client never listed the server:\n{}", client.log());
        assert!(client.log().contains("2 workers (routines)"), "{}", client.log());
        World { _pki: pki, _public: public, lighthouse, server, client }
    }

    /// `cos-mesh ping ARGS` against the client's daemon.
    fn ping(&self, args: &[&str]) -> (i32, String, String) {
        let socket = self.client.socket();
        let mut all = vec!["ping", "--socket", socket.to_str().unwrap()];
        all.extend_from_slice(args);
        let Output { status, stdout, stderr } = Command::new(BIN).args(&all).output().unwrap();
        let (out, err) = (String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned());
        eprintln!("$ cos-mesh {}\n{out}{err}(exit {:?})", all.join(" "), status.code());
        (status.code().unwrap_or(-1), out, err)
    }

    /// Drops UDP between client and server in the server's namespace (a firewall between
    /// them): only the relay can connect them.
    fn block_direct(&self) {
        let ns = &self.server.ns;
        let client = &self.client.underlay;
        ns.exec_ok("nft", &["add", "table", "ip", "block"]);
        ns.exec_ok("nft", &["add chain ip block cin { type filter hook input priority -300 ; }"]);
        ns.exec_ok("nft", &["add chain ip block cout { type filter hook output priority -300 ; }"]);
        ns.exec_ok(
            "nft",
            &["add", "rule", "ip", "block", "cin", "ip", "saddr", client, "udp", "dport", "4242", "drop"],
        );
        ns.exec_ok(
            "nft",
            &["add", "rule", "ip", "block", "cout", "ip", "daddr", client, "udp", "sport", "4242", "drop"],
        );
    }
}

#[test]
fn ping_reports_the_direct_path_and_the_far_firewall() {
    let w = World::new();
    // No tunnel yet: the first ping makes it (lighthouse query, handshake).
    let (code, out, _) = w.ping(&["server", "-n", "2"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("PING server (100.64.0.11): ICMP echo, 2 ping(s), timeout 5s\n"), "{out}");
    let replies: Vec<&str> = out.lines().filter(|l| l.starts_with("reply from")).collect();
    assert_eq!(replies.len(), 2, "{out}");
    for r in &replies {
        assert!(r.starts_with("reply from server (100.64.0.11) directly at 198.18.0.11:4242 in "), "{r}");
        assert!(r.ends_with(": its firewall allows ICMP echo from us"), "{r}");
    }
    assert!(out.contains("--- server (100.64.0.11): 2 sent, 2 answered, round trip min/avg/max "), "{out}");

    // Nomad RPC from a client is allowed by firewall/nomad-server.yaml; the HTTP API is not.
    let (code, out, _) = w.ping(&["100.64.0.11", "-n", "1", "--port", "4647"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("directly at 198.18.0.11:4242") && out.contains("its firewall allows TCP to port 4647 from us"),
        "{out}"
    );
    let (code, out, _) = w.ping(&["server", "-n", "1", "--port", "4646", "--proto", "tcp"]);
    assert_eq!(code, 1, "a firewall drop is a failure: {out}");
    assert!(out.contains("its firewall DROPS TCP to port 4646 from us (firewall at the far end)"), "{out}");
    let (code, out, _) = w.ping(&["server", "-n", "1", "--port", "4648/udp", "--json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["ok"], false);
    assert_eq!(v["name"], "server");
    assert_eq!(v["probe"], "4648/udp");
    assert_eq!(v["pings"][0]["direct"], "198.18.0.11:4242");
    assert_eq!(v["pings"][0]["far_firewall"], "drop");
    assert_eq!(v["pings"][0]["our_firewall"], "allow");
    // The probes never met the server's packet path: a drop there would have been counted.
    let fw = &w.server.status()["firewall"];
    assert_eq!(fw["counters"]["dropped_no_rule"], 0, "probes never meet the packet path: {fw}");

    // Names and stages the operator gets wrong.
    let (code, _, err) = w.ping(&["nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("no certificate named \"nobody\" is known to this node"), "{err}");
    let (code, out, _) = w.ping(&["100.64.0.99", "--timeout", "2s"]);
    assert_eq!(code, 1);
    assert!(out.contains("no answer from 100.64.0.99: the lighthouse(s) (100.64.0.1) do not know it"), "{out}");
    let (code, _, err) = w.ping(&["server", "--port", "4647/tcp", "--proto", "udp"]);
    assert_eq!(code, 2, "bad usage: {err}");
    assert!(err.contains("already names its protocol"), "{err}");
}

#[test]
fn ping_through_the_relay_names_it() {
    let w = World::new();
    w.block_direct();
    let (code, out, _) = w.ping(&["server", "-n", "2", "--port", "4647/tcp"]);
    assert_eq!(code, 0, "{out}\n{}\n{}", w.client.log(), w.server.log());
    for r in out.lines().filter(|l| l.starts_with("reply from")) {
        assert!(r.starts_with("reply from server (100.64.0.11) via relay lighthouse (100.64.0.1) in "), "{r}");
        assert!(r.ends_with(": its firewall allows TCP to port 4647 from us"), "{r}");
    }
    let forwarded = w.lighthouse.status()["counters"]["relay_forwarded"].as_u64().unwrap();
    assert!(forwarded > 0);
}
