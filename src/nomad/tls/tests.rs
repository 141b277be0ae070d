//! Certificates read back with x509-parser: the names, addresses and usages Nomad checks, and
//! renewal decisions that change nothing on a second run.

use x509_parser::extensions::ParsedExtension;

use super::*;

const NOW: UnixTime = UnixTime(1_800_000_000);
const MONTH: Duration = Duration::from_secs(30 * DAY);

fn spec(kind: Kind) -> Spec {
    Spec { kind, region: "eu".into(), overlay_ip: "100.64.0.11".parse().unwrap() }
}

#[test]
fn server_certificate_has_nomads_names_usages_and_the_overlay_ip() {
    let ca = Ca::generate(NOW).unwrap();
    let key = new_key().unwrap();
    let pem = ca.issue(&spec(Kind::Server), &key, NOW, CERT_DAYS).unwrap();
    let der = pem_der(&pem, "t").unwrap();
    let (_, x) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(x.subject().iter_common_name().next().unwrap().as_str().unwrap(), "server.eu.nomad");
    let eku = x.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let ku = x.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    assert!(!x.is_ca());
    assert!(x.extensions().iter().any(|e| matches!(e.parsed_extension(), ParsedExtension::AuthorityKeyIdentifier(_))));
    let found = inspect(&pem, "t", &ca, &key).unwrap();
    assert_eq!(found.dns_names, ["server.eu.nomad", "localhost"]);
    assert_eq!(found.ips, ["127.0.0.1".parse::<IpAddr>().unwrap(), "100.64.0.11".parse().unwrap()]);
    assert!(found.signed_by_ca && found.key_matches);
    assert_eq!(found.not_after.seconds(), NOW.seconds() + (CERT_DAYS * DAY) as i64);
    let ca_x = X509Certificate::from_der(&ca.der).unwrap().1;
    assert!(ca_x.is_ca());
    assert_eq!(ca.not_after().unwrap().seconds(), NOW.seconds() + (CA_DAYS * DAY) as i64);
}

#[test]
fn cli_certificate_identifies_only() {
    let s = spec(Kind::Cli);
    assert_eq!((s.common_name().as_str(), s.file_stem().as_str()), ("cli.eu.nomad", "eu-cli-nomad"));
    assert!(s.ips().is_empty());
}

#[test]
fn kinds_follow_groups() {
    let g = |gs: &[&str]| Kind::for_groups(&gs.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(g(&["nomad-server", "nomad-client"]), [Kind::Server, Kind::Client, Kind::Cli]);
    assert_eq!(g(&["nomad-client"]), [Kind::Client, Kind::Cli]);
    assert_eq!(g(&["ops"]), [Kind::Cli]);
    assert_eq!(g(&["monitoring"]), [Kind::Cli]);
    assert!(g(&["lighthouse", "relay"]).is_empty());
}

#[test]
fn renewal_keeps_what_fits_and_replaces_what_does_not() {
    let ca = Ca::generate(NOW).unwrap();
    let key = new_key().unwrap();
    let pem = ca.issue(&spec(Kind::Client), &key, NOW, CERT_DAYS).unwrap();
    let found = inspect(&pem, "t", &ca, &key).unwrap();
    let end = ca.not_after().unwrap();
    assert_eq!(decide(&spec(Kind::Client), None, NOW, MONTH, end).0, Action::Issued);
    assert_eq!(decide(&spec(Kind::Client), Some(&found), NOW.add_secs(3600), MONTH, end).0, Action::Unchanged);

    let mut moved = spec(Kind::Client);
    moved.overlay_ip = "100.64.0.99".parse().unwrap();
    let (a, why) = decide(&moved, Some(&found), NOW, MONTH, end);
    assert_eq!(
        (a, why.join(";")),
        (Action::Renewed, "IP SANs [127.0.0.1,100.64.0.11] → [127.0.0.1,100.64.0.99]".into())
    );

    let mut other_region = spec(Kind::Client);
    other_region.region = "us".into();
    assert_eq!(decide(&other_region, Some(&found), NOW, MONTH, end).0, Action::Renewed);

    let late = NOW.plus(Duration::from_secs((CERT_DAYS - 10) * DAY));
    let (a, why) = decide(&spec(Kind::Client), Some(&found), late, MONTH, end);
    assert_eq!(a, Action::Renewed);
    assert!(why[0].starts_with("expires "), "{why:?}");

    let other_ca = Ca::generate(NOW).unwrap();
    let foreign = inspect(&pem, "t", &other_ca, &key).unwrap();
    let (a, why) = decide(&spec(Kind::Client), Some(&foreign), NOW, MONTH, end);
    assert_eq!((a, why[0].as_str()), (Action::Renewed, "not signed by this Nomad CA"));
    let other_key = new_key().unwrap();
    assert!(!inspect(&pem, "t", &ca, &other_key).unwrap().key_matches);
}

#[test]
fn a_certificate_ending_with_its_ca_is_not_resigned_in_a_loop() {
    let ca = Ca::generate(NOW).unwrap();
    let end = ca.not_after().unwrap();
    let key = new_key().unwrap();
    let near = end.add_secs(-(10 * DAY as i64));
    let pem = ca.issue(&spec(Kind::Server), &key, near, CERT_DAYS).unwrap();
    let found = inspect(&pem, "t", &ca, &key).unwrap();
    assert_eq!(found.not_after, end, "never past the CA");
    let (a, notes) = decide(&spec(Kind::Server), Some(&found), near.add_secs(60), MONTH, end);
    assert_eq!(a, Action::Unchanged);
    assert!(notes[1].contains("rotate the CA"), "{notes:?}");
}

#[test]
fn ca_load_checks_key_and_ca_flag() {
    let ca = Ca::generate(NOW).unwrap();
    assert!(Ca::load(&ca.cert_pem, &ca.key_pem()).is_ok());
    let other = Ca::generate(NOW).unwrap();
    assert!(matches!(Ca::load(&ca.cert_pem, &other.key_pem()), Err(TlsError::KeyMismatch)));
    let key = new_key().unwrap();
    let leaf = ca.issue(&spec(Kind::Server), &key, NOW, 1).unwrap();
    assert!(matches!(Ca::load(&leaf, &key.serialize_pem()), Err(TlsError::NotCa)));
    assert!(matches!(Ca::load("junk", &ca.key_pem()), Err(TlsError::Unreadable { .. })));
}

#[test]
fn an_expiring_ca_signs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let old = UnixTime(NOW.seconds() - (CA_DAYS * DAY) as i64 + 3600);
    let ca = Ca::generate(old).unwrap();
    std::fs::write(dir.path().join(CA_FILE), &ca.cert_pem).unwrap();
    std::fs::write(dir.path().join(CA_KEY_FILE), ca.key_pem()).unwrap();
    let inv = crate::inventory::Inventory::parse(
        "nodes:\n  - {name: s1, ip: 100.64.0.11/10, groups: [nomad-server]}\n",
        &dir.path().join("inv.yaml"),
    )
    .unwrap();
    let opts = issue::Options {
        out_dir: dir.path().to_path_buf(),
        region: "global".into(),
        renew_before: MONTH,
        days: CERT_DAYS,
        install_dir: "/t".into(),
    };
    let err = issue::run(&inv, &opts, NOW).unwrap_err().to_string();
    assert!(err.contains("expires") && err.contains("make a new CA"), "{err}");
    assert!(!dir.path().join("s1").exists(), "nothing written");
}
