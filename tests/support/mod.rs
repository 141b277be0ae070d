//! End-to-end test harness: network namespaces, veth links, a NAT router, processes inside
//! namespaces, and polling. Include it with `mod support;` from a test in `tests/`.
//!
//! Every namespace, link and process is owned by a guard whose `Drop` removes it, so a failing
//! assertion (a panic unwinding through the test) still cleans up. Names carry a per-process
//! prefix (`cm<pid>`) plus a counter, so tests and test binaries can run side by side, and
//! [`leftovers`] finds anything of ours still present. Addresses: underlay 198.18.0.0/15,
//! overlay 100.64.0.0/10; nothing is ever configured in the root namespace.
#![allow(dead_code)] // each test binary uses a different part

pub mod daemon;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// This process's name prefix: `cm` + pid (base 36 keeps it short).
pub fn prefix() -> String {
    format!("cm{}", base36(std::process::id()))
}

/// A fresh name: prefix + `tag` + counter, at most 15 bytes (a Linux interface name's limit).
pub fn unique(tag: &str) -> String {
    let name = format!("{}{tag}{}", prefix(), base36(COUNTER.fetch_add(1, Ordering::Relaxed)));
    assert!(name.len() <= 15, "name {name} is longer than 15 bytes");
    name
}

fn base36(mut n: u32) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = Vec::new();
    loop {
        s.push(digits[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

/// Runs a command to completion; panics (with its stderr) if it fails.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    out
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes; returns whether it did.
pub use cos_mesh::lab::wait_until;

/// Namespaces (from `ip netns list`) whose name starts with this process's prefix.
pub fn leftovers() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
    let p = prefix();
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&p))
        .map(str::to_string)
        .collect()
}

/// A named network namespace, deleted (with every process in it) on drop. Its loopback is up.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = unique(tag);
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.exec_ok("ip", &["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME cmd args…`, to completion.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> Output {
        self.command(cmd, args).output().unwrap_or_else(|e| panic!("running {cmd} in {}: {e}", self.name))
    }

    /// As [`Netns::exec`]; panics with stderr unless it succeeds. Returns stdout.
    pub fn exec_ok(&self, cmd: &str, args: &[&str]) -> String {
        let out = self.exec(cmd, args);
        assert!(
            out.status.success(),
            "{cmd} {} in {}: {}",
            args.join(" "),
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a long-running process in the namespace; it is killed when the guard drops.
    pub fn spawn(&self, cmd: &str, args: &[&str]) -> ChildGuard {
        let child = self
            .command(cmd, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd} in {}: {e}", self.name));
        ChildGuard(Some(child))
    }

    pub fn command(&self, cmd: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, cmd]).args(args);
        c
    }

    /// Runs `f` on a new thread that has entered this namespace (network namespaces are per
    /// thread), and returns its result. A panic inside `f` is re-raised here.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        let handle = thread::spawn(move || {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
            // SAFETY: setns on an open namespace fd affects only this thread.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        });
        match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill what runs inside first, or `ip netns del` leaves the namespace alive behind them.
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: plain kill(2) of a process in our test namespace.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A child process killed and reaped on drop.
#[derive(Debug)]
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child present until drop")
    }

    /// Waits for the process to exit (stdout, stderr, status).
    pub fn wait(mut self) -> Output {
        let child = self.0.take().expect("child present until drop");
        child.wait_with_output().expect("waiting for child")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Connects `a` and `b` with a veth pair: `a_addr` / `b_addr` (with prefix, from 198.18.0.0/15)
/// on the two ends, both up. Returns the interface names (a's end, b's end). The pair goes
/// away with either namespace.
pub fn veth(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) -> (String, String) {
    let (ea, eb) = (unique("v"), unique("v"));
    // Created inside `a`, so it never exists in the root namespace even for an instant.
    a.exec_ok("ip", &["link", "add", &ea, "type", "veth", "peer", "name", &eb, "netns", b.name()]);
    a.exec_ok("ip", &["addr", "add", a_addr, "dev", &ea]);
    a.exec_ok("ip", &["link", "set", &ea, "up"]);
    b.exec_ok("ip", &["addr", "add", b_addr, "dev", &eb]);
    b.exec_ok("ip", &["link", "set", &eb, "up"]);
    (ea, eb)
}

/// A router namespace: forwards IPv4 and can masquerade (NAT) what leaves an interface, for
/// tests of nodes behind NAT.
#[derive(Debug)]
pub struct Router {
    pub ns: Netns,
}

impl Router {
    pub fn new() -> Router {
        let ns = Netns::new("r");
        ns.exec_ok("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]);
        Router { ns }
    }

    /// Source-NATs everything leaving `out_if` to that interface's address (`nft` masquerade),
    /// and drops unsolicited traffic arriving there for the router itself, as NAT gateways do.
    /// (Without that drop, the first unsolicited datagram from a peer leaves a conntrack entry
    /// for the router that then steals the reply tuple a later outbound mapping needs: a Linux
    /// quirk no real gateway exposes, since a packet dropped before conntrack confirmation
    /// leaves no entry.)
    pub fn masquerade(&self, out_if: &str) {
        self.ns.exec_ok("nft", &["add", "table", "ip", "nat"]);
        self.ns.exec_ok("nft", &["add chain ip nat postrouting { type nat hook postrouting priority srcnat ; }"]);
        self.ns.exec_ok("nft", &["add", "rule", "ip", "nat", "postrouting", "oifname", out_if, "masquerade"]);
        self.ns.exec_ok("nft", &["add", "table", "ip", "wan"]);
        self.ns.exec_ok("nft", &["add chain ip wan input { type filter hook input priority 0 ; }"]);
        self.ns.exec_ok("nft", &["add", "rule", "ip", "wan", "input", "iifname", out_if, "ct", "state", "new", "drop"]);
    }
}

/// Adds a default route in `ns` via `gateway` (an underlay address of a router).
pub fn default_route(ns: &Netns, gateway: &str) {
    ns.exec_ok("ip", &["route", "add", "default", "via", gateway]);
}
