//! Nomad's mutual TLS from the inventory: an X.509 CA of its own (ECDSA P-256, separate from the
//! mesh CA) and, per node, the certificates `nomad tls cert create` makes — `server.<region>.nomad`
//! for servers, `client.<region>.nomad` for clients, `cli.<region>.nomad` for the CLI — with the
//! node's overlay address as an extra IP SAN so the CLI and UI also verify on overlay addresses.
//!
//! This file is pure apart from randomness: what a node needs ([`Spec`]), signing ([`Ca`]), and
//! whether an existing certificate still fits ([`inspect`], [`decide`]). [`issue`] does the files.

pub mod issue;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use rand_core::{OsRng, RngCore};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use thiserror::Error;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::inventory::renewal::Action;
use crate::unixtime::UnixTime;

/// The CA's file names, as `nomad tls ca create` writes them.
pub const CA_FILE: &str = "nomad-agent-ca.pem";
pub const CA_KEY_FILE: &str = "nomad-agent-ca-key.pem";
/// Lifetimes `nomad tls` uses: 5 years for the CA, 1 year for agents.
pub const CA_DAYS: u64 = 1825;
pub const CERT_DAYS: u64 = 365;
const DAY: u64 = 86_400;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("X.509: {0}")]
    X509(#[from] rcgen::Error),
    #[error("{what} is not a PEM certificate cos-mesh can read: {reason}")]
    Unreadable { what: String, reason: String },
    #[error("the Nomad CA key does not belong to the Nomad CA certificate")]
    KeyMismatch,
    #[error("the Nomad CA certificate is not a CA (basicConstraints CA:TRUE is missing)")]
    NotCa,
}

/// Which agent certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Server,
    Client,
    Cli,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Server => "server",
            Kind::Client => "client",
            Kind::Cli => "cli",
        }
    }

    /// The certificates a node with these groups gets: servers and clients their agent's, and
    /// everyone who talks to Nomad (agents, operators, Prometheus) a CLI certificate.
    pub fn for_groups(groups: &[String]) -> Vec<Kind> {
        let has = |g: &str| groups.iter().any(|x| x == g);
        let mut kinds = vec![];
        if has(crate::nomad::SERVER_GROUP) {
            kinds.push(Kind::Server);
        }
        if has(crate::nomad::ports::CLIENT_GROUP) {
            kinds.push(Kind::Client);
        }
        if !kinds.is_empty() || has("ops") || has("monitoring") {
            kinds.push(Kind::Cli);
        }
        kinds
    }
}

/// One certificate to have: its kind, the region, and the node's overlay address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub kind: Kind,
    pub region: String,
    pub overlay_ip: IpAddr,
}

impl Spec {
    /// `server.<region>.nomad`: what `verify_server_hostname` checks.
    pub fn common_name(&self) -> String {
        format!("{}.{}.nomad", self.kind.as_str(), self.region)
    }

    /// `<region>-server-nomad`: the certificate is `<stem>.pem`, its key `<stem>-key.pem`.
    pub fn file_stem(&self) -> String {
        format!("{}-{}-nomad", self.region, self.kind.as_str())
    }

    pub fn dns_names(&self) -> Vec<String> {
        vec![self.common_name(), "localhost".into()]
    }

    /// Agents answer on loopback and on the overlay; a CLI certificate only identifies.
    pub fn ips(&self) -> Vec<IpAddr> {
        match self.kind {
            Kind::Cli => vec![],
            _ => vec![IpAddr::V4(Ipv4Addr::LOCALHOST), self.overlay_ip],
        }
    }
}

/// The Nomad CA: its certificate (PEM) and key.
pub struct Ca {
    pub cert_pem: String,
    der: Vec<u8>,
    key: KeyPair,
}

fn time(t: UnixTime) -> Result<time::OffsetDateTime, rcgen::Error> {
    time::OffsetDateTime::from_unix_timestamp(t.seconds()).map_err(|_| rcgen::Error::Time)
}

fn serial() -> SerialNumber {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    b[0] &= 0x7f; // positive
    SerialNumber::from_slice(&b)
}

impl Ca {
    /// A new CA valid from a minute ago (clock skew) for [`CA_DAYS`].
    pub fn generate(now: UnixTime) -> Result<Ca, TlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "cos-mesh Nomad Agent CA");
        dn.push(DnType::OrganizationName, "cos-mesh");
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        p.not_before = time(now.add_secs(-60))?;
        p.not_after = time(now.plus(Duration::from_secs(CA_DAYS * DAY)))?;
        p.serial_number = Some(serial());
        let cert = p.self_signed(&key)?;
        Ok(Ca { cert_pem: cert.pem(), der: cert.der().to_vec(), key })
    }

    /// The CA from its files' contents, checked to be a CA whose key matches.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Ca, TlsError> {
        let der = pem_der(cert_pem, CA_FILE)?;
        let key = KeyPair::from_pem(key_pem)?;
        let (_, x) = X509Certificate::from_der(&der)
            .map_err(|e| TlsError::Unreadable { what: CA_FILE.into(), reason: e.to_string() })?;
        if !x.is_ca() {
            return Err(TlsError::NotCa);
        }
        if x.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(TlsError::KeyMismatch);
        }
        Ok(Ca { cert_pem: cert_pem.to_string(), der, key })
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// When the CA expires.
    pub fn not_after(&self) -> Result<UnixTime, TlsError> {
        let (_, x) = X509Certificate::from_der(&self.der)
            .map_err(|e| TlsError::Unreadable { what: CA_FILE.into(), reason: e.to_string() })?;
        Ok(UnixTime(x.validity().not_after.timestamp()))
    }

    /// Signs `spec` for `key`: what `nomad tls cert create` makes, plus the overlay IP SAN,
    /// valid for `days` but never past the CA.
    pub fn issue(&self, spec: &Spec, key: &KeyPair, now: UnixTime, days: u64) -> Result<String, TlsError> {
        let mut p = CertificateParams::new(spec.dns_names())?;
        p.subject_alt_names.extend(spec.ips().into_iter().map(SanType::IpAddress));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, spec.common_name());
        p.distinguished_name = dn;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        p.not_before = time(now.add_secs(-60))?;
        let end = now.plus(Duration::from_secs(days * DAY)).seconds().min(self.not_after()?.seconds());
        p.not_after = time(UnixTime(end))?;
        p.serial_number = Some(serial());
        let issuer = Issuer::from_ca_cert_der(&self.der.as_slice().into(), &self.key)?;
        Ok(p.signed_by(key, &issuer)?.pem())
    }
}

/// A new agent key (ECDSA P-256, PKCS#8 PEM, which Nomad's Go TLS loader reads).
pub fn new_key() -> Result<KeyPair, TlsError> {
    Ok(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?)
}

fn pem_der(text: &str, what: &str) -> Result<Vec<u8>, TlsError> {
    let p = pem::parse(text).map_err(|e| TlsError::Unreadable { what: what.into(), reason: e.to_string() })?;
    if p.tag() != "CERTIFICATE" {
        return Err(TlsError::Unreadable { what: what.into(), reason: format!("a {} block", p.tag()) });
    }
    Ok(p.into_contents())
}

/// What an existing agent certificate says, read back.
#[derive(Debug, Clone)]
pub struct Found {
    pub common_name: String,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub not_after: UnixTime,
    pub signed_by_ca: bool,
    /// The certificate's public key is the key file's.
    pub key_matches: bool,
}

/// Reads an existing certificate (`what` names it in errors) and checks it against the CA and
/// the key that would be kept.
pub fn inspect(cert_pem: &str, what: &str, ca: &Ca, key: &KeyPair) -> Result<Found, TlsError> {
    let der = pem_der(cert_pem, what)?;
    let unreadable = |e: String| TlsError::Unreadable { what: what.into(), reason: e };
    let (_, x) = X509Certificate::from_der(&der).map_err(|e| unreadable(e.to_string()))?;
    let (_, ca_x) = X509Certificate::from_der(&ca.der).map_err(|e| unreadable(e.to_string()))?;
    let mut dns_names = vec![];
    let mut ips = vec![];
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("4 bytes"))),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).expect("16 bytes"))),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    let common_name = x.subject().iter_common_name().next().and_then(|c| c.as_str().ok()).unwrap_or("").to_string();
    Ok(Found {
        common_name,
        dns_names,
        ips,
        not_after: UnixTime(x.validity().not_after.timestamp()),
        signed_by_ca: x.issuer() == ca_x.subject() && x.verify_signature(Some(ca_x.public_key())).is_ok(),
        key_matches: x.public_key().subject_public_key.data.as_ref() == key.public_key_raw(),
    })
}

/// Whether `spec` needs a certificate: none yet, one that no longer fits (another CA, another
/// key, other names or addresses, expiring within `renew_before`), or the one it has. A
/// certificate that ends with its CA (`ca_end`) is kept: re-signing could not extend it.
pub fn decide(
    spec: &Spec,
    found: Option<&Found>,
    now: UnixTime,
    renew_before: Duration,
    ca_end: UnixTime,
) -> (Action, Vec<String>) {
    let Some(f) = found else {
        return (Action::Issued, vec!["no certificate".into()]);
    };
    let mut reasons = vec![];
    if !f.signed_by_ca {
        reasons.push("not signed by this Nomad CA".to_string());
    }
    if !f.key_matches {
        reasons.push("its public key is not the key file's".into());
    }
    if f.common_name != spec.common_name() || sorted(&f.dns_names) != sorted(&spec.dns_names()) {
        reasons.push(format!(
            "names {} [{}] → {} [{}]",
            f.common_name,
            f.dns_names.join(","),
            spec.common_name(),
            spec.dns_names().join(",")
        ));
    }
    if sorted(&f.ips) != sorted(&spec.ips()) {
        let list = |ips: &[IpAddr]| ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        reasons.push(format!("IP SANs [{}] → [{}]", list(&f.ips), list(&spec.ips())));
    }
    let due = f.not_after <= now.plus(renew_before);
    if due && ca_end > f.not_after {
        reasons.push(format!("expires {}", f.not_after.rfc3339()));
    }
    if reasons.is_empty() {
        let mut notes = vec![format!("valid until {}", f.not_after.rfc3339())];
        if due {
            notes.push(format!("ends with the Nomad CA on {}: rotate the CA", ca_end.rfc3339()));
        }
        return (Action::Unchanged, notes);
    }
    (Action::Renewed, reasons)
}

fn sorted<T: Ord + Clone>(v: &[T]) -> Vec<T> {
    let mut v = v.to_vec();
    v.sort();
    v
}

#[cfg(test)]
mod tests;
