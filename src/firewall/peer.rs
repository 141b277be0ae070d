//! Who is on the other end of the tunnel, as the firewall matches on it. The daemon builds one
//! per peer when its certificate verifies and keeps it with the tunnel, so a verdict never
//! touches the certificate itself.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::cert::Fingerprint;
use crate::cert::pool::VerifiedCert;

/// The identity of a verified peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Certificate name (`host:` rules).
    pub name: String,
    /// Sorted and deduplicated, for `group`/`groups` lookups without hashing.
    groups: Vec<String>,
    /// Overlay addresses from the certificate; the first is the peer's VPN IP.
    pub ips: Vec<IpAddr>,
    /// Networks routed through this peer (`unsafe_routes`); packets from them are the peer's too.
    pub subnets: Vec<IpNet>,
    pub ca_name: String,
    pub ca_fingerprint: Fingerprint,
}

impl PeerIdentity {
    pub fn new(
        name: impl Into<String>,
        groups: impl IntoIterator<Item = impl Into<String>>,
        ips: Vec<IpAddr>,
        subnets: Vec<IpNet>,
        ca_name: impl Into<String>,
        ca_fingerprint: Fingerprint,
    ) -> Self {
        let mut groups: Vec<String> = groups.into_iter().map(Into::into).collect();
        groups.sort();
        groups.dedup();
        PeerIdentity { name: name.into(), groups, ips, subnets, ca_name: ca_name.into(), ca_fingerprint }
    }

    /// The peer's overlay IP (its certificate's first address), if it has one.
    pub fn vpn_ip(&self) -> Option<IpAddr> {
        self.ips.first().copied()
    }

    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.groups.binary_search_by(|g| g.as_str().cmp(group)).is_ok()
    }

    /// Whether `ip` may appear as this peer's side of a packet: one of its addresses or inside
    /// one of its subnets. Anything else is spoofed and dropped before the rules run.
    pub fn owns_address(&self, ip: IpAddr) -> bool {
        self.ips.contains(&ip) || self.subnets.iter().any(|n| n.contains(&ip))
    }
}

impl From<&VerifiedCert> for PeerIdentity {
    fn from(v: &VerifiedCert) -> Self {
        let c = v.cert();
        // Every network of the certificate, IPv4 and IPv6 (a v2 certificate may hold both).
        PeerIdentity::new(
            c.name(),
            c.groups().iter().cloned(),
            c.networks().iter().map(IpNet::addr).collect(),
            c.unsafe_networks().to_vec(),
            v.ca_name(),
            v.ca_fingerprint(),
        )
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use rand_core::OsRng;

    use super::*;
    use crate::cert::pool::{Blocklist, CaPool};
    use crate::cert::{Certificate, Details};
    use crate::unixtime::UnixTime;

    #[test]
    fn built_from_a_verified_certificate() {
        let now = UnixTime::now();
        let ca_key = SigningKey::generate(&mut OsRng);
        let mut d = Details {
            name: "mesh-ca".into(),
            ips: vec![],
            subnets: vec![],
            groups: vec![],
            not_before: now.add_secs(-60),
            not_after: now.add_secs(3600),
            public_key: ca_key.verifying_key().to_bytes(),
            is_ca: true,
            issuer: None,
        };
        let ca = Certificate::sign(&d, &ca_key).unwrap();
        d.name = "client-3".into();
        d.is_ca = false;
        d.ips = vec!["100.64.0.3/10".parse().unwrap()];
        d.subnets = vec!["10.9.0.0/16".parse().unwrap()];
        d.groups = vec!["ops".into(), "nomad-client".into(), "ops".into()];
        d.public_key = [7; 32];
        d.issuer = Some(ca.fingerprint());
        let host = Certificate::sign(&d, &ca_key).unwrap();
        let mut pool = CaPool::default();
        pool.add(ca.clone()).unwrap();
        let verified = pool.verify(&host, now, &Blocklist::default()).unwrap();

        let p = PeerIdentity::from(&verified);
        assert_eq!(p.name, "client-3");
        assert_eq!(p.groups(), ["nomad-client".to_string(), "ops".to_string()]);
        assert!(p.has_group("ops") && !p.has_group("nomad-server"));
        assert_eq!(p.vpn_ip(), Some("100.64.0.3".parse().unwrap()));
        assert!(p.owns_address("10.9.1.1".parse().unwrap()));
        assert!(!p.owns_address("100.64.0.4".parse().unwrap()));
        assert_eq!((p.ca_name.as_str(), p.ca_fingerprint), ("mesh-ca", ca.fingerprint()));
    }
}
