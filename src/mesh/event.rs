//! What the node tells its operator: typed events, each with a level and a sentence that names
//! the peer (name and overlay IP), says what happened and what the node does about it.
//!
//! Events stay typed until they are printed (the daemon logs them with [`Event::level`] and
//! `Display`; tests match on the variants). A normal thing (a tunnel up, an idle peer
//! forgotten) is `Info`; something an operator should look at (a refused certificate, a peer
//! that stopped answering, a direct path that carries nothing) is `Warn`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::cert::pool::VerifyError;

use super::peer::Path;

/// How loud an event is; the daemon maps it to its log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
}

/// Things worth logging or showing in `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A WireGuard session with the peer is up (first time, or again after a restart).
    PeerUp { name: String, vpn_ip: IpAddr, path: Path },
    /// The peer was removed.
    PeerRemoved { name: String, vpn_ip: IpAddr, reason: RemoveReason },
    /// The peer's path changed (roaming, relay to direct).
    Roamed { name: String, vpn_ip: IpAddr, from: Path, to: Path },
    /// A certificate was refused.
    CertRejected { source: CertSource, reason: CertRefusal },
    /// No answer from a peer we have no certificate for, after all Hello retries; the
    /// packets that waited are dropped.
    HandshakeTimedOut { vpn_ip: IpAddr },
    /// A lighthouse acknowledged our address report.
    Registered { lighthouse: IpAddr },
    /// A peer's session ended without the peer being removed.
    SessionEnded { name: String, vpn_ip: IpAddr, cause: SessionEnd },
    /// The direct path to a peer stopped carrying our datagrams (a probe went unanswered);
    /// traffic moves to `now_via` (a relay) if there is one.
    DirectPathLost { name: String, vpn_ip: IpAddr, path: SocketAddr, now_via: Option<Path> },
}

/// Why a peer was removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveReason {
    /// No session and no traffic for the idle time; the peer is met again on its next packet.
    Idle { minutes: u64 },
    /// Its certificate no longer verifies (expiry, blocklist, CA change).
    CertInvalid(VerifyError),
    /// A new certificate and key arrived for the same overlay IP (a re-provisioned host).
    Replaced,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// No new keys for WireGuard's limit (9 minutes) because nothing was sent: a normal close.
    Idle,
    /// Handshakes went unanswered for WireGuard's 90 s; traffic waits for a new handshake.
    NoAnswer,
}

/// Where a refused certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertSource {
    /// A Hello from this underlay address.
    Direct(SocketAddr),
    /// A Hello relayed by `relay`, claiming to come from `peer`.
    Relay { relay: IpAddr, peer: IpAddr },
    /// A lighthouse's answer about `about`, or its member list (`about: None`).
    Lighthouse { lighthouse: IpAddr, about: Option<IpAddr> },
}

impl CertSource {
    /// The source a datagram came over.
    pub fn of_path(path: Path) -> Self {
        match path {
            Path::Direct(a) => CertSource::Direct(a),
            Path::Relay { relay, peer } => CertSource::Relay { relay, peer },
        }
    }
}

/// Why a certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertRefusal {
    /// The bytes are not a certificate.
    Malformed(String),
    /// It does not verify against the CA pool.
    Invalid(VerifyError),
    /// It names our own overlay IP or key (a copy of ours, or a clash).
    ClaimsOurIdentity {
        name: String,
    },
    NoOverlayIp {
        name: String,
    },
    /// We asked for `expected` and got someone else's certificate.
    WrongPeer {
        expected: IpAddr,
        name: String,
        got: Option<IpAddr>,
    },
}

impl Event {
    pub fn level(&self) -> Level {
        match self {
            Event::Registered { .. } => Level::Debug,
            Event::PeerUp { .. } | Event::Roamed { .. } | Event::HandshakeTimedOut { .. } => Level::Info,
            Event::PeerRemoved { reason, .. } => match reason {
                RemoveReason::Idle { .. } | RemoveReason::Replaced => Level::Info,
                RemoveReason::CertInvalid(_) => Level::Warn,
            },
            Event::SessionEnded { cause: SessionEnd::Idle, .. } => Level::Info,
            Event::SessionEnded { cause: SessionEnd::NoAnswer, .. }
            | Event::CertRejected { .. }
            | Event::DirectPathLost { .. } => Level::Warn,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::PeerUp { name, vpn_ip, path } => write!(f, "tunnel up: {name} ({vpn_ip}) {}", PathWords(*path)),
            Event::PeerRemoved { name, vpn_ip, reason } => write!(f, "peer {name} ({vpn_ip}) removed: {reason}"),
            Event::Roamed { name, vpn_ip, from, to } => {
                write!(f, "peer {name} ({vpn_ip}) moved from {} to {}", PathWords(*from), PathWords(*to))
            }
            Event::CertRejected { source, reason } => {
                write!(f, "refused a certificate {source}: {reason}; no tunnel is made with it")
            }
            Event::HandshakeTimedOut { vpn_ip } => write!(
                f,
                "no answer from {vpn_ip} (no certificate received after every retry): the packets waiting for it are dropped; the next packet tries again"
            ),
            Event::Registered { lighthouse } => write!(f, "registered with lighthouse {lighthouse}"),
            Event::SessionEnded { name, vpn_ip, cause: SessionEnd::Idle } => write!(
                f,
                "tunnel to {name} ({vpn_ip}) closed after 9 minutes without traffic; the next packet opens it again"
            ),
            Event::SessionEnded { name, vpn_ip, cause: SessionEnd::NoAnswer } => write!(
                f,
                "tunnel to {name} ({vpn_ip}) closed: its handshakes went unanswered for 90 s; the next packet tries again"
            ),
            Event::DirectPathLost { name, vpn_ip, path, now_via } => {
                write!(f, "direct path to {name} ({vpn_ip}) at {path} stopped carrying our packets")?;
                match now_via {
                    Some(p) => write!(f, "; traffic moves {}", PathWords(*p)),
                    None => write!(f, "; no relay serves it, new handshakes try every path"),
                }
            }
        }
    }
}

impl fmt::Display for RemoveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoveReason::Idle { minutes } => {
                write!(f, "idle: no traffic for {minutes} minutes, forgotten until its next packet (a normal close)")
            }
            RemoveReason::CertInvalid(e) => write!(f, "{e}; its tunnel is closed"),
            RemoveReason::Replaced => f.write_str("replaced by a new certificate and key for the same overlay IP"),
        }
    }
}

impl fmt::Display for CertSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertSource::Direct(a) => write!(f, "in a Hello from {a}"),
            CertSource::Relay { relay, peer } => write!(f, "in a Hello relayed by {relay} for {peer}"),
            CertSource::Lighthouse { lighthouse, about: Some(ip) } => {
                write!(f, "in lighthouse {lighthouse}'s answer about {ip}")
            }
            CertSource::Lighthouse { lighthouse, about: None } => write!(f, "in lighthouse {lighthouse}'s member list"),
        }
    }
}

impl fmt::Display for CertRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertRefusal::Malformed(e) => write!(f, "not a certificate: {e}"),
            CertRefusal::Invalid(e) => write!(f, "{e}"),
            CertRefusal::ClaimsOurIdentity { name } => {
                write!(f, "certificate {name} claims our own overlay IP or key")
            }
            CertRefusal::NoOverlayIp { name } => write!(f, "certificate {name} has no overlay IP"),
            CertRefusal::WrongPeer { expected, name, got } => match got {
                Some(ip) => write!(f, "expected the certificate of {expected}, got {name} for {ip}"),
                None => write!(f, "expected the certificate of {expected}, got {name} without an overlay IP"),
            },
        }
    }
}

/// A path in words: "directly at 198.18.0.2:4242" or "via relay 100.64.0.3".
struct PathWords(Path);

impl fmt::Display for PathWords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Path::Direct(a) => write!(f, "directly at {a}"),
            Path::Relay { relay, .. } => write!(f, "via relay {relay}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{CertRefusal, CertSource, Event, Level, Path, RemoveReason, SessionEnd};
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn normal_closes_are_info_and_problems_warn() {
        let ip = IpAddr::V4(Ipv4Addr::new(100, 64, 0, 2));
        let name = "b".to_string();
        let idle = Event::PeerRemoved { name: name.clone(), vpn_ip: ip, reason: RemoveReason::Idle { minutes: 10 } };
        assert_eq!(idle.level(), Level::Info);
        let ended = Event::SessionEnded { name: name.clone(), vpn_ip: ip, cause: SessionEnd::Idle };
        assert_eq!(ended.level(), Level::Info);
        let refused = Event::CertRejected {
            source: CertSource::Direct("198.18.0.9:4242".parse().unwrap()),
            reason: CertRefusal::NoOverlayIp { name: "x".into() },
        };
        assert_eq!(refused.level(), Level::Warn);
        assert_eq!(
            refused.to_string(),
            "refused a certificate in a Hello from 198.18.0.9:4242: certificate x has no overlay IP; no tunnel is made with it"
        );
        let up = Event::PeerUp {
            name,
            vpn_ip: ip,
            path: Path::Relay { relay: IpAddr::V4(Ipv4Addr::new(100, 64, 0, 3)), peer: ip },
        };
        assert_eq!(up.to_string(), "tunnel up: b (100.64.0.2) via relay 100.64.0.3");
    }
}
