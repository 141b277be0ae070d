//! `cos-mesh check` on a real PKI made with `cos-mesh ca` / `sign`: what an operator sees.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_cos-mesh");

fn cos_mesh(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN).current_dir(dir).args(args).output().expect("running cos-mesh")
}

fn ok(dir: &Path, args: &[&str]) {
    let out = cos_mesh(dir, args);
    assert!(out.status.success(), "cos-mesh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A PKI workspace: CA `ca`, a second CA `other`, nodes `node1`/`node2` signed by `ca` and
/// `stranger` signed by `other`.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        ok(d, &["ca", "--name", "Test CA", "--ips", "100.64.0.0/10", "--duration", "1h"]);
        ok(d, &["ca", "--name", "Other CA", "--out-crt", "other.crt", "--out-key", "other.key", "--duration", "1h"]);
        for (name, ip) in [("node1", "100.64.0.11/10"), ("node2", "100.64.0.12/10")] {
            ok(d, &["sign", "--name", name, "--ip", ip]);
        }
        ok(
            d,
            &["sign", "--name", "stranger", "--ip", "100.64.0.13/10", "--ca-crt", "other.crt", "--ca-key", "other.key"],
        );
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `config.yml` with this pki section and `extra` appended; returns its path.
    fn config(&self, ca: &str, cert: &str, key: &str, extra: &str) -> PathBuf {
        let text = format!(
            "pki:\n  ca: {}\n  cert: {}\n  key: {}\n{extra}",
            self.path(ca).display(),
            self.path(cert).display(),
            self.path(key).display()
        );
        let p = self.path("config.yml");
        fs::write(&p, text).unwrap();
        p
    }

    fn check(&self, config: &Path) -> (i32, String) {
        let out = cos_mesh(self.dir.path(), &["check", "-c", config.to_str().unwrap()]);
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    fn fingerprint(&self, cert: &str) -> String {
        let out = cos_mesh(self.dir.path(), &["print", "--json", cert]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["fingerprint"].as_str().unwrap().to_string()
    }
}

const LIGHTHOUSE: &str =
    "static_host_map:\n  \"100.64.0.1\": [\"198.18.0.1:4242\"]\nlighthouse:\n  hosts: [\"100.64.0.1\"]\n";

#[test]
fn check_accepts_a_valid_node_and_refuses_bad_pki() {
    let pki = Pki::new();
    // Indented, so it continues the pki section that `config` writes first.
    let blocklist_extra = format!("  blocklist: [\"{}\"]\n", pki.fingerprint("node1.crt"));

    // (what, ca, cert, key, extra config, exit code, stderr must contain)
    let cases: Vec<(&str, &str, &str, &str, String, i32, String)> = vec![
        ("valid", "ca.crt", "node1.crt", "node1.key", LIGHTHOUSE.into(), 0, "OK: node node1 (100.64.0.11/10)".into()),
        (
            "nebula keys warn",
            "ca.crt",
            "node1.crt",
            "node1.key",
            "cipher: aes\n".into(),
            0,
            "cipher: WireGuard's".into(),
        ),
        (
            "short-lived certificate and CA",
            "ca.crt",
            "node1.crt",
            "node1.key",
            String::new(),
            0,
            "pki.cert: certificate node1 expires in 59 minutes".into(),
        ),
        (
            "key of another node",
            "ca.crt",
            "node1.crt",
            "node2.key",
            String::new(),
            1,
            "pki.key: the private key".into(),
        ),
        (
            "certificate of another CA",
            "ca.crt",
            "stranger.crt",
            "stranger.key",
            String::new(),
            1,
            "pki.cert: could not find ca for the certificate: stranger".into(),
        ),
        (
            "blocklisted certificate",
            "ca.crt",
            "node1.crt",
            "node1.key",
            blocklist_extra,
            1,
            "pki.cert: certificate has been blocked: node1".into(),
        ),
        (
            "static host outside the overlay",
            "ca.crt",
            "node1.crt",
            "node1.key",
            "static_host_map:\n  \"10.1.0.1\": [\"198.18.0.1:4242\"]\n".into(),
            1,
            "static_host_map.10.1.0.1: 10.1.0.1 is outside the overlay network 100.64.0.0/10".into(),
        ),
        ("missing cert file", "ca.crt", "nope.crt", "node1.key", String::new(), 1, "pki.cert: reading ".into()),
        ("a key where the CA goes", "node1.key", "node1.crt", "node1.key", String::new(), 1, "pki.ca: ".into()),
    ];
    for (what, ca, cert, key, extra, code, needle) in cases {
        let config = pki.config(ca, cert, key, &extra);
        let (got, stderr) = pki.check(&config);
        assert_eq!(got, code, "{what}: {stderr}");
        assert!(stderr.contains(&needle), "{what}: {stderr:?} lacks {needle:?}");
        if code == 1 {
            let line = stderr.lines().last().unwrap_or_default();
            assert!(line.starts_with(&format!("Error: {}: ", config.display())), "{what}: {line}");
        }
    }
}

#[test]
fn check_warns_about_a_readable_key_and_an_unimplemented_cipher() {
    let pki = Pki::new();
    fs::set_permissions(pki.path("node1.key"), fs::Permissions::from_mode(0o644)).unwrap();
    let config = pki.config("ca.crt", "node1.crt", "node1.key", "cipher: aes\n");
    let (code, stderr) = pki.check(&config);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("pki.key: ") && stderr.contains("has mode 0644; a private key should be 0600"), "{stderr}");
    assert!(stderr.contains("cipher: WireGuard's cipher is fixed (ChaCha20-Poly1305)"), "{stderr}");
}

#[test]
fn check_reads_a_ca_bundle_and_a_config_directory() {
    let pki = Pki::new();
    let bundle =
        [fs::read_to_string(pki.path("other.crt")).unwrap(), fs::read_to_string(pki.path("ca.crt")).unwrap()].concat();
    fs::write(pki.path("bundle.crt"), bundle).unwrap();
    let conf = pki.path("conf.d");
    fs::create_dir(&conf).unwrap();
    let pki_section = format!(
        "pki:\n  ca: {}\n  cert: {}\n  key: {}\n",
        pki.path("bundle.crt").display(),
        pki.path("stranger.crt").display(),
        pki.path("stranger.key").display()
    );
    fs::write(conf.join("00-pki.yaml"), pki_section).unwrap();
    fs::write(conf.join("10-mesh.yml"), LIGHTHOUSE).unwrap();
    let (code, stderr) = pki.check(&conf);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("OK: node stranger") && stderr.contains("2 file(s), 2 CA(s)"), "{stderr}");

    fs::write(conf.join("20-bad.yml"), "tun:\n  mtu: 99\n").unwrap();
    let (code, stderr) = pki.check(&conf);
    assert_eq!(code, 1);
    assert!(stderr.contains("20-bad.yml: tun.mtu: 99 is out of range"), "{stderr}");
}

#[test]
fn check_names_the_line_of_an_unknown_key() {
    let pki = Pki::new();
    let config = pki.config("ca.crt", "node1.crt", "node1.key", "listen:\n  port: 4242\n  bacth: 64\n");
    let (code, stderr) = pki.check(&config);
    assert_eq!(code, 1);
    assert!(stderr.contains("config.yml:7:3: unknown field `bacth`"), "{stderr}");
}
