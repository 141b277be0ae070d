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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::Tbs;
    use crate::cert::keys::CaSecret;
    use crate::unixtime::UnixTime;

    fn cert(ca: &CaSecret, version: Version, key: [u8; 32], networks: &[&str], is_ca: bool) -> Certificate {
        let tbs = Tbs {
            version,
            name: "n".into(),
            networks: networks.iter().map(|n| n.parse().unwrap()).collect(),
            unsafe_networks: vec![],
            groups: vec![],
            not_before: UnixTime(1),
            not_after: UnixTime(2),
            public_key: key,
            is_ca,
            issuer: (!is_ca).then_some(crate::cert::Fingerprint([3; 32])),
        };
        Certificate::sign_tbs(&tbs, ca.signing_key()).unwrap()
    }

    #[test]
    fn picks_the_initiating_version_and_checks_consistency() {
        let ca = CaSecret::generate();
        let v1 = cert(&ca, Version::V1, [1; 32], &["100.64.0.1/10"], false);
        let v2 = cert(&ca, Version::V2, [1; 32], &["100.64.0.1/10", "fd00::1/64"], false);
        let both = format!("{}{}", v2.to_pem(), v1.to_pem());
        let (only_v1, only_v2) = (v1.to_pem(), v2.to_pem());
        let pick =
            |pem: &str, v: Option<Version>| HostCerts::from_pem(pem.as_bytes(), v).map(|h| h.presented().version());
        // Nebula's default: v1 when present, else v2; v2 asked without a v2 copy falls back.
        let cases: Vec<(&str, Option<Version>, Result<Version, BundleError>)> = vec![
            (&both, None, Ok(Version::V1)),
            (&both, Some(Version::V2), Ok(Version::V2)),
            (&both, Some(Version::V1), Ok(Version::V1)),
            (&only_v2, None, Ok(Version::V2)),
            (&only_v2, Some(Version::V1), Err(BundleError::NoV1)),
            (&only_v1, Some(Version::V2), Ok(Version::V1)),
        ];
        for (pem, want_v, want) in cases {
            assert_eq!(pick(pem, want_v), want, "{want_v:?}");
        }
        assert_eq!(HostCerts::from_pem(both.as_bytes(), None).unwrap().all().count(), 2);

        let other_key = cert(&ca, Version::V2, [2; 32], &["100.64.0.1/10"], false);
        let other_net = cert(&ca, Version::V2, [1; 32], &["100.64.0.2/10"], false);
        let a_ca = cert(&ca, Version::V2, [1; 32], &[], true);
        let refusals: Vec<(String, BundleError)> = vec![
            (format!("{}{}", v1.to_pem(), other_key.to_pem()), BundleError::KeyMismatch),
            (
                format!("{}{}", v1.to_pem(), other_net.to_pem()),
                BundleError::NetworkMismatch { v1: "100.64.0.1/10".into(), v2: "100.64.0.2/10".into() },
            ),
            (format!("{}{}", v2.to_pem(), other_net.to_pem()), BundleError::Duplicate(Version::V2)),
            (a_ca.to_pem(), BundleError::IsCa { name: "n".into() }),
        ];
        for (pem, want) in refusals {
            assert_eq!(HostCerts::from_pem(pem.as_bytes(), None).unwrap_err(), want);
        }
    }
}
