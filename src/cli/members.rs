use std::collections::BTreeSet;
use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::daemon::control::{Request, ask};
use crate::daemon::report::{MemberReport, MemberState, MembersReport, human_secs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: super::socket::Target,
    /// Only members whose certificate carries this group (e.g. nomad-server); a group no member
    /// carries is an error (a typo must not look like an empty cluster).
    #[arg(long)]
    group: Option<String>,
    /// `table` (default), `json`, `addrs`: overlay IPs separated by spaces, as Nomad's
    /// `retry_join = ["exec=cos-mesh members --group nomad-server --format addrs"]` expects, or
    /// `dot`: a Graphviz picture (`| dot -Tsvg > mesh.svg`), solid edges for direct paths,
    /// dashed ones through relays, one colour per group.
    #[arg(long, default_value = "table", value_parser = ["table", "json", "addrs", "dot"])]
    format: String,
    /// Same as `--format json`.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let v = ask(&a.target.addr()?, Request::Members)?;
    let mut r: MembersReport =
        serde_json::from_value(v).context("the daemon's members answer has an unexpected shape")?;
    if let Some(g) = &a.group {
        let known: BTreeSet<&str> = r.members.iter().flat_map(|m| m.groups.iter().map(String::as_str)).collect();
        if !known.contains(g.as_str()) {
            bail!(
                "no member carries group {g:?}; the groups in this mesh are: {}",
                if known.is_empty() { "(none)".into() } else { known.into_iter().collect::<Vec<_>>().join(", ") }
            );
        }
        r.members.retain(|m| m.groups.contains(g));
    }
    let mut out = std::io::stdout().lock();
    match (a.json, a.format.as_str()) {
        (true, _) | (_, "json") => writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?,
        (_, "addrs") => {
            writeln!(out, "{}", r.members.iter().map(|m| m.vpn_ip.to_string()).collect::<Vec<_>>().join(" "))?
        }
        (_, "dot") => dot(&r, &mut out)?,
        _ => table(&r.members, &mut out)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn table(members: &[MemberReport], out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<24} {:<15} {:<8} {:<12} {:<12} {:<24} GROUPS",
        "NAME", "OVERLAY IP", "STATE", "LAST SEEN", "REGISTERED", "UNDERLAY"
    )?;
    for m in members {
        let join = |v: &[std::net::SocketAddr]| v.iter().map(|u| u.to_string()).collect::<Vec<_>>().join(",");
        // What this node uses; on a lighthouse, otherwise what the member registered.
        let underlay = match (m.underlay.is_empty(), m.relay) {
            (false, _) => join(&m.underlay),
            (true, Some(r)) => format!("via relay {r}"),
            (true, None) if !m.registered_underlay.is_empty() => join(&m.registered_underlay),
            (true, None) => "-".into(),
        };
        writeln!(
            out,
            "{:<24} {:<15} {:<8} {:<12} {:<12} {:<24} {}",
            m.name,
            m.vpn_ip,
            state_word(m.state),
            match (m.state, m.last_seen_secs) {
                (MemberState::This, _) => "-".into(),
                (_, Some(s)) => format!("{} ago", human_secs(s)),
                (_, None) => "never".into(),
            },
            m.registered_secs_ago.map(|s| format!("{} ago", human_secs(s))).unwrap_or_else(|| "-".into()),
            underlay,
            m.groups.join(",")
        )?;
    }
    Ok(())
}

fn state_word(s: MemberState) -> &'static str {
    match s {
        MemberState::This => "this",
        MemberState::Online => "online",
        MemberState::Offline => "offline",
        MemberState::Unknown => "unknown",
    }
}

/// Colours for groups, in order of first appearance (Graphviz X11 names, readable on white).
const PALETTE: &[&str] =
    &["lightblue", "palegreen", "lightsalmon", "plum", "khaki", "lightpink", "aquamarine", "wheat"];

/// The mesh as this node sees it, in Graphviz: a node per member, filled with its first
/// group's colour; an edge from this node to every member it has a session with, solid when
/// direct (labelled with the underlay address), dashed through the relay when relayed.
fn dot(r: &MembersReport, out: &mut impl Write) -> std::io::Result<()> {
    let mut groups: Vec<&str> = Vec::new();
    for g in r.members.iter().flat_map(|m| &m.groups) {
        if !groups.contains(&g.as_str()) {
            groups.push(g);
        }
    }
    let colour = |m: &MemberReport| {
        m.groups
            .first()
            .and_then(|g| groups.iter().position(|x| x == g))
            .map(|i| PALETTE[i % PALETTE.len()])
            .unwrap_or("white")
    };
    writeln!(out, "graph mesh {{")?;
    writeln!(out, "  node [shape=box, style=filled, fontname=\"sans-serif\"];")?;
    for m in &r.members {
        writeln!(
            out,
            "  \"{}\" [label=\"{}\\n{}\\n{}\", fillcolor={}{}];",
            m.vpn_ip,
            esc(&m.name),
            m.vpn_ip,
            esc(&m.groups.join(",")),
            colour(m),
            if m.state == MemberState::This { ", penwidth=3" } else { "" }
        )?;
    }
    for m in r.members.iter().filter(|m| m.state == MemberState::Online || m.state == MemberState::Offline) {
        let style = if m.state == MemberState::Online { "" } else { ", color=gray" };
        match (m.underlay.first(), m.relay) {
            (Some(addr), _) => writeln!(out, "  \"{}\" -- \"{}\" [label=\"{addr}\"{style}];", r.this_node, m.vpn_ip)?,
            (None, Some(relay)) => {
                writeln!(out, "  \"{}\" -- \"{relay}\" [style=dashed{style}];", r.this_node)?;
                writeln!(out, "  \"{relay}\" -- \"{}\" [style=dashed, label=\"relayed\"{style}];", m.vpn_ip)?;
            }
            (None, None) => {}
        }
    }
    writeln!(out, "  subgraph cluster_legend {{\n    label=\"groups\";")?;
    for (i, g) in groups.iter().enumerate() {
        writeln!(out, "    \"group:{}\" [label=\"{}\", fillcolor={}];", esc(g), esc(g), PALETTE[i % PALETTE.len()])?;
    }
    writeln!(out, "  }}\n}}")
}

/// Escapes a string for a double-quoted Graphviz ID.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(
        name: &str,
        ip: &str,
        group: &str,
        state: MemberState,
        direct: Option<&str>,
        relay: Option<&str>,
    ) -> MemberReport {
        MemberReport {
            name: name.into(),
            vpn_ip: ip.parse().unwrap(),
            groups: vec![group.into()],
            state,
            last_seen_secs: Some(3),
            underlay: direct.map(|d| d.parse().unwrap()).into_iter().collect(),
            relay: relay.map(|r| r.parse().unwrap()),
            registered_underlay: vec![],
            registered_secs_ago: None,
            ipv6: vec![],
        }
    }

    #[test]
    fn a_lighthouse_table_shows_where_members_registered_and_when() {
        let mut m = member("client-2", "100.64.0.22", "nomad-client", MemberState::Unknown, None, None);
        m.registered_underlay = vec!["198.18.0.22:4242".parse().unwrap(), "198.19.0.2:4242".parse().unwrap()];
        m.registered_secs_ago = Some(4);
        let mut never = member("client-3", "100.64.0.23", "nomad-client", MemberState::Unknown, None, None);
        never.last_seen_secs = None;
        let mut out = Vec::new();
        table(&[m, never], &mut out).unwrap();
        let t = String::from_utf8(out).unwrap();
        assert!(t.lines().next().unwrap().contains("REGISTERED"), "{t}");
        let row = t.lines().find(|l| l.starts_with("client-2")).unwrap();
        assert!(row.contains("4 s ago") && row.contains("198.18.0.22:4242,198.19.0.2:4242"), "{row}");
        let row = t.lines().find(|l| l.starts_with("client-3")).unwrap();
        assert!(!row.contains("198.") && !row.contains("ago"), "nothing registered, nothing shown: {row}");
    }

    #[test]
    fn dot_draws_direct_and_relayed_edges_with_group_colours() {
        let r = MembersReport {
            schema_version: 1,
            generated_at: "2026-01-01T00:00:00Z".into(),
            this_node: "100.64.0.21".parse().unwrap(),
            members: vec![
                member("lighthouse", "100.64.0.1", "lighthouse", MemberState::Online, Some("198.18.0.1:4242"), None),
                member("server-1", "100.64.0.11", "nomad-server", MemberState::Online, None, Some("100.64.0.1")),
                member("client-1", "100.64.0.21", "nomad-client", MemberState::This, Some("198.18.0.21:4242"), None),
                member("client-2", "100.64.0.22", "nomad-client", MemberState::Unknown, None, None),
            ],
        };
        let mut out = Vec::new();
        dot(&r, &mut out).unwrap();
        let g = String::from_utf8(out).unwrap();
        assert!(g.starts_with("graph mesh {") && g.trim_end().ends_with('}'), "{g}");
        assert!(g.contains("\"100.64.0.21\" -- \"100.64.0.1\" [label=\"198.18.0.1:4242\"]"), "direct edge: {g}");
        assert!(g.contains("\"100.64.0.1\" -- \"100.64.0.11\" [style=dashed, label=\"relayed\"]"), "relayed edge: {g}");
        assert!(!g.contains("-- \"100.64.0.22\""), "no edge to a member without a session: {g}");
        // One colour per group: both clients share one, the server has another.
        let fill = |ip: &str| {
            g.lines()
                .find(|l| l.contains(&format!("\"{ip}\" [label")))
                .unwrap()
                .split("fillcolor=")
                .nth(1)
                .unwrap()
                .split([',', ']'])
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(fill("100.64.0.21"), fill("100.64.0.22"));
        assert_ne!(fill("100.64.0.21"), fill("100.64.0.11"));
        assert!(g.contains("penwidth=3"), "this node stands out: {g}");
    }
}
