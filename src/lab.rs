//! A lab of network namespaces on this machine: hosts, switched segments, NAT routers and the
//! processes inside them, each removed when its guard drops. `cos-mesh demo` builds its world
//! with it. Underlay addresses come from 198.18.0.0/15 and nothing is ever configured in the
//! root namespace.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process: `prefix` + pid + counter, at most 15 bytes.
pub fn unique(prefix: &str) -> String {
    let name = format!("{prefix}{:x}{}", std::process::id() % 0xfffff, COUNTER.fetch_add(1, Ordering::Relaxed));
    name.chars().take(15).collect()
}

/// Runs a command; an error carries its stderr.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

/// Polls `f` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A network namespace, deleted (with everything running in it) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Result<Netns> {
        let name = unique(prefix);
        run(Command::new("ip").args(["netns", "add", &name]))
            .context("creating a network namespace (are you root?)")?;
        let ns = Netns { name };
        ns.exec("ip", &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn command(&self, cmd: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, cmd]).args(args);
        c
    }

    /// Runs a command in the namespace to completion; returns its stdout.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> Result<String> {
        Ok(String::from_utf8_lossy(&run(&mut self.command(cmd, args))?.stdout).into_owned())
    }

    /// Runs `f` on a thread that entered this namespace (network namespaces are per thread).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let handle = self.spawn_thread(f)?;
        handle.join().map_err(|_| anyhow::anyhow!("a thread in namespace {} panicked", self.name))
    }

    /// Starts `f` on a thread inside this namespace and returns its handle.
    pub fn spawn_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<thread::JoinHandle<T>> {
        let ns = File::open(format!("/run/netns/{}", self.name))
            .with_context(|| format!("opening namespace {}", self.name))?;
        Ok(thread::spawn(move || {
            // SAFETY: setns on an open namespace fd changes only this thread's namespace.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        }))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                // SAFETY: kill(2) of a process inside our own namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A child process, stopped (SIGTERM, then SIGKILL) and reaped on drop.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A switched segment: a bridge in its own namespace that hosts attach to with veth pairs.
pub struct Segment {
    pub ns: Netns,
    bridge: String,
}

impl Segment {
    pub fn new(prefix: &str) -> Result<Segment> {
        let ns = Netns::new(prefix)?;
        let bridge = unique("br");
        ns.exec("ip", &["link", "add", &bridge, "type", "bridge"])?;
        ns.exec("ip", &["link", "set", &bridge, "up"])?;
        Ok(Segment { ns, bridge })
    }

    /// Connects `host` with `addr` (`198.18.0.5/24`); returns the host's interface name.
    pub fn attach(&self, host: &Netns, addr: &str) -> Result<String> {
        let (sw_end, host_end) = (unique("v"), unique("v"));
        self.ns
            .exec("ip", &["link", "add", &sw_end, "type", "veth", "peer", "name", &host_end, "netns", host.name()])?;
        self.ns.exec("ip", &["link", "set", &sw_end, "master", &self.bridge, "up"])?;
        host.exec("ip", &["addr", "add", addr, "dev", &host_end])?;
        host.exec("ip", &["link", "set", &host_end, "up"])?;
        Ok(host_end)
    }
}

/// A NAT router: forwards, masquerades what leaves its public interface, and drops
/// unsolicited traffic arriving there for itself, as a NAT gateway does.
pub struct Router {
    pub ns: Netns,
    /// The segment behind the router (its LAN); the router is its `.1`.
    pub lan: Segment,
    lan_prefix: String,
}

impl Router {
    /// A router on `public` at `public_addr`, in front of `lan_prefix`.0/24 (`198.19.1`).
    pub fn new(public: &Segment, public_addr: &str, lan_prefix: &str) -> Result<Router> {
        let ns = Netns::new("rt")?;
        ns.exec("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])?;
        let wan = public.attach(&ns, public_addr)?;
        let lan = Segment::new("ln")?;
        lan.attach(&ns, &format!("{lan_prefix}.1/24"))?;
        ns.exec("nft", &["add", "table", "ip", "nat"])?;
        ns.exec("nft", &["add chain ip nat postrouting { type nat hook postrouting priority srcnat ; }"])?;
        ns.exec("nft", &["add", "rule", "ip", "nat", "postrouting", "oifname", &wan, "masquerade"])?;
        ns.exec("nft", &["add", "table", "ip", "wan"])?;
        ns.exec("nft", &["add chain ip wan input { type filter hook input priority 0 ; }"])?;
        ns.exec("nft", &["add", "rule", "ip", "wan", "input", "iifname", &wan, "ct", "state", "new", "drop"])?;
        Ok(Router { ns, lan, lan_prefix: lan_prefix.to_string() })
    }

    /// Puts `host` on the LAN at `lan_prefix.n`, with its default route through the router.
    pub fn attach(&self, host: &Netns, n: u8) -> Result<String> {
        let addr = format!("{}.{n}", self.lan_prefix);
        self.lan.attach(host, &format!("{addr}/24"))?;
        host.exec("ip", &["route", "add", "default", "via", &format!("{}.1", self.lan_prefix)])?;
        Ok(addr)
    }
}
