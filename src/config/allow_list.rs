//! `lighthouse.local_allow_list`: which of this host's addresses are reported to the
//! lighthouses, with Nebula's rules. CIDRs: the most specific match wins; when every CIDR says
//! the same, addresses matching none get the opposite (only `false` entries = allow the rest);
//! mixed values need a `0.0.0.0/0` default. `interfaces`: anchored regexes over interface names,
//! all with the same value; an interface matching none gets the opposite. An address is
//! reported when both its interface and its IP are allowed.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::schema::AllowEntry;

#[derive(Debug, Clone, Default)]
pub struct LocalAllowList {
    /// Most specific first.
    cidrs: Vec<(IpNet, bool)>,
    /// The verdict for an IP no CIDR matches.
    cidr_default: bool,
    names: Vec<regex::Regex>,
    /// The verdict for an interface a regex matches (the others get the opposite).
    names_allow: bool,
}

impl LocalAllowList {
    /// Builds the list; errors name the entry (`interfaces.docker.*`, `10.0.0.0/8`) and why.
    pub fn new(entries: &BTreeMap<String, AllowEntry>) -> Result<LocalAllowList, (String, String)> {
        let mut list = LocalAllowList { cidr_default: true, names_allow: true, ..Default::default() };
        for (key, entry) in entries {
            match (key.as_str(), entry) {
                ("interfaces", AllowEntry::Interfaces(rules)) => {
                    let mut values = rules.values();
                    if let Some(first) = values.next() {
                        if values.any(|v| v != first) {
                            return Err((
                                "interfaces".into(),
                                "all interface rules must have the same value (true or false)".into(),
                            ));
                        }
                        list.names_allow = *first;
                    }
                    for name in rules.keys() {
                        let re = regex::Regex::new(&format!("^(?:{name})$")).map_err(|e| {
                            // The regex crate's message spans lines (pattern, caret); its last says why.
                            let e = e.to_string();
                            let why = e.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
                            let why = why.trim_start_matches("error: ");
                            (format!("interfaces.{name}"), format!("{name:?} is not a regular expression: {why}"))
                        })?;
                        list.names.push(re);
                    }
                }
                ("interfaces", AllowEntry::Allow(_)) => {
                    return Err(("interfaces".into(), "must be a map of interface-name regex → true/false".into()));
                }
                (cidr, AllowEntry::Allow(allow)) => {
                    let net = cidr
                        .parse::<IpNet>()
                        .map_err(|_| (cidr.to_string(), format!("{cidr:?} is not a CIDR (e.g. 10.0.0.0/8)")))?;
                    list.cidrs.push((net.trunc(), *allow));
                }
                (cidr, AllowEntry::Interfaces(_)) => {
                    return Err((cidr.to_string(), "a CIDR's value must be true or false".into()));
                }
            }
        }
        list.cidrs.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        let has_default = list.cidrs.iter().any(|(n, _)| n.prefix_len() == 0);
        if let Some((_, first)) = list.cidrs.first()
            && !has_default
        {
            if list.cidrs.iter().any(|(_, v)| v != first) {
                return Err((
                    "0.0.0.0/0".into(),
                    "the CIDR rules mix true and false, so a default is needed: add \"0.0.0.0/0\": true or false"
                        .into(),
                ));
            }
            list.cidr_default = !first;
        }
        Ok(list)
    }

    /// Whether the address `ip` on interface `iface` may be reported to the lighthouses.
    pub fn allows(&self, iface: &str, ip: IpAddr) -> bool {
        let name_ok = match self.names.iter().any(|re| re.is_match(iface)) {
            true => self.names_allow,
            false if self.names.is_empty() => true,
            false => !self.names_allow,
        };
        let ip_ok = self.cidrs.iter().find(|(n, _)| n.contains(&ip)).map(|(_, v)| *v).unwrap_or(self.cidr_default);
        name_ok && ip_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(yaml: &str) -> LocalAllowList {
        let entries: BTreeMap<String, AllowEntry> = serde_saphyr::from_str(yaml).unwrap();
        LocalAllowList::new(&entries).unwrap()
    }

    #[test]
    fn nebula_rules_for_interfaces_and_cidrs() {
        let l = list("interfaces:\n  'docker.*': false\n  nomad: false\n");
        assert!(!l.allows("docker0", "172.17.0.1".parse().unwrap()));
        assert!(!l.allows("nomad", "172.26.64.1".parse().unwrap()));
        assert!(!l.allows("docker", "172.17.0.1".parse().unwrap()), "anchored: docker.* matches docker");
        assert!(l.allows("eth0", "198.18.0.2".parse().unwrap()));
        assert!(l.allows("xdocker0", "198.18.0.2".parse().unwrap()), "anchored at the start");

        let l = list("\"198.18.0.0/16\": true\n");
        assert!(l.allows("eth0", "198.18.1.1".parse().unwrap()));
        assert!(!l.allows("eth1", "10.1.1.1".parse().unwrap()), "only true entries: the rest is denied");

        let l = list("\"0.0.0.0/0\": true\n\"10.0.0.0/8\": false\n\"10.1.0.0/16\": true\n");
        assert!(l.allows("e", "10.1.2.3".parse().unwrap()));
        assert!(!l.allows("e", "10.2.2.3".parse().unwrap()));
        assert!(l.allows("e", "198.18.0.1".parse().unwrap()));
    }

    #[test]
    fn mixed_rules_without_default_are_refused() {
        let entries: BTreeMap<String, AllowEntry> =
            serde_saphyr::from_str("\"10.0.0.0/8\": false\n\"10.1.0.0/16\": true\n").unwrap();
        assert_eq!(LocalAllowList::new(&entries).unwrap_err().0, "0.0.0.0/0");
        let entries: BTreeMap<String, AllowEntry> =
            serde_saphyr::from_str("interfaces:\n  a: true\n  b: false\n").unwrap();
        assert!(LocalAllowList::new(&entries).unwrap_err().1.contains("same value"));
    }
}
