//! What a node of the inventory needs: nothing, a first certificate, or a renewal. Pure: the
//! caller passes the certificate and key material it found and the time.

use std::collections::BTreeSet;
use std::time::Duration;

use super::Node;
use crate::cert::pool::{VerifyError, check_constraints};
use crate::cert::{Certificate, Tbs, Version};
use crate::unixtime::UnixTime;

/// How long certificates live and when they are renewed.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Renew a certificate that expires within this time.
    pub renew_before: Duration,
    /// Lifetime of a new certificate; `None`: until one second before the CA expires.
    pub duration: Option<Duration>,
    /// Certificate format to issue (`sign --version`; by default the CA's).
    pub version: Version,
}

/// Where the public key to sign comes from. A renewal keeps the node's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `<name>.key` in the output directory.
    KeyFile,
    /// `<name>.pub` (from `cos-mesh keygen` on the host; the private key never left it).
    PubFile,
    /// The existing certificate's public key: the private key lives only on the host.
    Certificate,
    /// Nothing exists yet: a new key pair, written as `<name>.key`.
    Generated,
}

/// What exists for a node before signing.
#[derive(Debug, Clone)]
pub struct Existing {
    pub cert: Option<Certificate>,
    /// The public key to sign and where it came from.
    pub public_key: [u8; 32],
    pub key_source: KeySource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// No certificate yet.
    Issued,
    /// A certificate exists but is due or no longer matches; replaced, same key.
    Renewed,
    /// A valid certificate that matches the inventory; not touched.
    Unchanged,
}

/// The decision for one node, with the reasons an operator reads.
#[derive(Debug, Clone)]
pub struct Decision {
    pub action: Action,
    pub reasons: Vec<String>,
    /// What to sign, for `Issued` and `Renewed`.
    pub details: Option<Tbs>,
}

/// Decides what `node` needs. Errors are the CA's constraints (IP outside its networks, a group
/// it does not list, a lifetime past its end) for a certificate that would be signed.
pub fn decide(
    node: &Node,
    ca: &Certificate,
    existing: &Existing,
    now: UnixTime,
    policy: &Policy,
) -> Result<Decision, VerifyError> {
    let ca_end = ca.details().not_after;
    let not_after = match policy.duration {
        Some(d) if !d.is_zero() => now.plus(d),
        _ => ca_end.add_secs(-1),
    };
    let details = Tbs {
        version: policy.version,
        name: node.name.clone(),
        networks: node.networks.clone(),
        unsafe_networks: node.subnets.clone(),
        groups: node.groups.clone(),
        not_before: now,
        not_after,
        public_key: existing.public_key,
        is_ca: false,
        issuer: Some(ca.fingerprint()),
    };
    let Some(cert) = &existing.cert else {
        check_constraints(ca, &details)?;
        let mut reasons = vec!["no certificate".to_string()];
        if existing.key_source == KeySource::Generated {
            reasons.push("new key".into());
        }
        return Ok(Decision { action: Action::Issued, reasons, details: Some(details) });
    };

    let have = cert.tbs();
    let mut reasons = Vec::new();
    if have.issuer != Some(ca.fingerprint()) || !cert.check_signature(ca.public_key()) {
        reasons.push(format!("not signed by this CA ({})", ca.name()));
    }
    if have.is_ca {
        reasons.push("is a CA certificate".into());
    }
    if have.public_key != existing.public_key {
        reasons.push(format!("its public key is not the one in {}", key_file_kind(existing.key_source)));
    }
    if have.name != details.name {
        reasons.push(format!("name {:?} → {:?}", have.name, details.name));
    }
    if have.version != details.version {
        reasons.push(format!("version {} → {}", have.version, details.version));
    }
    if set(&have.networks) != set(&details.networks) {
        reasons.push(format!("networks {} → {}", list(&have.networks), list(&details.networks)));
    }
    if set(&have.groups) != set(&details.groups) {
        reasons.push(format!("groups [{}] → [{}]", have.groups.join(","), details.groups.join(",")));
    }
    if set(&have.unsafe_networks) != set(&details.unsafe_networks) {
        reasons.push(format!("subnets {} → {}", list(&have.unsafe_networks), list(&details.unsafe_networks)));
    }
    let due = have.not_after <= now.plus(policy.renew_before);
    if due && details.not_after > have.not_after {
        let when = if cert.is_expired(now) { "expired" } else { "expires" };
        reasons.push(format!(
            "{when} {} (renew-before {})",
            have.not_after.rfc3339(),
            crate::duration::format(policy.renew_before)
        ));
    }
    if reasons.is_empty() {
        let mut notes = vec![format!("valid until {}", have.not_after.rfc3339())];
        if due {
            // Re-signing cannot help: no new certificate may outlive the CA.
            notes.push(format!(
                "expires with its CA {} on {}: rotate the CA (pki/README.md)",
                ca.name(),
                ca_end.rfc3339()
            ));
        }
        return Ok(Decision { action: Action::Unchanged, reasons: notes, details: None });
    }
    check_constraints(ca, &details)?;
    Ok(Decision { action: Action::Renewed, reasons, details: Some(details) })
}

fn key_file_kind(source: KeySource) -> &'static str {
    match source {
        KeySource::KeyFile => "<name>.key",
        KeySource::PubFile => "<name>.pub",
        KeySource::Certificate | KeySource::Generated => "the key",
    }
}

fn set<T: Ord + Clone>(items: &[T]) -> BTreeSet<T> {
    items.iter().cloned().collect()
}

fn list(nets: &[ipnet::IpNet]) -> String {
    format!("[{}]", nets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::Details;
    use crate::cert::keys::CaSecret;

    const DAY: u64 = 86_400;

    fn ca(key: &CaSecret) -> Certificate {
        let d = Details {
            name: "ca".into(),
            ips: vec!["100.64.0.0/10".parse().unwrap()],
            subnets: vec![],
            groups: vec!["nomad-server".into(), "nomad-client".into(), "ops".into()],
            not_before: UnixTime(1_000_000),
            not_after: UnixTime(1_000_000 + 3650 * DAY as i64),
            public_key: key.public(),
            is_ca: true,
            issuer: None,
        };
        Certificate::sign(&d, key.signing_key()).unwrap()
    }

    fn node(groups: &[&str]) -> Node {
        Node {
            name: "s1".into(),
            ip: "100.64.0.11/10".parse().unwrap(),
            networks: vec!["100.64.0.11/10".parse().unwrap()],
            role: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            subnets: vec![],
            entry: "nodes[0]".into(),
        }
    }

    fn policy() -> Policy {
        Policy {
            renew_before: Duration::from_secs(30 * DAY),
            duration: Some(Duration::from_secs(365 * DAY)),
            version: Version::V1,
        }
    }

    #[test]
    fn issue_then_keep_then_renew_for_groups_and_expiry() {
        let key = CaSecret::generate();
        let ca = ca(&key);
        let now = UnixTime(2_000_000);
        let mut existing = Existing { cert: None, public_key: [7; 32], key_source: KeySource::Generated };
        let d = decide(&node(&["nomad-server"]), &ca, &existing, now, &policy()).unwrap();
        assert_eq!((d.action, d.reasons.join(";").as_str()), (Action::Issued, "no certificate;new key"));
        existing.cert = Some(Certificate::sign_tbs(&d.details.unwrap(), key.signing_key()).unwrap());
        existing.key_source = KeySource::Certificate;

        let keep = decide(&node(&["nomad-server"]), &ca, &existing, now.plus(Duration::from_secs(DAY)), &policy());
        assert_eq!(keep.unwrap().action, Action::Unchanged);

        let regroup = decide(&node(&["nomad-server", "ops"]), &ca, &existing, now, &policy()).unwrap();
        assert_eq!(regroup.action, Action::Renewed);
        assert_eq!(regroup.reasons, ["groups [nomad-server] → [nomad-server,ops]"]);

        let late = now.plus(Duration::from_secs(340 * DAY));
        let renew = decide(&node(&["nomad-server"]), &ca, &existing, late, &policy()).unwrap();
        assert_eq!(renew.action, Action::Renewed);
        assert!(renew.reasons[0].starts_with("expires "), "{:?}", renew.reasons);
        assert_eq!(renew.details.unwrap().public_key, [7; 32], "a renewal keeps the key");
    }

    #[test]
    fn near_the_ca_end_nothing_is_resigned_in_a_loop() {
        let key = CaSecret::generate();
        let ca = ca(&key);
        let now = ca.details().not_after.add_secs(-(10 * DAY as i64));
        let p = Policy { duration: None, ..policy() };
        let mut existing = Existing { cert: None, public_key: [7; 32], key_source: KeySource::KeyFile };
        let d = decide(&node(&[]), &ca, &existing, now, &p).unwrap();
        existing.cert = Some(Certificate::sign_tbs(&d.details.unwrap(), key.signing_key()).unwrap());
        let again = decide(&node(&[]), &ca, &existing, now.add_secs(60), &p).unwrap();
        assert_eq!(again.action, Action::Unchanged);
        assert!(again.reasons[1].contains("rotate the CA"), "{:?}", again.reasons);
    }

    #[test]
    fn constraint_errors_and_foreign_ca() {
        let key = CaSecret::generate();
        let ca = ca(&key);
        let now = UnixTime(2_000_000);
        let existing = Existing { cert: None, public_key: [7; 32], key_source: KeySource::Generated };
        let mut n = node(&["nomad-server"]);
        n.networks = vec!["10.0.0.1/8".parse().unwrap()];
        assert!(matches!(decide(&n, &ca, &existing, now, &policy()), Err(VerifyError::IpNotAllowed { .. })));
        let err = decide(&node(&["admins"]), &ca, &existing, now, &policy()).unwrap_err();
        assert!(matches!(err, VerifyError::GroupNotAllowed { .. }));

        let other_key = CaSecret::generate();
        let other = self::ca(&other_key);
        let d = decide(&node(&[]), &other, &existing, now, &policy()).unwrap();
        let foreign = Existing {
            cert: Some(Certificate::sign_tbs(&d.details.unwrap(), other_key.signing_key()).unwrap()),
            ..existing
        };
        let r = decide(&node(&[]), &ca, &foreign, now, &policy()).unwrap();
        assert_eq!((r.action, r.reasons[0].as_str()), (Action::Renewed, "not signed by this CA (ca)"));
    }
}
