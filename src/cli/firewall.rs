//! `cos-mesh firewall lint|explain`: check rule files, and show which rule decides a packet.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;

use crate::cert::Certificate;
use crate::cert::Fingerprint;
use crate::cert::pool::CaPool;
use crate::files;
use crate::firewall::lint::{self, CaConstraint, Severity};
use crate::firewall::{Direction, Firewall, PeerIdentity, load_config_or_rules};
use crate::packet::{Flow, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Check rule files (or node configs) for errors and footguns. Exit 0 clean, 1 on errors
    /// (or on warnings with --strict).
    Lint(LintArgs),
    /// Show the verdict for one packet and the rule (file:line) that decides it. Exit 0 allow,
    /// 1 drop or reject, 2 bad arguments or config.
    Explain(ExplainArgs),
}

#[derive(clap::Args)]
struct LintArgs {
    /// Rule files or node configs with a `firewall:` section; includes are followed.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Treat warnings as failures (exit 1).
    #[arg(long)]
    strict: bool,
    /// Output format: `text` (file:line: severity[check]: message) or `json` for CI.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// CA bundle the rules are for: groups a CA cannot sign are reported.
    #[arg(long, value_name = "CA_CRT")]
    ca: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(clap::Args)]
struct ExplainArgs {
    /// Node config (its `firewall:` section is used) or a bare rules file.
    #[arg(short = 'c', long = "config")]
    config: PathBuf,
    /// The peer's certificate (PEM): name, groups, IP and issuer are taken from it.
    #[arg(long, conflicts_with_all = ["peer_groups", "peer_name"], required_unless_present = "peer_groups")]
    peer_cert: Option<PathBuf>,
    /// CA bundle, to know the CA name of --peer-cert's issuer (for ca_name rules).
    #[arg(long, requires = "peer_cert")]
    ca: Option<PathBuf>,
    /// The peer's groups, comma separated (instead of --peer-cert).
    #[arg(long, value_delimiter = ',')]
    peer_groups: Vec<String>,
    /// The peer's certificate name (for host rules) when using --peer-groups.
    #[arg(long, default_value = "peer")]
    peer_name: String,
    /// The peer's overlay IP (for cidr rules); defaults to the certificate's, or 100.64.0.2.
    #[arg(long)]
    peer_ip: Option<IpAddr>,
    /// This node's overlay IP, the local side of the packet (for local_cidr rules).
    #[arg(long, default_value = "100.64.0.1")]
    local_ip: IpAddr,
    /// Destination port and protocol: `4646/tcp`, `4648/udp`, `fragment/udp` or `icmp`.
    #[arg(long)]
    port: String,
    /// `in`: the peer connects to this node; `out`: this node connects to the peer.
    #[arg(long, value_enum, default_value = "in")]
    direction: DirectionArg,
    /// Print the verdict as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DirectionArg {
    In,
    Out,
}

pub fn run(a: Args) -> Result<ExitCode> {
    match a.command {
        Command::Lint(l) => run_lint(l),
        Command::Explain(e) => Ok(match run_explain(e) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("Error: {err:#}");
                ExitCode::from(2)
            }
        }),
    }
}

fn run_lint(a: LintArgs) -> Result<ExitCode> {
    let cas = match &a.ca {
        None => Vec::new(),
        Some(path) => {
            let pool = CaPool::from_pem(&files::read(path, "CA bundle")?)
                .with_context(|| format!("reading CA bundle {}", path.display()))?;
            pool.iter()
                .map(|ca| CaConstraint {
                    name: ca.name().to_string(),
                    fingerprint: ca.fingerprint(),
                    groups: ca.details().groups.clone(),
                })
                .collect()
        }
    };
    let findings: Vec<lint::Finding> = a.files.iter().flat_map(|f| lint::lint_file(f, &cas)).collect();
    let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
    let warnings = findings.len() - errors;
    match a.format {
        Format::Json => println!("{}", json!({ "findings": findings, "errors": errors, "warnings": warnings })),
        Format::Text => {
            for f in &findings {
                let sev = if f.severity == Severity::Error { "error" } else { "warning" };
                println!("{}:{}: {sev}[{}]: {}", f.file, f.line, f.check, f.message);
            }
            if !findings.is_empty() {
                eprintln!("{errors} error(s), {warnings} warning(s)");
            }
        }
    }
    let failed = errors > 0 || (a.strict && warnings > 0);
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn run_explain(a: ExplainArgs) -> Result<ExitCode> {
    let (proto, port, fragment) = parse_port_proto(&a.port)?;
    let peer = explain_peer(&a)?;
    let remote_ip = a.peer_ip.or(peer.vpn_ip()).unwrap_or(IpAddr::V4(Ipv4Addr::new(100, 64, 0, 2)));
    let cfg = load_config_or_rules(&a.config)?;
    let fw = Firewall::compile(&cfg, &[])?;
    let direction = match a.direction {
        DirectionArg::In => Direction::Inbound,
        DirectionArg::Out => Direction::Outbound,
    };
    // The other side's port is ephemeral and never matched; 40000 stands in for it.
    let (local_port, remote_port) = match direction {
        Direction::Inbound => (port, 40000),
        Direction::Outbound => (40000, port),
    };
    let ported = !fragment && (proto == PROTO_TCP || proto == PROTO_UDP);
    let flow = Flow {
        proto,
        local_ip: a.local_ip,
        remote_ip,
        local_port: if ported { local_port } else { 0 },
        remote_port: if ported { remote_port } else { 0 },
        fragment,
    };
    let rule = fw.evaluate(direction, &flow, &peer);
    let action = fw.action(direction);
    let verdict = match (rule, action) {
        (Some(_), _) => "allow",
        (None, crate::firewall::Action::Drop) => "drop",
        (None, crate::firewall::Action::Reject) => "reject",
    };
    let packet = format!("{} {}{}", direction.as_str(), a.port, if fragment { " (non-first fragment)" } else { "" });
    let who = format!("{} (groups: {}, ip {remote_ip})", peer.name, peer.groups().join(","));
    if a.json {
        let rule_json =
            rule.map(|r| json!({ "file": r.origin.file.as_ref(), "line": r.origin.line, "rule": r.to_string() }));
        println!(
            "{}",
            json!({ "verdict": verdict, "rule": rule_json, "direction": direction.as_str(), "packet": a.port, "peer": { "name": peer.name, "groups": peer.groups(), "ip": remote_ip.to_string(), "ca_name": peer.ca_name } })
        );
    } else {
        println!("{verdict}");
        match rule {
            Some(r) => println!("  rule:   {} ({r})", r.origin),
            None => println!(
                "  rule:   none; no {} rule allows it (default deny, {}_action: {verdict})",
                direction.as_str(),
                direction.as_str()
            ),
        }
        let from_to = if direction == Direction::Inbound { "from" } else { "to" };
        println!("  packet: {packet} {from_to} {who}");
    }
    Ok(if rule.is_some() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `4646/tcp`, `25417/udp`, `fragment/udp`, `icmp` (or `0/icmp`).
fn parse_port_proto(s: &str) -> Result<(u8, u16, bool)> {
    let (port, proto) = s.split_once('/').unwrap_or(("0", s));
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" => PROTO_TCP,
        "udp" => PROTO_UDP,
        "icmp" => PROTO_ICMP,
        other => {
            bail!("--port {s}: protocol {other:?} is not tcp, udp or icmp (write e.g. 4646/tcp)")
        }
    };
    if port.eq_ignore_ascii_case("fragment") {
        return Ok((proto, 0, true));
    }
    let n: u16 =
        port.parse().map_err(|_| anyhow!("--port {s}: {port:?} is not a port number (write e.g. 4646/tcp)"))?;
    if n == 0 && proto != PROTO_ICMP {
        bail!("--port {s}: port must be 1-65535");
    }
    Ok((proto, n, false))
}

fn explain_peer(a: &ExplainArgs) -> Result<PeerIdentity> {
    let Some(path) = &a.peer_cert else {
        let groups = a.peer_groups.iter().map(|g| g.trim()).filter(|g| !g.is_empty());
        let ips = a.peer_ip.into_iter().collect();
        return Ok(PeerIdentity::new(a.peer_name.clone(), groups, ips, vec![], "", Fingerprint([0; 32])));
    };
    let cert = Certificate::from_pem(&files::read(path, "peer certificate")?)
        .with_context(|| format!("parsing peer certificate {}", path.display()))?;
    let d = cert.details();
    let issuer = d.issuer.unwrap_or(Fingerprint([0; 32]));
    let ca_name = match &a.ca {
        None => String::new(),
        Some(ca) => {
            let pool = CaPool::from_pem(&files::read(ca, "CA bundle")?)
                .with_context(|| format!("reading CA bundle {}", ca.display()))?;
            pool.get(&issuer)
                .map(|c| c.name().to_string())
                .ok_or_else(|| anyhow!("{}: issuer {issuer} is not in {}", path.display(), ca.display()))?
        }
    };
    Ok(PeerIdentity::new(
        d.name.clone(),
        d.groups.iter().cloned(),
        d.ips.iter().map(|n| IpAddr::V4(n.addr())).collect(),
        d.subnets.iter().map(|n| ipnet::IpNet::V4(*n)).collect(),
        ca_name,
        issuer,
    ))
}
