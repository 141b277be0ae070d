//! The control socket: a root-only Unix socket (abstract by default, so per network namespace) on which `cos-mesh status`, `members` and
//! `reload` ask the running daemon (and `ping`, answered when the ping ends). One request line in, one JSON document out.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use tracing::debug;

pub use crate::config::ControlAddr;

/// Requests the daemon answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Status,
    Members,
    Reload,
    /// `cos-mesh ping`: one ping, answered when it ends (`ping IP PROBE TIMEOUT_MS`).
    Ping(super::ping::PingRequest),
}

impl Request {
    /// The request line sent to the daemon.
    pub fn line(self) -> String {
        match self {
            Request::Status => "status".into(),
            Request::Members => "members".into(),
            Request::Reload => "reload".into(),
            Request::Ping(p) => p.to_line(),
        }
    }

    fn parse(line: &str) -> Option<Request> {
        match line.trim() {
            "status" => Some(Request::Status),
            "members" => Some(Request::Members),
            "reload" => Some(Request::Reload),
            other => super::ping::PingRequest::parse(other).map(Request::Ping),
        }
    }
}

pub struct ControlServer {
    listener: UnixListener,
    /// The socket file to remove on drop (none for an abstract socket).
    file: Option<PathBuf>,
    /// Bound once at start: the daemon's start time, for `status`.
    started: super::report::Started,
}

/// How long the CLI waits for the daemon's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

impl ControlServer {
    /// Binds the control socket. An abstract socket (the default) lives as long as the daemon
    /// and belongs to its network namespace. A socket file gets mode 0600, in a 0700 directory
    /// created if missing; a stale file left by a killed daemon is replaced, a live one (another
    /// daemon) is an error.
    pub fn bind(addr: &ControlAddr) -> Result<ControlServer> {
        let (listener, file) = match addr {
            ControlAddr::Abstract(name) => {
                let sa = SocketAddr::from_abstract_name(name.as_bytes())?;
                let l = UnixListener::bind_addr(&sa).map_err(|e| match e.kind() {
                    io::ErrorKind::AddrInUse => anyhow!(
                        "control socket {addr} is in use by another daemon in this network namespace \
                         (two daemons need different tun.dev or control.socket)"
                    ),
                    _ => anyhow!("binding control socket {addr}: {e}"),
                })?;
                (l, None)
            }
            ControlAddr::Path(path) => (bind_file(path)?, Some(path.clone())),
        };
        listener.set_nonblocking(true)?;
        Ok(ControlServer { listener, file, started: super::report::Started::now() })
    }

    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// When the daemon started (bound its control socket).
    pub fn started(&self) -> super::report::Started {
        self.started
    }

    /// Accepts one waiting client and reads its request (briefly blocking). Clients that are
    /// not root (nor the daemon's own user) are turned away: an abstract socket has no file
    /// mode to protect it.
    pub fn accept(&self) -> Option<(UnixStream, Option<Request>)> {
        let (stream, _) = self.listener.accept().ok()?;
        stream.set_nonblocking(false).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        stream.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
        let request = read_request(stream.try_clone().ok()?);
        // Checked after the request is read, so the refusal reaches the client (closing on
        // unread bytes would reset the connection instead).
        let cred = getsockopt(&stream, PeerCredentials).ok()?;
        if cred.uid() != 0 && cred.uid() != nix::unistd::geteuid().as_raw() {
            debug!("control socket: refused a client running as uid {}", cred.uid());
            reply(stream, &serde_json::json!({ "error": "the control socket answers root only (run with sudo)" }));
            return None;
        }
        Some((stream, request))
    }
}

fn bind_file(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating control.socket directory {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!("control.socket {} is in use by another running daemon", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale control.socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("binding control.socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if let Some(f) = &self.file {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Reads a client's request: one line of at most 256 bytes (a fuzz target's entry point too).
pub fn read_request(client: impl Read) -> Option<Request> {
    let mut line = String::new();
    BufReader::new(client).take(256).read_line(&mut line).ok()?;
    Request::parse(&line)
}

/// Client side: sends `req` and returns the daemon's JSON answer, waiting at most
/// [`ANSWER_TIMEOUT`].
pub fn ask(addr: impl Into<ControlAddr>, req: Request) -> Result<serde_json::Value> {
    ask_within(addr, req, ANSWER_TIMEOUT)
}

/// [`ask`], waiting at most `wait` for the answer (a ping takes as long as its timeout).
pub fn ask_within(addr: impl Into<ControlAddr>, req: Request, wait: Duration) -> Result<serde_json::Value> {
    let addr = addr.into();
    let connected = match &addr {
        ControlAddr::Path(p) => UnixStream::connect(p),
        ControlAddr::Abstract(name) => {
            SocketAddr::from_abstract_name(name.as_bytes()).and_then(|sa| UnixStream::connect_addr(&sa))
        }
    };
    let mut s = connected.with_context(|| {
        format!(
            "connecting to the daemon's control socket {addr} (is cos-mesh running? is it in this network namespace? \
             are you root?)"
        )
    })?;
    s.set_read_timeout(Some(wait))?;
    s.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    let timed_out = |e: &io::Error| matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut);
    let silent = || anyhow!("the daemon did not answer within {} s (control socket {addr})", wait.as_secs());
    writeln!(s, "{}", req.line())
        .map_err(|e| if timed_out(&e) { silent() } else { anyhow!("asking the daemon: {e}") })?;
    let mut text = String::new();
    if let Err(e) = io::Read::read_to_string(&mut s, &mut text) {
        return Err(if timed_out(&e) { silent() } else { anyhow!("reading the daemon's answer: {e}") });
    }
    if text.trim().is_empty() {
        bail!("the daemon closed the control connection without answering (control socket {addr})");
    }
    let v: serde_json::Value = serde_json::from_str(&text).context("the daemon's answer is not JSON")?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        bail!("{err}");
    }
    Ok(v)
}

pub fn reply(mut stream: UnixStream, v: &serde_json::Value) {
    let _ = writeln!(stream, "{v}");
}
