//! The reachability matrix: for each Nomad, Consul and monitoring port of a server and a
//! client, and each role that might connect, what the role rule sets say (the firewall engine's
//! own verdict on the rule files) against what a real connection through the mesh observes.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow};
use ipnet::IpNet;

use super::world::{Host, World};
use crate::firewall::{Direction, Firewall, PeerIdentity, load_rules_file};
use crate::packet::Flow;

/// How long a blocked connection attempt waits.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// One service of a target host.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    pub target: &'static str,
    pub port: u16,
    pub proto: Proto,
    pub what: &'static str,
    /// Whether the matrix listens itself; `false`: the daemon does (its metrics endpoint).
    pub stand_in: bool,
}

const fn svc(target: &'static str, port: u16, proto: Proto, what: &'static str) -> Service {
    Service { target, port, proto, what, stand_in: true }
}

pub const SERVICES: [Service; 14] = [
    svc("server-1", 4646, Proto::Tcp, "Nomad HTTP"),
    svc("server-1", 4647, Proto::Tcp, "Nomad RPC"),
    svc("server-1", 4648, Proto::Tcp, "Nomad Serf"),
    svc("server-1", 4648, Proto::Udp, "Nomad Serf"),
    svc("server-1", 8300, Proto::Tcp, "Consul RPC"),
    svc("server-1", 8301, Proto::Udp, "Consul LAN"),
    svc("server-1", 8302, Proto::Tcp, "Consul WAN"),
    svc("server-1", 8500, Proto::Tcp, "Consul HTTP"),
    svc("client-1", 4646, Proto::Tcp, "Nomad HTTP"),
    svc("client-1", 4647, Proto::Tcp, "RPC (servers only)"),
    svc("client-1", 25417, Proto::Tcp, "allocation"),
    svc("client-1", 8301, Proto::Tcp, "Consul LAN"),
    Service { stand_in: false, ..svc("client-1", super::world::METRICS_PORT, Proto::Tcp, "cos-mesh metrics") },
    svc("client-1", 22, Proto::Tcp, "ssh"),
];

pub const SOURCES: [&str; 4] = ["server-2", "client-2", "operator", "prometheus"];

pub struct Cell {
    pub source: &'static str,
    pub service: Service,
    pub expected: bool,
    pub observed: bool,
}

/// Listeners for every service, stopped on drop.
struct Listeners {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn listen(world: &World) -> Result<Listeners> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = vec![];
    for s in SERVICES.into_iter().filter(|s| s.stand_in) {
        let host = world.host(s.target);
        let addr = SocketAddr::new(IpAddr::V4(host.vpn_ip), s.port);
        let stop = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        threads.push(host.ns.spawn_thread(move || match s.proto {
            Proto::Tcp => {
                let Ok(l) = TcpListener::bind(addr) else { return tx.send(false).unwrap_or(()) };
                let _ = l.set_nonblocking(true);
                let _ = tx.send(true);
                while !stop.load(Ordering::Relaxed) {
                    if l.accept().is_err() {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
            Proto::Udp => {
                let Ok(u) = UdpSocket::bind(addr) else { return tx.send(false).unwrap_or(()) };
                let _ = u.set_read_timeout(Some(Duration::from_millis(50)));
                let _ = tx.send(true);
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = u.recv_from(&mut buf) {
                        let _ = u.send_to(&buf[..n], from);
                    }
                }
            }
        })?);
        if !rx.recv().unwrap_or(false) {
            return Err(anyhow!("cannot listen on {addr} in {}", s.target));
        }
    }
    Ok(Listeners { stop, threads })
}

fn probe(from: &Host, to: SocketAddr, proto: Proto) -> Result<bool> {
    from.ns.run(move || match proto {
        Proto::Tcp => TcpStream::connect_timeout(&to, PROBE_TIMEOUT).is_ok(),
        Proto::Udp => {
            let Ok(u) = UdpSocket::bind("0.0.0.0:0") else { return false };
            let _ = u.set_read_timeout(Some(PROBE_TIMEOUT));
            let mut buf = [0u8; 16];
            u.send_to(b"gossip", to).is_ok() && u.recv_from(&mut buf).is_ok()
        }
    })
}

/// What the rule files say: the target's inbound rules and the source's outbound rules.
fn expected(world: &World, source: &Host, target: &Host, s: Service) -> Result<bool> {
    let compile = |h: &Host| -> Result<Firewall> {
        let sections: Vec<_> = h
            .role
            .rule_files()
            .iter()
            .map(|f| load_rules_file(&world.dir.0.join("firewall").join(f)))
            .collect::<Result<_, _>>()?;
        Ok(Firewall::compile_sections(&sections, &[IpNet::from(IpAddr::V4(h.vpn_ip))])?)
    };
    let identity = |h: &Host| {
        PeerIdentity::new(
            h.name.clone(),
            h.role.groups().iter().copied(),
            vec![IpAddr::V4(h.vpn_ip)],
            vec![],
            world.ca.name(),
            world.ca.fingerprint(),
        )
    };
    let proto = match s.proto {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    };
    let inbound = Flow {
        proto,
        local_ip: IpAddr::V4(target.vpn_ip),
        remote_ip: IpAddr::V4(source.vpn_ip),
        local_port: s.port,
        remote_port: 40_000,
        fragment: false,
    };
    let outbound = Flow {
        local_ip: inbound.remote_ip,
        remote_ip: inbound.local_ip,
        local_port: 40_000,
        remote_port: s.port,
        ..inbound
    };
    Ok(compile(target)?.evaluate(Direction::Inbound, &inbound, &identity(source)).is_some()
        && compile(source)?.evaluate(Direction::Outbound, &outbound, &identity(target)).is_some())
}

/// Probes every cell, all in parallel (a blocked probe waits out its timeout).
pub fn measure(world: &World) -> Result<Vec<Cell>> {
    let _listeners = listen(world)?;
    let cells: Vec<(&'static str, Service)> =
        SOURCES.iter().flat_map(|src| SERVICES.iter().map(move |s| (*src, *s))).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = cells
            .iter()
            .map(|&(src, s)| {
                scope.spawn(move || -> Result<Cell> {
                    let (source, target) = (world.host(src), world.host(s.target));
                    let addr = SocketAddr::new(IpAddr::V4(target.vpn_ip), s.port);
                    let expected = expected(world, source, target, s)?;
                    // One retry for an allowed-but-failed first contact (a handshake racing
                    // the probe's own timeout), never a reason to call blocked allowed.
                    let mut observed = probe(source, addr, s.proto)?;
                    if !observed && expected {
                        observed = probe(source, addr, s.proto)?;
                    }
                    Ok(Cell { source: src, service: s, expected, observed })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a probe thread panicked")))).collect()
    })
}
