//! Real daemons in network namespaces: four hosts on one underlay segment (198.18.0.0/24),
//! overlay 100.64.0.0/10, the role rule sets from `firewall/`, real TUN devices, real traffic
//! (ping, a 50 MB TCP stream, memcached), faults (SIGKILL, SIGHUP, garbage datagrams).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use support::daemon::{Host, Pki, Segment, checksummed_stream};
use support::{Netns, wait_until};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn rules(roles: &[&str]) -> String {
    let files: Vec<String> = roles.iter().map(|r| format!("{REPO}/firewall/{r}.yaml")).collect();
    format!("  include: [{}]", files.join(", "))
}

/// server 100.64.0.1 (nomad-server), client-a .2 and client-b .3 (nomad-client), operator .4
/// (ops); everyone knows everyone's underlay address.
struct Cluster {
    pki: Pki,
    seg: Segment,
    hosts: Vec<Host>,
}

const SERVER: usize = 0;
const CLIENT_A: usize = 1;
const CLIENT_B: usize = 2;
const OPERATOR: usize = 3;

impl Cluster {
    fn new() -> Cluster {
        let pki = Pki::new("e2e");
        let seg = Segment::new();
        let spec = [
            ("server", 1, "nomad-server", vec!["base", "nomad-server"]),
            ("client-a", 2, "nomad-client", vec!["base", "nomad-client"]),
            ("client-b", 3, "nomad-client", vec!["base", "nomad-client"]),
            ("operator", 4, "ops", vec!["base"]),
        ];
        let mut hosts = vec![];
        for (name, n, groups, roles) in &spec {
            let host = Host::new(&seg, name, &format!("198.18.0.{n}"), &format!("100.64.0.{n}"));
            let (crt, key) = pki.sign(name, &format!("100.64.0.{n}/10"), groups);
            let statics: Vec<(String, String)> = spec
                .iter()
                .filter(|s| s.1 != *n)
                .map(|s| (format!("100.64.0.{}", s.1), format!("198.18.0.{}", s.1)))
                .collect();
            let statics: Vec<(&str, &str)> = statics.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            host.configure(&pki.ca_crt(), &crt, &key, &statics, &rules(roles), "");
            hosts.push(host);
        }
        for h in &mut hosts {
            h.start();
        }
        Cluster { pki, seg, hosts }
    }
}

/// Connects from inside `ns` to `addr` within `timeout`; true if the TCP handshake completed.
fn can_connect(ns: &Netns, addr: &str, timeout: Duration) -> bool {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.run(move || TcpStream::connect_timeout(&addr, timeout).is_ok())
}

/// One memcached text-protocol exchange from inside `ns`.
fn memcached(ns: &Netns, addr: &str, request: &str, reply_ends_with: &'static str) -> Option<String> {
    let addr: SocketAddr = addr.parse().unwrap();
    let request = request.to_string();
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        s.write_all(request.as_bytes()).ok()?;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&out).ends_with(reply_ends_with) {
            let n = s.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        Some(String::from_utf8_lossy(&out).into_owned())
    })
}

fn spawn_memcached(ns: &Netns, ip: &str, port: u16) -> support::ChildGuard {
    let g = ns.spawn("memcached", &["-u", "root", "-l", ip, "-p", &port.to_string(), "-U", "0"]);
    let addr = format!("{ip}:{port}");
    assert!(
        wait_until(Duration::from_secs(5), || can_connect(ns, &addr, Duration::from_millis(200))),
        "memcached on {addr}"
    );
    g
}

#[test]
fn overlay_carries_ping_tcp_and_memcached_within_the_role_rules() {
    let c = Cluster::new();
    let h = &c.hosts;
    // ICMP inside the mesh (base.yaml) between every pair of roles.
    assert!(wait_until(Duration::from_secs(10), || h[SERVER].ping("100.64.0.2")), "server → client-a ping");
    assert!(h[CLIENT_B].ping("100.64.0.1") && h[OPERATOR].ping("100.64.0.3"));

    // memcached on client-a's overlay IP, on a Nomad dynamic port: set from client-b, get from
    // the operator; the server's group is not allowed on allocation ports.
    let _mc = spawn_memcached(&h[CLIENT_A].ns, "100.64.0.2", 25417);
    let stored = memcached(&h[CLIENT_B].ns, "100.64.0.2:25417", "set nomad-job 0 0 11\r\nhello-mesh!\r\n", "\r\n");
    assert_eq!(stored.as_deref(), Some("STORED\r\n"));
    let got = memcached(&h[OPERATOR].ns, "100.64.0.2:25417", "get nomad-job\r\n", "END\r\n");
    assert_eq!(got.as_deref(), Some("VALUE nomad-job 0 11\r\nhello-mesh!\r\nEND\r\n"));
    assert!(
        !can_connect(&h[SERVER].ns, "100.64.0.2:25417", Duration::from_secs(2)),
        "server must not reach allocations"
    );

    // Nomad RPC: a client reaches the server's 4647/tcp; nobody reaches a client's 22/tcp.
    let _rpc = spawn_memcached(&h[SERVER].ns, "100.64.0.1", 4647);
    let _ssh = spawn_memcached(&h[CLIENT_A].ns, "100.64.0.2", 22);
    assert!(can_connect(&h[CLIENT_B].ns, "100.64.0.1:4647", Duration::from_secs(3)));
    for from in [SERVER, CLIENT_B, OPERATOR] {
        assert!(
            !can_connect(&h[from].ns, "100.64.0.2:22", Duration::from_secs(2)),
            "{} reached client-a:22",
            h[from].name
        );
    }
    let drops = h[CLIENT_A].status()["firewall"]["counters"]["dropped_no_rule"].as_u64().unwrap();
    assert!(drops > 0, "the firewall counted its drops");
    let st = h[CLIENT_A].status();
    let server_drops =
        st["peers"].as_array().unwrap().iter().find(|p| p["name"] == "server").unwrap()["firewall_dropped"].clone();
    assert!(server_drops.as_u64().unwrap() > 0, "status shows the drops per peer: {server_drops}");

    // What the tunnel measures: the server started the handshake, so its round trip is known
    // at once; a ping keeps traffic flowing so the path probe refines it.
    let measured = |p: &serde_json::Value| p["rtt_ms"].is_f64() && p["tunnel_up_secs"].is_u64();
    let client_a =
        || h[SERVER].status()["peers"].as_array().unwrap().iter().find(|p| p["name"] == "client-a").unwrap().clone();
    assert!(
        wait_until(Duration::from_secs(5), || h[SERVER].ping("100.64.0.2") && measured(&client_a())),
        "status --json measures the tunnel: {}",
        client_a()
    );
    let p = client_a();
    assert!(p["rtt_ms"].as_f64().unwrap() < 100.0, "a veth round trip: {p}");
    assert!(p["last_rx_secs_ago"].as_u64().unwrap() <= 5, "a ping was just answered: {p}");
    assert_eq!(p["direct"], "198.18.0.2:4242", "the path as a value: {p}");
    let out = std::process::Command::new(support::daemon::BIN)
        .args(["status", "--socket", &h[SERVER].socket().to_string_lossy()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let details = text.lines().skip_while(|l| !l.starts_with("client-a")).nth(1).unwrap_or_default();
    assert!(
        details.trim_start().starts_with("rtt ") && details.contains(" ms, up ") && details.contains(", last rx "),
        "the text status shows the tunnel's figures under the peer:\n{text}"
    );

    // A 50 MB TCP stream client-b → client-a:25000 arrives intact.
    let took = checksummed_stream(&h[CLIENT_B], &h[CLIENT_A], "100.64.0.2:25000", 800);
    eprintln!("50 MB over the overlay in {took:?} (debug build)");
}

#[test]
fn a_node_of_another_ca_gets_nothing_through() {
    let c = Cluster::new();
    let rogue_pki = Pki::new("rogue");
    let mut rogue = Host::new(&c.seg, "rogue", "198.18.0.66", "100.64.0.66");
    let (crt, key) = rogue_pki.sign("rogue", "100.64.0.66/10", "nomad-server");
    rogue.configure(&rogue_pki.ca_crt(), &crt, &key, &[("100.64.0.2", "198.18.0.2")], &rules(&["base"]), "");
    rogue.start();
    assert!(!wait_until(Duration::from_secs(4), || rogue.ping("100.64.0.2")));
    let counters = &c.hosts[CLIENT_A].status()["counters"];
    assert!(counters["rx_cert_rejected"].as_u64().unwrap() > 0, "{counters}");
    assert!(
        c.hosts[CLIENT_A].log().contains("could not find ca for the certificate"),
        "the refusal is logged with its reason"
    );
    assert!(c.hosts[SERVER].ping("100.64.0.2"), "the mesh itself is unaffected");
    drop(c.pki);
}

#[test]
fn sighup_narrowing_the_firewall_cuts_the_flow_but_not_the_tunnel() {
    let mut c = Cluster::new();
    let _mc = spawn_memcached(&c.hosts[CLIENT_A].ns, "100.64.0.2", 25417);
    let ok = memcached(&c.hosts[CLIENT_B].ns, "100.64.0.2:25417", "set k 0 0 1\r\nv\r\n", "\r\n");
    assert_eq!(ok.as_deref(), Some("STORED\r\n"));
    // An open connection, used once.
    let conn = c.hosts[CLIENT_B].ns.run(|| {
        let mut s = TcpStream::connect_timeout(&"100.64.0.2:25417".parse().unwrap(), Duration::from_secs(3)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(b"get k\r\n").unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("VALUE k"));
        s
    });
    // The peer's counters only grow while its state lives; a dropped and re-created peer
    // would start again from zero.
    let rx_of_client_a = |c: &Cluster| {
        c.hosts[CLIENT_B].status()["peers"].as_array().unwrap().iter().find(|p| p["name"] == "client-a").unwrap()["rx_bytes"].as_u64().unwrap()
    };
    let rx_before = rx_of_client_a(&c);

    // A bad config is refused by `cos-mesh reload`, and the running one stays.
    let good = std::fs::read_to_string(c.hosts[CLIENT_A].config_path()).unwrap();
    std::fs::write(c.hosts[CLIENT_A].config_path(), good.replace("  include:", "  inclde:")).unwrap();
    let out = std::process::Command::new(support::daemon::BIN)
        .args(["reload", "--socket", &c.hosts[CLIENT_A].socket().to_string_lossy()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config.yaml") && err.contains("inclde"), "names the file and the key: {err}");
    assert!(
        memcached(&c.hosts[CLIENT_B].ns, "100.64.0.2:25417", "get k\r\n", "END\r\n").is_some(),
        "old rules still apply"
    );

    // Narrow client-a's firewall to base.yaml (ICMP only) and SIGHUP it.
    std::fs::write(c.hosts[CLIENT_A].config_path(), good.replace(&rules(&["base", "nomad-client"]), &rules(&["base"])))
        .unwrap();
    c.hosts[CLIENT_A].signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(5), || c.hosts[CLIENT_A].log().contains("reload: ")),
        "{}",
        c.hosts[CLIENT_A].log()
    );
    let cut = std::thread::spawn(move || {
        let mut s = conn;
        s.write_all(b"get k\r\n").unwrap();
        let mut buf = [0u8; 64];
        s.read(&mut buf).map(|n| n > 0).unwrap_or(false)
    });
    assert!(!cut.join().unwrap(), "the open memcached connection is cut at its next packet");
    assert!(!can_connect(&c.hosts[CLIENT_B].ns, "100.64.0.2:25417", Duration::from_secs(2)));
    // The tunnel itself stayed up: ICMP still flows and the peer was never removed.
    assert!(c.hosts[CLIENT_B].ping("100.64.0.2"));
    assert!(c.hosts[CLIENT_B].peer_up("100.64.0.2"));
    assert!(!c.hosts[CLIENT_B].log().contains("tunnel closed"));
    assert!(rx_of_client_a(&c) > rx_before, "the same peer state carried on through the reload");
}

#[test]
fn a_killed_daemon_is_back_in_the_mesh_within_seconds() {
    let mut c = Cluster::new();
    assert!(wait_until(Duration::from_secs(10), || c.hosts[SERVER].ping("100.64.0.2")));
    c.hosts[CLIENT_A].kill();
    assert!(!c.hosts[SERVER].ping("100.64.0.2"));
    let restarted = Instant::now();
    c.hosts[CLIENT_A].start();
    let back = wait_until(Duration::from_secs(15), || c.hosts[SERVER].ping("100.64.0.2"));
    eprintln!("client-a answered again {:?} after its restart", restarted.elapsed());
    assert!(back, "client-a did not come back:\n{}", c.hosts[CLIENT_A].log());
    assert!(restarted.elapsed() < Duration::from_secs(10));
}

#[test]
fn ready_is_sent_only_once_the_tun_has_its_address() {
    let pki = Pki::new("notify");
    let seg = Segment::new();
    let mut host = Host::new(&seg, "solo", "198.18.0.9", "100.64.0.9");
    let (crt, key) = pki.sign("solo", "100.64.0.9/10", "");
    host.configure(&pki.ca_crt(), &crt, &key, &[], &rules(&["base"]), "");
    let sock_path = host.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (ns_name, tun) = (host.ns.name().to_string(), host.tun.clone());
    let watcher = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        loop {
            let n = sock.recv(&mut buf).expect("a notification within 10 s");
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.contains("READY=1") {
                // At the moment READY arrives, the address must already be there.
                let out = std::process::Command::new("ip")
                    .args(["-n", &ns_name, "-o", "addr", "show", "dev", &tun])
                    .output()
                    .unwrap();
                return (msg, String::from_utf8_lossy(&out.stdout).into_owned(), sock);
            }
        }
    });
    host.start_with_env(&[("NOTIFY_SOCKET", &sock_path.to_string_lossy()), ("WATCHDOG_USEC", "400000")]);
    let (msg, addr, sock) = watcher.join().unwrap();
    assert!(addr.contains("inet 100.64.0.9/10"), "READY before the address: {addr:?}");
    assert!(msg.contains("STATUS=") && msg.contains("solo"), "{msg}");
    // Everything that follows, in order.
    let next = |want: &str| -> String {
        let mut buf = [0u8; 512];
        loop {
            let n = sock.recv(&mut buf).unwrap_or_else(|e| panic!("no {want} message: {e}"));
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if m.contains(want) {
                return m;
            }
        }
    };
    next("WATCHDOG=1"); // at half of WATCHDOG_USEC
    host.signal(libc::SIGHUP);
    let reloading = next("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    assert!(next("READY=1").contains("reloaded"));
    // SIGTERM: STOPPING, a clean exit, and the TUN is gone.
    host.signal(libc::SIGTERM);
    next("STOPPING=1");
    assert!(wait_until(Duration::from_secs(5), || !host.ns.exec("ip", &["link", "show", &host.tun]).status.success()));
}

#[test]
fn malformed_datagrams_are_dropped_and_counted_while_tunnels_keep_working() {
    let c = Cluster::new();
    assert!(wait_until(Duration::from_secs(10), || c.hosts[SERVER].ping("100.64.0.2")));
    let before = c.hosts[CLIENT_A].status()["counters"].clone();
    let flood = || {
        let s = std::net::UdpSocket::bind("198.18.0.4:0").unwrap();
        let mut state = 0xdead_beef_cafe_f00du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut n = 0;
        for i in 0..3000u32 {
            let len = match i % 4 {
                0 => (next() % 1400) as usize + 1,
                1 => 148,                     // a handshake initiation's size, garbage inside
                2 => 32 + (i as usize % 100), // data messages with forged receiver indexes
                _ => 1 + (i as usize % 20),   // truncated everything
            };
            let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if i % 4 == 1 {
                d[..4].copy_from_slice(&[1, 0, 0, 0]);
            }
            if i % 4 == 2 {
                d[..4].copy_from_slice(&[4, 0, 0, 0]);
            }
            if s.send_to(&d, "198.18.0.2:4242").is_ok() {
                n += 1;
            }
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        n
    };
    // Ping through the tunnel while the garbage arrives.
    let (sent, answered) = std::thread::scope(|s| {
        let flooding = s.spawn(|| c.hosts[OPERATOR].ns.run(flood));
        let answered = (0..5).filter(|_| c.hosts[SERVER].ping("100.64.0.2")).count();
        (flooding.join().unwrap(), answered)
    });
    assert!(answered >= 4, "the established tunnel keeps working during the flood: {answered}/5 pings");
    let after = c.hosts[CLIENT_A].status()["counters"].clone();
    let delta = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    let dropped = delta("rx_malformed")
        + delta("rx_unknown_index")
        + delta("rx_handshake_invalid")
        + delta("rx_wireguard_errors");
    eprintln!("sent {sent} garbage datagrams; counted drops {dropped}: {after}");
    assert!(dropped as f64 >= sent as f64 * 0.95, "dropped {dropped} of {sent}");
}

#[test]
fn the_metrics_endpoint_is_scraped_and_parsed() {
    let pki = Pki::new("metrics");
    let seg = Segment::new();
    let mut a = Host::new(&seg, "a", "198.18.0.1", "100.64.0.1");
    let mut b = Host::new(&seg, "b", "198.18.0.2", "100.64.0.2");
    let (ca_crt, ka) = pki.sign("a", "100.64.0.1/10", "nomad-server");
    let (cb_crt, kb) = pki.sign("b", "100.64.0.2/10", "nomad-client");
    let stats = "stats:\n  type: prometheus\n  listen: 127.0.0.1:9109\n  path: /metrics\n";
    a.configure(&pki.ca_crt(), &ca_crt, &ka, &[("100.64.0.2", "198.18.0.2")], &rules(&["base"]), stats);
    b.configure(&pki.ca_crt(), &cb_crt, &kb, &[("100.64.0.1", "198.18.0.1")], &rules(&["base"]), "");
    a.start();
    b.start();
    assert!(wait_until(Duration::from_secs(10), || a.ping("100.64.0.2")));
    let scrape = |path: &'static str| {
        a.ns.run(move || {
            let mut s = TcpStream::connect("127.0.0.1:9109").unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            text
        })
    };
    // A scraper that connects and never speaks holds the metrics thread, never the tunnels.
    let idle = a.ns.run(|| TcpStream::connect("127.0.0.1:9109").unwrap());
    assert!(a.ping("100.64.0.2") && a.ping("100.64.0.2"), "traffic flows while a scraper stalls");
    drop(idle);
    // The snapshot is refreshed once a second.
    let mut text = String::new();
    assert!(wait_until(Duration::from_secs(5), || {
        text = scrape("/metrics");
        text.contains("\ncos_mesh_tunnels 1\n")
    }));
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    let value = |name: &str| -> f64 {
        body.lines()
            .find(|l| {
                !l.starts_with('#') && (l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{body}"))
    };
    assert_eq!(value("cos_mesh_tunnels"), 1.0);
    assert!(value("cos_mesh_peer_tx_bytes_total{peer=\"b\",vpn_ip=\"100.64.0.2\"}") > 0.0);
    assert!(value("cos_mesh_mesh_handshakes_initiated_total") >= 1.0);
    let expiry = value("cos_mesh_certificate_expiry_seconds");
    assert!(expiry > 86_400.0 * 365.0 && expiry < 86_400.0 * 3660.0, "{expiry}");
    assert!(body.contains("cos_mesh_firewall_packets_total{verdict=\"allowed_by_rule\"}"));
    // Every sample line parses as `name{labels} number`.
    for line in body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (_, v) = line.rsplit_once(' ').unwrap();
        assert!(v.parse::<f64>().is_ok(), "bad sample: {line}");
    }
    assert!(scrape("/other").starts_with("HTTP/1.1 404"));
}

#[test]
fn reject_answers_a_closed_port_with_a_reset_through_the_tunnel() {
    let pki = Pki::new("reject");
    let seg = Segment::new();
    let mut a = Host::new(&seg, "a", "198.18.0.1", "100.64.0.1");
    let mut b = Host::new(&seg, "b", "198.18.0.2", "100.64.0.2");
    let (ca_crt, ka) = pki.sign("a", "100.64.0.1/10", "nomad-server");
    let (cb_crt, kb) = pki.sign("b", "100.64.0.2/10", "nomad-client");
    a.configure(
        &pki.ca_crt(),
        &ca_crt,
        &ka,
        &[("100.64.0.2", "198.18.0.2")],
        &format!("{}\n  inbound_action: reject", rules(&["base"])),
        "",
    );
    b.configure(&pki.ca_crt(), &cb_crt, &kb, &[("100.64.0.1", "198.18.0.1")], &rules(&["base"]), "");
    a.start();
    b.start();
    assert!(wait_until(Duration::from_secs(10), || b.ping("100.64.0.1")));
    let (kind, took) = b.ns.run(|| {
        let started = Instant::now();
        let r = TcpStream::connect_timeout(&"100.64.0.1:4646".parse().unwrap(), Duration::from_secs(5));
        (r.err().map(|e| e.kind()), started.elapsed())
    });
    assert_eq!(kind, Some(std::io::ErrorKind::ConnectionRefused), "a TCP reset, not a timeout");
    assert!(took < Duration::from_secs(1), "refused at once: {took:?}");
    let rejected = a.status()["firewall"]["counters"]["rejected"].as_u64().unwrap();
    assert!(rejected >= 1);
}
