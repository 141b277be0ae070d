//! Settings a reload cannot apply: the TUN device, the UDP socket, the control and metrics
//! endpoints, and the core's start-time parameters. A reload compares them with what the daemon
//! started with and names every one that changed, so "reloaded" never hides a kept old value.

use crate::config::Config;

/// The restart-only settings of a config, each as (key path, value shown to the operator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartOnly(Vec<(&'static str, String)>);

impl RestartOnly {
    pub fn of(c: &Config) -> RestartOnly {
        let show = |v: &dyn std::fmt::Debug| format!("{v:?}");
        RestartOnly(vec![
            ("tun.dev", c.tun.dev.clone()),
            ("tun.disabled", c.tun.disabled.to_string()),
            ("tun.mtu", c.tun.mtu.to_string()),
            ("tun.tx_queue", c.tun.tx_queue.to_string()),
            ("tun.routes", show(&c.tun.routes)),
            ("tun.unsafe_routes", show(&c.tun.unsafe_routes)),
            ("listen.host", c.listen.host.to_string()),
            ("listen.port", c.listen.port.to_string()),
            ("listen.batch", c.listen.batch.to_string()),
            ("listen.read_buffer", show(&c.listen.read_buffer)),
            ("listen.write_buffer", show(&c.listen.write_buffer)),
            ("routines", c.routines().to_string()),
            ("control.socket", c.control_socket().to_string()),
            ("stats", show(&(&c.stats.kind, &c.stats.listen, &c.stats.path))),
            ("handshakes.try_interval", show(&c.handshakes.try_interval.0)),
            ("handshakes.retries", c.handshakes.retries.to_string()),
            ("pki.disconnect_invalid", c.pki.disconnect_invalid.to_string()),
            ("logging.format", show(&c.logging.format)),
        ])
    }

    /// The settings whose value differs in `new`.
    pub fn changed(&self, new: &RestartOnly) -> Vec<RestartPending> {
        self.0
            .iter()
            .zip(&new.0)
            .filter(|(a, b)| a.1 != b.1)
            .map(|((key, old), (_, new))| RestartPending { key, old: old.clone(), new: new.clone() })
            .collect()
    }
}

/// A changed setting that only a restart applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPending {
    pub key: &'static str,
    pub old: String,
    pub new: String,
}

/// As the control socket's `reload` answer lists it: the printed form.
impl serde::Serialize for RestartPending {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `key (old → new)`; long values by key alone.
impl std::fmt::Display for RestartPending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let RestartPending { key, old, new } = self;
        if old.len() + new.len() <= 60 { write!(f, "{key} ({old} → {new})") } else { f.write_str(key) }
    }
}

#[cfg(test)]
mod tests {
    use super::RestartOnly;
    use crate::config::Config;

    fn parse(yaml: &str) -> Config {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn changed_keys_are_named_with_old_and_new_values() {
        let old = RestartOnly::of(&parse("tun:\n  dev: nebula1\nlisten:\n  port: 4242\n"));
        let same = RestartOnly::of(&parse("tun:\n  dev: nebula1\nlisten:\n  port: 4242\nlighthouse:\n  interval: 5\n"));
        assert!(old.changed(&same).is_empty(), "reloadable keys are not restart-only");
        let new = RestartOnly::of(&parse("tun:\n  dev: nebula2\nlisten:\n  port: 4243\nroutines: 2\n"));
        assert_eq!(
            old.changed(&new).iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec![
                "tun.dev (nebula1 → nebula2)",
                "listen.port (4242 → 4243)",
                "routines (1 → 2)",
                // The default socket follows tun.dev; the running one stays where it is.
                "control.socket (@cos-mesh/nebula1 → @cos-mesh/nebula2)"
            ]
        );
    }
}
