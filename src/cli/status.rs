use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::daemon::control::{Request, ask};
use crate::daemon::report::{StatusReport, human_bytes, human_secs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: super::socket::Target,
    /// Print the daemon's answer as JSON (with `schema_version`).
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let v = ask(&a.target.addr()?, Request::Status)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let r: StatusReport = serde_json::from_value(v).context("the daemon's status answer has an unexpected shape")?;
    render(&r, &mut out)?;
    Ok(ExitCode::SUCCESS)
}

/// The status as text: one paragraph for the node, one line per lighthouse, a peer table, and
/// the drop counters that are not zero.
pub fn render(r: &StatusReport, out: &mut impl Write) -> std::io::Result<()> {
    let n = &r.node;
    writeln!(
        out,
        "node {} {} ({}){}, cos-mesh {}, up {}",
        n.name,
        n.vpn_ip,
        n.overlay,
        if n.lighthouse { ", lighthouse" } else { "" },
        n.version,
        human_secs(n.uptime_secs)
    )?;
    writeln!(out, "  groups: {}", if n.groups.is_empty() { "-".into() } else { n.groups.join(", ") })?;
    writeln!(out, "  listening on {}, tun {}, certificate valid until {}", n.listen, n.tun, n.cert_not_after)?;
    for lh in &r.lighthouses {
        let who = lh.name.as_deref().map(|n| format!("{n} ")).unwrap_or_default();
        match &lh.problem {
            None => {
                writeln!(out, "lighthouse {who}{} reachable at {}", lh.vpn_ip, lh.address.as_deref().unwrap_or("?"))?
            }
            Some(why) => writeln!(
                out,
                "lighthouse {who}{} NOT reachable{}: {why}",
                lh.vpn_ip,
                lh.address.as_deref().map(|a| format!(" (at {a})")).unwrap_or_default()
            )?,
        }
    }
    writeln!(
        out,
        "{:<20} {:<15} {:<4} {:<22} {:<15} {:>10} {:>10} {:>10} {:>6}",
        "PEER", "OVERLAY IP", "UP", "DIRECT", "RELAY", "HANDSHAKE", "RX", "TX", "DROPS"
    )?;
    for p in &r.peers {
        let relay = match (&p.relay_name, p.relay) {
            (Some(name), _) => name.clone(),
            (None, Some(ip)) => ip.to_string(),
            (None, None) => "-".into(),
        };
        writeln!(
            out,
            "{:<20} {:<15} {:<4} {:<22} {:<15} {:>10} {:>10} {:>10} {:>6}",
            p.name,
            p.vpn_ip,
            if p.up { "yes" } else { "no" },
            p.direct.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
            relay,
            p.since_handshake_secs.map(|s| format!("{} ago", human_secs(s))).unwrap_or_else(|| "-".into()),
            human_bytes(p.rx_bytes),
            human_bytes(p.tx_bytes),
            p.drops.values().sum::<u64>(),
        )?;
    }
    let drops: Vec<String> = r
        .firewall
        .counters
        .iter()
        .filter(|(k, v)| (k.starts_with("dropped") || *k == "rejected") && **v > 0)
        .map(|(k, v)| format!("{} {v}", k.trim_start_matches("dropped_").replace('_', " ")))
        .collect();
    writeln!(
        out,
        "firewall: rules version {}, {} tracked flows, drops: {}",
        r.firewall.rules_version,
        r.firewall.conntrack_entries,
        if drops.is_empty() { "none".into() } else { drops.join(", ") }
    )?;
    let core: Vec<String> = r
        .counters
        .iter()
        .filter(|(k, v)| (k.contains("malformed") || k.contains("rejected") || k.contains("dropped")) && **v > 0)
        .map(|(k, v)| format!("{} {v}", k.replace('_', " ")))
        .chain((r.io.tx_dropped > 0).then(|| format!("socket full {}", r.io.tx_dropped)))
        .collect();
    if !core.is_empty() {
        writeln!(out, "tunnel drops: {}", core.join(", "))?;
    }
    Ok(())
}
