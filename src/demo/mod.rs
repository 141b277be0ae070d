//! `cos-mesh demo`: a small cos-mesh world built from network namespaces on this machine,
//! shown working (status, a reachability matrix of the Nomad ports per role observed with real
//! connections, the Nomad snippets), then torn down.

mod chaos;
mod lookup;
mod matrix;
mod mtls;
mod picture;
mod world;

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::io::{Signal, Signals};
use matrix::{Cell, Proto};
use world::World;

pub struct Options {
    /// Keep the world up until Ctrl-C.
    pub keep: bool,
    /// Where to write the SVG picture of the world.
    pub svg: std::path::PathBuf,
    /// After the tour, inject faults one at a time and report the time to recover from each.
    pub chaos: bool,
}

/// Runs the demo; `Ok(false)` when a cell of the matrix disagrees with the rule sets.
pub fn run(opts: Options) -> Result<bool> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces and TUN devices: run it as root");
    }
    for tool in ["ip", "nft"] {
        if std::process::Command::new(tool).arg("-V").output().is_err() {
            bail!("the demo needs `{tool}` (Debian: apt-get install iproute2 nftables)");
        }
    }
    // Ctrl-C is read from a signalfd between steps, so the world is always torn down.
    let signals = Signals::new()?;
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    println!(
        "Building the world: 2 lighthouses, a relay, an operator and Prometheus on a public segment (198.18.0.0/24);"
    );
    println!("Nomad servers in environment A (198.19.1.0/24) and clients in environment B (198.19.2.0/24),");
    println!("each behind its own NAT router (nft masquerade). Overlay 100.64.0.0/10 on nebula1 in every host.\n");
    let mut world = World::build(&exe)?;
    println!(
        "All {} daemons up and registered with both lighthouses in {:.1}s.\n",
        world.hosts.len(),
        started.elapsed().as_secs_f64()
    );
    if interrupted(&signals) {
        return Ok(true);
    }
    let cells = matrix::measure(&world)?;
    print!("{}", status_table(&world));
    println!();
    print!("{}", matrix_table(&cells));
    println!();
    draw(&world, &opts.svg)?;
    println!();
    let handshake = mtls::run(&world)?;
    print!("{}", mtls::describe(&handshake, &world.dir.0));
    println!();
    let answers = lookup::run(&world)?;
    print!("{}", lookup::describe(&answers));
    println!();
    print!("{}", snippets(&world, &exe));
    let tls_ok = handshake.as_ref().is_none_or(|h| h.accepted && h.refused);
    let mut ok = cells.iter().all(|c| c.expected == c.observed) && tls_ok && answers.iter().all(lookup::Answer::ok);
    if ok {
        println!("Every cell matches the role rule sets in firewall/.");
    } else {
        println!("MISMATCH: cells (or handshakes) marked ! disagree with the role rule sets.");
    }
    if opts.chaos && !interrupted(&signals) {
        println!();
        let survived = chaos::run(&mut world, &exe)?;
        if !survived {
            println!("CHAOS: a fault took longer than its target, the matrix is not whole, or a daemon grew.");
        }
        ok &= survived;
    }
    if opts.keep {
        println!("\nThe world stays up (configs and logs in {}). Ctrl-C tears it down.", world.dir.0.display());
        println!(
            "Try: ip netns exec {} cos-mesh status --socket {}",
            world.host("client-1").ns.name(),
            world.host("client-1").socket.display()
        );
        while !matches!(signals.wait(), Ok(Signal::Shutdown)) {}
    }
    println!("Tearing down.");
    drop(world);
    Ok(ok)
}

/// Writes the picture of the world (hosts, roles, tunnels as they are now) and says where.
fn draw(world: &World, path: &std::path::Path) -> Result<()> {
    let hosts: Vec<picture::HostView> = world
        .hosts
        .iter()
        .map(|h| {
            let status = h.status().unwrap_or_default();
            let peers = status["peers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["up"] == true)
                .map(|p| {
                    let relay = (p["relayed"] == true).then(|| {
                        p["relay_name"].as_str().or_else(|| p["relay"].as_str()).unwrap_or("a relay").to_string()
                    });
                    (p["name"].as_str().unwrap_or("?").to_string(), relay)
                })
                .collect();
            picture::HostView {
                name: h.name.clone(),
                role: h.role.name(),
                vpn_ip: h.vpn_ip,
                lighthouse: h.role == world::Role::Lighthouse,
                peers,
            }
        })
        .collect();
    let svg = picture::svg(&picture::dot(&hosts))?;
    std::fs::write(path, svg).with_context(|| format!("writing the world's picture to {}", path.display()))?;
    println!("A picture of this world: {} ({})", path.display(), picture::LEGEND);
    Ok(())
}

fn interrupted(signals: &Signals) -> bool {
    matches!(signals.next(), Ok(Some(Signal::Shutdown)))
}

fn status_table(world: &World) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<13} {:<13} {:<12} {:<14} {:<12} PEERS (path)",
        "HOST", "ROLE", "OVERLAY IP", "UNDERLAY", "WHERE"
    );
    for h in &world.hosts {
        let peers = h
            .status()
            .map(|st| {
                st["peers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["up"] == true && !p["name"].as_str().unwrap_or("").starts_with("lighthouse"))
                    .map(|p| {
                        let path = if p["relayed"] == true { "relayed" } else { "direct" };
                        format!("{} ({path})", p["name"].as_str().unwrap_or("?"))
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "(no status)".into());
        let _ = writeln!(
            s,
            "{:<13} {:<13} {:<12} {:<14} {:<12} {peers}",
            h.name,
            h.role.name(),
            h.vpn_ip,
            h.underlay,
            h.environment
        );
    }
    s
}

fn matrix_table(cells: &[Cell]) -> String {
    let mut s = String::from(
        "Reachability of Nomad, Consul and monitoring ports over the overlay (observed with real connections;\n\
         expected from firewall/):\n",
    );
    let _ = write!(s, "{:<36}", "target port");
    for src in matrix::SOURCES {
        let _ = write!(s, " {:<18}", format!("from {src}"));
    }
    s.push('\n');
    for svc in matrix::SERVICES {
        let proto = if svc.proto == Proto::Tcp { "tcp" } else { "udp" };
        let _ = write!(s, "{:<36}", format!("{} {}/{proto} {}", svc.target, svc.port, svc.what));
        for src in matrix::SOURCES {
            let c = cells.iter().find(|c| {
                c.source == src
                    && c.service.target == svc.target
                    && c.service.port == svc.port
                    && c.service.proto == svc.proto
            });
            let text = match c {
                Some(c) if c.expected == c.observed => if c.observed { "allowed" } else { "blocked" }.to_string(),
                Some(c) => format!(
                    "! {} (expected {})",
                    if c.observed { "allowed" } else { "blocked" },
                    if c.expected { "allowed" } else { "blocked" }
                ),
                None => "?".into(),
            };
            let _ = write!(s, " {text:<18}");
        }
        s.push('\n');
    }
    s
}

/// The Nomad agent snippets for a server and a client and a client's Consul snippet, rendered
/// by `cos-mesh nomad config` / `consul config` from each node's running daemon (its members
/// list gives `retry_join`).
fn snippets(world: &World, exe: &std::path::Path) -> String {
    let mut s = String::new();
    for (tool, host, role) in
        [("nomad", "server-1", "server"), ("nomad", "client-1", "client"), ("consul", "client-1", "client")]
    {
        let h = world.host(host);
        let (config, socket) = (h.config.to_string_lossy(), h.socket.to_string_lossy());
        let mut args = vec![tool, "config", "--role", role, "-c", &config, "--socket", &socket];
        // The inventory the mutual-TLS step wrote: region, datacenter (and the gossip key, withheld).
        let inventory = world.dir.0.join("inventory.yaml").to_string_lossy().into_owned();
        if std::path::Path::new(&inventory).exists() {
            args.extend(["--inventory", &inventory]);
        }
        let out = std::process::Command::new(exe).args(&args).output();
        let _ = writeln!(s, "{tool} agent snippet for {host} (cos-mesh {tool} config --role {role}):");
        match out {
            Ok(o) if o.status.success() => {
                for line in String::from_utf8_lossy(&o.stdout).lines() {
                    let _ = writeln!(s, "    {line}");
                }
            }
            Ok(o) => {
                let _ = writeln!(s, "    (failed: {})", String::from_utf8_lossy(&o.stderr).trim());
            }
            Err(e) => {
                let _ = writeln!(s, "    (failed: {e})");
            }
        }
        s.push('\n');
    }
    s
}
