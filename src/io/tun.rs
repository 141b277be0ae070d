//! The overlay TUN device (`nebula1`), opened through `tun-rs` and configured over netlink
//! (address, MTU, tx queue, up, routes). The device disappears when the last queue is dropped (it
//! is never made persistent), so a crashed daemon leaves no interface behind.
//!
//! Offloads (`tun.use_offloads`, on by default): the device is opened with `IFF_VNET_HDR` and
//! `TUNSETOFFLOAD` (checksum, TSO4/6 and, on kernels ≥ 6.2, USO), so the kernel hands over TCP
//! super-packets of up to 64 KB instead of one read per MTU-sized segment. [`Tun::recv`] splits
//! them back into MTU-sized segments with their checksums completed (each segment then passes the
//! firewall as a packet of its own), and [`Tun::send`] coalesces decrypted segments of one flow into
//! super-packets again (GRO) before writing them. Without offloads both move one packet per call.
//!
//! Multi-queue: with `queues > 1` the device is created with `IFF_MULTI_QUEUE` and each queue is
//! its own fd; the kernel spreads flows across them, one worker per queue.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tun_rs::{DeviceBuilder, GROTable, SyncDevice, VIRTIO_NET_HDR_LEN};

use super::netlink::{self, Route};

/// Largest IP packet (and TCP super-packet) the kernel hands over.
const MAX_PACKET: usize = 65_535;
/// Segments one super-packet can split into (64 KB at the smallest MSS in practice); also the
/// default number of packets written per [`Tun::send`].
pub const MAX_SEGMENTS: usize = tun_rs::IDEAL_BATCH_SIZE;
/// Bytes reserved in front of every packet in a [`TunBatch`] for the virtio header the kernel
/// expects on writes when offloads are on.
pub const HEADROOM: usize = VIRTIO_NET_HDR_LEN;

/// What the device should look like. [`TunConfig::from_config`] builds it from `tun:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunConfig {
    /// Interface name, at most 15 bytes.
    pub name: String,
    /// This node's IPv4 overlay address with the overlay prefix (from its certificate); none
    /// for a certificate with only IPv6 networks.
    pub address: Option<Ipv4Net>,
    /// The certificate's IPv6 networks (addresses with their prefixes), added too.
    pub ipv6: Vec<Ipv6Net>,
    pub mtu: u32,
    pub tx_queue: u32,
    /// Extra routes through the device (`tun.routes` and `tun.unsafe_routes`).
    pub routes: Vec<Route>,
    /// Number of queues (fds); 1 unless the daemon runs several workers.
    pub queues: usize,
    /// Ask for TSO/checksum offloads (`tun.use_offloads`); off when the kernel refuses them.
    pub offload: bool,
}

impl TunConfig {
    /// The device the `tun` section describes for a node whose certificate's IPv4 network is
    /// `address` (none for an IPv6-only certificate).
    /// Unsafe routes with `install: false` are left to the operator. IPv6 addresses come with
    /// [`TunConfig::with_ipv6`].
    pub fn from_config(tun: &crate::config::Tun, address: Option<Ipv4Net>) -> TunConfig {
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
        TunConfig {
            name: tun.dev.clone(),
            address,
            ipv6: vec![],
            mtu: tun.mtu,
            tx_queue: tun.tx_queue,
            routes,
            queues: 1,
            offload: tun.use_offloads,
        }
    }
}

impl TunConfig {
    /// The same device with the IPv6 networks of a dual-stack certificate as well.
    pub fn with_ipv6(mut self, networks: impl IntoIterator<Item = Ipv6Net>) -> TunConfig {
        self.ipv6 = networks.into_iter().collect();
        self
    }
}

/// An open, configured TUN device. Dropping it closes every queue, which removes the device.
pub struct Tun {
    name: String,
    index: u32,
    mtu: usize,
    queues: Vec<SyncDevice>,
}

impl fmt::Debug for Tun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tun").field("name", &self.name).field("queues", &self.queues.len()).finish()
    }
}

impl Tun {
    /// Creates and configures the device in the calling thread's network namespace. Needs
    /// `CAP_NET_ADMIN`. Fails if an interface of that name already exists and is not a TUN.
    /// Offloads the kernel refuses are left off (see [`Tun::offload`]).
    pub fn create(cfg: &TunConfig) -> io::Result<Tun> {
        let name = &cfg.name;
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?} is not a valid interface name")));
        }
        let multi_queue = cfg.queues > 1;
        let open =
            |offload: bool| DeviceBuilder::new().name(name).offload(offload).multi_queue(multi_queue).build_sync();
        let first = match open(cfg.offload) {
            // An old kernel without IFF_VNET_HDR/TUNSETOFFLOAD: the plain device still works.
            Err(e) if cfg.offload && e.raw_os_error() == Some(libc::EINVAL) => open(false),
            r => r,
        }
        .map_err(|e| ctx(e, &format!("creating TUN device {name} (TUNSETIFF; needs CAP_NET_ADMIN)")))?;
        let mut queues = vec![first];
        for _ in 1..cfg.queues {
            queues.push(queues[0].try_clone().map_err(|e| ctx(e, &format!("opening another queue of {name}")))?);
        }
        for q in &queues {
            q.set_nonblocking(true)?;
        }
        let index = netlink::if_index(name).map_err(|e| ctx(e, &format!("looking up {name}")))?;
        let tun = Tun { name: name.clone(), index, mtu: cfg.mtu as usize, queues };
        netlink::set_link(index, Some(cfg.mtu), Some(cfg.tx_queue), false)?;
        if let Some(address) = cfg.address {
            netlink::add_address(index, IpNet::V4(address))?;
        }
        for net in &cfg.ipv6 {
            netlink::add_address(index, IpNet::V6(*net))?;
        }
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

    /// The MTU the device was created with.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Whether the kernel hands over super-packets (IFF_VNET_HDR + TSO are on).
    pub fn offload(&self) -> bool {
        self.queues[0].tcp_gso()
    }

    /// Whether UDP segmentation offload (USO, Linux ≥ 6.2) is on too.
    pub fn udp_offload(&self) -> bool {
        self.queues[0].udp_gso()
    }

    /// Every queue (one per worker).
    pub fn queues(&self) -> &[SyncDevice] {
        &self.queues
    }

    /// Reads what is waiting on queue `queue` into `rx`: one packet, or every segment of one
    /// super-packet with its checksums completed. Returns how many packets `rx` now holds;
    /// `WouldBlock` when none is waiting.
    pub fn recv(&self, queue: usize, rx: &mut TunRecv) -> io::Result<usize> {
        rx.filled = 0;
        // Slices of the one segment buffer, on the stack: no allocation per receive.
        let mut slots = rx.segments.chunks_mut(rx.segment);
        let mut bufs: [&mut [u8]; MAX_SEGMENTS] = std::array::from_fn(|_| slots.next().unwrap_or_default());
        let count = rx.sizes.len();
        let n = self.queues[queue].recv_multiple(&mut rx.raw, &mut bufs[..count], &mut rx.sizes, 0)?;
        rx.filled = n;
        Ok(n)
    }

    /// Writes every packet of `tx` to queue `queue`, coalescing segments of one flow when
    /// offloads are on, and empties `tx`. Returns the bytes written. A packet the kernel refuses
    /// is dropped (the rest still go) and the last such error is returned.
    pub fn send(&self, queue: usize, tx: &mut TunBatch) -> io::Result<usize> {
        if tx.len == 0 {
            return Ok(0);
        }
        let queue = &self.queues[queue];
        let r = if tx.len == 1 {
            // Nothing to coalesce: the packet goes as it is, behind its zeroed virtio header when
            // offloads are on (what tun-rs writes for a packet it did not merge). No GRO tables.
            let start = if self.offload() { HEADROOM - VIRTIO_NET_HDR_LEN } else { HEADROOM };
            queue.send(&tx.bufs[0][start..])
        } else {
            queue.send_multiple(tx.gro.get_or_insert_with(GROTable::new), &mut tx.bufs[..tx.len], HEADROOM)
        };
        tx.clear();
        r
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

/// Caller-owned storage for [`Tun::recv`]: the raw read (a super-packet needs 64 KB; without
/// offloads it is not used) and [`MAX_SEGMENTS`] MTU-sized segment slots. Allocated once per
/// worker, each as one zeroed allocation (large ones come straight from `mmap`), so pages the
/// traffic never touches stay out of the resident set; 128 slots of their own were 128 heap
/// chunks, every page written at allocation (an idle daemon's heap was 164 kB larger at MTU 1420).
pub struct TunRecv {
    raw: Vec<u8>,
    /// `sizes.len()` slots of `segment` bytes.
    segments: Vec<u8>,
    segment: usize,
    sizes: Vec<usize>,
    filled: usize,
}

impl TunRecv {
    /// Storage for reading `tun` (its MTU and whether offloads are on).
    pub fn new(tun: &Tun) -> TunRecv {
        let (raw, count) = if tun.offload() { (HEADROOM + MAX_PACKET, MAX_SEGMENTS) } else { (0, 1) };
        let segment = tun.mtu().max(576);
        TunRecv { raw: vec![0; raw], segments: vec![0; count * segment], segment, sizes: vec![0; count], filled: 0 }
    }

    /// Packets from the last receive.
    pub fn len(&self) -> usize {
        self.filled
    }

    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// The packets of the last receive, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.segments.chunks(self.segment).zip(&self.sizes).take(self.filled).map(|(b, &n)| &b[..n])
    }
}

/// Packets on their way to the TUN, each in its own buffer with [`HEADROOM`] bytes in front
/// (the decrypting core writes straight into [`TunBatch::room`]). Buffers are allocated once.
/// When offloads are on, segments of one flow are coalesced into the buffer of the flow's first
/// packet, so every buffer reserves room for a 64 KB super-packet; the pages only become
/// resident where a coalesced packet actually lands.
pub struct TunBatch {
    bufs: Vec<Vec<u8>>,
    slot: usize,
    len: usize,
    /// tun-rs' coalescing tables, made on the first write of more than one packet: they take
    /// about 1.7 MB of heap (half of it resident at once), which a node that only ever writes
    /// single packets (an idle one, pings, control traffic) does not need.
    gro: Option<GROTable>,
}

impl TunBatch {
    /// `capacity` packets of up to `slot` bytes each; `coalesce` reserves room for super-packets
    /// (pass [`Tun::offload`]).
    pub fn new(capacity: usize, slot: usize, coalesce: bool) -> TunBatch {
        // tun-rs coalesces only into a buffer whose capacity already holds the result (plus
        // twice the header room); it never grows one.
        let reserve = if coalesce { 2 * HEADROOM + MAX_PACKET + slot } else { HEADROOM + slot };
        TunBatch { bufs: (0..capacity.max(1)).map(|_| Vec::with_capacity(reserve)).collect(), slot, len: 0, gro: None }
    }

    /// Packets queued.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == self.bufs.len()
    }

    /// Largest packet a slot holds.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// The next free slot (`slot` bytes) to write a packet into; [`TunBatch::commit`] queues it.
    /// `None` when the batch is full.
    pub fn room(&mut self) -> Option<&mut [u8]> {
        let buf = self.bufs.get_mut(self.len)?;
        buf.resize(HEADROOM + self.slot, 0);
        Some(&mut buf[HEADROOM..])
    }

    /// Queues the first `n` bytes written into [`TunBatch::room`].
    pub fn commit(&mut self, n: usize) {
        if let Some(buf) = self.bufs.get_mut(self.len)
            && n > 0
        {
            buf.truncate(HEADROOM + n.min(self.slot));
            buf[..HEADROOM].fill(0);
            self.len += 1;
        }
    }

    /// Queues a copy of `packet`. False when the batch is full or the packet is empty.
    pub fn push(&mut self, packet: &[u8]) -> bool {
        let Some(buf) = self.bufs.get_mut(self.len) else { return false };
        if packet.is_empty() {
            return false;
        }
        buf.clear();
        buf.resize(HEADROOM, 0);
        buf.extend_from_slice(packet);
        self.len += 1;
        true
    }

    /// Forgets every queued packet.
    pub fn clear(&mut self) {
        self.len = 0;
    }
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
        let cfg = TunConfig::from_config(&tun, Some("100.64.0.11/10".parse().unwrap()));
        assert_eq!((cfg.name.as_str(), cfg.mtu, cfg.tx_queue, cfg.queues, cfg.offload), ("mesh0", 1400, 500, 1, true));
        assert_eq!(
            cfg.routes,
            vec![
                Route { dst: "100.100.0.0/16".parse().unwrap(), mtu: Some(1300), metric: None },
                Route { dst: "10.1.0.0/16".parse().unwrap(), mtu: None, metric: Some(5) },
            ]
        );
        let off: crate::config::Tun = serde_saphyr::from_str("use_offloads: false\n").unwrap();
        assert!(!TunConfig::from_config(&off, Some("100.64.0.11/10".parse().unwrap())).offload);
    }

    #[test]
    fn a_batch_keeps_headroom_and_refuses_when_full() {
        let mut b = TunBatch::new(2, 100, false);
        let room = b.room().unwrap();
        assert_eq!(room.len(), 100);
        room[..3].copy_from_slice(b"abc");
        b.commit(3);
        assert!(b.push(b"de"));
        assert!(b.is_full() && b.room().is_none() && !b.push(b"x"));
        assert_eq!(&b.bufs[0][..], &[0u8; HEADROOM].iter().chain(b"abc").copied().collect::<Vec<_>>()[..]);
        assert_eq!(&b.bufs[1][HEADROOM..], b"de");
        b.clear();
        assert!(b.is_empty() && b.room().is_some());
    }
}
