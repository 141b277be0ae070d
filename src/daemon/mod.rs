//! The node daemon (`cos-mesh run`): the IO shell around the mesh core. One thread runs a
//! `poll(2)` loop over the UDP socket, the TUN, the signalfd and the control socket; batches
//! of datagrams go in and out with recvmmsg/sendmmsg; the core decides everything else.

pub mod control;
pub mod datapath;
mod events;
pub mod logging;
pub mod metrics;
pub mod ping;
pub mod policy;
pub mod report;
pub mod resolver;
pub mod restart;
pub mod setup;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use tracing::{debug, error, info, warn};

use crate::io::{Notifier, PeerSockets, PollFd, Signal, Signals, Tun, TunConfig, Udp, UdpOptions, ifaddrs, poll};
use crate::mesh::{Node, NodeConfig};
use crate::unixtime::UnixTime;
use control::{ControlServer, Request};
use datapath::{DataPath, Wakeup};
use policy::FirewallPolicy;
use setup::{Setup, SetupError};

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
    /// Receive sockets of established peers (beside `udp`, same port).
    peer_socks: PeerSockets,
    tun: Option<Tun>,
    signals: Signals,
    notifier: Notifier,
    control: ControlServer,
    metrics: Option<metrics::Metrics>,

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
    /// The certificate's networks (v4 and v6): never reported as underlay addresses.
    overlay_nets: Vec<ipnet::IpNet>,
    /// Resolves the running static_host_map's names off the loop.
    resolver: resolver::Resolver,
    /// A lighthouse's DNS (`serve_dns`), answering from the members published once a second.
    dns: Option<crate::dns::server::DnsServer>,
    /// The settings a reload cannot change, as started (reload names those that differ).
    restart_only: restart::RestartOnly,
    /// `lighthouse.local_allow_list`: which host addresses are reported to lighthouses.
    local_allow: crate::config::LocalAllowList,
    /// `static_host_map` as configured, for `status` to say where a lighthouse is looked for.
    static_hosts: setup::StaticHostMap,
    /// `cos-mesh ping`s whose clients wait for the outcome.
    pings: ping::Pings,
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
    let peer_socks =
        PeerSockets::new(listen, UdpOptions::from_listen(&cfg.listen), crate::io::peer_sockets::MAX_PEER_SOCKETS)
            .context("creating the epoll instance for peer sockets")?;
    let tun = if cfg.tun.disabled {
        None
    } else {
        let tc =
            TunConfig::from_config(&cfg.tun, setup.pki.cert.overlay_v4()).with_ipv6(setup.overlay6.iter().copied());
        Some(Tun::create(&tc).with_context(|| format!("creating tun.dev {} with {}", tc.name, setup.overlay))?)
    };
    let control = ControlServer::bind(&cfg.control_socket())?;
    let metrics = match (&cfg.stats.kind, &cfg.stats.listen) {
        (Some(crate::config::StatsKind::Prometheus), Some(listen)) => {
            let serves_dns = cfg.lighthouse.am_lighthouse && cfg.lighthouse.serve_dns;
            Some(metrics::serve(listen, &cfg.stats.path, serves_dns)?)
        }
        _ => None,
    };
    let now = Instant::now();
    let discovery = setup.discovery();
    let unsafe_routes = setup.unsafe_routes();
    let Setup { loaded, pki, firewall, overlay, .. } = setup;
    let overlay_nets = pki.cert.networks().to_vec();
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
        seed: rand_core::RngCore::next_u64(&mut rand_core::OsRng),
    };
    let mut node = Node::new(node_cfg, FirewallPolicy { fw: firewall }, now, UnixTime::now())?;
    node.set_local_addrs(now, local_addrs(listen, &overlay_nets, &c.tun.dev, &c.local_allow_list()));
    let notifier = Notifier::from_env();
    log_offloads(tun.as_ref(), &udp);
    let datapath = DataPath::new(tun.as_ref(), &udp, c.listen.batch.max(1));
    let mut d = Daemon {
        config_path: config_path.to_path_buf(),
        tun_name: if c.tun.disabled { "(disabled)".into() } else { c.tun.dev.clone() },
        node,
        udp,
        peer_socks,
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
        overlay_nets,
        resolver: resolver::Resolver::start(c.static_host_map.clone()),
        dns: crate::dns::server::DnsServer::from_config(c)?,
        restart_only: restart::RestartOnly::of(c),
        local_allow: c.local_allow_list(),
        static_hosts: c.static_host_map.clone(),
        pings: ping::Pings::default(),
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
            let (udp_r, tun_r, sig_r, ctl_r, peers_r) = {
                let wants_write = self.datapath.wants_write();
                let mut fds = vec![
                    PollFd::new(self.udp.as_fd(), wants_write),
                    PollFd::new(self.signals.as_fd(), false),
                    PollFd::new(self.control.listener().as_fd(), false),
                    PollFd::new(self.peer_socks.as_fd(), false),
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
                let tun_r = fds.get(tun_at).is_some_and(|f| f.readable());
                (fds[0].readable(), tun_r, fds[1].readable(), fds[2].readable(), fds[3].readable())
            };
            let now = Instant::now();
            let wall = UnixTime::now();
            let mut wakeup = Wakeup { node: &mut self.node, udp: &self.udp, tun: self.tun.as_ref(), now, wall };
            if udp_r || peers_r {
                self.datapath.read_udp(&mut wakeup, &mut self.peer_socks);
            }
            if tun_r {
                self.datapath.read_tun(&mut wakeup);
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
            self.pings.answer_finished(&mut self.node);
        }
    }

    /// Moves the core's queued output to the socket and the TUN, and logs its events.
    fn flush(&mut self) {
        self.datapath.flush(&mut self.node, &self.udp, self.tun.as_ref());
        self.tx_dropped = self.datapath.counters.tx_dropped;
        self.tun_write_errors = self.datapath.counters.tun_write_errors;
        while let Some(e) = self.node.poll_event() {
            events::log_event(&e);
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
            if let Some(dns) = &self.dns {
                dns.set(&self.node.members());
            }
            self.update_metrics(now, wall);
            for e in self.peer_socks.sync(self.node.established_direct_paths()) {
                debug!("{e}");
            }
        }
        if now >= self.next_addr_check {
            self.next_addr_check = now + ADDR_CHECK_EVERY;
            let addrs = local_addrs(self.listen, &self.overlay_nets, &self.tun_name, &self.local_allow);
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
    /// Settings that need a restart are named (logged as a warning and returned), not applied.
    fn reload(&mut self) -> Result<Reloaded, ReloadError> {
        let _ = self.notifier.reloading();
        let result = self.try_reload();
        match &result {
            Ok(r) => {
                info!("reload: {}", r.summary);
                if !r.needs_restart.is_empty() {
                    let pending: Vec<String> = r.needs_restart.iter().map(ToString::to_string).collect();
                    warn!("reload: not applied until cos-mesh restarts: {}", pending.join(", "));
                }
            }
            Err(e) => error!("reload failed, keeping the running configuration: {e}"),
        }
        let status = match &result {
            Ok(r) if r.needs_restart.is_empty() => format!("{} running, reloaded", self.node.cert().name()),
            Ok(_) => format!("{} running, reloaded; some settings wait for a restart", self.node.cert().name()),
            Err(e) => format!("{} running; last reload failed: {e}", self.node.cert().name()),
        };
        let _ = self.notifier.ready(&status);
        result
    }

    fn try_reload(&mut self) -> Result<Reloaded, ReloadError> {
        let wall = UnixTime::now();
        let setup = Setup::load(&self.config_path, wall)?;
        for w in &setup.warnings {
            warn!("{w}");
        }
        let discovery = setup.discovery();
        let static_map = setup.config().static_host_map.clone();
        let log_level = setup.config().logging.level;
        let needs_restart = self.restart_only.changed(&restart::RestartOnly::of(setup.config()));
        let local_allow = setup.config().local_allow_list();
        let Setup { pki, firewall, .. } = setup;
        // The one step that can still refuse; nothing has changed before it.
        self.node.reload_trust(pki.pool, pki.blocklist, pki.cert, wall)?;
        self.node.set_static_hosts(resolver::literals(&static_map));
        self.static_hosts = static_map.clone();
        self.resolver.update(static_map);
        self.node.set_discovery(Instant::now(), discovery);
        self.local_allow = local_allow;
        self.node.policy_mut().fw.reload(firewall);
        // Last, once nothing can fail: a refused reload changes nothing at all.
        self.log.set(log_level);
        let version = self.node.policy_mut().fw.rules_version();
        let summary =
            format!("pki, blocklist, firewall (rules version {version}), static hosts, discovery and logging reloaded");
        Ok(Reloaded { summary, needs_restart })
    }

    fn serve_control(&mut self, now: Instant) {
        while let Some((stream, req)) = self.control.accept() {
            let answer = match req {
                Some(Request::Status) => self.status(now),
                Some(Request::Members) => self.members(now),
                Some(Request::Reload) => match self.reload() {
                    Ok(r) => json!({ "reloaded": r.summary, "needs_restart": r.needs_restart }),
                    Err(e) => json!({ "error": format!("reload failed, the running configuration is kept: {e}") }),
                },
                Some(Request::Ping(p)) => {
                    self.pings.start(&mut self.node, now, stream, p);
                    self.flush();
                    continue;
                }
                None => json!({ "error": "unknown request; expected status, members, reload or ping" }),
            };
            control::reply(stream, &answer);
        }
    }

    fn status(&mut self, now: Instant) -> serde_json::Value {
        let facts = report::DaemonFacts {
            listen: self.listen,
            tun: &self.tun_name,
            io: report::IoReport {
                tx_dropped: self.tx_dropped,
                tun_write_errors: self.tun_write_errors,
                rx_peer_socket_datagrams: self.datapath.counters.udp_datagrams_peer_sockets,
                peer_sockets: self.peer_socks.len(),
            },
            started: self.control.started(),
            static_hosts: &self.static_hosts,
        };
        serde_json::to_value(report::status(&mut self.node, now, facts)).unwrap_or_default()
    }

    /// Mirrors the core's values into the metrics registry (scrapes read it from their threads).
    fn update_metrics(&mut self, now: Instant, wall: UnixTime) {
        let Some(metrics) = &mut self.metrics else { return };
        let peers = self.node.peers(now);
        let cert_expiry_seconds = self.node.cert().details().not_after.seconds() - wall.seconds();
        let mesh = self.node.counters().clone();
        let firewall = &self.node.policy_mut().fw;
        let dns = self.dns.as_ref().map(|d| d.counters());
        let datapath = self.datapath.counters.snapshot();
        metrics.update(&metrics::Sample {
            peers: &peers,
            mesh: &mesh,
            firewall,
            cert_expiry_seconds,
            dns,
            datapath: &datapath,
        });
    }

    fn members(&self, now: Instant) -> serde_json::Value {
        serde_json::to_value(report::members(&self.node, now, self.listen)).unwrap_or_default()
    }
}

/// Why a reload was refused (the running configuration stays): in the words the log and
/// `cos-mesh reload` show.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    /// The new configuration does not load: config files, PKI files or firewall rules.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// It loads, but the running node cannot take its PKI without a restart (another overlay
    /// IP or key) or its certificate does not verify.
    #[error(transparent)]
    Trust(#[from] crate::mesh::TrustReloadError),
}

/// What a reload applied, and what it could not.
struct Reloaded {
    summary: String,
    /// Changed settings that only a restart applies (printed as `key (old → new)`).
    needs_restart: Vec<restart::RestartPending>,
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
/// address of the host (IPv4, and IPv6 too when listening on `::`) except loopback,
/// link-local, the overlay and our own TUN, and those `lighthouse.local_allow_list` keeps out
/// (docker0, Nomad's bridge, ...).
fn local_addrs(
    listen: SocketAddr,
    overlay: &[ipnet::IpNet],
    tun: &str,
    allow: &crate::config::LocalAllowList,
) -> Vec<SocketAddr> {
    if !listen.ip().is_unspecified() {
        return vec![listen];
    }
    ifaddrs::ip_addresses(listen.is_ipv6())
        .into_iter()
        .filter(|(name, ip)| name != tun && !ip.is_loopback() && !is_link_local(*ip))
        .filter(|(_, ip)| !overlay.iter().any(|n| n.contains(ip)))
        .filter(|(name, ip)| allow.allows(name, *ip))
        .map(|(_, ip)| SocketAddr::new(ip, listen.port()))
        .collect()
}

/// 169.254.0.0/16 or fe80::/10: meaningless to a peer on another link.
fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => ip.is_link_local(),
        IpAddr::V6(ip) => ip.is_unicast_link_local(),
    }
}
