//! A picture of the demo's world: every host (filled with its role's colour, lighthouses as
//! double circles) and every tunnel that is up (solid when direct, dashed through the relay,
//! grey to the lighthouses), as Graphviz DOT rendered to SVG by `layout-rs` (pure Rust, so the
//! demo needs no Graphviz on the machine).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use anyhow::{Result, anyhow};
use layout::backends::svg::SVGWriter;
use layout::gv::{DotParser, GraphBuilder};

/// One host as the picture needs it.
pub struct HostView {
    pub name: String,
    pub role: &'static str,
    pub vpn_ip: Ipv4Addr,
    pub lighthouse: bool,
    /// Peers with a tunnel up, and the relay when it goes through one.
    pub peers: Vec<(String, Option<String>)>,
}

/// Colours per role, in order of first appearance (SVG colour names).
const PALETTE: &[&str] = &["khaki", "plum", "lightgray", "palegreen", "lightblue", "lightsalmon", "wheat"];
const LIGHTHOUSE_EDGE: &str = "gray";

/// What the picture's lines and colours mean, for the text next to it.
pub const LEGEND: &str = "solid: direct tunnel, dashed: through the relay, grey: tunnel to a lighthouse; \
                          one colour per role";

/// The world as a DOT graph.
pub fn dot(hosts: &[HostView]) -> String {
    let mut roles: Vec<&str> = vec![];
    for h in hosts {
        if !roles.contains(&h.role) {
            roles.push(h.role);
        }
    }
    let mut s = String::from("graph world {\n");
    for h in hosts {
        let colour = roles.iter().position(|r| *r == h.role).map_or("white", |i| PALETTE[i % PALETTE.len()]);
        let shape = if h.lighthouse { "doublecircle" } else { "box" };
        let _ = writeln!(
            s,
            "  \"{}\" [label=\"{}\\n{}\\n{}\", shape={shape}, style=filled, fillcolor={colour}];",
            h.name, h.name, h.vpn_ip, h.role
        );
    }
    // One edge per pair, whichever side reported it; relayed if either side says so.
    let lighthouses: Vec<&str> = hosts.iter().filter(|h| h.lighthouse).map(|h| h.name.as_str()).collect();
    let mut edges: BTreeMap<(&str, &str), Option<&str>> = BTreeMap::new();
    for h in hosts {
        for (peer, relay) in &h.peers {
            if !hosts.iter().any(|x| &x.name == peer) {
                continue;
            }
            let key = if h.name.as_str() < peer.as_str() {
                (h.name.as_str(), peer.as_str())
            } else {
                (peer.as_str(), h.name.as_str())
            };
            let e = edges.entry(key).or_insert(None);
            if relay.is_some() {
                *e = relay.as_deref();
            }
        }
    }
    for ((a, b), relay) in edges {
        let attrs = match relay {
            Some(r) => format!("style=dashed, label=\"via {r}\""),
            None if lighthouses.contains(&a) || lighthouses.contains(&b) => format!("color={LIGHTHOUSE_EDGE}"),
            None => "penwidth=2".into(),
        };
        let _ = writeln!(s, "  \"{a}\" -- \"{b}\" [{attrs}];");
    }
    s.push_str("}\n");
    s
}

/// Renders DOT text to an SVG document.
pub fn svg(dot: &str) -> Result<String> {
    let mut parser = DotParser::new(dot);
    let graph = parser.process().map_err(|e| anyhow!("the world's picture does not parse as DOT: {e}"))?;
    let mut builder = GraphBuilder::new();
    builder.visit_graph(&graph);
    let mut visual = builder.get();
    let mut writer = SVGWriter::new();
    visual.do_it(false, false, false, &mut writer);
    Ok(writer.finalize())
}

#[cfg(test)]
mod tests {
    use super::{HostView, dot, svg};

    fn host(name: &str, n: u8, role: &'static str, peers: &[(&str, Option<&str>)]) -> HostView {
        HostView {
            name: name.into(),
            role,
            vpn_ip: std::net::Ipv4Addr::new(100, 64, 0, n),
            lighthouse: role == "lighthouse",
            peers: peers.iter().map(|(p, r)| (p.to_string(), r.map(str::to_string))).collect(),
        }
    }

    #[test]
    fn edges_are_one_per_pair_and_say_how_they_go() {
        let hosts = [
            host("lighthouse-1", 1, "lighthouse", &[("server-1", None), ("client-1", None)]),
            host("server-1", 11, "nomad server", &[("lighthouse-1", None), ("client-1", Some("relay"))]),
            host("client-1", 21, "nomad client", &[("server-1", None), ("ghost", None)]),
        ];
        let d = dot(&hosts);
        assert!(d.contains("\"client-1\" -- \"server-1\" [style=dashed, label=\"via relay\"];"), "{d}");
        assert!(d.contains("\"client-1\" -- \"lighthouse-1\" [color=gray];"), "{d}");
        assert_eq!(d.matches(" -- ").count(), 3, "{d}");
        assert!(!d.contains("ghost"), "only hosts of the world are drawn");
        assert!(d.contains("shape=doublecircle, style=filled, fillcolor=khaki"), "{d}");
        let picture = svg(&d).unwrap();
        assert!(picture.contains("<svg"));
        assert!(picture.contains("stroke-dasharray"), "the relayed tunnel is dashed: {picture}");
        for name in ["lighthouse-1", "server-1", "client-1"] {
            assert!(picture.contains(name), "{name} in the SVG");
        }
    }
}
