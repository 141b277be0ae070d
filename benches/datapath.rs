//! Segments per second through the data path, in memory, no root needed:
//! `cargo bench --bench datapath`.
//!
//! One 64 KB TCP super-packet as the TUN hands it over with offloads on (a virtio header asking
//! for TSO) is split into MTU-sized segments with their checksums completed, each segment is
//! encrypted by one WireGuard session (boringtun) into the next slot of one contiguous GSO
//! buffer, the buffer is split at its stride as a GRO receive would be, each datagram is
//! decrypted by the peer's session into a TUN write slot with header room, and the slots are
//! coalesced back into one super-packet for the TUN. The same steps the daemon runs, minus the
//! system calls and the firewall (benched on its own in `benches/firewall.rs`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use cos_mesh::daemon::datapath::SendRuns;
use tun_rs::{GROTable, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_LEN, VirtioNetHdr, gso_split};

const MTU: usize = 1420;
const MSS: usize = MTU - 40;
const SEGMENTS: usize = 47; // 47 × 1380 = 64,860 bytes of payload
const SLOT: usize = MTU + 96;

/// Counts allocations, to show the steady path makes none.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static GRO_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `layout` is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Two sessions with a completed handshake: `a` encrypts, `b` decrypts.
fn sessions() -> (Tunn, Tunn) {
    let (ka, kb) = (StaticSecret::from([1u8; 32]), StaticSecret::from([2u8; 32]));
    let (pa, pb) = (PublicKey::from(&ka), PublicKey::from(&kb));
    let mut a = Tunn::new(ka, pb, None, None, 1, None);
    let mut b = Tunn::new(kb, pa, None, None, 2, None);
    let (mut buf, mut out) = (vec![0u8; 2048], vec![0u8; 2048]);
    let init = match a.format_handshake_initiation(&mut buf, false) {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        _ => panic!("no initiation"),
    };
    let resp = match b.decapsulate(None, &init, &mut out) {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        _ => panic!("no response"),
    };
    let keepalive = match a.decapsulate(None, &resp, &mut buf) {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        _ => panic!("no keepalive"),
    };
    assert!(matches!(b.decapsulate(None, &keepalive, &mut out), TunnResult::Done));
    (a, b)
}

/// A TCP/IPv4 super-packet of `SEGMENTS` × MSS payload, 100.64.0.1:40000 → 100.64.0.2:5201,
/// with the virtio header the kernel writes for it (TSO, checksum left to us).
fn super_packet() -> Vec<u8> {
    let payload = SEGMENTS * MSS;
    let total = 40 + payload;
    let mut p = vec![0u8; VIRTIO_NET_HDR_LEN + total];
    let hdr = VirtioNetHdr {
        flags: 1, // NEEDS_CSUM
        gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
        hdr_len: 40,
        gso_size: MSS as u16,
        csum_start: 20,
        csum_offset: 16,
    };
    hdr.encode(&mut p[..VIRTIO_NET_HDR_LEN]).unwrap();
    let ip = &mut p[VIRTIO_NET_HDR_LEN..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total.min(65535) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[100, 64, 0, 1]);
    ip[16..20].copy_from_slice(&[100, 64, 0, 2]);
    ip[20..22].copy_from_slice(&40000u16.to_be_bytes());
    ip[22..24].copy_from_slice(&5201u16.to_be_bytes());
    ip[24..28].copy_from_slice(&1u32.to_be_bytes());
    ip[32] = 5 << 4; // data offset
    ip[33] = 0x18; // PSH ACK
    ip[34..36].copy_from_slice(&65535u16.to_be_bytes());
    for (i, b) in ip[40..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

fn main() {
    let (mut a, mut b) = sessions();
    let template = super_packet();
    let mut raw = template.clone();
    let mut segments = vec![vec![0u8; MTU]; 128];
    let mut sizes = vec![0usize; 128];
    let mut runs = SendRuns::new(128, SLOT);
    let mut gso = Vec::with_capacity(128 * SLOT);
    let mut tun_bufs: Vec<Vec<u8>> =
        (0..128).map(|_| Vec::with_capacity(2 * VIRTIO_NET_HDR_LEN + 65_535 + SLOT)).collect();
    let mut gro = GROTable::new();
    let peer: SocketAddr = "198.18.0.2:4242".parse().unwrap();

    let mut one = |check: bool| -> usize {
        // Split (the TUN read of a super-packet).
        raw.copy_from_slice(&template);
        let hdr = VirtioNetHdr::decode(&raw[..VIRTIO_NET_HDR_LEN]).unwrap();
        let n = gso_split(&mut raw[VIRTIO_NET_HDR_LEN..], hdr, &mut segments, &mut sizes, 0, false).unwrap();
        // Encrypt each segment into the next slot of one GSO buffer.
        for (seg, &len) in segments.iter().zip(&sizes).take(n) {
            let room = runs.room().unwrap();
            let TunnResult::WriteToNetwork(d) = a.encapsulate(&seg[..len], room) else { panic!("encapsulate") };
            let len = d.len();
            runs.commit(peer, len, 64);
        }
        // What a GSO send would hand the wire, split at the stride as GRO hands it back.
        gso.clear();
        let stride = runs.drain_into(&mut gso);
        // Decrypt each datagram into a TUN slot with the virtio header room in front.
        let mut count = 0;
        for d in gso.chunks(stride) {
            let buf = &mut tun_bufs[count];
            buf.resize(VIRTIO_NET_HDR_LEN + SLOT, 0);
            let TunnResult::WriteToTunnelV4(p, _) = b.decapsulate(None, d, &mut buf[VIRTIO_NET_HDR_LEN..]) else {
                panic!("decapsulate")
            };
            let len = p.len();
            buf.truncate(VIRTIO_NET_HDR_LEN + len);
            count += 1;
        }
        // Coalesce the flow back into one super-packet for the TUN (counted apart: tun-rs 2.8
        // copies each packet it considers into a fresh Vec).
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        gro.apply_gro(&mut tun_bufs[..count], VIRTIO_NET_HDR_LEN, false).unwrap();
        GRO_ALLOCATIONS.fetch_add(ALLOCATIONS.load(Ordering::Relaxed) - before, Ordering::Relaxed);
        if check {
            assert_eq!(count, SEGMENTS);
            let first = &tun_bufs[0][VIRTIO_NET_HDR_LEN..];
            assert_eq!(first.len(), 40 + SEGMENTS * MSS, "the segments coalesced into one packet again");
            assert_eq!(&first[40..], &template[VIRTIO_NET_HDR_LEN + 40..]);
        }
        n
    };
    one(true);

    for _ in 0..200 {
        black_box(one(false));
    }
    // 10,000+ segments on the steady path: split, encrypt and decrypt allocate nothing.
    let (before, gro_before) = (ALLOCATIONS.load(Ordering::Relaxed), GRO_ALLOCATIONS.load(Ordering::Relaxed));
    let mut counted = 0;
    while counted < 10_000 {
        counted += one(false);
    }
    let gro = GRO_ALLOCATIONS.load(Ordering::Relaxed) - gro_before;
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before - gro;
    println!(
        "allocations over {counted} segments: {allocations} in split/encrypt/decrypt, {gro} in tun-rs's coalescing"
    );
    assert_eq!(allocations, 0, "the steady data path allocates");
    let start = Instant::now();
    let mut segs = 0usize;
    while start.elapsed() < Duration::from_secs(3) {
        segs += black_box(one(false));
    }
    let el = start.elapsed().as_secs_f64();
    let rate = segs as f64 / el;
    println!(
        "split → encrypt → decrypt → coalesce: {:.0} segments/s ({:.2} Gbit/s of {MTU}-byte packets, one core)",
        rate,
        rate * MTU as f64 * 8.0 / 1e9
    );
}
