//! `cos-mesh ping` in the daemon: the request line, the pings waiting for their outcome (each
//! holds its client's connection, answered when the core says the ping ended), and the typed
//! report the CLI reads back.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::mesh::{Node, Path, PingFailure, PingId, PingOutcome, Policy, Probe, ProbeVerdict};
use crate::unixtime::UnixTime;

use super::datapath::lock;

/// Version of the JSON shape of [`PingReport`].
pub const SCHEMA_VERSION: u32 = 1;
/// The longest timeout a client may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
const WORD: &str = "ping";

/// One ping a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingRequest {
    pub target: IpAddr,
    pub probe: Probe,
    /// How long the ping (and the tunnel it may have to start) may take.
    pub timeout: Duration,
}

impl PingRequest {
    /// `ping 100.64.0.2 4647/tcp 5000` (the timeout in milliseconds; the target may be IPv6).
    pub fn to_line(self) -> String {
        format!("{WORD} {} {} {}", self.target, probe_word(self.probe), self.timeout.as_millis())
    }

    /// The request of a line [`PingRequest::to_line`] wrote; `None` for anything else.
    pub fn parse(line: &str) -> Option<PingRequest> {
        let mut words = line.split_ascii_whitespace();
        if words.next() != Some(WORD) {
            return None;
        }
        let target = words.next()?.parse().ok()?;
        let probe = words.next()?.parse().ok()?;
        let ms: u64 = words.next()?.parse().ok()?;
        let timeout = Duration::from_millis(ms);
        if words.next().is_some() || timeout.is_zero() || timeout > MAX_TIMEOUT {
            return None;
        }
        Some(PingRequest { target, probe, timeout })
    }
}

/// A probe in the words `--port` takes: `icmp`, `4647/tcp`, `53/udp`.
pub fn probe_word(p: Probe) -> String {
    match p {
        Probe::IcmpEcho => "icmp".into(),
        Probe::Tcp(port) => format!("{port}/tcp"),
        Probe::Udp(port) => format!("{port}/udp"),
    }
}

/// The outcome of one ping, as the daemon answers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PingReport {
    pub schema_version: u32,
    /// When the daemon answered (RFC 3339, UTC).
    pub generated_at: String,
    pub target: IpAddr,
    /// The peer's certificate name, when it answered.
    pub name: Option<String>,
    /// `icmp`, `4647/tcp`, `53/udp`.
    pub probe: String,
    /// Whether the peer answered (whatever its firewall said).
    pub answered: bool,
    /// The underlay address its answer came from, when the path is direct.
    pub direct: Option<SocketAddr>,
    /// The overlay IP of the relay its answer came through, when relayed.
    pub relay: Option<IpAddr>,
    pub relay_name: Option<String>,
    /// Round trip in milliseconds (microsecond precision), including any handshake the ping
    /// had to start.
    pub rtt_ms: Option<f64>,
    /// The peer's firewall on the probe coming in from us.
    pub far_firewall: Option<ProbeVerdict>,
    /// Our own firewall on the probe going out to the peer.
    pub our_firewall: Option<ProbeVerdict>,
    /// Why no answer came, in a word (`no_lighthouse`, `unknown_to_lighthouses`,
    /// `relay_unreachable`, `handshake_timed_out`, `no_ping_support`, `no_way_to_find`).
    pub failure: Option<String>,
    /// The same in words.
    pub problem: Option<String>,
}

impl PingReport {
    pub fn new(target: IpAddr, probe: Probe, outcome: &PingOutcome) -> PingReport {
        let mut r = PingReport {
            schema_version: SCHEMA_VERSION,
            generated_at: UnixTime::now().rfc3339(),
            target,
            name: None,
            probe: probe_word(probe),
            answered: false,
            direct: None,
            relay: None,
            relay_name: None,
            rtt_ms: None,
            far_firewall: None,
            our_firewall: None,
            failure: None,
            problem: None,
        };
        match outcome {
            PingOutcome::Answered(a) => {
                r.answered = true;
                r.name = Some(a.name.clone());
                match a.path {
                    Some(Path::Direct(addr)) => r.direct = Some(addr),
                    Some(Path::Relay { relay, .. }) => r.relay = Some(relay),
                    None => {}
                }
                r.relay_name = a.relay_name.clone();
                r.rtt_ms = Some(a.rtt.as_micros() as f64 / 1000.0);
                r.far_firewall = Some(a.far);
                r.our_firewall = Some(a.near);
            }
            PingOutcome::Failed(f) => {
                r.failure = Some(failure_word(f).into());
                r.problem = Some(f.to_string());
            }
        }
        r
    }

    /// Answered, and both firewalls let the probe through.
    pub fn passes(&self) -> bool {
        self.answered
            && self.far_firewall == Some(ProbeVerdict::Allow)
            && self.our_firewall == Some(ProbeVerdict::Allow)
    }
}

fn failure_word(f: &PingFailure) -> &'static str {
    match f {
        PingFailure::NoWayToFind => "no_way_to_find",
        PingFailure::NoLighthouse { .. } => "no_lighthouse",
        PingFailure::UnknownToLighthouses { .. } => "unknown_to_lighthouses",
        PingFailure::RelayUnreachable { .. } => "relay_unreachable",
        PingFailure::HandshakeTimedOut { .. } => "handshake_timed_out",
        PingFailure::NoPingSupport { .. } => "no_ping_support",
    }
}

/// A ping whose client waits on the control socket.
struct Waiting {
    client: UnixStream,
    id: PingId,
    request: PingRequest,
}

/// The pings clients wait for.
#[derive(Default)]
pub struct Pings {
    waiting: Vec<Waiting>,
}

impl Pings {
    /// Starts `request` in the core; its client is answered by [`Pings::answer_finished`]
    /// (or at once, when the ping cannot start).
    pub fn start<P: Policy>(&mut self, node: &Mutex<Node<P>>, client: UnixStream, request: PingRequest) {
        let started = {
            let mut node = lock(node);
            node.start_ping(Instant::now(), request.target, request.probe, request.timeout)
        };
        match started {
            Ok(id) => {
                // The answer may take the whole timeout; the write must not block the loop.
                let _ = client.set_write_timeout(Some(Duration::from_secs(1)));
                self.waiting.push(Waiting { client, id, request });
            }
            Err(e) => super::control::reply(client, &serde_json::json!({ "error": e.to_string() })),
        }
    }

    /// Whether a client waits.
    pub fn waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Answers the clients whose pings ended (the replies are written without the core's lock).
    pub fn answer_finished<P: Policy>(&mut self, node: &Mutex<Node<P>>) {
        if self.waiting.is_empty() {
            return;
        }
        let mut ended = Vec::new();
        {
            let mut node = lock(node);
            let mut i = 0;
            while i < self.waiting.len() {
                match node.take_ping(self.waiting[i].id) {
                    Some(outcome) => ended.push((self.waiting.swap_remove(i), outcome)),
                    None => i += 1,
                }
            }
        }
        for (w, outcome) in ended {
            let report = PingReport::new(w.request.target, w.request.probe, &outcome);
            super::control::reply(w.client, &serde_json::to_value(report).unwrap_or_default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PingRequest;
    use crate::mesh::Probe;
    use std::time::Duration;

    #[test]
    fn request_lines_round_trip_and_bad_ones_are_refused() {
        let r = PingRequest {
            target: "100.64.0.2".parse().unwrap(),
            probe: Probe::Tcp(4647),
            timeout: Duration::from_secs(5),
        };
        assert_eq!(r.to_line(), "ping 100.64.0.2 4647/tcp 5000");
        assert_eq!(PingRequest::parse(&r.to_line()), Some(r));
        for bad in [
            "ping",
            "ping 100.64.0.2",
            "ping nobody icmp 5000",
            "ping 100.64.0.2 icmp 0",
            "ping 100.64.0.2 icmp 600000",
            "ping 100.64.0.2 icmp 5000 extra",
            "pong 100.64.0.2 icmp 5000",
        ] {
            assert_eq!(PingRequest::parse(bad), None, "{bad}");
        }
    }
}
