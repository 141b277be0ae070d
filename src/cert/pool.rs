//! Trust: a pool of CA certificates, a blocklist, and verification in Nebula's order.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use ipnet::Ipv4Net;
use thiserror::Error;

use super::{Certificate, Fingerprint, ParseError};
use crate::unixtime::UnixTime;

/// Why a certificate is not trusted, in the operator's words. The first words of each message
/// match `nebula-cert verify`'s, so runbooks written for Nebula still apply.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum VerifyError {
    #[error("certificate has been blocked: {name} ({fingerprint})")]
    Blocklisted { name: String, fingerprint: Fingerprint },
    #[error("could not find ca for the certificate: {name} is signed by {issuer}, which is not in the CA bundle")]
    UnknownCa { name: String, issuer: String },
    #[error("root certificate is expired: CA {ca} expired at {not_after}")]
    CaExpired { ca: String, not_after: UnixTime },
    #[error("certificate is expired: {name} expired at {not_after}")]
    Expired { name: String, not_after: UnixTime },
    #[error("certificate is not yet valid: {name} is valid from {not_before}")]
    NotYetValid { name: String, not_before: UnixTime },
    #[error("certificate signature did not match: {name} was not signed by CA {ca}")]
    BadSignature { name: String, ca: String },
    #[error("certificate expires after signing certificate: {name} ends {cert} but CA {ca} ends {ca_not_after}")]
    OutlivesCa { name: String, cert: UnixTime, ca: String, ca_not_after: UnixTime },
    #[error(
        "certificate is valid before the signing certificate: {name} starts {cert} but CA {ca} starts {ca_not_before}"
    )]
    PredatesCa { name: String, cert: UnixTime, ca: String, ca_not_before: UnixTime },
    #[error("certificate contained a group not present on the signing ca: {group:?} (CA {ca} allows {allowed})")]
    GroupNotAllowed { group: String, ca: String, allowed: String },
    #[error(
        "certificate contained an ip assignment outside the limitations of the signing ca: {ip} (CA {ca} allows {allowed})"
    )]
    IpNotAllowed { ip: Ipv4Net, ca: String, allowed: String },
    #[error(
        "certificate contained a subnet assignment outside the limitations of the signing ca: {subnet} (CA {ca} allows {allowed})"
    )]
    SubnetNotAllowed { subnet: Ipv4Net, ca: String, allowed: String },
    #[error("{name} is a CA certificate, not a node certificate")]
    IsCa { name: String },
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PoolError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("certificate {name:?} is not a CA")]
    NotCa { name: String },
    #[error("CA certificate {name:?} is not self-signed")]
    NotSelfSigned { name: String },
}

/// The trusted CAs, keyed by fingerprint. Expired CAs are kept (and reported by
/// [`CaPool::expired`]), so that their certificates fail with "root certificate is expired"
/// instead of the more confusing "could not find ca".
#[derive(Debug, Clone, Default)]
pub struct CaPool {
    cas: BTreeMap<Fingerprint, Arc<Certificate>>,
}

/// A certificate that verified against a pool at a given time. Only [`CaPool::verify`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedCert {
    cert: Arc<Certificate>,
    ca: Arc<Certificate>,
}

impl VerifiedCert {
    pub fn cert(&self) -> &Arc<Certificate> {
        &self.cert
    }
    pub fn ca(&self) -> &Arc<Certificate> {
        &self.ca
    }
    pub fn ca_name(&self) -> &str {
        self.ca.name()
    }
    pub fn ca_fingerprint(&self) -> Fingerprint {
        self.ca.fingerprint()
    }
}

/// Fingerprints of certificates that must not be trusted even though they verify.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blocklist(HashSet<Fingerprint>);

impl Blocklist {
    /// Parses hex fingerprints; the error names the offending entry by position.
    pub fn from_hex<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| e.as_ref().parse::<Fingerprint>().map_err(|err| format!("entry {i}: {err}")))
            .collect::<Result<HashSet<_>, _>>()
            .map(Blocklist)
    }
    pub fn contains(&self, f: &Fingerprint) -> bool {
        self.0.contains(f)
    }
    pub fn insert(&mut self, f: Fingerprint) {
        self.0.insert(f);
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl CaPool {
    /// Loads a bundle (one or more PEM blocks). Every block must be a self-signed CA.
    pub fn from_pem(input: &[u8]) -> Result<Self, PoolError> {
        let mut pool = CaPool::default();
        for cert in Certificate::all_from_pem(input)? {
            pool.add(cert)?;
        }
        Ok(pool)
    }

    pub fn add(&mut self, cert: Certificate) -> Result<(), PoolError> {
        let d = cert.details();
        if !d.is_ca {
            return Err(PoolError::NotCa { name: d.name.clone() });
        }
        if d.issuer.is_some() || !cert.check_signature(&d.public_key) {
            return Err(PoolError::NotSelfSigned { name: d.name.clone() });
        }
        self.cas.insert(cert.fingerprint(), Arc::new(cert));
        Ok(())
    }

    pub fn get(&self, f: &Fingerprint) -> Option<&Arc<Certificate>> {
        self.cas.get(f)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Certificate>> {
        self.cas.values()
    }

    pub fn len(&self) -> usize {
        self.cas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cas.is_empty()
    }

    /// CAs that have expired at `now` (worth a loud warning at start and reload).
    pub fn expired(&self, now: UnixTime) -> Vec<&Arc<Certificate>> {
        self.cas.values().filter(|c| c.is_expired(now)).collect()
    }

    /// Verifies a node certificate in Nebula's order: blocklist, issuer known, CA expired,
    /// certificate validity, signature, CA constraints.
    pub fn verify(
        &self,
        cert: &Certificate,
        now: UnixTime,
        blocklist: &Blocklist,
    ) -> Result<VerifiedCert, VerifyError> {
        self.verify_arc(Arc::new(cert.clone()), now, blocklist)
    }

    /// Re-validates a certificate that verified earlier: blocklist, CA still trusted and
    /// unexpired, certificate still within its validity. No signature check (it cannot change).
    pub fn recheck(&self, v: &VerifiedCert, now: UnixTime, blocklist: &Blocklist) -> Result<(), VerifyError> {
        let d = v.cert.details();
        if blocklist.contains(&v.cert.fingerprint()) {
            return Err(VerifyError::Blocklisted { name: d.name.clone(), fingerprint: v.cert.fingerprint() });
        }
        if !self.cas.contains_key(&v.ca.fingerprint()) {
            return Err(VerifyError::UnknownCa { name: d.name.clone(), issuer: v.ca.fingerprint().to_string() });
        }
        if v.ca.is_expired(now) {
            return Err(VerifyError::CaExpired { ca: v.ca.name().into(), not_after: v.ca.details().not_after });
        }
        if v.cert.is_expired(now) {
            return Err(VerifyError::Expired { name: d.name.clone(), not_after: d.not_after });
        }
        if v.cert.is_not_yet_valid(now) {
            return Err(VerifyError::NotYetValid { name: d.name.clone(), not_before: d.not_before });
        }
        Ok(())
    }

    /// As [`CaPool::verify`], without copying a certificate already shared.
    pub fn verify_arc(
        &self,
        cert: Arc<Certificate>,
        now: UnixTime,
        blocklist: &Blocklist,
    ) -> Result<VerifiedCert, VerifyError> {
        let d = cert.details();
        let name = || d.name.clone();
        if blocklist.contains(&cert.fingerprint()) {
            return Err(VerifyError::Blocklisted { name: name(), fingerprint: cert.fingerprint() });
        }
        let ca = d
            .issuer
            .and_then(|i| self.cas.get(&i))
            .ok_or_else(|| VerifyError::UnknownCa {
                name: name(),
                issuer: d.issuer.map(|i| i.to_string()).unwrap_or_else(|| "nobody (self-signed)".into()),
            })?
            .clone();
        if ca.is_expired(now) {
            return Err(VerifyError::CaExpired { ca: ca.name().into(), not_after: ca.details().not_after });
        }
        if cert.is_expired(now) {
            return Err(VerifyError::Expired { name: name(), not_after: d.not_after });
        }
        if cert.is_not_yet_valid(now) {
            return Err(VerifyError::NotYetValid { name: name(), not_before: d.not_before });
        }
        if !cert.check_signature(&ca.details().public_key) {
            return Err(VerifyError::BadSignature { name: name(), ca: ca.name().into() });
        }
        check_constraints(&ca, d)?;
        if d.is_ca {
            return Err(VerifyError::IsCa { name: name() });
        }
        Ok(VerifiedCert { cert, ca })
    }
}

/// What a CA allows its certificates to carry (`CheckRootConstrains` in Nebula): validity within
/// the CA's, groups among the CA's groups, IPs and subnets inside the CA's networks with a prefix
/// at least as long. A CA without groups, IPs or subnets does not limit that field.
pub fn check_constraints(ca: &Certificate, d: &super::Details) -> Result<(), VerifyError> {
    let c = ca.details();
    let ca_name = || ca.name().to_string();
    if d.not_after > c.not_after {
        return Err(VerifyError::OutlivesCa {
            name: d.name.clone(),
            cert: d.not_after,
            ca: ca_name(),
            ca_not_after: c.not_after,
        });
    }
    if d.not_before < c.not_before {
        return Err(VerifyError::PredatesCa {
            name: d.name.clone(),
            cert: d.not_before,
            ca: ca_name(),
            ca_not_before: c.not_before,
        });
    }
    if !c.groups.is_empty()
        && let Some(g) = d.groups.iter().find(|g| !c.groups.contains(g))
    {
        return Err(VerifyError::GroupNotAllowed { group: g.clone(), ca: ca_name(), allowed: c.groups.join(",") });
    }
    let list = |nets: &[Ipv4Net]| nets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
    if !c.ips.is_empty()
        && let Some(ip) = d.ips.iter().find(|ip| !net_within(ip, &c.ips))
    {
        return Err(VerifyError::IpNotAllowed { ip: *ip, ca: ca_name(), allowed: list(&c.ips) });
    }
    if !c.subnets.is_empty()
        && let Some(s) = d.subnets.iter().find(|s| !net_within(s, &c.subnets))
    {
        return Err(VerifyError::SubnetNotAllowed { subnet: *s, ca: ca_name(), allowed: list(&c.subnets) });
    }
    Ok(())
}

fn net_within(inner: &Ipv4Net, outer: &[Ipv4Net]) -> bool {
    outer.iter().any(|o| o.contains(&inner.addr()) && inner.prefix_len() >= o.prefix_len())
}
