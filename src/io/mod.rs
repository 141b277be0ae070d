//! The thin drivers: TUN device, underlay UDP socket, netlink, signals, systemd notify. They
//! move bytes and report readiness; no protocol logic lives here (that is `mesh`, a sans-IO
//! state machine).
//!
//! # The event loop: `poll(2)` on raw fds, no async runtime
//!
//! The core is driven by `handle_*(now, …)` and drained with `poll_*()`; an async runtime would
//! add nothing but a second scheduler between the fds and that state machine. A worker is:
//!
//! ```text
//! let signals = Signals::new()?;                 // first, before any thread starts
//! let tun = Tun::create(&TunConfig::from_config(&cfg.tun, cert_ip))?;
//! let udp = Udp::from_config(&cfg.listen)?;
//! notifier.ready("…")?;                          // only now: nebula1 has its address
//! let (mut rx, mut tx) = (RecvBatch::new(batch, MAX_DATAGRAM), SendBatch::new(batch, mtu + 32));
//! loop {
//!     let timeout = core.poll_timeout().map(|t| t.saturating_duration_since(Instant::now()));
//!     let mut fds = [PollFd::new(udp.as_fd(), !tx.is_empty()), PollFd::new(tun.as_fd(), false),
//!                    PollFd::new(signals.as_fd(), false)];
//!     poll::wait(&mut fds, timeout)?;
//!     let now = Instant::now();
//!     if fds[0].readable() { while let Ok(n) = udp.recv_batch(&mut rx) { for (from, d) in rx.iter() { core.handle_datagram(now, from, d) } if n < rx.capacity() { break } } }
//!     if fds[1].readable() { while let Ok(n) = tun.read(&mut buf) { core.handle_tun_packet(now, &buf[..n]) } }
//!     core.handle_timeout(now);
//!     while let Some(t) = core.poll_transmit() { if !tx.push(t.dst, &t.bytes) { udp.send_batch(&mut tx)?; … } }
//!     udp.send_batch(&mut tx)  // WouldBlock: keep the rest, wait for POLLOUT
//!     while let Some(p) = core.poll_tun_write() { tun.write(&p)?; }
//!     match signals.next()? { Some(Signal::Reload) => …, Some(Signal::Shutdown) => break, None => {} }
//! }
//! ```
//!
//! More throughput later means more workers (`Tun` queues with `IFF_MULTI_QUEUE`, one UDP
//! socket each with `SO_REUSEPORT`), each running this same loop on its own thread.

pub mod ifaddrs;
pub mod netlink;
pub mod notify;
pub mod poll;
pub mod signals;
pub mod tun;
pub mod udp;

pub use notify::Notifier;
pub use poll::PollFd;
pub use signals::{Signal, Signals};
pub use tun::{Tun, TunConfig};
pub use udp::{RecvBatch, SendBatch, Udp};
