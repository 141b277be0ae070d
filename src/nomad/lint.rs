//! What would make the generated Nomad settings fail on the host, refused before printing.

use ipnet::Ipv4Net;
use thiserror::Error;

use super::{AgentSnippet, Gossip};

/// Networks Nomad and Docker put on every client by default. An overlay overlapping one of them
/// is routed into the bridge instead of `nebula1`, so allocations cannot reach the mesh.
pub const RESERVED_NETWORKS: [(&str, &str); 2] = [
    ("172.26.64.0/20", "Nomad's bridge network (client.bridge_network_subnet default)"),
    ("172.17.0.0/16", "Docker's default bridge docker0"),
];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LintError {
    #[error(
        "overlay network {overlay} overlaps {network}, {what}: traffic to the overlay would go into the bridge. \
         Re-address the mesh outside it (e.g. a CA with --ips 100.64.0.0/10), or move the bridge \
         (client.bridge_network_subnet, docker's bip) and generate the Nomad settings from a certificate outside it"
    )]
    ReservedOverlap { overlay: Ipv4Net, network: Ipv4Net, what: &'static str },
    #[error(
        "no Nomad servers to join: {source_desc} lists no member of group {group}. \
         Is the daemon running and are the lighthouses reachable (`cos-mesh members --group {group}`)? \
         Or take the servers from the PKI inventory: --servers-from inventory --inventory FILE"
    )]
    NoServers { source_desc: String, group: &'static str },
    #[error("{field} {value:?}: {reason}")]
    BadValue { field: &'static str, value: String, reason: &'static str },
    #[error("dynamic ports {min}-{max}: the minimum must be below the maximum")]
    PortRange { min: u16, max: u16 },
}

/// The checks [`AgentSnippet::render`] runs.
pub fn check(s: &AgentSnippet) -> Result<(), LintError> {
    overlay_clear_of_bridges(s.overlay())?;
    if let Some(name) = &s.join_dns {
        plain("--retry-join-dns", name, |c| c.is_ascii_alphanumeric() || "-_.".contains(c))?;
    }
    if s.servers.is_empty() && s.join_dns.is_none() {
        return Err(LintError::NoServers { source_desc: s.servers_from.clone(), group: super::SERVER_GROUP });
    }
    plain("tun.dev", &s.dev, |c| c.is_ascii_alphanumeric() || "-_.@".contains(c))?;
    if s.dev.len() > 15 {
        return Err(LintError::BadValue {
            field: "tun.dev",
            value: s.dev.clone(),
            reason: "Linux interface names have at most 15 characters",
        });
    }
    if let Some(dc) = &s.datacenter {
        plain("datacenter", dc, |c| c.is_ascii_alphanumeric() || "-_.".contains(c))?;
    }
    if let Some(region) = &s.region {
        plain("region", region, |c| c.is_ascii_alphanumeric() || "-_".contains(c))?;
    }
    if let Gossip::Key(key) = &s.gossip {
        use base64::Engine;
        let len = base64::engine::general_purpose::STANDARD.decode(key.trim()).map(|k| k.len());
        if !matches!(len, Ok(16 | 24 | 32)) {
            return Err(LintError::BadValue {
                field: "gossip key",
                value: "(not shown)".into(),
                reason: "expected 16, 24 or 32 bytes in base64 (what `nomad operator gossip keyring generate` prints)",
            });
        }
    }
    if s.roles.client && s.dynamic_ports.min >= s.dynamic_ports.max {
        return Err(LintError::PortRange { min: s.dynamic_ports.min, max: s.dynamic_ports.max });
    }
    Ok(())
}

/// Refuses an overlay that overlaps Nomad's or Docker's default bridge.
pub fn overlay_clear_of_bridges(overlay: Ipv4Net) -> Result<(), LintError> {
    for (net, what) in RESERVED_NETWORKS {
        let network: Ipv4Net = net.parse().expect("constant network");
        if overlay.contains(&network.network()) || network.contains(&overlay.network()) {
            return Err(LintError::ReservedOverlap { overlay, network, what });
        }
    }
    Ok(())
}

fn plain(field: &'static str, value: &str, ok: impl Fn(char) -> bool) -> Result<(), LintError> {
    if value.is_empty() || !value.chars().all(ok) {
        return Err(LintError::BadValue {
            field,
            value: value.into(),
            reason: "use letters, digits, '-', '_' and '.' only",
        });
    }
    Ok(())
}
