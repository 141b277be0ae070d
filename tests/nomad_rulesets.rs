//! The role rule sets for Nomad, Consul and monitoring, and the five-data-center example, as
//! `cos-mesh firewall explain` decides them: every port a role needs is open to the groups
//! that need it, and nothing else is.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cos-mesh")).args(args).output().expect("run cos-mesh")
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path).display().to_string()
}

/// A node config including `firewall/base.yaml` and `files` (paths in the repository).
fn node(dir: &Path, files: &[&str]) -> PathBuf {
    let p = dir.join(format!("node-{}.yaml", files.join("+").replace('/', "_")));
    let mut text = format!("firewall:\n  include:\n    - {}\n", repo("firewall/base.yaml"));
    for f in files {
        text.push_str(&format!("    - {}\n", repo(f)));
    }
    std::fs::write(&p, text).unwrap();
    p
}

/// Asserts the verdict of `explain` for a peer with `groups` on `port` ("4646/tcp").
fn verdict(config: &Path, groups: &str, port: &str, allowed: bool) {
    let o = bin(&["firewall", "explain", "-c", config.to_str().unwrap(), "--peer-groups", groups, "--port", port]);
    let out = String::from_utf8_lossy(&o.stdout);
    let want = if allowed { Some(0) } else { Some(1) };
    assert_eq!(
        o.status.code(),
        want,
        "{} from [{groups}] to {port}: {out}{}",
        config.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn every_rule_file_passes_lint_strict() {
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in ["firewall", "examples/cos-datacenters/firewall"] {
        for e in std::fs::read_dir(repo(dir)).unwrap() {
            files.push(e.unwrap().path());
        }
    }
    assert!(files.len() >= 11, "{files:?}");
    for f in files {
        let o = bin(&["firewall", "lint", "--strict", f.to_str().unwrap()]);
        assert!(o.status.success(), "{}: {}", f.display(), String::from_utf8_lossy(&o.stdout));
    }
}

#[test]
fn nomad_http_on_clients_and_servers_for_the_right_groups() {
    let d = tempfile::tempdir().unwrap();
    let client = node(d.path(), &["firewall/nomad-client.yaml"]);
    for g in ["nomad-client", "ops", "monitoring"] {
        verdict(&client, g, "4646/tcp", true);
    }
    for g in ["nomad-server", "lighthouse", "relay", "consul-client"] {
        verdict(&client, g, "4646/tcp", false);
    }
    let server = node(d.path(), &["firewall/nomad-server.yaml"]);
    for g in ["nomad-server", "ops", "monitoring"] {
        verdict(&server, g, "4646/tcp", true);
    }
    verdict(&server, "nomad-client", "4646/tcp", false);
    // Prometheus scrapes Nomad's HTTP only: not RPC, not Serf, not allocations.
    verdict(&server, "monitoring", "4647/tcp", false);
    verdict(&server, "monitoring", "4648/udp", false);
    verdict(&client, "monitoring", "25000/tcp", false);
}

#[test]
fn monitoring_scrapes_cos_mesh_metrics_everywhere_and_ops_reach_prometheus() {
    let d = tempfile::tempdir().unwrap();
    for role in ["firewall/nomad-client.yaml", "firewall/nomad-server.yaml", "firewall/monitoring.yaml"] {
        let n = node(d.path(), &[role]);
        verdict(&n, "monitoring", "8080/tcp", true);
        verdict(&n, "ops", "8080/tcp", false);
    }
    let prom = node(d.path(), &["firewall/monitoring.yaml"]);
    verdict(&prom, "ops", "9090/tcp", true);
    verdict(&prom, "nomad-client", "9090/tcp", false);
}

#[test]
fn consul_ports_between_the_right_agents_only() {
    let d = tempfile::tempdir().unwrap();
    let server = node(d.path(), &["firewall/consul-server.yaml"]);
    let client = node(d.path(), &["firewall/consul-client.yaml"]);
    for (cfg, g, port, ok) in [
        (&server, "consul-client", "8300/tcp", true),
        (&server, "consul-server", "8300/tcp", true),
        (&server, "consul-client", "8301/tcp", true),
        (&server, "consul-client", "8301/udp", true),
        (&server, "consul-server", "8302/tcp", true),
        (&server, "consul-server", "8302/udp", true),
        (&server, "consul-client", "8302/udp", false),
        (&server, "consul-client", "fragment/udp", true),
        (&server, "nomad-client", "8300/tcp", false),
        (&server, "ops", "8500/tcp", false),
        (&server, "consul-client", "8500/tcp", false),
        (&server, "consul-client", "8600/udp", false),
        (&client, "consul-client", "8301/tcp", true),
        (&client, "consul-client", "8301/udp", true),
        (&client, "consul-server", "8301/udp", true),
        (&client, "consul-server", "8300/tcp", false),
        (&client, "consul-server", "8302/tcp", false),
        (&client, "consul-server", "8500/tcp", false),
        (&client, "nomad-client", "8301/udp", false),
    ] {
        verdict(cfg, g, port, ok);
    }
}

#[test]
fn data_centers_are_segmented_by_group() {
    let d = tempfile::tempdir().unwrap();
    let fra = node(d.path(), &["examples/cos-datacenters/firewall/dc-onprem-fra-1.yaml"]);
    verdict(&fra, "nomad-client,dc-onprem-fra-1", "25000/tcp", true);
    verdict(&fra, "nomad-client,dc-onprem-fra-1", "4646/tcp", true);
    verdict(&fra, "nomad-client,dc-onprem-ams-1", "25000/tcp", false);
    verdict(&fra, "nomad-client,dc-onprem-ams-1", "4646/tcp", false);
    verdict(&fra, "dc-onprem-fra-1", "25000/tcp", false);
    verdict(&fra, "ops", "25000/udp", true);
    verdict(&fra, "monitoring", "4646/tcp", true);
}

#[test]
fn the_data_center_inventory_signs_with_a_ca_limited_to_its_groups() {
    let d = tempfile::tempdir().unwrap();
    let p = |f: &str| d.path().join(f).display().to_string();
    let groups = "lighthouse,relay,nomad-server,consul-server,nomad-client,consul-client,monitoring,ops,\
                  dc-aws-eu-west-1,dc-aws-us-east-1,dc-gcp-europe-west4,dc-onprem-fra-1,dc-onprem-ams-1";
    let ca = ["ca", "--name", "cos", "--groups", groups, "--ips", "100.64.0.0/10", "--out-crt"];
    let o = bin(&[&ca[..], &[&p("ca.crt"), "--out-key", &p("ca.key")]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let inv = repo("examples/cos-datacenters/inventory.yaml");
    let o = bin(&[
        "sign",
        "--inventory",
        &inv,
        "--ca-crt",
        &p("ca.crt"),
        "--ca-key",
        &p("ca.key"),
        "--out-dir",
        &p("certs"),
        "--dry-run",
    ]);
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("12 issued, 0 renewed"), "{out}");
}

#[test]
fn the_data_center_inventory_gets_nomad_certificates_per_role_and_region() {
    let d = tempfile::tempdir().unwrap();
    let inv = d.path().join("inventory.yaml");
    std::fs::copy(repo("examples/cos-datacenters/inventory.yaml"), &inv).unwrap();
    let out = d.path().join("nomad-tls");
    let o = bin(&["nomad", "tls", "--inventory", inv.to_str().unwrap(), "--out-dir", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Region `cos` from the inventory; servers, clients, Prometheus and operators get theirs.
    for f in ["server-1/cos-server-nomad.pem", "fra-1/cos-client-nomad.pem", "prometheus-1/cos-cli-nomad.pem"] {
        assert!(out.join(f).exists(), "{f}");
    }
    assert!(!out.join("lighthouse-1").exists() && !out.join("prometheus-1/cos-client-nomad.pem").exists());
    let env = std::fs::read_to_string(out.join("prometheus-1/nomad-cli.env")).unwrap();
    assert!(env.contains("NOMAD_ADDR=https://100.64.0.11:4646"), "{env}");
}
