//! The node daemon (`cos-mesh run`): the IO shell around the mesh core. One thread runs a
//! `poll(2)` loop over the UDP socket, the TUN, the signalfd and the control socket; batches
//! of datagrams go in and out with recvmmsg/sendmmsg; the core decides everything else.

pub mod control;
pub mod datapath;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod resolver;
pub mod setup;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use tracing::{debug, error, info, warn};

use crate::io::{Notifier, PollFd, Signal, Signals, Tun, TunConfig, Udp, ifaddrs, poll};
use crate::mesh::{Event, Node, NodeConfig};
use crate::unixtime::UnixTime;
use control::{ControlServer, Request};
use datapath::DataPath;
use metrics::MetricsServer;
use policy::FirewallPolicy;
use setup::Setup;

/// How often idle firewall flows are expired.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// How often the host's addresses are checked (a move re-registers and re-probes peers).
const ADDR_CHECK_EVERY: Duration = Duration::from_secs(2);
/// Warn about our own certificate expiring this long ahead, once a day.
const EXPIRY_NOTICE_SECS: i64 = 30 * 86_400;

struct Daemon {
    config_path: PathBuf,
    node: Node<FirewallPolicy>,
    udp: Udp,
    tun: Option<Tun>,
    signals: Signals,
    notifier: Notifier,
    control: ControlServer,
    metrics: Option<MetricsServer>,
    log: logging::LogHandle,
    listen: SocketAddr,
    tun_name: String,
    /// Buffers and counters of the data path.
    datapath: DataPath,
    /// Copies of two data-path counters, for `status` and the metrics text.
    tx_dropped: u64,
    tun_write_errors: u64,
    next_expire: Instant,
    next_expiry_check: Instant,
    next_watchdog: Option<Instant>,
    next_addr_check: Instant,
    overlay_net: ipnet::Ipv4Net,
    /// Resolves the running static_host_map's names off the loop.
    resolver: resolver::Resolver,
}

/// Runs the daemon until SIGTERM/SIGINT. Returns an error (naming file and field) when the
/// configuration cannot start a node.
pub fn run(config_path: &Path) -> Result<()> {
    // Block the signals before anything else, so no thread ever gets them.
    let signals = Signals::new().context("setting up signal handling")?;
    let setup = Setup::load(config_path, UnixTime::now())?;
    let log = logging::init(&setup.config().logging);
    for w in &setup.warnings {
        warn!("{w}");
    }
    // IP literals now; names arrive from the resolver thread within moments.
    let static_hosts = resolver::literals(&setup.config().static_host_map);
    let cfg = setup.config();
    let udp = Udp::from_config(&cfg.listen)
        .with_context(|| format!("binding listen {}:{}", cfg.listen.host, cfg.listen.port))?;
    let listen = udp.local_addr()?;
    let tun = if cfg.tun.disabled {
        None
    } else {
        let tc = TunConfig::from_config(&cfg.tun, setup.overlay);
        Some(Tun::create(&tc).with_context(|| format!("creating tun.dev {} with {}", tc.name, tc.address))?)
    };
    let control = ControlServer::bind(&cfg.control_socket())?;
    let metrics = match (&cfg.stats.kind, &cfg.stats.listen) {
        (Some(crate::config::StatsKind::Prometheus), Some(listen)) => {
            Some(MetricsServer::start(listen, &cfg.stats.path)?)
        }
        _ => None,
    };
    let now = Instant::now();
    let discovery = setup.discovery();
    let unsafe_routes = setup.unsafe_routes();
    let Setup { loaded, pki, firewall, overlay, .. } = setup;
    let c = &loaded.config;
    let node_cfg = NodeConfig {
        cert: pki.cert,
        key: pki.key,
        pool: pki.pool,
        blocklist: pki.blocklist,
        static_hosts,
        unsafe_routes,
        try_interval: c.handshakes.try_interval.0,
        retries: c.handshakes.retries,
        disconnect_invalid: c.pki.disconnect_invalid,
        discovery,
    };
    let mut node = Node::new(node_cfg, FirewallPolicy { fw: firewall }, now, UnixTime::now())?;
    node.set_local_addrs(now, local_addrs(listen, overlay.trunc(), &c.tun.dev));
    let notifier = Notifier::from_env();
    log_offloads(tun.as_ref(), &udp);
    let datapath = DataPath::new(tun.as_ref(), &udp, c.listen.batch.max(1));
    let mut d = Daemon {
        config_path: config_path.to_path_buf(),
        tun_name: if c.tun.disabled { "(disabled)".into() } else { c.tun.dev.clone() },
        node,
        udp,
        tun,
        signals,
        control,
        metrics,
        log,
        listen,
        datapath,
        tx_dropped: 0,
        tun_write_errors: 0,
        next_expire: now,
        next_expiry_check: now,
        next_watchdog: notifier.watchdog_interval().map(|_| now),
        next_addr_check: now + ADDR_CHECK_EVERY,
        overlay_net: overlay.trunc(),
        resolver: resolver::Resolver::start(c.static_host_map.clone()),
        notifier,
    };
    let status = format!("{} ({}) on {}, listening on {}", d.node.cert().name(), overlay, d.tun_name, listen);
    info!("cos-mesh up: {status}");
    // Only now: the TUN carries its address and the socket is bound (Nomad reads the
    // interface once when it starts).
    let _ = d.notifier.ready(&status);
    let result = d.event_loop();
    let _ = d.notifier.stopping();
    let totals: Vec<String> = d.datapath.counters.snapshot().iter().map(|(k, v)| format!("{k}={v}")).collect();
    info!("data path totals: {}", totals.join(" "));
    info!("cos-mesh stopping");
    result
}

impl Daemon {
    fn event_loop(&mut self) -> Result<()> {
        loop {
            let now = Instant::now();
            let mut deadline = self.node.poll_timeout().min(now + Duration::from_secs(1));
            if let Some(w) = self.next_watchdog {
                deadline = deadline.min(w);
            }
            let timeout = deadline.saturating_duration_since(now);
            let (udp_r, tun_r, sig_r, ctl_r) = {
                let wants_write = self.datapath.wants_write();
                let mut fds = vec![
                    PollFd::new(self.udp.as_fd(), wants_write),
                    PollFd::new(self.signals.as_fd(), false),
                    PollFd::new(self.control.listener().as_fd(), false),
                ];
                let tun_at = fds.len();
                // While ciphertexts wait for the socket, the TUN is left unread: its queue
                // holds (or drops) the excess, and poll does not spin on it.
                if let Some(t) = &self.tun
                    && !wants_write
                {
                    fds.push(PollFd::new(t.as_fd(), false));
                }
                match poll::wait(&mut fds, Some(timeout)) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e).context("poll"),
                }
                (fds[0].readable(), fds.get(tun_at).is_some_and(|f| f.readable()), fds[1].readable(), fds[2].readable())
            };
            let now = Instant::now();
            let wall = UnixTime::now();
            if udp_r {
                self.datapath.read_udp(&mut self.node, &self.udp, self.tun.as_ref(), now, wall);
            }
            if tun_r && let Some(tun) = &self.tun {
                self.datapath.read_tun(&mut self.node, &self.udp, tun, now);
            }
            if self.node.poll_timeout() <= now {
                self.node.handle_timeout(now, wall);
            }
            self.flush();
            self.housekeeping(now, wall);
            if sig_r {
                match self.signals.next() {
                    Ok(Some(Signal::Shutdown)) => return Ok(()),
                    Ok(Some(Signal::Reload)) => {
                        info!("caught SIGHUP, reloading {}", self.config_path.display());
                        let _ = self.reload();
                    }
                    _ => {}
                }
            }
            if ctl_r {
                self.serve_control(now);
            }
        }
    }

    /// Moves the core's queued output to the socket and the TUN, and logs its events.
    fn flush(&mut self) {
        self.datapath.flush(&mut self.node, &self.udp, self.tun.as_ref());
        self.tx_dropped = self.datapath.counters.tx_dropped;
        self.tun_write_errors = self.datapath.counters.tun_write_errors;
        while let Some(e) = self.node.poll_event() {
            log_event(&e);
        }
    }

    fn housekeeping(&mut self, now: Instant, wall: UnixTime) {
        if let Some((hosts, problems)) = self.resolver.poll() {
            for p in &problems {
                warn!("{p}");
            }
            self.node.set_static_hosts(hosts);
        }
        if now >= self.next_expire {
            self.next_expire = now + EXPIRE_EVERY;
            // Conntrack expiry is a scan of every flow: once a second, not per wakeup.
            self.node.policy_mut().fw.expire(now);
            if self.metrics.is_some() {
                let body = self.metrics_text(now, wall);
                if let Some(m) = &self.metrics {
                    m.set(body);
                }
            }
        }
        if now >= self.next_addr_check {
            self.next_addr_check = now + ADDR_CHECK_EVERY;
            let addrs = local_addrs(self.listen, self.overlay_net, &self.tun_name);
            self.node.set_local_addrs(now, addrs);
        }
        if now >= self.next_expiry_check {
            self.next_expiry_check = now + Duration::from_secs(86_400);
            let d = self.node.cert().details();
            let left = d.not_after.seconds() - wall.seconds();
            if left < EXPIRY_NOTICE_SECS {
                warn!(
                    "certificate {} expires at {} ({} days left): renew it and reload",
                    d.name,
                    d.not_after,
                    left / 86_400
                );
            }
        }
        if let (Some(w), Some(every)) = (self.next_watchdog, self.notifier.watchdog_interval())
            && now >= w
        {
            let _ = self.notifier.watchdog();
            self.next_watchdog = Some(now + every);
        }
    }

    /// SIGHUP or `cos-mesh reload`: load everything again; apply it only if all of it is
    /// valid, so a bad config keeps the running one. Tunnels stay up; peers whose certificates
    /// no longer verify are disconnected; old flows are re-checked on their next packet.
    fn reload(&mut self) -> Result<String, String> {
        let _ = self.notifier.reloading();
        let result = self.try_reload();
        match &result {
            Ok(summary) => info!("reload: {summary}"),
            Err(e) => error!("reload failed, keeping the running configuration: {e}"),
        }
        let status = match &result {
            Ok(_) => format!("{} running, reloaded", self.node.cert().name()),
            Err(e) => format!("{} running; last reload failed: {e}", self.node.cert().name()),
        };
        let _ = self.notifier.ready(&status);
        result
    }

    fn try_reload(&mut self) -> Result<String, String> {
        let wall = UnixTime::now();
        let setup = Setup::load(&self.config_path, wall).map_err(|e| format!("{e:#}"))?;
        for w in &setup.warnings {
            warn!("{w}");
        }
        let discovery = setup.discovery();
        let static_map = setup.config().static_host_map.clone();
        let log_level = setup.config().logging.level;
        let Setup { pki, firewall, .. } = setup;
        // The one step that can still refuse; nothing has changed before it.
        self.node.reload_trust(pki.pool, pki.blocklist, pki.cert, wall)?;
        self.node.set_static_hosts(resolver::literals(&static_map));
        self.resolver.update(static_map);
        self.node.set_discovery(Instant::now(), discovery);
        self.node.policy_mut().fw.reload(firewall);
        // Last, once nothing can fail: a refused reload changes nothing at all.
        self.log.set(log_level);
        let version = self.node.policy_mut().fw.rules_version();
        Ok(format!("pki, blocklist, firewall (rules version {version}), static hosts, discovery and logging reloaded"))
    }

    fn serve_control(&mut self, now: Instant) {
        while let Some((stream, req)) = self.control.accept() {
            let answer = match req {
                Some(Request::Status) => self.status(now),
                Some(Request::Members) => json!({ "members": self.members() }),
                Some(Request::Reload) => match self.reload() {
                    Ok(summary) => json!({ "reloaded": summary }),
                    Err(e) => json!({ "error": format!("reload failed, the running configuration is kept: {e}") }),
                },
                None => json!({ "error": "unknown request; expected status, members or reload" }),
            };
            control::reply(stream, &answer);
        }
    }

    fn status(&mut self, now: Instant) -> serde_json::Value {
        let cert = self.node.cert().clone();
        let d = cert.details();
        let fw = &self.node.policy_mut().fw;
        let firewall = json!({
            "rules_version": fw.rules_version(),
            "conntrack_entries": fw.conntrack().len(),
            "counters": fw.counters().snapshot().iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        });
        json!({
            "node": {
                "name": d.name,
                "vpn_ip": self.node.vpn_ip(),
                "overlay": self.node.vpn_net().to_string(),
                "groups": d.groups,
                "cert_not_after": d.not_after.rfc3339(),
                "cert_fingerprint": cert.fingerprint().to_string(),
                "listen": self.listen,
                "tun": self.tun_name,
                "lighthouse": self.node.is_lighthouse(),
            },
            "peers": self.node.peers(now),
            "lighthouses": self.node.lighthouse_status().iter().map(|(ip, up)| json!({"vpn_ip": ip, "up": up})).collect::<Vec<_>>(),
            "counters": self.node.counters(),
            "io": { "tx_dropped": self.tx_dropped, "tun_write_errors": self.tun_write_errors },
            "firewall": firewall,
        })
    }

    fn metrics_text(&mut self, now: Instant, wall: UnixTime) -> String {
        let peers = self.node.peers(now);
        let mut e = metrics::Exposition::default();
        let up = peers.iter().filter(|p| p.up).count() as f64;
        e.metric("tunnels", "gauge", "Peers with an established session.", &[("", up)]);
        e.metric("peers", "gauge", "Peers with a verified certificate.", &[("", peers.len() as f64)]);
        let labels: Vec<String> =
            peers.iter().map(|p| format!("{{peer=\"{}\",vpn_ip=\"{}\"}}", metrics::label(&p.name), p.vpn_ip)).collect();
        for (name, help, pick) in [
            ("peer_rx_bytes_total", "Bytes received from the peer through the tunnel.", 0),
            ("peer_tx_bytes_total", "Bytes sent to the peer through the tunnel.", 1),
            ("peer_rx_packets_total", "Packets received from the peer through the tunnel.", 2),
            ("peer_tx_packets_total", "Packets sent to the peer through the tunnel.", 3),
        ] {
            let samples: Vec<(&str, f64)> = peers
                .iter()
                .zip(&labels)
                .map(|(p, l)| (l.as_str(), [p.rx_bytes, p.tx_bytes, p.rx_packets, p.tx_packets][pick] as f64))
                .collect();
            e.metric(name, "counter", help, &samples);
        }
        e.counters("mesh", "Events and drops of the tunnel core (see `cos-mesh status --json`).", self.node.counters());
        let left = self.node.cert().details().not_after.seconds() - wall.seconds();
        e.metric(
            "certificate_expiry_seconds",
            "gauge",
            "Seconds until this node's certificate expires.",
            &[("", left as f64)],
        );
        let fw = &self.node.policy_mut().fw;
        let fw_samples: Vec<(String, f64)> =
            fw.counters().snapshot().iter().map(|(k, v)| (format!("{{verdict=\"{k}\"}}"), *v as f64)).collect();
        let fw_samples: Vec<(&str, f64)> = fw_samples.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        e.metric("firewall_packets_total", "counter", "Firewall verdicts by outcome and drop reason.", &fw_samples);
        e.metric(
            "firewall_conntrack_entries",
            "gauge",
            "Flows in the firewall's connection tracker.",
            &[("", fw.conntrack().len() as f64)],
        );
        e.metric(
            "firewall_rules_version",
            "gauge",
            "Bumped on every firewall reload.",
            &[("", f64::from(fw.rules_version()))],
        );
        e.metric(
            "io_tx_dropped_total",
            "counter",
            "Datagrams dropped because the socket was full.",
            &[("", self.tx_dropped as f64)],
        );
        e.finish()
    }

    fn members(&self) -> Vec<serde_json::Value> {
        self.node
            .members()
            .iter()
            .map(|c| json!({ "name": c.name(), "vpn_ip": c.vpn_ip(), "groups": c.details().groups }))
            .collect()
    }
}

/// Says once at start which data path is on, so an operator reading the log knows.
fn log_offloads(tun: Option<&Tun>, udp: &Udp) {
    let on = |b: bool| if b { "on" } else { "off" };
    let tun_part = match tun {
        Some(t) => format!("TUN offloads {} (UDP segmentation {})", on(t.offload()), on(t.udp_offload())),
        None => "no TUN".to_string(),
    };
    info!(
        "data path: {tun_part}, UDP GSO {} (up to {} datagrams per send), UDP GRO {}",
        on(udp.max_segments() > 1),
        udp.max_segments(),
        on(udp.gro())
    );
}

/// The underlay addresses to report to lighthouses: the bound address if specific, else every
/// IPv4 address of the host except loopback, link-local, the overlay and our own TUN.
fn local_addrs(listen: SocketAddr, overlay: ipnet::Ipv4Net, tun: &str) -> Vec<SocketAddr> {
    if !listen.ip().is_unspecified() {
        return vec![listen];
    }
    ifaddrs::ipv4_addresses()
        .into_iter()
        .filter(|(name, ip)| name != tun && !ip.is_loopback() && !ip.is_link_local() && !overlay.contains(ip))
        .map(|(_, ip)| SocketAddr::new(IpAddr::V4(ip), listen.port()))
        .collect()
}

fn log_event(e: &Event) {
    match e {
        Event::PeerUp { name, vpn_ip, path } => info!("tunnel up: {name} ({vpn_ip}) at {path}"),
        Event::PeerRemoved { name, vpn_ip, reason } => warn!("tunnel closed: {name} ({vpn_ip}): {reason}"),
        Event::Roamed { name, from, to } => info!("peer {name} moved from {from} to {to}"),
        Event::CertRejected { source, reason } => warn!("refused certificate from {source}: {reason}"),
        Event::HandshakeTimedOut { vpn_ip } => info!("no answer from {vpn_ip} (handshake timed out)"),
        Event::Registered { lighthouse } => debug!("registered with lighthouse {lighthouse}"),
    }
}
