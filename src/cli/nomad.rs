use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::cert::bundle::HostCerts;
use crate::config::Config;
use crate::daemon::control::{Request, ask};
use crate::inventory::Inventory;
use crate::nomad::ports::{self, DynamicPorts};
use crate::nomad::{AgentSnippet, INSTALL_PATH, Role, SERVER_GROUP, servers};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Print the Nomad agent settings (HCL) that put Nomad on the overlay, for /etc/nomad.d/10-cos-mesh.hcl.
    #[command(after_help = "\
Exit status 1, and nothing printed, when the overlay overlaps Nomad's bridge (172.26.64.0/20) or
docker0 (172.17.0.0/16), or no Nomad server is found. Install with
  cos-mesh nomad config --role client -c /etc/cos-mesh/config.yaml > 10-cos-mesh.hcl.new &&
  mv 10-cos-mesh.hcl.new /etc/nomad.d/10-cos-mesh.hcl && systemctl restart nomad")]
    Config(ConfigArgs),
}

#[derive(clap::Args)]
struct ConfigArgs {
    /// The Nomad agent this node runs.
    #[arg(long, value_enum)]
    role: Role,
    /// This node's cos-mesh config (file or directory): tun.dev, pki.cert, firewall, control socket.
    #[arg(short = 'c', long = "config", value_name = "FILE|DIR")]
    config: PathBuf,
    /// Where the Nomad servers' overlay IPs come from: the running daemon's member list, or the
    /// PKI inventory (nodes in group nomad-server).
    #[arg(long, value_enum, default_value = "members")]
    servers_from: ServersFrom,
    /// The PKI inventory (with --servers-from inventory).
    #[arg(long, value_name = "FILE", required_if_eq("servers_from", "inventory"))]
    inventory: Option<PathBuf>,
    /// The daemon's control socket (default: control.socket of -c, /run/cos-mesh/<tun.dev>.sock).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Nomad datacenter of this node (left to Nomad's config when absent).
    #[arg(long, value_name = "DC")]
    datacenter: Option<String>,
    /// Servers: how many servers to wait for before electing a leader (default: the number found, at least 1).
    #[arg(long, value_name = "N")]
    bootstrap_expect: Option<u32>,
    /// Clients: the dynamic port range, MIN-MAX (default: the range the node's firewall opens
    /// to group nomad-client, e.g. firewall/nomad-client.yaml's 20000-32000; else Nomad's default).
    #[arg(long, value_name = "MIN-MAX", value_parser = ports::parse_range)]
    dynamic_ports: Option<DynamicPorts>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ServersFrom {
    /// Ask the running cos-mesh daemon (`cos-mesh members --group nomad-server`).
    Members,
    /// Read the PKI inventory given with --inventory.
    Inventory,
}

pub fn run(a: Args) -> Result<ExitCode> {
    match a.command {
        Command::Config(c) => config(c),
    }
}

fn config(a: ConfigArgs) -> Result<ExitCode> {
    match a.role {
        Role::Server if a.dynamic_ports.is_some() => {
            bail!("--dynamic-ports is a client setting; drop it for --role server")
        }
        Role::Client if a.bootstrap_expect.is_some() => {
            bail!("--bootstrap-expect is a server setting; drop it for --role client")
        }
        _ => {}
    }
    let loaded = Config::load(&a.config)?;
    let cfg = &loaded.config;
    let cert_src = cfg.pki.cert.as_ref().with_context(|| {
        format!("{}: pki.cert is not set; the Nomad settings need this node's certificate", a.config.display())
    })?;
    let pem = cert_src.read().with_context(|| format!("reading pki.cert {}", cert_src.describe()))?;
    // pki.cert may hold a v1 and a v2 certificate; they share their first network.
    let cert = HostCerts::from_pem(&pem, None)
        .with_context(|| format!("parsing pki.cert {}", cert_src.describe()))?
        .into_presented();
    let overlay_ip = cert.overlay_v4().with_context(|| {
        format!("pki.cert {} has no IPv4 network (IPv6-only overlays are not supported yet)", cert_src.describe())
    })?;

    let (servers, servers_from) = match a.servers_from {
        ServersFrom::Members => {
            let socket = a.socket.clone().unwrap_or_else(|| cfg.control_socket());
            let answer = ask(&socket, Request::Members).context(
                "asking the running daemon for the mesh's members (or take the servers from the PKI \
                 inventory: --servers-from inventory --inventory FILE)",
            )?;
            (servers::from_members(&answer), format!("the daemon's members at {}", socket.display()))
        }
        ServersFrom::Inventory => {
            let path = a.inventory.as_ref().context("--servers-from inventory needs --inventory FILE")?;
            let inv = Inventory::load(path)?;
            (servers::from_inventory(&inv), format!("inventory {}", path.display()))
        }
    };
    if a.role == Role::Server && !servers.contains(&overlay_ip.addr()) {
        eprintln!(
            "warning: this node ({}, {}) is not among the {SERVER_GROUP} members found; other servers will not find it \
             unless its certificate carries group {SERVER_GROUP}",
            cert.name(),
            overlay_ip.addr()
        );
    }
    let dynamic_ports = match (a.role, a.dynamic_ports) {
        (Role::Client, None) => {
            let sections = crate::daemon::setup::firewall_sections(&loaded.files)?;
            ports::from_firewall(&sections)?.unwrap_or_else(DynamicPorts::nomad_default)
        }
        (_, p) => p.unwrap_or_else(DynamicPorts::nomad_default),
    };
    let snippet = AgentSnippet {
        role: a.role,
        node_name: cert.name().to_string(),
        overlay_ip,
        dev: cfg.tun.dev.clone(),
        servers,
        servers_from,
        datacenter: a.datacenter,
        bootstrap_expect: a.bootstrap_expect,
        dynamic_ports,
    };
    let text = snippet.render().with_context(|| format!("generating {INSTALL_PATH} for {}", cert.name()))?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
