use std::process::ExitCode;

use anyhow::{Context, Result};

use super::nomad::{NodeArgs, ThisNode, find_servers, or_dns, warn_not_a_server};
use crate::consul::{AgentSnippet, INSTALL_PATH, SERVER_GROUP};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Print the Consul agent settings (HCL) that put Consul on the overlay, for /etc/consul.d/10-cos-mesh.hcl.
    #[command(after_help = "\
bind_addr, advertise_addr and client_addr are pinned to the overlay device (tun.dev): Consul started
with the default bind address exits on a host with more than one private IPv4 address, which the
overlay adds. retry_join lists the members of group consul-server. Install with
  cos-mesh consul config --role client -c /etc/cos-mesh/config.yaml > 10-cos-mesh.hcl.new &&
  mv 10-cos-mesh.hcl.new /etc/consul.d/10-cos-mesh.hcl && systemctl restart consul")]
    Config(ConfigArgs),
}

#[derive(clap::Args)]
struct ConfigArgs {
    /// The Consul agent this node runs.
    #[arg(long, value_enum)]
    role: ConsulRole,
    #[command(flatten)]
    node: NodeArgs,
    /// Consul datacenter (default: the inventory's datacenter of this node; else Consul's dc1).
    #[arg(long, value_name = "DC")]
    datacenter: Option<String>,
    /// Servers: how many servers to wait for (default: the number found, at least 1).
    #[arg(long, value_name = "N")]
    bootstrap_expect: Option<u32>,
    /// Also join this DNS name, e.g. consul-server.mesh from a lighthouse serving DNS.
    #[arg(long, value_name = "NAME")]
    retry_join_dns: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ConsulRole {
    Server,
    Client,
}

pub fn run(a: Args) -> Result<ExitCode> {
    match a.command {
        Command::Config(c) => config(c),
    }
}

fn config(a: ConfigArgs) -> Result<ExitCode> {
    let server = a.role == ConsulRole::Server;
    if !server && a.bootstrap_expect.is_some() {
        anyhow::bail!("--bootstrap-expect is a server setting; drop it for --role client");
    }
    let node = ThisNode::load(&a.node.config, "Consul")?;
    let (inventory, found) = find_servers(SERVER_GROUP, &a.node, &node)?;
    let (servers, servers_from) = or_dns(found, a.retry_join_dns.as_deref())?;
    if server && !servers.contains(&node.overlay_ip.addr()) && a.retry_join_dns.is_none() {
        warn_not_a_server(&node, SERVER_GROUP);
    }
    let datacenter =
        a.datacenter.or_else(|| inventory.as_ref().map(|i| i.nomad.datacenter_of(node.cert.name()).to_string()));
    let snippet = AgentSnippet {
        server,
        node_name: node.cert.name().to_string(),
        overlay_ip: node.overlay_ip,
        dev: node.loaded.config.tun.dev.clone(),
        servers,
        servers_from,
        join_dns: a.retry_join_dns,
        datacenter,
        bootstrap_expect: a.bootstrap_expect,
    };
    let text = snippet.render().with_context(|| format!("generating {INSTALL_PATH} for {}", node.cert.name()))?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
