//! Nebula v2 certificates (DER, `NEBULA CERTIFICATE V2`, Nebula 1.10+): strict parsing and
//! signing, byte-identical to Nebula's `cert` package.
//!
//! - Signed bytes: the raw Details element (tag and length included) ‖ one curve byte ‖ the
//!   public key. Fingerprint: SHA-256 of those bytes ‖ the signature.
//! - Only the canonical encoding is accepted: the parsed fields are re-encoded and must give back
//!   the received bytes, so no two encodings of one certificate carry two fingerprints.
//! - P-256 certificates are decoded completely, then refused: cos-mesh tunnels are WireGuard
//!   (boringtun), which is X25519-only.

use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

use super::der_v2::{self, RawCertificate, RawDetails};
use super::{Certificate, Fingerprint, ParseError, Tbs, Version, rules};
use crate::unixtime::UnixTime;

/// Nebula's `MaxCertificateSize`.
pub const MAX_V2_BYTES: usize = 65_536;

/// The curve byte of a Curve25519 certificate (Ed25519 signatures, X25519 host keys).
const CURVE25519: u8 = 0;
const P256: u8 = 1;

pub(super) fn parse(bytes: &[u8]) -> Result<Certificate, ParseError> {
    if bytes.len() > MAX_V2_BYTES {
        return Err(ParseError::TooLarge(bytes.len()));
    }
    let raw = der_v2::decode_certificate(bytes).map_err(|e| ParseError::DecodeV2(e.to_string()))?;
    let d = der_v2::decode_details(raw.details).map_err(|e| ParseError::DecodeV2(e.to_string()))?;
    if der_v2::encode_details(&d).ok().as_deref() != Some(raw.details)
        || der_v2::encode_certificate(&raw).ok().as_deref() != Some(bytes)
    {
        return Err(ParseError::NotCanonical);
    }
    match raw.curve {
        CURVE25519 => {}
        P256 => return Err(ParseError::UnsupportedCurve { name: d.name, curve: "P-256" }),
        _ => return Err(ParseError::UnsupportedCurve { name: d.name, curve: "an unknown curve" }),
    }
    let signature = rules::signature(raw.signature)?;
    let tbs = Tbs {
        version: Version::V2,
        public_key: rules::public_key(raw.public_key)?,
        issuer: rules::issuer(d.issuer.as_deref())?,
        name: d.name,
        networks: d.networks,
        unsafe_networks: d.unsafe_networks,
        groups: d.groups,
        not_before: UnixTime(d.not_before),
        not_after: UnixTime(d.not_after),
        is_ca: d.is_ca,
    };
    rules::check_v2(&tbs)?;
    let signed = signed_bytes(raw.details, raw.curve, raw.public_key);
    let mut fp = Sha256::new();
    fp.update(&signed);
    fp.update(raw.signature);
    Ok(Certificate::assemble(tbs, signature, signed, bytes.to_vec(), Fingerprint(fp.finalize().into())))
}

/// What the signature covers: the Details element ‖ curve ‖ public key.
pub fn signed_bytes(details: &[u8], curve: u8, public_key: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(details.len() + 1 + public_key.len());
    b.extend_from_slice(details);
    b.push(curve);
    b.extend_from_slice(public_key);
    b
}

/// The Details fields of `tbs` as Nebula encodes them, networks sorted as Nebula sorts them
/// before signing (address, then prefix length).
pub(super) fn raw_details(tbs: &Tbs) -> RawDetails {
    let mut networks = tbs.networks.clone();
    let mut unsafe_networks = tbs.unsafe_networks.clone();
    networks.sort_by_key(rules::sort_key);
    unsafe_networks.sort_by_key(rules::sort_key);
    RawDetails {
        name: tbs.name.clone(),
        networks,
        unsafe_networks,
        groups: tbs.groups.clone(),
        is_ca: tbs.is_ca,
        not_before: tbs.not_before.seconds(),
        not_after: tbs.not_after.seconds(),
        issuer: tbs.issuer.map(|f| f.0.to_vec()),
    }
}

/// Signs `tbs` as a v2 Curve25519 certificate; the result is parsed back, so every rule holds.
pub(super) fn sign(tbs: &Tbs, key: &SigningKey) -> Result<Certificate, ParseError> {
    let encode_err = |e: der_v2::DerError| ParseError::DecodeV2(e.to_string());
    let details = der_v2::encode_details(&raw_details(tbs)).map_err(encode_err)?;
    let signature = key.sign(&signed_bytes(&details, CURVE25519, &tbs.public_key)).to_bytes();
    let raw =
        RawCertificate { details: &details, curve: CURVE25519, public_key: &tbs.public_key, signature: &signature };
    parse(&der_v2::encode_certificate(&raw).map_err(encode_err)?)
}

#[cfg(test)]
#[path = "v2_tests.rs"]
mod tests;
