//! The data path of one worker: batches from the TUN through the core to the socket and back,
//! with every buffer allocated once.
//!
//! Outbound, a TUN read yields one packet or every segment of a TCP super-packet; each segment
//! passes the core on its own (firewall and conntrack per segment) and is encrypted straight into
//! the next slot of one contiguous buffer ([`SendRuns`]). Consecutive ciphertexts to the same peer
//! of the same size form a run, and a run leaves in one `sendmsg` with `UDP_SEGMENT`. Inbound, a
//! receive yields GRO buffers that are split at their stride; each datagram is decrypted straight
//! into a TUN write slot, and the slots go to the TUN in one batch that coalesces segments of one
//! flow again.
//!
//! Several workers (`routines`) share one core behind a mutex, each with its own TUN queue,
//! listening socket and buffers: a worker holds the lock only while the core handles a batch
//! (the firewall, the session lookup and the AEAD), and reads, splits, sends, coalesces and
//! writes without it; the firewall and the AEAD run under the lock, so workers overlap only the
//! work around the core. Time handed to the core is read after taking the lock, so the core sees
//! it move forward whichever worker calls.

use std::io;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use tracing::{debug, warn};

use crate::io::udp::{MAX_RUN_BYTES, RECV_BATCH};
use crate::io::{PeerSockets, Tun, TunBatch, TunRecv, Udp, UdpRecv, tun};
use crate::mesh::{MIN_BUFFER, Node, Policy};
use crate::unixtime::UnixTime;

/// Room in a slot beyond the MTU: WireGuard's 32 bytes of framing and tag, with margin; never
/// less than a handshake message (148 bytes) needs.
const SLOT_OVERHEAD: usize = 96;
/// Packets per TUN write when offloads coalesce them.
const COALESCE_BATCH: usize = 32;
/// TUN reads per wakeup before the socket gets its turn again.
const TUN_READS_PER_WAKEUP: usize = 64;
/// Receive calls per wakeup before the TUN gets its turn again.
const UDP_READS_PER_WAKEUP: usize = 8;
/// Receive calls of the listening socket per wakeup while established peers' own sockets had
/// datagrams: a flood there waits (or overflows its own queue) rather than delay the peers.
const LISTEN_READS_WHILE_PEERS: usize = 1;

/// What the data path did, for the metrics endpoint and `status`. Plain numbers, owned by the
/// worker; monotonic since start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Reads from the TUN (each one packet or one super-packet).
    pub tun_reads: u64,
    /// Reads that carried a super-packet (more than one segment).
    pub tun_super_packets: u64,
    /// Packets (segments) those reads yielded; `/ tun_reads` is the segments per read.
    pub tun_segments: u64,
    /// Batches written to the TUN, and the packets in them (before coalescing).
    pub tun_write_batches: u64,
    pub tun_packets_written: u64,
    /// TUN writes the kernel refused.
    pub tun_write_errors: u64,
    /// Receive calls that returned data, and the buffers they filled.
    pub udp_receives: u64,
    pub udp_buffers: u64,
    /// Buffers that held more than one datagram (UDP GRO), and all datagrams received.
    pub udp_gro_buffers: u64,
    pub udp_datagrams_received: u64,
    /// Sends of a run (one system call with GSO, else one per datagram), those that used GSO,
    /// and the datagrams they carried.
    pub udp_sends: u64,
    pub udp_gso_sends: u64,
    pub udp_datagrams_sent: u64,
    /// GSO sends the kernel refused; the run went out one datagram at a time (see [`Udp::send`]).
    pub gso_fallbacks: u64,
    /// Datagrams dropped: the socket stayed full, or the kernel refused them.
    pub tx_dropped: u64,
    /// Datagrams that arrived on an established peer's own socket (not the listening one).
    pub udp_datagrams_peer_sockets: u64,
}

impl Counters {
    /// Name → value, for an exposition.
    pub fn snapshot(&self) -> [(&'static str, u64); 16] {
        let mut copy = *self;
        copy.fields_mut().map(|(name, v)| (name, *v))
    }

    /// Adds `other`'s counts (the workers' counters summed for `status` and the metrics).
    pub fn add(&mut self, other: &Counters) {
        for ((_, mine), (_, theirs)) in self.fields_mut().into_iter().zip(other.snapshot()) {
            *mine += theirs;
        }
    }

    /// Every field, in [`Counters::snapshot`]'s order.
    fn fields_mut(&mut self) -> [(&'static str, &mut u64); 16] {
        let Counters {
            tun_reads,
            tun_super_packets,
            tun_segments,
            tun_write_batches,
            tun_packets_written,
            tun_write_errors,
            udp_receives,
            udp_buffers,
            udp_gro_buffers,
            udp_datagrams_received,
            udp_sends,
            udp_gso_sends,
            udp_datagrams_sent,
            gso_fallbacks,
            tx_dropped,
            udp_datagrams_peer_sockets,
        } = self;
        [
            ("tun_reads", tun_reads),
            ("tun_super_packets", tun_super_packets),
            ("tun_segments", tun_segments),
            ("tun_write_batches", tun_write_batches),
            ("tun_packets_written", tun_packets_written),
            ("tun_write_errors", tun_write_errors),
            ("udp_receives", udp_receives),
            ("udp_buffers", udp_buffers),
            ("udp_gro_buffers", udp_gro_buffers),
            ("udp_datagrams_received", udp_datagrams_received),
            ("udp_sends", udp_sends),
            ("udp_gso_sends", udp_gso_sends),
            ("udp_datagrams_sent", udp_datagrams_sent),
            ("gso_fallbacks", gso_fallbacks),
            ("tx_dropped", tx_dropped),
            ("udp_datagrams_peer_sockets", udp_datagrams_peer_sockets),
        ]
    }
}

/// `m` locked. A worker that panicked while holding the core's lock has stopped, and the daemon
/// stops on noticing; until then the others carry on rather than panic as well.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What one wakeup of a worker works with: the core, the worker's listening socket (replies
/// and queued output leave through it), the TUN if there is one, and the wall-clock time read
/// once on waking (for certificate validity; the monotonic time is read under the lock).
pub struct Wakeup<'a, P: Policy> {
    pub node: &'a Mutex<Node<P>>,
    pub udp: &'a Udp,
    pub tun: Option<&'a Tun>,
    pub wall: UnixTime,
}

/// The buffers and counters of one worker.
pub struct DataPath {
    /// The worker's TUN queue.
    queue: usize,
    tun_rx: Option<TunRecv>,
    tun_tx: TunBatch,
    udp_rx: UdpRecv,
    runs: SendRuns,
    /// For the rare datagram larger than a TUN slot (a relayed one); sized on first use.
    big: Vec<u8>,
    pub counters: Counters,
}

impl DataPath {
    /// Buffers for `tun`'s queue `queue` (if there is a TUN) and `udp`: `batch` packets per
    /// TUN write and receive.
    pub fn new(tun: Option<&Tun>, queue: usize, udp: &Udp, batch: usize) -> DataPath {
        let mtu = tun.map_or(1500, Tun::mtu);
        let slot = (mtu + SLOT_OVERHEAD).max(256);
        // Coalescing reserves 64 KB per TUN write slot; a smaller batch bounds what can become
        // resident (32 slots: at most 2 MB, and up to 32 segments per super-packet written).
        let coalesce = tun.is_some_and(Tun::offload);
        let tun_batch = batch.clamp(1, if coalesce { COALESCE_BATCH } else { tun::MAX_SEGMENTS });
        DataPath {
            queue,
            tun_rx: tun.map(TunRecv::new),
            tun_tx: TunBatch::new(tun_batch, slot, coalesce),
            udp_rx: UdpRecv::new(if udp.gro() { RECV_BATCH / 4 } else { batch.min(RECV_BATCH) }),
            runs: SendRuns::new(tun::MAX_SEGMENTS, slot),
            big: Vec::new(),
            counters: Counters::default(),
        }
    }

    /// Ciphertexts wait for the socket to become writable (poll for POLLOUT, and leave the TUN
    /// unread until they are gone: the kernel queues or drops there, not us).
    pub fn wants_write(&self) -> bool {
        !self.runs.is_empty()
    }

    /// Datagrams from established peers' own sockets first (every one that is ready), then
    /// from the listening socket (a bounded number of receives): only
    /// [`LISTEN_READS_WHILE_PEERS`] of it while the peers had data, so a flood there cannot
    /// crowd out their traffic.
    pub fn read_udp<P: Policy>(&mut self, w: &mut Wakeup<'_, P>, peers: &mut PeerSockets) {
        let mut got = 0;
        for i in 0..peers.poll_ready() {
            if let Some(own) = peers.ready_socket(i) {
                got += self.read_socket(w, own, UDP_READS_PER_WAKEUP);
            }
        }
        self.counters.udp_datagrams_peer_sockets += got;
        let listen_reads = if got > 0 { LISTEN_READS_WHILE_PEERS } else { UDP_READS_PER_WAKEUP };
        let listening = w.udp;
        self.read_socket(w, listening, listen_reads);
    }

    /// Up to `reads` receives from `rx`; replies and queued output leave through the listening
    /// socket. Returns the datagrams received.
    fn read_socket<P: Policy>(&mut self, w: &mut Wakeup<'_, P>, rx: &Udp, reads: usize) -> u64 {
        let before = self.counters.udp_datagrams_received;
        let wall = w.wall;
        for _ in 0..reads {
            let n = match rx.recv(&mut self.udp_rx) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!("udp receive: {e}");
                    break;
                }
            };
            let c = &mut self.counters;
            c.udp_receives += 1;
            c.udp_buffers += n as u64;
            let tun = w.tun.map(|t| (t, self.queue));
            let mut node = lock(w.node);
            let mut now = Instant::now();
            for i in 0..n {
                let Some((from, data, stride)) = self.udp_rx.buffer(i) else { continue };
                if data.len() > stride {
                    c.udp_gro_buffers += 1;
                }
                for d in data.chunks(stride) {
                    c.udp_datagrams_received += 1;
                    if self.tun_tx.is_full() {
                        drop(node);
                        write_tun(tun, &mut self.tun_tx, c);
                        node = lock(w.node);
                        now = Instant::now();
                    }
                    if d.len() <= self.tun_tx.slot() {
                        let Some(room) = self.tun_tx.room() else { continue };
                        if let Some(p) = node.handle_datagram(now, wall, from, d, room) {
                            let len = p.len();
                            self.tun_tx.commit(len);
                        }
                    } else {
                        if self.big.len() < MIN_BUFFER {
                            self.big.resize(MIN_BUFFER, 0);
                        }
                        if let Some(p) = node.handle_datagram(now, wall, from, d, &mut self.big) {
                            self.tun_tx.push(p);
                        }
                    }
                }
            }
            drop(node);
            write_tun(tun, &mut self.tun_tx, c);
            self.flush(w.node, w.udp, w.tun);
            if n < self.udp_rx.capacity() {
                break;
            }
        }
        self.counters.udp_datagrams_received - before
    }

    /// Packets from the TUN → the core → the socket, a bounded number of reads.
    pub fn read_tun<P: Policy>(&mut self, w: &mut Wakeup<'_, P>) {
        let (Some(rx), Some(tun)) = (self.tun_rx.as_mut(), w.tun) else { return };
        for _ in 0..TUN_READS_PER_WAKEUP {
            if !self.runs.is_empty() && self.runs.free_slots() < tun::MAX_SEGMENTS {
                self.runs.flush(w.udp, &mut self.counters);
                if !self.runs.is_empty() {
                    break; // the socket is full: leave the rest in the TUN's queue
                }
            }
            let n = match tun.recv(self.queue, rx) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // A malformed super-packet is consumed and dropped; keep reading.
                    debug!("tun read: {e}");
                    continue;
                }
            };
            let c = &mut self.counters;
            c.tun_reads += 1;
            c.tun_segments += n as u64;
            if n > 1 {
                c.tun_super_packets += 1;
            }
            let max_segments = w.udp.max_segments();
            let mut node = lock(w.node);
            let now = Instant::now();
            for segment in rx.iter() {
                let Some(room) = self.runs.room() else {
                    c.tx_dropped += 1;
                    continue;
                };
                if let Some((dst, d)) = node.handle_tun_packet(now, segment, room) {
                    let len = d.len();
                    self.runs.commit(dst, len, max_segments);
                }
            }
        }
        self.flush(w.node, w.udp, w.tun);
    }

    /// Moves the core's queued output (handshakes, control messages, reject replies) out, and
    /// sends every queued run. Whichever worker flushes sends what any of them queued.
    pub fn flush<P: Policy>(&mut self, node: &Mutex<Node<P>>, udp: &Udp, tun: Option<&Tun>) {
        let max_segments = udp.max_segments();
        let tun = tun.map(|t| (t, self.queue));
        let mut guard = lock(node);
        while let Some(t) = guard.poll_transmit() {
            if !self.runs.push(t.dst, &t.data, max_segments) {
                drop(guard);
                self.runs.flush(udp, &mut self.counters);
                if !self.runs.push(t.dst, &t.data, max_segments) {
                    self.counters.tx_dropped += 1;
                }
                guard = lock(node);
            }
        }
        while let Some(p) = guard.poll_tun_write() {
            if self.tun_tx.is_full() {
                drop(guard);
                write_tun(tun, &mut self.tun_tx, &mut self.counters);
                guard = lock(node);
            }
            self.tun_tx.push(&p);
        }
        drop(guard);
        self.runs.flush(udp, &mut self.counters);
        write_tun(tun, &mut self.tun_tx, &mut self.counters);
    }
}

/// Writes `tx` to the TUN's queue (dropping it when there is no TUN).
fn write_tun(tun: Option<(&Tun, usize)>, tx: &mut TunBatch, c: &mut Counters) {
    if tx.is_empty() {
        return;
    }
    let Some((tun, queue)) = tun else {
        tx.clear();
        return;
    };
    c.tun_write_batches += 1;
    c.tun_packets_written += tx.len() as u64;
    if let Err(e) = tun.send(queue, tx) {
        c.tun_write_errors += 1;
        debug!("tun write: {e}");
    }
}

/// Ciphertexts queued for the socket: slots in one contiguous buffer, grouped into runs (same
/// destination, same size, the last one possibly shorter) that each leave in one GSO send.
pub struct SendRuns {
    buf: Vec<u8>,
    slot: usize,
    used: usize,
    runs: Vec<Run>,
    /// Runs already sent (the socket was full before the rest).
    sent: usize,
    fallback_logged: bool,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    dst: SocketAddr,
    start: usize,
    len: usize,
    segment: usize,
    count: usize,
    /// A shorter datagram ended the run.
    closed: bool,
}

impl SendRuns {
    /// Room for `slots` datagrams of up to `slot` bytes.
    pub fn new(slots: usize, slot: usize) -> SendRuns {
        SendRuns {
            buf: vec![0; slots.max(1) * slot],
            slot,
            used: 0,
            runs: Vec::with_capacity(slots.max(1)),
            sent: 0,
            fallback_logged: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.runs.len() == self.sent
    }

    /// Datagrams that still fit for certain.
    pub fn free_slots(&self) -> usize {
        (self.buf.len() - self.used) / self.slot
    }

    /// The next slot to write a datagram into; [`SendRuns::commit`] queues it. `None` when full.
    pub fn room(&mut self) -> Option<&mut [u8]> {
        if self.used + self.slot > self.buf.len() || self.runs.len() == self.runs.capacity() {
            return None;
        }
        Some(&mut self.buf[self.used..self.used + self.slot])
    }

    /// Queues the first `n` bytes written into [`SendRuns::room`] for `dst`, extending the last
    /// run when it goes to the same place with the same size and has room (`max_segments`).
    pub fn commit(&mut self, dst: SocketAddr, n: usize, max_segments: usize) {
        if n == 0 || n > self.slot || self.used + n > self.buf.len() {
            return;
        }
        let start = self.used;
        self.used += n;
        let unsent = self.sent < self.runs.len();
        if let Some(r) = self.runs.last_mut()
            && unsent
            && r.dst == dst
            && !r.closed
            && n <= r.segment
            && r.count < max_segments
            && r.len + n <= MAX_RUN_BYTES
            && r.start + r.len == start
        {
            r.len += n;
            r.count += 1;
            r.closed = n < r.segment;
            return;
        }
        self.runs.push(Run { dst, start, len: n, segment: n, count: 1, closed: false });
    }

    /// Queues a copy of `data` for `dst`. False when it does not fit.
    pub fn push(&mut self, dst: SocketAddr, data: &[u8], max_segments: usize) -> bool {
        if data.is_empty() || data.len() > self.slot {
            return false;
        }
        let Some(room) = self.room() else { return false };
        room[..data.len()].copy_from_slice(data);
        self.commit(dst, data.len(), max_segments);
        true
    }

    /// Moves every queued datagram, in order, into `out` (the bytes a GSO send of one run would
    /// hand the kernel) and returns the segment size of the first run; for benchmarks.
    pub fn drain_into(&mut self, out: &mut Vec<u8>) -> usize {
        let segment = self.runs.get(self.sent).map_or(1, |r| r.segment);
        for r in &self.runs[self.sent..] {
            out.extend_from_slice(&self.buf[r.start..r.start + r.len]);
        }
        self.runs.clear();
        self.sent = 0;
        self.used = 0;
        segment
    }

    /// Sends the queued runs. When the socket is full the rest stay queued (wait for POLLOUT
    /// and call again); a run the kernel refuses outright is dropped and counted.
    pub fn flush(&mut self, udp: &Udp, c: &mut Counters) {
        while let Some(r) = self.runs.get(self.sent).copied() {
            match udp.send(r.dst, &self.buf[r.start..r.start + r.len], r.segment) {
                Ok(sent) => {
                    c.udp_sends += 1;
                    c.udp_datagrams_sent += r.count as u64;
                    if sent.gso {
                        c.udp_gso_sends += 1;
                    }
                    if sent.fell_back {
                        c.gso_fallbacks += 1;
                        if !self.fallback_logged {
                            self.fallback_logged = true;
                            warn!(
                                "UDP segmentation offload refused for {}-byte datagrams to {} (device without GSO, or larger than the path MTU): such runs go out one datagram per call",
                                r.segment, r.dst
                            );
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    c.tx_dropped += r.count as u64;
                    debug!("udp send to {}: {e}", r.dst);
                }
            }
            self.sent += 1;
        }
        self.runs.clear();
        self.sent = 0;
        self.used = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(s: &SendRuns) -> Vec<(u16, usize, usize)> {
        s.runs.iter().map(|r| (r.dst.port(), r.segment, r.count)).collect()
    }

    #[test]
    fn runs_group_equal_sizes_to_one_destination() {
        let (a, b): (SocketAddr, SocketAddr) = ("198.18.0.1:1".parse().unwrap(), "198.18.0.2:2".parse().unwrap());
        let mut s = SendRuns::new(16, 100);
        for (dst, n) in [(a, 80), (a, 80), (a, 80), (a, 50), (a, 50), (b, 50), (b, 60), (b, 60), (b, 60)] {
            assert!(s.push(dst, &vec![n as u8; n], 3));
        }
        // Three 80s fill a run (max_segments 3); the 50s start their own; b gets its own runs,
        // and a larger datagram after a shorter one never joins its run.
        assert_eq!(spans(&s), vec![(1, 80, 3), (1, 50, 2), (2, 50, 1), (2, 60, 3)]);
        assert_eq!(s.free_slots(), (1600 - (80 * 3 + 50 * 3 + 60 * 3)) / 100);
        let mut short = SendRuns::new(8, 100);
        for n in [70, 70, 40, 40] {
            assert!(short.push(a, &vec![0; n], 64));
        }
        // A shorter datagram ends a run: it may only be the last segment of a GSO send.
        assert_eq!(spans(&short), vec![(1, 70, 3), (1, 40, 1)]);
    }

    #[test]
    fn a_full_buffer_refuses_more() {
        let a: SocketAddr = "198.18.0.1:1".parse().unwrap();
        let mut s = SendRuns::new(2, 100);
        assert!(s.push(a, &[1; 100], 64) && s.push(a, &[1; 100], 64));
        assert!(s.room().is_none() && !s.push(a, &[1; 10], 64));
        assert!(!s.push(a, &[1; 101], 64));
    }
}
