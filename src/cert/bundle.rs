//! A node's own certificates (`pki.cert`): one certificate, or a v1 and a v2 certificate for
//! the same key (Nebula's migration path), of which `pki.initiating_version` picks the one the
//! node presents.

use thiserror::Error;

use super::{Certificate, ParseError, Version};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BundleError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("holds two {0} certificates; it may hold at most one v1 and one v2 certificate")]
    Duplicate(Version),
    #[error("{name} is a CA certificate, not a host certificate")]
    IsCa { name: String },
    #[error("the v1 and the v2 certificate carry different public keys; both must be for this node's key")]
    KeyMismatch,
    #[error("the v1 certificate's first network {v1} differs from the v2 certificate's {v2}; they must match")]
    NetworkMismatch { v1: String, v2: String },
    #[error("pki.initiating_version is 1 but there is no v1 certificate")]
    NoV1,
}

/// This node's certificates: at most one per version, consistent with each other.
#[derive(Debug, Clone)]
pub struct HostCerts {
    /// The one `pki.initiating_version` picks (or the only one).
    presented: Certificate,
    other: Option<Certificate>,
}

impl HostCerts {
    /// Reads `pki.cert`. `initiating` defaults as in Nebula: v1 when a v1 certificate is present,
    /// else v2. Choosing v2 without a v2 certificate falls back to v1, as Nebula does.
    pub fn from_pem(input: &[u8], initiating: Option<Version>) -> Result<Self, BundleError> {
        let (mut v1, mut v2) = (None, None);
        for cert in Certificate::all_from_pem(input)? {
            if cert.is_ca() {
                return Err(BundleError::IsCa { name: cert.name().to_string() });
            }
            let slot = match cert.version() {
                Version::V1 => &mut v1,
                Version::V2 => &mut v2,
            };
            if slot.is_some() {
                return Err(BundleError::Duplicate(cert.version()));
            }
            *slot = Some(cert);
        }
        if let (Some(a), Some(b)) = (&v1, &v2) {
            if a.public_key() != b.public_key() {
                return Err(BundleError::KeyMismatch);
            }
            let first = |c: &Certificate| c.networks().first().map(|n| n.to_string()).unwrap_or_default();
            if a.networks().first() != b.networks().first() {
                return Err(BundleError::NetworkMismatch { v1: first(a), v2: first(b) });
            }
        }
        let want = match initiating {
            Some(Version::V1) if v1.is_none() => return Err(BundleError::NoV1),
            Some(v) => v,
            None if v1.is_some() => Version::V1,
            None => Version::V2,
        };
        let (presented, other) = match (want, v1, v2) {
            (Version::V2, v1, Some(v2)) => (v2, v1),
            (_, Some(v1), v2) => (v1, v2),
            (_, None, Some(v2)) => (v2, None),
            // all_from_pem refuses a file without blocks, so one of the two is set.
            (_, None, None) => return Err(BundleError::Parse(ParseError::Count(0))),
        };
        Ok(HostCerts { presented, other })
    }

    /// The certificate this node presents to its peers.
    pub fn presented(&self) -> &Certificate {
        &self.presented
    }

    /// Every certificate held, the presented one first.
    pub fn all(&self) -> impl Iterator<Item = &Certificate> {
        std::iter::once(&self.presented).chain(self.other.iter())
    }

    pub fn into_presented(self) -> Certificate {
        self.presented
    }
}
