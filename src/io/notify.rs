//! systemd's notify protocol (`Type=notify`): one datagram per state change to the socket named
//! by `$NOTIFY_SOCKET`. Without that variable (not under systemd) every call does nothing.
//!
//! Written by hand because the `sd-notify` crate (0.5.0, the latest) does not send to an
//! abstract `NOTIFY_SOCKET` (`@name`). The daemon sends `READY=1` only once the TUN device
//! carries its address and the UDP socket is bound, because Nomad reads the interface once at
//! start; a reload is `RELOADING=1` + `MONOTONIC_USEC` … `READY=1`.

#![forbid(unsafe_code)]

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::Duration;

/// Where notifications go; `None` when not started by systemd.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Target>,
    watchdog: Option<Duration>,
}

#[derive(Debug, Clone)]
enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` once. The variables are left
    /// set (child processes are not ours to notify for; `NotifyAccess=main` ignores them).
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|s| Self::parse_target(s.as_encoded_bytes()));
        let pid_ok = match std::env::var("WATCHDOG_PID") {
            Ok(pid) => pid.trim().parse::<u32>().ok() == Some(std::process::id()),
            Err(_) => true,
        };
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&us| us > 0 && pid_ok)
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    /// Notifies the socket at `path` (or `@abstract`), for tests and explicit setups.
    pub fn to_socket(path: &str) -> Notifier {
        Notifier { target: Self::parse_target(path.as_bytes()), watchdog: None }
    }

    fn parse_target(s: &[u8]) -> Option<Target> {
        match s {
            [] => None,
            [b'@', name @ ..] => Some(Target::Abstract(name.to_vec())),
            [b'/', ..] => Some(Target::Path(PathBuf::from(String::from_utf8_lossy(s).into_owned()))),
            _ => None, // systemd only uses absolute paths and abstract names (vsock is not supported)
        }
    }

    /// Whether systemd is listening.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// `READY=1` with a human-readable `STATUS=` (shown by `systemctl status`).
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.send(&format!("READY=1\nSTATUS={}\n", one_line(status)))
    }

    /// `RELOADING=1` with the `MONOTONIC_USEC` systemd needs to match the reload to the request;
    /// follow with [`Notifier::ready`] when the reload is done (or failed and the old config runs).
    pub fn reloading(&self) -> io::Result<()> {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}\n", monotonic_usec()))
    }

    /// `STOPPING=1` at the start of a clean shutdown.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1\n")
    }

    /// `WATCHDOG=1`, the keep-alive; send it every [`Notifier::watchdog_interval`].
    pub fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1\n")
    }

    /// `STATUS=` alone.
    pub fn status(&self, status: &str) -> io::Result<()> {
        self.send(&format!("STATUS={}\n", one_line(status)))
    }

    /// How often to send [`Notifier::watchdog`]: half of `WatchdogSec=` as systemd recommends;
    /// `None` when the watchdog is off or meant for another process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    fn send(&self, msg: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let sock = UnixDatagram::unbound()?;
        match target {
            Target::Path(p) => sock.send_to(msg.as_bytes(), p)?,
            Target::Abstract(name) => sock.send_to_addr(msg.as_bytes(), &SocketAddr::from_abstract_name(name)?)?,
        };
        Ok(())
    }
}

/// A status must not inject further `KEY=value` lines.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares `MONOTONIC_USEC` with.
fn monotonic_usec() -> u64 {
    let ts =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_arrive_in_systemd_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::to_socket(path.to_str().unwrap());
        assert!(n.enabled());
        let mut buf = [0u8; 256];
        let mut recv = || {
            let len = listener.recv(&mut buf).unwrap();
            String::from_utf8(buf[..len].to_vec()).unwrap()
        };
        n.ready("serving 100.64.0.1 on nebula1\nINJECT=1").unwrap();
        assert_eq!(recv(), "READY=1\nSTATUS=serving 100.64.0.1 on nebula1 INJECT=1\n");
        let before = monotonic_usec();
        n.reloading().unwrap();
        let msg = recv();
        let usec: u64 = msg.strip_prefix("RELOADING=1\nMONOTONIC_USEC=").unwrap().trim_end().parse().unwrap();
        assert!(usec >= before && usec <= monotonic_usec());
        n.stopping().unwrap();
        assert_eq!(recv(), "STOPPING=1\n");
        n.watchdog().unwrap();
        assert_eq!(recv(), "WATCHDOG=1\n");
    }

    #[test]
    fn abstract_sockets_work_and_no_socket_means_no_op() {
        let name = format!("cos-mesh-test-{}", std::process::id());
        let listener = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        Notifier::to_socket(&format!("@{name}")).stopping().unwrap();
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1\n");

        let off = Notifier::default();
        assert!(!off.enabled());
        off.ready("x").unwrap();
        assert_eq!(off.watchdog_interval(), None);
    }
}
