//! Nebula certificates, v1 (protobuf) and v2 (DER): strict parsing, canonical encoding, signing.
//!
//! A [`Certificate`] that exists has been parsed strictly: its bytes are the canonical encoding of
//! its version, so its fingerprint is the one Nebula computes and a re-encoded copy of a
//! blocklisted certificate cannot slip past the blocklist under another fingerprint. Whether it is
//! *trusted* is a separate question, answered by [`pool::CaPool`]. The version is an internal
//! detail for the mesh: both carry a name, networks, groups, a key and a fingerprint, and a v1 and
//! a v2 certificate of one CA pool verify alike.

pub mod armor;
pub mod bundle;
pub mod der_v2;
pub mod keys;
pub mod pool;
mod print;
mod rules;
mod v1;
pub mod v2;
mod wire;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use ipnet::{IpNet, Ipv4Net};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::unixtime::UnixTime;
pub use armor::ArmorError;

/// Largest v1 certificate we parse. Real ones are 150–400 bytes (v2: [`v2::MAX_V2_BYTES`]).
pub const MAX_CERT_BYTES: usize = 16 * 1024;

/// A certificate's SHA-256 fingerprint as Nebula computes it (v1: of the whole encoding; v2: of
/// details ‖ curve ‖ public key ‖ signature); shown and configured as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// SHA-256 of `bytes` (a v1 certificate's fingerprint is that of its encoding).
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

/// A certificate format version: v1 (protobuf, IPv4 only) or v2 (DER, IPv4 and IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn number(self) -> u8 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }

    /// `1` or `2`, as `nebula-cert -version` and `pki.initiating_version` spell it.
    pub fn from_number(n: u64) -> Option<Self> {
        match n {
            1 => Some(Version::V1),
            2 => Some(Version::V2),
            _ => None,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.number())
    }
}

/// The IPv4 view of a certificate's signed contents, which the (IPv4) data path uses: `ips` are
/// the certificate's IPv4 networks, `subnets` its IPv4 unsafe networks. For a v1 certificate that
/// is everything; a v2 certificate may also carry IPv6 networks, see [`Certificate::tbs`].
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

/// Everything a certificate signs, in either version (Nebula's `TBSCertificate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tbs {
    pub version: Version,
    pub name: String,
    /// Overlay addresses with their prefix (v1: IPv4 only). A v2 certificate keeps them sorted.
    pub networks: Vec<IpNet>,
    /// Networks routed through this node (`unsafe_routes`).
    pub unsafe_networks: Vec<IpNet>,
    pub groups: Vec<String>,
    pub not_before: UnixTime,
    pub not_after: UnixTime,
    pub public_key: [u8; 32],
    pub is_ca: bool,
    pub issuer: Option<Fingerprint>,
}

impl Tbs {
    /// The same contents as a v1 [`Details`] describes them.
    pub fn from_details(d: &Details, version: Version) -> Self {
        Tbs {
            version,
            name: d.name.clone(),
            networks: d.ips.iter().map(|n| IpNet::V4(*n)).collect(),
            unsafe_networks: d.subnets.iter().map(|n| IpNet::V4(*n)).collect(),
            groups: d.groups.clone(),
            not_before: d.not_before,
            not_after: d.not_after,
            public_key: d.public_key,
            is_ca: d.is_ca,
            issuer: d.issuer,
        }
    }

    fn ipv4_view(&self) -> Details {
        let v4 = |nets: &[IpNet]| {
            nets.iter()
                .filter_map(|n| match n {
                    IpNet::V4(n) => Some(*n),
                    IpNet::V6(_) => None,
                })
                .collect()
        };
        Details {
            name: self.name.clone(),
            ips: v4(&self.networks),
            subnets: v4(&self.unsafe_networks),
            groups: self.groups.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
            public_key: self.public_key,
            is_ca: self.is_ca,
            issuer: self.issuer,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    #[error(transparent)]
    Armor(#[from] ArmorError),
    #[error("expected a NEBULA CERTIFICATE or NEBULA CERTIFICATE V2 PEM block, found {found:?}")]
    WrongBanner { found: String },
    #[error("certificate is {0} bytes, larger than the limit for its version")]
    TooLarge(usize),
    #[error("certificate is not a valid Nebula v1 encoding: {0}")]
    Decode(String),
    #[error("certificate is not a valid Nebula v2 (DER) encoding: {0}")]
    DecodeV2(String),
    #[error(
        "certificate is not canonically encoded (its bytes differ from the standard encoding of its fields); refusing it"
    )]
    NotCanonical,
    #[error("certificate {field}: {reason}")]
    BadField { field: &'static str, reason: String },
    #[error(
        "certificate {name:?} uses {curve}; cos-mesh supports Curve25519 certificates only, because its tunnels are WireGuard (boringtun), which is X25519-only"
    )]
    UnsupportedCurve { name: String, curve: &'static str },
    #[error("expected one certificate, found {0}")]
    Count(usize),
}

/// A strictly parsed Nebula certificate, v1 or v2. Cheap accessors; immutable.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    tbs: Tbs,
    /// The IPv4 view of `tbs`, kept so [`Certificate::details`] can lend it.
    details: Details,
    signature: [u8; 64],
    /// The bytes the signature covers (v1: the Details message; v2: Details ‖ curve ‖ key).
    signed: Vec<u8>,
    raw: Vec<u8>,
    fingerprint: Fingerprint,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("version", &self.tbs.version)
            .field("name", &self.tbs.name)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    fn assemble(tbs: Tbs, signature: [u8; 64], signed: Vec<u8>, raw: Vec<u8>, fingerprint: Fingerprint) -> Self {
        Certificate { details: tbs.ipv4_view(), tbs, signature, signed, raw, fingerprint }
    }

    /// Parses the bytes of either version (a PEM body, or a certificate received from a peer):
    /// a DER SEQUENCE is v2, anything else v1. Only the canonical encoding is accepted.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ParseError> {
        match bytes.first() {
            Some(0x30) => v2::parse(bytes),
            _ => v1::parse(bytes),
        }
    }

    /// Parses a file that must hold exactly one certificate.
    pub fn from_pem(input: &[u8]) -> Result<Self, ParseError> {
        let mut all = Self::all_from_pem(input)?;
        if all.len() != 1 {
            return Err(ParseError::Count(all.len()));
        }
        Ok(all.remove(0))
    }

    /// Parses every block of a PEM file; any block that is not a valid certificate is an error.
    pub fn all_from_pem(input: &[u8]) -> Result<Vec<Self>, ParseError> {
        armor::decode_all(input)?.into_iter().map(|b| Self::from_block(&b)).collect()
    }

    /// Parses one PEM block; its banner says the version.
    pub fn from_block(block: &armor::Block) -> Result<Self, ParseError> {
        match block.label.as_str() {
            armor::CERTIFICATE => v1::parse(&block.data),
            armor::CERTIFICATE_V2 => v2::parse(&block.data),
            other => Err(ParseError::WrongBanner { found: other.to_string() }),
        }
    }

    /// Signs `details` with `key` as a v1 certificate (encoded canonically, so `nebula-cert`
    /// 1.6.1 accepts it).
    pub fn sign(details: &Details, key: &SigningKey) -> Result<Self, ParseError> {
        v1::sign(&Tbs::from_details(details, Version::V1), key)
    }

    /// Signs `tbs` in its version. A v2 certificate's networks are sorted first, as Nebula does;
    /// the result is parsed back, so it obeys every rule a received certificate must.
    pub fn sign_tbs(tbs: &Tbs, key: &SigningKey) -> Result<Self, ParseError> {
        match tbs.version {
            Version::V1 => v1::sign(tbs, key),
            Version::V2 => v2::sign(tbs, key),
        }
    }

    pub fn version(&self) -> Version {
        self.tbs.version
    }

    /// Everything the certificate signs, IPv6 networks included.
    pub fn tbs(&self) -> &Tbs {
        &self.tbs
    }

    /// The IPv4 view (see [`Details`]).
    pub fn details(&self) -> &Details {
        &self.details
    }

    pub fn name(&self) -> &str {
        &self.tbs.name
    }

    pub fn groups(&self) -> &[String] {
        &self.tbs.groups
    }

    pub fn public_key(&self) -> &[u8; 32] {
        &self.tbs.public_key
    }

    pub fn is_ca(&self) -> bool {
        self.tbs.is_ca
    }

    pub fn issuer(&self) -> Option<Fingerprint> {
        self.tbs.issuer
    }

    pub fn not_after(&self) -> UnixTime {
        self.tbs.not_after
    }

    /// All networks (overlay addresses with prefix), IPv4 and IPv6.
    pub fn networks(&self) -> &[IpNet] {
        &self.tbs.networks
    }

    pub fn unsafe_networks(&self) -> &[IpNet] {
        &self.tbs.unsafe_networks
    }

    /// The first IPv4 network: the node's overlay address and prefix on today's IPv4 data path.
    pub fn overlay_v4(&self) -> Option<Ipv4Net> {
        self.details.ips.first().copied()
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The canonical bytes (the PEM body).
    pub fn to_bytes(&self) -> &[u8] {
        &self.raw
    }

    pub fn to_pem(&self) -> String {
        let banner = match self.tbs.version {
            Version::V1 => armor::CERTIFICATE,
            Version::V2 => armor::CERTIFICATE_V2,
        };
        armor::encode(banner, &self.raw)
    }

    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }

    /// The node's overlay address: the first IPv4 network (for v1, the first IP, as Nebula uses it).
    pub fn vpn_ip(&self) -> Option<Ipv4Addr> {
        self.overlay_v4().map(|n| n.addr())
    }

    /// The node's identity on the overlay, how the mesh names it: the first IPv4 network's
    /// address ([`Certificate::vpn_ip`]), or the first network's for a certificate with only
    /// IPv6 networks.
    pub fn identity(&self) -> Option<IpAddr> {
        self.vpn_ip().map(IpAddr::V4).or_else(|| self.networks().first().map(IpNet::addr))
    }

    /// Whether `key` made the signature over the signed bytes (strict Ed25519).
    pub fn check_signature(&self, key: &[u8; 32]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(key) else {
            return false;
        };
        key.verify_strict(&self.signed, &Signature::from_bytes(&self.signature)).is_ok()
    }

    pub fn is_expired(&self, now: UnixTime) -> bool {
        now > self.tbs.not_after
    }

    pub fn is_not_yet_valid(&self, now: UnixTime) -> bool {
        now < self.tbs.not_before
    }
}

#[cfg(test)]
mod tests;
