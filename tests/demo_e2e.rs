//! `cos-mesh demo` builds its world, every cell of its reachability matrix matches the role
//! rule sets, and it tears everything down by itself.

use std::process::Command;

#[test]
fn the_demo_runs_to_completion_and_its_matrix_matches_the_rules() {
    let before = namespaces();
    let dir = tempfile::tempdir().unwrap();
    let picture = dir.path().join("world.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_cos-mesh")).args(["demo", "--svg"]).arg(&picture).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Every cell matches the role rule sets"), "{text}");
    // 14 services × 4 sources, each cell a verdict, none disagreeing.
    let cells: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("server-1 ") || l.starts_with("client-1 "))
        .filter(|l| l.contains("/tcp") || l.contains("/udp"))
        .flat_map(|l| l.split_whitespace())
        .filter(|w| *w == "allowed" || *w == "blocked" || *w == "!")
        .collect();
    assert_eq!(cells.len(), 56, "{text}");
    assert!(!cells.contains(&"!"));
    // What the role rules promise, as observed by the demo's real connections:
    let row = |prefix: &str| text.lines().find(|l| l.starts_with(prefix)).unwrap().to_string();
    assert!(
        row("server-1 4647/tcp").split_whitespace().filter(|w| *w == "allowed").count() == 2,
        "RPC from servers and clients"
    );
    let verdicts = |prefix: &str| -> Vec<String> {
        row(prefix).split_whitespace().filter(|w| *w == "allowed" || *w == "blocked").map(str::to_string).collect()
    };
    assert!(row("client-1 22/tcp").split_whitespace().filter(|w| *w == "blocked").count() == 4, "ssh closed to all");
    // Columns: server-2, client-2, operator, prometheus.
    assert_eq!(verdicts("client-1 4646/tcp"), ["blocked", "allowed", "allowed", "allowed"], "Nomad HTTP on clients");
    assert_eq!(verdicts("server-1 4646/tcp"), ["allowed", "blocked", "allowed", "allowed"], "Nomad HTTP on servers");
    assert_eq!(verdicts("server-1 8300/tcp"), ["allowed", "allowed", "blocked", "blocked"], "Consul RPC");
    assert_eq!(verdicts("server-1 8301/udp"), ["allowed", "allowed", "blocked", "blocked"], "Consul LAN");
    assert_eq!(verdicts("client-1 8301/tcp"), ["allowed", "allowed", "blocked", "blocked"], "Consul LAN on clients");
    assert_eq!(verdicts("server-1 8302/tcp"), ["allowed", "blocked", "blocked", "blocked"], "Consul WAN");
    assert_eq!(verdicts("server-1 8500/tcp"), ["blocked"; 4], "Consul HTTP is not on the mesh");
    assert_eq!(verdicts("client-1 8080/tcp"), ["blocked", "blocked", "blocked", "allowed"], "cos-mesh metrics");
    // Mutual TLS over the overlay with the certificates of `cos-mesh nomad tls`.
    assert!(text.contains("client-1 with its client certificate (CN client.global.nomad): accepted"), "{text}");
    assert!(text.contains("client-1 without a certificate: refused (TLS alert"), "{text}");
    // DNS for the mesh from a lighthouse, over the overlay: a group, a node, a stranger.
    let section = text.split("DNS for the mesh").nth(1).unwrap_or("");
    let dns = |name: &str| section.lines().find(|l| l.trim_start().starts_with(name)).unwrap_or("").to_string();
    assert!(dns("nomad-server.mesh").ends_with("100.64.0.11, 100.64.0.12"), "{text}");
    assert!(dns("client-1 ").ends_with("100.64.0.21"), "{text}");
    assert!(dns("nobody.mesh").ends_with("NXDOMAIN"), "{text}");
    // The clients found each other and the servers through the NATs (direct, or relayed while a
    // punch is still under way on a loaded machine).
    assert!(text.contains("client-1 (direct)") || text.contains("client-1 (relayed)"), "{text}");
    // The Nomad snippets, rendered from the running mesh: the client joins the two servers.
    assert!(text.contains("host_network \"overlay\""), "{text}");
    assert!(
        text.contains("verify_https_client    = true") && text.contains("# WARNING: bootstrap_expect = 2"),
        "{text}"
    );
    assert!(text.contains("consul agent snippet for client-1") && text.contains("advertise_addr"), "{text}");
    assert!(
        text.contains("\"100.64.0.11\"") && text.contains("\"100.64.0.12\""),
        "retry_join lists both servers: {text}"
    );
    assert!(!text.contains("(failed:"), "{text}");
    // The picture of the world, next to the matrix: an SVG document naming every host.
    assert!(text.contains(&format!("A picture of this world: {} (solid: direct tunnel", picture.display())), "{text}");
    let svg = std::fs::read_to_string(&picture).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("not XML: {e}\n{svg}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    // Each host's label is a text element, one line (tspan) each: name, overlay IP, role.
    let labels: Vec<&str> = doc.descendants().filter(|n| n.has_tag_name("tspan")).filter_map(|n| n.text()).collect();
    for host in [
        "lighthouse-1",
        "lighthouse-2",
        "relay",
        "operator",
        "prometheus",
        "server-1",
        "server-2",
        "client-1",
        "client-2",
    ] {
        assert!(labels.contains(&host), "{host} not drawn: {labels:?}");
    }
    // Nothing of the world is left behind.
    let after = namespaces();
    let leaked: Vec<_> = after.iter().filter(|n| !before.contains(n) && !n.starts_with("cm")).collect();
    assert!(leaked.is_empty(), "namespaces left behind: {leaked:?}");
}

fn namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}
