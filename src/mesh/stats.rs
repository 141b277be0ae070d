//! Plain counters of what the core did and dropped, read by `status` and the metrics endpoint.

/// Every drop has a counter: a malformed or unauthenticated datagram is counted, never logged
/// per packet.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub rx_datagrams: u64,
    /// Not a WireGuard or cos-mesh message, or a wrong length.
    pub rx_malformed: u64,
    /// A session index we do not have (peer restarted, or forged).
    pub rx_unknown_index: u64,
    /// A handshake initiation that boringtun could not open.
    pub rx_handshake_invalid: u64,
    /// A valid initiation from a key whose certificate we have not seen.
    pub rx_unknown_key: u64,
    /// Decryption, replay or other WireGuard errors on an existing session.
    pub rx_wireguard_errors: u64,
    /// Of those, initiations whose TAI64N timestamp is not newer than one already accepted from
    /// the same key: a replay, or a peer that restarted with its clock behind.
    pub rx_handshake_stale: u64,
    /// A tunneled packet whose source is not the peer's certificate IP or subnets.
    pub rx_spoofed: u64,
    /// A tunneled packet addressed to neither this node nor a network its certificate routes.
    pub rx_not_for_us: u64,
    pub rx_cert_rejected: u64,
    /// Handshakes from an underlay address `lighthouse.remote_allow_list` forbids.
    pub rx_remote_not_allowed: u64,
    pub rx_rate_limited: u64,
    pub rx_unsolicited: u64,
    pub tx_reply_suppressed: u64,
    /// Hello replies sent, and Hellos left unanswered because the reply budget (per source and
    /// per node, see `budget`) was spent: a replayed Hello flood shows here.
    pub tx_hello_replies: u64,
    pub tx_hello_reply_limited: u64,
    /// Packets from the TUN that are neither IPv4 nor IPv6 (the name predates IPv6).
    pub tun_dropped_not_ipv4: u64,
    pub tun_dropped_no_route: u64,
    pub tun_dropped_pending_full: u64,
    /// Packets from the host in cos-mesh's own control protocol (253), which only the daemon speaks.
    pub tun_dropped_control: u64,
    pub firewall_dropped_inbound: u64,
    pub firewall_dropped_outbound: u64,
    pub handshakes_initiated: u64,
    pub handshakes_completed: u64,
    /// Initiations that went straight to the peer their sender index names (one
    /// Diffie-Hellman less than finding the sender by its key).
    pub rx_handshake_by_index: u64,
    /// Initiations ignored because they crossed a rekey of ours that wins the tie (the lower
    /// static key keeps its own): one session instead of two.
    pub rx_handshake_crossed: u64,
    pub handshakes_timed_out: u64,
    pub sessions_expired: u64,
    pub peers_removed: u64,
    /// Control messages received through tunnels.
    pub rx_control: u64,
    /// Control messages not sent: the other node has no overlay address of a family we have
    /// (a v4-only and a v6-only node, say; a lighthouse or relay must share a family with us).
    pub tx_control_no_family: u64,
    pub rx_punches: u64,
    pub tx_punches: u64,
    /// Lighthouse: queries answered, and queries for nodes it does not know.
    pub lighthouse_queries: u64,
    pub lighthouse_unknown_queries: u64,
    /// Relay: datagrams forwarded, and refused (not a relay, target unknown or down).
    pub relay_forwarded: u64,
    pub relay_dropped: u64,
    /// Handshakes sent to direct addresses to move a relayed (or quiet) session to a direct path.
    pub direct_probes: u64,
    /// Probes of a direct path that carries traffic, and direct paths found to carry nothing
    /// (traffic moved to a relay).
    pub path_probes: u64,
    pub direct_paths_lost: u64,
}
