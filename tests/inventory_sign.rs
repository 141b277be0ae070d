//! `cos-mesh sign --inventory` as an operator runs it: idempotent, renews near expiry with the
//! same key, re-issues on a changed group, and the real `nebula-cert` accepts what it issues.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::SystemTime;

use serde_json::Value;

const COS: &str = env!("CARGO_BIN_EXE_cos-mesh");

fn run(dir: &Path, prog: &str, args: &[&str]) -> Output {
    Command::new(prog).args(args).current_dir(dir).output().unwrap_or_else(|e| panic!("cannot run {prog}: {e}"))
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, COS, args);
    assert!(out.status.success(), "cos-mesh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, COS, args);
    assert_eq!(out.status.code(), Some(1), "cos-mesh {args:?} should fail: {out:?}");
    String::from_utf8(out.stderr).unwrap()
}

/// Runs `sign --inventory` with `--json` and returns node name → (action, reasons).
fn sign(dir: &Path, extra: &[&str]) -> BTreeMap<String, (String, String)> {
    let mut args = vec!["sign", "--inventory", "inventory.yaml", "--out-dir", "certs", "--json"];
    args.extend_from_slice(extra);
    let v: Value = serde_json::from_str(&ok(dir, &args)).unwrap();
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let reasons = n["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect::<Vec<_>>();
            (n["name"].as_str().unwrap().to_string(), (n["action"].as_str().unwrap().to_string(), reasons.join("; ")))
        })
        .collect()
}

const INVENTORY: &str = "\
roles:
  server: [nomad-server]
  client: [nomad-client]
nodes:
  - {name: s1, ip: 100.64.0.11/10, role: server}
  - {name: c1, ip: 100.64.1.1/10, role: client, subnets: [10.1.0.0/16]}
  - name: c2
    ip: 100.64.1.2/10
    role: client
    groups: [ops]
";

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let groups = "nomad-server,nomad-client,ops";
    // v1, so that nebula-cert 1.6.1 can check what the inventory issues.
    let ca = ["ca", "--version", "1", "--name", "inv CA", "--ips", "100.64.0.0/10", "--groups", groups];
    ok(p, &[&ca[..], &["--subnets", "10.0.0.0/8"]].concat());
    fs::write(p.join("inventory.yaml"), INVENTORY).unwrap();
    dir
}

/// Every file of the output directory with its bytes and mtime.
fn snapshot(dir: &Path) -> BTreeMap<String, (Vec<u8>, SystemTime)> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, (fs::read(e.path()).unwrap(), e.metadata().unwrap().modified().unwrap()))
        })
        .collect()
}

fn public_key(dir: &Path, cert: &str) -> (String, String) {
    let v: Value = serde_json::from_str(&ok(dir, &["print", "--json", cert])).unwrap();
    (v["details"]["publicKey"].as_str().unwrap().into(), v["details"]["notAfter"].as_str().unwrap().into())
}

#[test]
fn second_run_changes_nothing_and_nebula_cert_accepts_all() {
    let d = workspace();
    let p = d.path();
    let first = sign(p, &[]);
    assert!(first.values().all(|(a, r)| a == "issued" && r == "no certificate; new key"), "{first:?}");
    let certs = p.join("certs");
    for name in ["s1", "c1", "c2"] {
        for ext in ["crt", "key"] {
            let mode = fs::metadata(certs.join(format!("{name}.{ext}"))).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}.{ext}");
        }
        let out = run(p, "nebula-cert", &["verify", "-ca", "ca.crt", "-crt", &format!("certs/{name}.crt")]);
        assert!(out.status.success(), "nebula-cert verify {name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_str(&ok(p, &["print", "--json", "certs/c2.crt"])).unwrap();
    assert_eq!(v["details"]["groups"], serde_json::json!(["nomad-client", "ops"]));
    let v: Value = serde_json::from_str(&ok(p, &["print", "--json", "certs/c1.crt"])).unwrap();
    assert_eq!(v["details"]["subnets"], serde_json::json!(["10.1.0.0/16"]));

    let before = snapshot(&certs);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = sign(p, &[]);
    assert!(second.values().all(|(a, _)| a == "unchanged"), "{second:?}");
    assert_eq!(snapshot(&certs), before, "bytes and mtimes must not change");
    let text = ok(p, &["sign", "--inventory", "inventory.yaml", "--out-dir", "certs"]);
    assert!(text.ends_with("0 issued, 0 renewed, 3 unchanged\n"), "{text}");
}

#[test]
fn near_expiry_renews_with_the_same_key_in_place() {
    let d = workspace();
    let p = d.path();
    // Short-lived certificates first, then a run with the default policy (renew within 720h).
    sign(p, &["--duration", "100h", "--renew-before", "1h"]);
    let key_before = fs::read(p.join("certs/s1.key")).unwrap();
    let (pk_before, end_before) = public_key(p, "certs/s1.crt");

    let dry = sign(p, &["--dry-run"]);
    assert!(dry.values().all(|(a, _)| a == "renewed"), "{dry:?}");
    assert_eq!(public_key(p, "certs/s1.crt").1, end_before, "--dry-run writes nothing");

    let renewed = sign(p, &[]);
    for (name, (action, reasons)) in &renewed {
        assert_eq!(action, "renewed", "{name}");
        assert!(reasons.starts_with("expires ") && reasons.contains("renew-before 720h"), "{name}: {reasons}");
    }
    let (pk_after, end_after) = public_key(p, "certs/s1.crt");
    assert_eq!(pk_after, pk_before, "renewal keeps the key");
    assert!(end_after > end_before, "{end_after} after {end_before}");
    assert_eq!(fs::read(p.join("certs/s1.key")).unwrap(), key_before, "the key file is not rewritten");
    let names: Vec<String> =
        fs::read_dir(p.join("certs")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.len(), 6, "no temporary files left: {names:?}");
    let out = run(p, "nebula-cert", &["verify", "-ca", "ca.crt", "-crt", "certs/s1.crt"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    assert!(sign(p, &[]).values().all(|(a, _)| a == "unchanged"));
    let err = fails(p, &["sign", "--inventory", "inventory.yaml", "--out-dir", "certs", "--duration", "100h"]);
    assert!(err.contains("--duration 100h0m0s is not longer than --renew-before 720h0m0s"), "{err}");
}

#[test]
fn changed_group_reissues_only_that_node_and_keygen_pub_is_signed() {
    let d = workspace();
    let p = d.path();
    sign(p, &[]);
    let s1 = fs::read(p.join("certs/s1.crt")).unwrap();
    fs::write(p.join("inventory.yaml"), INVENTORY.replace("groups: [ops]", "groups: [ops, nomad-server]")).unwrap();
    let r = sign(p, &[]);
    assert_eq!(r["c2"], ("renewed".into(), "groups [nomad-client,ops] → [nomad-client,ops,nomad-server]".into()));
    assert_eq!(r["s1"].0, "unchanged");
    assert_eq!(fs::read(p.join("certs/s1.crt")).unwrap(), s1);
    let v: Value = serde_json::from_str(&ok(p, &["print", "--json", "certs/c2.crt"])).unwrap();
    assert_eq!(v["details"]["groups"], serde_json::json!(["nomad-client", "ops", "nomad-server"]));

    // A host that made its own key (`keygen`) hands over only <name>.pub: signed, no key written.
    let inv = format!("{INVENTORY}  - {{name: h1, ip: 100.64.2.1/10, role: client}}\n");
    fs::write(p.join("inventory.yaml"), inv).unwrap();
    ok(p, &["keygen", "--out-key", "h1-host.key", "--out-pub", "certs/h1.pub"]);
    let r = sign(p, &[]);
    assert_eq!(r["h1"], ("issued".into(), "no certificate".into()));
    assert!(!p.join("certs/h1.key").exists());
    let out = run(p, "nebula-cert", &["verify", "-ca", "ca.crt", "-crt", "certs/h1.crt"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Once the certificate exists the .pub may go: the certificate's own key is kept.
    fs::remove_file(p.join("certs/h1.pub")).unwrap();
    assert_eq!(sign(p, &[])["h1"].0, "unchanged");
}

#[test]
fn bad_entries_name_the_file_and_entry_and_write_nothing() {
    let d = workspace();
    let p = d.path();
    let file = p.join("inventory.yaml");
    let cases = [
        (
            INVENTORY.replace("100.64.1.2/10", "100.64.0.11/10"),
            "nodes[2] \"c2\" (line 7): ip 100.64.0.11 is already used by nodes[0] \"s1\"",
        ),
        (
            INVENTORY.replace("name: c2", "name: s1"),
            "nodes[2] \"s1\" (line 7): name \"s1\" is already used by nodes[0]",
        ),
        (
            INVENTORY.replace("100.64.1.2/10", "192.168.1.2/24"),
            "nodes[2] \"c2\" (line 7): certificate contained an ip assignment outside the limitations of the signing ca: 192.168.1.2/24",
        ),
        (
            INVENTORY.replace("groups: [ops]", "groups: [admins]"),
            "nodes[2] \"c2\" (line 7): certificate contained a group not present on the signing ca: \"admins\"",
        ),
        (INVENTORY.replace("role: server", "role: srv"), "nodes[0] \"s1\" (line 5): role \"srv\" is not defined"),
    ];
    for (text, want) in cases {
        fs::write(&file, &text).unwrap();
        let err = fails(p, &["sign", "--inventory", "inventory.yaml", "--out-dir", "certs"]);
        assert!(err.contains(&format!("inventory.yaml: {want}")), "{err}\nwanted: {want}");
        assert!(!p.join("certs").exists(), "nothing may be written when an entry is bad");
    }
    let err = fails(p, &["sign", "--inventory", "missing.yaml", "--out-dir", "certs"]);
    assert!(err.contains("reading inventory missing.yaml"), "{err}");
}

#[test]
fn example_inventory_signs_under_a_ca_for_its_groups() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let groups = "lighthouse,relay,nomad-server,nomad-client,ops";
    ok(p, &["ca", "--name", "ex CA", "--ips", "100.64.0.0/10", "--groups", groups, "--subnets", "10.0.0.0/8"]);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("pki/inventory.example.yaml");
    let text = ok(p, &["sign", "--inventory", example.to_str().unwrap(), "--out-dir", "certs"]);
    assert!(text.ends_with("7 issued, 0 renewed, 0 unchanged\n"), "{text}");
}

#[test]
fn a_new_ca_renews_every_node_for_the_same_key_and_retired_nodes_are_listed() {
    let d = workspace();
    let p = d.path();
    sign(p, &[]);
    let (pk_before, _) = public_key(p, "certs/c1.crt");
    let groups = "nomad-server,nomad-client,ops";
    let args = ["--ips", "100.64.0.0/10", "--groups", groups, "--subnets", "10.0.0.0/8"];
    let mut ca = vec!["ca", "--version", "1", "--name", "new CA", "--out-crt", "new.crt", "--out-key", "new.key"];
    ca.extend_from_slice(&args);
    ok(p, &ca);
    let r = sign(p, &["--ca-crt", "new.crt", "--ca-key", "new.key"]);
    assert!(r.values().all(|(a, why)| a == "renewed" && why == "not signed by this CA (new CA)"), "{r:?}");
    assert_eq!(public_key(p, "certs/c1.crt").0, pk_before);
    let out = run(p, "nebula-cert", &["verify", "-ca", "new.crt", "-crt", "certs/c1.crt"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A node dropped from the inventory keeps its files and is pointed out.
    fs::write(p.join("inventory.yaml"), INVENTORY.replace("  - {name: s1, ip: 100.64.0.11/10, role: server}\n", ""))
        .unwrap();
    let text = ok(
        p,
        &["sign", "--inventory", "inventory.yaml", "--out-dir", "certs", "--ca-crt", "new.crt", "--ca-key", "new.key"],
    );
    assert!(text.contains("not listed") && text.contains("certs/s1.crt (blocklist it"), "{text}");
    assert!(p.join("certs/s1.crt").exists());
}

/// A v2 CA (the default): the inventory takes several networks per node, IPv4 and IPv6, and
/// issues v2 certificates; `--version 1` is refused for a node with an IPv6 network before
/// anything is written.
#[test]
fn v2_inventory_with_several_networks_per_node() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    ok(p, &["ca", "--name", "v2 CA", "--networks", "100.64.0.0/10,fd00::/16", "--groups", "nomad-server,ops"]);
    let inventory = "roles:\n  server: [nomad-server]\nnodes:\n  - {name: s1, networks: [fd00::11/64, 100.64.0.11/10], role: server}\n  - {name: s2, ip: 100.64.0.12/10, role: server, groups: [ops]}\n";
    fs::write(p.join("inventory.yaml"), inventory).unwrap();
    let err = fails(p, &["sign", "--inventory", "inventory.yaml", "--out-dir", "certs", "--version", "1"]);
    assert!(err.contains("nodes[0] \"s1\"") && err.contains("IPv4 networks only"), "{err}");
    assert!(!p.join("certs").exists(), "a refused run writes nothing");
    let first = sign(p, &[]);
    assert!(first.values().all(|(a, _)| a == "issued"), "{first:?}");
    let v: Value = serde_json::from_str(&ok(p, &["print", "--json", "certs/s1.crt"])).unwrap();
    assert_eq!(v["version"], 2);
    assert_eq!(v["details"]["networks"], serde_json::json!(["100.64.0.11/10", "fd00::11/64"]));
    ok(p, &["verify", "--ca", "ca.crt", "--crt", "certs/s1.crt"]);
    // Stable: a second run changes nothing; a changed network renews.
    assert!(sign(p, &[]).values().all(|(a, _)| a == "unchanged"));
    fs::write(p.join("inventory.yaml"), inventory.replace("fd00::11/64", "fd00::111/64")).unwrap();
    let r = sign(p, &[]);
    assert_eq!(r["s1"].0, "renewed", "{r:?}");
    assert!(r["s1"].1.starts_with("networks [100.64.0.11/10,fd00::11/64] → "), "{r:?}");
}
