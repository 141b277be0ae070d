//! The demo's world: two lighthouses, a relay and an operator on a "public" segment; Nomad
//! servers in environment A and clients in environment B, each environment behind its own NAT
//! router. Real daemons (this binary's `run`), real TUN devices, a CA made on the spot.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cert::keys::{CaSecret, HostSecret};
use crate::cert::{Certificate, Details};
use crate::daemon::control::{Request, ask};
use crate::files::{self, SECRET_MODE};
use crate::lab::{Netns, Process, Router, Segment, wait_until};
use crate::unixtime::UnixTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Lighthouse,
    Relay,
    Operator,
    Server,
    Client,
    Monitoring,
}

impl Role {
    pub fn groups(self) -> &'static [&'static str] {
        match self {
            Role::Lighthouse => &["lighthouse"],
            Role::Relay => &["relay"],
            Role::Operator => &["ops"],
            Role::Server => &["nomad-server", "consul-server"],
            Role::Client => &["nomad-client", "consul-client"],
            Role::Monitoring => &["monitoring"],
        }
    }

    /// The rule files of `firewall/` this role includes.
    pub fn rule_files(self) -> &'static [&'static str] {
        match self {
            Role::Server => &["base.yaml", "nomad-server.yaml", "consul-server.yaml"],
            Role::Client => &["base.yaml", "nomad-client.yaml", "consul-client.yaml"],
            Role::Monitoring => &["base.yaml", "monitoring.yaml"],
            Role::Lighthouse => &["base.yaml", "lighthouse.yaml"],
            _ => &["base.yaml"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Lighthouse => "lighthouse",
            Role::Relay => "relay",
            Role::Operator => "operator",
            Role::Server => "nomad server",
            Role::Client => "nomad client",
            Role::Monitoring => "prometheus",
        }
    }
}

/// The role rule sets, built into the binary so the demo runs from anywhere.
pub const RULE_FILES: [(&str, &str); 7] = [
    ("lighthouse.yaml", include_str!("../../firewall/lighthouse.yaml")),
    ("base.yaml", include_str!("../../firewall/base.yaml")),
    ("nomad-server.yaml", include_str!("../../firewall/nomad-server.yaml")),
    ("nomad-client.yaml", include_str!("../../firewall/nomad-client.yaml")),
    ("consul-server.yaml", include_str!("../../firewall/consul-server.yaml")),
    ("consul-client.yaml", include_str!("../../firewall/consul-client.yaml")),
    ("monitoring.yaml", include_str!("../../firewall/monitoring.yaml")),
];

/// The port of cos-mesh's own metrics endpoint (`stats.listen`) on the demo's clients, which
/// `firewall/base.yaml` opens to group monitoring.
pub const METRICS_PORT: u16 = 8080;

pub struct Host {
    // Declared first: dropped (SIGTERM) before the namespace goes.
    daemon: Option<Process>,
    pub ns: Netns,
    pub name: String,
    pub role: Role,
    pub vpn_ip: Ipv4Addr,
    pub underlay: String,
    pub environment: &'static str,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Host {
    pub fn status(&self) -> Option<serde_json::Value> {
        ask(&self.socket, Request::Status).ok()
    }

    /// Starts the host's daemon (`cos-mesh run`), its log appended to `log`.
    pub fn start(&mut self, exe: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = self
            .ns
            .command(&exe.to_string_lossy(), &["run", "-c", &self.config.to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting cos-mesh run")?;
        self.daemon = Some(Process(child));
        Ok(())
    }

    /// Kills the daemon with SIGKILL (no goodbye to its peers) and reaps it.
    pub fn kill(&mut self) {
        // Dropping the guard then reaps the killed process.
        if let Some(mut p) = self.daemon.take() {
            let _ = p.0.kill();
        }
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(|p| p.0.id())
    }
}

pub struct World {
    // Hosts before routers and segments: daemons stop, then the links go.
    pub hosts: Vec<Host>,
    pub routers: Vec<Router>,
    public: Segment,
    pub dir: TempDir,
    pub ca: Certificate,
}

/// A directory removed on drop (the demo's configs, keys and logs).
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// (name, role, overlay last octet, environment: 0 public / 1 A / 2 B, underlay last octet)
pub const PLAN: [(&str, Role, u8, u8, u8); 9] = [
    ("lighthouse-1", Role::Lighthouse, 1, 0, 1),
    ("lighthouse-2", Role::Lighthouse, 2, 0, 2),
    ("relay", Role::Relay, 3, 0, 3),
    ("operator", Role::Operator, 4, 0, 4),
    ("prometheus", Role::Monitoring, 5, 0, 5),
    ("server-1", Role::Server, 11, 1, 11),
    ("server-2", Role::Server, 12, 1, 12),
    ("client-1", Role::Client, 21, 2, 21),
    ("client-2", Role::Client, 22, 2, 22),
];

impl World {
    pub fn build(exe: &Path) -> Result<World> {
        let dir = TempDir(std::env::temp_dir().join(format!("cos-mesh-demo-{}", std::process::id())));
        std::fs::create_dir_all(dir.0.join("firewall")).context("creating the demo's directory")?;
        for (name, text) in RULE_FILES {
            std::fs::write(dir.0.join("firewall").join(name), text)?;
        }
        let (ca, ca_key) = make_ca()?;
        files::write_new(&dir.0.join("ca.crt"), ca.to_pem().as_bytes(), SECRET_MODE, "CA certificate")?;

        let public = Segment::new("pub")?;
        let routers = vec![
            Router::new(&public, "198.18.0.10/24", "198.19.1")?,
            Router::new(&public, "198.18.0.20/24", "198.19.2")?,
        ];
        let mut hosts = vec![];
        for (name, role, vpn, env, under) in PLAN {
            let ns = Netns::new("h")?;
            let (underlay, environment) = match env {
                0 => {
                    public.attach(&ns, &format!("198.18.0.{under}/24"))?;
                    (format!("198.18.0.{under}"), "public")
                }
                1 => (routers[0].attach(&ns, under)?, "env A (NAT)"),
                _ => (routers[1].attach(&ns, under)?, "env B (NAT)"),
            };
            let vpn_ip = Ipv4Addr::new(100, 64, 0, vpn);
            let host = Host {
                daemon: None,
                config: dir.0.join(format!("{name}.yaml")),
                socket: dir.0.join(format!("{name}.sock")),
                log: dir.0.join(format!("{name}.log")),
                ns,
                name: name.to_string(),
                role,
                vpn_ip,
                underlay,
                environment,
            };
            write_node(&dir.0, &host, &ca, &ca_key)?;
            hosts.push(host);
        }
        let mut world = World { hosts, routers, public, dir, ca };
        for h in &mut world.hosts {
            h.start(exe)?;
        }
        for h in &world.hosts {
            let up = wait_until(Duration::from_secs(20), || {
                h.status()
                    .is_some_and(|s| s["lighthouses"].as_array().is_some_and(|l| l.iter().all(|x| x["up"] == true)))
            });
            if !up {
                let log = std::fs::read_to_string(&h.log).unwrap_or_default();
                bail!("{} did not come up and reach the lighthouses:\n{log}", h.name);
            }
        }
        let _ = (&world.routers, &world.public);
        Ok(world)
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).expect("a host of the plan")
    }
}

fn make_ca() -> Result<(Certificate, CaSecret)> {
    let key = CaSecret::generate();
    let now = UnixTime::now();
    let d = Details {
        name: "cos-mesh demo CA".into(),
        ips: vec!["100.64.0.0/10".parse()?],
        subnets: vec![],
        groups: vec![],
        not_before: now.add_secs(-60),
        not_after: now.add_secs(86_400),
        public_key: key.public(),
        is_ca: true,
        issuer: None,
    };
    Ok((Certificate::sign(&d, key.signing_key())?, key))
}

/// Writes a node's key, certificate and config.
fn write_node(dir: &Path, h: &Host, ca: &Certificate, ca_key: &CaSecret) -> Result<()> {
    let key = HostSecret::generate();
    let d = Details {
        name: h.name.clone(),
        ips: vec![ipnet::Ipv4Net::new(h.vpn_ip, 10)?],
        subnets: vec![],
        groups: h.role.groups().iter().map(|g| g.to_string()).collect(),
        not_before: ca.details().not_before,
        not_after: ca.details().not_after.add_secs(-1),
        public_key: key.public().0,
        is_ca: false,
        issuer: Some(ca.fingerprint()),
    };
    let cert = Certificate::sign(&d, ca_key.signing_key())?;
    let (crt_path, key_path) = (dir.join(format!("{}.crt", h.name)), dir.join(format!("{}.key", h.name)));
    files::write_new(&key_path, key.to_pem().as_bytes(), SECRET_MODE, "host key")?;
    files::write_new(&crt_path, cert.to_pem().as_bytes(), SECRET_MODE, "host certificate")?;
    let includes: Vec<String> =
        h.role.rule_files().iter().map(|f| dir.join("firewall").join(f).display().to_string()).collect();
    let mut text = format!(
        "pki:\n  ca: {}\n  cert: {}\n  key: {}\nstatic_host_map:\n  \"100.64.0.1\": [\"198.18.0.1:4242\"]\n  \"100.64.0.2\": [\"198.18.0.2:4242\"]\nlisten:\n  host: 0.0.0.0\n  port: 4242\ntun:\n  dev: nebula1\ncontrol:\n  socket: {}\nfirewall:\n  include: [{}]\n",
        dir.join("ca.crt").display(),
        crt_path.display(),
        key_path.display(),
        h.socket.display(),
        includes.join(", ")
    );
    if h.role == Role::Client {
        // The real metrics endpoint on the overlay, for the matrix's monitoring column.
        text.push_str(&format!("stats:\n  type: prometheus\n  listen: \"{}:{METRICS_PORT}\"\n", h.vpn_ip));
    }
    if h.role == Role::Lighthouse {
        // DNS for the mesh on the overlay address only (firewall/lighthouse.yaml opens 53/udp).
        text.push_str(&format!(
            "lighthouse:\n  am_lighthouse: true\n  serve_dns: true\n  dns:\n    host: {}\n    port: 53\n",
            h.vpn_ip
        ));
    }
    text.push_str(match h.role {
        Role::Lighthouse => "",
        Role::Relay => "lighthouse:\n  hosts: [100.64.0.1, 100.64.0.2]\n  interval: 5\nrelay:\n  am_relay: true\n",
        _ => "lighthouse:\n  hosts: [100.64.0.1, 100.64.0.2]\n  interval: 5\nrelay:\n  relays: [100.64.0.3]\n",
    });
    std::fs::write(&h.config, text)?;
    Ok(())
}
