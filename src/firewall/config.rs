//! The `firewall:` section of the node config and standalone rule files, as operators write
//! them (Nebula's keys), plus `include:` resolution. Every rule and field keeps its YAML
//! position so errors, `lint` and `explain` can point at `file:line`.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_saphyr::Spanned;
use thiserror::Error;

/// The `firewall:` section (or a whole rules file: the same keys at top level).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallConfig {
    /// Rule files merged into this one, relative to this file (`firewall/nomad-server.yaml`).
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
    /// What to do with inbound packets no rule allows: `drop` (default) or `reject`.
    #[serde(default)]
    pub inbound_action: Option<Spanned<Action>>,
    #[serde(default)]
    pub outbound_action: Option<Spanned<Action>>,
    /// Nebula's deprecated switch: when false (default), a rule without `local_cidr` only matches
    /// traffic to this node's own overlay networks, not to routed subnets behind it.
    #[serde(default)]
    pub default_local_cidr_any: Option<bool>,
    #[serde(default)]
    pub conntrack: Option<ConntrackConfig>,
    #[serde(default)]
    pub inbound: Vec<Spanned<RuleSpec>>,
    #[serde(default)]
    pub outbound: Vec<Spanned<RuleSpec>>,
    /// The file this section was read from; includes resolve against its directory. Set by the
    /// loaders; a section embedded in the node config gets it from [`FirewallConfig::with_source`].
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// The response to a packet no rule allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Drop,
    /// Answer with a TCP RST or an ICMP admin-prohibited so the sender fails fast.
    Reject,
}

/// `conntrack:` timeouts, Go durations as Nebula writes them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConntrackConfig {
    pub tcp_timeout: Option<Spanned<String>>,
    pub udp_timeout: Option<Spanned<String>>,
    pub default_timeout: Option<Spanned<String>>,
    /// Accepted for Nebula compatibility; there is no per-routine cache here.
    pub routine_cache_timeout: Option<Spanned<String>>,
    /// Nebula's cap on tracked flows; accepted, and warned about (see `config::compat`): the
    /// tracker here has no cap yet.
    pub max_connections: Option<serde::de::IgnoredAny>,
}

/// One allow rule, exactly as written. Scalars stay strings until compiled, so a mistake is
/// reported with its field and position rather than as a YAML type error.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub port: Option<Spanned<Scalar>>,
    /// Never worked in Nebula; accepted and reported by `lint`.
    pub code: Option<Spanned<Scalar>>,
    pub proto: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub groups: Option<Spanned<StringOrList>>,
    pub cidr: Option<Spanned<String>>,
    pub local_cidr: Option<Spanned<String>>,
    pub ca_name: Option<Spanned<String>>,
    pub ca_sha: Option<Spanned<String>>,
}

/// A value written as a string or a number (`port: 443`, `port: "443"`, `port: 20000-32000`),
/// kept as text. YAML scalars are untyped, but a merged config directory passes through JSON,
/// where 443 is a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

impl std::ops::Deref for Scalar {
    type Target = String;
    fn deref(&self) -> &String {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `groups: a` or `groups: [a, b]`; Nebula accepts both.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s.clone()],
            StringOrList::Many(v) => v.clone(),
        }
    }
}

/// Where a rule or value was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub file: Arc<str>,
    pub line: u32,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A problem in the firewall configuration, in the operator's terms.
#[derive(Debug, Error)]
pub enum RulesError {
    #[error("reading firewall rules {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// A rules file over [`MAX_FILE`] (a mistaken `include:` of a log or a device, say).
    #[error("firewall rules {path} are larger than {MAX_FILE} bytes (4 MiB); rule files are a few kilobytes")]
    TooLarge { path: String },
    /// Malformed YAML, an unknown key or a wrongly typed value.
    #[error("{file}:{line}:{column}: {message}")]
    Syntax { file: String, line: u64, column: u64, message: String },
    /// A value that parsed as YAML but means nothing to the firewall.
    #[error("{origin}: {field}: {message}")]
    Field { origin: Origin, field: &'static str, message: String },
    #[error("{origin}: include cycle: {chain}")]
    IncludeCycle { origin: Origin, chain: String },
}

impl RulesError {
    pub(crate) fn field(origin: Origin, field: &'static str, message: impl Into<String>) -> Self {
        RulesError::Field { origin, field, message: message.into() }
    }
    /// `file:line` of the error, when it has one (for `lint --format json`).
    pub fn position(&self) -> Option<(String, u64)> {
        match self {
            RulesError::Read { path, .. } | RulesError::TooLarge { path } => Some((path.clone(), 0)),
            RulesError::Syntax { file, line, .. } => Some((file.clone(), *line)),
            RulesError::Field { origin, .. } | RulesError::IncludeCycle { origin, .. } => {
                Some((origin.file.to_string(), u64::from(origin.line)))
            }
        }
    }
}

impl FirewallConfig {
    /// Records the file this section came from, for positions and include resolution.
    pub fn with_source(mut self, path: impl Into<PathBuf>) -> Self {
        self.source = Some(path.into());
        self
    }

    /// The file name errors and origins show for this section.
    pub fn file_label(&self) -> Arc<str> {
        self.source.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "<firewall>".into()).into()
    }

    /// The position of a parsed value in this section's file.
    pub fn origin<T>(&self, s: &Spanned<T>) -> Origin {
        Origin { file: self.file_label(), line: s.referenced.line() as u32 }
    }
}

/// Parses YAML, turning serde-saphyr's error into one that names `file`.
fn parse_yaml<T: for<'de> Deserialize<'de>>(text: &str, file: &str) -> Result<T, RulesError> {
    serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
        let mut message = e.without_snippet().to_string();
        // serde-saphyr prefixes "error: line L column C: "; we print the position as file:line:col.
        if let Some(rest) = message.strip_prefix("error: ") {
            message = rest.to_string();
        }
        let prefix = format!("line {line} column {column}: ");
        if let Some(rest) = message.strip_prefix(&prefix) {
            message = rest.to_string();
        }
        let suffix = format!(" at line {line}, column {column}");
        if let Some(rest) = message.strip_suffix(&suffix) {
            message = rest.to_string();
        }
        RulesError::Syntax { file: file.to_string(), line, column, message }
    })
}

/// Largest rules file read, the limit node config files have: an `include:` naming a huge or
/// endless file (`/dev/zero`) must fail with an error, not fill memory.
const MAX_FILE: u64 = 4 << 20;

fn read(path: &Path) -> Result<String, RulesError> {
    use std::io::Read;
    let read_err = |source| RulesError::Read { path: path.display().to_string(), source };
    let f = std::fs::File::open(path).map_err(read_err)?;
    let mut text = String::new();
    f.take(MAX_FILE + 1).read_to_string(&mut text).map_err(read_err)?;
    if text.len() as u64 > MAX_FILE {
        return Err(RulesError::TooLarge { path: path.display().to_string() });
    }
    Ok(text)
}

/// Loads a standalone rules file: the `firewall:` keys at top level, e.g. `firewall/base.yaml`.
pub fn load_rules_file(path: &Path) -> Result<FirewallConfig, RulesError> {
    let text = read(path)?;
    let label = path.display().to_string();
    let cfg: Option<FirewallConfig> = parse_yaml(&text, &label)?;
    Ok(cfg.unwrap_or_default().with_source(path))
}

/// Parses rules from text, as if read from `file` (includes resolve next to it). For tests and
/// for callers that already hold the text.
pub fn parse_rules_str(text: &str, file: &Path) -> Result<FirewallConfig, RulesError> {
    let cfg: Option<FirewallConfig> = parse_yaml(text, &file.display().to_string())?;
    Ok(cfg.unwrap_or_default().with_source(file))
}

/// The only part of a node config this module reads; other keys belong to other modules.
#[derive(Deserialize)]
struct NodeConfigView {
    firewall: Option<FirewallConfig>,
}

/// The `firewall:` section of one node config file, with positions, or `None` if the file
/// has none (a config directory spreads its keys over several files).
pub fn load_node_section(path: &Path) -> Result<Option<FirewallConfig>, RulesError> {
    let text = read(path)?;
    let view: Option<NodeConfigView> = parse_yaml(&text, &path.display().to_string())?;
    Ok(view.and_then(|v| v.firewall).map(|f| f.with_source(path)))
}

/// Loads either a node config (its `firewall:` section) or a bare rules file (top-level
/// `inbound`/`outbound`/`include`). The node config is recognised by its `firewall` key.
pub fn load_config_or_rules(path: &Path) -> Result<FirewallConfig, RulesError> {
    let text = read(path)?;
    let label = path.display().to_string();
    // A `firewall:` key, even empty, marks a node config; anything else must be a rules file.
    let keys: Option<std::collections::HashMap<String, serde::de::IgnoredAny>> = parse_yaml(&text, &label)?;
    let is_node = keys.is_some_and(|k| k.contains_key("firewall"));
    if is_node {
        let view: NodeConfigView = parse_yaml(&text, &label)?;
        Ok(view.firewall.unwrap_or_default().with_source(path))
    } else {
        let cfg: Option<FirewallConfig> = parse_yaml(&text, &label)?;
        Ok(cfg.unwrap_or_default().with_source(path))
    }
}

/// A rule with the file it came from, after include resolution.
#[derive(Debug, Clone)]
pub struct SourcedRule {
    pub spec: RuleSpec,
    pub origin: Origin,
    /// The section the rule was written in, for field positions.
    pub file: Arc<str>,
}

/// All rules of a section and its includes, in order: included files first (in `include`
/// order, depth first), then the section's own rules.
#[derive(Debug, Default)]
pub struct ResolvedRules {
    pub inbound: Vec<SourcedRule>,
    pub outbound: Vec<SourcedRule>,
    /// Every file read, top first.
    pub files: Vec<String>,
    /// Included files that set keys only the top-level section may set.
    pub misplaced: Vec<RulesError>,
}

/// Reads the includes of `cfg` recursively. Include paths are relative to the including file;
/// a file that includes itself, directly or not, is an error naming the chain.
pub fn resolve(cfg: &FirewallConfig) -> Result<ResolvedRules, RulesError> {
    let mut out = ResolvedRules::default();
    let mut stack = Vec::new();
    let mut seen = BTreeSet::new();
    resolve_into(cfg, &mut out, &mut stack, &mut seen, true)?;
    Ok(out)
}

fn resolve_into(
    cfg: &FirewallConfig,
    out: &mut ResolvedRules,
    stack: &mut Vec<PathBuf>,
    seen: &mut BTreeSet<PathBuf>,
    top: bool,
) -> Result<(), RulesError> {
    let label = cfg.file_label();
    out.files.push(label.to_string());
    if let Some(src) = &cfg.source {
        stack.push(src.canonicalize().unwrap_or_else(|_| src.clone()));
    }
    if !top {
        let misplaced = [
            ("inbound_action", cfg.inbound_action.as_ref().map(|s| s.referenced.line())),
            ("outbound_action", cfg.outbound_action.as_ref().map(|s| s.referenced.line())),
        ];
        for (field, line) in misplaced {
            if let Some(line) = line {
                let origin = Origin { file: label.clone(), line: line as u32 };
                out.misplaced.push(RulesError::field(
                    origin,
                    field,
                    "only the top-level firewall section sets this; it is ignored in an included file",
                ));
            }
        }
    }
    let dir = cfg.source.as_deref().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    for inc in &cfg.include {
        let path = dir.join(&inc.value);
        let canon = path.canonicalize().unwrap_or_else(|_| path.clone());
        if stack.contains(&canon) {
            let mut chain: Vec<String> = stack.iter().map(|p| p.display().to_string()).collect();
            chain.push(canon.display().to_string());
            return Err(RulesError::IncludeCycle { origin: cfg.origin(inc), chain: chain.join(" -> ") });
        }
        if !seen.insert(canon) {
            continue; // a diamond (two files including base.yaml) merges it once
        }
        let sub = load_rules_file(&path).map_err(|e| match e {
            RulesError::Read { source, .. } => {
                RulesError::field(cfg.origin(inc), "include", format!("{}: {source}", path.display()))
            }
            RulesError::TooLarge { .. } => RulesError::field(
                cfg.origin(inc),
                "include",
                format!("{} is larger than {MAX_FILE} bytes (4 MiB); rule files are a few kilobytes", path.display()),
            ),
            other => other,
        })?;
        resolve_into(&sub, out, stack, seen, false)?;
    }
    for (list, rules) in [(&mut out.inbound, &cfg.inbound), (&mut out.outbound, &cfg.outbound)] {
        list.extend(rules.iter().map(|r| SourcedRule {
            spec: r.value.clone(),
            origin: cfg.origin(r),
            file: label.clone(),
        }));
    }
    if cfg.source.is_some() {
        stack.pop();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "r.yaml", "inbound:\n  - port: 22\n    proto: tcp\n    grup: ops\n");
        let e = load_rules_file(&p).unwrap_err().to_string();
        assert!(e.contains("r.yaml:4:5:") && e.contains("unknown field `grup`"), "{e}");
    }

    #[test]
    fn node_config_reads_only_the_firewall_key() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "node.yaml",
            "pki: {ca: x}\nlisten: {port: 4242}\nfirewall:\n  inbound:\n    - {port: 22, proto: tcp, group: ops}\n",
        );
        let cfg = load_config_or_rules(&p).unwrap();
        assert_eq!(cfg.inbound.len(), 1);
        assert_eq!(cfg.origin(&cfg.inbound[0]).line, 5);
        let p = write(d.path(), "bare.yaml", "outbound:\n  - {port: any, proto: any, host: any}\n");
        assert_eq!(load_config_or_rules(&p).unwrap().outbound.len(), 1);
        let p = write(d.path(), "empty.yaml", "pki: {}\nfirewall:\n");
        assert!(load_config_or_rules(&p).unwrap().inbound.is_empty(), "an empty firewall section");
        let p = write(d.path(), "typo.yaml", "firewal:\n  inbound: []\n");
        assert!(load_config_or_rules(&p).unwrap_err().to_string().contains("unknown field `firewal`"));
    }

    #[test]
    fn includes_merge_relative_and_detect_cycles() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "firewall/base.yaml", "outbound:\n  - {port: any, proto: any, host: any}\n");
        write(
            d.path(),
            "firewall/role.yaml",
            "include: [base.yaml]\ninbound:\n  - {port: 4647, proto: tcp, group: a}\n",
        );
        let top = write(
            d.path(),
            "node.yaml",
            "firewall:\n  include: [firewall/role.yaml, firewall/base.yaml]\n  inbound:\n    - {port: 22, proto: tcp, group: ops}\n",
        );
        let r = resolve(&load_config_or_rules(&top).unwrap()).unwrap();
        let lines: Vec<String> = r.inbound.iter().map(|s| s.origin.to_string()).collect();
        assert!(lines[0].ends_with("firewall/role.yaml:3") && lines[1].ends_with("node.yaml:4"), "{lines:?}");
        assert_eq!(r.outbound.len(), 1, "base.yaml included twice merges once");

        write(d.path(), "a.yaml", "include: [b.yaml]\n");
        write(d.path(), "b.yaml", "include: [a.yaml]\n");
        let e = resolve(&load_rules_file(&d.path().join("a.yaml")).unwrap()).unwrap_err().to_string();
        assert!(e.contains("b.yaml:1") && e.contains("include cycle"), "{e}");
        let m = write(d.path(), "m.yaml", "include: [nope.yaml]\n");
        let e = resolve(&load_rules_file(&m).unwrap()).unwrap_err().to_string();
        assert!(e.contains("m.yaml:1: include:") && e.contains("nope.yaml"), "{e}");
    }

    #[test]
    fn include_over_4_mib_is_refused_naming_the_include() {
        let d = tempfile::tempdir().unwrap();
        let big = format!("# {}\ninbound: []\n", "x".repeat(4 << 20));
        write(d.path(), "firewall/huge.yaml", &big);
        let top = write(d.path(), "node.yaml", "firewall:\n  include: [firewall/huge.yaml]\n");
        let e = resolve(&load_config_or_rules(&top).unwrap()).unwrap_err().to_string();
        assert!(e.contains("node.yaml:2: include:") && e.contains("huge.yaml is larger than 4194304 bytes"), "{e}");
        // An endless file stops at the limit instead of filling memory.
        let top = write(d.path(), "zero.yaml", "include: [/dev/zero]\n");
        let e = resolve(&load_rules_file(&top).unwrap()).unwrap_err().to_string();
        assert!(e.contains("zero.yaml:1: include: /dev/zero is larger than"), "{e}");
        // The same limit for a rules file named directly.
        let e = load_rules_file(&d.path().join("firewall/huge.yaml")).unwrap_err().to_string();
        assert!(e.starts_with("firewall rules ") && e.contains("larger than 4194304 bytes"), "{e}");
        // Up to the limit is fine.
        let fits = format!("# {}\ninbound: []\n", "x".repeat((4 << 20) - 100));
        let p = write(d.path(), "fits.yaml", &fits);
        assert!(load_rules_file(&p).is_ok());
    }

    #[test]
    fn groups_accepts_string_or_list() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "g.yaml",
            "inbound:\n  - {port: 1, proto: tcp, groups: a}\n  - {port: 1, proto: tcp, groups: [a, b]}\n",
        );
        let cfg = load_rules_file(&p).unwrap();
        let g: Vec<Vec<String>> = cfg.inbound.iter().map(|r| r.value.groups.as_ref().unwrap().value.to_vec()).collect();
        assert_eq!(g, vec![vec!["a".to_string()], vec!["a".to_string(), "b".to_string()]]);
    }
}
