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

#[test]
fn tls_gossip_key_region_and_datacenter_from_the_inventory() {
    let inventory = format!(
        "region: eu\ndatacenter: fra\n{}",
        INVENTORY.replace("role: client,", "role: client, datacenter: ams,")
    );
    let mesh = Mesh::new("100.64.0.0/10", &inventory);
    let inv = mesh.path("inventory.yaml");
    ok(mesh.dir.path(), &["nomad", "tls", "--inventory", &inv, "--out-dir", &mesh.path("nomad-tls")]);
    let key = std::fs::read_to_string(mesh.path("nomad-gossip.key")).unwrap().trim().to_string();

    let cfg = mesh.node_config("s1", "server", "nebula1", &mesh.path("none.sock"));
    let base = ["nomad", "config", "--role", "server", "-c", &cfg, "--servers-from", "inventory", "--inventory", &inv];
    // On stdout the gossip key is never printed.
    let out = cos(mesh.dir.path(), &base);
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(!printed.contains(&key), "the gossip key must not be printed:\n{printed}");
    assert!(parse_hcl(&printed)["server"].get("encrypt").is_none());
    // Written with --out: 0600, with the key, parsed by both parsers.
    let file = mesh.path("10-cos-mesh.hcl");
    let mut args = base.to_vec();
    args.extend(["--out", &file]);
    let out = cos(mesh.dir.path(), &args);
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let v = parse_hcl(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(v["server"]["encrypt"], key.as_str());
    assert_eq!((v["region"].as_str(), v["datacenter"].as_str()), (Some("eu"), Some("fra")));
    assert_eq!(v["server"]["bootstrap_expect"], 3);
    let tls = &v["tls"];
    assert_eq!((tls["http"].as_bool(), tls["rpc"].as_bool()), (Some(true), Some(true)));
    assert_eq!(tls["verify_server_hostname"], true);
    assert_eq!(tls["verify_https_client"], true);
    assert_eq!(tls["ca_file"], "/etc/nomad.d/tls/nomad-agent-ca.pem");
    assert_eq!(tls["cert_file"], "/etc/nomad.d/tls/eu-server-nomad.pem");
    assert_eq!(tls["key_file"], "/etc/nomad.d/tls/eu-server-nomad-key.pem");
    // The files named there exist in the node's directory of `nomad tls`.
    for f in ["nomad-agent-ca.pem", "eu-server-nomad.pem", "eu-server-nomad-key.pem"] {
        assert!(Path::new(&mesh.path("nomad-tls/s1")).join(f).exists(), "{f}");
    }
    // Written again: replaced in place, still 0600.
    assert!(cos(mesh.dir.path(), &args).status.success());
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    // The client in data center ams: its client certificate, the overlay as its network.
    let cfg = mesh.node_config("c1", "client", "nebula1", &mesh.path("none.sock"));
    let args = ["nomad", "config", "--role", "client", "-c", &cfg, "--servers-from", "inventory", "--inventory", &inv];
    let v = parse_hcl(&ok(mesh.dir.path(), &args));
    assert_eq!(v["datacenter"], "ams");
    assert_eq!(v["client"]["network_interface"], "nebula1");
    assert_eq!(v["tls"]["cert_file"], "/etc/nomad.d/tls/eu-client-nomad.pem");
    assert!(v.get("server").is_none());
}

#[test]
fn combined_server_and_client_and_the_two_server_warning() {
    let two = INVENTORY.replace("  - {name: s3, ip: 100.64.0.13/10, role: server}\n", "");
    let mesh = Mesh::new("100.64.0.0/10", &two);
    let inv = mesh.path("inventory.yaml");
    let cfg = mesh.node_config("s1", "server", "nebula1", &mesh.path("none.sock"));
    let args =
        ["nomad", "config", "--role", "server,client", "-c", &cfg, "--servers-from", "inventory", "--inventory", &inv];
    let out = cos(mesh.dir.path(), &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: bootstrap_expect = 2") && stderr.contains("3 (or 5) servers"), "{stderr}");
    assert!(stderr.contains("warning: no gossip key"), "{stderr}");
    let v = parse_hcl(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(v["server"]["enabled"], true);
    assert_eq!(v["client"]["enabled"], true);
    assert_eq!(v["server"]["bootstrap_expect"], 2);
    assert_eq!(v["client"]["host_network"]["overlay"]["interface"], "nebula1");
    assert_eq!(v["tls"]["cert_file"], "/etc/nomad.d/tls/global-server-nomad.pem");
    // --no-tls leaves the block out.
    let mut no_tls = args.to_vec();
    no_tls.push("--no-tls");
    assert!(parse_hcl(&ok(mesh.dir.path(), &no_tls)).get("tls").is_none());
}

// Consul, next to Nomad: the same mesh workspace, `cos-mesh consul config`.

const CONSUL_INVENTORY: &str = "\
roles:
  server: [nomad-server, consul-server]
  client: [nomad-client, consul-client]
nodes:
  - {name: s1, ip: 100.64.0.11/10, role: server}
  - {name: s2, ip: 100.64.0.12/10, role: server}
  - {name: s3, ip: 100.64.0.13/10, role: server}
  - {name: c1, ip: 100.64.1.1/10, role: client, datacenter: ams}
";

fn consul_mesh() -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let groups = "nomad-server,nomad-client,consul-server,consul-client,ops";
    ok(p, &["ca", "--name", "test CA", "--ips", "100.64.0.0/10", "--groups", groups]);
    std::fs::write(p.join("inventory.yaml"), CONSUL_INVENTORY).unwrap();
    ok(p, &["sign", "--inventory", "inventory.yaml", "--out-dir", "certs"]);
    Mesh { dir }
}

/// Every address Consul binds or advertises is the overlay device's (or loopback for the
/// local API): never 0.0.0.0, which makes Consul pick among the host's private addresses.
fn assert_overlay_only(v: &Value, text: &str, dev: &str) {
    let t = format!(r#"{{{{ GetInterfaceIP "{dev}" }}}}"#);
    assert_eq!(v["bind_addr"], t.as_str());
    assert_eq!(v["advertise_addr"], t.as_str());
    let client = v["client_addr"].as_str().unwrap();
    assert_eq!(client, format!("127.0.0.1 {t}"));
    assert!(!text.contains("0.0.0.0") && !text.contains("GetPrivateIP"), "{text}");
}

#[test]
fn consul_client_binds_to_the_overlay_and_joins_the_consul_servers() {
    let mesh = consul_mesh();
    let inv = mesh.path("inventory.yaml");
    let cfg = mesh.node_config("c1", "client", "nebula1", &mesh.path("none.sock"));
    let args = ["consul", "config", "--role", "client", "-c", &cfg, "--servers-from", "inventory", "--inventory", &inv];
    let text = ok(mesh.dir.path(), &args);
    let v = parse_hcl(&text);
    assert_overlay_only(&v, &text, "nebula1");
    assert_eq!(v["server"], false);
    assert_eq!(v["datacenter"], "ams");
    assert_eq!(v["retry_join"], json!(["100.64.0.11", "100.64.0.12", "100.64.0.13"]));
    assert_eq!(v["ports"]["server"], 8300);
    assert_eq!(v["ports"]["serf_lan"], 8301);
    assert_eq!(v["ports"]["serf_wan"], 8302);
    assert!(text.contains("/etc/consul.d/10-cos-mesh.hcl"), "{text}");
}

#[test]
fn consul_server_from_the_daemons_members_and_a_dns_name() {
    let mesh = consul_mesh();
    let socket = mesh.path("control.sock");
    let cfg = mesh.node_config("s1", "server", "mesh3", &socket);
    let daemon = fake_daemon(
        &socket,
        json!([
            {"name": "s1", "vpn_ip": "100.64.0.11", "groups": ["nomad-server", "consul-server"]},
            {"name": "n9", "vpn_ip": "100.64.0.19", "groups": ["nomad-server"]},
            {"name": "s2", "vpn_ip": "100.64.0.12", "groups": ["consul-server"]},
        ]),
    );
    let args = ["consul", "config", "--role", "server", "-c", &cfg, "--retry-join-dns", "consul-server.mesh"];
    let text = ok(mesh.dir.path(), &args);
    assert_eq!(daemon.join().unwrap().trim(), "members");
    let v = parse_hcl(&text);
    assert_overlay_only(&v, &text, "mesh3");
    assert_eq!(v["server"], true);
    assert_eq!(v["bootstrap_expect"], 2);
    assert_eq!(v["retry_join"], json!(["100.64.0.11", "100.64.0.12", "consul-server.mesh"]));

    // No daemon and no DNS name: refused with what to do.
    let err = fails(mesh.dir.path(), &["consul", "config", "--role", "client", "-c", &cfg]);
    assert!(err.contains("asking the running daemon"), "{err}");
}

#[test]
fn a_lighthouse_dns_name_stands_in_for_an_unreachable_daemon() {
    let mesh = Mesh::new("100.64.0.0/10", INVENTORY);
    let cfg = mesh.node_config("c1", "client", "nebula1", &mesh.path("none.sock"));
    let args = ["nomad", "config", "--role", "client", "-c", &cfg, "--retry-join-dns", "nomad-server.mesh"];
    let v = parse_hcl(&ok(mesh.dir.path(), &args));
    assert_eq!(v["client"]["server_join"]["retry_join"], json!(["nomad-server.mesh"]));
    let err = fails(mesh.dir.path(), &["nomad", "config", "--role", "client", "-c", &cfg, "--retry-join-dns", "a b"]);
    assert!(err.contains("--retry-join-dns \"a b\""), "{err}");
}
