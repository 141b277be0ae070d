//! `cos-mesh ping NAME|IP`: pings a member through the mesh (starting the tunnel if needed) and
//! prints the path each answer took, the round trip and what the far end's firewall says about
//! the probe; a ping without an answer says which stage failed.

use std::io::Write;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::daemon::control::{ANSWER_TIMEOUT, Request, ask, ask_within};
use crate::daemon::ping::{PingReport, PingRequest, SCHEMA_VERSION, probe_word};
use crate::daemon::report::{MemberReport, MembersReport, human_ms};
use crate::mesh::{Probe, ProbeVerdict};

/// Time between two pings.
const INTERVAL: Duration = Duration::from_secs(1);

#[derive(clap::Args)]
#[command(after_help = "Sends COUNT pings one second apart and prints each answer: the path (direct ip:port, or \
                        the relay), the round trip, and whether the peer's firewall lets the probe from this node \
                        in. A ping without an answer ends the run with the stage that failed (lighthouse, \
                        handshake, relay, or a peer too old to answer).\n\
                        Exit status: 0 when the last ping was answered and both firewalls let the probe through; \
                        1 otherwise (no answer, or a firewall drops it); 2 bad usage.")]
pub struct Args {
    /// The member to ping: its certificate name or overlay IP.
    #[arg(value_name = "NAME|IP")]
    peer: String,
    #[command(flatten)]
    target: super::socket::Target,
    /// How many pings (`-c` is the config file in every cos-mesh command, hence `-n`).
    #[arg(short = 'n', long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    count: u32,
    /// Ask whether the peer's firewall lets this port in: `4647`, `4647/tcp`, `53/udp`. Without
    /// it the probe is an ICMP echo.
    #[arg(long, value_name = "PORT[/PROTO]")]
    port: Option<String>,
    /// The protocol for `--port` when it has none: tcp (default) or udp.
    #[arg(long, requires = "port", value_parser = ["tcp", "udp"])]
    proto: Option<String>,
    /// How long each ping may take, starting the tunnel included (`5s`, `1500ms`; at most 60s).
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    timeout: Duration,
    /// Print every answer as JSON (with `schema_version`).
    #[arg(long)]
    json: bool,
}

/// `--json`: the whole run.
#[derive(Serialize)]
struct RunReport {
    schema_version: u32,
    target: IpAddr,
    name: Option<String>,
    probe: String,
    /// The last ping was answered and both firewalls let the probe through.
    ok: bool,
    pings: Vec<PingReport>,
}

pub fn run(a: Args) -> Result<ExitCode> {
    // A bad --port/--proto pair is bad usage: clap's message and exit status 2.
    let probe = probe_of(a.port.as_deref(), a.proto.as_deref())
        .unwrap_or_else(|e| clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{e}\n")).exit());
    let addr = a.target.addr()?;
    let members: MembersReport = serde_json::from_value(ask(&addr, Request::Members)?)
        .context("the daemon's members answer has an unexpected shape")?;
    let (target, name) = resolve(&a.peer, &members)?;
    let who = match &name {
        Some(n) => format!("{n} ({target})"),
        None => target.to_string(),
    };
    let mut out = std::io::stdout().lock();
    if !a.json {
        writeln!(out, "PING {who}: {probe}, {} ping(s), timeout {:?}", a.count, a.timeout)?;
    }
    let request = PingRequest { target, probe, timeout: a.timeout };
    let mut pings: Vec<PingReport> = vec![];
    for i in 0..a.count {
        if i > 0 {
            std::thread::sleep(INTERVAL);
        }
        let v = ask_within(&addr, Request::Ping(request), a.timeout + ANSWER_TIMEOUT)?;
        let r: PingReport = serde_json::from_value(v).context("the daemon's ping answer has an unexpected shape")?;
        if !a.json {
            line(&r, &who, probe, &mut out)?;
        }
        let answered = r.answered;
        pings.push(r);
        if !answered {
            break;
        }
    }
    let ok = pings.last().is_some_and(PingReport::passes);
    if a.json {
        let name = name.or_else(|| pings.iter().find_map(|p| p.name.clone()));
        let report = RunReport { schema_version: SCHEMA_VERSION, target, name, probe: probe_word(probe), ok, pings };
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        summary(&pings, &who, &mut out)?;
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// clap value parser: a ping timeout, 1 ms to 60 s.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = super::parse_duration(s)?;
    if d.is_zero() || d > crate::daemon::ping::MAX_TIMEOUT {
        return Err(format!("{s} is out of range: give 1ms to 60s"));
    }
    Ok(d)
}

/// The probe of `--port` and `--proto`.
fn probe_of(port: Option<&str>, proto: Option<&str>) -> Result<Probe, String> {
    let Some(port) = port else { return Ok(Probe::IcmpEcho) };
    let text = match proto {
        Some(p) if port.contains('/') => {
            return Err(format!("--port {port} already names its protocol; drop --proto {p}"));
        }
        Some(p) => format!("{port}/{p}"),
        None => port.to_string(),
    };
    text.parse().map_err(|e: String| format!("--port {port}: {e}"))
}

/// The identity (and name) of `peer`: a member's certificate name, or an overlay address of
/// it (IPv4 or IPv6), which maps to the member that holds it (the core names a peer by its
/// identity, its certificate's first IPv4 network when it has one).
fn resolve(peer: &str, members: &MembersReport) -> Result<(IpAddr, Option<String>)> {
    if let Ok(ip) = peer.parse::<IpAddr>() {
        let holds = |m: &&MemberReport| m.vpn_ip == ip || matches!(ip, IpAddr::V6(v6) if m.ipv6.contains(&v6));
        return match (members.members.iter().find(holds), ip) {
            (Some(m), _) => Ok((m.vpn_ip, Some(m.name.clone()))),
            (None, IpAddr::V4(_)) => Ok((ip, None)),
            (None, IpAddr::V6(_)) => bail!(
                "no member known to this node has the IPv6 overlay address {ip} (`cos-mesh members` lists them; \
                 a name works too)"
            ),
        };
    }
    match members.members.iter().find(|m| m.name == peer) {
        Some(m) => Ok((m.vpn_ip, Some(m.name.clone()))),
        None => bail!(
            "no certificate named {peer:?} is known to this node (`cos-mesh members` lists the names it knows; \
             an overlay IP works too)"
        ),
    }
}

fn line(r: &PingReport, who: &str, probe: Probe, out: &mut impl Write) -> std::io::Result<()> {
    if !r.answered {
        let why = r.problem.as_deref().unwrap_or("no answer");
        return writeln!(out, "no answer from {who}: {why}");
    }
    let path = match (r.direct, r.relay, &r.relay_name) {
        (Some(d), _, _) => format!("directly at {d}"),
        (None, Some(relay), Some(n)) => format!("via relay {n} ({relay})"),
        (None, Some(relay), None) => format!("via relay {relay}"),
        (None, None, _) => "by an unknown path".into(),
    };
    let rtt = r.rtt_ms.map(human_ms).unwrap_or_else(|| "?".into());
    let name = r.name.as_deref().map(|n| format!("{n} ({})", r.target)).unwrap_or_else(|| who.to_string());
    let verdict = match r.far_firewall {
        Some(ProbeVerdict::Allow) => format!("its firewall allows {probe} from us"),
        Some(ProbeVerdict::Drop) => format!("its firewall DROPS {probe} from us (firewall at the far end)"),
        Some(ProbeVerdict::Reject) => format!("its firewall REJECTS {probe} from us (firewall at the far end)"),
        None => "its firewall did not say".into(),
    };
    let ours = match r.our_firewall {
        Some(ProbeVerdict::Drop | ProbeVerdict::Reject) => "; but OUR firewall blocks it going out (outbound rules)",
        _ => "",
    };
    writeln!(out, "reply from {name} {path} in {rtt}: {verdict}{ours}")
}

fn summary(pings: &[PingReport], who: &str, out: &mut impl Write) -> std::io::Result<()> {
    let rtts: Vec<f64> = pings.iter().filter_map(|p| p.rtt_ms).collect();
    let answered = pings.iter().filter(|p| p.answered).count();
    write!(out, "--- {who}: {} sent, {answered} answered", pings.len())?;
    if !rtts.is_empty() {
        let min = rtts.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rtts.iter().copied().fold(0.0, f64::max);
        let avg = rtts.iter().sum::<f64>() / rtts.len() as f64;
        write!(out, ", round trip min/avg/max {:.3}/{:.3}/{:.3} ms", min, avg, max)?;
    }
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::probe_of;
    use crate::mesh::Probe;

    #[test]
    fn port_and_proto_make_one_probe() {
        assert_eq!(probe_of(None, None).unwrap(), Probe::IcmpEcho);
        assert_eq!(probe_of(Some("4647"), None).unwrap(), Probe::Tcp(4647));
        assert_eq!(probe_of(Some("4647"), Some("udp")).unwrap(), Probe::Udp(4647));
        assert_eq!(probe_of(Some("4647/tcp"), None).unwrap(), Probe::Tcp(4647));
        let e = probe_of(Some("4647/tcp"), Some("udp")).unwrap_err();
        assert_eq!(e, "--port 4647/tcp already names its protocol; drop --proto udp");
        let e = probe_of(Some("nomad"), None).unwrap_err();
        assert!(e.starts_with("--port nomad: `nomad` is not a port"), "{e}");
    }
}
