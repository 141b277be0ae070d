//! One compiled allow rule and its matching semantics, which are Nebula's:
//! `port AND proto AND (ca_sha OR ca_name) AND (host OR group OR groups OR cidr) AND local_cidr`.
//! [`Rule::matches`] is the plain reference evaluator; the tables in `table.rs` must agree with it.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::config::{Origin, RulesError, SourcedRule};
use super::peer::PeerIdentity;
use crate::cert::Fingerprint;
use crate::packet::{Flow, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

/// Which traffic a rule list applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Packets arriving from the tunnel; rules match the local (destination) port.
    Inbound,
    /// Packets this node sends into the tunnel; rules match the remote (destination) port.
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// `proto:` of a rule. The discriminant is the table index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoSel {
    Any = 0,
    Tcp = 1,
    Udp = 2,
    Icmp = 3,
}

impl ProtoSel {
    /// The table a packet's protocol is looked up in besides `Any`; `None` for protocols that
    /// only `proto: any` rules can allow.
    pub fn of_packet(proto: u8) -> Option<ProtoSel> {
        match proto {
            PROTO_TCP => Some(ProtoSel::Tcp),
            PROTO_UDP => Some(ProtoSel::Udp),
            PROTO_ICMP | PROTO_ICMPV6 => Some(ProtoSel::Icmp),
            _ => None,
        }
    }
    fn name(self) -> &'static str {
        ["any", "tcp", "udp", "icmp"][self as usize]
    }
}

/// `port:` of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortSel {
    /// `any` or `0`: every port, and non-first fragments too.
    Any,
    /// Non-first IP fragments only (they carry no ports).
    Fragment,
    /// Inclusive range, `1 <= start <= end`.
    Range(u16, u16),
}

/// The port a rule of `direction` compares, or `None` when the packet has no ports to compare
/// (non-TCP/UDP, or a non-first fragment).
pub fn packet_port(flow: &Flow, direction: Direction) -> Option<u16> {
    if flow.fragment || !(flow.proto == PROTO_TCP || flow.proto == PROTO_UDP) {
        return None;
    }
    Some(match direction {
        Direction::Inbound => flow.local_port,
        Direction::Outbound => flow.remote_port,
    })
}

/// Where this node's own traffic is addressed, for rules without `local_cidr`.
#[derive(Debug, Clone, Default)]
pub enum LocalScope {
    /// Any local address (`default_local_cidr_any: true`, or local networks unknown).
    #[default]
    Any,
    /// Only these networks (this node's overlay networks), not subnets routed behind it.
    Networks(Vec<IpNet>),
}

impl LocalScope {
    fn contains(&self, ip: IpAddr) -> bool {
        match self {
            LocalScope::Any => true,
            LocalScope::Networks(nets) => nets.iter().any(|n| n.contains(&ip)),
        }
    }
}

/// A validated allow rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub proto: ProtoSel,
    pub port: PortSel,
    /// `host: any`, `group: any` or an all-covering `cidr`: every peer passes the peer test.
    pub any_peer: bool,
    pub host: Option<String>,
    /// From `group` or `groups`; the peer needs all of them.
    pub groups: Vec<String>,
    pub cidr: Option<IpNet>,
    /// `None`: the scope of [`LocalScope`]; `Some(None)`: `local_cidr: any`.
    pub local_cidr: Option<Option<IpNet>>,
    pub ca_name: Option<String>,
    pub ca_sha: Option<Fingerprint>,
    pub origin: Origin,
}

impl Rule {
    /// Validates one rule as written; errors name the rule's file, line and field.
    pub fn compile(src: &SourcedRule) -> Result<Rule, RulesError> {
        let s = &src.spec;
        let at = |line: u64| Origin { file: src.file.clone(), line: line as u32 };
        let err = |line: u64, field: &'static str, msg: String| RulesError::field(at(line), field, msg);
        let rule_line = u64::from(src.origin.line);

        let proto = match &s.proto {
            None => {
                return Err(err(rule_line, "proto", "missing; use any, tcp, udp or icmp".into()));
            }
            Some(p) => match p.value.trim().to_ascii_lowercase().as_str() {
                "any" => ProtoSel::Any,
                "tcp" => ProtoSel::Tcp,
                "udp" => ProtoSel::Udp,
                "icmp" => ProtoSel::Icmp,
                other => {
                    return Err(err(p.referenced.line(), "proto", format!("{other:?} is not any, tcp, udp or icmp")));
                }
            },
        };
        let port = match (&s.port, proto) {
            // ICMP has no ports; Nebula 1.11 ignores `port` on ICMP rules.
            (_, ProtoSel::Icmp) => PortSel::Any,
            (None, _) => {
                return Err(err(rule_line, "port", "missing; use N, A-B, any or fragment".into()));
            }
            (Some(p), _) => parse_port(&p.value).map_err(|m| err(p.referenced.line(), "port", m))?,
        };
        if let (Some(_), Some(gs)) = (&s.group, &s.groups) {
            return Err(err(
                gs.referenced.line(),
                "groups",
                "use either group (one) or groups (all of a list), not both".into(),
            ));
        }
        let mut groups: Vec<String> = match (&s.group, &s.groups) {
            (Some(g), _) => vec![g.value.trim().to_string()],
            (_, Some(gs)) => gs.value.to_vec().into_iter().map(|g| g.trim().to_string()).collect(),
            _ => Vec::new(),
        };
        groups.retain(|g| !g.is_empty());
        groups.sort();
        groups.dedup();
        let host = s.host.as_ref().map(|h| h.value.trim().to_string()).filter(|h| !h.is_empty());
        let cidr = match &s.cidr {
            None => None,
            Some(c) => parse_cidr(&c.value).map_err(|m| err(c.referenced.line(), "cidr", m))?,
        };
        let local_cidr = match &s.local_cidr {
            None => None,
            Some(c) => Some(parse_cidr(&c.value).map_err(|m| err(c.referenced.line(), "local_cidr", m))?),
        };
        let ca_sha = match &s.ca_sha {
            None => None,
            Some(c) => Some(c.value.parse::<Fingerprint>().map_err(|m| err(c.referenced.line(), "ca_sha", m))?),
        };
        let ca_name = s.ca_name.as_ref().map(|c| c.value.trim().to_string()).filter(|c| !c.is_empty());
        let cidr_any = s.cidr.is_some() && cidr.is_none();
        let any_peer = host.as_deref() == Some("any") || groups.iter().any(|g| g == "any") || cidr_any;
        if host.is_none()
            && groups.is_empty()
            && s.cidr.is_none()
            && local_cidr.is_none()
            && ca_name.is_none()
            && ca_sha.is_none()
        {
            return Err(err(
                rule_line,
                "host",
                "a rule needs at least one of host, group, groups, cidr, local_cidr, ca_name or ca_sha (use host: any to allow every peer)".into(),
            ));
        }
        Ok(Rule { proto, port, any_peer, host, groups, cidr, local_cidr, ca_name, ca_sha, origin: src.origin.clone() })
    }

    /// The reference evaluator: does this rule allow `flow` from `peer`?
    pub fn matches(&self, flow: &Flow, direction: Direction, peer: &PeerIdentity, scope: &LocalScope) -> bool {
        let proto_ok = match self.proto {
            ProtoSel::Any => true,
            p => ProtoSel::of_packet(flow.proto) == Some(p),
        };
        let port_ok = match self.port {
            PortSel::Any => true,
            PortSel::Fragment => flow.fragment,
            PortSel::Range(a, b) => packet_port(flow, direction).is_some_and(|p| a <= p && p <= b),
        };
        proto_ok && port_ok && self.matches_peer(flow, peer, scope)
    }

    /// Everything but port and proto, which the tables have already settled.
    #[inline]
    pub fn matches_peer(&self, flow: &Flow, peer: &PeerIdentity, scope: &LocalScope) -> bool {
        let ca_ok = (self.ca_sha.is_none() && self.ca_name.is_none())
            || self.ca_sha == Some(peer.ca_fingerprint)
            || self.ca_name.as_deref() == Some(peer.ca_name.as_str());
        if !ca_ok {
            return false;
        }
        let selectors = self.host.is_some() || !self.groups.is_empty() || self.cidr.is_some();
        let peer_ok = self.any_peer
            || !selectors
            || self.host.as_deref() == Some(peer.name.as_str())
            || (!self.groups.is_empty() && self.groups.iter().all(|g| peer.has_group(g)))
            || self.cidr.is_some_and(|c| c.contains(&flow.remote_ip));
        if !peer_ok {
            return false;
        }
        match self.local_cidr {
            None => scope.contains(flow.local_ip),
            Some(None) => true,
            Some(Some(net)) => net.contains(&flow.local_ip),
        }
    }
}

impl fmt::Display for Rule {
    /// A one-line summary in the YAML's own terms, for `explain` and `lint`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "proto: {}, port: ", self.proto.name())?;
        match self.port {
            PortSel::Any => f.write_str("any")?,
            PortSel::Fragment => f.write_str("fragment")?,
            PortSel::Range(a, b) if a == b => write!(f, "{a}")?,
            PortSel::Range(a, b) => write!(f, "{a}-{b}")?,
        }
        if let Some(h) = &self.host {
            write!(f, ", host: {h}")?;
        }
        match self.groups.as_slice() {
            [] => {}
            [g] => write!(f, ", group: {g}")?,
            gs => write!(f, ", groups: [{}]", gs.join(", "))?,
        }
        if self.any_peer && self.host.is_none() && self.groups.is_empty() {
            f.write_str(", cidr: any")?;
        } else if let Some(c) = self.cidr {
            write!(f, ", cidr: {c}")?;
        }
        match self.local_cidr {
            Some(None) => f.write_str(", local_cidr: any")?,
            Some(Some(c)) => write!(f, ", local_cidr: {c}")?,
            None => {}
        }
        if let Some(c) = &self.ca_name {
            write!(f, ", ca_name: {c}")?;
        }
        if let Some(c) = &self.ca_sha {
            write!(f, ", ca_sha: {c}")?;
        }
        Ok(())
    }
}

/// `N`, `A-B`, `any`, `0` or `fragment`.
pub fn parse_port(text: &str) -> Result<PortSel, String> {
    let t = text.trim();
    match t.to_ascii_lowercase().as_str() {
        "any" | "0" => return Ok(PortSel::Any),
        "fragment" => return Ok(PortSel::Fragment),
        _ => {}
    }
    let one = |s: &str| -> Result<u16, String> {
        let n: i64 = s.trim().parse().map_err(|_| format!("{t:?} is not a port: use N, A-B, any or fragment"))?;
        if !(1..=65535).contains(&n) {
            return Err(format!("{t:?}: port {n} is out of range 1-65535"));
        }
        Ok(n as u16)
    };
    // A leading '-' is a negative number, not a range separator.
    match t[1.min(t.len())..].find('-').map(|i| i + 1) {
        None => one(t).map(|p| PortSel::Range(p, p)),
        Some(i) => {
            let (a, b) = (one(&t[..i])?, one(&t[i + 1..])?);
            if a > b {
                return Err(format!("{t:?}: range start {a} is greater than its end {b}"));
            }
            Ok(PortSel::Range(a, b))
        }
    }
}

/// An IP network, or `any` (returned as `None`). A bare address means that one host.
fn parse_cidr(text: &str) -> Result<Option<IpNet>, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("any") {
        return Ok(None);
    }
    let net = match t.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => t
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("{t:?} is not an IP network such as 100.64.0.0/10"))?,
    };
    Ok(if net.prefix_len() == 0 { None } else { Some(net.trunc()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        let ok = [
            ("any", PortSel::Any),
            ("0", PortSel::Any),
            ("fragment", PortSel::Fragment),
            ("4646", PortSel::Range(4646, 4646)),
            ("20000-32000", PortSel::Range(20000, 32000)),
            (" 1 - 65535 ", PortSel::Range(1, 65535)),
        ];
        for (t, want) in ok {
            assert_eq!(parse_port(t), Ok(want), "{t}");
        }
        let bad = [
            ("32000-20000", "greater than its end"),
            ("70000", "out of range"),
            ("-1", "out of range"),
            ("0-10", "out of range"),
            ("http", "is not a port"),
            ("1-2-3", "is not a port"),
            ("", "is not a port"),
        ];
        for (t, want) in bad {
            let e = parse_port(t).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("any"), Ok(None));
        assert_eq!(parse_cidr("0.0.0.0/0"), Ok(None));
        assert_eq!(parse_cidr("100.64.1.7/16").unwrap(), Some("100.64.0.0/16".parse().unwrap()));
        assert_eq!(parse_cidr("10.0.0.1").unwrap(), Some("10.0.0.1/32".parse().unwrap()));
        assert!(parse_cidr("10.0.0.300/8").is_err());
    }
}
