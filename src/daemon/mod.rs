//! The node daemon (`cos-mesh run`): the IO shell around the mesh core. The main thread runs a
//! `poll(2)` loop over the UDP socket, the TUN, the signalfd and the control socket; batches
//! of datagrams go in and out with recvmmsg/sendmmsg; the core decides everything else. With
//! `routines` > 1, more workers carry the data path on threads of their own ([`worker`]).

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
pub mod worker;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use tracing::{debug, error, info, warn};

use crate::io::{Notifier, Signal, Signals, Tun, TunConfig, Udp, UdpOptions, ifaddrs};
use crate::mesh::{Node, NodeConfig};
use crate::unixtime::UnixTime;
use control::{ControlServer, Request};
use datapath::{Counters, lock};
use policy::FirewallPolicy;
use setup::{Setup, SetupError};
use worker::{Common, SharedNode, Worker, WorkerStats, Workers};

/// How often idle firewall flows are expired.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// How often the main thread looks for finished pings while a client waits: the reply may reach
/// another worker, which does not wake this one.
const PING_CHECK_EVERY: Duration = Duration::from_millis(20);
/// How often the host's addresses are checked (a move re-registers and re-probes peers).
const ADDR_CHECK_EVERY: Duration = Duration::from_secs(2);
/// Warn about our own certificate expiring this long ahead, once a day.
const EXPIRY_NOTICE_SECS: i64 = 30 * 86_400;

struct Daemon {
    config_path: PathBuf,
    node: SharedNode,
    /// Worker 0: the listening socket, TUN queue 0, the peer sockets it owns, its buffers.
    worker: Worker,
    /// Workers 1..N (`routines`) on threads of their own.
    workers: Workers,
    signals: Signals,
    notifier: Notifier,
    /// Release the start-up code's mappings at the end of this loop round (after start, reloads).
    release_pages: bool,
    control: ControlServer,
    metrics: Option<metrics::Metrics>,

    log: logging::LogHandle,
    listen: SocketAddr,
    tun_name: String,
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
    let routines = cfg.routines();
    let tun = if cfg.tun.disabled {
        None
    } else {
        let mut tc =
            TunConfig::from_config(&cfg.tun, setup.pki.cert.overlay_v4()).with_ipv6(setup.overlay6.iter().copied());
        tc.queues = routines;
        Some(Arc::new(
            Tun::create(&tc).with_context(|| format!("creating tun.dev {} with {}", tc.name, setup.overlay))?,
        ))
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
    log_offloads(tun.as_deref(), &udp, routines);
    let common = Common {
        node: Arc::new(Mutex::new(node)),
        owners: Arc::default(),
        tun,
        opts: UdpOptions::from_listen(&c.listen),
        batch: c.listen.batch.max(1),
        workers: routines,
    };
    let node = common.node.clone();
    let workers = Workers::start(&common, listen).context("starting the data-path workers (routines)")?;
    let worker = Worker::new(0, common, udp).context("creating the epoll instance for peer sockets")?;
    let mut d = Daemon {
        config_path: config_path.to_path_buf(),
        tun_name: if c.tun.disabled { "(disabled)".into() } else { c.tun.dev.clone() },
        node,
        worker,
        workers,
        signals,
        control,
        metrics,
        log,
        listen,
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
        release_pages: true,
    };
    let status = format!("{} ({}) on {}, listening on {}", lock(&d.node).cert().name(), overlay, d.tun_name, listen);
    info!("cos-mesh up: {status}");
    // Only now: the TUN carries its address and the socket is bound (Nomad reads the
    // interface once when it starts).
    let _ = d.notifier.ready(&status);
    let result = d.event_loop();
    let _ = d.notifier.stopping();
    let others = d.workers.stop();
    let (totals, each) = d.datapath_totals(others);
    info!("data path totals: {}", show_counters(&totals));
    if each.len() > 1 {
        for (i, w) in each.iter().enumerate() {
            info!("data path worker {i}: {}", show_counters(&w.counters));
        }
    }
    info!("cos-mesh stopping");
    result
}

/// `name=value` pairs, for the log.
fn show_counters(c: &Counters) -> String {
    c.snapshot().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

impl Daemon {
    fn event_loop(&mut self) -> Result<()> {
        loop {
            let now = Instant::now();
            let mut deadline = lock(&self.node).poll_timeout().min(now + Duration::from_secs(1));
            if let Some(w) = self.next_watchdog {
                deadline = deadline.min(w);
            }
            if self.pings.waiting() {
                deadline = deadline.min(now + PING_CHECK_EVERY);
            }
            let timeout = deadline.saturating_duration_since(now);
            let ready = match self.worker.wait(&[self.signals.as_fd(), self.control.listener().as_fd()], timeout) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("poll"),
            };
            let now = Instant::now();
            let wall = UnixTime::now();
            self.worker.work(&ready, wall);
            self.log_events();
            self.housekeeping(now, wall)?;
            if ready.extra[0] {
                match self.signals.next() {
                    Ok(Some(Signal::Shutdown)) => return Ok(()),
                    Ok(Some(Signal::Reload)) => {
                        info!("caught SIGHUP, reloading {}", self.config_path.display());
                        let _ = self.reload();
                    }
                    _ => {}
                }
            }
            if ready.extra[1] {
                self.serve_control(now);
            }
            self.pings.answer_finished(&self.node);
            if std::mem::take(&mut self.release_pages) {
                release_startup_pages();
            }
        }
    }

    /// Logs the core's events (taken under its lock, written without it).
    fn log_events(&self) {
        let happened: Vec<_> = {
            let mut node = lock(&self.node);
            std::iter::from_fn(|| node.poll_event()).collect()
        };
        for e in &happened {
            events::log_event(e);
        }
    }

    /// The data path's counters summed over the workers, and each worker's (worker 0 first);
    /// `others` are the other workers' last published figures.
    fn datapath_totals(&self, others: Vec<WorkerStats>) -> (Counters, Vec<WorkerStats>) {
        let mine = WorkerStats { counters: self.worker.datapath.counters, peer_sockets: self.worker.peer_sockets() };
        let each: Vec<WorkerStats> = std::iter::once(mine).chain(others).collect();
        let mut totals = Counters::default();
        for w in &each {
            totals.add(&w.counters);
        }
        (totals, each)
    }

    /// Once-a-second and rarer chores. Fails when a worker has stopped (the daemon stops too,
    /// and systemd restarts it).
    fn housekeeping(&mut self, now: Instant, wall: UnixTime) -> Result<()> {
        if let Some((hosts, problems)) = self.resolver.poll() {
            for p in &problems {
                warn!("{p}");
            }
            lock(&self.node).set_static_hosts(hosts);
        }
        if now >= self.next_expire {
            self.next_expire = now + EXPIRE_EVERY;
            if let Some(i) = self.workers.stopped() {
                anyhow::bail!("data-path worker {i} stopped (see the log above); stopping the daemon");
            }
            // Conntrack expiry is a scan of every flow: once a second, not per wakeup.
            lock(&self.node).policy_mut().fw.expire(Instant::now());
            if let Some(dns) = &self.dns {
                let members = lock(&self.node).members();
                dns.set(&members);
            }
            self.update_metrics(now, wall);
            self.worker.sync_peer_sockets();
        }
        if now >= self.next_addr_check {
            self.next_addr_check = now + ADDR_CHECK_EVERY;
            let addrs = local_addrs(self.listen, &self.overlay_nets, &self.tun_name, &self.local_allow);
            let mut node = lock(&self.node);
            node.set_local_addrs(Instant::now(), addrs);
        }
        if now >= self.next_expiry_check {
            self.next_expiry_check = now + Duration::from_secs(86_400);
            let node = lock(&self.node);
            let d = node.cert().details();
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
        Ok(())
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
        let name = lock(&self.node).cert().name().to_string();
        let status = match &result {
            Ok(r) if r.needs_restart.is_empty() => format!("{name} running, reloaded"),
            Ok(_) => format!("{name} running, reloaded; some settings wait for a restart"),
            Err(e) => format!("{name} running; last reload failed: {e}"),
        };
        let _ = self.notifier.ready(&status);
        self.release_pages = true;
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
        let mut node = lock(&self.node);
        // The one step that can still refuse; nothing has changed before it.
        node.reload_trust(pki.pool, pki.blocklist, pki.cert, wall)?;
        node.set_static_hosts(resolver::literals(&static_map));
        self.static_hosts = static_map.clone();
        self.resolver.update(static_map);
        node.set_discovery(Instant::now(), discovery);
        self.local_allow = local_allow;
        node.policy_mut().fw.reload(firewall);
        // Last, once nothing can fail: a refused reload changes nothing at all.
        self.log.set(log_level);
        let version = node.policy_mut().fw.rules_version();
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
                    self.pings.start(&self.node, stream, p);
                    self.worker.flush();
                    self.log_events();
                    continue;
                }
                None => json!({ "error": "unknown request; expected status, members, reload or ping" }),
            };
            control::reply(stream, &answer);
        }
    }

    fn status(&mut self, now: Instant) -> serde_json::Value {
        let (totals, each) = self.datapath_totals(self.workers.stats());
        let facts = report::DaemonFacts {
            listen: self.listen,
            tun: &self.tun_name,
            io: report::IoReport::new(&totals, &each),
            started: self.control.started(),
            static_hosts: &self.static_hosts,
        };
        serde_json::to_value(report::status(&mut lock(&self.node), now, facts)).unwrap_or_default()
    }

    /// Mirrors the core's values into the metrics registry (scrapes read it from their threads).
    fn update_metrics(&mut self, now: Instant, wall: UnixTime) {
        if self.metrics.is_none() {
            return;
        }
        let (totals, _) = self.datapath_totals(self.workers.stats());
        let datapath = totals.snapshot();
        let Some(metrics) = &mut self.metrics else { return };
        let mut node = lock(&self.node);
        let peers = node.peers(now);
        let cert_expiry_seconds = node.cert().details().not_after.seconds() - wall.seconds();
        let mesh = node.counters().clone();
        let firewall = &node.policy_mut().fw;
        let dns = self.dns.as_ref().map(|d| d.counters());
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
        serde_json::to_value(report::members(&lock(&self.node), now, self.listen)).unwrap_or_default()
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

/// After the loop's first round and after each reload: the code and read-only data that ran only
/// to load the config and set up (the YAML parser alone is 2.5 MB of code) need not stay mapped;
/// what the loop runs faults back in. With the link order (build.rs) an idle daemon keeps 0.8 MB of
/// its code resident instead of 5.6 MB (bench/results/2026-12-03-rss4/).
/// Nothing is logged on success: the logging code it would run is not code the loop needs.
fn release_startup_pages() {
    if let Err(e) = crate::io::memory::release_clean_file_pages() {
        debug!("could not release the start-up code's mappings: {e}");
    }
}

/// Says once at start which data path is on, so an operator reading the log knows.
fn log_offloads(tun: Option<&Tun>, udp: &Udp, routines: usize) {
    let on = |b: bool| if b { "on" } else { "off" };
    let tun_part = match tun {
        Some(t) => format!("TUN offloads {} (UDP segmentation {})", on(t.offload()), on(t.udp_offload())),
        None => "no TUN".to_string(),
    };
    let workers = if routines == 1 { "1 worker".to_string() } else { format!("{routines} workers (routines)") };
    info!(
        "data path: {tun_part}, UDP GSO {} (up to {} datagrams per send), UDP GRO {}, {workers}",
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
