//! Semantic checks on a parsed configuration. Each error names the file and the field, in the
//! words an operator would use to fix it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;

use super::allow_list::LocalAllowList;
use super::schema::{Config, MAX_ROUTINES, StatsKind, UnderlayHost};
use super::{ConfigError, Warning};
use crate::cert::pool::Blocklist;

/// Smallest MTU accepted: IPv4's minimum reassembly size. Below it TCP stops working.
pub const MIN_MTU: u32 = 576;
/// Largest MTU accepted: a UDP datagram (65535 − 28 bytes of IPv4/UDP headers) must still hold
/// the packet plus WireGuard's 32 bytes.
pub const MAX_MTU: u32 = 65535 - 28 - 32;
/// Most datagrams per `recvmmsg`/`sendmmsg` (Linux's `UIO_MAXIOV`).
pub const MAX_BATCH: usize = 1024;

type Origin<'a> = &'a dyn Fn(&str) -> PathBuf;

/// Checks everything that can be checked without the certificate or the network.
pub(super) fn validate(c: &Config, origin: Origin<'_>, warnings: &mut Vec<Warning>) -> Result<(), ConfigError> {
    let fail = |field: &str, reason: String| ConfigError::Invalid { file: origin(field), field: field.into(), reason };
    let mut warn = |field: &str, message: String| {
        warnings.push(Warning { file: origin(field), key: field.into(), message });
    };

    for (field, present) in
        [("pki.ca", c.pki.ca.is_some()), ("pki.cert", c.pki.cert.is_some()), ("pki.key", c.pki.key.is_some())]
    {
        if !present {
            return Err(fail(field, "is required (a file path or inline PEM)".into()));
        }
    }
    Blocklist::from_hex(&c.pki.blocklist).map_err(|e| fail("pki.blocklist", e))?;

    for (ip, addrs) in &c.static_host_map {
        if addrs.is_empty() {
            return Err(fail(&format!("static_host_map.{}", ip.0), "has no underlay address (host:port)".into()));
        }
    }

    let l = &c.lighthouse;
    if l.am_lighthouse {
        if !l.hosts.is_empty() {
            warn(
                "lighthouse.hosts",
                "ignored on a lighthouse (am_lighthouse: true); lighthouses do not report to each other".into(),
            );
        }
    } else {
        for (i, h) in l.hosts.iter().enumerate() {
            if !c.static_host_map.keys().any(|k| k.0 == *h) {
                return Err(fail(
                    &format!("lighthouse.hosts[{i}]"),
                    format!("{h} is not in static_host_map, so this node cannot reach that lighthouse"),
                ));
            }
        }
    }
    if l.interval == 0 {
        return Err(fail("lighthouse.interval", "must be at least 1 (seconds)".into()));
    }
    if l.serve_dns && !l.am_lighthouse {
        warn("lighthouse.serve_dns", "only lighthouses serve DNS; ignored".into());
    }
    LocalAllowList::new(&l.local_allow_list)
        .map_err(|(key, reason)| fail(&format!("lighthouse.local_allow_list.{key}"), reason))?;
    for (i, a) in l.advertise_addrs.iter().enumerate() {
        let field = format!("lighthouse.advertise_addrs[{i}]");
        match (&a.0.host, a.0.port) {
            (UnderlayHost::Dns(name), _) => {
                warn(&field, format!("{name} is a name; advertised addresses must be IPs, so it is not advertised"))
            }
            (_, 0) if c.listen.port == 0 => warn(
                &field,
                "port 0 stands for listen.port, which is 0 (random) too; this address is not advertised".into(),
            ),
            _ => {}
        }
    }

    let routines = c.routines();
    if routines == 0 || routines > MAX_ROUTINES {
        return Err(fail("routines", format!("{routines} is out of range 1-{MAX_ROUTINES} (data-path workers)")));
    }
    if let Ok(cpus) = std::thread::available_parallelism()
        && routines > cpus.get()
    {
        warn(
            "routines",
            format!("{routines} workers on {cpus} CPUs: workers beyond the CPU count only add contention"),
        );
    }

    if c.listen.batch == 0 || c.listen.batch > MAX_BATCH {
        return Err(fail("listen.batch", format!("{} is out of range 1-{MAX_BATCH}", c.listen.batch)));
    }
    for (field, v) in [("listen.read_buffer", c.listen.read_buffer), ("listen.write_buffer", c.listen.write_buffer)] {
        if v.is_some_and(|v| v > i32::MAX as u32) {
            return Err(fail(field, format!("must be at most {} bytes", i32::MAX)));
        }
    }

    let t = &c.tun;
    if !t.disabled {
        let dev_ok = !t.dev.is_empty()
            && t.dev.len() <= 15
            && t.dev.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
            && t.dev != "."
            && t.dev != "..";
        if !dev_ok {
            return Err(fail(
                "tun.dev",
                format!("{:?} is not a Linux interface name (1-15 characters, no '/', ':' or spaces)", t.dev),
            ));
        }
    }
    check_mtu(t.mtu).map_err(|r| fail("tun.mtu", r))?;
    for (i, r) in t.routes.iter().enumerate() {
        check_route_mtu(r.route, r.mtu).map_err(|reason| fail(&format!("tun.routes[{i}].mtu"), reason))?;
    }
    for (i, r) in t.unsafe_routes.iter().enumerate() {
        if let Some(mtu) = r.mtu {
            check_route_mtu(r.route, mtu).map_err(|reason| fail(&format!("tun.unsafe_routes[{i}].mtu"), reason))?;
        }
        if let Some(g) = r.via.gateways.iter().find(|g| r.route.contains(&g.gateway)) {
            return Err(fail(
                &format!("tun.unsafe_routes[{i}].via"),
                format!("{} lies inside its own route {}", g.gateway, r.route),
            ));
        }
        if r.via.gateways.len() > 1 {
            warn(
                &format!("tun.unsafe_routes[{i}].via"),
                format!(
                    "balancing across several gateways (ECMP) is not implemented; all traffic to {} goes \
                     through {} (the highest weight, the first on a tie)",
                    r.route,
                    r.via.primary()
                ),
            );
        }
    }

    if c.handshakes.try_interval.0.is_zero() {
        return Err(fail("handshakes.try_interval", "must be greater than zero".into()));
    }
    if c.handshakes.retries == 0 {
        return Err(fail("handshakes.retries", "must be at least 1".into()));
    }

    if let Some(socket) = &c.control.socket
        && !socket.is_absolute()
    {
        return Err(fail("control.socket", format!("{} is not an absolute path", socket.display())));
    }

    match c.stats.kind {
        Some(StatsKind::Prometheus) => {
            let listen = c
                .stats
                .listen
                .as_deref()
                .ok_or_else(|| fail("stats.listen", "is required with type: prometheus".into()))?;
            // Go's `:8080` (every address) is accepted, as Nebula's listener takes it.
            let full = if listen.starts_with(':') { format!("0.0.0.0{listen}") } else { listen.to_string() };
            full.parse::<SocketAddr>()
                .map_err(|_| fail("stats.listen", format!("{listen:?} is not an IP:port (or :port)")))?;
            if !c.stats.path.starts_with('/') {
                return Err(fail("stats.path", format!("{:?} must start with '/'", c.stats.path)));
            }
        }
        Some(StatsKind::Graphite) => warn("stats.type", "graphite is not implemented; no metrics are exported".into()),
        None => {}
    }
    Ok(())
}

/// Smallest MTU IPv6 allows (RFC 8200).
pub const IPV6_MIN_MTU: u32 = 1280;

/// A route's MTU: in range, and at least IPv6's minimum for an IPv6 route.
fn check_route_mtu(route: IpNet, mtu: u32) -> Result<(), String> {
    check_mtu(mtu)?;
    if route.addr().is_ipv6() && mtu < IPV6_MIN_MTU {
        return Err(format!(
            "{mtu} is below {IPV6_MIN_MTU}, the smallest MTU IPv6 allows, and {route} is an IPv6 route"
        ));
    }
    Ok(())
}

fn check_mtu(mtu: u32) -> Result<(), String> {
    if (MIN_MTU..=MAX_MTU).contains(&mtu) { Ok(()) } else { Err(format!("{mtu} is out of range {MIN_MTU}-{MAX_MTU}")) }
}

/// Checks the addresses that must lie inside the overlay, which only the node's certificate
/// knows (its `networks`, IPv4 and IPv6): `static_host_map` keys, `lighthouse.hosts`,
/// `relay.relays` and the `via` of unsafe routes must each lie in a network of the
/// certificate of the same family. Returns the offending field and the reason.
pub fn validate_overlay(c: &Config, networks: &[IpNet]) -> Result<(), (String, String)> {
    let check = |ip: IpAddr| -> Option<String> {
        let same: Vec<IpNet> =
            networks.iter().filter(|n| n.addr().is_ipv4() == ip.is_ipv4()).map(IpNet::trunc).collect();
        if same.iter().any(|n| n.contains(&ip)) {
            return None;
        }
        let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
        let list = same.iter().map(IpNet::to_string).collect::<Vec<_>>().join(", ");
        Some(match (ip, same.len()) {
            (_, 0) => {
                format!("{ip} is an {family} overlay address, but this node's certificate has no {family} network")
            }
            (IpAddr::V4(_), 1) => format!("{ip} is outside the overlay network {list} (from this node's certificate)"),
            (IpAddr::V4(_), _) => format!("{ip} is outside the overlay networks {list} (from this node's certificate)"),
            (IpAddr::V6(_), _) => {
                format!("{ip} is outside the IPv6 overlay networks {list} (from this node's certificate)")
            }
        })
    };
    for k in c.static_host_map.keys() {
        if let Some(reason) = check(k.0) {
            return Err((format!("static_host_map.{}", k.0), reason));
        }
    }
    for (field, list) in [("lighthouse.hosts", &c.lighthouse.hosts), ("relay.relays", &c.relay.relays)] {
        if let Some((i, reason)) = list.iter().enumerate().find_map(|(i, ip)| check(*ip).map(|r| (i, r))) {
            return Err((format!("{field}[{i}]"), reason));
        }
    }
    for (i, r) in c.tun.unsafe_routes.iter().enumerate() {
        if let Some(reason) = r.via.gateways.iter().find_map(|g| check(g.gateway)) {
            return Err((format!("tun.unsafe_routes[{i}].via"), reason));
        }
    }
    // Packets into a route leave with one of our overlay addresses as source: a route of a
    // family our certificate lacks could carry nothing (the far end would drop it as spoofed).
    let routes = c
        .tun
        .routes
        .iter()
        .map(|r| ("routes", r.route))
        .chain(c.tun.unsafe_routes.iter().map(|r| ("unsafe_routes", r.route)));
    for (i, (key, route)) in routes.enumerate() {
        let index = if key == "routes" { i } else { i - c.tun.routes.len() };
        if !networks.iter().any(|n| n.addr().is_ipv4() == route.addr().is_ipv4()) {
            let family = if route.addr().is_ipv4() { "IPv4" } else { "IPv6" };
            return Err((
                format!("tun.{key}[{index}].route"),
                format!(
                    "{route} is an {family} route, but this node's certificate has no {family} network to send from"
                ),
            ));
        }
    }
    Ok(())
}
