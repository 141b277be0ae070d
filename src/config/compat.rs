//! Nebula keys cos-mesh accepts but does not act on yet. An existing Nebula `config.yml` must
//! load unchanged, so these are not errors; each one present produces a warning naming it, so
//! the operator knows the setting has no effect here.

use std::path::Path;

use serde_json::Value;

use super::Warning;

/// Dotted key path → why it is ignored. Every entry is declared as `Unimplemented` in
/// [`super::schema`] (a unit test keeps the two in step).
pub const UNIMPLEMENTED: &[(&str, &str)] = &[
    ("cipher", "WireGuard's cipher is fixed (ChaCha20-Poly1305); cipher is ignored"),
    ("sshd", "the debug SSH server is not implemented; sshd is ignored"),
    ("preferred_ranges", "not implemented yet; all candidate addresses are tried"),
    ("timers", "not implemented; cos-mesh's timers follow WireGuard's"),
    ("local_range", "not implemented yet (deprecated in Nebula for preferred_ranges)"),
    ("tunnels", "tunnel inactivity handling is not implemented yet"),
    ("static_map", "DNS re-resolution settings are not implemented yet"),
    ("default_local_cidr_any", "not implemented"),
    ("lighthouse.remote_allow_ranges", "not implemented yet"),
    ("lighthouse.calculated_remotes", "not implemented yet"),
    ("listen.send_recv_error", "not implemented yet"),
    ("listen.accept_recv_error", "not implemented yet"),
    ("listen.so_mark", "not implemented yet"),
    ("listen.routines", "deprecated in Nebula; the top-level routines sets the workers"),
    ("listen.windows_bypass_wdf", "Windows only; ignored on Linux"),
    ("listen.rebind_on_network_change", "macOS only; ignored on Linux (address changes are followed anyway)"),
    ("tun.network_category", "Windows only; ignored on Linux"),
    ("tun.windows_bypass_wdf", "Windows only; ignored on Linux"),
    ("tun.use_system_route_table_buffer_size", "not implemented yet (nor is tun.use_system_route_table)"),
    ("firewall.conntrack.max_connections", "the connection tracker has no cap yet; not applied"),
    ("tun.drop_local_broadcast", "not implemented yet"),
    ("tun.drop_multicast", "not implemented yet"),
    ("tun.use_system_route_table", "not implemented yet"),
    ("tun.pin_threads", "not implemented yet"),
    ("tun.cpu_affinity", "not implemented yet"),
    ("tun.routines", "deprecated in Nebula; the top-level routines sets the workers"),
    ("punchy.target_all_remotes", "not implemented yet"),
    ("handshakes.trigger_buffer", "not implemented"),
    ("handshakes.query_buffer", "not implemented"),
    ("logging.disable_timestamp", "not implemented yet"),
    ("logging.timestamp_format", "not implemented yet"),
    ("stats.namespace", "not implemented yet"),
    ("stats.subsystem", "not implemented yet"),
    ("stats.interval", "not implemented yet"),
    ("stats.message_metrics", "not implemented yet"),
    ("stats.lighthouse_metrics", "not implemented yet"),
    ("stats.prefix", "graphite is not implemented"),
    ("stats.protocol", "graphite is not implemented"),
    ("stats.host", "graphite is not implemented"),
];

/// Warnings for the unimplemented keys present in one file's document.
pub fn warnings(file: &Path, doc: &Value) -> Vec<Warning> {
    UNIMPLEMENTED
        .iter()
        .filter(|(path, _)| lookup(doc, path).is_some())
        .map(|(path, why)| Warning { file: file.to_path_buf(), key: (*path).to_string(), message: (*why).to_string() })
        .collect()
}

fn lookup<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |v, k| v.as_object()?.get(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::Config;

    /// Builds `a: {b: 1}` for `a.b`, parses it as a typed config and checks it is accepted and
    /// warned about: the table and the schema's `Unimplemented` fields stay in step.
    #[test]
    fn every_listed_key_parses_and_warns() {
        for (path, _) in UNIMPLEMENTED {
            let parts: Vec<&str> = path.split('.').collect();
            let mut yaml = String::new();
            for (depth, p) in parts.iter().enumerate() {
                let value = if depth + 1 == parts.len() { " 1" } else { "" };
                yaml.push_str(&format!("{}{p}:{value}\n", "  ".repeat(depth)));
            }
            let parsed: Result<Config, _> = serde_saphyr::from_str(&yaml);
            assert!(parsed.is_ok(), "{path} is not declared in the schema: {:?}", parsed.err());
            let doc: Value = serde_saphyr::from_str(&yaml).unwrap();
            let w = warnings(Path::new("c.yml"), &doc);
            assert_eq!(w.len(), 1, "{path}");
            assert_eq!(w[0].key, *path);
        }
    }
}
