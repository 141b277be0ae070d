//! Trust: a pool of CA certificates, a blocklist, and verification in Nebula's order.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use ipnet::IpNet;
use thiserror::Error;

use super::{Certificate, Fingerprint, ParseError, Tbs, armor};
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
    IpNotAllowed { ip: IpNet, ca: String, allowed: String },
    #[error(
        "certificate contained a subnet assignment outside the limitations of the signing ca: {subnet} (CA {ca} allows {allowed})"
    )]
    SubnetNotAllowed { subnet: IpNet, ca: String, allowed: String },
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
    #[error("no usable CA certificate in the bundle: {}", .skipped.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("; "))]
    NoUsableCa { skipped: Vec<Skipped> },
}

/// A PEM block of a CA bundle that cannot be used, and why. Nebula skips such blocks too, so one
/// P-256 or malformed block does not take the whole bundle down with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// 1-based line of the block's BEGIN marker.
    pub line: usize,
    pub label: String,
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "block at line {} ({}) skipped: {}", self.line, self.label, self.reason)
    }
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
    /// Loads a bundle (one or more PEM blocks, v1 and v2 CAs mixed), skipping blocks that
    /// cannot be used (each logged as a warning). See [`CaPool::load`].
    pub fn from_pem(input: &[u8]) -> Result<Self, PoolError> {
        let (pool, skipped) = Self::load(input)?;
        for s in skipped {
            tracing::warn!("CA bundle: {s}");
        }
        Ok(pool)
    }

    /// Loads a bundle and says which blocks it skipped: a block that is not a certificate, not a
    /// CA, not self-signed, or not usable by cos-mesh (P-256) is left out; a bundle with no usable
    /// CA at all is an error naming every skipped block. Text outside PEM blocks is an error.
    pub fn load(input: &[u8]) -> Result<(Self, Vec<Skipped>), PoolError> {
        let mut pool = CaPool::default();
        let mut skipped = Vec::new();
        for block in armor::decode_all(input).map_err(ParseError::from)? {
            let added = Certificate::from_block(&block).map_err(PoolError::from).and_then(|c| pool.add(c));
            if let Err(e) = added {
                skipped.push(Skipped { line: block.line, label: block.label.clone(), reason: e.to_string() });
            }
        }
        if pool.is_empty() {
            return Err(PoolError::NoUsableCa { skipped });
        }
        Ok((pool, skipped))
    }

    pub fn add(&mut self, cert: Certificate) -> Result<(), PoolError> {
        if !cert.is_ca() {
            return Err(PoolError::NotCa { name: cert.name().to_string() });
        }
        if cert.issuer().is_some() || !cert.check_signature(cert.public_key()) {
            return Err(PoolError::NotSelfSigned { name: cert.name().to_string() });
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
        if !cert.check_signature(ca.public_key()) {
            return Err(VerifyError::BadSignature { name: name(), ca: ca.name().into() });
        }
        check_constraints(&ca, cert.tbs())?;
        if d.is_ca {
            return Err(VerifyError::IsCa { name: name() });
        }
        Ok(VerifiedCert { cert, ca })
    }
}

/// What a CA allows its certificates to carry (`CheckCAConstraints` in Nebula): validity within
/// the CA's, groups among the CA's groups, networks and unsafe networks inside the CA's with a
/// prefix at least as long. A CA without groups, networks or unsafe networks does not limit that
/// field. The versions may differ: a v2 CA signs v1 certificates (Nebula's migration path).
pub fn check_constraints(ca: &Certificate, t: &Tbs) -> Result<(), VerifyError> {
    let c = ca.tbs();
    let ca_name = || ca.name().to_string();
    if t.not_after > c.not_after {
        return Err(VerifyError::OutlivesCa {
            name: t.name.clone(),
            cert: t.not_after,
            ca: ca_name(),
            ca_not_after: c.not_after,
        });
    }
    if t.not_before < c.not_before {
        return Err(VerifyError::PredatesCa {
            name: t.name.clone(),
            cert: t.not_before,
            ca: ca_name(),
            ca_not_before: c.not_before,
        });
    }
    if !c.groups.is_empty()
        && let Some(g) = t.groups.iter().find(|g| !c.groups.contains(g))
    {
        return Err(VerifyError::GroupNotAllowed { group: g.clone(), ca: ca_name(), allowed: c.groups.join(",") });
    }
    let list = |nets: &[IpNet]| nets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
    if !c.networks.is_empty()
        && let Some(ip) = t.networks.iter().find(|ip| !net_within(ip, &c.networks))
    {
        return Err(VerifyError::IpNotAllowed { ip: *ip, ca: ca_name(), allowed: list(&c.networks) });
    }
    if !c.unsafe_networks.is_empty()
        && let Some(s) = t.unsafe_networks.iter().find(|s| !net_within(s, &c.unsafe_networks))
    {
        return Err(VerifyError::SubnetNotAllowed { subnet: *s, ca: ca_name(), allowed: list(&c.unsafe_networks) });
    }
    Ok(())
}

fn net_within(inner: &IpNet, outer: &[IpNet]) -> bool {
    outer.iter().any(|o| o.contains(&inner.addr()) && inner.prefix_len() >= o.prefix_len())
}
