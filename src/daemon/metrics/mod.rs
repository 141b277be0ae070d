//! The optional Prometheus endpoint (`stats: {type: prometheus, listen, path}`): typed metrics in
//! a `prometheus-client` registry, served in OpenMetrics text by [`http`]'s small responder.
//!
//! The values live where they are counted — the sans-IO `Node` (peers, mesh and firewall
//! counters), the data path's plain counters, the DNS responder's — and are mirrored into the
//! registry once a second by [`Metrics::update`], so the hot path never touches an atomic
//! shared with a scrape.

pub mod http;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Result;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::firewall::Firewall;
use crate::mesh::{Counters as MeshCounters, PeerInfo};

/// Labels of the per-peer families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
    vpn_ip: String,
}

/// The label of the firewall verdict family.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
}

/// What the core looks like at one moment, handed to [`Metrics::update`].
pub struct Sample<'a> {
    pub peers: &'a [PeerInfo],
    pub mesh: &'a MeshCounters,
    pub firewall: &'a Firewall,
    pub cert_expiry_seconds: i64,
    /// A lighthouse's DNS responder (`lighthouse.serve_dns`), when it runs.
    pub dns: Option<&'a crate::dns::server::Counters>,
    /// The data path's counters by name (`DataPath::counters.snapshot()`).
    pub datapath: &'a [(&'static str, u64)],
}

/// The daemon's registered metrics: handles to what the registry (shared with the HTTP
/// threads) encodes on every scrape.
pub struct Metrics {
    tunnels: Gauge,
    peers: Gauge,
    peer_rx_bytes: Family<PeerLabels, Counter>,
    peer_tx_bytes: Family<PeerLabels, Counter>,
    peer_rx_packets: Family<PeerLabels, Counter>,
    peer_tx_packets: Family<PeerLabels, Counter>,
    /// One counter per field of the core's `Counters` (`cos_mesh_mesh_<field>_total`).
    mesh: BTreeMap<String, Counter>,
    cert_expiry_seconds: Gauge,
    firewall_packets: Family<VerdictLabels, Counter>,
    conntrack_entries: Gauge,
    rules_version: Gauge,
    /// One counter per data-path counter (`cos_mesh_io_<name>_total`): super-packets, segments,
    /// GSO sends, GRO receives, fallbacks, drops.
    io: BTreeMap<&'static str, Counter>,
    /// One counter per field of the DNS responder's counters (`cos_mesh_dns_<field>_total`),
    /// registered only on a lighthouse that serves DNS.
    dns: BTreeMap<String, Counter>,
    /// Peers exported last time, so departed ones leave the families.
    exported_peers: HashSet<PeerLabels>,
}

impl Metrics {
    /// Registers everything (the data-plane counters too) in a new `cos_mesh` registry.
    pub fn new(serves_dns: bool) -> (Metrics, Registry) {
        let mut registry = Registry::with_prefix("cos_mesh");
        let m = Metrics {
            tunnels: Gauge::default(),
            peers: Gauge::default(),
            peer_rx_bytes: Family::default(),
            peer_tx_bytes: Family::default(),
            peer_rx_packets: Family::default(),
            peer_tx_packets: Family::default(),
            mesh: fields(&MeshCounters::default()).map(|(name, _)| (name, Counter::default())).collect(),
            cert_expiry_seconds: Gauge::default(),
            firewall_packets: Family::default(),
            conntrack_entries: Gauge::default(),
            rules_version: Gauge::default(),
            io: crate::daemon::datapath::Counters::default()
                .snapshot()
                .into_iter()
                .map(|(name, _)| (name, Counter::default()))
                .collect(),
            dns: if serves_dns {
                fields(&crate::dns::server::Counters::default()).map(|(name, _)| (name, Counter::default())).collect()
            } else {
                BTreeMap::new()
            },
            exported_peers: HashSet::new(),
        };
        let r = &mut registry;
        r.register("tunnels", "Peers with an established session.", m.tunnels.clone());
        r.register("peers", "Peers with a verified certificate.", m.peers.clone());
        r.register("peer_rx_bytes", "Bytes received from the peer through the tunnel.", m.peer_rx_bytes.clone());
        r.register("peer_tx_bytes", "Bytes sent to the peer through the tunnel.", m.peer_tx_bytes.clone());
        r.register("peer_rx_packets", "Packets received from the peer through the tunnel.", m.peer_rx_packets.clone());
        r.register("peer_tx_packets", "Packets sent to the peer through the tunnel.", m.peer_tx_packets.clone());
        let mesh = r.sub_registry_with_prefix("mesh");
        for (name, counter) in &m.mesh {
            let help = "Events and drops of the tunnel core (see `cos-mesh status --json`).";
            mesh.register(name.as_str(), help, counter.clone());
        }
        r.register(
            "certificate_expiry_seconds",
            "Seconds until this node's certificate expires.",
            m.cert_expiry_seconds.clone(),
        );
        r.register("firewall_packets", "Firewall verdicts by outcome and drop reason.", m.firewall_packets.clone());
        r.register(
            "firewall_conntrack_entries",
            "Flows in the firewall's connection tracker.",
            m.conntrack_entries.clone(),
        );
        r.register("firewall_rules_version", "Bumped on every firewall reload.", m.rules_version.clone());
        let dns = r.sub_registry_with_prefix("dns");
        for (name, counter) in &m.dns {
            dns.register(name.as_str(), "DNS queries served by this lighthouse, by outcome.", counter.clone());
        }
        let io = r.sub_registry_with_prefix("io");
        for (name, counter) in &m.io {
            io.register(
                *name,
                "The data path: TUN reads and writes, UDP sends and receives, offloads, drops.",
                counter.clone(),
            );
        }
        (m, registry)
    }

    /// Mirrors the core's values into the registry (the event loop calls this once a second).
    pub fn update(&mut self, s: &Sample) {
        self.tunnels.set(s.peers.iter().filter(|p| p.up).count() as i64);
        self.peers.set(s.peers.len() as i64);
        let mut now_exported = HashSet::with_capacity(s.peers.len());
        for p in s.peers {
            let labels = PeerLabels { peer: p.name.clone(), vpn_ip: p.vpn_ip.to_string() };
            mirror(&self.peer_rx_bytes.get_or_create(&labels), p.rx_bytes);
            mirror(&self.peer_tx_bytes.get_or_create(&labels), p.tx_bytes);
            mirror(&self.peer_rx_packets.get_or_create(&labels), p.rx_packets);
            mirror(&self.peer_tx_packets.get_or_create(&labels), p.tx_packets);
            now_exported.insert(labels);
        }
        for gone in self.exported_peers.difference(&now_exported) {
            for family in [&self.peer_rx_bytes, &self.peer_tx_bytes, &self.peer_rx_packets, &self.peer_tx_packets] {
                family.remove(gone);
            }
        }
        self.exported_peers = now_exported;
        for (name, value) in fields(s.mesh) {
            if let Some(counter) = self.mesh.get(&name) {
                mirror(counter, value);
            }
        }
        for (name, value) in s.datapath {
            if let Some(counter) = self.io.get(name) {
                mirror(counter, *value);
            }
        }
        for (name, value) in s.dns.into_iter().flat_map(fields) {
            if let Some(counter) = self.dns.get(&name) {
                mirror(counter, value);
            }
        }
        self.cert_expiry_seconds.set(s.cert_expiry_seconds);
        for (verdict, value) in s.firewall.counters().snapshot() {
            mirror(&self.firewall_packets.get_or_create(&VerdictLabels { verdict }), value);
        }
        self.conntrack_entries.set(s.firewall.conntrack().len() as i64);
        self.rules_version.set(i64::from(s.firewall.rules_version()));
    }
}

/// Starts the endpoint: the registry goes to the HTTP threads, the handles stay with the loop.
pub fn serve(listen: &str, path: &str, serves_dns: bool) -> Result<Metrics> {
    let (metrics, registry) = Metrics::new(serves_dns);
    http::MetricsServer::start(listen, path, Arc::new(registry))?;
    Ok(metrics)
}

/// Sets a counter that mirrors a monotonic value counted elsewhere (the core's own counters).
fn mirror(counter: &Counter, value: u64) {
    counter.inner().store(value, Ordering::Relaxed);
}

/// A counter struct's fields (the core's, the DNS responder's) as (field, value) pairs.
fn fields<T: serde::Serialize>(c: &T) -> impl Iterator<Item = (String, u64)> + use<T> {
    let map = match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    map.into_iter().filter_map(|(k, v)| Some((k, v.as_u64()?)))
}
