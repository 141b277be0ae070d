//! The lighthouse's DNS socket: one thread answering UDP queries from a snapshot of the
//! records that the daemon replaces once a second, so a flood of queries can never stall the
//! event loop, and the event loop never waits for DNS. Replies are capped per second.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use super::{Member, Outcome, Records, respond};
use crate::cert::Certificate;

/// Replies sent per second at most; more queries are dropped (and counted) until the next
/// second, which bounds what a flood (or a spoofed-source reflection) gets out of a lighthouse.
pub const MAX_REPLIES_PER_SEC: u64 = 2_000;

/// Bytes of socket receive buffer asked for.
const RECEIVE_BUFFER: usize = 1 << 20;

/// What the server has seen since it started.
#[derive(Debug, Default, Serialize)]
pub struct Counters {
    pub queries: AtomicU64,
    pub answered: AtomicU64,
    pub nxdomain: AtomicU64,
    pub malformed: AtomicU64,
    pub not_implemented: AtomicU64,
    pub dropped: AtomicU64,
    pub rate_limited: AtomicU64,
}

pub struct DnsServer {
    records: Arc<RwLock<Arc<Records>>>,
    counters: Arc<Counters>,
    zone: String,
    addr: SocketAddr,
}

impl DnsServer {
    /// Binds `addr` (`lighthouse.dns`) and starts answering (NXDOMAIN until the first [`set`](Self::set)).
    pub fn start(addr: SocketAddr, zone: &str) -> Result<DnsServer> {
        let socket = UdpSocket::bind(addr).with_context(|| format!("binding lighthouse.dns {addr}"))?;
        // The overlay delivers datagrams in bursts (a GRO write to the TUN carries dozens): room
        // for a burst, so queries are not lost in the socket queue before they are counted. The
        // kernel caps it at net.core.rmem_max; a smaller buffer is no error.
        let _ = nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBuf, &RECEIVE_BUFFER);
        let addr = socket.local_addr()?;
        let records = Arc::new(RwLock::new(Arc::new(Records::default())));
        let counters = Arc::new(Counters::default());
        let (shared, count) = (records.clone(), counters.clone());
        std::thread::Builder::new().name("cos-mesh-dns".into()).spawn(move || serve(&socket, &shared, &count))?;
        Ok(DnsServer { records, counters, zone: zone.to_string(), addr })
    }

    /// The server a node's config asks for: a lighthouse with `serve_dns`, on `lighthouse.dns`.
    pub fn from_config(c: &crate::config::Config) -> Result<Option<DnsServer>> {
        let l = &c.lighthouse;
        if !(l.am_lighthouse && l.serve_dns) {
            return Ok(None);
        }
        if l.dns.host.is_unspecified() {
            tracing::warn!(
                "lighthouse.dns.host {}: DNS answers on every address of this host, the underlay included, and \
                 tells anyone who asks the mesh's names and overlay addresses; set it to this lighthouse's \
                 overlay IP to serve the mesh only",
                l.dns.host
            );
        }
        Ok(Some(DnsServer::start(SocketAddr::new(l.dns.host, l.dns.port), &l.dns.zone)?))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the records with the mesh's current members.
    pub fn set(&self, members: &[Arc<Certificate>]) {
        let members: Vec<Member> = members.iter().map(|c| member(c)).collect();
        let new = Records::new(&members, &self.zone);
        if let Ok(mut r) = self.records.write()
            && **r != new
        {
            *r = Arc::new(new);
        }
    }

    /// What the server has seen, for the Prometheus endpoint (`cos_mesh_dns_<counter>_total`).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// What DNS answers for a certificate: its name, addresses and groups.
pub fn member(c: &Certificate) -> Member {
    let d = c.details();
    Member {
        name: d.name.clone(),
        ipv4: d.ips.iter().map(|n| n.addr()).collect(),
        ipv6: vec![],
        groups: d.groups.clone(),
    }
}

fn serve(socket: &UdpSocket, records: &RwLock<Arc<Records>>, c: &Counters) {
    let mut buf = [0u8; 1500];
    let (mut second, mut sent) = (Instant::now(), 0u64);
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            // A transient error (ICMP unreachable from an earlier reply): keep serving.
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        c.queries.fetch_add(1, Ordering::Relaxed);
        if second.elapsed() >= Duration::from_secs(1) {
            (second, sent) = (Instant::now(), 0);
        }
        if sent >= MAX_REPLIES_PER_SEC {
            c.rate_limited.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let snapshot = records.read().map(|r| r.clone()).unwrap_or_default();
        let (reply, outcome) = respond(&buf[..n], &snapshot);
        let counter = match outcome {
            Outcome::Answered => &c.answered,
            Outcome::NxDomain => &c.nxdomain,
            Outcome::Malformed => &c.malformed,
            Outcome::NotImplemented => &c.not_implemented,
            Outcome::Dropped => &c.dropped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(reply) = reply {
            sent += 1;
            let _ = socket.send_to(&reply, from);
        }
    }
}
