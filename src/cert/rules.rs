//! What makes a parsed certificate well-formed, by Nebula's rules (`validate` in Nebula's
//! `cert/cert_v1.go` and `cert/cert_v2.go`). Whether it is trusted is [`super::pool`]'s question.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{Fingerprint, ParseError, Tbs};

/// Nebula's `MaxNameLength` for v2 names (a DNS name's limit).
pub const MAX_NAME: usize = 253;

fn bad(field: &'static str, reason: impl Into<String>) -> ParseError {
    ParseError::BadField { field, reason: reason.into() }
}

pub fn signature(b: &[u8]) -> Result<[u8; 64], ParseError> {
    b.try_into().map_err(|_| bad("signature", format!("is {} bytes, expected a 64-byte Ed25519 signature", b.len())))
}

pub fn public_key(b: &[u8]) -> Result<[u8; 32], ParseError> {
    b.try_into().map_err(|_| bad("public key", format!("is {} bytes, expected 32", b.len())))
}

/// The issuer field: absent on a self-signed CA, else the signer's 32-byte fingerprint.
pub fn issuer(b: Option<&[u8]>) -> Result<Option<Fingerprint>, ParseError> {
    match b {
        None => Ok(None),
        Some(b) => <[u8; 32]>::try_from(b)
            .map(|f| Some(Fingerprint(f)))
            .map_err(|_| bad("issuer", format!("is {} bytes, expected a 32-byte fingerprint", b.len()))),
    }
}

/// Nebula's order for networks (`comparePrefix`): address (IPv4 before IPv6, then bytes), then
/// prefix length.
pub fn sort_key(n: &IpNet) -> (IpAddr, u8) {
    (n.addr(), n.prefix_len())
}

/// Rules both versions share: a host needs a network; no network uses the zero address.
fn check_common(t: &Tbs) -> Result<(), ParseError> {
    if !t.is_ca && t.networks.is_empty() {
        return Err(bad("networks", "a host certificate needs at least one network (its overlay address)"));
    }
    if let Some(n) = t.networks.iter().find(|n| n.addr().is_unspecified()) {
        return Err(bad("networks", format!("{n} uses the zero address")));
    }
    Ok(())
}

pub fn check_v1(t: &Tbs) -> Result<(), ParseError> {
    check_common(t)
}

/// v2 adds: a name of 1..=253 bytes, no empty group, no 4in6 network, networks and unsafe
/// networks sorted and unique, and a host's unsafe networks of a family need a network of it.
pub fn check_v2(t: &Tbs) -> Result<(), ParseError> {
    if t.name.is_empty() || t.name.len() > MAX_NAME {
        return Err(bad("name", format!("is {} bytes, expected 1 to {MAX_NAME}", t.name.len())));
    }
    if t.groups.iter().any(String::is_empty) {
        return Err(bad("groups", "holds an empty group name"));
    }
    check_common(t)?;
    if let Some(n) = t.networks.iter().find(|n| matches!(n, IpNet::V6(v6) if v6.addr().to_ipv4_mapped().is_some())) {
        return Err(bad("networks", format!("{n} is an IPv4-mapped IPv6 network (4in6), which Nebula does not allow")));
    }
    sorted_unique("networks", &t.networks)?;
    sorted_unique("unsafe networks", &t.unsafe_networks)?;
    if !t.is_ca {
        for u in &t.unsafe_networks {
            let family = if u.addr().is_ipv6() { "IPv6" } else { "IPv4" };
            if !t.networks.iter().any(|n| n.addr().is_ipv6() == u.addr().is_ipv6()) {
                return Err(bad("unsafe networks", format!("{u}: {family} unsafe networks need an {family} network")));
            }
        }
    }
    Ok(())
}

fn sorted_unique(field: &'static str, nets: &[IpNet]) -> Result<(), ParseError> {
    for pair in nets.windows(2) {
        let (a, b) = (sort_key(&pair[0]), sort_key(&pair[1]));
        if a == b {
            return Err(bad(field, format!("lists {} twice", pair[0])));
        }
        if a > b {
            return Err(bad(field, format!("are not sorted ({} before {}), as Nebula writes them", pair[0], pair[1])));
        }
    }
    Ok(())
}
