//! The PKI against the real `nebula-cert` (Debian package `nebula`, 1.6.1): certificates and keys
//! must cross in both directions, and every refusal a user can hit says why.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use cos_mesh::cert::keys::{CaSecret, HostSecret};
use cos_mesh::cert::{Certificate, Details, armor};
use cos_mesh::unixtime::UnixTime;
use serde_json::Value;

const COS: &str = env!("CARGO_BIN_EXE_cos-mesh");

fn run(dir: &Path, prog: &str, args: &[&str]) -> Output {
    Command::new(prog).args(args).current_dir(dir).output().unwrap_or_else(|e| {
        panic!("cannot run {prog}: {e} (nebula-cert comes from the Debian package `nebula`; bash .ci/run installs it)")
    })
}

fn ok(dir: &Path, prog: &str, args: &[&str]) -> String {
    let out = run(dir, prog, args);
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail with exit 1 and returns its stderr.
fn fails(dir: &Path, prog: &str, args: &[&str]) -> String {
    let out = run(dir, prog, args);
    assert_eq!(out.status.code(), Some(1), "{prog} {args:?} should fail: {out:?}");
    String::from_utf8(out.stderr).unwrap()
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn our_certificates_pass_nebula_cert() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    ok(
        p,
        COS,
        &[
            "ca",
            "--version",
            "1",
            "--name",
            "cos CA",
            "--ips",
            "100.64.0.0/10",
            "--groups",
            "nomad-server,nomad-client,ops",
            "--subnets",
            "10.0.0.0/8",
        ],
    );
    ok(
        p,
        COS,
        &[
            "sign",
            "--name",
            "server-1",
            "--ip",
            "100.64.0.11/10",
            "--groups",
            "nomad-server, ops",
            "--subnets",
            "10.1.2.3/24",
        ],
    );
    ok(p, "nebula-cert", &["verify", "-ca", "ca.crt", "-crt", "server-1.crt"]);
    for f in ["ca.crt", "server-1.crt"] {
        let theirs = json_lines(&ok(p, "nebula-cert", &["print", "-json", "-path", f]));
        let ours = json_lines(&ok(p, COS, &["print", "--json", f]));
        assert_eq!(ours, theirs, "print --json of {f}");
    }
    let j = &json_lines(&ok(p, COS, &["print", "--json", "server-1.crt"]))[0]["details"];
    assert_eq!(j["groups"], serde_json::json!(["nomad-server", "ops"]));
    assert_eq!(j["subnets"], serde_json::json!(["10.1.2.0/24"]));
    for f in ["ca.key", "ca.crt", "server-1.key", "server-1.crt"] {
        assert_eq!(fs::metadata(p.join(f)).unwrap().permissions().mode() & 0o777, 0o600, "{f}");
    }
    // Default lifetime: one second before the CA ends.
    let ca = Certificate::from_pem(&fs::read(p.join("ca.crt")).unwrap()).unwrap();
    let node = Certificate::from_pem(&fs::read(p.join("server-1.crt")).unwrap()).unwrap();
    assert_eq!(node.details().not_after.seconds(), ca.details().not_after.seconds() - 1);
    // The CA's default lifetime is ten years, not one.
    let life = ca.details().not_after.seconds() - ca.details().not_before.seconds();
    assert_eq!(life, 87_600 * 3600);
}

#[test]
fn nebula_cert_certificates_pass_ours() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    ok(p, "nebula-cert", &["ca", "-name", "neb CA", "-groups", "a,b", "-ips", "100.64.0.0/16"]);
    ok(p, "nebula-cert", &["sign", "-name", "n1", "-ip", "100.64.3.4/16", "-groups", "a"]);
    let out = run(p, COS, &["verify", "--ca", "ca.crt", "--crt", "n1.crt"]);
    assert!(out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    let theirs = json_lines(&ok(p, "nebula-cert", &["print", "-json", "-path", "n1.crt"]));
    assert_eq!(json_lines(&ok(p, COS, &["print", "--json", "n1.crt"])), theirs);
    // Their text output and ours carry the same lines.
    assert_eq!(
        ok(p, COS, &["print", "n1.crt"]).replace(" +0000 UTC", " UTC"),
        ok(p, "nebula-cert", &["print", "-path", "n1.crt"]).replace(" +0000 UTC", " UTC")
    );
}

#[test]
fn keys_cross_both_ways() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // Their CA key signs with our tool, our CA key signs with theirs.
    ok(p, "nebula-cert", &["ca", "-name", "neb", "-out-crt", "nca.crt", "-out-key", "nca.key"]);
    ok(p, COS, &["ca", "--version", "1", "--name", "cos", "--out-crt", "cca.crt", "--out-key", "cca.key"]);
    // A nebula-cert host key signed by cos-mesh under nebula's CA.
    ok(p, "nebula-cert", &["keygen", "-out-key", "h1.key", "-out-pub", "h1.pub"]);
    ok(
        p,
        COS,
        &[
            "sign",
            "--ca-crt",
            "nca.crt",
            "--ca-key",
            "nca.key",
            "--name",
            "h1",
            "--ip",
            "100.64.0.1/10",
            "--in-pub",
            "h1.pub",
        ],
    );
    ok(p, "nebula-cert", &["verify", "-ca", "nca.crt", "-crt", "h1.crt"]);
    assert!(!p.join("h1.key.tmp").exists());
    // A cos-mesh host key signed by nebula-cert under our CA.
    ok(p, COS, &["keygen", "--out-key", "h2.key", "--out-pub", "h2.pub"]);
    ok(
        p,
        "nebula-cert",
        &[
            "sign",
            "-ca-crt",
            "cca.crt",
            "-ca-key",
            "cca.key",
            "-name",
            "h2",
            "-ip",
            "100.64.0.2/10",
            "-in-pub",
            "h2.pub",
        ],
    );
    ok(p, COS, &["verify", "--ca", "cca.crt", "--crt", "h2.crt"]);
    // The certificates carry exactly the public halves of the private keys.
    for (key, crt) in [("h1.key", "h1.crt"), ("h2.key", "h2.crt")] {
        let secret = HostSecret::from_pem(&fs::read(p.join(key)).unwrap()).unwrap();
        let cert = Certificate::from_pem(&fs::read(p.join(crt)).unwrap()).unwrap();
        assert_eq!(secret.public().0, cert.details().public_key, "{crt}");
    }
    // A two-CA bundle verifies both.
    let bundle =
        format!("{}{}", fs::read_to_string(p.join("nca.crt")).unwrap(), fs::read_to_string(p.join("cca.crt")).unwrap());
    fs::write(p.join("bundle.crt"), bundle).unwrap();
    for crt in ["h1.crt", "h2.crt"] {
        ok(p, COS, &["verify", "--ca", "bundle.crt", "--crt", crt]);
        ok(p, "nebula-cert", &["verify", "-ca", "bundle.crt", "-crt", crt]);
    }
}

/// Writes a node certificate with chosen validity under the CA in `p` (ca.crt/ca.key).
fn craft(p: &Path, name: &str, not_before: i64, not_after: i64) {
    let ca = Certificate::from_pem(&fs::read(p.join("ca.crt")).unwrap()).unwrap();
    let key = CaSecret::from_pem(&fs::read(p.join("ca.key")).unwrap()).unwrap();
    let d = Details {
        name: name.into(),
        ips: vec!["100.64.0.50/10".parse().unwrap()],
        subnets: vec![],
        groups: vec![],
        not_before: UnixTime(not_before),
        not_after: UnixTime(not_after),
        public_key: HostSecret::generate().public().0,
        is_ca: false,
        issuer: Some(ca.fingerprint()),
    };
    let cert = Certificate::sign(&d, key.signing_key()).unwrap();
    fs::write(p.join(format!("{name}.crt")), cert.to_pem()).unwrap();
}

#[test]
fn verify_refusals_name_the_reason() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let v1 = ["--version", "1"];
    ok(
        p,
        COS,
        &[&["ca", "--name", "main", "--groups", "nomad-server,nomad-client", "--ips", "100.64.0.0/10"][..], &v1]
            .concat(),
    );
    ok(p, COS, &[&["ca", "--name", "rogue", "--out-crt", "rogue.crt", "--out-key", "rogue.key"][..], &v1].concat());
    ok(p, COS, &["sign", "--name", "good", "--ip", "100.64.0.2/10"]);
    ok(
        p,
        COS,
        &["sign", "--name", "stranger", "--ip", "100.64.0.3/10", "--ca-crt", "rogue.crt", "--ca-key", "rogue.key"],
    );
    let now = UnixTime::now().seconds();
    let ca = Certificate::from_pem(&fs::read(p.join("ca.crt")).unwrap()).unwrap();
    let ca_start = ca.details().not_before.seconds();
    craft(p, "expired", ca_start, ca_start); // valid for its first second only
    craft(p, "future", now + 3600, now + 7200);
    let good = Certificate::from_pem(&fs::read(p.join("good.crt")).unwrap()).unwrap();
    let mut tampered = good.to_bytes().to_vec();
    let n = tampered.len();
    tampered[n - 5] ^= 0x40;
    fs::write(p.join("tampered.crt"), armor::encode(armor::CERTIFICATE, &tampered)).unwrap();
    let mut noncanon = good.to_bytes().to_vec();
    noncanon.extend_from_slice(&[0x18, 0x01]);
    fs::write(p.join("noncanon.crt"), armor::encode(armor::CERTIFICATE, &noncanon)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100)); // let "expired" pass its only second
    let fp = good.fingerprint().to_string();

    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["--crt", "stranger.crt"], "Error: could not find ca for the certificate: stranger is signed by".into()),
        (vec!["--crt", "expired.crt"], "Error: certificate is expired: expired expired at".into()),
        (vec!["--crt", "future.crt"], "Error: certificate is not yet valid: future is valid from".into()),
        (vec!["--crt", "good.crt", "--blocklist", &fp], format!("Error: certificate has been blocked: good ({fp})")),
        (vec!["--crt", "tampered.crt"], "Error: certificate signature did not match: good was not signed by CA main".into()),
        (vec!["--crt", "noncanon.crt"], "Error: parsing certificate noncanon.crt: certificate is not canonically encoded".into()),
        (vec!["--crt", "ca.key"], "Error: parsing certificate ca.key: expected a NEBULA CERTIFICATE or NEBULA CERTIFICATE V2 PEM block, found \"NEBULA ED25519 PRIVATE KEY\"".into()),
        (vec!["--crt", "missing.crt"], "Error: reading certificate missing.crt: No such file".into()),
    ];
    for (args, want) in cases {
        let mut all = vec!["verify", "--ca", "ca.crt"];
        all.extend(args.iter().copied());
        let err = fails(p, COS, &all);
        assert!(err.starts_with(&want), "{args:?}: got {err:?}, want prefix {want:?}");
        assert_eq!(err.lines().count(), 1, "one line of error: {err:?}");
    }
    // nebula-cert agrees on the ones it can read.
    for crt in ["stranger.crt", "expired.crt", "future.crt", "tampered.crt"] {
        fails(p, "nebula-cert", &["verify", "-ca", "ca.crt", "-crt", crt]);
    }
}

#[test]
fn sign_refusals_name_the_reason() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    ok(
        p,
        COS,
        &[
            "ca",
            "--name",
            "main",
            "--groups",
            "nomad-server,nomad-client",
            "--ips",
            "100.64.0.0/16",
            "--duration",
            "1000h",
        ],
    );
    ok(p, COS, &["ca", "--name", "other", "--out-crt", "other.crt", "--out-key", "other.key"]);
    ok(p, COS, &["sign", "--name", "taken", "--ip", "100.64.0.9/16"]);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--ip", "100.65.0.1/16"],
            "Error: certificate contained an ip assignment outside the limitations of the signing ca: 100.65.0.1/16 (CA main allows 100.64.0.0/16)",
        ),
        (
            vec!["--ip", "100.64.0.3/8"],
            "Error: certificate contained an ip assignment outside the limitations of the signing ca: 100.64.0.3/8",
        ),
        (
            vec!["--ip", "100.64.0.3/16", "--groups", "nomad-client,foo"],
            "Error: certificate contained a group not present on the signing ca: \"foo\" (CA main allows nomad-server,nomad-client)",
        ),
        (
            vec!["--ip", "100.64.0.3/16", "--duration", "2000h"],
            "Error: certificate expires after signing certificate: n ends",
        ),
        (
            vec!["--ip", "100.64.0.3/16", "--ca-key", "other.key"],
            "Error: CA key other.key does not match CA certificate ca.crt",
        ),
        (
            vec!["--ip", "100.64.0.3/16", "--out-crt", "taken.crt"],
            "Error: refusing to overwrite existing certificate: taken.crt",
        ),
        (
            vec!["--ip", "100.64.0.3/16", "--out-key", "taken.key"],
            "Error: refusing to overwrite existing private key: taken.key",
        ),
        (vec!["--ip", "100.64.0.3/16", "--ca-crt", "taken.crt"], "Error: taken.crt is not a CA certificate"),
    ];
    for (args, want) in cases {
        let mut all = vec!["sign", "--name", "n"];
        all.extend(args.iter().copied());
        let err = fails(p, COS, &all);
        assert!(err.starts_with(want), "{args:?}: got {err:?}, want prefix {want:?}");
        // A refused signing writes nothing.
        assert!(!p.join("n.crt").exists() && !p.join("n.key").exists(), "{args:?} left files behind");
    }
    // A v2 CA (the default) constrains IPv6 networks too; a v1 certificate cannot carry them.
    let err = fails(p, COS, &["sign", "--name", "n", "--networks", "100.64.0.3/16,fd00::3/64"]);
    assert!(
        err.starts_with(
            "Error: certificate contained an ip assignment outside the limitations of the signing ca: fd00::3/64"
        ),
        "{err}"
    );
    let err = fails(p, COS, &["sign", "--name", "n", "--ip", "fd00::1/64", "--version", "1"]);
    assert!(err.contains("a v1 certificate carries IPv4 networks only"), "{err}");
    // Usage errors exit 2 and name the flag.
    let out = run(p, COS, &["sign", "--name", "n", "--ip", "100.64.0.3/16", "--version", "3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected 1 or 2"));
    let out = run(p, COS, &["ca", "--name", "x", "--duration", "10 years"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid duration \"10 years\""));
    // ca refuses to overwrite, leaving the existing CA untouched.
    let before = fs::read(p.join("ca.key")).unwrap();
    assert!(
        fails(p, COS, &["ca", "--name", "again"]).starts_with("Error: refusing to overwrite existing CA key: ca.key")
    );
    assert_eq!(fs::read(p.join("ca.key")).unwrap(), before);
}

#[test]
fn secrets_are_never_printed() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let ca = run(p, COS, &["ca", "--name", "x"]);
    let sign = run(p, COS, &["sign", "--name", "h", "--ip", "100.64.0.1/10"]);
    let key_b64 = |f: &str| fs::read_to_string(p.join(f)).unwrap().lines().nth(1).unwrap().to_string();
    for out in [&ca, &sign] {
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        for k in ["ca.key", "h.key"] {
            assert!(!all.contains(&key_b64(k)[..20]), "output leaks {k}");
        }
    }
    let err = fails(p, COS, &["print", "h.key"]);
    assert!(err.contains("is a private key; print shows certificates only"), "{err}");
    assert!(!err.contains(&key_b64("h.key")[..20]));
}

#[test]
fn reference_vector_reads_the_same_in_both_tools() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // Made by nebula-cert 1.6.1; tests/vectors/README.md says how.
    let vector = include_str!("vectors/v1-nebula-cert-1.6.1.pem");
    fs::write(p.join("vector.pem"), vector).unwrap();
    let theirs = json_lines(&ok(p, "nebula-cert", &["print", "-json", "-path", "vector.pem"]));
    let ours = json_lines(&ok(p, COS, &["print", "--json", "vector.pem"]));
    assert_eq!(ours.len(), 2);
    assert_eq!(ours, theirs);
    assert_eq!(ours[1]["fingerprint"], "d6ef0cda8a695039af87f9e69f07c56e3f3a7939e0fa06b26a5e78c97b2e16d8");
}

/// nebula-cert 1.10's CLI: a v2 CA by default, dual-stack networks, `sign` following the CA's
/// version or told otherwise, `print --json` in 1.10's shape, `verify` for both versions.
#[test]
fn v2_certificates_from_the_cli() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    ok(
        p,
        COS,
        &[
            "ca",
            "--name",
            "v2 CA",
            "--networks",
            "100.64.0.0/10,fd00::/16",
            "--unsafe-networks",
            "10.0.0.0/8,fd10::/16",
            "--groups",
            "ops,web",
        ],
    );
    ok(
        p,
        COS,
        &[
            "sign",
            "--name",
            "dual",
            "--networks",
            "fd00::7/64,100.64.0.7/10",
            "--unsafe-networks",
            "10.7.0.0/16,fd10:7::/32",
            "--groups",
            "ops",
        ],
    );
    ok(p, COS, &["sign", "--name", "old", "--ip", "100.64.0.8/10", "--subnets", "10.8.1.2/24", "--version", "1"]);
    ok(p, COS, &["verify", "--ca", "ca.crt", "--crt", "dual.crt"]);
    ok(p, COS, &["verify", "--ca", "ca.crt", "--crt", "old.crt"]);
    let ca = &json_lines(&ok(p, COS, &["print", "--json", "ca.crt"]))[0];
    let dual = &json_lines(&ok(p, COS, &["print", "--json", "dual.crt"]))[0];
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(dual), ["curve", "details", "fingerprint", "publicKey", "signature", "version"]);
    assert_eq!(
        keys(&dual["details"]),
        ["groups", "isCa", "issuer", "name", "networks", "notAfter", "notBefore", "unsafeNetworks"]
    );
    assert_eq!(dual["version"], 2);
    assert_eq!(dual["curve"], "CURVE25519");
    assert_eq!(
        dual["details"]["networks"],
        serde_json::json!(["100.64.0.7/10", "fd00::7/64"]),
        "sorted as Nebula sorts"
    );
    assert_eq!(dual["details"]["unsafeNetworks"], serde_json::json!(["10.7.0.0/16", "fd10:7::/32"]));
    assert_eq!(dual["details"]["issuer"], ca["fingerprint"]);
    assert_eq!(ca["details"]["isCa"], true);
    assert!(fs::read_to_string(p.join("dual.crt")).unwrap().starts_with("-----BEGIN NEBULA CERTIFICATE V2-----\n"));
    // --version 1 under a v2 CA: a v1 certificate (Nebula's migration path), 1.6.1's JSON shape.
    let old = &json_lines(&ok(p, COS, &["print", "--json", "old.crt"]))[0];
    assert_eq!(old["details"]["ips"], serde_json::json!(["100.64.0.8/10"]));
    assert_eq!(old["details"]["subnets"], serde_json::json!(["10.8.1.0/24"]));
    assert_eq!(old["details"]["issuer"], ca["fingerprint"]);
    let text = ok(p, COS, &["print", "old.crt"]);
    assert!(text.starts_with("NebulaCertificate {"), "{text}");
    // Text print of v2 is the JSON object indented with tabs, as nebula-cert 1.10 prints it.
    let text = ok(p, COS, &["print", "dual.crt"]);
    assert!(text.starts_with("{\n\t\"curve\": \"CURVE25519\",\n"), "{text}");
    // A v1 CA's bundle mixed with the v2 CA and an unusable block: the good ones are used, the
    // bad one named; the certificates of both CAs verify.
    ok(p, COS, &["ca", "--version", "1", "--name", "v1 CA", "--out-crt", "v1.crt", "--out-key", "v1.key"]);
    ok(p, COS, &["sign", "--name", "legacy", "--ip", "100.64.0.9/10", "--ca-crt", "v1.crt", "--ca-key", "v1.key"]);
    let p256 = include_str!("vectors/v2-mobile-nebula-p256-ca.pem");
    let bundle = [
        fs::read_to_string(p.join("v1.crt")).unwrap(),
        p256.to_string(),
        fs::read_to_string(p.join("ca.crt")).unwrap(),
    ]
    .concat();
    fs::write(p.join("bundle.crt"), bundle).unwrap();
    for crt in ["legacy.crt", "dual.crt", "old.crt"] {
        let out = run(p, COS, &["verify", "--ca", "bundle.crt", "--crt", crt]);
        assert!(out.status.success(), "{crt}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(
                "warning: bundle.crt: block at line 6 (NEBULA CERTIFICATE V2) skipped: certificate \"test\" uses P-256"
            ),
            "{err}"
        );
    }
    // nebula-cert 1.6.1 reads the v1 certificate of the v1 CA, and not a v2 one.
    ok(p, "nebula-cert", &["verify", "-ca", "v1.crt", "-crt", "legacy.crt"]);
    fails(p, "nebula-cert", &["verify", "-ca", "ca.crt", "-crt", "dual.crt"]);
    // What a v1 certificate cannot carry is refused before anything is written.
    let refusals: [(&[&str], &str); 3] = [
        (
            &[
                "ca",
                "--version",
                "1",
                "--name",
                "x",
                "--networks",
                "fd00::/8",
                "--out-crt",
                "x.crt",
                "--out-key",
                "x.key",
            ],
            "Error: --networks fd00::/8: a v1 certificate carries IPv4 networks only (use --version 2)",
        ),
        (
            &["sign", "--name", "two", "--version", "1", "--networks", "100.64.0.20/10,100.64.0.21/10"],
            "Error: --networks: a v1 certificate carries exactly one IPv4 network, got 2",
        ),
        (
            &["sign", "--name", "six", "--version", "1", "--ip", "100.64.0.22/10", "--unsafe-networks", "fd10::/32"],
            "Error: --unsafe-networks fd10::/32: a v1 certificate carries IPv4 networks only",
        ),
    ];
    for (args, want) in refusals {
        let err = fails(p, COS, args);
        assert!(err.starts_with(want), "{args:?}: {err}");
    }
    for f in ["x.crt", "x.key", "two.crt", "two.key", "six.crt", "six.key"] {
        assert!(!p.join(f).exists(), "{f} written by a refused command");
    }
    // Blocklisting works by the v2 fingerprint.
    let fp = dual["fingerprint"].as_str().unwrap();
    let err = fails(p, COS, &["verify", "--ca", "ca.crt", "--crt", "dual.crt", "--blocklist", fp]);
    assert!(err.starts_with(&format!("Error: certificate has been blocked: dual ({fp})")), "{err}");
}

/// v2 certificates made by Nebula (tests/vectors/README.md): read byte for byte, the fingerprint
/// Nebula computed (the host's issuer field) reproduced, P-256 refused with the reason.
#[test]
fn nebula_made_v2_certificates_read_the_same() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");
    let ca = &json_lines(&ok(p, COS, &["print", "--json", &format!("{dir}/v2-mobile-nebula-ca.pem")]))[0];
    let host = &json_lines(&ok(p, COS, &["print", "--json", &format!("{dir}/v2-mobile-nebula-host.pem")]))[0];
    assert_eq!(ca["fingerprint"], "6a70074d4bd0732b5ec1906c7e488086bb88b90828274bd2a512b5f348a9810b");
    assert_eq!(host["details"]["issuer"], ca["fingerprint"]);
    assert_eq!(host["details"]["name"], "V2 Test Host");
    assert_eq!(
        host["details"]["networks"],
        serde_json::json!([
            "10.1.0.2/16",
            "192.168.1.2/24",
            "fd98::2/64",
            "fd99:eeee:eeee:eeee:aaaa:bbbb:cccc:fff2/64"
        ])
    );
    assert_eq!(host["details"]["groups"], serde_json::json!(["test-group1", "test-group2", "foobarbaz"]));
    // The fixture's CA expired on 2026-10-31: verify says so, in Nebula's words.
    let args = [
        "verify",
        "--ca",
        &format!("{dir}/v2-mobile-nebula-ca.pem"),
        "--crt",
        &format!("{dir}/v2-mobile-nebula-host.pem"),
    ];
    if UnixTime::now().seconds() > 1_793_476_154 {
        assert!(fails(p, COS, &args).starts_with("Error: root certificate is expired: CA V2 Test CA expired at"));
    }
    let err = fails(p, COS, &["print", &format!("{dir}/v2-mobile-nebula-p256-host.pem")]);
    assert!(
        err.contains("uses P-256; cos-mesh supports Curve25519 certificates only") && err.contains("boringtun"),
        "{err}"
    );
}

/// What a node start checks (`cos-mesh check`): `pki.cert` with a v1 and a v2 certificate for
/// one key and `pki.initiating_version` choosing, a CA bundle with an unusable block (a warning
/// naming it), and an IPv6-only certificate taken (its identity is its IPv6 network).
#[test]
fn check_takes_v1_and_v2_host_certificates_and_a_mixed_bundle() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    ok(p, COS, &["ca", "--name", "v2 CA", "--networks", "100.64.0.0/10,fd00::/16"]);
    ok(p, COS, &["keygen", "--out-key", "h.key", "--out-pub", "h.pub"]);
    let sign = |extra: &[&str]| {
        let mut args = vec!["sign", "--name", "h", "--in-pub", "h.pub"];
        args.extend_from_slice(extra);
        ok(p, COS, &args);
    };
    sign(&["--version", "1", "--ip", "100.64.0.11/10", "--out-crt", "h1.crt"]);
    sign(&["--networks", "100.64.0.11/10,fd00::11/64", "--out-crt", "h2.crt"]);
    sign(&["--networks", "fd00::12/64", "--out-crt", "six.crt"]);
    let read = |f: &str| fs::read_to_string(p.join(f)).unwrap();
    fs::write(p.join("both.crt"), read("h1.crt") + &read("h2.crt")).unwrap();
    fs::write(p.join("bundle.crt"), read("ca.crt") + include_str!("vectors/v2-mobile-nebula-p256-ca.pem")).unwrap();
    let check = |cert: &str, extra: &str| {
        let text = format!("pki:\n  ca: bundle.crt\n  cert: {cert}\n  key: h.key\n{extra}tun:\n  disabled: true\n");
        fs::write(p.join("config.yml"), text).unwrap();
        run(p, COS, &["check", "-c", "config.yml"])
    };
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    for extra in ["", "  initiating_version: 2\n", "  initiating_version: 1\n"] {
        let out = check("both.crt", extra);
        let err = stderr(&out);
        assert!(out.status.success(), "{extra}: {err}");
        assert!(err.contains("OK: node h (100.64.0.11/10)"), "{err}");
        let line = read("ca.crt").lines().count() + 1;
        let skipped =
            format!("pki.ca: block at line {line} (NEBULA CERTIFICATE V2) skipped: certificate \"test\" uses P-256");
        assert!(err.contains(&skipped), "{err}");
    }
    let out = check("both.crt", "  initiating_version: 3\n");
    assert!(stderr(&out).contains("pki.initiating_version: is 3, expected 1 or 2"), "{}", stderr(&out));
    let out = check("six.crt", "");
    assert!(out.status.success() && stderr(&out).contains("OK: node h (fd00::12/64)"), "{}", stderr(&out));
    let out = check("h2.crt", "  initiating_version: 1\n");
    assert!(stderr(&out).contains("pki.initiating_version is 1 but there is no v1 certificate"), "{}", stderr(&out));
}
