//! `mod tests;` in cert/mod.rs named this file but the skeleton commit did not contain it, so the
//! crate's unit tests did not compile. These tests cover the round trip and the invariants the
//! module documents; replace with the original if it turns up.

use super::keys::{CaSecret, HostSecret};
use super::pool::{Blocklist, CaPool, VerifyError};
use super::*;

fn ca(name: &str, now: UnixTime) -> (Certificate, CaSecret) {
    let key = CaSecret::generate();
    let details = Details {
        name: name.into(),
        ips: vec!["100.64.0.0/10".parse().unwrap()],
        subnets: vec![],
        groups: vec!["nomad".into()],
        not_before: now.add_secs(-60),
        not_after: now.add_secs(3600),
        public_key: key.public(),
        is_ca: true,
        issuer: None,
    };
    (Certificate::sign(&details, key.signing_key()).unwrap(), key)
}

fn host(ca: &Certificate, key: &CaSecret, now: UnixTime) -> Certificate {
    let details = Details {
        name: "node-1".into(),
        ips: vec!["100.64.0.11/10".parse().unwrap()],
        subnets: vec![],
        groups: vec!["nomad".into()],
        not_before: now,
        not_after: now.add_secs(600),
        public_key: HostSecret::generate().public().0,
        is_ca: false,
        issuer: Some(ca.fingerprint()),
    };
    Certificate::sign(&details, key.signing_key()).unwrap()
}

#[test]
fn sign_parse_verify_round_trip() {
    let now = UnixTime(1_800_000_000);
    let (ca_cert, ca_key) = ca("ca", now);
    let cert = host(&ca_cert, &ca_key, now);
    let again = Certificate::from_pem(cert.to_pem().as_bytes()).unwrap();
    assert_eq!(again, cert);
    assert_eq!(again.fingerprint(), Fingerprint::of(cert.to_bytes()));
    assert_eq!(again.vpn_ip(), Some(Ipv4Addr::new(100, 64, 0, 11)));
    let pool = CaPool::from_pem(ca_cert.to_pem().as_bytes()).unwrap();
    let verified = pool.verify(&cert, now, &Blocklist::default()).unwrap();
    assert_eq!(verified.ca_name(), "ca");
}

#[test]
fn verify_refuses_blocklisted_foreign_and_expired() {
    let now = UnixTime(1_800_000_000);
    let (ca_cert, ca_key) = ca("ca", now);
    let (other_ca, other_key) = ca("other", now);
    let cert = host(&ca_cert, &ca_key, now);
    let pool = CaPool::from_pem(ca_cert.to_pem().as_bytes()).unwrap();
    let mut blocked = Blocklist::default();
    blocked.insert(cert.fingerprint());
    assert!(matches!(pool.verify(&cert, now, &blocked), Err(VerifyError::Blocklisted { .. })));
    let foreign = host(&other_ca, &other_key, now);
    assert!(matches!(pool.verify(&foreign, now, &Blocklist::default()), Err(VerifyError::UnknownCa { .. })));
    assert!(matches!(pool.verify(&cert, now.add_secs(601), &Blocklist::default()), Err(VerifyError::Expired { .. })));
}

#[test]
fn non_canonical_encoding_is_refused() {
    let now = UnixTime(1_800_000_000);
    let (ca_cert, _) = ca("ca", now);
    // Appending an explicit default field (IsCa=false, tag 8) keeps the meaning but changes the bytes.
    let mut bytes = ca_cert.to_bytes().to_vec();
    bytes.extend_from_slice(&[0x40, 0x00]);
    assert!(Certificate::from_bytes(&bytes).is_err());
}
