//! Nomad agent settings that put Nomad on the overlay: `bind_addr`, `addresses`, `advertise` on
//! the TUN device, the `overlay` host network, the dynamic port range the client rule set opens,
//! and `server_join` with the overlay IPs of the mesh's Nomad servers.
//!
//! Pure: [`AgentSnippet::render`] turns facts gathered elsewhere (the node's certificate and
//! config, the mesh's members or the inventory, the firewall) into HCL1, the dialect of Nomad's
//! agent config parser, after [`lint`] has refused what Nomad could not run with.

pub mod hcl;
pub mod lint;
pub mod ports;
pub mod servers;
pub mod tls;

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub use hcl::quote;
pub use lint::LintError;
pub use ports::{DEFAULT_DYNAMIC_PORTS, DynamicPorts};

use hcl::{Body, Value};

/// The certificate group whose members are Nomad servers (`firewall/nomad-server.yaml`).
pub const SERVER_GROUP: &str = "nomad-server";

/// Where the snippet goes: Nomad loads `/etc/nomad.d/*.hcl` in name order.
pub const INSTALL_PATH: &str = "/etc/nomad.d/10-cos-mesh.hcl";

/// Which Nomad agent this node runs (`--role server,client` for both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// A server: Raft, scheduling; joins the other servers over Serf (4648).
    Server,
    /// A client: runs allocations; joins the servers over RPC (4647).
    Client,
}

/// The agent's roles: a server, a client, or both in one agent (a small cluster's servers
/// often run allocations too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub server: bool,
    pub client: bool,
}

impl Roles {
    pub const SERVER: Roles = Roles { server: true, client: false };
    pub const CLIENT: Roles = Roles { server: false, client: true };
    pub const BOTH: Roles = Roles { server: true, client: true };

    /// From `--role` values; `None` for an empty list.
    pub fn from_list(roles: &[Role]) -> Option<Roles> {
        let r = Roles { server: roles.contains(&Role::Server), client: roles.contains(&Role::Client) };
        (r.server || r.client).then_some(r)
    }

    pub fn as_str(self) -> &'static str {
        match (self.server, self.client) {
            (true, true) => "server,client",
            (true, false) => "server",
            _ => "client",
        }
    }
}

/// The `tls {}` block: files from `cos-mesh nomad tls` installed in `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub dir: std::path::PathBuf,
    pub region: String,
}

/// The servers' gossip encryption key (`server.encrypt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gossip {
    /// No key known: a comment says how to get one.
    Missing,
    /// Known, but the snippet goes to a terminal or pipe: a secret is never printed.
    Withheld,
    /// The base64 key, for a snippet written to a 0600 file.
    Key(String),
}

/// Everything the snippet says, gathered by the caller.
#[derive(Debug, Clone)]
pub struct AgentSnippet {
    pub roles: Roles,
    /// The node's name (from its certificate), for the header comment.
    pub node_name: String,
    /// The node's overlay address with the overlay's prefix (`ips[0]` of its certificate).
    pub overlay_ip: Ipv4Net,
    /// The TUN device (`tun.dev`), e.g. `nebula1`.
    pub dev: String,
    /// Overlay IPs of the Nomad servers to join, and where that list came from (for a comment).
    pub servers: Vec<Ipv4Addr>,
    pub servers_from: String,
    /// A DNS name answering every server (`nomad-server.mesh` from a lighthouse), joined too.
    pub join_dns: Option<String>,
    pub region: Option<String>,
    pub datacenter: Option<String>,
    /// Servers only: default the number of servers found.
    pub bootstrap_expect: Option<u32>,
    /// Clients only.
    pub dynamic_ports: DynamicPorts,
    pub tls: Option<TlsFiles>,
    /// Servers only.
    pub gossip: Gossip,
}

/// Raft keeps a quorum through the loss of one server only with three or more.
pub const MIN_SAFE_SERVERS: u32 = 3;

impl AgentSnippet {
    /// The overlay network: the certificate's address masked to its prefix.
    pub fn overlay(&self) -> Ipv4Net {
        self.overlay_ip.trunc()
    }

    /// Lints, then renders the HCL1 text.
    pub fn render(&self) -> Result<String, LintError> {
        lint::check(self)?;
        Ok(self.body().render())
    }

    /// What works but will hurt: said on stderr by the CLI and as comments in the snippet.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = vec![];
        if self.roles.server && self.bootstrap_expect() < MIN_SAFE_SERVERS {
            w.push(format!(
                "bootstrap_expect = {}: with fewer than {MIN_SAFE_SERVERS} servers Raft loses its quorum when one \
                 server fails; run 3 (or 5) servers in group {SERVER_GROUP}",
                self.bootstrap_expect()
            ));
        }
        if self.roles.server && self.gossip == Gossip::Missing {
            w.push(
                "no gossip key: server.encrypt is left out (Serf gossip unencrypted by Nomad); make one with \
                 `cos-mesh nomad tls --inventory FILE` and pass --inventory FILE or --gossip-key FILE"
                    .into(),
            );
        }
        w
    }

    fn body(&self) -> Body {
        let dev = &self.dev;
        let roles = self.roles;
        // go-sockaddr template, resolved by Nomad at start; the quotes are escaped by the writer.
        let on_overlay = format!("{{{{ GetInterfaceIP \"{dev}\" }}}}");
        let mut top = Body::new();
        top.comment(&format!(
            "Nomad agent settings for cos-mesh node {:?} ({}, overlay {} on {dev}), role {}.",
            self.node_name,
            self.overlay_ip.addr(),
            self.overlay(),
            roles.as_str()
        ))
        .comment(&format!(
            "Generated by `cos-mesh nomad config --role {}`: regenerate instead of editing.",
            roles.as_str()
        ))
        .comment(&format!(
            "Install as {INSTALL_PATH} (files in /etc/nomad.d load in name order; a later file's\n\
             retry_join replaces this one, host_network blocks add up)."
        ))
        .comment(&format!(
            "Nomad reads {dev}'s address once at start: install systemd/nomad.service.d/cos-mesh.conf so it\n\
             starts after cos-mesh, and restart Nomad (a reload is not enough) after changing host_network."
        ));
        for w in self.warnings() {
            top.comment(&format!("WARNING: {w}"));
        }
        top.blank();
        if let Some(region) = &self.region {
            top.attr("region", Value::str(region.as_str()));
        }
        if let Some(dc) = &self.datacenter {
            top.attr("datacenter", Value::str(dc.as_str()));
        }
        if self.region.is_some() || self.datacenter.is_some() {
            top.blank();
        }
        top.attr("bind_addr", Value::str(on_overlay.as_str())).blank();

        let mut addresses = Body::new();
        addresses.attr("http", Value::str(format!("127.0.0.1 {on_overlay}")));
        top.comment("The HTTP API also listens on loopback for the local CLI.").block("addresses", &[], addresses);
        top.blank();

        let mut advertise = Body::new();
        advertise.attr("http", Value::str(on_overlay.as_str()));
        if roles.server {
            advertise.attr("rpc", Value::str(on_overlay.as_str())).attr("serf", Value::str(on_overlay.as_str()));
        }
        top.comment("Explicit: addresses.http starts with loopback, which Nomad would otherwise advertise.");
        if !roles.server {
            top.comment("advertise.rpc and advertise.serf have no effect on clients.");
        }
        top.block("advertise", &[], advertise).blank();

        if roles.server {
            top.block("server", &[], self.server_body()).blank();
        }
        if roles.client {
            top.block("client", &[], self.client_body()).blank();
        }
        if let Some(tls) = &self.tls {
            top.block("tls", &[], self.tls_body(tls));
        }
        top
    }

    fn join(&self, port: &str) -> Body {
        let mut join = Body::new();
        let mut ips: Vec<Value> = self.servers.iter().map(|ip| Value::str(ip.to_string())).collect();
        let mut from = format!("Overlay IPs of group {SERVER_GROUP}, from {}", self.servers_from);
        if let Some(name) = &self.join_dns {
            ips.push(Value::str(name.as_str()));
            from.push_str(&format!(", and {name} (every member, from a lighthouse's DNS)"));
        }
        join.comment(&format!("{from}; port defaults to {port}."))
            .attr("retry_join", Value::List(ips))
            .attr("retry_interval", Value::str("15s"));
        join
    }

    fn server_body(&self) -> Body {
        let mut b = Body::new();
        b.attr("enabled", Value::Bool(true)).attr("bootstrap_expect", Value::Int(i64::from(self.bootstrap_expect())));
        match &self.gossip {
            Gossip::Key(key) => {
                b.attr_noted("encrypt", Value::str(key.as_str()), "the mesh's gossip key: keep this file 0600");
            }
            Gossip::Withheld => {
                b.comment("encrypt: the gossip key is a secret and never printed; write the file with --out FILE.");
            }
            Gossip::Missing => {}
        }
        b.blank().block("server_join", &[], self.join("Serf, 4648"));
        b
    }

    fn client_body(&self) -> Body {
        let dev = &self.dev;
        let p = &self.dynamic_ports;
        let mut b = Body::new();
        b.attr("enabled", Value::Bool(true))
            .attr_noted("network_interface", Value::str(dev.as_str()), "allocations' default network: the overlay")
            .attr_noted("min_dynamic_port", Value::Int(i64::from(p.min)), &p.source)
            .attr("max_dynamic_port", Value::Int(i64::from(p.max)))
            .blank();
        let mut net = Body::new();
        net.attr("interface", Value::str(dev.as_str())).attr("cidr", Value::str(self.overlay().to_string()));
        b.comment("Jobs opt in per port: network { port \"http\" { host_network = \"overlay\" } }.").block(
            "host_network",
            &["overlay"],
            net,
        );
        if self.roles.server {
            b.blank().comment("A client in a server agent uses its own server: no server_join here.");
        } else {
            b.blank().block("server_join", &[], self.join("RPC, 4647"));
        }
        b
    }

    fn tls_body(&self, tls: &TlsFiles) -> Body {
        // A server that is also a client presents its server certificate for both.
        let kind = if self.roles.server { "server" } else { "client" };
        let file = |name: String| Value::str(tls.dir.join(name).display().to_string());
        let mut b = Body::new();
        b.comment("Files from `cos-mesh nomad tls` (copy DIR/<node>/ here).")
            .attr("http", Value::Bool(true))
            .attr("rpc", Value::Bool(true))
            .attr("ca_file", file(tls::CA_FILE.into()))
            .attr("cert_file", file(format!("{}-{kind}-nomad.pem", tls.region)))
            .attr("key_file", file(format!("{}-{kind}-nomad-key.pem", tls.region)))
            .attr("verify_server_hostname", Value::Bool(true))
            .attr("verify_https_client", Value::Bool(true));
        b
    }

    /// `bootstrap_expect`: as given, else the number of servers found, at least 1.
    pub fn bootstrap_expect(&self) -> u32 {
        self.bootstrap_expect.unwrap_or(self.servers.len() as u32).max(1)
    }
}

#[cfg(test)]
mod tests;
