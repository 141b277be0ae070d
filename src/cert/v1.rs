//! Nebula v1 certificates (protobuf, `NEBULA CERTIFICATE`): strict parsing and signing.
//!
//! Only the canonical encoding (what Go's `proto.Marshal` produces) is accepted: Nebula re-marshals
//! the parsed fields before checking the signature and fingerprints the marshalled form, so any
//! other bytes would verify differently there, and a re-encoded copy of a blocklisted
//! certificate could slip past the blocklist under another fingerprint.

use std::net::Ipv4Addr;

use ed25519_dalek::{Signer, SigningKey};
use ipnet::{IpNet, Ipv4Net};
use prost::Message;

use super::{Certificate, Fingerprint, MAX_CERT_BYTES, ParseError, Tbs, Version, rules, wire};
use crate::unixtime::UnixTime;

pub(super) fn parse(bytes: &[u8]) -> Result<Certificate, ParseError> {
    if bytes.len() > MAX_CERT_BYTES {
        return Err(ParseError::TooLarge(bytes.len()));
    }
    let outer = wire::RawCertificate::decode(bytes).map_err(|e| ParseError::Decode(e.to_string()))?;
    let raw =
        wire::RawDetails::decode(outer.details.as_slice()).map_err(|e| ParseError::Decode(format!("details: {e}")))?;
    if outer.encode_to_vec() != bytes || raw.encode_to_vec() != outer.details {
        return Err(ParseError::NotCanonical);
    }
    if raw.curve != 0 {
        return Err(ParseError::UnsupportedCurve { name: raw.name, curve: curve_name(raw.curve) });
    }
    let signature = rules::signature(&outer.signature)?;
    let tbs = Tbs {
        version: Version::V1,
        networks: nets_from_pairs("ips", &raw.ips)?.into_iter().map(IpNet::V4).collect(),
        unsafe_networks: nets_from_pairs("subnets", &raw.subnets)?.into_iter().map(IpNet::V4).collect(),
        public_key: rules::public_key(&raw.public_key)?,
        issuer: rules::issuer((!raw.issuer.is_empty()).then_some(raw.issuer.as_slice()))?,
        name: raw.name,
        groups: raw.groups,
        not_before: UnixTime(raw.not_before),
        not_after: UnixTime(raw.not_after),
        is_ca: raw.is_ca,
    };
    rules::check_v1(&tbs)?;
    Ok(Certificate::assemble(tbs, signature, outer.details, bytes.to_vec(), Fingerprint::of(bytes)))
}

fn curve_name(curve: i32) -> &'static str {
    if curve == 1 { "P-256" } else { "an unknown curve" }
}

/// Signs `tbs` as a v1 certificate: IPv4 networks only, kept in the given order (v1 does not sort).
pub(super) fn sign(tbs: &Tbs, key: &SigningKey) -> Result<Certificate, ParseError> {
    let v4 = |field: &'static str, nets: &[IpNet]| -> Result<Vec<Ipv4Net>, ParseError> {
        nets.iter()
            .map(|n| match n {
                IpNet::V4(n) => Ok(*n),
                IpNet::V6(n) => Err(ParseError::BadField {
                    field,
                    reason: format!("{n} is IPv6; a v1 certificate carries IPv4 networks only (use a v2 certificate)"),
                }),
            })
            .collect()
    };
    let raw_details = wire::RawDetails {
        name: tbs.name.clone(),
        ips: pairs_from_nets(&v4("networks", &tbs.networks)?),
        subnets: pairs_from_nets(&v4("unsafe networks", &tbs.unsafe_networks)?),
        groups: tbs.groups.clone(),
        not_before: tbs.not_before.seconds(),
        not_after: tbs.not_after.seconds(),
        public_key: tbs.public_key.to_vec(),
        is_ca: tbs.is_ca,
        issuer: tbs.issuer.map(|f| f.0.to_vec()).unwrap_or_default(),
        curve: 0,
    }
    .encode_to_vec();
    let signature = key.sign(&raw_details);
    let raw = wire::RawCertificate { details: raw_details, signature: signature.to_bytes().to_vec() };
    parse(&raw.encode_to_vec())
}

fn nets_from_pairs(field: &'static str, pairs: &[u32]) -> Result<Vec<Ipv4Net>, ParseError> {
    if !pairs.len().is_multiple_of(2) {
        return Err(ParseError::BadField { field, reason: "has an address without a mask".into() });
    }
    pairs
        .chunks_exact(2)
        .map(|p| {
            let (ip, mask) = (p[0], p[1]);
            let prefix = mask.leading_ones();
            if mask.checked_shl(prefix).unwrap_or(0) != 0 {
                return Err(ParseError::BadField {
                    field,
                    reason: format!("mask {mask:08x} of {} is not a contiguous prefix", Ipv4Addr::from(ip)),
                });
            }
            Ipv4Net::new(Ipv4Addr::from(ip), prefix as u8)
                .map_err(|e| ParseError::BadField { field, reason: e.to_string() })
        })
        .collect()
}

fn pairs_from_nets(nets: &[Ipv4Net]) -> Vec<u32> {
    nets.iter().flat_map(|n| [u32::from(n.addr()), u32::from(n.netmask())]).collect()
}
