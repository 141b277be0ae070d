//! The operator's commands against real daemons in namespaces: the default control socket is
//! per network namespace, `status`/`members`/`reload` find their daemon through a broken config,
//! closed pipes end quietly, a silent socket times out in words, reload names what needs a
//! restart, and `members` refuses an unknown group and draws the mesh.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::daemon::{BIN, Pki};
use support::{ChildGuard, Netns, unique, wait_until};

/// A node config with no `control.socket`: the socket is the default for its `tun.dev`.
fn config(dir: &Path, pki: &Pki, name: &str, tun: &str, port: u16) -> std::path::PathBuf {
    let (crt, key) = pki.sign(name, "100.64.0.21/10", "ops,nomad-server");
    let text = format!(
        "pki:\n  ca: {}\n  cert: {}\n  key: {}\nlisten:\n  host: 0.0.0.0\n  port: {port}\ntun:\n  dev: {tun}\n\
         firewall:\n  outbound:\n    - port: any\n      proto: any\n      host: any\n  inbound:\n    - port: any\n      proto: icmp\n      host: any\n",
        pki.ca_crt().display(),
        crt.display(),
        key.display()
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn in_ns(ns: &Netns, args: &[&str]) -> Output {
    ns.command(BIN, args).output().expect("running cos-mesh")
}

fn start(ns: &Netns, config: &Path) -> ChildGuard {
    let c = config.to_str().unwrap();
    let daemon = ns.spawn(BIN, &["run", "-c", c]);
    let up = wait_until(Duration::from_secs(10), || in_ns(ns, &["status", "-c", c]).status.success());
    assert!(up, "daemon in {} did not answer status", ns.name());
    daemon
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn one_config_runs_in_two_namespaces_and_each_answers_from_its_own() {
    let pki = Pki::new("ns-ca");
    let dir = tempfile::tempdir().unwrap();
    let dev = unique("t");
    let cfg = config(dir.path(), &pki, "twin", &dev, 4242);
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    let _da = start(&a, &cfg);
    let _db = start(&b, &cfg); // the same tun.dev, the same default socket name: no collision
    let c = cfg.to_str().unwrap();
    for ns in [&a, &b] {
        let out = in_ns(ns, &["status", "--json", "-c", c]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["node"]["name"], "twin");
        assert_eq!(v["schema_version"], 1);
    }
    // Root only: the abstract socket has no file mode, the daemon checks the caller's uid.
    // (nobody runs a copy of the binary from a directory it may enter, and names the socket
    // directly: the checkout and the config may sit in directories only root can read.)
    let open = tempfile::tempdir().unwrap();
    let bin = open.path().join("cos-mesh");
    std::fs::copy(BIN, &bin).unwrap();
    for (p, mode) in [(open.path(), 0o755), (bin.as_path(), 0o755)] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }
    let socket = format!("@cos-mesh/{dev}");
    let out = a
        .command("runuser", &["-u", "nobody", "--", bin.to_str().unwrap(), "status", "--socket", &socket])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("answers root only"), "{}", text(&out.stderr));
    // The root namespace has no daemon on that socket.
    let out = Command::new(BIN).args(["status", "-c", c]).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("in this network namespace"), "{}", text(&out.stderr));

    // A config broken since the start does not hide the running daemon.
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{good}lighthouse:\n  am_lighthouse: \"yes\"\n  bogus: [\n")).unwrap();
    let out = in_ns(&a, &["status", "-c", c]);
    assert!(out.status.success(), "status through a broken config: {}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("node twin 100.64.0.21"), "{}", text(&out.stdout));
    assert!(!text(&out.stdout).contains('{'), "no raw JSON in the text status: {}", text(&out.stdout));
}

/// Runs `cos-mesh args` with its stdout a pipe whose reader is already gone.
fn into_closed_pipe(ns: &Netns, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = ns.command(BIN, args);
    cmd.stdout(Stdio::from(writer)).stderr(Stdio::piped());
    cmd.spawn().unwrap().wait_with_output().unwrap()
}

#[test]
fn a_closed_pipe_ends_every_command_quietly() {
    let pki = Pki::new("pipe-ca");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &pki, "piped", &unique("t"), 4242);
    let ns = Netns::new("p");
    let _d = start(&ns, &cfg);
    let c = cfg.to_str().unwrap();
    let commands: [&[&str]; 5] = [
        &["status", "-c", c],
        &["members", "-c", c],
        &["status", "--json", "-c", c],
        &["completions", "bash"],
        &["man"],
    ];
    for args in commands {
        let out = into_closed_pipe(&ns, args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out.stderr));
        assert!(out.stderr.is_empty(), "{args:?}: {}", text(&out.stderr));
        // And through `| head -1`, repeated: whichever side wins the race, exit 0, silence.
        for _ in 0..10 {
            let line = format!("set -o pipefail; {BIN} {} | head -1 >/dev/null", args.join(" "));
            let out = ns.command("bash", &["-c", &line]).output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{line}: {}", text(&out.stderr));
            assert!(out.stderr.is_empty(), "{line}: {}", text(&out.stderr));
        }
    }
}

#[test]
fn a_silent_socket_times_out_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent.sock");
    // Listening, never accepting: connect succeeds, no answer ever comes.
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let t = Instant::now();
    let out = Command::new(BIN).args(["status", "--socket", path.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("the daemon did not answer within 5 s"), "{}", text(&out.stderr));
    assert!(t.elapsed() < Duration::from_secs(8), "took {:?}", t.elapsed());
}

#[test]
fn reload_names_what_needs_a_restart_and_members_answers_the_questions() {
    let pki = Pki::new("reload-ca");
    let dir = tempfile::tempdir().unwrap();
    let tun = unique("t");
    let cfg = config(dir.path(), &pki, "reloader", &tun, 4242);
    let ns = Netns::new("r");
    let mut daemon = start(&ns, &cfg);
    let c = cfg.to_str().unwrap();

    // members: the table, a known group, an unknown group, the picture.
    let out = in_ns(&ns, &["members", "-c", c]);
    assert!(text(&out.stdout).contains("LAST SEEN"), "{}", text(&out.stdout));
    let out = in_ns(&ns, &["members", "-c", c, "--group", "nomad-server", "--format", "addrs"]);
    assert_eq!(text(&out.stdout).trim(), "100.64.0.21");
    let out = in_ns(&ns, &["members", "-c", c, "--group", "nomad-sever"]);
    assert_eq!(out.status.code(), Some(1), "an unknown group is an error");
    assert!(text(&out.stderr).contains("no member carries group \"nomad-sever\""), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("nomad-server"), "the known groups are listed: {}", text(&out.stderr));
    let out = in_ns(&ns, &["members", "-c", c, "--format", "dot"]);
    let dot = text(&out.stdout);
    assert!(dot.starts_with("graph mesh {") && dot.contains("\"100.64.0.21\"") && dot.trim_end().ends_with('}'));
    // Graphviz draws it (Debian: graphviz).
    let mut render = Command::new("dot").arg("-Tsvg").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut render.stdin.take().unwrap(), dot.as_bytes()).unwrap();
    let svg = render.wait_with_output().unwrap();
    assert!(svg.status.success() && text(&svg.stdout).contains("<svg"), "dot refused:\n{dot}");

    // tun.dev and listen.port changed: reload applies the rest, exits 0, and names both.
    let changed =
        std::fs::read_to_string(&cfg).unwrap().replace(&tun, &format!("{tun}x")).replace("port: 4242", "port: 4243");
    std::fs::write(&cfg, changed).unwrap();
    let socket = format!("@cos-mesh/{tun}"); // the running daemon's; -c would now name the new one
    let out = in_ns(&ns, &["reload", "--socket", &socket]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("not applied until cos-mesh restarts"), "{err}");
    assert!(err.contains(&format!("tun.dev ({tun} → {tun}x)")) && err.contains("listen.port (4242 → 4243)"), "{err}");
    // And the daemon's log says the same.
    let _ = daemon.child().kill();
    let log = text(&daemon.wait().stderr);
    assert!(log.contains("WARN") && log.contains("not applied until cos-mesh restarts: tun.dev"), "{log}");
}

#[test]
fn status_says_why_a_lighthouse_is_not_reachable() {
    let pki = Pki::new("lh-ca");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &pki, "lonely", &unique("t"), 4242);
    // A lighthouse nobody answers for, at an address this namespace cannot even route to.
    let mut text_cfg = std::fs::read_to_string(&cfg).unwrap();
    text_cfg
        .push_str("static_host_map:\n  \"100.64.0.1\": [\"198.18.0.99:4242\"]\nlighthouse:\n  hosts: [100.64.0.1]\n");
    std::fs::write(&cfg, text_cfg).unwrap();
    let ns = Netns::new("l");
    let _d = start(&ns, &cfg);
    let out = in_ns(&ns, &["status", "-c", cfg.to_str().unwrap()]);
    let status = text(&out.stdout);
    let line = status.lines().find(|l| l.starts_with("lighthouse 100.64.0.1")).unwrap_or_else(|| panic!("{status}"));
    assert!(line.contains("NOT reachable"), "{line}");
    assert!(line.contains("no handshake has completed") && line.contains("tried at 198.18.0.99:4242"), "{line}");
}
