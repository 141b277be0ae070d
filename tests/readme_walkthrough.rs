//! README's "Set up a real mesh", run as written: every command block and config file of the
//! section is taken from README.md and run on the host its `<!-- walkthrough: HOST -->` marker
//! names, one network namespace per host (the workstation runs in a temp directory without a
//! network). So the README stays true.
//!
//! What the test maps, and only this: `/etc/cos-mesh` to a per-host temp directory;
//! `lighthouse.example.net` to the lighthouse's underlay address; `cos-mesh` to the binary
//! under test (through PATH). Systemd is not available here: `systemctl enable --now cos-mesh`
//! starts `cos-mesh run -c /etc/cos-mesh/config.yaml` in the host's namespace, as the unit does;
//! the other systemd lines (installing the unit, daemon-reload) are skipped. The README's prose
//! steps are done by the test: each `host.pub` goes to the workstation as `<host>.pub`; `ca.crt`,
//! `<host>.crt` and the repository's `firewall/` go back to each host.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::daemon::{BIN, Segment};
use support::{Netns, wait_until};

const HOSTS: [(&str, &str); 3] =
    [("lighthouse", "198.18.0.1"), ("server-1", "198.18.0.11"), ("client-1", "198.18.0.21")];

/// A block of the walkthrough: where it runs, and what it is.
#[derive(Debug)]
struct Block {
    marker: String,
    lang: String,
    body: String,
}

/// The fenced blocks of README's "Set up a real mesh", each with its marker. A block without a
/// marker fails the test: every command in the walkthrough is either run or says why not.
fn walkthrough() -> Vec<Block> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme.find("## Set up a real mesh").expect("README has the walkthrough");
    let end = readme[start..].find("\n## Operating it").map(|e| start + e).unwrap_or(readme.len());
    let mut blocks = Vec::new();
    let mut marker: Option<String> = None;
    let mut lines = readme[start..end].lines();
    while let Some(line) = lines.next() {
        if let Some(m) = line.trim().strip_prefix("<!-- walkthrough:").and_then(|m| m.strip_suffix("-->")) {
            marker = Some(m.trim().to_string());
        } else if let Some(lang) = line.strip_prefix("```")
            && !lang.is_empty()
        {
            let body: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
            let marker = marker
                .take()
                .unwrap_or_else(|| panic!("README block without a walkthrough marker:\n{}", body.join("\n")));
            blocks.push(Block { marker, lang: lang.to_string(), body: body.join("\n") });
        }
    }
    blocks
}

struct Host {
    name: &'static str,
    underlay: &'static str,
    ns: Netns,
    /// The host's root: `etc/cos-mesh` and `home` (the working directory) live here.
    root: PathBuf,
    daemon: Option<Child>,
}

impl Host {
    fn etc(&self) -> PathBuf {
        self.root.join("etc/cos-mesh")
    }
    fn home(&self) -> PathBuf {
        self.root.join("home")
    }
    fn map(&self, text: &str, lighthouse: &str) -> String {
        text.replace("/etc/cos-mesh", &self.etc().to_string_lossy()).replace("lighthouse.example.net", lighthouse)
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("daemon.log")).unwrap_or_default()
    }
    fn status(&self) -> Option<serde_json::Value> {
        let cfg = self.etc().join("config.yaml");
        let out = self.ns.command(BIN, &["status", "--json", "-c", &cfg.to_string_lossy()]).output().ok()?;
        out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- {} daemon log ---\n{}", self.name, self.log());
        }
    }
}

/// Runs one shell line on a host (or the workstation when `ns` is none), from `cwd`.
fn sh(ns: Option<&Netns>, cwd: &Path, line: &str) -> String {
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let script = format!("set -e -o pipefail\n{line}");
    let mut cmd = match ns {
        Some(ns) => ns.command("env", &[&format!("PATH={path}"), "bash", "-c", &script]),
        None => {
            let mut c = Command::new("bash");
            c.args(["-c", &script]).env("PATH", &path);
            c
        }
    };
    let out = cmd.current_dir(cwd).output().expect("running bash");
    assert!(
        out.status.success(),
        "README line failed: {line}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let blocks = walkthrough();
    assert!(blocks.len() >= 8, "the walkthrough lost its blocks: {blocks:?}");
    let temp = tempfile::tempdir().unwrap();
    let workstation = temp.path().join("workstation");
    std::fs::create_dir_all(&workstation).unwrap();
    let seg = Segment::new();
    let mut hosts: Vec<Host> = HOSTS
        .iter()
        .map(|(name, underlay)| {
            let ns = Netns::new("w");
            seg.attach(&ns, &format!("{underlay}/24"));
            let root = temp.path().join(name);
            std::fs::create_dir_all(root.join("home")).unwrap();
            // A fresh host: /etc exists, /etc/cos-mesh does not.
            std::fs::create_dir_all(root.join("etc")).unwrap();
            Host { name, underlay, ns, root, daemon: None }
        })
        .collect();
    let lighthouse = hosts[0].underlay;
    let mut ran = Vec::new();

    for block in &blocks {
        let (target, file) = block.marker.split_once(' ').unwrap_or((block.marker.as_str(), ""));
        if target == "not" {
            continue; // "not run (why)": the marker says why
        }
        if block.lang == "yaml" {
            let host = hosts.iter().find(|h| h.name == target).unwrap_or_else(|| panic!("unknown host {target}"));
            let path = PathBuf::from(host.map(file, lighthouse));
            std::fs::write(&path, host.map(&block.body, lighthouse)).unwrap();
            continue;
        }
        assert_eq!(block.lang, "sh", "{block:?}");
        if target == "workstation" {
            for line in block.body.lines() {
                sh(None, &workstation, line);
                ran.push(format!("workstation: {line}"));
            }
            if block.body.contains("cos-mesh sign") {
                // Prose: ca.crt and each certificate back to its host, with the rule sets.
                for h in &hosts {
                    std::fs::copy(workstation.join("ca.crt"), h.etc().join("ca.crt")).unwrap();
                    std::fs::copy(workstation.join(format!("{}.crt", h.name)), h.etc().join("host.crt")).unwrap();
                    let fw = h.etc().join("firewall");
                    std::fs::create_dir_all(&fw).unwrap();
                    for f in ["base.yaml", "nomad-server.yaml", "nomad-client.yaml"] {
                        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("firewall").join(f);
                        std::fs::copy(repo, fw.join(f)).unwrap();
                    }
                }
            }
            continue;
        }
        for h in hosts.iter_mut().filter(|h| target == "every" || h.name == target) {
            // A host reads its lighthouse's answer before going on (what `status` shows).
            if h.daemon.is_some() && h.name != "lighthouse" {
                let lh_up = wait_until(Duration::from_secs(20), || {
                    h.status()
                        .is_some_and(|s| s["lighthouses"].as_array().is_some_and(|l| l.iter().all(|x| x["up"] == true)))
                });
                assert!(lh_up, "{}: the lighthouse never became reachable", h.name);
            }
            for line in block.body.lines() {
                let line = h.map(line, lighthouse);
                if line.contains("systemctl enable --now cos-mesh") {
                    let log = std::fs::File::create(h.root.join("daemon.log")).unwrap();
                    let cfg = h.etc().join("config.yaml");
                    let child =
                        h.ns.command(BIN, &["run", "-c", &cfg.to_string_lossy()])
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(Stdio::from(log))
                            .spawn()
                            .unwrap();
                    h.daemon = Some(child);
                    let up = wait_until(Duration::from_secs(10), || h.status().is_some());
                    assert!(up, "{}: the daemon did not start:\n{}", h.name, h.log());
                    ran.push(format!("{}: (cos-mesh run, as the unit does)", h.name));
                    continue;
                }
                if line.contains("systemctl") || line.contains("/etc/systemd") {
                    continue; // installing the unit: no systemd here
                }
                let out = sh(Some(&h.ns), &h.home(), &line);
                if line.contains("cos-mesh members --group nomad-server") {
                    assert_eq!(out.trim(), "100.64.0.11", "{}: {line}", h.name);
                }
                ran.push(format!("{}: {line}", h.name));
            }
            if block.body.contains("cos-mesh keygen") {
                // Prose: the public key to the workstation as <host>.pub.
                std::fs::copy(h.home().join("host.pub"), workstation.join(format!("{}.pub", h.name))).unwrap();
                let mode = std::fs::metadata(h.etc().join("host.key")).unwrap();
                assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);
            }
        }
    }
    // The mesh the README promises: the client reaches the server over the overlay.
    for needle in ["client-1: ping -c 1 100.64.0.11", "server-1: cos-mesh status", "lighthouse: cos-mesh check"] {
        assert!(ran.iter().any(|r| r.starts_with(needle)), "{needle} did not run: {ran:#?}");
    }
}
