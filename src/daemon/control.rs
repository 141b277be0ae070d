//! The control socket: a root-only Unix socket on which `cos-mesh status`, `members` and
//! `reload` ask the running daemon. One request line in, one JSON document out.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Requests the daemon answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Status,
    Members,
    Reload,
}

impl Request {
    pub fn as_str(self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Members => "members",
            Request::Reload => "reload",
        }
    }

    fn parse(line: &str) -> Option<Request> {
        match line.trim() {
            "status" => Some(Request::Status),
            "members" => Some(Request::Members),
            "reload" => Some(Request::Reload),
            _ => None,
        }
    }
}

pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlServer {
    /// Binds the socket (mode 0600, in a 0700 directory it creates). A stale socket file left
    /// by a killed daemon is replaced; a live one (another daemon) is an error.
    pub fn bind(path: &Path) -> Result<ControlServer> {
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
        let listener =
            UnixListener::bind(path).with_context(|| format!("binding control.socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(ControlServer { listener, path: path.to_path_buf() })
    }

    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// Accepts one waiting client and reads its request (briefly blocking).
    pub fn accept(&self) -> Option<(UnixStream, Option<Request>)> {
        let (stream, _) = self.listener.accept().ok()?;
        stream.set_nonblocking(false).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        stream.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
        let request = read_request(stream.try_clone().ok()?);
        Some((stream, request))
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads a client's request: one line of at most 256 bytes (a fuzz target's entry point too).
pub fn read_request(client: impl Read) -> Option<Request> {
    let mut line = String::new();
    BufReader::new(client).take(256).read_line(&mut line).ok()?;
    Request::parse(&line)
}

/// Client side: sends `req` and returns the daemon's JSON answer.
pub fn ask(path: &Path, req: Request) -> Result<serde_json::Value> {
    let mut s = UnixStream::connect(path).with_context(|| {
        format!("connecting to the daemon's control socket {} (is cos-mesh running? are you root?)", path.display())
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    writeln!(s, "{}", req.as_str())?;
    let mut text = String::new();
    io::Read::read_to_string(&mut s, &mut text).context("reading the daemon's answer")?;
    let v: serde_json::Value = serde_json::from_str(&text).context("the daemon's answer is not JSON")?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        bail!("{err}");
    }
    Ok(v)
}

pub fn reply(mut stream: UnixStream, v: &serde_json::Value) {
    let _ = writeln!(stream, "{v}");
}
