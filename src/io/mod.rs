//! The thin drivers: TUN device, underlay UDP socket, netlink, signals, systemd notify. They
//! move bytes and report readiness; no protocol logic lives here (that is `mesh`, a sans-IO
//! state machine).
//!
//! # The event loop: `poll(2)` on raw fds, no async runtime
//!
//! The core is driven by `handle_*(now, …)` and drained with `poll_*()`; an async runtime would
//! add nothing but a second scheduler between the fds and that state machine. A worker
//! (`daemon::datapath`) moves batches end to end:
//!
//! ```text
//! TUN recv (a 64 KB TCP super-packet, split into MTU-sized segments, checksums completed)
//!   → each segment through Node::handle_tun_packet (firewall + conntrack per segment),
//!     encrypted straight into the next slot of one contiguous send buffer
//!   → runs of equal-size ciphertexts to one peer → one sendmsg with UDP_SEGMENT (GSO)
//! UDP recvmmsg with UDP_GRO (many datagrams of one peer per buffer, split at the stride),
//!   first from the established peers' own connected sockets (`peer_sockets`), then a bounded
//!   share from the listening socket, so a flood of strangers queues only there
//!   → each through Node::handle_datagram, decrypted straight into a TUN write slot with
//!     the virtio header room in front
//!   → TUN send, segments of one flow coalesced back into super-packets (GRO)
//! ```
//!
//! With `routines` > 1 each worker runs this same loop on its own thread, with its own TUN queue
//! (`IFF_MULTI_QUEUE`) and its own socket in the port's `SO_REUSEPORT` group; peers are
//! partitioned among the workers (`daemon::worker`), because the kernel stops spreading a
//! reuseport group once a connected peer socket is in it.
#![deny(clippy::undocumented_unsafe_blocks, unsafe_op_in_unsafe_fn)]

pub mod ifaddrs;
pub mod memory;
pub mod netlink;
pub mod notify;
pub mod peer_sockets;
pub mod poll;
pub mod signals;
pub mod tun;
pub mod udp;

pub use notify::Notifier;
pub use peer_sockets::PeerSockets;
pub use poll::PollFd;
pub use signals::{Signal, Signals};
pub use tun::{Tun, TunBatch, TunConfig, TunRecv};
pub use udp::{Udp, UdpOptions, UdpRecv};
