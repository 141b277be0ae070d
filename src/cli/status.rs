use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::daemon::control::{Request, ask};
use crate::daemon::report::{PeerReport, StatusReport, human_bytes, human_ms, human_secs, short_secs};

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

/// The status as text: one paragraph for the node, one line per lighthouse, a peer table (each
/// peer with a line of what its tunnel measures), and the drop counters that are not zero.
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
    if !n.ipv6.is_empty() {
        writeln!(out, "  IPv6 overlay: {}", n.ipv6.join(", "))?;
    }
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
                lh.address.as_deref().filter(|a| !why.contains(a)).map(|a| format!(" (at {a})")).unwrap_or_default()
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
        if let Some(details) = tunnel_details(p) {
            writeln!(out, "    {details}")?;
        }
        if !p.ipv6.is_empty() {
            let v6: Vec<String> = p.ipv6.iter().map(|a| a.to_string()).collect();
            writeln!(out, "    IPv6 {}", v6.join(", "))?;
        }
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
    if !r.io.workers.is_empty() {
        let each: Vec<String> =
            r.io.workers
                .iter()
                .map(|w| format!("{} out / {} in", w.tun_packets_read, w.udp_datagrams_received))
                .collect();
        writeln!(out, "workers: {} (packets from the TUN / datagrams received: {})", each.len(), each.join(", "))?;
    }
    Ok(())
}

/// `rtt 0.4 ms, up 3m12s, last rx 2s ago`: what is known of a peer's tunnel, if anything.
fn tunnel_details(p: &PeerReport) -> Option<String> {
    let parts: Vec<String> = [
        p.rtt_ms.map(|ms| format!("rtt {}", human_ms(ms))),
        p.tunnel_up_secs.map(|s| format!("up {}", short_secs(s))),
        p.last_rx_secs_ago.map(|s| format!("last rx {} ago", short_secs(s))),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::daemon::report::{FirewallReport, IoReport, LighthouseReport, NodeReport, PeerReport};

    fn peer(name: &str, ip: &str, direct: Option<&str>, relay: Option<(&str, &str)>) -> PeerReport {
        PeerReport {
            name: name.into(),
            vpn_ip: ip.parse().unwrap(),
            ipv6: vec![],
            groups: vec!["nomad-server".into()],
            up: true,
            direct: direct.map(|d| d.parse().unwrap()),
            relay: relay.map(|r| r.1.parse().unwrap()),
            relay_name: relay.map(|r| r.0.to_string()),
            endpoint: None,
            relayed: relay.is_some(),
            since_handshake_secs: Some(95),
            rtt_ms: direct.map(|_| 0.412),
            tunnel_up_secs: Some(192),
            last_rx_secs_ago: Some(2),
            rx_bytes: 3 << 20,
            tx_bytes: 1536,
            rx_packets: 1,
            tx_packets: 1,
            drops: BTreeMap::from([("firewall".into(), 4)]),
            firewall_dropped: 4,
            cert_fingerprint: String::new(),
            cert_not_after: String::new(),
        }
    }

    #[test]
    fn text_status_answers_in_words_and_units() {
        let r = StatusReport {
            schema_version: 1,
            generated_at: "2026-12-02T05:00:00Z".into(),
            node: NodeReport {
                name: "client-1".into(),
                vpn_ip: "100.64.0.21".parse().unwrap(),
                overlay: "100.64.0.0/10".into(),
                ipv6: vec!["fd00::21/64".into()],
                groups: vec!["nomad-client".into()],
                cert_not_after: "2027-12-02T05:00:00Z".into(),
                cert_fingerprint: String::new(),
                listen: "0.0.0.0:4242".parse().unwrap(),
                tun: "nebula1".into(),
                lighthouse: false,
                version: "0.1.0".into(),
                started_at: String::new(),
                uptime_secs: 7260,
            },
            peers: vec![
                PeerReport {
                    ipv6: vec!["fd00::11".parse().unwrap()],
                    ..peer("server-1", "100.64.0.11", Some("198.18.0.11:4242"), None)
                },
                peer("server-2", "100.64.0.12", None, Some(("lighthouse", "100.64.0.1"))),
            ],
            lighthouses: vec![LighthouseReport {
                vpn_ip: "100.64.0.1".parse().unwrap(),
                name: None,
                up: false,
                address: None,
                problem: Some("no answer yet".into()),
            }],
            counters: BTreeMap::from([("rx_malformed".into(), 2), ("rx_datagrams".into(), 100)]),
            io: IoReport::default(),
            firewall: FirewallReport {
                rules_version: 1,
                conntrack_entries: 3,
                counters: BTreeMap::from([("dropped_no_rule".into(), 4), ("allowed_by_rule".into(), 9)]),
            },
        };
        let mut out = Vec::new();
        render(&r, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("node client-1 100.64.0.21 (100.64.0.0/10), cos-mesh 0.1.0, up 2 h 1 min\n"),
            "{text}"
        );
        assert!(text.contains("lighthouse 100.64.0.1 NOT reachable: no answer yet"), "{text}");
        let s1 = text.lines().find(|l| l.starts_with("server-1")).unwrap();
        assert!(s1.contains("198.18.0.11:4242") && s1.contains("95 s ago") && s1.contains("3.0 MiB"), "{s1}");
        let details = text.lines().skip_while(|l| !l.starts_with("server-1")).nth(1).unwrap();
        assert_eq!(details, "    rtt 0.4 ms, up 3m12s, last rx 2s ago", "{text}");
        assert!(text.contains("\n  IPv6 overlay: fd00::21/64\n") && text.contains("\n    IPv6 fd00::11\n"), "{text}");
        let s2 = text.lines().find(|l| l.starts_with("server-2")).unwrap();
        let details = text.lines().skip_while(|l| !l.starts_with("server-2")).nth(1).unwrap();
        assert_eq!(details, "    up 3m12s, last rx 2s ago", "no rtt measured, none shown: {text}");
        assert!(s2.contains(" lighthouse ") && s2.contains("1.5 KiB"), "the relay by name: {s2}");
        assert!(text.contains("drops: no rule 4"), "{text}");
        assert!(text.contains("tunnel drops: rx malformed 2"), "{text}");
        assert!(!text.contains('{'), "no JSON in the text: {text}");
    }
}
