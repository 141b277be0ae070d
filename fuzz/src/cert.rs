//! Certificate parsing: the same bytes as a raw certificate (the PEM body, what a Hello
//! carries), as PEM, as a CA bundle and as the key files. Whatever parses must survive a round
//! trip and verification against the fixture CA without panicking.

use cos_mesh::cert::Certificate;
use cos_mesh::cert::keys::{CaSecret, HostPublic, HostSecret};
use cos_mesh::cert::pool::{Blocklist, CaPool};
use cos_mesh::unixtime::UnixTime;

use super::fixtures::{WALL0, pki};

pub fn run(data: &[u8]) {
    let pool = pki().pool();
    if let Ok(c) = Certificate::from_bytes(data) {
        // Only the canonical encoding parses, so the bytes are the certificate.
        assert_eq!(c.to_bytes(), data, "a parsed certificate re-encodes to its input");
        check(&c, &pool);
    }
    if let Ok(all) = Certificate::all_from_pem(data) {
        for c in &all {
            check(c, &pool);
        }
    }
    let _ = Certificate::from_pem(data);
    let _ = CaPool::from_pem(data);
    let _ = HostSecret::from_pem(data);
    let _ = HostPublic::from_pem(data);
    let _ = CaSecret::from_pem(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Blocklist::from_hex(&text.lines().collect::<Vec<_>>());
    }
}

fn check(c: &Certificate, pool: &CaPool) {
    let again = Certificate::from_pem(c.to_pem().as_bytes()).expect("to_pem output parses");
    assert!(again == *c, "PEM round trip");
    let _ = c.to_json();
    let _ = c.to_text();
    let _ = c.vpn_ip();
    // A forged certificate must never verify against the fixture CA: only the CA's own
    // signatures do, and the corpus holds just those.
    if let Ok(v) = pool.verify(c, UnixTime(WALL0), &Blocklist::default()) {
        assert!(pki().nodes.iter().any(|n| n.cert == **v.cert()) || *v.cert().as_ref() == pki().expired);
    }
}
