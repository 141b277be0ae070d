//! The overlay TUN device (`nebula1`): created with `IFF_TUN | IFF_NO_PI`, configured over
//! netlink (address, MTU, tx queue, up, routes), read and written as raw IPv4 packets through
//! nonblocking file descriptors. The device disappears when the last queue is dropped (it is
//! never made persistent), so a crashed daemon leaves no interface behind.
//!
//! Raw ioctls via `libc` rather than `tun-rs`: opening a queue is one `open` and one `TUNSETIFF`,
//! the crate is already a dependency, and the event loop wants plain fds for `poll(2)` rather than
//! an async device. Offloads (`IFF_VNET_HDR` + `TUNSETOFFLOAD`) fit this shape later: one more flag
//! and one ioctl, with the segmentation done by the data path that owns the buffers.
//!
//! Multi-queue: with `queues > 1` the device is created with `IFF_MULTI_QUEUE` and each queue is
//! its own fd; the kernel spreads flows across them, one worker per queue.

use std::ffi::c_char;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use ipnet::Ipv4Net;

use super::netlink::{self, Route};

/// What the device should look like. [`TunConfig::from_config`] builds it from `tun:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunConfig {
    /// Interface name, at most 15 bytes.
    pub name: String,
    /// This node's overlay address with the overlay prefix (from its certificate).
    pub address: Ipv4Net,
    pub mtu: u32,
    pub tx_queue: u32,
    /// Extra routes through the device (`tun.routes` and `tun.unsafe_routes`).
    pub routes: Vec<Route>,
    /// Number of queues (fds); 1 unless the daemon runs several workers.
    pub queues: usize,
}

impl TunConfig {
    /// The device the `tun` section describes for a node whose certificate IP is `address`.
    /// Unsafe routes with `install: false` are left to the operator.
    pub fn from_config(tun: &crate::config::Tun, address: Ipv4Net) -> TunConfig {
        let routes = tun
            .routes
            .iter()
            .map(|r| Route { dst: r.route, mtu: Some(r.mtu), metric: None })
            .chain(tun.unsafe_routes.iter().filter(|r| r.install).map(|r| Route {
                dst: r.route,
                mtu: r.mtu,
                metric: r.metric,
            }))
            .collect();
        TunConfig { name: tun.dev.clone(), address, mtu: tun.mtu, tx_queue: tun.tx_queue, routes, queues: 1 }
    }
}

/// An open, configured TUN device. Dropping it closes every queue, which removes the device.
#[derive(Debug)]
pub struct Tun {
    name: String,
    index: u32,
    queues: Vec<OwnedFd>,
}

impl Tun {
    /// Creates and configures the device in the calling thread's network namespace. Needs
    /// `CAP_NET_ADMIN`. Fails if an interface of that name already exists and is not a TUN.
    pub fn create(cfg: &TunConfig) -> io::Result<Tun> {
        let queues =
            (0..cfg.queues.max(1)).map(|_| open_queue(&cfg.name, cfg.queues > 1)).collect::<io::Result<Vec<_>>>()?;
        let index = netlink::if_index(&cfg.name).map_err(|e| ctx(e, &format!("looking up {}", cfg.name)))?;
        let tun = Tun { name: cfg.name.clone(), index, queues };
        netlink::set_link(index, Some(cfg.mtu), Some(cfg.tx_queue), false)?;
        netlink::add_address(index, cfg.address)?;
        netlink::set_link(index, None, None, true)?;
        for r in &cfg.routes {
            netlink::replace_route(index, r)?;
        }
        Ok(tun)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index (for netlink and for routes the daemon adds on reload).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Every queue; `queues()[0]` is the one [`Tun::read`] / [`Tun::write`] use.
    pub fn queues(&self) -> &[OwnedFd] {
        &self.queues
    }

    /// Reads one packet from queue 0. `WouldBlock` when none is waiting.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        read_queue(self.queues[0].as_fd(), buf)
    }

    /// Writes one packet to queue 0 (the kernel delivers it as if received on the interface).
    pub fn write(&self, packet: &[u8]) -> io::Result<usize> {
        write_queue(self.queues[0].as_fd(), packet)
    }

    /// Adds or replaces a route through this device (reloads of `unsafe_routes`).
    pub fn replace_route(&self, route: &Route) -> io::Result<()> {
        netlink::replace_route(self.index, route)
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.queues[0].as_raw_fd()
    }
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.queues[0].as_fd()
    }
}

/// Reads one packet from a queue fd.
pub fn read_queue(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of its length; `fd` is open for the borrow.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Writes one packet to a queue fd.
pub fn write_queue(fd: BorrowedFd<'_>, packet: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `packet` is valid for reads of its length; `fd` is open for the borrow.
        let n = unsafe { libc::write(fd.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags (the rest of the union unused).
#[repr(C)]
struct IfReq {
    name: [c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn open_queue(name: &str, multi_queue: bool) -> io::Result<OwnedFd> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?} is not a valid interface name")));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| ctx(e, "opening /dev/net/tun"))?;
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags: 0, _pad: [0; 22] };
    for (d, s) in req.name.iter_mut().zip(name.bytes()) {
        *d = s as c_char;
    }
    let mut flags = libc::IFF_TUN | libc::IFF_NO_PI;
    if multi_queue {
        flags |= libc::IFF_MULTI_QUEUE;
    }
    req.flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF reads an ifreq, which `req` is laid out as; the fd is open.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &raw mut req) } < 0 {
        return Err(ctx(
            io::Error::last_os_error(),
            &format!("creating TUN device {name} (TUNSETIFF; needs CAP_NET_ADMIN)"),
        ));
    }
    Ok(OwnedFd::from(file))
}

fn ctx(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_config_comes_from_the_tun_section() {
        let yaml = "dev: mesh0\nmtu: 1400\nroutes:\n  - {route: 100.100.0.0/16, mtu: 1300}\nunsafe_routes:\n  - {route: 10.1.0.0/16, via: 100.64.0.1, metric: 5}\n  - {route: 10.2.0.0/16, via: 100.64.0.1, install: false}\n";
        let tun: crate::config::Tun = serde_saphyr::from_str(yaml).unwrap();
        let cfg = TunConfig::from_config(&tun, "100.64.0.11/10".parse().unwrap());
        assert_eq!((cfg.name.as_str(), cfg.mtu, cfg.tx_queue, cfg.queues), ("mesh0", 1400, 500, 1));
        assert_eq!(
            cfg.routes,
            vec![
                Route { dst: "100.100.0.0/16".parse().unwrap(), mtu: Some(1300), metric: None },
                Route { dst: "10.1.0.0/16".parse().unwrap(), mtu: None, metric: Some(5) },
            ]
        );
    }
}
