//! The client's dynamic port range (`min_dynamic_port`/`max_dynamic_port`), taken from the
//! firewall so Nomad hands allocations exactly the ports the client rule set opens.

use thiserror::Error;

use crate::firewall::config::{FirewallConfig, RulesError, resolve};
use crate::firewall::rules::{PortSel, Rule};

/// Group whose members reach allocations on the dynamic ports (`firewall/nomad-client.yaml`).
pub const CLIENT_GROUP: &str = "nomad-client";

/// Nomad's defaults (`command/agent/config.go`), which `firewall/nomad-client.yaml` opens.
pub const DEFAULT_DYNAMIC_PORTS: (u16, u16) = (20000, 32000);

/// A port range and where it came from, said in a comment next to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicPorts {
    pub min: u16,
    pub max: u16,
    pub source: String,
}

impl DynamicPorts {
    pub fn nomad_default() -> DynamicPorts {
        DynamicPorts {
            min: DEFAULT_DYNAMIC_PORTS.0,
            max: DEFAULT_DYNAMIC_PORTS.1,
            source: "Nomad's default; no inbound port range for group nomad-client in the firewall".into(),
        }
    }
}

#[derive(Debug, Error)]
pub enum PortsError {
    #[error("firewall: {0}")]
    Firewall(#[from] RulesError),
    #[error(
        "the firewall opens several port ranges to group {CLIENT_GROUP} ({ranges}); \
         say which one is Nomad's with --dynamic-ports MIN-MAX"
    )]
    Ambiguous { ranges: String },
}

/// The inbound port range (more than one port) that the node's firewall opens to group
/// `nomad-client`, read from the `firewall` sections of the node's config files and their
/// includes; `None` when there is none.
pub fn from_firewall(sections: &[FirewallConfig]) -> Result<Option<DynamicPorts>, PortsError> {
    let mut found: Vec<(u16, u16, String)> = Vec::new();
    for section in sections {
        for sourced in resolve(section)?.inbound {
            let rule = Rule::compile(&sourced)?;
            if let PortSel::Range(min, max) = rule.port
                && min < max
                && rule.groups.iter().any(|g| g == CLIENT_GROUP)
            {
                found.push((min, max, rule.origin.to_string()));
            }
        }
    }
    let Some((min, max, origin)) = found.first().cloned() else {
        return Ok(None);
    };
    if found.iter().any(|(a, b, _)| (*a, *b) != (min, max)) {
        let ranges = found.iter().map(|(a, b, o)| format!("{a}-{b} at {o}")).collect::<Vec<_>>().join(", ");
        return Err(PortsError::Ambiguous { ranges });
    }
    Ok(Some(DynamicPorts { min, max, source: format!("the range {origin} opens to group {CLIENT_GROUP}") }))
}

/// clap value parser for `--dynamic-ports 20000-32000`.
pub fn parse_range(s: &str) -> Result<DynamicPorts, String> {
    match crate::firewall::rules::parse_port(s)? {
        PortSel::Range(min, max) if min < max => Ok(DynamicPorts { min, max, source: "--dynamic-ports".into() }),
        _ => Err(format!("{s:?}: expected a port range MIN-MAX, e.g. 20000-32000")),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::firewall::config::{load_rules_file, parse_rules_str};

    #[test]
    fn client_rule_set_opens_nomads_default_range() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("firewall/nomad-client.yaml");
        let ports = from_firewall(&[load_rules_file(&file).unwrap()]).unwrap().unwrap();
        assert_eq!((ports.min, ports.max), DEFAULT_DYNAMIC_PORTS);
        assert!(ports.source.contains("nomad-client.yaml:"), "{}", ports.source);
    }

    #[test]
    fn single_ports_and_other_groups_do_not_count() {
        let yaml = "inbound:\n  - {port: 4647, proto: tcp, group: nomad-client}\n  - {port: 8000-9000, proto: tcp, group: ops}\n";
        let cfg = parse_rules_str(yaml, Path::new("r.yaml")).unwrap();
        assert_eq!(from_firewall(&[cfg]).unwrap(), None);
    }

    #[test]
    fn two_different_ranges_are_ambiguous() {
        let yaml = "inbound:\n  - {port: 20000-32000, proto: any, group: nomad-client}\n  - {port: 8000-9000, proto: tcp, groups: [nomad-client, ops]}\n";
        let cfg = parse_rules_str(yaml, Path::new("r.yaml")).unwrap();
        let err = from_firewall(&[cfg]).unwrap_err().to_string();
        assert!(err.contains("20000-32000 at r.yaml:2") && err.contains("8000-9000 at r.yaml:3"), "{err}");
    }

    #[test]
    fn parse_range_wants_a_range() {
        assert_eq!(parse_range("21000-22000").unwrap().max, 22000);
        assert!(parse_range("4646").is_err());
        assert!(parse_range("any").is_err());
    }
}
