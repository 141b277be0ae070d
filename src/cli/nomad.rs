use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::cert::Certificate;
use crate::config::Config;
use crate::daemon::control::{Request, ask};
use crate::inventory::Inventory;
use crate::inventory::renewal::Action;
use crate::nomad::ports::{self, DynamicPorts};
use crate::nomad::{AgentSnippet, Gossip, INSTALL_PATH, Role, Roles, SERVER_GROUP, TlsFiles, servers};

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
    /// Make Nomad's mutual-TLS files for every node of the inventory: a Nomad CA (ECDSA P-256),
    /// the certificates `nomad tls cert create` makes plus the overlay IP, an env file for the CLI.
    #[command(after_help = "\
Layout of --out-dir (copy DIR/<node>/ to the host's /etc/nomad.d/tls/):
  nomad-agent-ca.pem, nomad-agent-ca-key.pem      the Nomad CA; its key never leaves this directory
  <node>/nomad-agent-ca.pem                        the CA certificate
  <node>/<region>-server-nomad.pem, -key.pem       group nomad-server (CN server.<region>.nomad)
  <node>/<region>-client-nomad.pem, -key.pem       group nomad-client
  <node>/<region>-cli-nomad.pem, -key.pem          agents, ops and monitoring: the CLI, Prometheus
  <node>/nomad-cli.env                             NOMAD_ADDR, NOMAD_CACERT, NOMAD_CLIENT_CERT/KEY
Run it again whenever the inventory changes, and regularly for renewals: a certificate is renewed
(same key, replaced atomically) when it expires within --renew-before or its names or overlay IP
differ; everything else is left alone, so a second run changes nothing. The inventory's gossip key
(gossip_key:, default nomad-gossip.key beside it) is generated once, 0600.")]
    Tls(TlsArgs),
}

#[derive(clap::Args)]
struct TlsArgs {
    /// The PKI inventory (pki/inventory.example.yaml): nodes, groups, region.
    #[arg(long, value_name = "FILE")]
    inventory: PathBuf,
    /// Where the CA and the per-node directories live (created 0700).
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
    /// Nomad region in the certificate names (default: the inventory's region:, else global).
    #[arg(long, value_name = "R")]
    region: Option<String>,
    /// Renew certificates that expire within this time (Go duration).
    #[arg(long, value_parser = super::parse_duration, default_value = "720h")]
    renew_before: std::time::Duration,
    /// Lifetime of new certificates in days (never past the CA's).
    #[arg(long, default_value_t = crate::nomad::tls::CERT_DAYS)]
    days: u64,
    /// Where the node's files are installed on the host, for the env file's paths.
    #[arg(long, value_name = "DIR", default_value = crate::nomad::tls::issue::INSTALL_DIR)]
    install_dir: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ConfigArgs {
    /// The Nomad agent this node runs: server, client, or both (`server,client`).
    #[arg(long, value_enum, value_delimiter = ',', required = true)]
    role: Vec<Role>,
    #[command(flatten)]
    node: NodeArgs,
    /// Nomad datacenter of this node (default: the inventory's; else left to Nomad's config).
    #[arg(long, value_name = "DC")]
    datacenter: Option<String>,
    /// Nomad region (default: the inventory's; else left to Nomad's config, `global`).
    #[arg(long, value_name = "R")]
    region: Option<String>,
    /// Where the files of `cos-mesh nomad tls` are installed on this host, for tls {}.
    #[arg(long, value_name = "DIR", default_value = crate::nomad::tls::issue::INSTALL_DIR)]
    tls_dir: PathBuf,
    /// Leave out the tls {} block (Nomad without mutual TLS: not recommended).
    #[arg(long)]
    no_tls: bool,
    /// Servers: the gossip key file (default: the inventory's gossip_key).
    #[arg(long, value_name = "FILE")]
    gossip_key: Option<PathBuf>,
    /// Also join this DNS name, e.g. nomad-server.mesh from a lighthouse serving DNS (the host's
    /// resolver must send the zone to the lighthouse).
    #[arg(long, value_name = "NAME")]
    retry_join_dns: Option<String>,
    /// Write the snippet to FILE (atomically, 0600) instead of stdout. Needed for a server's
    /// gossip key, which is never printed.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Servers: how many servers to wait for before electing a leader (default: the number found, at least 1).
    #[arg(long, value_name = "N")]
    bootstrap_expect: Option<u32>,
    /// Clients: the dynamic port range, MIN-MAX (default: the range the node's firewall opens
    /// to group nomad-client, e.g. firewall/nomad-client.yaml's 20000-32000; else Nomad's default).
    #[arg(long, value_name = "MIN-MAX", value_parser = ports::parse_range)]
    dynamic_ports: Option<DynamicPorts>,
}

/// This node and where its agent finds the servers: shared by `nomad config` and `consul config`.
#[derive(clap::Args)]
pub(super) struct NodeArgs {
    /// This node's cos-mesh config (file or directory): tun.dev, pki.cert, firewall, control socket.
    #[arg(short = 'c', long = "config", value_name = "FILE|DIR")]
    pub config: PathBuf,
    /// Where the servers' overlay IPs come from: the running daemon's member list, or the PKI
    /// inventory (nodes in group nomad-server, or consul-server).
    #[arg(long, value_enum, default_value = "members")]
    pub servers_from: ServersFrom,
    /// The PKI inventory: the servers (with --servers-from inventory), and this node's region,
    /// datacenter and the mesh's gossip key.
    #[arg(long, value_name = "FILE", required_if_eq("servers_from", "inventory"))]
    pub inventory: Option<PathBuf>,
    /// The daemon's control socket, a path or @NAME (default: control.socket of -c, else @cos-mesh/<tun.dev>).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum ServersFrom {
    /// Ask the running cos-mesh daemon (`cos-mesh members --group nomad-server`).
    Members,
    /// Read the PKI inventory given with --inventory.
    Inventory,
}

pub fn run(a: Args) -> Result<ExitCode> {
    match a.command {
        Command::Config(c) => config(c),
        Command::Tls(t) => tls(t),
    }
}

fn tls(a: TlsArgs) -> Result<ExitCode> {
    use crate::nomad::tls::issue::{self, Options};
    let inv = Inventory::load(&a.inventory)?;
    let region = a.region.clone().unwrap_or_else(|| inv.nomad.region.clone());
    if region.is_empty() || !region.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)) {
        bail!("--region {region:?}: use letters, digits, '-' and '_' (it becomes server.<region>.nomad)");
    }
    if a.days == 0 {
        bail!("--days 0: a certificate must live at least a day");
    }
    let opts = Options {
        out_dir: a.out_dir.clone(),
        region,
        renew_before: a.renew_before,
        days: a.days,
        install_dir: a.install_dir.clone(),
    };
    let report = issue::run(&inv, &opts, crate::unixtime::UnixTime::now())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let word = |a: Action| match a {
        Action::Issued => "issued",
        Action::Renewed => "renewed",
        Action::Unchanged => "unchanged",
    };
    println!("Nomad CA {}: {}", a.out_dir.join(crate::nomad::tls::CA_FILE).display(), word(report.ca));
    println!("gossip key {}: {}", report.gossip_key_file.display(), word(report.gossip_key));
    for c in &report.certificates {
        println!("{:<9} {} ({})", word(c.action), c.file.display(), c.reasons.join("; "));
    }
    for p in &report.not_in_inventory {
        println!("left alone {} (the inventory no longer asks for it: remove it from the host)", p.display());
    }
    let count = |x: Action| report.certificates.iter().filter(|c| c.action == x).count();
    println!(
        "{} issued, {} renewed, {} unchanged",
        count(Action::Issued),
        count(Action::Renewed),
        count(Action::Unchanged)
    );
    Ok(ExitCode::SUCCESS)
}

fn config(a: ConfigArgs) -> Result<ExitCode> {
    let roles = Roles::from_list(&a.role).context("--role: server, client or server,client")?;
    if !roles.client && a.dynamic_ports.is_some() {
        bail!("--dynamic-ports is a client setting; drop it for --role server");
    }
    if !roles.server && a.bootstrap_expect.is_some() {
        bail!("--bootstrap-expect is a server setting; drop it for --role client");
    }
    let node = ThisNode::load(&a.node.config, "Nomad")?;
    let (loaded, cert, overlay_ip) = (&node.loaded, &node.cert, node.overlay_ip);
    let cfg = &loaded.config;
    let (inventory, found) = find_servers(SERVER_GROUP, &a.node, &node)?;
    let (servers, servers_from) = or_dns(found, a.retry_join_dns.as_deref())?;
    if roles.server && !servers.contains(&overlay_ip.addr()) && a.retry_join_dns.is_none() {
        warn_not_a_server(&node, SERVER_GROUP);
    }
    let dynamic_ports = match (roles.client, a.dynamic_ports) {
        (true, None) => {
            let sections = crate::daemon::setup::firewall_sections(&loaded.files)
                .map_err(crate::daemon::setup::SetupError::from)?;
            ports::from_firewall(&sections)?.unwrap_or_else(DynamicPorts::nomad_default)
        }
        (_, p) => p.unwrap_or_else(DynamicPorts::nomad_default),
    };
    let region = a.region.clone().or_else(|| inventory.as_ref().map(|i| i.nomad.region.clone()));
    let datacenter =
        a.datacenter.clone().or_else(|| inventory.as_ref().map(|i| i.nomad.datacenter_of(cert.name()).to_string()));
    let key_file = a.gossip_key.clone().or_else(|| inventory.as_ref().map(|i| i.nomad.gossip_key.clone()));
    let gossip = match key_file {
        Some(f) if roles.server && (a.gossip_key.is_some() || f.exists()) => {
            let key = String::from_utf8(crate::files::read(&f, "Nomad gossip key")?)
                .with_context(|| format!("gossip key {}: not base64 text", f.display()))?;
            if a.out.is_some() { Gossip::Key(key.trim().to_string()) } else { Gossip::Withheld }
        }
        _ => Gossip::Missing,
    };
    let tls = (!a.no_tls).then(|| TlsFiles {
        dir: a.tls_dir.clone(),
        region: region.clone().unwrap_or_else(|| crate::inventory::NomadSite::DEFAULT_REGION.into()),
    });
    let snippet = AgentSnippet {
        roles,
        node_name: cert.name().to_string(),
        overlay_ip,
        dev: cfg.tun.dev.clone(),
        servers,
        servers_from,
        join_dns: a.retry_join_dns.clone(),
        region,
        datacenter,
        bootstrap_expect: a.bootstrap_expect,
        dynamic_ports,
        tls,
        gossip,
    };
    let text = snippet.render().with_context(|| format!("generating {INSTALL_PATH} for {}", cert.name()))?;
    for w in snippet.warnings() {
        eprintln!("warning: {w}");
    }
    match &a.out {
        Some(path) if path.exists() => crate::files::replace(path, text.as_bytes(), "Nomad agent settings")?,
        Some(path) => {
            crate::files::write_new(path, text.as_bytes(), crate::files::SECRET_MODE, "Nomad agent settings")?
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// This node as its cos-mesh config and certificate say.
pub(super) struct ThisNode {
    pub loaded: crate::config::LoadedConfig,
    pub cert: Certificate,
    pub overlay_ip: ipnet::Ipv4Net,
}

impl ThisNode {
    /// Loads `config` and the certificate it names; `what` ("Nomad") says who needs it.
    pub fn load(config: &std::path::Path, what: &str) -> Result<ThisNode> {
        let loaded = Config::load(config)?;
        let cert_src = loaded.config.pki.cert.as_ref().with_context(|| {
            format!("{}: pki.cert is not set; the {what} settings need this node's certificate", config.display())
        })?;
        let pem = cert_src.read().with_context(|| format!("reading pki.cert {}", cert_src.describe()))?;
        // pki.cert may hold a v1 and a v2 certificate; they share their first network.
        let cert = crate::cert::bundle::HostCerts::from_pem(&pem, None)
            .with_context(|| format!("parsing pki.cert {}", cert_src.describe()))?
            .into_presented();
        let overlay_ip = cert.overlay_v4().with_context(|| {
            format!(
                "pki.cert {} has no IPv4 network: the {what} settings bind the node's IPv4 overlay address \
                 (an IPv6-only node runs in the mesh, but not as a Nomad or Consul agent yet)",
                cert_src.describe()
            )
        })?;
        Ok(ThisNode { loaded, cert, overlay_ip })
    }
}

/// Servers' overlay IPs and where they came from.
pub(super) type ServerList = (Vec<std::net::Ipv4Addr>, String);

/// The inventory (when given) and the overlay IPs of group `group`'s members, from the running
/// daemon or the inventory, with where they came from (for a comment in the snippet). The
/// member list's error is separate: a caller may have another way to find the servers.
pub(super) fn find_servers(
    group: &str,
    a: &NodeArgs,
    node: &ThisNode,
) -> Result<(Option<Inventory>, Result<ServerList>)> {
    let inventory = a.inventory.as_ref().map(|p| Inventory::load(p)).transpose()?;
    let found = match a.servers_from {
        ServersFrom::Members => {
            let socket = a
                .socket
                .clone()
                .map(crate::config::ControlAddr::from)
                .unwrap_or_else(|| node.loaded.config.control_socket());
            ask(&socket, Request::Members)
                .context(
                    "asking the running daemon for the mesh's members (or take the servers from the PKI \
                     inventory: --servers-from inventory --inventory FILE)",
                )
                .map(|answer| (servers::members_in_group(&answer, group), format!("the daemon's members at {socket}")))
        }
        ServersFrom::Inventory => {
            let (path, inv) = a
                .inventory
                .as_ref()
                .zip(inventory.as_ref())
                .context("--servers-from inventory needs --inventory FILE")?;
            Ok((servers::inventory_group(inv, group), format!("inventory {}", path.display())))
        }
    };
    Ok((inventory, found))
}

/// A DNS name to join can stand in for a member list that could not be read.
pub(super) fn or_dns(found: Result<ServerList>, dns: Option<&str>) -> Result<ServerList> {
    match (found, dns) {
        (Ok(found), _) => Ok(found),
        (Err(e), Some(_)) => Ok((vec![], format!("nowhere ({e:#})"))),
        (Err(e), None) => Err(e),
    }
}

pub(super) fn warn_not_a_server(node: &ThisNode, group: &str) {
    eprintln!(
        "warning: this node ({}, {}) is not among the {group} members found; other servers will not find it \
         unless its certificate carries group {group}",
        node.cert.name(),
        node.overlay_ip.addr()
    );
}
