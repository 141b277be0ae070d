//! Real `cos-mesh run` daemons in namespaces: a PKI made with the real CLI, a switched underlay
//! segment, and hosts whose daemon, config, control socket and log live in a temp directory.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{ChildGuard, Netns, unique, wait_until};

pub const BIN: &str = env!("CARGO_BIN_EXE_cos-mesh");

/// Runs the cos-mesh CLI; panics with its stderr unless it succeeds.
pub fn cli(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(BIN).args(args).current_dir(dir).output().expect("running cos-mesh");
    assert!(out.status.success(), "cos-mesh {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA in a temp directory, and certificates signed by it with the real CLI.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: String,
}

impl Pki {
    /// A CA over `100.64.0.0/10`, of the CLI's default version.
    pub fn new(name: &str) -> Pki {
        Pki::with_ca(name, &["--ips", "100.64.0.0/10"])
    }

    /// A version 2 CA over `networks` (comma-separated, IPv4 and IPv6).
    pub fn v2(name: &str, networks: &str) -> Pki {
        Pki::with_ca(name, &["--version", "2", "--networks", networks])
    }

    /// `cos-mesh ca --name <name> <args>` into a fresh temp directory.
    fn with_ca(name: &str, args: &[&str]) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = format!("{name}-ca");
        let (crt, key) = (format!("{ca}.crt"), format!("{ca}.key"));
        let mut all = vec!["ca", "--name", name];
        all.extend_from_slice(args);
        all.extend(["--out-crt", &crt, "--out-key", &key]);
        cli(dir.path(), &all);
        Pki { dir, ca }
    }

    pub fn ca_crt(&self) -> PathBuf {
        self.dir.path().join(format!("{}.crt", self.ca))
    }

    /// Signs `name` for `ip` (`100.64.0.x/10`) with `groups`; returns (cert, key) paths.
    pub fn sign(&self, name: &str, ip: &str, groups: &str) -> (PathBuf, PathBuf) {
        self.sign_with(name, "--ip", ip, groups)
    }

    /// Signs `name` for exactly `networks` (comma-separated, v4 and v6; a v2 certificate).
    pub fn sign_networks(&self, name: &str, networks: &str, groups: &str) -> (PathBuf, PathBuf) {
        self.sign_with(name, "--networks", networks, groups)
    }

    fn sign_with(&self, name: &str, flag: &str, networks: &str, groups: &str) -> (PathBuf, PathBuf) {
        let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
        let ca_crt = format!("{}.crt", self.ca);
        let ca_key = format!("{}.key", self.ca);
        let mut args = vec![
            "sign",
            "--ca-crt",
            &ca_crt,
            "--ca-key",
            &ca_key,
            "--name",
            name,
            flag,
            networks,
            "--out-crt",
            &crt,
            "--out-key",
            &key,
        ];
        if !groups.is_empty() {
            args.extend(["--groups", groups]);
        }
        cli(self.dir.path(), &args);
        (self.dir.path().join(crt), self.dir.path().join(key))
    }
}

/// A TCP connection from inside `ns` to `addr`: `Ok` when it completed, else how it failed.
pub fn connect(ns: &Netns, addr: &str) -> Result<(), std::io::ErrorKind> {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    ns.run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map(drop).map_err(|e| e.kind()))
}

/// An underlay segment: a namespace with a bridge that hosts attach to.
pub struct Segment {
    pub ns: Netns,
    bridge: String,
}

impl Segment {
    pub fn new() -> Segment {
        let ns = Netns::new("sw");
        let bridge = unique("br");
        ns.exec_ok("ip", &["link", "add", &bridge, "type", "bridge"]);
        ns.exec_ok("ip", &["link", "set", &bridge, "up"]);
        Segment { ns, bridge }
    }

    /// Connects `host` to the segment with `addr` (`198.18.0.x/24`); returns the host's interface.
    pub fn attach(&self, host: &Netns, addr: &str) -> String {
        let (sw_end, host_end) = (unique("v"), unique("v"));
        self.ns
            .exec_ok("ip", &["link", "add", &sw_end, "type", "veth", "peer", "name", &host_end, "netns", host.name()]);
        self.ns.exec_ok("ip", &["link", "set", &sw_end, "master", &self.bridge, "up"]);
        host.exec_ok("ip", &["addr", "add", addr, "dev", &host_end]);
        host.exec_ok("ip", &["link", "set", &host_end, "up"]);
        host_end
    }
}

/// A host running a real daemon.
pub struct Host {
    pub ns: Netns,
    pub name: String,
    pub vpn_ip: String,
    pub underlay: String,
    pub dir: tempfile::TempDir,
    pub tun: String,
    daemon: Option<ChildGuard>,
}

impl Host {
    /// A namespace on `seg` at `underlay` (`198.18.0.x`); nothing runs yet.
    pub fn new(seg: &Segment, name: &str, underlay: &str, vpn_ip: &str) -> Host {
        let ns = Netns::new("h");
        seg.attach(&ns, &format!("{underlay}/24"));
        Host::in_ns(ns, name, underlay, vpn_ip)
    }

    /// A host in a namespace the caller has wired up (behind a NAT router, say).
    pub fn in_ns(ns: Netns, name: &str, underlay: &str, vpn_ip: &str) -> Host {
        Host {
            ns,
            name: name.into(),
            vpn_ip: vpn_ip.into(),
            underlay: underlay.into(),
            dir: tempfile::tempdir().unwrap(),
            tun: unique("t"),
            daemon: None,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Writes the node config: PKI, static hosts, the firewall YAML given, our TUN and socket.
    pub fn configure(
        &self,
        ca: &Path,
        cert: &Path,
        key: &Path,
        static_hosts: &[(&str, &str)],
        firewall: &str,
        extra: &str,
    ) {
        let hosts: String =
            static_hosts.iter().map(|(vpn, under)| format!("  \"{vpn}\": [\"{under}:4242\"]\n")).collect();
        let text = format!(
            "pki:\n  ca: {}\n  cert: {}\n  key: {}\nstatic_host_map:\n{hosts}listen:\n  host: 0.0.0.0\n  port: 4242\ntun:\n  dev: {}\ncontrol:\n  socket: {}\nhandshakes:\n  try_interval: 100ms\nfirewall:\n{firewall}\n{extra}",
            ca.display(),
            cert.display(),
            key.display(),
            self.tun,
            self.socket().display()
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// Starts the daemon and waits until its control socket answers.
    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        let log = File::options().create(true).append(true).open(self.dir.path().join("daemon.log")).unwrap();
        let mut cmd = self.ns.command(BIN, &["run", "-c", &self.config_path().to_string_lossy()]);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(log)).env("COS_MESH_TEST", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.daemon = Some(ChildGuard(Some(cmd.spawn().expect("spawning cos-mesh run"))));
        let up = wait_until(Duration::from_secs(10), || self.try_status().is_some());
        assert!(up, "{}: daemon did not come up:\n{}", self.name, self.log());
    }

    /// SIGKILL, no clean shutdown.
    pub fn kill(&mut self) {
        if let Some(mut g) = self.daemon.take() {
            let _ = g.child().kill();
            let _ = g.child().wait();
        }
    }

    pub fn pid(&mut self) -> u32 {
        self.daemon.as_mut().expect("daemon running").child().id()
    }

    /// Sends a signal to the daemon (`ip netns exec` execs, so the child is the daemon itself).
    pub fn signal(&mut self, sig: i32) {
        let pid = self.pid() as i32;
        // SAFETY: kill(2) to our own child process.
        unsafe { libc::kill(pid, sig) };
    }

    pub fn try_status(&self) -> Option<serde_json::Value> {
        let out = std::process::Command::new(BIN)
            .args(["status", "--json", "--socket", &self.socket().to_string_lossy()])
            .output()
            .ok()?;
        out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
    }

    pub fn status(&self) -> serde_json::Value {
        self.try_status().unwrap_or_else(|| panic!("{}: no status:\n{}", self.name, self.log()))
    }

    /// Whether this host's daemon has an up session with the peer at `vpn_ip`.
    pub fn peer_up(&self, vpn_ip: &str) -> bool {
        self.try_status().is_some_and(|s| {
            s["peers"].as_array().into_iter().flatten().any(|p| p["vpn_ip"] == vpn_ip && p["up"] == true)
        })
    }

    /// `ping -c1` to an overlay address from this host; true if answered.
    pub fn ping(&self, ip: &str) -> bool {
        self.ns.exec("ping", &["-c", "1", "-W", "1", ip]).status.success()
    }

    /// `ping -6 -c1` to an IPv6 overlay address; true if answered.
    pub fn ping6(&self, ip: &str) -> bool {
        self.ns.exec("ping", &["-6", "-c", "1", "-W", "1", ip]).status.success()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- {} daemon log ---\n{}", self.name, self.log());
        }
    }
}

/// Sends `chunks` × 64 KiB of pseudo-random bytes from `from` to `to` and checks they arrive
/// intact (SHA-256 on both ends). Returns how long the transfer took.
pub fn checksummed_stream(from: &Host, to: &Host, addr: &'static str, chunks: usize) -> Duration {
    let listener = to.ns.run(move || TcpListener::bind(addr).unwrap());
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0usize;
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total += n;
        }
        (total, hasher.finalize().to_vec())
    });
    let started = Instant::now();
    let sent = from.ns.run(move || {
        let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(5)).unwrap();
        let mut hasher = Sha256::new();
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut chunk = vec![0u8; 1 << 16];
        for _ in 0..chunks {
            for b in chunk.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                b.copy_from_slice(&state.to_le_bytes()[..b.len()]);
            }
            hasher.update(&chunk);
            s.write_all(&chunk).unwrap();
        }
        hasher.finalize().to_vec()
    });
    let (total, received) = receiver.join().unwrap();
    assert_eq!(total, chunks << 16);
    assert_eq!(received, sent, "the stream arrived intact");
    started.elapsed()
}
