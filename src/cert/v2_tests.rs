//! v2 codec and rules: Nebula's own vectors, Nebula-made fixtures, and every refusal.

use ed25519_dalek::SigningKey;
use ipnet::IpNet;

use super::super::der_v2::{RawCertificate, RawDetails, decode_details, encode_certificate, encode_details};
use super::super::keys::{CaSecret, HostSecret};
use super::super::pool::{Blocklist, CaPool, VerifyError};
use super::*;
use crate::cert::{Details, armor};

const FIX_CA: &str = include_str!("../../tests/vectors/v2-mobile-nebula-ca.pem");
const FIX_HOST: &str = include_str!("../../tests/vectors/v2-mobile-nebula-host.pem");
const FIX_HOST_KEY: &str = include_str!("../../tests/vectors/v2-mobile-nebula-host-key.pem");
const FIX_P256_CA: &str = include_str!("../../tests/vectors/v2-mobile-nebula-p256-ca.pem");
const FIX_P256_HOST: &str = include_str!("../../tests/vectors/v2-mobile-nebula-p256-host.pem");
const SNAP_CA: &str = include_str!("../../tests/vectors/v2-recovery-snapshot-ca.pem");
const SNAP_KEY: &str = include_str!("../../tests/vectors/v2-recovery-snapshot-ca-key.pem");
const SNAP2_CA: &str = include_str!("../../tests/vectors/v2-recovery-transplanted-ca.pem");
const SNAP2_KEY: &str = include_str!("../../tests/vectors/v2-recovery-transplanted-ca-key.pem");

/// Inside the mobile_nebula fixtures' validity (2025-10-31 .. 2026-10-31).
const FIX_NOW: UnixTime = UnixTime(1_780_000_000);

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// `cert/cert_v2_test.go` `TestCertificateV2_marshalForSigningStability`: Nebula's expected bytes
/// for a Details element (networks deliberately unsorted: Marshal writes them as given).
#[test]
fn nebula_marshal_stability_vector() {
    let d = RawDetails {
        name: "testing".into(),
        networks: nets(&["10.1.1.2/16", "10.1.1.1/24"]),
        unsafe_networks: nets(&["9.1.1.3/16", "9.1.1.2/24"]),
        groups: vec!["test-group1".into(), "test-group2".into(), "test-group3".into()],
        is_ca: false,
        not_before: 831_254_400, // 1996-05-05T00:00:00Z
        not_after: 831_254_460,
        issuer: Some(hex::decode("1234567890abcdef1234567890abcdef").unwrap()),
    };
    let want = "a070800774657374696e67a10e04050a0101021004050a01010118a20e0405090101031004050901010218a3270c0b746573742d67726f7570310c0b746573742d67726f7570320c0b746573742d67726f7570338504318bef808604318befbc87101234567890abcdef1234567890abcdef";
    let got = encode_details(&d).unwrap();
    assert_eq!(hex::encode(&got), want);
    assert_eq!(decode_details(&got).unwrap(), d);
    let signed = signed_bytes(&got, 0, b"1234567890abcedfghij1234567890ab");
    assert_eq!(
        hex::encode(signed),
        format!("{want}00313233343536373839306162636564666768696a313233343536373839306162")
    );
}

/// `TestCertificateV2_MarshalJSON`: the fingerprint Nebula computes over Details ‖ curve ‖ key ‖
/// signature, with times before year 1 (negative integers).
#[test]
fn nebula_fingerprint_vector() {
    let d = RawDetails {
        name: "testing".into(),
        networks: nets(&["10.1.1.1/24", "10.1.1.2/16"]),
        unsafe_networks: nets(&["9.1.1.2/24", "9.1.1.3/16"]),
        groups: vec!["test-group1".into(), "test-group2".into(), "test-group3".into()],
        is_ca: false,
        not_before: -62_138_358_000, // 0000-11-30T01:00:00Z
        not_after: -62_138_354_400,
        issuer: Some(hex::decode("1234567890abcedf1234567890abcedf").unwrap()),
    };
    let details = encode_details(&d).unwrap();
    assert_eq!(decode_details(&details).unwrap(), d);
    let (pk, sig) = (b"1234567890abcedf1234567890abcedf", [b"1234567890abcedf".as_slice(); 4].concat());
    let mut all = signed_bytes(&details, 0, pk);
    all.extend_from_slice(&sig);
    assert_eq!(Fingerprint::of(&all).to_string(), "152d9a7400c1e001cb76cffd035215ebb351f69eeb797f7f847dd086e15e56dd");
}

#[test]
fn mobile_nebula_fixtures_parse_verify_and_print_like_nebula() {
    let ca = Certificate::from_pem(FIX_CA.as_bytes()).unwrap();
    let host = Certificate::from_pem(FIX_HOST.as_bytes()).unwrap();
    // Byte for byte: re-armouring gives back the fixture text.
    assert_eq!(ca.to_pem(), FIX_CA);
    assert_eq!(host.to_pem(), FIX_HOST);
    assert_eq!(ca.version(), Version::V2);
    // The host names its CA by the fingerprint Nebula computed when it signed it.
    let ca_fp = "6a70074d4bd0732b5ec1906c7e488086bb88b90828274bd2a512b5f348a9810b";
    assert_eq!(ca.fingerprint().to_string(), ca_fp);
    assert_eq!(host.issuer(), Some(ca.fingerprint()));
    assert_eq!(host.fingerprint().to_string(), "383611bf9945e6a430addf536b7beca73ef7c7d584d9d1fcb575620a27e20f74");
    assert_eq!(
        host.networks(),
        nets(&["10.1.0.2/16", "192.168.1.2/24", "fd98::2/64", "fd99:eeee:eeee:eeee:aaaa:bbbb:cccc:fff2/64"])
    );
    assert_eq!(host.unsafe_networks(), nets(&["0.0.0.0/0", "::/0"]));
    assert_eq!(host.groups(), ["test-group1", "test-group2", "foobarbaz"]);
    // The IPv4 view the data path uses.
    assert_eq!(host.vpn_ip(), Some("10.1.0.2".parse().unwrap()));
    assert_eq!(host.details().ips, vec!["10.1.0.2/16".parse().unwrap(), "192.168.1.2/24".parse().unwrap()]);
    assert_eq!(host.details().subnets, vec!["0.0.0.0/0".parse().unwrap()]);
    let key = HostSecret::from_pem(FIX_HOST_KEY.as_bytes()).unwrap();
    assert_eq!(&key.public().0, host.public_key());

    let pool = CaPool::from_pem(FIX_CA.as_bytes()).unwrap();
    let v = pool.verify(&host, FIX_NOW, &Blocklist::default()).unwrap();
    assert_eq!(v.ca_fingerprint(), ca.fingerprint());
    assert!(matches!(
        pool.verify(&host, UnixTime(1_793_476_155), &Blocklist::default()),
        Err(VerifyError::CaExpired { .. })
    ));
    let mut bl = Blocklist::default();
    bl.insert(host.fingerprint());
    assert!(matches!(pool.verify(&host, FIX_NOW, &bl), Err(VerifyError::Blocklisted { .. })));

    let j = host.to_json();
    assert_eq!(j["version"], 2);
    assert_eq!(j["curve"], "CURVE25519");
    assert_eq!(j["details"]["name"], "V2 Test Host");
    assert_eq!(j["details"]["issuer"], ca_fp);
    assert_eq!(j["details"]["unsafeNetworks"], serde_json::json!(["0.0.0.0/0", "::/0"]));
    assert_eq!(j["details"]["notBefore"], "2025-10-31T19:49:24Z");
    assert_eq!(j["publicKey"], hex::encode(host.public_key()));
    // A CA has no issuer and no unsafe networks: Nebula prints "" and null.
    assert_eq!(ca.to_json()["details"]["issuer"], "");
    assert_eq!(ca.to_json()["details"]["unsafeNetworks"], serde_json::Value::Null);
    assert!(host.to_text().starts_with("{\n\t\"curve\": \"CURVE25519\",\n\t\"details\": {\n"));
}

#[test]
fn p256_certificates_are_decoded_then_refused_with_the_reason() {
    for (pem, name) in [(FIX_P256_CA, "test"), (FIX_P256_HOST, "test")] {
        let err = Certificate::from_pem(pem.as_bytes()).unwrap_err();
        assert_eq!(err, ParseError::UnsupportedCurve { name: name.into(), curve: "P-256" });
        assert!(err.to_string().contains("boringtun"), "{err}");
    }
}

/// A v2 CA that Nebula signed, re-signed here from its own details and key, gives the same bytes
/// (Ed25519 is deterministic), so our encoder writes exactly what Nebula writes.
#[test]
fn our_encoder_reproduces_nebula_signed_cas() {
    for (pem, key) in [(SNAP_CA, SNAP_KEY), (SNAP2_CA, SNAP2_KEY)] {
        let theirs = Certificate::from_pem(pem.as_bytes()).unwrap();
        let key = CaSecret::from_pem(key.as_bytes()).unwrap();
        assert_eq!(&key.public(), theirs.public_key());
        let ours = Certificate::sign_tbs(theirs.tbs(), key.signing_key()).unwrap();
        assert_eq!(ours.to_bytes(), theirs.to_bytes());
        assert_eq!(ours.to_pem(), pem);
        assert_eq!(ours.fingerprint(), theirs.fingerprint());
    }
    let snap = Certificate::from_pem(SNAP_CA.as_bytes()).unwrap();
    assert_eq!(snap.networks(), nets(&["10.111.0.0/24"]));
    assert_eq!(snap.fingerprint().to_string(), "17ebb8874a5d89e416aee2d29697e48e6a5902988abc204b57cd8f73640c91c4");
}

/// A v2 certificate whose DER is forged field by field, signed for real, so that parsing gets
/// past the signature-independent checks to the rule under test.
fn forge(d: &RawDetails, key: &SigningKey, pk: &[u8]) -> Vec<u8> {
    let details = encode_details(d).unwrap();
    let sig = ed25519_dalek::Signer::sign(key, &signed_bytes(&details, 0, pk)).to_bytes();
    encode_certificate(&RawCertificate { details: &details, curve: 0, public_key: pk, signature: &sig }).unwrap()
}

fn host_details() -> RawDetails {
    RawDetails {
        name: "h".into(),
        networks: nets(&["100.64.0.1/10", "fd00::1/64"]),
        unsafe_networks: nets(&["10.0.0.0/8", "fd10::/64"]),
        groups: vec!["a".into()],
        is_ca: false,
        not_before: 1_000,
        not_after: 9_000,
        issuer: Some(vec![7; 32]),
    }
}

#[test]
fn every_validation_rule_refuses_with_its_reason() {
    let key = SigningKey::from_bytes(&[9; 32]);
    let pk = [5u8; 32];
    type Edit = fn(&mut RawDetails);
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("valid", |_| {}, ""),
        ("host without network", |d| d.networks.clear(), "needs at least one network"),
        ("zero address", |d| d.networks = nets(&["0.0.0.0/8"]), "zero address"),
        ("4in6", |d| d.networks = nets(&["100.64.0.1/10", "::ffff:100.64.0.2/120"]), "4in6"),
        ("unsorted networks", |d| d.networks = nets(&["fd00::1/64", "100.64.0.1/10"]), "are not sorted"),
        ("same address, wider prefix second", |d| d.networks = nets(&["100.64.0.1/24", "100.64.0.1/10"]), "not sorted"),
        ("duplicate network", |d| d.networks = nets(&["100.64.0.1/10", "100.64.0.1/10"]), "twice"),
        ("unsorted unsafe networks", |d| d.unsafe_networks = nets(&["10.0.0.0/8", "9.0.0.0/8"]), "not sorted"),
        (
            "v6 unsafe without v6 network",
            |d| d.networks = nets(&["100.64.0.1/10"]),
            "IPv6 unsafe networks need an IPv6",
        ),
        ("v4 unsafe without v4 network", |d| d.networks = nets(&["fd00::1/64"]), "IPv4 unsafe networks need an IPv4"),
        ("empty name", |d| d.name.clear(), "expected 1 to 253"),
        ("name too long", |d| d.name = "n".repeat(254), "expected 1 to 253"),
        ("empty group", |d| d.groups = vec![String::new()], "empty group"),
        ("short issuer", |d| d.issuer = Some(vec![1; 16]), "32-byte fingerprint"),
    ];
    for (what, edit, want) in cases {
        let mut d = host_details();
        edit(&mut d);
        let r = Certificate::from_bytes(&forge(&d, &key, &pk));
        match (want, r) {
            ("", Ok(c)) => assert_eq!(c.name(), "h"),
            ("", Err(e)) => panic!("{what}: {e}"),
            (want, Ok(_)) => panic!("{what}: accepted, want {want:?}"),
            (want, Err(e)) => assert!(e.to_string().contains(want), "{what}: got {e}, want {want:?}"),
        }
    }
    // A CA may have no networks, and its unsafe networks need none of the family.
    let mut ca = host_details();
    (ca.is_ca, ca.issuer, ca.networks) = (true, None, vec![]);
    assert!(Certificate::from_bytes(&forge(&ca, &key, &pk)).is_ok());
    // Key and signature lengths.
    let details = encode_details(&host_details()).unwrap();
    for (pk, sig, want) in
        [(&[1u8; 31][..], &[0u8; 64][..], "public key"), (&[1u8; 32][..], &[0u8; 63][..], "signature")]
    {
        let b = encode_certificate(&RawCertificate { details: &details, curve: 0, public_key: pk, signature: sig })
            .unwrap();
        assert!(Certificate::from_bytes(&b).unwrap_err().to_string().contains(want), "{want}");
    }
    let big = vec![0x30; MAX_V2_BYTES + 1];
    assert_eq!(Certificate::from_bytes(&big).unwrap_err(), ParseError::TooLarge(MAX_V2_BYTES + 1));
}

/// Replaces the first occurrence of `from` in `bytes` (a test's way to hand-edit DER).
fn patch(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes.windows(from.len()).position(|w| w == from).expect("pattern present");
    [&bytes[..at], to, &bytes[at + from.len()..]].concat()
}

#[test]
fn non_canonical_encodings_are_refused() {
    let host = Certificate::from_pem(FIX_HOST.as_bytes()).unwrap();
    let good = host.to_bytes().to_vec();
    let d = der_v2::decode_certificate(&good).unwrap();
    let rebuild = |details: &[u8], curve: Option<u8>| {
        let mut body = details.to_vec();
        if let Some(c) = curve {
            body.extend_from_slice(&[0x81, 1, c]);
        }
        body.extend_from_slice(&[0x82, 32]);
        body.extend_from_slice(d.public_key);
        body.extend_from_slice(&[0x83, 64]);
        body.extend_from_slice(d.signature);
        let mut out = vec![0x30, 0x82];
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
        out
    };
    let wrap = |body: Vec<u8>| rebuild(&[&[0xa0, 0x81, body.len() as u8][..], &body].concat(), None);
    let body = &d.details[3..];
    assert_eq!(wrap(body.to_vec()), good, "the hand builder matches");
    let mut trailing = good.clone();
    trailing.push(0);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("curve 0 written out", rebuild(d.details, Some(0)), "not canonically encoded"),
        ("long-form length of a short name", wrap(patch(body, &[0x80, 0x0c], &[0x80, 0x81, 0x0c])), "v2 (DER)"),
        ("integer with a leading zero", wrap(patch(body, &[0x85, 0x04, 0x69], &[0x85, 0x05, 0x00, 0x69])), "v2 (DER)"),
        (
            "is-CA false written out",
            wrap(patch(body, &[0x85, 0x04], &[0x84, 0x01, 0x00, 0x85, 0x04])),
            "not canonically",
        ),
        ("is-CA as 0x01", wrap(patch(body, &[0x85, 0x04], &[0x84, 0x01, 0x01, 0x85, 0x04])), "v2 (DER)"),
        (
            "a field Nebula 1.11 does not write",
            wrap([body, &[0x88, 0x01, 0x00]].concat()),
            "after its last known field",
        ),
        ("fields out of order", wrap(patch(body, &[0x80, 0x0c], &[0x80, 0x0c])), ""),
        ("bytes after the certificate", trailing, "after its last known field"),
    ];
    for (what, bytes, want) in cases {
        match Certificate::from_bytes(&bytes) {
            Ok(_) if want.is_empty() => {}
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => assert!(!want.is_empty() && e.to_string().contains(want), "{what}: {e}"),
        }
    }
    // Groups moved in front of the networks: out of order, refused.
    let moved = {
        let g = body.windows(2).position(|w| w == [0xa3, 0x25]).unwrap();
        let groups = &body[g..g + 2 + 0x25];
        let n = body.windows(2).position(|w| w == [0xa1, 0x34]).unwrap();
        [&body[..n], groups, &body[n..g], &body[g + 2 + 0x25..]].concat()
    };
    assert!(Certificate::from_bytes(&wrap(moved)).is_err());
    // A changed field that still encodes canonically is caught by the signature, not the parser.
    let renamed = patch(&good, b"V2 Test Host", b"V2 Test Hose");
    let pool = CaPool::from_pem(FIX_CA.as_bytes()).unwrap();
    let c = Certificate::from_bytes(&renamed).unwrap();
    assert!(matches!(pool.verify(&c, FIX_NOW, &Blocklist::default()), Err(VerifyError::BadSignature { .. })));
}

#[test]
fn truncations_and_bit_flips_never_panic() {
    let host = Certificate::from_pem(FIX_HOST.as_bytes()).unwrap();
    let bytes = host.to_bytes();
    for len in 0..bytes.len() {
        assert!(Certificate::from_bytes(&bytes[..len]).is_err(), "prefix of {len} bytes");
    }
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.to_vec();
            b[i] ^= 1 << bit;
            if let Ok(c) = Certificate::from_bytes(&b) {
                // Whatever still parses is canonical: it re-encodes to the same bytes.
                assert_eq!(c.to_bytes(), &b[..]);
            }
        }
    }
}

struct V2Ca {
    key: CaSecret,
    cert: Certificate,
}

impl V2Ca {
    fn new(networks: &[&str], unsafe_networks: &[&str], groups: &[&str]) -> Self {
        let key = CaSecret::generate();
        let tbs = Tbs {
            version: Version::V2,
            name: "v2 ca".into(),
            networks: nets(networks),
            unsafe_networks: nets(unsafe_networks),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            not_before: UnixTime(1_000),
            not_after: UnixTime(10_000),
            public_key: key.public(),
            is_ca: true,
            issuer: None,
        };
        let cert = Certificate::sign_tbs(&tbs, key.signing_key()).unwrap();
        V2Ca { key, cert }
    }

    fn host(&self, version: Version, networks: &[&str], unsafe_networks: &[&str]) -> Tbs {
        Tbs {
            version,
            name: "host".into(),
            networks: nets(networks),
            unsafe_networks: nets(unsafe_networks),
            groups: vec!["ops".into()],
            not_before: UnixTime(2_000),
            not_after: UnixTime(9_000),
            public_key: HostSecret::generate().public().0,
            is_ca: false,
            issuer: Some(self.cert.fingerprint()),
        }
    }
}

#[test]
fn ca_constraints_cover_ipv6_and_both_versions() {
    let ca = V2Ca::new(&["100.64.0.0/10", "fd00::/16"], &["10.0.0.0/8", "fd10::/16"], &["ops"]);
    let pool = {
        let mut p = CaPool::default();
        p.add(ca.cert.clone()).unwrap();
        p
    };
    type Case<'a> = (&'a str, Version, &'a [&'a str], &'a [&'a str], bool);
    let cases: Vec<Case> = vec![
        ("dual stack inside", Version::V2, &["100.64.0.5/10", "fd00::5/64"], &["10.1.0.0/16", "fd10:1::/32"], true),
        ("v6 only", Version::V2, &["fd00::5/64"], &[], true),
        ("v6 outside", Version::V2, &["100.64.0.5/10", "fd01::5/64"], &[], false),
        ("v6 prefix wider than the CA's", Version::V2, &["100.64.0.5/10", "fd00::5/8"], &[], false),
        ("v6 unsafe outside", Version::V2, &["100.64.0.5/10", "fd00::5/64"], &["fd11::/32"], false),
        ("v1 host under a v2 CA", Version::V1, &["100.64.0.6/10"], &["10.2.0.0/16"], true),
        ("v1 host outside", Version::V1, &["100.128.0.6/10"], &[], false),
    ];
    for (what, version, networks, unsafe_networks, ok) in cases {
        let tbs = ca.host(version, networks, unsafe_networks);
        let cert = Certificate::sign_tbs(&tbs, ca.key.signing_key()).unwrap();
        assert_eq!(cert.version(), version, "{what}");
        let r = pool.verify(&cert, UnixTime(5_000), &Blocklist::default());
        assert_eq!(r.is_ok(), ok, "{what}: {r:?}");
    }
    // Groups and validity are constrained the same way.
    let mut t = ca.host(Version::V2, &["100.64.0.5/10"], &[]);
    t.groups = vec!["ops".into(), "web".into()];
    let c = Certificate::sign_tbs(&t, ca.key.signing_key()).unwrap();
    let r = pool.verify(&c, UnixTime(5_000), &Blocklist::default());
    assert!(matches!(&r, Err(VerifyError::GroupNotAllowed { group, .. }) if group == "web"), "{r:?}");
    for (nb, na) in [(999, 9_000), (2_000, 10_001)] {
        let mut t = ca.host(Version::V2, &["100.64.0.5/10"], &[]);
        (t.not_before, t.not_after) = (UnixTime(nb), UnixTime(na));
        let c = Certificate::sign_tbs(&t, ca.key.signing_key()).unwrap();
        let r = pool.verify(&c, UnixTime(5_000), &Blocklist::default());
        assert!(matches!(r, Err(VerifyError::PredatesCa { .. } | VerifyError::OutlivesCa { .. })), "{r:?}");
    }
    // A v1 certificate cannot carry IPv6.
    let tbs = ca.host(Version::V1, &["100.64.0.7/10", "fd00::7/64"], &[]);
    let err = Certificate::sign_tbs(&tbs, ca.key.signing_key()).unwrap_err();
    assert!(err.to_string().contains("IPv4 networks only"), "{err}");
    // Signing sorts, as Nebula does.
    let tbs = ca.host(Version::V2, &["fd00::9/64", "100.64.0.9/10"], &[]);
    let c = Certificate::sign_tbs(&tbs, ca.key.signing_key()).unwrap();
    assert_eq!(c.networks(), nets(&["100.64.0.9/10", "fd00::9/64"]));
}

#[test]
fn mixed_bundles_skip_unusable_blocks_and_name_them() {
    let v2 = V2Ca::new(&[], &[], &[]);
    let v1_key = CaSecret::generate();
    let v1 = Certificate::sign(
        &Details {
            name: "v1 ca".into(),
            ips: vec![],
            subnets: vec![],
            groups: vec![],
            not_before: UnixTime(1_000),
            not_after: UnixTime(10_000),
            public_key: v1_key.public(),
            is_ca: true,
            issuer: None,
        },
        v1_key.signing_key(),
    )
    .unwrap();
    let host = Certificate::sign_tbs(&v2.host(Version::V2, &["100.64.0.1/10"], &[]), v2.key.signing_key()).unwrap();
    let junk = armor::encode(armor::CERTIFICATE_V2, b"\x30\x03\x01\x01\xff");
    let bundle = format!("{}{}{}{}{}", v1.to_pem(), FIX_P256_CA, "\n", junk, v2.cert.to_pem()) + &host.to_pem();
    let (pool, skipped) = CaPool::load(bundle.as_bytes()).unwrap();
    assert_eq!(pool.len(), 2);
    assert!(pool.get(&v1.fingerprint()).is_some() && pool.get(&v2.cert.fingerprint()).is_some());
    let reasons: Vec<String> = skipped.iter().map(|s| s.to_string()).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    let p256_line = v1.to_pem().lines().count() + 1;
    let want = format!("block at line {p256_line} (NEBULA CERTIFICATE V2) skipped: ");
    assert!(reasons[0].starts_with(&want) && reasons[0].contains("P-256"), "{}", reasons[0]);
    assert!(reasons[1].contains("not a valid Nebula v2 (DER) encoding"), "{}", reasons[1]);
    assert!(reasons[2].contains("\"host\" is not a CA"), "{}", reasons[2]);
    // Nothing usable is an error that still says why each block was skipped.
    let err = CaPool::load(format!("{FIX_P256_CA}{junk}").as_bytes()).unwrap_err();
    assert!(err.to_string().starts_with("no usable CA certificate in the bundle: block at line 1"), "{err}");
}
