//! Key material in Nebula's PEM formats. Secret types never print their bytes (`Debug` is
//! redacted) and zero their memory on drop.

use std::fmt;

use ed25519_dalek::SigningKey;
use rand_core::{OsRng, RngCore};
use thiserror::Error;
use zeroize::Zeroizing;

use super::armor::{self, ArmorError};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error(transparent)]
    Armor(#[from] ArmorError),
    #[error("expected one {expected} PEM block, found {found}")]
    WrongBanner { expected: &'static str, found: String },
    #[error("{what} is {len} bytes, expected {expected}")]
    Length { what: &'static str, len: usize, expected: usize },
    #[error("the CA private key's public half does not match its seed (corrupt key file?)")]
    Inconsistent,
}

fn single_block(input: &[u8], expected: &'static str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let mut blocks = armor::decode_all(input)?;
    let found = blocks.iter().map(|b| b.label.as_str()).collect::<Vec<_>>().join(", ");
    if blocks.len() != 1 || blocks[0].label != expected {
        for b in &mut blocks {
            zeroize::Zeroize::zeroize(&mut b.data);
        }
        return Err(KeyError::WrongBanner { expected, found });
    }
    Ok(Zeroizing::new(std::mem::take(&mut blocks[0].data)))
}

fn exact<const N: usize>(what: &'static str, bytes: &[u8]) -> Result<[u8; N], KeyError> {
    bytes.try_into().map_err(|_| KeyError::Length { what, len: bytes.len(), expected: N })
}

/// A host's X25519 private key: the WireGuard static secret. Stored unclamped, as Nebula does;
/// X25519 clamps when the key is used.
pub struct HostSecret(Zeroizing<[u8; 32]>);

impl HostSecret {
    pub fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(k.as_mut());
        HostSecret(k)
    }

    pub fn from_pem(input: &[u8]) -> Result<Self, KeyError> {
        let data = single_block(input, armor::X25519_PRIVATE_KEY)?;
        Ok(HostSecret(Zeroizing::new(exact("X25519 private key", &data)?)))
    }

    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(armor::encode(armor::X25519_PRIVATE_KEY, self.0.as_ref()))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn public(&self) -> HostPublic {
        let secret = x25519_dalek::StaticSecret::from(*self.0);
        HostPublic(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }
}

impl fmt::Debug for HostSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HostSecret(<redacted>)")
    }
}

/// A host's X25519 public key (what `sign --in-pub` takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostPublic(pub [u8; 32]);

impl HostPublic {
    pub fn from_pem(input: &[u8]) -> Result<Self, KeyError> {
        let data = single_block(input, armor::X25519_PUBLIC_KEY)?;
        Ok(HostPublic(exact("X25519 public key", &data)?))
    }

    pub fn to_pem(&self) -> String {
        armor::encode(armor::X25519_PUBLIC_KEY, &self.0)
    }
}

/// The CA's Ed25519 signing key, stored as Nebula does: 64 bytes, seed followed by public key.
pub struct CaSecret(SigningKey);

impl CaSecret {
    pub fn generate() -> Self {
        CaSecret(SigningKey::generate(&mut OsRng))
    }

    pub fn from_pem(input: &[u8]) -> Result<Self, KeyError> {
        let data = single_block(input, armor::ED25519_PRIVATE_KEY)?;
        let bytes = Zeroizing::new(exact::<64>("Ed25519 private key", &data)?);
        SigningKey::from_keypair_bytes(&bytes).map(CaSecret).map_err(|_| KeyError::Inconsistent)
    }

    pub fn to_pem(&self) -> Zeroizing<String> {
        let bytes = Zeroizing::new(self.0.to_keypair_bytes());
        Zeroizing::new(armor::encode(armor::ED25519_PRIVATE_KEY, bytes.as_ref()))
    }

    pub fn public(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.0
    }
}

impl fmt::Debug for CaSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CaSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_round_trip_and_match() {
        let secret = HostSecret::generate();
        let again = HostSecret::from_pem(secret.to_pem().as_bytes()).unwrap();
        assert_eq!(secret.bytes(), again.bytes());
        let public = HostPublic::from_pem(secret.public().to_pem().as_bytes()).unwrap();
        assert_eq!(public, again.public());
        assert!(!format!("{secret:?}").contains(&hex::encode(secret.bytes())));
    }

    #[test]
    fn ca_key_round_trips_and_detects_corruption() {
        let ca = CaSecret::generate();
        let again = CaSecret::from_pem(ca.to_pem().as_bytes()).unwrap();
        assert_eq!(ca.public(), again.public());
        let mut bytes = ca.0.to_keypair_bytes();
        bytes[40] ^= 1;
        let pem = armor::encode(armor::ED25519_PRIVATE_KEY, &bytes);
        assert_eq!(CaSecret::from_pem(pem.as_bytes()).unwrap_err(), KeyError::Inconsistent);
    }

    #[test]
    fn wrong_banner_and_length() {
        let public = HostSecret::generate().public().to_pem();
        assert!(matches!(HostSecret::from_pem(public.as_bytes()), Err(KeyError::WrongBanner { .. })));
        let short = armor::encode(armor::X25519_PRIVATE_KEY, &[1, 2, 3]);
        assert_eq!(
            HostSecret::from_pem(short.as_bytes()).unwrap_err(),
            KeyError::Length { what: "X25519 private key", len: 3, expected: 32 }
        );
    }
}
