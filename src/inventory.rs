//! PKI as code: an inventory file lists every node of the mesh (name, overlay IP, role, extra
//! groups, routed subnets), and `cos-mesh sign --inventory` makes the certificates match it.
//!
//! This module reads and checks the inventory (pure apart from reading the file);
//! [`renewal`] decides what each node needs, [`apply`] reads and writes the files.

pub mod apply;
pub mod renewal;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use serde_saphyr::Spanned;
use thiserror::Error;

/// Largest inventory read; a thousand nodes take about 100 kB.
const MAX_FILE: u64 = 8 << 20;

/// A checked inventory: names and IPs unique, every role defined, names usable as file names.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub path: PathBuf,
    pub nodes: Vec<Node>,
    /// Where the nodes run for Nomad and Consul (`region`, `datacenter`, `gossip_key`).
    pub nomad: NomadSite,
}

/// The inventory's Nomad and Consul settings: one region per inventory, a datacenter per node
/// (the file's default unless a node names its own), and the file holding the mesh's gossip
/// encryption key (kept next to the inventory, generated once by `cos-mesh nomad tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NomadSite {
    pub region: String,
    pub datacenter: String,
    /// Node name → datacenter, for nodes that name their own.
    pub node_datacenters: BTreeMap<String, String>,
    /// Absolute, or relative to the inventory's directory as written.
    pub gossip_key: PathBuf,
}

impl NomadSite {
    /// Nomad's own defaults.
    pub const DEFAULT_REGION: &str = "global";
    pub const DEFAULT_DATACENTER: &str = "dc1";
    pub const DEFAULT_GOSSIP_KEY: &str = "nomad-gossip.key";

    /// The datacenter of the node named `name`.
    pub fn datacenter_of(&self, name: &str) -> &str {
        self.node_datacenters.get(name).map(String::as_str).unwrap_or(&self.datacenter)
    }
}

/// One node, with its groups resolved (role groups first, then extra groups, no duplicates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// The node's identity network: the first IPv4 network (e.g. 100.64.0.11/10), or the first
    /// network of an IPv6-only node.
    pub ip: IpNet,
    /// Every network of the node as written (`ip:`, or `networks:` with IPv6 too for v2).
    pub networks: Vec<IpNet>,
    pub role: Option<String>,
    pub groups: Vec<String>,
    /// Routed networks (unsafe_routes), masked as `nebula-cert` 1.6.1 stored them.
    pub subnets: Vec<IpNet>,
    /// `nodes[i] "name" (line N)`, for messages.
    pub entry: String,
}

#[derive(Debug, Error)]
pub enum InventoryError {
    #[error("reading inventory {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("inventory {} is larger than {MAX_FILE} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("{}:{line}:{column}: {message}", file.display())]
    Parse { file: PathBuf, line: u64, column: u64, message: String },
    /// A node entry that cannot be signed as written.
    #[error("{}: {entry}: {reason}", file.display())]
    Entry { file: PathBuf, entry: String, reason: String },
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Role name → groups, e.g. `server: [nomad-server]`.
    #[serde(default)]
    roles: BTreeMap<String, Vec<String>>,
    nodes: Vec<Spanned<NodeSpec>>,
    /// Nomad region of every node (default `global`).
    #[serde(default)]
    region: Option<String>,
    /// Default Nomad/Consul datacenter (default `dc1`).
    #[serde(default)]
    datacenter: Option<String>,
    /// The gossip encryption key file, relative to the inventory (default `nomad-gossip.key`).
    #[serde(default)]
    gossip_key: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSpec {
    name: String,
    /// One overlay address; `networks` lists several (IPv4 and IPv6, v2 certificates).
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    networks: Vec<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default, alias = "unsafe_networks")]
    subnets: Vec<String>,
    /// This node's Nomad/Consul datacenter, when not the file's default.
    #[serde(default)]
    datacenter: Option<String>,
}

impl Inventory {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        let read = |source| InventoryError::Read { path: path.to_path_buf(), source };
        if std::fs::metadata(path).map_err(read)?.len() > MAX_FILE {
            return Err(InventoryError::TooLarge { path: path.to_path_buf() });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Inventory::parse(&text, path)
    }

    /// Checks inventory text as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Inventory, InventoryError> {
        let file: File = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
            let full = e.without_snippet().to_string();
            let message = full.strip_suffix(&format!(" at line {line}, column {column}")).unwrap_or(&full).to_string();
            InventoryError::Parse { file: path.to_path_buf(), line, column, message }
        })?;
        let mut nodes: Vec<Node> = Vec::with_capacity(file.nodes.len());
        let mut by_name: HashMap<String, String> = HashMap::new();
        let mut by_ip: HashMap<std::net::IpAddr, String> = HashMap::new();
        let mut node_datacenters = BTreeMap::new();
        for (i, spanned) in file.nodes.iter().enumerate() {
            let spec = &spanned.value;
            let entry = format!("nodes[{i}] {:?} (line {})", spec.name, spanned.referenced.line());
            let bad = |reason: String| InventoryError::Entry { file: path.to_path_buf(), entry: entry.clone(), reason };
            let node = resolve_node(spec, &file.roles, entry.clone()).map_err(bad)?;
            if let Some(first) = by_name.insert(node.name.clone(), entry.clone()) {
                return Err(bad(format!("name {:?} is already used by {first}", node.name)));
            }
            if let Some(first) = by_ip.insert(node.ip.addr(), entry.clone()) {
                return Err(bad(format!("ip {} is already used by {first}", node.ip.addr())));
            }
            if let Some(dc) = &spec.datacenter {
                site_name("datacenter", dc).map_err(bad)?;
                node_datacenters.insert(node.name.clone(), dc.clone());
            }
            nodes.push(node);
        }
        let top = |field: &str, value: &Option<String>, default: &str| match value {
            Some(v) => site_name(field, v).map(|()| v.clone()).map_err(|reason| InventoryError::Entry {
                file: path.to_path_buf(),
                entry: field.into(),
                reason,
            }),
            None => Ok(default.to_string()),
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let nomad = NomadSite {
            region: top("region", &file.region, NomadSite::DEFAULT_REGION)?,
            datacenter: top("datacenter", &file.datacenter, NomadSite::DEFAULT_DATACENTER)?,
            node_datacenters,
            gossip_key: dir.join(file.gossip_key.as_deref().unwrap_or(Path::new(NomadSite::DEFAULT_GOSSIP_KEY))),
        };
        Ok(Inventory { path: path.to_path_buf(), nodes, nomad })
    }

    /// Nodes whose groups include `group`.
    pub fn with_group<'a>(&'a self, group: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.nodes.iter().filter(move |n| n.groups.iter().any(|g| g == group))
    }

    /// An error about `node`, naming this file and the entry.
    pub fn entry_error(&self, node: &Node, reason: impl Into<String>) -> InventoryError {
        InventoryError::Entry { file: self.path.clone(), entry: node.entry.clone(), reason: reason.into() }
    }
}

fn resolve_node(spec: &NodeSpec, roles: &BTreeMap<String, Vec<String>>, entry: String) -> Result<Node, String> {
    let name = spec.name.trim();
    // The name becomes `<name>.crt` and `<name>.key` in the output directory.
    if name.is_empty()
        || name.starts_with('.')
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        return Err(format!(
            "name {:?}: use letters, digits, '-', '_', '.' and '@' (it names the files <name>.crt and <name>.key)",
            spec.name
        ));
    }
    let networks = match (&spec.ip, spec.networks.as_slice()) {
        (Some(ip), []) => vec![net("ip", ip)?],
        (None, [_, ..]) => spec.networks.iter().map(|n| net("networks", n)).collect::<Result<Vec<_>, _>>()?,
        (Some(_), [_, ..]) => return Err("give ip: or networks:, not both".into()),
        (None, []) => return Err("ip: (or networks:) is required".into()),
    };
    let ip = *networks.iter().find(|n| n.addr().is_ipv4()).or(networks.first()).ok_or("networks: is empty")?;
    let mut groups: Vec<String> = Vec::new();
    if let Some(role) = &spec.role {
        let role_groups = roles.get(role).ok_or_else(|| {
            let known = roles.keys().cloned().collect::<Vec<_>>().join(", ");
            format!("role {role:?} is not defined under roles: (defined: {known})")
        })?;
        groups.extend(role_groups.iter().cloned());
    }
    groups.extend(spec.groups.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    let groups: Vec<String> =
        groups.into_iter().map(|g| g.trim().to_string()).filter(|g| !g.is_empty() && seen.insert(g.clone())).collect();
    let subnets = spec.subnets.iter().map(|s| net("subnets", s).map(|n| n.trunc())).collect::<Result<Vec<_>, _>>()?;
    Ok(Node { name: name.to_string(), ip, networks, role: spec.role.clone(), groups, subnets, entry })
}

/// A region or datacenter: it becomes part of certificate names (`server.<region>.nomad`) and
/// file names, so a DNS label's characters only.
fn site_name(field: &str, s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > 63
        || s.starts_with('-')
        || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!("{field} {s:?}: use letters, digits, '-' and '_' (at most 63, a DNS label)"));
    }
    Ok(())
}

/// A network with prefix length, IPv4 or IPv6 (IPv6 needs a v2 CA; signing says so).
fn net(field: &str, s: &str) -> Result<IpNet, String> {
    s.trim()
        .parse::<IpNet>()
        .map_err(|_| format!("{field}: {s}: expected an address with prefix length, e.g. 100.64.0.1/10 or fd00::1/64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "roles:\n  server: [nomad-server]\n  client: [nomad-client]\nnodes:\n  - {name: s1, ip: 100.64.0.11/10, role: server}\n  - name: c1\n    ip: 100.64.1.1/10\n    role: client\n    groups: [ops, nomad-client]\n    subnets: [10.1.2.3/24]\n";

    fn parse(text: &str) -> Result<Inventory, InventoryError> {
        Inventory::parse(text, Path::new("inv.yaml"))
    }

    #[test]
    fn resolves_roles_extra_groups_and_subnets() {
        let inv = parse(GOOD).unwrap();
        assert_eq!(inv.nodes[1].groups, ["nomad-client", "ops"]);
        assert_eq!(inv.nodes[1].subnets, ["10.1.2.0/24".parse::<IpNet>().unwrap()]);
        assert_eq!(inv.with_group("nomad-server").map(|n| n.name.as_str()).collect::<Vec<_>>(), ["s1"]);
        // Several networks, IPv4 and IPv6: the first IPv4 one is the overlay address.
        let inv = parse(&GOOD.replace("ip: 100.64.0.11/10", "networks: [fd00::11/64, 100.64.0.11/10]")).unwrap();
        assert_eq!(inv.nodes[0].ip, "100.64.0.11/10".parse::<IpNet>().unwrap());
        assert_eq!(inv.nodes[0].networks.len(), 2);
        assert_eq!((inv.nomad.region.as_str(), inv.nomad.datacenter_of("c1")), ("global", "dc1"));
        assert_eq!(inv.nomad.gossip_key, Path::new("nomad-gossip.key"));
    }

    #[test]
    fn region_datacenters_and_gossip_key_place() {
        let text = format!(
            "region: eu\ndatacenter: fra\ngossip_key: keys/g.key\n{}",
            GOOD.replace("role: client\n", "role: client\n    datacenter: ams\n")
        );
        let inv = Inventory::parse(&text, Path::new("/pki/inv.yaml")).unwrap();
        assert_eq!(inv.nomad.region, "eu");
        assert_eq!((inv.nomad.datacenter_of("s1"), inv.nomad.datacenter_of("c1")), ("fra", "ams"));
        assert_eq!(inv.nomad.gossip_key, Path::new("/pki/keys/g.key"));
    }

    #[test]
    fn bad_entries_name_file_and_entry() {
        // Duplicates, unknown roles and CA constraints: tests/inventory_sign.rs, through the CLI.
        let cases = [
            (
                GOOD.replace("100.64.1.1/10", "100.64.1.1"),
                "nodes[1] \"c1\" (line 6): ip: 100.64.1.1: expected an address with prefix length",
            ),
            (GOOD.replace("ip: 100.64.0.11/10", "ip: 100.64.0.11/10, networks: [fd00::11/64]"), "not both"),
            (GOOD.replace("name: c1", "name: ../c1"), "nodes[1] \"../c1\" (line 6): name \"../c1\": use letters"),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{err}\nwanted: {want}");
        }
        let err = parse(&format!("region: eu.west\n{GOOD}")).unwrap_err().to_string();
        assert!(err.contains("region \"eu.west\": use letters"), "{err}");
        let err = parse("nodes:\n  - {name: a, ip: 100.64.0.1/10, colour: red}\n").unwrap_err().to_string();
        assert!(err.starts_with("inv.yaml:2:") && err.contains("colour"), "{err}");
    }
}
