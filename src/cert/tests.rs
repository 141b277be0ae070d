use super::keys::{CaSecret, HostSecret};
use super::pool::{Blocklist, CaPool, PoolError, VerifyError, check_constraints};
use super::*;

/// The v1 reference vector made by nebula-cert 1.6.1 (tests/vectors/README.md says how).
const VECTOR: &str = include_str!("../../tests/vectors/v1-nebula-cert-1.6.1.pem");

fn vector_block(i: usize) -> String {
    armor::decode_all(VECTOR.as_bytes()).map(|b| armor::encode(&b[i].label, &b[i].data)).unwrap()
}
const VECTOR_CA_FP: &str = "fcdcd83d5898ddb6cf315e3742e476d633cebc9319979dc72221d20d16a54a08";
const VECTOR_HOST_FP: &str = "d6ef0cda8a695039af87f9e69f07c56e3f3a7939e0fa06b26a5e78c97b2e16d8";
const VECTOR_NOW: UnixTime = UnixTime(1_800_000_000);

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

#[test]
fn reference_vector_decodes_to_documented_fields() {
    let ca = Certificate::from_pem(vector_block(0).as_bytes()).unwrap();
    let d = ca.details();
    assert_eq!(ca.to_bytes().len(), 178);
    assert_eq!(ca.fingerprint().to_string(), VECTOR_CA_FP);
    assert_eq!(d.name, "cos-mesh test CA");
    assert_eq!(d.ips, vec![net("10.42.0.0/16")]);
    assert_eq!(d.groups, ["nomad-server", "nomad-client", "ops"]);
    assert_eq!((d.not_before, d.not_after), (UnixTime(1_795_294_742), UnixTime(2_110_654_742)));
    assert!(d.is_ca && d.issuer.is_none() && d.subnets.is_empty());
    assert_eq!(hex::encode(&d.public_key[..3]), "424326");

    let host = Certificate::from_pem(vector_block(1).as_bytes()).unwrap();
    let h = host.details();
    assert_eq!(host.to_bytes().len(), 180);
    assert_eq!(host.fingerprint().to_string(), VECTOR_HOST_FP);
    assert_eq!(h.name, "node1");
    assert_eq!(h.ips, vec![net("10.42.0.11/16")]);
    assert_eq!(host.vpn_ip(), Some("10.42.0.11".parse().unwrap()));
    assert_eq!(h.groups, ["nomad-client"]);
    assert_eq!(h.not_after, UnixTime(2_110_654_741));
    assert_eq!(h.issuer, Some(ca.fingerprint()));
    assert!(!h.is_ca);
    // Re-armouring gives back the reference text byte for byte.
    assert_eq!(format!("{}{}", ca.to_pem(), host.to_pem()), VECTOR);
}

#[test]
fn reference_vector_prints_like_nebula_cert() {
    let host = Certificate::from_pem(vector_block(1).as_bytes()).unwrap();
    let j = host.to_json();
    assert_eq!(j["details"]["notBefore"], "2026-11-21T20:59:02Z");
    assert_eq!(j["details"]["notAfter"], "2036-11-18T20:59:01Z");
    assert_eq!(j["details"]["ips"], serde_json::json!(["10.42.0.11/16"]));
    assert_eq!(j["details"]["subnets"], serde_json::json!([]));
    assert_eq!(j["details"]["issuer"], VECTOR_CA_FP);
    assert_eq!(j["details"]["publicKey"], "b5eb6a8825a07d1b361519c791154d7cd402aaa654c1c845569b42264cfb1429");
    assert!(j["signature"].as_str().unwrap().starts_with("6c609e49"));
    let text = host.to_text();
    assert!(text.contains("\t\tName: node1\n") && text.contains(&format!("Fingerprint: {VECTOR_HOST_FP}")));
}

#[test]
fn reference_vector_verifies() {
    let pool = CaPool::from_pem(vector_block(0).as_bytes()).unwrap();
    let host = Certificate::from_pem(vector_block(1).as_bytes()).unwrap();
    let v = pool.verify(&host, VECTOR_NOW, &Blocklist::default()).unwrap();
    assert_eq!(v.ca_name(), "cos-mesh test CA");
    assert_eq!(v.ca_fingerprint().to_string(), VECTOR_CA_FP);
}

/// Builds outer protobuf bytes by hand so tests can make encodings prost would never produce.
fn outer(details: &[u8], sig: &[u8]) -> Vec<u8> {
    let mut v = vec![0x0a];
    push_varint(&mut v, details.len() as u64);
    v.extend_from_slice(details);
    v.push(0x12);
    push_varint(&mut v, sig.len() as u64);
    v.extend_from_slice(sig);
    v
}

fn push_varint(v: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        v.push((n as u8) | 0x80);
        n >>= 7;
    }
    v.push(n as u8);
}

#[test]
fn non_canonical_encodings_are_refused() {
    let host = Certificate::from_pem(vector_block(1).as_bytes()).unwrap();
    let canonical = host.to_bytes().to_vec();
    let details = host.signed.clone();
    let sig = host.signature().to_vec();
    assert_eq!(outer(&details, &sig), canonical, "hand encoder matches the canonical one");

    let mut with_unknown_field = canonical.clone();
    with_unknown_field.extend_from_slice(&[0x18, 0x01]); // field 3, varint 1
    let mut details_reordered = details.clone();
    // Move the name field (0a 05 "node1") to the end of Details.
    let name_field: Vec<u8> = details_reordered.drain(0..7).collect();
    details_reordered.extend_from_slice(&name_field);
    let mut overlong_varint = details.clone();
    // NotBefore `28 96 8c 88 d8 06` → `28 96 8c 88 d8 86 00`: the same value, one byte longer.
    let pos = overlong_varint.windows(6).position(|w| w == [0x28, 0x96, 0x8c, 0x88, 0xd8, 0x06]).unwrap();
    overlong_varint.splice(pos + 5..pos + 6, [0x86, 0x00]);
    let mut sig_first = vec![0x12, 0x40];
    sig_first.extend_from_slice(&sig);
    sig_first.extend_from_slice(&outer(&details, &[])[..]);
    sig_first.truncate(sig_first.len() - 2); // drop the empty signature field `12 00`

    for (what, bytes) in [
        ("unknown field", with_unknown_field),
        ("fields out of order", outer(&details_reordered, &sig)),
        ("overlong varint", outer(&overlong_varint, &sig)),
        ("signature before details", sig_first),
    ] {
        assert_eq!(Certificate::from_bytes(&bytes).unwrap_err(), ParseError::NotCanonical, "{what}");
    }
}

#[test]
fn garbage_and_truncation_never_panic() {
    let host = Certificate::from_pem(vector_block(1).as_bytes()).unwrap();
    let bytes = host.to_bytes();
    for len in 0..bytes.len() {
        assert!(Certificate::from_bytes(&bytes[..len]).is_err(), "prefix of {len} bytes");
    }
    // A cheap deterministic fuzz: flip bytes and feed random buffers.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let mut b = bytes.to_vec();
        let i = (next() as usize) % b.len();
        b[i] ^= (next() as u8) | 1;
        let _ = Certificate::from_bytes(&b);
        let random: Vec<u8> = (0..(next() % 300)).map(|_| next() as u8).collect();
        let _ = Certificate::from_bytes(&random);
    }
    assert_eq!(
        Certificate::from_bytes(&vec![0u8; MAX_CERT_BYTES + 1]).unwrap_err(),
        ParseError::TooLarge(MAX_CERT_BYTES + 1)
    );
}

#[test]
fn wrong_banners_are_named() {
    let key = HostSecret::generate().to_pem();
    assert_eq!(
        Certificate::from_pem(key.as_bytes()).unwrap_err(),
        ParseError::WrongBanner { found: "NEBULA X25519 PRIVATE KEY".into() }
    );
    // A v2 banner over v1 bytes is read as v2, and refused as such.
    let v1_in_v2 =
        armor::encode(armor::CERTIFICATE_V2, Certificate::from_pem(vector_block(1).as_bytes()).unwrap().to_bytes());
    assert!(matches!(Certificate::from_pem(v1_in_v2.as_bytes()), Err(ParseError::DecodeV2(_))));
}

/// A CA and a way to sign node certificates under it, for table-driven tests.
struct TestCa {
    key: CaSecret,
    cert: Certificate,
}

impl TestCa {
    fn new(name: &str, groups: &[&str], ips: &[&str], subnets: &[&str]) -> Self {
        let key = CaSecret::generate();
        let details = Details {
            name: name.into(),
            ips: ips.iter().map(|s| net(s)).collect(),
            subnets: subnets.iter().map(|s| net(s)).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            not_before: UnixTime(1_000),
            not_after: UnixTime(10_000),
            public_key: key.public(),
            is_ca: true,
            issuer: None,
        };
        let cert = Certificate::sign(&details, key.signing_key()).unwrap();
        TestCa { key, cert }
    }

    fn details(&self, name: &str, ip: &str) -> Details {
        Details {
            name: name.into(),
            ips: vec![net(ip)],
            subnets: vec![],
            groups: vec![],
            not_before: UnixTime(2_000),
            not_after: UnixTime(9_000),
            public_key: HostSecret::generate().public().0,
            is_ca: false,
            issuer: Some(self.cert.fingerprint()),
        }
    }

    fn sign(&self, d: &Details) -> Certificate {
        Certificate::sign(d, self.key.signing_key()).unwrap()
    }

    fn pool(&self) -> CaPool {
        let mut p = CaPool::default();
        p.add(self.cert.clone()).unwrap();
        p
    }
}

#[test]
fn verification_outcomes_in_nebula_order() {
    let ca = TestCa::new("ca", &["a", "b"], &["100.64.0.0/10"], &[]);
    let other = TestCa::new("other", &[], &[], &[]);
    let pool = ca.pool();
    let good = ca.sign(&ca.details("n1", "100.64.0.1/10"));
    let foreign = other.sign(&other.details("n2", "100.64.0.2/10"));
    let mut tampered_bytes = good.to_bytes().to_vec();
    let last = tampered_bytes.len() - 1;
    tampered_bytes[last] ^= 1;
    let tampered = Certificate::from_bytes(&tampered_bytes).unwrap();
    let mut blocked = Blocklist::default();
    blocked.insert(good.fingerprint());
    let none = Blocklist::default();

    type Case<'a> = (&'a str, &'a Certificate, UnixTime, &'a Blocklist, Result<(), VerifyError>);
    let cases: Vec<Case> = vec![
        ("valid", &good, UnixTime(5_000), &none, Ok(())),
        ("first second", &good, UnixTime(2_000), &none, Ok(())),
        ("last second", &good, UnixTime(9_000), &none, Ok(())),
        (
            "blocklist wins over expiry",
            &good,
            UnixTime(9_500),
            &blocked,
            Err(VerifyError::Blocklisted { name: "n1".into(), fingerprint: good.fingerprint() }),
        ),
        (
            "unknown CA",
            &foreign,
            UnixTime(5_000),
            &none,
            Err(VerifyError::UnknownCa { name: "n2".into(), issuer: other.cert.fingerprint().to_string() }),
        ),
        (
            "CA expired before cert expiry is checked",
            &good,
            UnixTime(10_001),
            &none,
            Err(VerifyError::CaExpired { ca: "ca".into(), not_after: UnixTime(10_000) }),
        ),
        (
            "expired",
            &good,
            UnixTime(9_001),
            &none,
            Err(VerifyError::Expired { name: "n1".into(), not_after: UnixTime(9_000) }),
        ),
        (
            "not yet valid",
            &good,
            UnixTime(1_999),
            &none,
            Err(VerifyError::NotYetValid { name: "n1".into(), not_before: UnixTime(2_000) }),
        ),
        (
            "tampered signature",
            &tampered,
            UnixTime(5_000),
            &none,
            Err(VerifyError::BadSignature { name: "n1".into(), ca: "ca".into() }),
        ),
    ];
    for (what, cert, now, bl, want) in cases {
        assert_eq!(pool.verify(cert, now, bl).map(|_| ()), want, "{what}");
    }
}

#[test]
fn ca_constraints() {
    let ca = TestCa::new("ca", &["a", "b"], &["100.64.0.0/16"], &["10.0.0.0/8"]);
    let base = ca.details("n", "100.64.1.1/16");
    type Edit = fn(&mut Details);
    let cases: Vec<(&str, Edit, bool)> = vec![
        ("inside", |_| {}, true),
        ("longer prefix is fine", |d| d.ips = vec![net("100.64.1.1/24")], true),
        ("allowed groups", |d| d.groups = vec!["a".into(), "b".into()], true),
        ("subnet inside", |d| d.subnets = vec![net("10.1.0.0/16")], true),
        ("ip outside", |d| d.ips = vec![net("100.65.0.1/16")], false),
        ("wider mask", |d| d.ips = vec![net("100.64.0.3/8")], false),
        ("unknown group", |d| d.groups = vec!["a".into(), "c".into()], false),
        ("subnet outside", |d| d.subnets = vec![net("192.168.0.0/24")], false),
        ("outlives CA", |d| d.not_after = UnixTime(10_001), false),
        ("predates CA", |d| d.not_before = UnixTime(999), false),
    ];
    for (what, edit, ok) in cases {
        let mut d = base.clone();
        edit(&mut d);
        let r = check_constraints(&ca.cert, &Tbs::from_details(&d, Version::V1));
        assert_eq!(r.is_ok(), ok, "{what}: {r:?}");
        // The pool applies the same constraints when verifying a signed certificate.
        let pooled = ca.pool().verify(&ca.sign(&d), UnixTime(5_000), &Blocklist::default());
        assert_eq!(pooled.is_ok(), ok, "{what} via pool: {pooled:?}");
    }
    let mut d = base.clone();
    d.ips = vec![net("100.64.0.3/8")];
    assert_eq!(
        check_constraints(&ca.cert, &Tbs::from_details(&d, Version::V1)).unwrap_err().to_string(),
        "certificate contained an ip assignment outside the limitations of the signing ca: 100.64.0.3/8 (CA ca allows 100.64.0.0/16)"
    );
    // A CA that lists nothing constrains nothing.
    let open = TestCa::new("open", &[], &[], &[]);
    let mut d = open.details("n", "192.0.2.1/24");
    d.groups = vec!["anything".into()];
    d.subnets = vec![net("10.0.0.0/8")];
    assert!(check_constraints(&open.cert, &Tbs::from_details(&d, Version::V1)).is_ok());
}

#[test]
fn pool_accepts_only_self_signed_cas() {
    let ca = TestCa::new("ca", &[], &[], &[]);
    let node = ca.sign(&ca.details("n", "100.64.0.1/10"));
    let mut pool = CaPool::default();
    assert_eq!(pool.add(node).unwrap_err(), PoolError::NotCa { name: "n".into() });
    // A CA certificate signed by another key is not self-signed.
    let other = CaSecret::generate();
    let forged = Certificate::sign(ca.cert.details(), other.signing_key()).unwrap();
    assert_eq!(pool.add(forged).unwrap_err(), PoolError::NotSelfSigned { name: "ca".into() });
    // A bundle of two CAs verifies certificates of both.
    let ca2 = TestCa::new("ca2", &[], &[], &[]);
    let bundle = format!("{}{}", ca.cert.to_pem(), ca2.cert.to_pem());
    let pool = CaPool::from_pem(bundle.as_bytes()).unwrap();
    assert_eq!(pool.len(), 2);
    for c in [&ca, &ca2] {
        let cert = c.sign(&c.details("x", "100.64.0.9/10"));
        assert!(pool.verify(&cert, UnixTime(5_000), &Blocklist::default()).is_ok());
    }
    assert_eq!(pool.expired(UnixTime(20_000)).len(), 2);
}

#[test]
fn blocklist_parsing_names_bad_entries() {
    let bl = Blocklist::from_hex(&[VECTOR_HOST_FP]).unwrap();
    assert!(bl.contains(&VECTOR_HOST_FP.parse().unwrap()));
    let err = Blocklist::from_hex(&[VECTOR_HOST_FP, "zz"]).unwrap_err();
    assert_eq!(err, "entry 1: \"zz\" is not a certificate fingerprint (64 hex digits)");
}
