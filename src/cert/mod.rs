//! Nebula v1 certificates: strict parsing, canonical encoding, signing.
//!
//! A [`Certificate`] that exists has been parsed strictly: its bytes are the canonical encoding
//! (what Go's `proto.Marshal` produces), so its fingerprint is the one `nebula-cert` computes and a
//! re-encoded copy of a blocklisted certificate cannot slip past the blocklist under another
//! fingerprint. Whether it is *trusted* is a separate question, answered by [`pool::CaPool`].

pub mod armor;
pub mod keys;
pub mod pool;
mod wire;

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use ipnet::Ipv4Net;
use prost::Message;
use serde_json::json;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::unixtime::UnixTime;
pub use armor::ArmorError;

/// Largest encoded certificate we parse. Real ones are 150–400 bytes.
pub const MAX_CERT_BYTES: usize = 16 * 1024;

/// SHA-256 of a certificate's canonical bytes; shown and configured as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(bytes: &[u8]) -> Self {
        Fingerprint(Sha256::digest(bytes).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out)
            .map_err(|_| format!("{s:?} is not a certificate fingerprint (64 hex digits)"))?;
        Ok(Fingerprint(out))
    }
}

/// The signed contents of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Details {
    pub name: String,
    /// Overlay addresses with their network prefix; `ips[0]` is the node's overlay IP.
    pub ips: Vec<Ipv4Net>,
    /// Networks behind this node (`unsafe_routes`); `nebula-cert` stores them masked.
    pub subnets: Vec<Ipv4Net>,
    pub groups: Vec<String>,
    pub not_before: UnixTime,
    pub not_after: UnixTime,
    /// Ed25519 public key for a CA, X25519 (= WireGuard static) public key for a host.
    pub public_key: [u8; 32],
    pub is_ca: bool,
    /// Fingerprint of the signing CA; `None` for a self-signed CA.
    pub issuer: Option<Fingerprint>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    #[error(transparent)]
    Armor(#[from] ArmorError),
    #[error("expected a NEBULA CERTIFICATE PEM block, found {found:?}")]
    WrongBanner { found: String },
    #[error(
        "this is a Nebula v2 certificate; cos-mesh speaks v1 only (issue v1 certificates, e.g. nebula-cert ca -version 1)"
    )]
    Version2,
    #[error("certificate is {0} bytes, larger than the {MAX_CERT_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("certificate is not a valid Nebula v1 encoding: {0}")]
    Decode(String),
    #[error(
        "certificate is not canonically encoded (its bytes differ from the standard encoding of its fields); refusing it"
    )]
    NotCanonical,
    #[error("certificate {field}: {reason}")]
    BadField { field: &'static str, reason: String },
    #[error("certificate uses curve {0} (P-256?); cos-mesh supports Curve25519 certificates only")]
    UnsupportedCurve(i32),
}

/// A strictly parsed Nebula v1 certificate. Cheap accessors; immutable.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    details: Details,
    signature: [u8; 64],
    raw_details: Vec<u8>,
    raw: Vec<u8>,
    fingerprint: Fingerprint,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("name", &self.details.name)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    /// Parses the protobuf bytes (the PEM body). Only the canonical encoding is accepted.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ParseError> {
        if bytes.len() > MAX_CERT_BYTES {
            return Err(ParseError::TooLarge(bytes.len()));
        }
        let outer = wire::RawCertificate::decode(bytes).map_err(|e| ParseError::Decode(e.to_string()))?;
        let raw_details = wire::RawDetails::decode(outer.details.as_slice())
            .map_err(|e| ParseError::Decode(format!("details: {e}")))?;
        // Nebula re-marshals the parsed fields before checking the signature and fingerprints the
        // marshalled form, so anything but the canonical bytes would verify differently there.
        if outer.encode_to_vec() != bytes || raw_details.encode_to_vec() != outer.details {
            return Err(ParseError::NotCanonical);
        }
        if raw_details.curve != 0 {
            return Err(ParseError::UnsupportedCurve(raw_details.curve));
        }
        let signature: [u8; 64] = outer.signature.as_slice().try_into().map_err(|_| ParseError::BadField {
            field: "signature",
            reason: format!("is {} bytes, expected a 64-byte Ed25519 signature", outer.signature.len()),
        })?;
        let public_key: [u8; 32] = raw_details.public_key.as_slice().try_into().map_err(|_| ParseError::BadField {
            field: "public key",
            reason: format!("is {} bytes, expected 32", raw_details.public_key.len()),
        })?;
        let issuer = match raw_details.issuer.len() {
            0 => None,
            32 => Some(Fingerprint(raw_details.issuer.as_slice().try_into().unwrap_or([0; 32]))),
            n => {
                return Err(ParseError::BadField {
                    field: "issuer",
                    reason: format!("is {n} bytes, expected a 32-byte fingerprint"),
                });
            }
        };
        let details = Details {
            ips: nets_from_pairs("ips", &raw_details.ips)?,
            subnets: nets_from_pairs("subnets", &raw_details.subnets)?,
            name: raw_details.name,
            groups: raw_details.groups,
            not_before: UnixTime(raw_details.not_before),
            not_after: UnixTime(raw_details.not_after),
            public_key,
            is_ca: raw_details.is_ca,
            issuer,
        };
        Ok(Certificate {
            details,
            signature,
            raw_details: outer.details,
            raw: bytes.to_vec(),
            fingerprint: Fingerprint::of(bytes),
        })
    }

    /// Parses a file that must hold exactly one certificate.
    pub fn from_pem(input: &[u8]) -> Result<Self, ParseError> {
        let mut all = Self::all_from_pem(input)?;
        if all.len() != 1 {
            return Err(ParseError::Decode(format!("expected one certificate, found {}", all.len())));
        }
        Ok(all.remove(0))
    }

    /// Parses every block of a PEM file; any block that is not a valid certificate is an error.
    pub fn all_from_pem(input: &[u8]) -> Result<Vec<Self>, ParseError> {
        armor::decode_all(input)?.into_iter().map(|b| Self::from_block(&b)).collect()
    }

    pub fn from_block(block: &armor::Block) -> Result<Self, ParseError> {
        match block.label.as_str() {
            armor::CERTIFICATE => Self::from_bytes(&block.data),
            armor::CERTIFICATE_V2 => Err(ParseError::Version2),
            other => Err(ParseError::WrongBanner { found: other.to_string() }),
        }
    }

    /// Signs `details` with `key`. The result is encoded canonically, so `nebula-cert` accepts it.
    pub fn sign(details: &Details, key: &SigningKey) -> Result<Self, ParseError> {
        let raw_details = wire::RawDetails {
            name: details.name.clone(),
            ips: pairs_from_nets(&details.ips),
            subnets: pairs_from_nets(&details.subnets),
            groups: details.groups.clone(),
            not_before: details.not_before.seconds(),
            not_after: details.not_after.seconds(),
            public_key: details.public_key.to_vec(),
            is_ca: details.is_ca,
            issuer: details.issuer.map(|f| f.0.to_vec()).unwrap_or_default(),
            curve: 0,
        }
        .encode_to_vec();
        let signature = key.sign(&raw_details);
        let raw = wire::RawCertificate { details: raw_details, signature: signature.to_bytes().to_vec() };
        Self::from_bytes(&raw.encode_to_vec())
    }

    pub fn details(&self) -> &Details {
        &self.details
    }

    pub fn name(&self) -> &str {
        &self.details.name
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The canonical protobuf bytes (the PEM body).
    pub fn to_bytes(&self) -> &[u8] {
        &self.raw
    }

    pub fn to_pem(&self) -> String {
        armor::encode(armor::CERTIFICATE, &self.raw)
    }

    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }

    /// The node's overlay address: the first IP, as Nebula uses it.
    pub fn vpn_ip(&self) -> Option<Ipv4Addr> {
        self.details.ips.first().map(|n| n.addr())
    }

    /// Whether `key` made the signature over the Details bytes (strict Ed25519).
    pub fn check_signature(&self, key: &[u8; 32]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(key) else {
            return false;
        };
        key.verify_strict(&self.raw_details, &Signature::from_bytes(&self.signature)).is_ok()
    }

    pub fn is_expired(&self, now: UnixTime) -> bool {
        now > self.details.not_after
    }

    pub fn is_not_yet_valid(&self, now: UnixTime) -> bool {
        now < self.details.not_before
    }

    /// The JSON object `nebula-cert print -json` prints (sorted keys, RFC 3339 UTC times).
    pub fn to_json(&self) -> serde_json::Value {
        let d = &self.details;
        json!({
            "details": {
                "groups": d.groups,
                "ips": d.ips.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                "isCa": d.is_ca,
                "issuer": d.issuer.map(|f| f.to_string()).unwrap_or_default(),
                "name": d.name,
                "notAfter": d.not_after.rfc3339(),
                "notBefore": d.not_before.rfc3339(),
                "publicKey": hex::encode(d.public_key),
                "subnets": d.subnets.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            },
            "fingerprint": self.fingerprint.to_string(),
            "signature": hex::encode(self.signature),
        })
    }

    /// A human-readable rendering, the same fields in the same order as `nebula-cert print`.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let d = &self.details;
        let list = |items: Vec<String>| -> String {
            if items.is_empty() {
                "[]".to_string()
            } else {
                format!("[\n{}\t\t]", items.iter().map(|i| format!("\t\t\t{i}\n")).collect::<String>())
            }
        };
        let mut s = String::new();
        let _ = writeln!(s, "NebulaCertificate {{\n\tDetails {{");
        let _ = writeln!(s, "\t\tName: {}", d.name);
        let _ = writeln!(s, "\t\tIps: {}", list(d.ips.iter().map(|n| n.to_string()).collect()));
        let _ = writeln!(s, "\t\tSubnets: {}", list(d.subnets.iter().map(|n| n.to_string()).collect()));
        let _ = writeln!(s, "\t\tGroups: {}", list(d.groups.iter().map(|g| format!("{g:?}")).collect()));
        let _ = writeln!(s, "\t\tNot before: {}", d.not_before.human());
        let _ = writeln!(s, "\t\tNot After: {}", d.not_after.human());
        let _ = writeln!(s, "\t\tIs CA: {}", d.is_ca);
        let _ = writeln!(s, "\t\tIssuer: {}", d.issuer.map(|f| f.to_string()).unwrap_or_default());
        let _ = writeln!(s, "\t\tPublic key: {}", hex::encode(d.public_key));
        let _ = writeln!(s, "\t}}\n\tFingerprint: {}", self.fingerprint);
        let _ = writeln!(s, "\tSignature: {}\n}}", hex::encode(self.signature));
        s
    }
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

#[cfg(test)]
mod tests;
