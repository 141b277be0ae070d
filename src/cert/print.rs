//! How `print` shows a certificate: v1 exactly as `nebula-cert` 1.6.1 prints it (so runbooks and
//! scripts written for it keep working), v2 as `nebula-cert` 1.10+ does.

use std::fmt::Write;

use serde::Serialize;
use serde_json::{Value, json};

use super::{Certificate, Version};

impl Certificate {
    /// The JSON object `nebula-cert print -json` prints for this certificate (RFC 3339 UTC times).
    pub fn to_json(&self) -> Value {
        match self.version() {
            Version::V1 => self.json_v1(),
            Version::V2 => self.json_v2(),
        }
    }

    /// A human-readable rendering, the same as `nebula-cert print`: v1 in 1.6.1's layout, v2 as
    /// the JSON object indented with tabs (what 1.10+ prints).
    pub fn to_text(&self) -> String {
        match self.version() {
            Version::V1 => self.text_v1(),
            Version::V2 => {
                let mut out = Vec::new();
                let mut ser = serde_json::Serializer::with_formatter(
                    &mut out,
                    serde_json::ser::PrettyFormatter::with_indent(b"\t"),
                );
                let _ = self.json_v2().serialize(&mut ser);
                format!("{}\n", String::from_utf8_lossy(&out))
            }
        }
    }

    fn json_v1(&self) -> Value {
        let d = self.details();
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
            "fingerprint": self.fingerprint().to_string(),
            "signature": hex::encode(self.signature()),
        })
    }

    /// Nebula 1.10's `certificateV2.marshalJSON`. A list the certificate does not carry is
    /// `null`, as Go encodes the nil slice the decoder leaves.
    fn json_v2(&self) -> Value {
        let t = self.tbs();
        let list = |items: Vec<String>| if items.is_empty() { Value::Null } else { json!(items) };
        json!({
            "curve": "CURVE25519",
            "details": {
                "groups": list(t.groups.clone()),
                "isCa": t.is_ca,
                "issuer": t.issuer.map(|f| f.to_string()).unwrap_or_default(),
                "name": t.name,
                "networks": list(t.networks.iter().map(|n| n.to_string()).collect()),
                "notAfter": t.not_after.rfc3339(),
                "notBefore": t.not_before.rfc3339(),
                "unsafeNetworks": list(t.unsafe_networks.iter().map(|n| n.to_string()).collect()),
            },
            "fingerprint": self.fingerprint().to_string(),
            "publicKey": hex::encode(t.public_key),
            "signature": hex::encode(self.signature()),
            "version": 2,
        })
    }

    fn text_v1(&self) -> String {
        let d = self.details();
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
        let _ = writeln!(s, "\t}}\n\tFingerprint: {}", self.fingerprint());
        let _ = writeln!(s, "\tSignature: {}\n}}", hex::encode(self.signature()));
        s
    }
}
