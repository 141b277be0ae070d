//! Resolves the names in `static_host_map` off the event loop: a lookup can block for seconds
//! when a resolver is unreachable, and the data path must not wait for it. IP literals need no
//! lookup and are used at once.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use super::setup::{self, StaticHostMap};

/// How often names are looked up again (a lighthouse may move).
const EVERY: Duration = Duration::from_secs(30);

/// Resolved static hosts, and a message for each name that did not resolve.
pub type Resolved = (HashMap<IpAddr, Vec<SocketAddr>>, Vec<String>);

pub struct Resolver {
    requests: Sender<StaticHostMap>,
    results: Receiver<Resolved>,
}

impl Resolver {
    /// Starts the resolver thread for `map` (and resolves it at once).
    pub fn start(map: StaticHostMap) -> Resolver {
        let (requests, rx) = channel::<StaticHostMap>();
        let (tx, results) = channel();
        std::thread::Builder::new()
            .name("cos-mesh-dns".into())
            .spawn(move || {
                let mut map = map;
                loop {
                    if tx.send(setup::resolve_static_hosts(&map)).is_err() {
                        return; // the daemon is gone
                    }
                    match rx.recv_timeout(EVERY) {
                        Ok(new) => map = new,
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            })
            .expect("spawning the resolver thread");
        Resolver { requests, results }
    }

    /// A new map (reload): resolved at once.
    pub fn update(&self, map: StaticHostMap) {
        let _ = self.requests.send(map);
    }

    /// The latest resolution, if one finished since the last call.
    pub fn poll(&self) -> Option<Resolved> {
        let mut latest = None;
        while let Ok(r) = self.results.try_recv() {
            latest = Some(r);
        }
        latest
    }
}

/// The IP-literal entries of `map`, usable without any lookup.
pub fn literals(map: &StaticHostMap) -> HashMap<IpAddr, Vec<SocketAddr>> {
    map.iter()
        .map(|(ip, us)| {
            let addrs = us
                .iter()
                .filter_map(|u| match &u.host {
                    crate::config::UnderlayHost::Ip(a) => Some(SocketAddr::new(*a, u.port)),
                    crate::config::UnderlayHost::Dns(_) => None,
                })
                .collect();
            (ip.0, addrs)
        })
        .collect()
}
