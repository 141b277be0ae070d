//! `cos-mesh nomad config` as an operator runs it: a real CA, certificates from an inventory, a
//! node config including the repo's role rule sets; the printed HCL parsed back with hcl-rs and
//! with pyhcl (the HCL1 dialect Nomad's agent reads) and its keys checked.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

const COS: &str = env!("CARGO_BIN_EXE_cos-mesh");

fn cos(dir: &Path, args: &[&str]) -> Output {
    Command::new(COS).args(args).current_dir(dir).output().expect("run cos-mesh")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = cos(dir, args);
    assert!(out.status.success(), "cos-mesh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let out = cos(dir, args);
    assert_eq!(out.status.code(), Some(1), "cos-mesh {args:?} should fail: {out:?}");
    assert!(out.stdout.is_empty(), "nothing on stdout when refusing: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

fn role_file(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("firewall").join(name).display().to_string()
}

const INVENTORY: &str = "\
roles:
  server: [nomad-server]
  client: [nomad-client]
nodes:
  - {name: s2, ip: 100.64.0.12/10, role: server}
  - {name: s1, ip: 100.64.0.11/10, role: server}
  - {name: c1, ip: 100.64.1.1/10, role: client, groups: [ops]}
  - {name: s3, ip: 100.64.0.13/10, role: server}
";

/// A mesh workspace: CA over `network`, certificates for the inventory, and a node config for
/// `node` with the role rule set and `dev` as its TUN device.
struct Mesh {
    dir: tempfile::TempDir,
}

impl Mesh {
    fn new(network: &str, inventory: &str) -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        ok(p, &["ca", "--name", "test CA", "--ips", network, "--groups", "nomad-server,nomad-client,ops"]);
        std::fs::write(p.join("inventory.yaml"), inventory).unwrap();
        ok(p, &["sign", "--inventory", "inventory.yaml", "--out-dir", "certs"]);
        Mesh { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn node_config(&self, node: &str, role: &str, dev: &str, socket: &str) -> String {
        let text = format!(
            "pki:\n  ca: {ca}\n  cert: {crt}\n  key: {key}\ntun:\n  dev: {dev}\ncontrol:\n  socket: {socket}\n\
             firewall:\n  include:\n    - {base}\n    - {role}\n",
            ca = self.path("ca.crt"),
            crt = self.path(&format!("certs/{node}.crt")),
            key = self.path(&format!("certs/{node}.key")),
            base = role_file("base.yaml"),
            role = role_file(&format!("nomad-{role}.yaml")),
        );
        let file = self.path(&format!("{node}.yaml"));
        std::fs::write(&file, text).unwrap();
        file
    }
}

/// Parses with hcl-rs and, when installed, with pyhcl; both must read the same document.
fn parse_hcl(text: &str) -> Value {
    let v: Value = hcl::from_str(text).unwrap_or_else(|e| panic!("hcl-rs cannot parse: {e}\n{text}"));
    if let Some(py) = pyhcl(text) {
        assert_eq!(py, v, "pyhcl and hcl-rs read the snippet differently");
    }
    v
}

/// pyhcl's reading of `text` (`pip install pyhcl`). Without pyhcl the test says so on stderr,
/// and fails if COS_MESH_REQUIRE_PYHCL is set.
fn pyhcl(text: &str) -> Option<Value> {
    let script = "import sys, json\ntry:\n    import hcl\nexcept ImportError:\n    sys.exit(3)\n\
                  print(json.dumps(hcl.loads(sys.stdin.read())))";
    let child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let missing = |why: &str| {
        assert!(std::env::var_os("COS_MESH_REQUIRE_PYHCL").is_none(), "pyhcl required but {why}");
        eprintln!("NOTE: {why}; the Nomad snippet was checked with hcl-rs only (pip install pyhcl)");
        None
    };
    let Ok(mut child) = child else { return missing("python3 is not installed") };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    match out.status.code() {
        Some(0) => Some(serde_json::from_slice(&out.stdout).unwrap()),
        Some(3) => missing("pyhcl is not installed"),
        _ => panic!("pyhcl cannot parse the snippet: {}\n{text}", String::from_utf8_lossy(&out.stderr)),
    }
}

/// A stand-in for the daemon's control socket: answers one `members` request with `members`.
fn fake_daemon(path: &str, members: Value) -> std::thread::JoinHandle<String> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(stream.try_clone().unwrap()).read_line(&mut line).unwrap();
        writeln!(&stream, "{}", json!({ "members": members })).unwrap();
        line
    })
}

#[test]
fn client_from_inventory_joins_the_servers_on_the_overlay() {
    let mesh = Mesh::new("100.64.0.0/10", INVENTORY);
    let cfg = mesh.node_config("c1", "client", "nebula1", &mesh.path("none.sock"));
    let inv = mesh.path("inventory.yaml");
    let args = ["nomad", "config", "--role", "client", "-c", &cfg, "--servers-from", "inventory", "--inventory", &inv];
    let text = ok(mesh.dir.path(), &args);
    let v = parse_hcl(&text);
    let template = r#"{{ GetInterfaceIP "nebula1" }}"#;
    assert_eq!(v["bind_addr"], template);
    assert_eq!(v["addresses"]["http"], format!("127.0.0.1 {template}"));
    assert_eq!(v["advertise"]["http"], template, "advertise.http must be explicit with loopback first");
    let client = &v["client"];
    assert_eq!(client["enabled"], true);
    assert_eq!(client["host_network"]["overlay"]["interface"], "nebula1");
    // The cert's overlay network: 100.64.1.1/10 masked.
    let printed: Value = serde_json::from_str(&ok(mesh.dir.path(), &["print", "--json", "certs/c1.crt"])).unwrap();
    assert_eq!(printed["details"]["networks"][0], "100.64.1.1/10"); // a v2 certificate (the default CA)
    assert_eq!(client["host_network"]["overlay"]["cidr"], "100.64.0.0/10");
    assert_eq!(client["server_join"]["retry_join"], json!(["100.64.0.11", "100.64.0.12", "100.64.0.13"]));
    // The dynamic range is the one the client rule set opens.
    let rules = std::fs::read_to_string(role_file("nomad-client.yaml")).unwrap();
    assert!(rules.contains("port: 20000-32000"), "firewall/nomad-client.yaml changed its range");
    assert_eq!((client["min_dynamic_port"].as_u64(), client["max_dynamic_port"].as_u64()), (Some(20000), Some(32000)));
    assert!(text.contains("/etc/nomad.d/10-cos-mesh.hcl") && text.contains("restart Nomad"), "{text}");
    assert!(v.get("server").is_none());

    // The same node asked for server settings: printed, with a warning that it is no server.
    let args = ["nomad", "config", "--role", "server", "-c", &cfg, "--servers-from", "inventory", "--inventory", &inv];
    let out = cos(mesh.dir.path(), &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("warning: this node (c1, 100.64.1.1) is not among"), "{stderr}");
    let mut args = args.to_vec();
    args.extend(["--dynamic-ports", "20000-30000"]);
    assert!(fails(mesh.dir.path(), &args).contains("--dynamic-ports is a client setting"));
}

#[test]
fn server_from_the_daemons_members_on_another_tun_device() {
    let mesh = Mesh::new("100.64.0.0/10", INVENTORY);
    let socket = mesh.path("control.sock");
    let cfg = mesh.node_config("s1", "server", "mesh7", &socket);
    let daemon = fake_daemon(
        &socket,
        json!([
            {"name": "s1", "vpn_ip": "100.64.0.11", "groups": ["nomad-server"]},
            {"name": "c1", "vpn_ip": "100.64.1.1", "groups": ["nomad-client", "ops"]},
            {"name": "s2", "vpn_ip": "100.64.0.12", "groups": ["nomad-server"]},
        ]),
    );
    let text =
        ok(mesh.dir.path(), &["nomad", "config", "--role", "server", "-c", &cfg, "--datacenter", "onprem-fra-1"]);
    assert_eq!(daemon.join().unwrap().trim(), "members");
    let v = parse_hcl(&text);
    let template = r#"{{ GetInterfaceIP "mesh7" }}"#;
    assert_eq!(v["datacenter"], "onprem-fra-1");
    assert_eq!(v["bind_addr"], template);
    for k in ["http", "rpc", "serf"] {
        assert_eq!(v["advertise"][k], template, "advertise.{k}");
    }
    assert_eq!(v["server"]["enabled"], true);
    assert_eq!(v["server"]["bootstrap_expect"], 2);
    assert_eq!(v["server"]["server_join"]["retry_join"], json!(["100.64.0.11", "100.64.0.12"]));
    assert!(v.get("client").is_none());

    // --socket overrides the config's control socket; --bootstrap-expect the count.
    let other = mesh.path("other.sock");
    let daemon = fake_daemon(&other, json!([{"name": "s1", "vpn_ip": "100.64.0.11", "groups": ["nomad-server"]}]));
    let args = ["nomad", "config", "--role", "server", "-c", &cfg, "--socket", &other, "--bootstrap-expect", "3"];
    let v = parse_hcl(&ok(mesh.dir.path(), &args));
    daemon.join().unwrap();
    assert_eq!(v["server"]["bootstrap_expect"], 3);
    assert_eq!(v["server"]["server_join"]["retry_join"], json!(["100.64.0.11"]));
}

#[test]
fn no_servers_says_how_to_fix_it() {
    let mesh = Mesh::new("100.64.0.0/10", INVENTORY);
    let socket = mesh.path("control.sock");
    let cfg = mesh.node_config("c1", "client", "nebula1", &socket);
    let err = fails(mesh.dir.path(), &["nomad", "config", "--role", "client", "-c", &cfg]);
    assert!(err.contains("is cos-mesh running?") && err.contains("--servers-from inventory"), "{err}");

    let daemon = fake_daemon(&socket, json!([{"name": "c1", "vpn_ip": "100.64.1.1", "groups": ["nomad-client"]}]));
    let err = fails(mesh.dir.path(), &["nomad", "config", "--role", "client", "-c", &cfg]);
    daemon.join().unwrap();
    assert!(err.contains("no Nomad servers to join") && err.contains("--servers-from inventory"), "{err}");
    assert!(err.contains(&socket), "names where it looked: {err}");
}

#[test]
fn overlay_overlapping_a_bridge_is_refused_naming_both_networks() {
    for (ca, ip, overlay, bridge) in [
        ("172.17.0.0/16", "172.17.0.5/16", "172.17.0.0/16", "172.17.0.0/16"),
        ("172.26.0.0/16", "172.26.64.9/16", "172.26.0.0/16", "172.26.64.0/20"),
    ] {
        let inventory = format!(
            "nodes:\n  - {{name: c1, ip: {ip}, groups: [nomad-client]}}\n  - {{name: s1, ip: {}, groups: [nomad-server]}}\n",
            ip.replace(".5/", ".6/").replace(".9/", ".10/")
        );
        let mesh = Mesh::new(ca, &inventory);
        let cfg = mesh.node_config("c1", "client", "nebula1", &mesh.path("none.sock"));
        let inv = mesh.path("inventory.yaml");
        let args =
            ["nomad", "config", "--role", "client", "-c", &cfg, "--servers-from", "inventory", "--inventory", &inv];
        let err = fails(mesh.dir.path(), &args);
        assert!(err.contains(&format!("overlay network {overlay} overlaps {bridge}")), "{err}");
    }
}

#[test]
fn dynamic_ports_follow_the_nodes_own_client_rule() {
    let mesh = Mesh::new("100.64.0.0/10", INVENTORY);
    let cfg = mesh.node_config("c1", "client", "nebula1", &mesh.path("none.sock"));
    // Replace the role rule set by a narrower range written in the node config itself.
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("    - {}\n", role_file("nomad-client.yaml")),
        "  inbound:\n    - {port: 21000-23000, proto: any, group: nomad-client}\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let inv = mesh.path("inventory.yaml");
    let args = ["nomad", "config", "--role", "client", "-c", &cfg, "--servers-from", "inventory", "--inventory", &inv];
    let v = parse_hcl(&ok(mesh.dir.path(), &args));
    assert_eq!(
        (v["client"]["min_dynamic_port"].as_u64(), v["client"]["max_dynamic_port"].as_u64()),
        (Some(21000), Some(23000))
    );
    let mut args = args.to_vec();
    args.extend(["--dynamic-ports", "24000-25000"]);
    let v = parse_hcl(&ok(mesh.dir.path(), &args));
    assert_eq!(v["client"]["min_dynamic_port"], 24000);
}
