//! Data-path workers (`routines`). Worker 0 is the daemon's main thread, which also serves
//! signals, the control socket and housekeeping; workers 1..N run on threads of their own. Each
//! has its own TUN queue (the kernel keeps a flow on one queue), its own listening socket in the
//! port's `SO_REUSEPORT` group (one sender's datagrams reach one socket), the receive sockets of
//! the established peers it owns ([`PeerOwners`]) and its own buffers. They share the one core (see
//! [`super::datapath`] for what runs under its lock). Every worker wakes for the core's next
//! deadline; the first to take the lock runs what is due, the others find nothing left.
//!
//! Workers spread peers, not the packets of one peer. Once a peer has its own receive socket
//! (about a second into its session) its datagrams arrive at its owner, which writes them to its
//! TUN queue, and the kernel's multi-queue TUN sends a flow's outgoing packets to the queue that
//! last wrote one of its incoming packets (it remembers a few thousand flows for a few seconds).
//! So a peer's traffic stays with one worker both ways and keeps its order, except when it moves:
//! at that hand-over, or when the kernel has forgotten a flow, a few packets may arrive out of
//! order, which TCP and WireGuard's replay window absorb.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, error};

use super::datapath::{Counters, DataPath, Wakeup, lock};
use super::policy::FirewallPolicy;
use crate::io::peer_sockets;
use crate::io::{PeerSockets, PollFd, Tun, Udp, UdpOptions, poll};
use crate::mesh::Node;
use crate::unixtime::UnixTime;

/// The core, shared by the workers.
pub type SharedNode = Arc<Mutex<Node<FirewallPolicy>>>;

/// How often a worker on its own thread matches its peer sockets to the established peers and
/// publishes its counters (the main thread does both in its housekeeping).
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// A worker gives its buffers' pages back once bulk traffic has stopped: a burst leaves megabytes
/// resident (coalesced super-packets, GRO receive buffers, tun-rs' coalescing tables) that an idle
/// node does not need. Traffic counts as stopped after a window of this length in which fewer than
/// [`QUIET_PACKETS`] moved (keepalives and path checks go on), so 5–10 s after the last burst.
const RELEASE_WINDOW: Duration = Duration::from_secs(5);
const QUIET_PACKETS: u64 = 64;
/// ... and only once this many packets have moved since the last release.
const RELEASE_AFTER_PACKETS: u64 = 1_000;

/// Which worker reads each established peer's own socket: a new peer goes to the worker with
/// the fewest, and stays there while its session and endpoint last.
#[derive(Debug, Default)]
pub struct PeerOwners {
    owner: HashMap<SocketAddr, usize>,
}

impl PeerOwners {
    /// Matches the table to the established peers' direct `paths`, spread over `workers`.
    pub fn update(&mut self, paths: impl IntoIterator<Item = SocketAddr>, workers: usize) {
        let mut paths: Vec<SocketAddr> = paths.into_iter().collect();
        paths.sort_unstable();
        self.owner.retain(|p, _| paths.binary_search(p).is_ok());
        let mut load = vec![0usize; workers.max(1)];
        for w in self.owner.values() {
            load[*w] += 1;
        }
        for p in paths {
            self.owner.entry(p).or_insert_with(|| {
                let least = (0..load.len()).min_by_key(|w| load[*w]).unwrap_or(0);
                load[least] += 1;
                least
            });
        }
    }

    /// The paths `worker` reads.
    pub fn of(&self, worker: usize) -> Vec<SocketAddr> {
        self.owner.iter().filter(|(_, w)| **w == worker).map(|(p, _)| *p).collect()
    }
}

/// What every worker has in common.
#[derive(Clone)]
pub struct Common {
    pub node: SharedNode,
    pub owners: Arc<Mutex<PeerOwners>>,
    pub tun: Option<Arc<Tun>>,
    /// How sockets are set up (`listen`), and packets per TUN write and receive.
    pub opts: UdpOptions,
    pub batch: usize,
    /// How many workers there are (`routines`).
    pub workers: usize,
}

/// One worker's sockets, TUN queue and buffers.
pub struct Worker {
    index: usize,
    workers: usize,
    node: SharedNode,
    owners: Arc<Mutex<PeerOwners>>,
    tun: Option<Arc<Tun>>,
    udp: Udp,
    peer_socks: PeerSockets,
    pub datapath: DataPath,
    batch: usize,
    idle: Idle,
}

/// Packets moved at the start of the current window, and at the last release.
struct Idle {
    window_start: Instant,
    window_moved: u64,
    released_at: u64,
}

/// Which of a worker's descriptors a wait found ready, and which of the caller's.
pub struct Ready {
    udp: bool,
    peers: bool,
    tun: bool,
    /// The extra descriptors passed to [`Worker::wait`], in order.
    pub extra: [bool; 2],
}

impl Worker {
    /// Worker `index`, reading queue `index` of the TUN and `udp` (a listening socket of the
    /// port's group).
    pub fn new(index: usize, common: Common, udp: Udp) -> io::Result<Worker> {
        let Common { node, owners, tun, opts, batch, workers } = common;
        let listen = udp.local_addr()?;
        let peer_socks = PeerSockets::new(listen, opts, peer_sockets::per_worker(workers))?;
        let datapath = DataPath::new(tun.as_deref(), index, &udp, batch);
        let idle = Idle { window_start: Instant::now(), window_moved: 0, released_at: 0 };
        Ok(Worker { index, workers, node, owners, tun, udp, peer_socks, datapath, batch, idle })
    }

    /// Peers that have a receive socket of their own with this worker.
    pub fn peer_sockets(&self) -> usize {
        self.peer_socks.len()
    }

    /// Waits up to `timeout` for the worker's descriptors and up to two `extra` ones. While
    /// ciphertexts wait for the socket, the TUN is left unread: its queue holds (or drops) the
    /// excess, and poll does not spin on it.
    pub fn wait(&self, extra: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<Ready> {
        let wants_write = self.datapath.wants_write();
        let mut fds = vec![PollFd::new(self.udp.as_fd(), wants_write), PollFd::new(self.peer_socks.as_fd(), false)];
        fds.extend(extra.iter().take(2).map(|fd| PollFd::new(*fd, false)));
        let tun_at = fds.len();
        if let Some(t) = &self.tun
            && !wants_write
        {
            fds.push(PollFd::new(t.queues()[self.index].as_fd(), false));
        }
        poll::wait(&mut fds, Some(timeout))?;
        let extra_ready = |i: usize| i < extra.len() && fds[2 + i].readable();
        Ok(Ready {
            udp: fds[0].readable(),
            peers: fds[1].readable(),
            tun: fds.get(tun_at).is_some_and(|f| f.readable()),
            extra: [extra_ready(0), extra_ready(1)],
        })
    }

    /// What a wakeup does: read what is ready through the core, run the core's due timers, and
    /// send and write what they queued.
    pub fn work(&mut self, ready: &Ready, wall: UnixTime) {
        let mut w = Wakeup { node: &self.node, udp: &self.udp, tun: self.tun.as_deref(), wall };
        if ready.udp || ready.peers {
            self.datapath.read_udp(&mut w, &mut self.peer_socks);
        }
        if ready.tun {
            self.datapath.read_tun(&mut w);
        }
        let now = {
            let mut node = lock(&self.node);
            let now = Instant::now();
            if node.poll_timeout() <= now {
                node.handle_timeout(now, wall);
            }
            now
        };
        self.flush();
        self.release_when_idle(now);
    }

    /// Fresh buffers once bulk traffic has stopped (a quiet [`RELEASE_WINDOW`]): the old ones are
    /// freed and the heap's free pages go back to the kernel; the new ones stay untouched (not
    /// resident) until traffic comes. The counters carry over.
    fn release_when_idle(&mut self, now: Instant) {
        if now.duration_since(self.idle.window_start) < RELEASE_WINDOW {
            return;
        }
        let c = &self.datapath.counters;
        let moved = c.tun_segments + c.udp_datagrams_received;
        let quiet = moved - self.idle.window_moved < QUIET_PACKETS;
        self.idle.window_start = now;
        self.idle.window_moved = moved;
        if !quiet || moved - self.idle.released_at < RELEASE_AFTER_PACKETS || self.datapath.wants_write() {
            return;
        }
        let counters = self.datapath.counters;
        drop(std::mem::replace(
            &mut self.datapath,
            DataPath::new(self.tun.as_deref(), self.index, &self.udp, self.batch),
        ));
        self.datapath.counters = counters;
        crate::io::memory::release_free_heap();
        self.idle.released_at = moved;
        debug!("worker {}: traffic stopped; data-path buffers given back", self.index);
    }

    /// Sends and writes what the core has queued.
    pub fn flush(&mut self) {
        self.datapath.flush(&self.node, &self.udp, self.tun.as_deref());
    }

    /// Gives the established peers this worker owns sockets of their own, and closes those of
    /// peers that are gone or moved. Worker 0 first assigns the owners.
    pub fn sync_peer_sockets(&mut self) {
        let mut owners = lock(&self.owners);
        if self.index == 0 {
            owners.update(lock(&self.node).established_direct_paths(), self.workers);
        }
        let mine = owners.of(self.index);
        drop(owners);
        for e in self.peer_socks.sync(mine) {
            debug!("{e}");
        }
    }

    fn stats(&self) -> WorkerStats {
        WorkerStats { counters: self.datapath.counters, peer_sockets: self.peer_socks.len() }
    }

    /// The loop of a worker on its own thread, until `stop` turns readable (its other end closed).
    fn run(mut self, stop: UnixStream, published: Arc<Mutex<WorkerStats>>) {
        let mut next_sync = Instant::now();
        loop {
            let deadline = lock(&self.node).poll_timeout().min(next_sync);
            let ready = match self.wait(&[stop.as_fd()], deadline.saturating_duration_since(Instant::now())) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    error!("worker {}: poll: {e}", self.index);
                    break;
                }
            };
            if ready.extra[0] {
                break;
            }
            self.work(&ready, UnixTime::now());
            let now = Instant::now();
            if now >= next_sync {
                next_sync = now + SYNC_EVERY;
                self.sync_peer_sockets();
                publish(&published, self.stats());
            }
        }
        publish(&published, self.stats());
    }
}

/// A worker's counters and peer sockets, as it last published them.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerStats {
    pub counters: Counters,
    pub peer_sockets: usize,
}

/// The workers on threads of their own (1..N; none when `routines` is 1).
pub struct Workers {
    /// Closed to stop them: their end turns readable.
    stop: Option<UnixStream>,
    threads: Vec<(JoinHandle<()>, Arc<Mutex<WorkerStats>>)>,
}

impl Workers {
    /// Starts workers 1..N beside the main thread's worker 0, each with queue `i` of the TUN
    /// and a socket of its own in the group of the socket listening on `listen`.
    pub fn start(common: &Common, listen: SocketAddr) -> io::Result<Workers> {
        let (stop, stop_rx) = UnixStream::pair()?;
        let mut threads = Vec::new();
        for index in 1..common.workers {
            let udp = Udp::sibling(listen, common.opts)
                .map_err(|e| io::Error::new(e.kind(), format!("binding worker {index}'s socket on {listen}: {e}")))?;
            let worker = Worker::new(index, common.clone(), udp)?;
            let stop_rx = stop_rx.try_clone()?;
            let published = Arc::new(Mutex::new(WorkerStats::default()));
            let mine = published.clone();
            let thread =
                std::thread::Builder::new().name(format!("worker-{index}")).spawn(move || worker.run(stop_rx, mine))?;
            threads.push((thread, published));
        }
        Ok(Workers { stop: Some(stop), threads })
    }

    /// What each worker last published (at most a second old), workers 1..N in order.
    pub fn stats(&self) -> Vec<WorkerStats> {
        self.threads.iter().map(|(_, s)| *lock(s)).collect()
    }

    /// The first worker that has stopped on its own (a poll error or a panic), if any.
    pub fn stopped(&self) -> Option<usize> {
        self.threads.iter().position(|(t, _)| t.is_finished()).map(|i| i + 1)
    }

    /// Stops every worker and waits for them; returns their final counters.
    pub fn stop(&mut self) -> Vec<WorkerStats> {
        drop(self.stop.take());
        self.threads
            .drain(..)
            .map(|(thread, stats)| {
                let _ = thread.join();
                *lock(&stats)
            })
            .collect()
    }
}

fn publish(to: &Mutex<WorkerStats>, stats: WorkerStats) {
    *lock(to) = stats;
}

#[cfg(test)]
mod tests {
    use super::PeerOwners;
    use std::net::SocketAddr;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, i], 4242))
    }

    #[test]
    fn peers_go_to_the_least_loaded_worker_and_stay_there() {
        let mut o = PeerOwners::default();
        o.update([addr(1), addr(2), addr(3)], 2);
        assert_eq!((o.of(0).len(), o.of(1).len()), (2, 1));
        // Worker 1's only peer leaves: worker 0 keeps both of its peers (nothing moves to even
        // the load), and newcomers go to the emptier worker, the lower-numbered one on a tie.
        let leaving = o.of(1)[0];
        let kept = o.of(0);
        o.update(kept.iter().copied().chain([addr(4)]), 2);
        assert_eq!(o.of(1), [addr(4)], "{o:?}");
        let mut zero = o.of(0);
        zero.sort();
        assert_eq!(zero.len(), 2);
        assert!(kept.iter().all(|p| zero.contains(p)) && !zero.contains(&leaving));
        o.update(kept.iter().copied().chain([addr(4), addr(5), addr(6)]), 2);
        let mut one = o.of(1);
        one.sort();
        assert_eq!(one, [addr(4), addr(5)], "{o:?}");
        assert!(o.of(0).contains(&addr(6)), "{o:?}");
        o.update([], 2);
        assert!(o.of(0).is_empty() && o.of(1).is_empty());
    }
}
