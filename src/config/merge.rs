//! Merging the files of a config directory, remembering which file set which key so a
//! validation error can name the file at fault.
//!
//! Rules (applied in file-name order): maps merge deeply; a later scalar or list replaces an
//! earlier one; except `firewall.inbound` and `firewall.outbound`, whose rules append, so role
//! rule sets kept in separate files (`10-base.yaml`, `20-nomad-client.yaml`) add up as an
//! operator expects rather than the last file silently dropping the others' rules.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Lists that append across files instead of being replaced.
const APPENDED_LISTS: &[&str] = &["firewall.inbound", "firewall.outbound"];

/// The merged document plus, for every key path set, the last file that set it.
#[derive(Debug, Default)]
pub struct Merged {
    pub value: Value,
    origins: BTreeMap<String, PathBuf>,
    last: Option<PathBuf>,
}

impl Merged {
    /// Merges `doc` (one file's document) over what is there.
    pub fn add(&mut self, file: &Path, doc: Value) {
        self.last = Some(file.to_path_buf());
        if doc.is_null() {
            return; // an empty file (or only comments) contributes nothing
        }
        if !self.value.is_object() {
            self.value = Value::Object(Map::new());
        }
        merge_into(&mut self.value, doc, "", file, &mut self.origins);
    }

    /// The file that set `path` (dotted, e.g. `tun.mtu`), or the closest enclosing key's file;
    /// the last file when nothing under that path was set (a default is at fault).
    pub fn origin(&self, path: &str) -> PathBuf {
        let mut p = path;
        loop {
            if let Some(f) = self.origins.get(p) {
                return f.clone();
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.last.clone().unwrap_or_default(),
            }
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_string() } else { format!("{prefix}.{key}") }
}

fn merge_into(dst: &mut Value, src: Value, path: &str, file: &Path, origins: &mut BTreeMap<String, PathBuf>) {
    match (dst, src) {
        (Value::Object(d), Value::Object(s)) => {
            for (k, v) in s {
                let sub = join(path, &k);
                match d.get_mut(&k) {
                    Some(existing) => merge_into(existing, v, &sub, file, origins),
                    None => {
                        record(&v, &sub, file, origins);
                        d.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(d), Value::Array(s)) if APPENDED_LISTS.contains(&path) => {
            let start = d.len();
            for (i, v) in s.into_iter().enumerate() {
                record(&v, &format!("{path}[{}]", start + i), file, origins);
                d.push(v);
            }
        }
        (d, s) => {
            origins.retain(|k, _| {
                !(k == path || k.starts_with(&format!("{path}.")) || k.starts_with(&format!("{path}[")))
            });
            record(&s, path, file, origins);
            *d = s;
        }
    }
}

/// Records `file` as the origin of `path` and of everything under it.
fn record(v: &Value, path: &str, file: &Path, origins: &mut BTreeMap<String, PathBuf>) {
    origins.insert(path.to_string(), file.to_path_buf());
    match v {
        Value::Object(m) => m.iter().for_each(|(k, v)| record(v, &join(path, k), file, origins)),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| record(v, &format!("{path}[{i}]"), file, origins)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_merge_scalars_and_lists_replace_firewall_rules_append() {
        let mut m = Merged::default();
        let (a, b) = (Path::new("a.yaml"), Path::new("b.yaml"));
        m.add(
            a,
            json!({"tun": {"dev": "nebula1", "mtu": 1420}, "lighthouse": {"hosts": ["100.64.0.1"]},
                   "firewall": {"inbound": [{"port": 22}]}}),
        );
        m.add(
            b,
            json!({"tun": {"mtu": 1300}, "lighthouse": {"hosts": ["100.64.0.2"]},
                   "firewall": {"inbound": [{"port": 4646}]}}),
        );
        assert_eq!(
            m.value,
            json!({"tun": {"dev": "nebula1", "mtu": 1300}, "lighthouse": {"hosts": ["100.64.0.2"]},
                   "firewall": {"inbound": [{"port": 22}, {"port": 4646}]}})
        );
        assert_eq!(m.origin("tun.dev"), a);
        assert_eq!(m.origin("tun.mtu"), b);
        assert_eq!(m.origin("lighthouse.hosts[0]"), b);
        assert_eq!(m.origin("firewall.inbound[0].port"), a);
        assert_eq!(m.origin("firewall.inbound[1]"), b);
        // Unset keys blame the last file.
        assert_eq!(m.origin("listen.port"), b);
    }

    #[test]
    fn empty_file_contributes_nothing() {
        let mut m = Merged::default();
        m.add(Path::new("a.yaml"), json!({"tun": {"mtu": 1}}));
        m.add(Path::new("b.yaml"), Value::Null);
        assert_eq!(m.value, json!({"tun": {"mtu": 1}}));
        assert_eq!(m.origin("tun.mtu"), Path::new("a.yaml"));
    }
}
