//! Fixtures for the mesh's unit tests: a CA, certificates it signs, and peers holding them.

use std::net::IpAddr;

use boringtun::noise::Tunn;
use boringtun::x25519::{PublicKey, StaticSecret};

use super::peer::Peer;
use crate::cert::keys::{CaSecret, HostSecret};
use crate::cert::pool::{Blocklist, CaPool, VerifiedCert};
use crate::cert::{Certificate, Details};
use crate::unixtime::UnixTime;

/// A wall-clock time inside every fixture certificate's validity (2,000 to 9,000).
pub const VALID_AT: UnixTime = UnixTime(5_000);

/// A CA valid from 1,000 to 10,000 (Unix seconds) and the pool that trusts it.
pub struct TestCa {
    key: CaSecret,
    pub cert: Certificate,
}

impl TestCa {
    pub fn new() -> Self {
        let key = CaSecret::generate();
        let d = Details {
            name: "ca".into(),
            ips: vec![],
            subnets: vec![],
            groups: vec![],
            not_before: UnixTime(1_000),
            not_after: UnixTime(10_000),
            public_key: key.public(),
            is_ca: true,
            issuer: None,
        };
        let cert = Certificate::sign(&d, key.signing_key()).expect("ca signs itself");
        TestCa { key, cert }
    }

    pub fn pool(&self) -> CaPool {
        let mut pool = CaPool::default();
        pool.add(self.cert.clone()).expect("a CA certificate");
        pool
    }

    /// A host certificate named `name` for overlay network `net` (`100.64.0.2/10`) and key `key`.
    pub fn host(&self, name: &str, net: &str, key: &HostSecret) -> Certificate {
        let d = Details {
            name: name.into(),
            ips: vec![net.parse().expect("an overlay network")],
            subnets: vec![],
            groups: vec![],
            not_before: UnixTime(2_000),
            not_after: UnixTime(9_000),
            public_key: key.public().0,
            is_ca: false,
            issuer: Some(self.cert.fingerprint()),
        };
        Certificate::sign(&d, self.key.signing_key()).expect("host signs")
    }

    pub fn verified(&self, cert: &Certificate) -> VerifiedCert {
        self.pool().verify(cert, VALID_AT, &Blocklist::default()).expect("verifies")
    }
}

/// A peer with a real certificate (under a fresh CA) for overlay network `net`.
pub fn peer(net: &str) -> Peer<()> {
    let ca = TestCa::new();
    let key = HostSecret::generate();
    let host = ca.host(&format!("host-{net}"), net, &key);
    let tunn = Tunn::new(StaticSecret::from([7; 32]), PublicKey::from(host.details().public_key), None, None, 1, None);
    Peer::new(ca.verified(&host), (), tunn)
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("an IP address")
}
