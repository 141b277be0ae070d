//! `cos-mesh firewall lint` and `explain` as an operator runs them, against the role files in
//! `firewall/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cos-mesh")).args(args).output().expect("run cos-mesh")
}

fn role(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("firewall").join(name).display().to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A node config whose `firewall:` section includes base.yaml and the given role, plus keys
/// owned by other modules that the firewall must ignore.
fn node_config(dir: &Path, role_file: &str) -> PathBuf {
    let p = dir.join(format!("node-{role_file}"));
    let text = format!(
        "pki:\n  ca: /etc/cos-mesh/ca.crt\nfirewall:\n  include:\n    - {}\n    - {}\n",
        role("base.yaml"),
        role(role_file)
    );
    std::fs::write(&p, text).unwrap();
    p
}

/// The line in a role file where the rule with these `key: value` lines starts.
fn rule_line(file: &str, port: &str, proto: &str, group: &str) -> usize {
    let text = std::fs::read_to_string(role(file)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let i = lines
        .windows(3)
        .position(|w| {
            w[0].trim() == format!("- port: {port}")
                && w[1].trim() == format!("proto: {proto}")
                && w[2].trim() == format!("group: {group}")
        })
        .unwrap_or_else(|| panic!("no rule {port}/{proto} {group} in {file}"));
    i + 1
}

fn explain(config: &Path, peer_groups: &str, port: &str) -> Output {
    bin(&["firewall", "explain", "-c", config.to_str().unwrap(), "--peer-groups", peer_groups, "--port", port])
}

#[test]
fn role_files_pass_lint_strict() {
    let files = ["base.yaml", "nomad-server.yaml", "nomad-client.yaml"].map(role);
    for f in &files {
        let o = bin(&["firewall", "lint", "--strict", f]);
        assert!(o.status.success(), "{f}: {}{}", stdout(&o), stderr(&o));
        assert_eq!(stdout(&o), "");
    }
    let d = tempfile::tempdir().unwrap();
    for r in ["nomad-server.yaml", "nomad-client.yaml"] {
        let cfg = node_config(d.path(), r);
        let o = bin(&["firewall", "lint", "--strict", cfg.to_str().unwrap()]);
        assert!(o.status.success(), "base + {r}: {}", stdout(&o));
    }
}

#[test]
fn client_reaches_server_rpc() {
    let d = tempfile::tempdir().unwrap();
    let server = node_config(d.path(), "nomad-server.yaml");
    let o = explain(&server, "nomad-client", "4647/tcp");
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("allow\n"), "{out}");
    let at = format!("nomad-server.yaml:{}", rule_line("nomad-server.yaml", "4647", "tcp", "nomad-client"));
    assert!(out.contains(&at), "names the deciding rule {at}:\n{out}");
}

#[test]
fn server_reaches_server_serf_udp_and_fragments() {
    let d = tempfile::tempdir().unwrap();
    let server = node_config(d.path(), "nomad-server.yaml");
    let o = explain(&server, "nomad-server", "4648/udp");
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let at = format!("nomad-server.yaml:{}", rule_line("nomad-server.yaml", "4648", "udp", "nomad-server"));
    assert!(stdout(&o).contains(&at), "{}", stdout(&o));
    let o = explain(&server, "nomad-server", "fragment/udp");
    assert_eq!(o.status.code(), Some(0), "large gossip fragments pass: {}", stdout(&o));
    for (groups, port) in [("nomad-client", "4648/udp"), ("nomad-client", "fragment/udp"), ("ops", "4648/tcp")] {
        let o = explain(&server, groups, port);
        assert_eq!(o.status.code(), Some(1), "{groups} must not reach Serf {port}: {}", stdout(&o));
        assert!(stdout(&o).starts_with("drop\n"));
    }
}

#[test]
fn nothing_reaches_client_ssh() {
    let d = tempfile::tempdir().unwrap();
    let client = node_config(d.path(), "nomad-client.yaml");
    for groups in
        ["nomad-server", "nomad-client", "ops", "lighthouse", "relay", "nomad-server,nomad-client,ops,lighthouse,relay"]
    {
        let o = explain(&client, groups, "22/tcp");
        assert_eq!(o.status.code(), Some(1), "{groups}: {}", stdout(&o));
        assert!(stdout(&o).starts_with("drop\n"), "{}", stdout(&o));
    }
}

#[test]
fn client_allocation_port_is_reachable() {
    let d = tempfile::tempdir().unwrap();
    let client = node_config(d.path(), "nomad-client.yaml");
    let o = explain(&client, "nomad-client", "25417/tcp");
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let at = format!("nomad-client.yaml:{}", rule_line("nomad-client.yaml", "20000-32000", "any", "nomad-client"));
    assert!(stdout(&o).contains(&at), "{}", stdout(&o));
    let o = bin(&[
        "firewall",
        "explain",
        "-c",
        client.to_str().unwrap(),
        "--peer-groups",
        "nomad-client",
        "--port",
        "25417/udp",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["verdict"], "allow");
    assert!(v["rule"]["file"].as_str().unwrap().ends_with("nomad-client.yaml"));
    let o = explain(&client, "lighthouse", "25417/tcp");
    assert_eq!(o.status.code(), Some(1), "a lighthouse is not a workload consumer");
}

#[test]
fn explain_with_peer_certificate_and_reject() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    let ok = |o: Output| assert!(o.status.success(), "{}", stderr(&o));
    ok(bin(&["ca", "--name", "test-ca", "--out-crt", &p("ca.crt"), "--out-key", &p("ca.key")]));
    let sign = ["sign", "--name", "client-7", "--ip", "100.64.0.7/10", "--groups", "nomad-client"];
    ok(bin(&[
        &sign[..],
        &["--ca-crt", &p("ca.crt"), "--ca-key", &p("ca.key"), "--out-crt", &p("c.crt"), "--out-key", &p("c.key")],
    ]
    .concat()));
    let rules = d.path().join("r.yaml");
    std::fs::write(
        &rules,
        "inbound_action: reject\ninbound:\n  - {port: 4647, proto: tcp, host: client-7, ca_name: test-ca}\n",
    )
    .unwrap();
    let args = ["firewall", "explain", "-c", rules.to_str().unwrap(), "--peer-cert", &p("c.crt"), "--ca", &p("ca.crt")];
    let o = bin(&[&args[..], &["--port", "4647/tcp"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("r.yaml:3") && stdout(&o).contains("client-7"), "{}", stdout(&o));
    let o = bin(&[&args[..], &["--port", "4646/tcp"]].concat());
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).starts_with("reject\n"), "{}", stdout(&o));
}

#[test]
fn bad_input_names_file_line_and_field() {
    let d = tempfile::tempdir().unwrap();
    let typo = d.path().join("typo.yaml");
    std::fs::write(&typo, "inbound:\n  - port: 4646\n    proto: tcp\n    gruop: ops\n").unwrap();
    let o = bin(&["firewall", "lint", typo.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("typo.yaml:4:") && out.contains("gruop"), "{out}");
    let o = explain(&typo, "ops", "4646/tcp");
    assert_eq!(o.status.code(), Some(2), "a broken config is not a verdict");
    assert!(stderr(&o).contains("typo.yaml:4:5") && stderr(&o).contains("gruop"), "{}", stderr(&o));

    let reversed = d.path().join("reversed.yaml");
    std::fs::write(&reversed, "inbound:\n  - {port: 32000-20000, proto: any, group: nomad-client}\n").unwrap();
    let o = bin(&["firewall", "lint", "--format", "json", reversed.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["errors"], 1);
    assert_eq!(v["findings"][0]["line"], 2);
    assert!(v["findings"][0]["message"].as_str().unwrap().contains("greater than its end"), "{v}");

    let warn_only = d.path().join("warn.yaml");
    std::fs::write(&warn_only, "inbound:\n  - {port: 22, proto: tcp, host: any, group: ops}\n").unwrap();
    assert_eq!(bin(&["firewall", "lint", warn_only.to_str().unwrap()]).status.code(), Some(0), "warnings pass");
    assert_eq!(
        bin(&["firewall", "lint", "--strict", warn_only.to_str().unwrap()]).status.code(),
        Some(1),
        "--strict fails"
    );

    let server = node_config(d.path(), "nomad-server.yaml");
    for port in ["4647", "4647/sctp", "99999/tcp"] {
        assert_eq!(explain(&server, "nomad-client", port).status.code(), Some(2), "--port {port}");
    }
}

#[test]
fn lint_reports_groups_the_ca_cannot_sign() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    let o = bin(&[
        "ca",
        "--name",
        "edge-ca",
        "--groups",
        "nomad-client,ops",
        "--out-crt",
        &p("ca.crt"),
        "--out-key",
        &p("ca.key"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = bin(&["firewall", "lint", "--ca", &p("ca.crt"), &role("nomad-server.yaml")]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "warnings only: {out}");
    assert!(out.contains("warning[ca-groups]") && out.contains("\"nomad-server\""), "{out}");
}
