//! `cos-mesh nomad tls`: the files Nomad's mutual TLS needs, checked with openssl as Nomad's
//! peers would check them, renewed idempotently, and a mutual-TLS handshake over the overlay.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::daemon::{BIN, Host, Pki, Segment};
use support::wait_until;

fn tls(inventory: &Path, out: &Path) -> String {
    let o = Command::new(BIN)
        .args(["nomad", "tls", "--inventory", inventory.to_str().unwrap(), "--out-dir", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl").args(args).output().expect("openssl")
}

fn verify(ca: &Path, cert: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["verify", "-CAfile", ca.to_str().unwrap()];
    args.extend(extra);
    args.push(cert.to_str().unwrap());
    openssl(&args)
}

fn example_inventory(dir: &Path) -> PathBuf {
    let p = dir.join("inventory.yaml");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("pki/inventory.example.yaml"), &p).unwrap();
    p
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn certificates_verify_with_openssl_for_their_purpose_and_name() {
    let d = tempfile::tempdir().unwrap();
    let inv = example_inventory(d.path());
    let out = d.path().join("nomad-tls");
    let summary = tls(&inv, &out);
    assert!(summary.contains("Nomad CA") && summary.contains(": issued"), "{summary}");
    let ca = out.join("nomad-agent-ca.pem");
    let s1 = out.join("nomad-server-1");
    let c1 = out.join("nomad-client-aws-1");
    let server = s1.join("global-server-nomad.pem");
    let client = c1.join("global-client-nomad.pem");

    for (cert, purpose, host) in [
        (&server, "sslserver", "server.global.nomad"),
        (&server, "sslclient", "server.global.nomad"),
        (&client, "sslclient", "client.global.nomad"),
        (&client, "sslserver", "client.global.nomad"),
        (&s1.join("global-cli-nomad.pem"), "sslclient", "cli.global.nomad"),
    ] {
        let o = verify(&ca, cert, &["-purpose", purpose, "-verify_hostname", host]);
        assert!(o.status.success(), "{} {purpose} {host}: {}", cert.display(), String::from_utf8_lossy(&o.stderr));
    }
    assert!(verify(&ca, &server, &["-verify_hostname", "localhost"]).status.success());
    for ip in ["127.0.0.1", "100.64.0.11"] {
        let o = verify(&ca, &server, &["-verify_ip", ip]);
        assert!(o.status.success(), "server cert for {ip}: {}", String::from_utf8_lossy(&o.stderr));
    }
    // A client certificate is not a server's name, nor another node's overlay IP.
    assert!(!verify(&ca, &client, &["-verify_hostname", "server.global.nomad"]).status.success());
    assert!(!verify(&ca, &server, &["-verify_ip", "100.64.0.12"]).status.success());
    // The mesh CA is not the Nomad CA: another CA's certificates do not verify.
    let other = d.path().join("other");
    std::fs::create_dir(&other).unwrap();
    tls(&inv, &other);
    assert!(!verify(&ca, &other.join("nomad-server-1/global-server-nomad.pem"), &[]).status.success());

    // Keys 0600; the CA key only at the top; lighthouses and nodes without Nomad get nothing.
    assert_eq!(mode(&out.join("nomad-agent-ca-key.pem")), 0o600);
    assert_eq!(mode(&s1.join("global-server-nomad-key.pem")), 0o600);
    assert_eq!(mode(&c1.join("global-client-nomad-key.pem")), 0o600);
    assert!(!out.join("lighthouse-1").exists());
    let mut names: Vec<String> =
        std::fs::read_dir(&s1).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "global-cli-nomad-key.pem",
            "global-cli-nomad.pem",
            "global-server-nomad-key.pem",
            "global-server-nomad.pem",
            "nomad-agent-ca.pem",
            "nomad-cli.env"
        ]
    );
    for e in walk(&out) {
        if e.parent() != Some(out.as_path()) {
            let text = std::fs::read_to_string(&e).unwrap_or_default();
            assert!(!e.ends_with("nomad-agent-ca-key.pem"), "CA key in a node directory: {}", e.display());
            let ca_key = std::fs::read_to_string(out.join("nomad-agent-ca-key.pem")).unwrap();
            assert_ne!(text, ca_key, "{}", e.display());
        }
    }
    // Keys are ECDSA P-256 as Nomad makes them.
    let o = openssl(&["pkey", "-in", s1.join("global-server-nomad-key.pem").to_str().unwrap(), "-noout", "-text"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("prime256v1"), "{}", String::from_utf8_lossy(&o.stdout));

    // The CLI env file: a server talks to its own agent, an operator to the first server.
    let env = std::fs::read_to_string(s1.join("nomad-cli.env")).unwrap();
    assert!(env.contains("NOMAD_ADDR=https://127.0.0.1:4646\n"), "{env}");
    assert!(env.contains("NOMAD_CACERT=/etc/nomad.d/tls/nomad-agent-ca.pem\n"), "{env}");
    assert!(env.contains("NOMAD_CLIENT_CERT=/etc/nomad.d/tls/global-cli-nomad.pem\n"), "{env}");
    assert!(env.contains("NOMAD_CLIENT_KEY=/etc/nomad.d/tls/global-cli-nomad-key.pem\n"), "{env}");
    let ops = std::fs::read_to_string(out.join("laptop-alice/nomad-cli.env")).unwrap();
    assert!(ops.contains("NOMAD_ADDR=https://100.64.0.11:4646\n"), "{ops}");

    // The gossip key: beside the inventory, 0600, 32 bytes.
    let key = d.path().join("nomad-gossip.key");
    assert_eq!(mode(&key), 0o600);
    let b64 = std::fs::read_to_string(&key).unwrap();
    assert_eq!(b64.trim().len(), 44, "{b64:?}");
}

#[test]
fn a_second_run_changes_nothing_and_an_inventory_change_renews_with_the_same_key() {
    let d = tempfile::tempdir().unwrap();
    let inv = example_inventory(d.path());
    let out = d.path().join("t");
    tls(&inv, &out);
    let server = out.join("nomad-server-1/global-server-nomad.pem");
    let key = out.join("nomad-server-1/global-server-nomad-key.pem");
    let (cert_before, key_before) = (std::fs::read(&server).unwrap(), std::fs::read(&key).unwrap());
    let gossip_before = std::fs::read(d.path().join("nomad-gossip.key")).unwrap();

    let again = tls(&inv, &out);
    assert!(again.contains("0 issued, 0 renewed"), "{again}");
    assert!(again.contains("gossip key") && again.contains(": unchanged"), "{again}");
    assert_eq!(std::fs::read(&server).unwrap(), cert_before);
    assert_eq!(std::fs::read(d.path().join("nomad-gossip.key")).unwrap(), gossip_before);

    // nomad-server-1 moves to another overlay IP: its server certificate (which carries the
    // IP) is renewed for the same key; its CLI certificate (no IP) is not.
    let text = std::fs::read_to_string(&inv).unwrap().replace("100.64.0.11/10", "100.64.0.111/10");
    std::fs::write(&inv, text).unwrap();
    let moved = tls(&inv, &out);
    assert!(moved.contains("0 issued, 1 renewed"), "{moved}");
    assert!(moved.contains("IP SANs [127.0.0.1,100.64.0.11] → [127.0.0.1,100.64.0.111]"), "{moved}");
    assert_eq!(std::fs::read(&key).unwrap(), key_before, "a renewal keeps the key");
    assert_eq!(mode(&server), 0o600);
    let ca = out.join("nomad-agent-ca.pem");
    assert!(verify(&ca, &server, &["-verify_ip", "100.64.0.111"]).status.success());
    // No temporary files are left behind.
    assert!(walk(&out).iter().all(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.')));

    // laptop-alice leaves the inventory, nomad-client-onprem-1 stops being a client: their
    // files are left alone and named.
    let text = std::fs::read_to_string(&inv).unwrap();
    let text = text.replace("  - name: laptop-alice\n    ip: 100.64.9.1/10\n    role: ops\n", "");
    let text = text.replace(
        "    datacenter: onprem-fra-1\n    groups: [ops]",
        "    datacenter: onprem-fra-1\n    groups: [ops]\n    role: ops",
    );
    std::fs::write(
        &inv,
        text.replace("    role: client\n    datacenter: onprem-fra-1\n", "    datacenter: onprem-fra-1\n"),
    )
    .unwrap();
    let after = tls(&inv, &out);
    assert!(after.contains(&format!("left alone {} ", out.join("laptop-alice").display())), "{after}");
    let stale = out.join("nomad-client-onprem-1/global-client-nomad.pem");
    assert!(after.contains(&format!("left alone {} ", stale.display())), "{after}");
}

#[test]
fn a_half_present_ca_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let inv = example_inventory(d.path());
    let out = d.path().join("t");
    tls(&inv, &out);
    std::fs::remove_file(out.join("nomad-agent-ca-key.pem")).unwrap();
    let o = Command::new(BIN)
        .args(["nomad", "tls", "--inventory", inv.to_str().unwrap(), "--out-dir", out.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("nomad-agent-ca.pem exists but") && err.contains("nomad-agent-ca-key.pem does not"), "{err}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// An `openssl s_server` in the server's namespace on its overlay address, requiring a client
/// certificate from the Nomad CA; `s_client` from the client's namespace with and without one.
#[test]
fn mutual_tls_handshake_over_the_overlay() {
    let pki = Pki::new("mtls");
    let seg = Segment::new();
    let rules = |role: &str| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("firewall");
        format!("  include:\n    - {}\n    - {}\n", dir.join("base.yaml").display(), dir.join(role).display())
    };
    let nodes = [
        ("lighthouse-1", "100.64.0.1", "lighthouse", ""),
        ("nomad-server-1", "100.64.0.11", "nomad-server", "nomad-server.yaml"),
        ("nomad-client-aws-1", "100.64.1.1", "nomad-client", "nomad-client.yaml"),
    ];
    let mut hosts = vec![];
    for (i, (name, vpn, group, role)) in nodes.iter().enumerate() {
        let mut h = Host::new(&seg, name, &format!("198.18.0.{}", i + 1), vpn);
        let (crt, key) = pki.sign(name, &format!("{vpn}/10"), group);
        let extra = if i == 0 {
            "lighthouse:\n  am_lighthouse: true\n".to_string()
        } else {
            "lighthouse:\n  hosts: [100.64.0.1]\n  interval: 1\n".to_string()
        };
        let fw = if role.is_empty() { rules("base.yaml") } else { rules(role) };
        h.configure(&pki.ca_crt(), &crt, &key, &[("100.64.0.1", "198.18.0.1")], &fw, &extra);
        h.start();
        hosts.push(h);
    }
    let (server, client) = (&hosts[1], &hosts[2]);
    assert!(wait_until(Duration::from_secs(15), || client.ping("100.64.0.11")), "{}", client.log());

    let d = tempfile::tempdir().unwrap();
    let inv = example_inventory(d.path());
    let out = d.path().join("t");
    tls(&inv, &out);
    let p = |node: &str, f: &str| out.join(node).join(f).display().to_string();
    let ca = p("nomad-server-1", "nomad-agent-ca.pem");
    // RPC (4647/tcp) is what clients open to servers; Nomad runs it over mutual TLS.
    let _srv = server.ns.spawn(
        "openssl",
        &[
            "s_server",
            "-accept",
            "100.64.0.11:4647",
            "-cert",
            &p("nomad-server-1", "global-server-nomad.pem"),
            "-key",
            &p("nomad-server-1", "global-server-nomad-key.pem"),
            "-CAfile",
            &ca,
            "-Verify",
            "1",
            "-verify_return_error",
            "-www",
        ],
    );
    let s_client = |with_cert: bool| -> (bool, String) {
        let mut args = vec![
            "s_client".to_string(),
            "-connect".into(),
            "100.64.0.11:4647".into(),
            "-CAfile".into(),
            ca.clone(),
            "-verify_hostname".into(),
            "server.global.nomad".into(),
            "-verify_return_error".into(),
            "-quiet".into(),
        ];
        if with_cert {
            args.extend([
                "-cert".into(),
                p("nomad-client-aws-1", "global-client-nomad.pem"),
                "-key".into(),
                p("nomad-client-aws-1", "global-client-nomad-key.pem"),
            ]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = client.ns.command("timeout", &[&["10", "openssl"][..], &refs].concat());
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        use std::io::Write;
        let _ = child.stdin.take().unwrap().write_all(b"GET / HTTP/1.0\r\n\r\n");
        let o = child.wait_with_output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        (String::from_utf8_lossy(&o.stdout).contains("HTTP/1.0 200 ok"), text)
    };
    let mut accepted = (false, String::new());
    assert!(
        wait_until(Duration::from_secs(10), || {
            accepted = s_client(true);
            accepted.0
        }),
        "with a client certificate: {}",
        accepted.1
    );
    let (ok, text) = s_client(false);
    assert!(!ok, "without a client certificate the server must refuse: {text}");
    assert!(text.to_lowercase().contains("certificate required") || text.contains("alert"), "{text}");
}
