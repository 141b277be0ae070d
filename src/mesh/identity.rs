//! Who this node is in the overlay: its certificate (and the bytes its Hellos carry), its
//! WireGuard keys, its addresses and networks, and where overlay packets go from here (our
//! networks, unsafe routes through peers).

use std::net::IpAddr;
use std::sync::Arc;

use boringtun::x25519::{PublicKey, StaticSecret};
use ipnet::IpNet;

use super::control::Framing;
use super::outbound::dst_and_protocol;
use super::{NodeError, TrustReloadError};
use crate::cert::Certificate;
use crate::cert::keys::HostSecret;

pub(super) struct Identity {
    pub cert: Arc<Certificate>,
    /// Our certificate as Hellos carry it.
    pub hello_cert: Vec<u8>,
    pub secret: StaticSecret,
    pub public: PublicKey,
    /// Our identity: the first network of our certificate, IPv4 when it has one
    /// ([`Certificate::identity`]); peers know us by it.
    pub vpn_ip: IpAddr,
    pub vpn_net: IpNet,
    /// Every network of our certificate, IPv4 and IPv6 (our addresses with their prefixes).
    own_networks: Vec<IpNet>,
    /// Networks our certificate routes for (`unsafe_routes` on peers point here), v4 and v6.
    own_subnets: Vec<IpNet>,
    /// `tun.unsafe_routes`: networks (v4 or v6) reached through a peer whose certificate lists
    /// them, named by any of its overlay addresses.
    unsafe_routes: Vec<(IpNet, IpAddr)>,
}

impl Identity {
    /// The identity of `cert` with private key `key` (the certificate itself is verified by
    /// the caller).
    pub fn new(cert: Certificate, key: &HostSecret, unsafe_routes: Vec<(IpNet, IpAddr)>) -> Result<Self, NodeError> {
        let ip =
            *cert.networks().iter().find(|n| n.addr().is_ipv4()).or(cert.networks().first()).ok_or(NodeError::NoIp)?;
        if key.public().0 != cert.details().public_key {
            return Err(NodeError::KeyMismatch);
        }
        let secret = StaticSecret::from(*key.bytes());
        let public = PublicKey::from(&secret);
        Ok(Identity {
            hello_cert: cert.to_bytes().to_vec(),
            own_networks: cert.networks().to_vec(),
            own_subnets: cert.unsafe_networks().iter().map(IpNet::trunc).collect(),
            cert: Arc::new(cert),
            secret,
            public,
            vpn_ip: ip.addr(),
            vpn_net: ip.trunc(),
            unsafe_routes,
        })
    }

    /// Whether a renewed certificate may replace ours while running: same overlay IP, same
    /// networks and same key (peers know us by them). Its validity is checked by the caller.
    pub fn check_renewal(&self, cert: &Certificate) -> Result<(), TrustReloadError> {
        if cert.identity() != Some(self.vpn_ip) {
            return Err(TrustReloadError::OverlayIpChanged { new: cert.identity(), running: self.vpn_ip });
        }
        if sorted_networks(cert) != sorted_networks(&self.cert) {
            let list = |c: &Certificate| c.networks().iter().map(IpNet::to_string).collect::<Vec<_>>().join(", ");
            return Err(TrustReloadError::NetworksChanged { new: list(cert), running: list(&self.cert) });
        }
        if cert.details().public_key != self.public.to_bytes() {
            return Err(TrustReloadError::KeyChanged);
        }
        Ok(())
    }

    /// Adopts a renewed certificate that passed [`Identity::check_renewal`].
    pub fn renew(&mut self, cert: Certificate) {
        self.hello_cert = cert.to_bytes().to_vec();
        // Its networks are ours already; the networks it routes for may have changed.
        self.own_subnets = cert.unsafe_networks().iter().map(IpNet::trunc).collect();
        self.cert = Arc::new(cert);
    }

    /// Whether a peer's certificate claims our identity or our key.
    pub fn claimed_by(&self, cert: &Certificate) -> bool {
        cert.identity() == Some(self.vpn_ip) || cert.details().public_key == self.public.to_bytes()
    }

    /// Every network of our certificate, IPv4 and IPv6.
    pub fn networks(&self) -> &[IpNet] {
        &self.own_networks
    }

    /// Whether `ip` is one of our own overlay addresses.
    pub fn is_own(&self, ip: IpAddr) -> bool {
        self.own_networks.iter().any(|n| n.addr() == ip)
    }

    /// How a control message to a peer with certificate `peer` is framed (none: we share no
    /// address family).
    pub fn framing_to(&self, peer: &Certificate) -> Option<Framing> {
        Framing::between(&self.own_networks, peer.networks())
    }

    /// How a control message to overlay address `dst` of a node we have no certificate for is
    /// framed.
    pub fn framing_toward(&self, dst: IpAddr) -> Option<Framing> {
        Framing::toward(&self.own_networks, dst)
    }

    /// The overlay address of the peer that takes packets for `dst`: `dst` itself inside one
    /// of our certificate's networks (IPv4 or IPv6), else the gateway of an unsafe route.
    pub fn route(&self, dst: IpAddr) -> Option<IpAddr> {
        if self.own_networks.iter().any(|n| n.addr() == dst) {
            return None;
        }
        if self.own_networks.iter().any(|n| n.contains(&dst)) {
            return Some(dst);
        }
        self.unsafe_routes
            .iter()
            .filter(|(net, _)| net.contains(&dst))
            .max_by_key(|(net, _)| net.prefix_len())
            .map(|(_, via)| *via)
    }

    /// Whether a decrypted packet is addressed to one of our certificate's addresses (IPv4 or
    /// IPv6) or into a network it routes for.
    pub fn addressed_to_us(&self, packet: &[u8]) -> bool {
        let Some((dst, _)) = dst_and_protocol(packet) else { return false };
        self.own_networks.iter().any(|n| n.addr() == dst) || self.own_subnets.iter().any(|n| n.contains(&dst))
    }
}

/// A certificate's networks in a canonical order (a v1 certificate keeps its own).
fn sorted_networks(cert: &Certificate) -> Vec<IpNet> {
    let mut v = cert.networks().to_vec();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::Identity;
    use crate::cert::Certificate;
    use crate::cert::keys::HostSecret;
    use crate::mesh::TrustReloadError;
    use crate::mesh::test_support::{TestCa, ip};

    fn cert(ca: &TestCa, ip: &str, key: &HostSecret) -> Certificate {
        ca.host("host", ip, key)
    }

    #[test]
    fn routes_to_overlay_peers_and_through_the_most_specific_unsafe_route() {
        let (ca, key) = (TestCa::new(), HostSecret::generate());
        let routes = vec![
            ("100.96.0.0/24".parse().expect("net"), "100.64.0.7".parse().expect("ip")),
            ("100.96.0.128/25".parse().expect("net"), "100.64.0.8".parse().expect("ip")),
        ];
        let id = Identity::new(cert(&ca, "100.64.0.1/16", &key), &key, routes).expect("identity");
        assert_eq!(id.route(ip("100.64.0.1")), None, "our own address is not routed");
        assert_eq!(id.route(ip("100.64.3.4")), Some(ip("100.64.3.4")));
        assert_eq!(id.route(ip("100.96.0.1")), Some(ip("100.64.0.7")));
        assert_eq!(id.route(ip("100.96.0.200")), Some(ip("100.64.0.8")));
        assert_eq!(id.route(ip("100.100.0.1")), None);
    }

    #[test]
    fn a_renewal_keeps_address_and_key_and_another_key_is_refused() {
        let (ca, key, other) = (TestCa::new(), HostSecret::generate(), HostSecret::generate());
        let id = Identity::new(cert(&ca, "100.64.0.1/10", &key), &key, vec![]).expect("identity");
        assert!(Identity::new(cert(&ca, "100.64.0.1/10", &key), &other, vec![]).is_err(), "key mismatch");
        assert_eq!(id.check_renewal(&cert(&ca, "100.64.0.1/10", &key)), Ok(()));
        assert!(matches!(
            id.check_renewal(&cert(&ca, "100.64.0.2/10", &key)),
            Err(TrustReloadError::OverlayIpChanged { .. })
        ));
        assert_eq!(id.check_renewal(&cert(&ca, "100.64.0.1/10", &other)), Err(TrustReloadError::KeyChanged));
        assert!(id.claimed_by(&cert(&ca, "100.64.0.9/10", &key)), "our key under another address");
        assert!(!id.claimed_by(&cert(&ca, "100.64.0.9/10", &other)));
    }
}
