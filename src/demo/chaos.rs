//! `cos-mesh demo --chaos`: while UDP probes flow over the overlay between four pairs of Nomad
//! hosts, one fault at a time (a broken then a good reload, a one-way and a two-way underlay
//! drop, random loss, a restarted lighthouse, a NAT mapping that changes, a daemon killed and
//! restarted), each with the time the traffic took to flow again; then whether the reachability
//! matrix is whole again and whether any daemon kept more file descriptors or memory.
//!
//! Faults are made with nft rules in the hosts' own namespaces (removed with them), never netem.
//! Reordering is not among them: nft can drop but not delay a datagram, and without netem (or a
//! userspace NFQUEUE delayer) there is no way to hold one back behind its successors.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::matrix;
use super::world::{Host, World};
use crate::daemon::control::{Request, ask};
use crate::lab::{Router, wait_until};

/// How often each pair sends a probe (the resolution of every figure).
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// The overlay port the probes go to: Consul LAN (udp), which firewall/ opens between Consul
/// servers and clients.
const ECHO_PORT: u16 = 8301;
/// What a probe carries (and its echo).
const PROBE: &[u8] = b"cos-mesh chaos probe";
/// The pairs (source, target) that probe throughout: across the two NATs, within a NAT's LAN.
pub const PAIRS: [(&str, &str); 4] =
    [("server-1", "client-1"), ("client-2", "client-1"), ("client-2", "server-1"), ("server-2", "server-1")];
/// A pair flows while its last answer is at most this old.
const FLOWING: Duration = Duration::from_millis(400);
/// How long a fault may take to recover before the run calls it unrecovered.
const GIVE_UP: Duration = Duration::from_secs(12);
/// How long the traffic is watched after it flows again.
const OBSERVE: Duration = Duration::from_secs(1);
/// How long the timed faults (drops, loss) stay in place.
const HOLD: Duration = Duration::from_secs(3);
/// Issue 16's target: traffic flows again within this after any fault.
pub const TARGET: Duration = Duration::from_secs(5);
/// Issue 16's target for a direct path lost (both ways) or failing one way: traffic on the
/// relay within this.
pub const TARGET_LOST_PATH: Duration = Duration::from_secs(2);
/// A restarted lighthouse hears of a node at the node's next report (`lighthouse.interval`, 5 s
/// in the demo): every node registered again within that and a second for the restart and
/// the handshake. The traffic between nodes does not wait for it (and lighthouse-2 answers).
pub const REGISTER_BOUND: Duration = Duration::from_secs(6);
/// How long the run waits for a cross-NAT pair to be direct before a fault on its direct path.
const DIRECT_WAIT: Duration = Duration::from_secs(8);
/// File descriptors a daemon may hold beyond its count before the faults: a control connection
/// being answered and a socket being replaced can be open at the moment /proc is read.
pub const FD_SLACK: usize = 2;
/// RSS growth allowed over the run, in percent of the start, and at least [`RSS_SLACK_KIB`]:
/// sessions with new keys, relay paths and the allocator's arenas legitimately move a few
/// hundred KiB; a leak per fault or per datagram shows as far more.
pub const RSS_GROWTH_PERCENT: u64 = 10;
/// See [`RSS_GROWTH_PERCENT`].
pub const RSS_SLACK_KIB: u64 = 1024;
/// The nft table the faults live in (in a host's namespace; deleted with it).
const TABLE: &str = "chaos";
/// The masquerade ports a flapped NAT maps to (the original mapping keeps the node's 4242).
const FLAPPED_PORTS: &str = ":40000-49999";

/// The faults, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    BadReload,
    OneWayDrop,
    TwoWayDrop,
    Loss,
    LighthouseRestart,
    NatFlap,
    Kill,
}

impl Fault {
    pub const ALL: [Fault; 7] = [
        Fault::BadReload,
        Fault::OneWayDrop,
        Fault::TwoWayDrop,
        Fault::Loss,
        Fault::LighthouseRestart,
        Fault::NatFlap,
        Fault::Kill,
    ];

    /// The row's text in the table.
    pub fn describe(self) -> &'static str {
        match self {
            Fault::BadReload => "client-1 reloads a broken config, then a good one",
            Fault::OneWayDrop => "server-1's UDP dropped at client-1 (one way), 3 s",
            Fault::TwoWayDrop => "all UDP server-1 <-> client-1 dropped, 3 s",
            Fault::Loss => "30% random UDP loss at client-1, both ways, 3 s",
            Fault::LighthouseRestart => "lighthouse-1 killed (-9) and restarted",
            Fault::NatFlap => "env B's NAT forgets its mappings, new ports",
            Fault::Kill => "client-1's daemon killed (-9) and restarted",
        }
    }

    pub fn target(self) -> Duration {
        if self.needs_direct() { TARGET_LOST_PATH } else { TARGET }
    }

    fn hold(self) -> Duration {
        match self {
            Fault::OneWayDrop | Fault::TwoWayDrop | Fault::Loss => HOLD,
            _ => Duration::ZERO,
        }
    }

    /// Whether the fault is about the direct path of server-1 and client-1 (across both NATs).
    fn needs_direct(self) -> bool {
        matches!(self, Fault::OneWayDrop | Fault::TwoWayDrop)
    }
}

/// What one fault cost.
pub struct Recovery {
    pub fault: Fault,
    /// The longest time without an answer on any pair; `None`: not flowing again in time.
    pub gap: Option<Duration>,
    /// The pair with that longest gap.
    pub pair: String,
    /// For the lighthouse: the time until it knew every node again.
    pub registered: Option<Duration>,
    /// What else was seen (path taken, log lines, the new mapping).
    pub note: String,
}

impl Recovery {
    /// The figure held against the target: the traffic gap.
    pub fn time(&self) -> Option<Duration> {
        self.gap
    }

    /// Within the target; for the lighthouse also registered again within [`REGISTER_BOUND`].
    pub fn ok(&self) -> bool {
        let registered = self.fault != Fault::LighthouseRestart || self.registered.is_some_and(|r| r <= REGISTER_BOUND);
        registered && self.time().is_some_and(|t| t <= self.fault.target())
    }
}

/// A daemon's file descriptors and resident memory.
#[derive(Debug, Clone, Copy)]
pub struct Footprint {
    pub pid: u32,
    pub fds: usize,
    pub rss_kib: u64,
}

impl Footprint {
    fn of(h: &Host) -> Option<Footprint> {
        let pid = h.pid()?;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
        Some(Footprint { pid, fds, rss_kib })
    }

    /// Whether `after` stays within the bounds above.
    pub fn within(self, after: Footprint) -> bool {
        let rss_bound = self.rss_kib + (self.rss_kib * RSS_GROWTH_PERCENT / 100).max(RSS_SLACK_KIB);
        after.fds <= self.fds + FD_SLACK && after.rss_kib <= rss_bound
    }
}

/// The probe streams: an echo on each target, a sender per pair recording when answers come.
struct Traffic {
    stop: Arc<AtomicBool>,
    answers: Vec<(String, Arc<Mutex<Vec<Instant>>>)>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Traffic {
    fn start(world: &World) -> Result<Traffic> {
        let mut traffic = Traffic { stop: Arc::new(AtomicBool::new(false)), answers: vec![], threads: vec![] };
        let targets: BTreeSet<&str> = PAIRS.iter().map(|p| p.1).collect();
        for t in targets {
            let stop = traffic.stop.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            // On every address: the target's overlay address goes away while its daemon is down.
            traffic.threads.push(world.host(t).ns.spawn_thread(move || {
                let Ok(u) = UdpSocket::bind(("0.0.0.0", ECHO_PORT)) else { return tx.send(false).unwrap_or(()) };
                let _ = tx.send(true);
                echo(&u, &stop);
            })?);
            if !rx.recv().unwrap_or(false) {
                bail!("cannot listen on udp {ECHO_PORT} in {t}");
            }
        }
        for (src, dst) in PAIRS {
            let to = SocketAddr::new(IpAddr::V4(world.host(dst).vpn_ip), ECHO_PORT);
            let answers = Arc::new(Mutex::new(Vec::new()));
            let (stop, log) = (traffic.stop.clone(), answers.clone());
            traffic.threads.push(world.host(src).ns.spawn_thread(move || send(to, &stop, &log))?);
            traffic.answers.push((format!("{src}->{dst}"), answers));
        }
        Ok(traffic)
    }

    /// Whether every pair got an answer since `since`, and recently.
    fn flowing(&self, since: Instant) -> bool {
        let now = Instant::now();
        self.answers
            .iter()
            .all(|(_, a)| lock(a).last().is_some_and(|t| *t > since && now.duration_since(*t) <= FLOWING))
    }

    /// The pair with the longest time without an answer between `from` and `to`.
    fn worst_gap(&self, from: Instant, to: Instant) -> (Duration, String) {
        self.answers
            .iter()
            .map(|(pair, a)| (longest_gap(&lock(a), from, to), pair.clone()))
            .max_by_key(|(gap, _)| *gap)
            .unwrap_or_default()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn echo(u: &UdpSocket, stop: &AtomicBool) {
    let _ = u.set_read_timeout(Some(PROBE_EVERY / 2));
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = u.recv_from(&mut buf) {
            let _ = u.send_to(&buf[..n], from);
        }
    }
}

/// Sends a probe every [`PROBE_EVERY`] and notes when each echo comes back.
fn send(to: SocketAddr, stop: &AtomicBool, answers: &Mutex<Vec<Instant>>) {
    let Ok(u) = UdpSocket::bind("0.0.0.0:0") else { return };
    let mut next = Instant::now();
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next {
            // Fails while a route is gone (a daemon restarting); the gap shows it.
            let _ = u.send_to(PROBE, to);
            next += PROBE_EVERY;
        }
        let wait = next.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let _ = u.set_read_timeout(Some(wait));
        if let Ok((n, from)) = u.recv_from(&mut buf)
            && from == to
            && &buf[..n] == PROBE
        {
            lock(answers).push(Instant::now());
        }
    }
}

/// The longest time without an answer from `from` to `to`, counted from the last answer
/// before `from`.
fn longest_gap(answers: &[Instant], from: Instant, to: Instant) -> Duration {
    let mut last = answers.iter().rev().find(|t| **t <= from).copied().unwrap_or(from);
    let mut worst = Duration::ZERO;
    for &t in answers.iter().filter(|t| **t > from && **t <= to) {
        worst = worst.max(t - last);
        last = t;
    }
    worst.max(to.saturating_duration_since(last))
}

/// Runs every fault, prints the tables, measures the matrix again; `Ok(true)` when every fault
/// recovered within its target, the matrix is whole and no daemon grew past the bounds.
pub fn run(world: &mut World, exe: &Path) -> Result<bool> {
    println!(
        "Chaos: one fault at a time while UDP probes cross the overlay every {} ms ({}).",
        PROBE_EVERY.as_millis(),
        PAIRS.map(|(s, d)| format!("{s} -> {d}")).join(", ")
    );
    let before: Vec<Option<Footprint>> = world.hosts.iter().map(Footprint::of).collect();
    let traffic = Traffic::start(world)?;
    let mut recoveries = vec![];
    for fault in Fault::ALL {
        let r = measure(world, exe, &traffic, fault)?;
        println!("  {:<52} {:>13}  {} {}", fault.describe(), figure(&r), r.pair, r.note);
        recoveries.push(r);
    }
    drop(traffic);
    let cells = matrix::measure(world)?;
    let whole = cells.iter().all(|c| c.expected == c.observed);
    let after: Vec<Option<Footprint>> = world.hosts.iter().map(Footprint::of).collect();
    println!();
    print!("{}", recovery_table(&recoveries));
    println!();
    let (text, no_leak) = footprint_table(world, &before, &after);
    print!("{text}");
    println!();
    if whole {
        println!("After the faults the matrix is whole again: every cell matches the role rule sets.");
    } else {
        let wrong = cells.iter().filter(|c| c.expected != c.observed).count();
        println!("After the faults {wrong} cells of the matrix disagree with the role rule sets.");
    }
    let recovered = recoveries.iter().all(Recovery::ok);
    Ok(recovered && whole && no_leak)
}

fn figure(r: &Recovery) -> String {
    match r.time() {
        Some(t) => format!("{:.1} s", t.as_secs_f64()),
        None => "not recovered".into(),
    }
}

/// One fault: wait for traffic, inject, hold, lift, wait for traffic again.
fn measure(world: &mut World, exe: &Path, traffic: &Traffic, fault: Fault) -> Result<Recovery> {
    let mut note = String::new();
    if fault.needs_direct() && !wait_until(DIRECT_WAIT, || direct(world.host("server-1"), "client-1").is_some()) {
        note.push_str("server-1 -> client-1 was relayed before the fault; ");
    }
    if !wait_until(GIVE_UP, || traffic.flowing(Instant::now() - FLOWING)) {
        bail!("the probes did not all flow before fault {fault:?}");
    }
    let logs: Vec<(String, PathBuf, u64)> = ["server-1", "client-1"]
        .map(|n| {
            let log = world.host(n).log.clone();
            let len = std::fs::metadata(&log).map_or(0, |m| m.len());
            (n.to_string(), log, len)
        })
        .into();
    let before = direct(world.host("relay"), "client-1").map_or("?".into(), |a| a.to_string());
    let start = Instant::now();
    inject(world, exe, fault, &mut note)?;
    thread::sleep(fault.hold());
    if fault == Fault::OneWayDrop || fault == Fault::TwoWayDrop {
        note.push_str(&path_note(world));
    }
    lift(world, fault)?;
    let lifted = Instant::now();
    let flowing = wait_until(GIVE_UP, || traffic.flowing(lifted));
    let registered = (fault == Fault::LighthouseRestart)
        .then(|| wait_until(GIVE_UP, || knows_everyone(world, "lighthouse-1")).then(|| start.elapsed()))
        .flatten();
    // Watched a little longer: a path moving back (relay to direct) may cost a gap too.
    thread::sleep(OBSERVE);
    let (gap, pair) = traffic.worst_gap(start, Instant::now());
    if fault == Fault::OneWayDrop {
        for ((host, log, from), peer) in logs.iter().zip(["client-1", "server-1"]) {
            note.push_str(&log_note(host, log, *from, peer));
        }
    }
    if fault == Fault::NatFlap {
        let _ = write!(note, "client-1 seen by the relay at {before} before, ");
        let moved =
            wait_until(OBSERVE, || direct(world.host("relay"), "client-1").is_some_and(|a| a.to_string() != before));
        let seen = direct(world.host("relay"), "client-1").map_or("?".into(), |a| a.to_string());
        let _ = write!(note, "{seen} after{}", if moved { "" } else { " (no new mapping seen)" });
    }
    Ok(Recovery { fault, gap: flowing.then_some(gap), pair, registered, note })
}

fn inject(world: &mut World, exe: &Path, fault: Fault, note: &mut String) -> Result<()> {
    match fault {
        Fault::BadReload => bad_reload(world.host("client-1"), note),
        Fault::OneWayDrop | Fault::TwoWayDrop => {
            let b = world.host("client-1");
            let a = direct(b, "server-1").context("client-1 has no direct address for server-1")?;
            let _ = write!(note, "server-1 at {a}; ");
            let mut rules = vec![format!("add rule ip {TABLE} input ip saddr {} udp sport {} drop", a.ip(), a.port())];
            if fault == Fault::TwoWayDrop {
                rules.push(format!("add rule ip {TABLE} output ip daddr {} udp dport {} drop", a.ip(), a.port()));
            }
            add_rules(b, &rules)
        }
        Fault::Loss => add_rules(
            world.host("client-1"),
            &[
                format!("add rule ip {TABLE} input meta l4proto udp numgen random mod 10 < 3 drop"),
                format!("add rule ip {TABLE} output meta l4proto udp numgen random mod 10 < 3 drop"),
            ],
        ),
        Fault::LighthouseRestart => restart(world, exe, "lighthouse-1"),
        Fault::NatFlap => flap(&world.routers[1]),
        Fault::Kill => restart(world, exe, "client-1"),
    }
}

fn lift(world: &mut World, fault: Fault) -> Result<()> {
    match fault {
        Fault::BadReload => {
            let h = world.host("client-1");
            let good = h.config.with_extension("yaml.good");
            std::fs::rename(&good, &h.config).context("putting the good config back")?;
            ask(&h.socket, Request::Reload).context("client-1 refused its good config").map(drop)
        }
        Fault::OneWayDrop | Fault::TwoWayDrop | Fault::Loss => {
            world.host("client-1").ns.exec("nft", &["delete", "table", "ip", TABLE]).map(drop)
        }
        Fault::LighthouseRestart | Fault::NatFlap | Fault::Kill => Ok(()),
    }
}

/// Writes a config that does not parse, asks for a reload (which must be refused while the
/// daemon keeps running); the good file is kept aside for [`lift`].
fn bad_reload(h: &Host, note: &mut String) -> Result<()> {
    let good = h.config.with_extension("yaml.good");
    std::fs::copy(&h.config, &good).context("keeping the good config")?;
    let text = std::fs::read_to_string(&good)?.replace("port: 4242", "port: forty-two");
    std::fs::write(&h.config, text)?;
    // The daemon's refusal comes back as an error.
    let error = match ask(&h.socket, Request::Reload) {
        Ok(answer) => bail!("client-1 accepted a broken config: {answer}"),
        Err(e) => e.to_string(),
    };
    if h.pid().is_none_or(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
        bail!("client-1's daemon died on a broken config");
    }
    let _ = write!(note, "refused: {error}");
    Ok(())
}

fn add_rules(h: &Host, rules: &[String]) -> Result<()> {
    let mut script = format!(
        "add table ip {TABLE}\nadd chain ip {TABLE} input {{ type filter hook input priority -10 ; }}\n\
         add chain ip {TABLE} output {{ type filter hook output priority -10 ; }}\n"
    );
    for r in rules {
        script.push_str(r);
        script.push('\n');
    }
    let path = std::env::temp_dir().join(format!("cos-mesh-chaos-{}.nft", std::process::id()));
    std::fs::write(&path, script)?;
    let result = h.ns.exec("nft", &["-f", &path.to_string_lossy()]);
    let _ = std::fs::remove_file(&path);
    result.map(drop)
}

fn restart(world: &mut World, exe: &Path, name: &str) -> Result<()> {
    let h = world.hosts.iter_mut().find(|h| h.name == name).ok_or_else(|| anyhow!("no host {name}"))?;
    h.kill();
    h.start(exe)
}

/// Makes the NAT masquerade to other ports and forget its mappings: taking its public
/// interface down drops the masqueraded connections (the kernel's conntrack entries), as a
/// NAT reboot or an expired mapping does, so every host behind it gets a new public port.
fn flap(router: &Router) -> Result<()> {
    let rules = router.ns.exec("nft", &["list", "chain", "ip", "nat", "postrouting"])?;
    let wan = rules
        .split("oifname")
        .nth(1)
        .and_then(|r| r.split('"').nth(1))
        .ok_or_else(|| anyhow!("no masquerade rule in the NAT's postrouting chain:\n{rules}"))?
        .to_string();
    router.ns.exec("nft", &["flush", "chain", "ip", "nat", "postrouting"])?;
    let ported =
        format!("add rule ip nat postrouting oifname {wan} meta l4proto {{ tcp, udp }} masquerade to {FLAPPED_PORTS}");
    router.ns.exec("nft", &[&ported])?;
    router.ns.exec("nft", &["add", "rule", "ip", "nat", "postrouting", "oifname", &wan, "masquerade"])?;
    router.ns.exec("ip", &["link", "set", &wan, "down"])?;
    router.ns.exec("ip", &["link", "set", &wan, "up"])?;
    Ok(())
}

/// The direct underlay address `h` uses for `peer`, while not relayed.
fn direct(h: &Host, peer: &str) -> Option<SocketAddr> {
    let status = h.status()?;
    let p = status["peers"].as_array()?.iter().find(|p| p["name"] == peer && p["up"] == true)?.clone();
    if p["relayed"] == true {
        return None;
    }
    p["direct"].as_str()?.parse().ok()
}

/// How server-1 and client-1 reach each other now.
fn path_note(world: &World) -> String {
    let via = |h: &str, peer: &str| {
        world
            .host(h)
            .status()
            .and_then(|s| {
                s["peers"]
                    .as_array()?
                    .iter()
                    .find(|p| p["name"] == peer)
                    .map(|p| if p["relayed"] == true { "relay" } else { "direct" }.to_string())
            })
            .unwrap_or_else(|| "?".into())
    };
    format!(
        "during the fault server-1 sends to client-1 {}, client-1 to server-1 {}; ",
        via("server-1", "client-1"),
        via("client-1", "server-1")
    )
}

/// The lines `host`'s `log` gained since `from` that name `peer` (without their timestamps).
fn log_note(host: &str, log: &Path, from: u64, peer: &str) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let new = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default()).into_owned();
    let lines: Vec<&str> = new
        .lines()
        .filter(|l| l.contains(peer))
        .map(|l| l.split_once("Z ").map_or(l, |(_, rest)| rest.trim()))
        .collect();
    if lines.is_empty() {
        format!("{host} logged nothing naming {peer}; ")
    } else {
        format!("{host} logged: {}; ", lines.join(" | "))
    }
}

/// Whether the lighthouse has a tunnel up with every other host of the world.
fn knows_everyone(world: &World, lighthouse: &str) -> bool {
    let Some(status) = world.host(lighthouse).status() else { return false };
    let peers = status["peers"].as_array().cloned().unwrap_or_default();
    world
        .hosts
        .iter()
        .filter(|h| h.name != lighthouse && h.name != "lighthouse-2")
        .all(|h| peers.iter().any(|p| p["name"] == h.name.as_str() && p["up"] == true))
}

fn recovery_table(rs: &[Recovery]) -> String {
    let mut s = format!(
        "Time to recover (longest time without a probe answer on any pair; {} ms resolution):\n",
        PROBE_EVERY.as_millis()
    );
    let _ = writeln!(s, "{:<52} {:>9} {:>7} {:<18} NOTES", "FAULT", "RECOVERY", "TARGET", "WORST PAIR");
    for r in rs {
        let verdict = if r.ok() { "" } else { " MISSED" };
        let mut note = r.note.clone();
        if r.fault == Fault::LighthouseRestart {
            let reg = r.registered.map_or("not".into(), |t| format!("after {:.1} s", t.as_secs_f64()));
            let _ = write!(note, "every node registered again {reg} (bound {} s)", REGISTER_BOUND.as_secs());
        }
        let _ = writeln!(
            s,
            "{:<52} {:>9} {:>5} s {:<18} {note}{verdict}",
            r.fault.describe(),
            figure(r),
            r.fault.target().as_secs(),
            r.pair
        );
    }
    s
}

fn footprint_table(world: &World, before: &[Option<Footprint>], after: &[Option<Footprint>]) -> (String, bool) {
    let mut s = format!(
        "Daemons before and after (bound: fds +{FD_SLACK}, RSS +{RSS_GROWTH_PERCENT}% or +{RSS_SLACK_KIB} KiB):\n"
    );
    let _ =
        writeln!(s, "{:<13} {:>9} {:>9} {:>12} {:>12}  VERDICT", "HOST", "FDS", "FDS AFTER", "RSS KiB", "RSS AFTER");
    let mut ok = true;
    for ((h, b), a) in world.hosts.iter().zip(before).zip(after) {
        let (Some(b), Some(a)) = (b, a) else {
            ok = false;
            let _ = writeln!(s, "{:<13} (no process to measure)  LEAK?", h.name);
            continue;
        };
        let within = b.within(*a);
        ok &= within;
        let restarted = if a.pid == b.pid { "" } else { " (restarted)" };
        let _ = writeln!(
            s,
            "{:<13} {:>9} {:>9} {:>12} {:>12}  {}{restarted}",
            h.name,
            b.fds,
            a.fds,
            b.rss_kib,
            a.rss_kib,
            if within { "ok" } else { "GREW" }
        );
    }
    (s, ok)
}
