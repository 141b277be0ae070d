//! `cos-mesh firewall lint`: schema errors plus the rule-set mistakes that load fine but do not
//! do what their author meant, each with `file:line`.

use std::path::Path;

use serde::Serialize;

use super::config::{self, RulesError, SourcedRule};
use super::rules::{PortSel, ProtoSel, Rule};

/// How bad a finding is: errors fail `lint`, warnings only with `--strict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem, at one place.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub file: String,
    pub line: u64,
    /// A stable name for the check, for CI filters (`host-any-mixed`, `shadowed`, ...).
    pub check: &'static str,
    pub message: String,
}

/// A CA whose certificates the rules are meant for (`--ca`). A non-empty `groups` list means
/// every certificate it signs carries only groups from that list.
#[derive(Debug, Clone)]
pub struct CaConstraint {
    pub name: String,
    pub fingerprint: crate::cert::Fingerprint,
    pub groups: Vec<String>,
}

/// Lints one file (a rules file or a node config) and everything it includes.
pub fn lint_file(path: &Path, cas: &[CaConstraint]) -> Vec<Finding> {
    let mut out = Vec::new();
    let cfg = match config::load_config_or_rules(path) {
        Ok(cfg) => cfg,
        Err(e) => return vec![error_finding(&e)],
    };
    let resolved = match config::resolve(&cfg) {
        Ok(r) => r,
        Err(e) => return vec![error_finding(&e)],
    };
    out.extend(resolved.misplaced.iter().map(|e| Finding { severity: Severity::Warning, ..error_finding(e) }));
    if let Err(e) = super::Firewall::compile(&cfg, &[]) {
        // Rule errors are reported per rule below; this catches section-level ones (timeouts).
        if !matches!(e, RulesError::Field { field, .. } if !field.starts_with("conntrack")) {
            out.push(error_finding(&e));
        }
    }
    for list in [&resolved.inbound, &resolved.outbound] {
        lint_rules(list, cas, &mut out);
    }
    out.sort_by(|a, b| (&a.file, a.line, a.severity).cmp(&(&b.file, b.line, b.severity)));
    out.dedup_by(|a, b| a.file == b.file && a.line == b.line && a.message == b.message);
    out
}

fn error_finding(e: &RulesError) -> Finding {
    let (file, line) = e.position().unwrap_or_default();
    let message = match e {
        RulesError::Syntax { message, .. } => message.clone(),
        RulesError::Field { field, message, .. } => format!("{field}: {message}"),
        other => other.to_string(),
    };
    Finding { severity: Severity::Error, file, line, check: "schema", message }
}

fn warn(rule: &SourcedRule, check: &'static str, message: String) -> Finding {
    Finding {
        severity: Severity::Warning,
        file: rule.origin.file.to_string(),
        line: u64::from(rule.origin.line),
        check,
        message,
    }
}

/// The checks on one direction's rules, in order.
fn lint_rules(list: &[SourcedRule], cas: &[CaConstraint], out: &mut Vec<Finding>) {
    let mut compiled: Vec<(&SourcedRule, Rule)> = Vec::new();
    for src in list {
        written_footguns(src, out);
        match Rule::compile(src) {
            Ok(rule) => compiled.push((src, rule)),
            Err(e) => out.push(error_finding(&e)),
        }
    }
    for (j, (src, rule)) in compiled.iter().enumerate() {
        if let Some((_, broader)) = compiled[..j].iter().find(|(_, a)| covers(a, rule)) {
            out.push(warn(
                src,
                "shadowed",
                format!(
                    "never decides a verdict: the earlier rule at {} ({broader}) already allows everything it does",
                    broader.origin
                ),
            ));
        }
        ca_groups(src, rule, cas, out);
        let udp = matches!(rule.proto, ProtoSel::Udp | ProtoSel::Any) && matches!(rule.port, PortSel::Range(..));
        let frag_ok = |(_, f): &(&SourcedRule, Rule)| {
            matches!(f.proto, ProtoSel::Udp | ProtoSel::Any)
                && matches!(f.port, PortSel::Fragment | PortSel::Any)
                && covers_peer(f, rule)
        };
        if udp && !compiled.iter().any(frag_ok) {
            out.push(warn(
                src,
                "udp-fragments",
                "UDP is allowed on this port but no `port: fragment` rule (proto udp or any) covers the same peers: datagrams larger than the tunnel MTU (Serf gossip reaches 1400 bytes, tun.mtu defaults to 1300) arrive as fragments and all but the first are dropped".into(),
            ));
        }
    }
}

/// Mistakes visible in the text itself, which compile would silently accept.
fn written_footguns(src: &SourcedRule, out: &mut Vec<Finding>) {
    let s = &src.spec;
    let is_any = |v: &str| v.trim().eq_ignore_ascii_case("any");
    let host_any = s.host.as_ref().is_some_and(|h| is_any(&h.value));
    let group_any = s.group.as_ref().is_some_and(|g| is_any(&g.value));
    let others = s.group.is_some() || s.groups.is_some() || s.cidr.is_some();
    if (host_any && others) || (group_any && (s.host.is_some() || s.groups.is_some() || s.cidr.is_some())) {
        out.push(warn(src, "host-any-mixed", "`any` in host/group matches every peer, so the other host/group/groups/cidr keys of this rule have no effect; drop the `any` or split the rule".into()));
    }
    let mut named: Vec<String> = s.group.iter().map(|g| g.value.clone()).collect();
    if let Some(gs) = &s.groups {
        named.extend(gs.value.to_vec());
    }
    for g in named.iter().filter(|g| g.contains(',')) {
        out.push(warn(
            src,
            "group-comma",
            format!(
                "{g:?} is one group whose name contains a comma; to require several groups write `groups: [{}]`",
                g.split(',').map(str::trim).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    if s.code.is_some() {
        out.push(warn(src, "icmp-code", "`code` never worked in Nebula and is ignored".into()));
    }
}

/// Groups that no certificate of the CAs the rule can match may carry.
fn ca_groups(src: &SourcedRule, rule: &Rule, cas: &[CaConstraint], out: &mut Vec<Finding>) {
    let candidates: Vec<&CaConstraint> = cas
        .iter()
        .filter(|ca| {
            (rule.ca_name.is_none() && rule.ca_sha.is_none())
                || rule.ca_name.as_deref() == Some(ca.name.as_str())
                || rule.ca_sha == Some(ca.fingerprint)
        })
        .collect();
    if candidates.is_empty() {
        return;
    }
    for g in rule.groups.iter().filter(|g| *g != "any") {
        if candidates.iter().all(|ca| !ca.groups.is_empty() && !ca.groups.contains(g)) {
            let names: Vec<&str> = candidates.iter().map(|c| c.name.as_str()).collect();
            out.push(warn(src, "ca-groups", format!("no certificate signed by {} can carry group {g:?} (the CA limits groups), so this rule never matches", names.join(", "))));
        }
    }
}

/// Whether rule `a` allows at least everything rule `b` allows. Conservative: `false` when unsure.
pub fn covers(a: &Rule, b: &Rule) -> bool {
    let proto = a.proto == ProtoSel::Any || a.proto == b.proto;
    let port = match (a.port, b.port) {
        (PortSel::Any, _) | (PortSel::Fragment, PortSel::Fragment) => true,
        (PortSel::Range(a1, a2), PortSel::Range(b1, b2)) => a1 <= b1 && b2 <= a2,
        _ => false,
    };
    proto && port && covers_peer(a, b)
}

/// Whether every peer/local address `b` matches, `a` matches too.
fn covers_peer(a: &Rule, b: &Rule) -> bool {
    let ca = (a.ca_name.is_none() && a.ca_sha.is_none()) || (a.ca_name == b.ca_name && a.ca_sha == b.ca_sha);
    let local = match (a.local_cidr, b.local_cidr) {
        (Some(None), _) | (None, None) => true,
        (Some(Some(x)), Some(Some(y))) => x.contains(&y),
        _ => false,
    };
    let selectors = |r: &Rule| r.host.is_some() || !r.groups.is_empty() || r.cidr.is_some();
    let peer = if a.any_peer || !selectors(a) {
        true
    } else if b.any_peer || !selectors(b) {
        false
    } else {
        b.host.as_ref().is_none_or(|h| a.host.as_ref() == Some(h))
            && (b.groups.is_empty() || (!a.groups.is_empty() && a.groups.iter().all(|g| b.groups.contains(g))))
            && b.cidr.is_none_or(|c| a.cidr.is_some_and(|ac| ac.contains(&c)))
    };
    ca && local && peer
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(line, check, severity)` of each finding.
    type Brief = (u64, &'static str, Severity);

    fn lint_text(text: &str, cas: &[CaConstraint]) -> Vec<Brief> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.yaml");
        std::fs::write(&p, text).unwrap();
        lint_file(&p, cas).into_iter().map(|f| (f.line, f.check, f.severity)).collect()
    }

    #[test]
    fn footguns() {
        use Severity::*;
        let cases: Vec<(&str, Vec<Brief>)> = vec![
            ("inbound:\n  - {port: 22, proto: tcp, host: any, group: ops}\n", vec![(2, "host-any-mixed", Warning)]),
            ("inbound:\n  - {port: 22, proto: tcp, group: \"ops,admin\"}\n", vec![(2, "group-comma", Warning)]),
            ("inbound:\n  - {port: 22, proto: tcp, group: ops, groups: [admin]}\n", vec![(2, "schema", Error)]),
            ("inbound:\n  - {port: 32000-20000, proto: tcp, group: ops}\n", vec![(2, "schema", Error)]),
            ("inbound:\n  - {port: 65536, proto: tcp, group: ops}\n", vec![(2, "schema", Error)]),
            ("inbound:\n  - {port: 22, proto: tcp, grup: ops}\n", vec![(2, "schema", Error)]),
            (
                "inbound:\n  - {port: 1-1000, proto: tcp, group: ops}\n  - {port: 22, proto: tcp, groups: [ops, admin]}\n",
                vec![(3, "shadowed", Warning)],
            ),
            (
                "inbound:\n  - {port: 22, proto: tcp, groups: [ops, admin]}\n  - {port: 1-1000, proto: tcp, group: ops}\n",
                vec![],
            ),
            ("inbound:\n  - {port: 53, proto: udp, group: ops}\n", vec![(2, "udp-fragments", Warning)]),
            (
                "inbound:\n  - {port: 53, proto: udp, group: ops}\n  - {port: fragment, proto: udp, group: ops}\n",
                vec![],
            ),
            (
                "inbound:\n  - {port: 53, proto: udp, group: ops}\n  - {port: fragment, proto: udp, group: nomad-server}\n",
                vec![(2, "udp-fragments", Warning)],
            ),
            ("inbound:\n  - {port: 1, proto: icmp, code: 3, host: any}\n", vec![(2, "icmp-code", Warning)]),
        ];
        for (text, want) in cases {
            let got = lint_text(text, &[]);
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn ca_group_constraint() {
        let ca = CaConstraint {
            name: "prod".into(),
            fingerprint: crate::cert::Fingerprint([1; 32]),
            groups: vec!["ops".into(), "nomad-server".into()],
        };
        let text = "inbound:\n  - {port: 22, proto: tcp, group: ops}\n  - {port: 23, proto: tcp, groups: [ops, opps]}\n  - {port: 24, proto: tcp, group: opps, ca_name: other}\n";
        assert_eq!(lint_text(text, std::slice::from_ref(&ca)), vec![(3, "ca-groups", Severity::Warning)]);
        let open = CaConstraint { groups: vec![], name: "open".into(), ..ca.clone() };
        assert_eq!(lint_text(text, &[ca, open]), vec![], "another CA without a group list can carry it");
    }
}
