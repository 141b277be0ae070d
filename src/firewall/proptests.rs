//! Property: the compiled tables pick the same rule as scanning the list with the reference
//! evaluator [`Rule::matches`], for random rule sets, peers and packets.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;
use proptest::prelude::*;

use super::config::Origin;
use super::rules::{PortSel, ProtoSel};
use super::*;
use crate::cert::Fingerprint;
use crate::packet::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};

/// Ports drawn from a few values near each other so ranges overlap and touch.
const PORTS: [u16; 8] = [1, 2, 3, 80, 81, 4646, 4648, 65535];

fn port_sel() -> impl Strategy<Value = PortSel> {
    prop_oneof![
        Just(PortSel::Any),
        Just(PortSel::Fragment),
        (0..PORTS.len()).prop_map(|i| PortSel::Range(PORTS[i], PORTS[i])),
        (0..PORTS.len(), 0..PORTS.len()).prop_map(|(a, b)| PortSel::Range(PORTS[a.min(b)], PORTS[a.max(b)])),
    ]
}

fn proto_sel() -> impl Strategy<Value = ProtoSel> {
    prop_oneof![Just(ProtoSel::Any), Just(ProtoSel::Tcp), Just(ProtoSel::Udp), Just(ProtoSel::Icmp)]
}

fn pick<T: Clone + std::fmt::Debug + 'static>(options: Vec<T>) -> impl Strategy<Value = T> {
    (0..options.len()).prop_map(move |i| options[i].clone())
}

fn cidrs() -> Vec<Option<IpNet>> {
    ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.3/32", "100.64.0.0/10"].iter().map(|c| Some(c.parse().unwrap())).collect()
}

fn rule() -> impl Strategy<Value = Rule> {
    let host = pick(vec![None, Some("h1"), Some("h2"), Some("any")]);
    let groups = pick(vec![vec![], vec!["g1"], vec!["g2"], vec!["g1", "g2"], vec!["any"]]);
    let cidr = pick([vec![None, None], cidrs()].concat());
    let local = pick(vec![None, None, Some(None), Some(Some("10.20.0.0/16".parse().unwrap()))]);
    let ca = pick(vec![(None, None), (Some("ca-a"), None), (None, Some(0xbb)), (Some("ca-b"), Some(0xaa))]);
    (proto_sel(), port_sel(), host, groups, cidr, local, ca).prop_map(
        |(proto, port, host, groups, cidr, local_cidr, (ca_name, sha))| {
            let groups: Vec<String> = groups.into_iter().map(String::from).collect();
            let any_peer = host == Some("any") || groups.iter().any(|g| g == "any");
            let port = if proto == ProtoSel::Icmp { PortSel::Any } else { port };
            Rule {
                proto,
                port,
                any_peer,
                host: host.map(String::from),
                groups,
                cidr,
                local_cidr,
                ca_name: ca_name.map(String::from),
                ca_sha: sha.map(|b| Fingerprint([b; 32])),
                origin: Origin { file: Arc::from("prop"), line: 0 },
            }
        },
    )
}

fn peer() -> impl Strategy<Value = PeerIdentity> {
    let name = pick(vec!["h1", "h2", "h3"]);
    let groups = pick(vec![vec![], vec!["g1"], vec!["g2"], vec!["g1", "g2"], vec!["g3"]]);
    let ca = pick(vec![("ca-a", 0xaa), ("ca-b", 0xbb), ("ca-c", 0xcc)]);
    (name, groups, ca).prop_map(|(name, groups, (ca, sha))| {
        PeerIdentity::new(
            name,
            groups,
            vec![IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))],
            vec![],
            ca,
            Fingerprint([sha; 32]),
        )
    })
}

fn flow() -> impl Strategy<Value = Flow> {
    let proto = pick(vec![PROTO_TCP, PROTO_UDP, PROTO_ICMP, 47]);
    let port = prop_oneof![(0..PORTS.len()).prop_map(|i| PORTS[i]), any::<u16>()];
    let remote = pick(vec![Ipv4Addr::new(10, 1, 2, 3), Ipv4Addr::new(10, 2, 0, 1), Ipv4Addr::new(100, 64, 0, 7)]);
    let local = pick(vec![Ipv4Addr::new(100, 64, 0, 1), Ipv4Addr::new(10, 20, 0, 1)]);
    (proto, port.clone(), port, remote, local, any::<bool>()).prop_map(|(proto, lp, rp, remote, local, fragment)| {
        let ported = (proto == PROTO_TCP || proto == PROTO_UDP) && !fragment;
        Flow {
            proto,
            local_ip: local.into(),
            remote_ip: remote.into(),
            local_port: if ported { lp } else { 0 },
            remote_port: if ported { rp } else { 0 },
            fragment,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn tables_agree_with_reference(
        rules in prop::collection::vec(rule(), 0..40),
        probes in prop::collection::vec((flow(), peer(), any::<bool>()), 30),
        narrow_scope in any::<bool>(),
    ) {
        let mut rules = rules;
        for (i, r) in rules.iter_mut().enumerate() {
            r.origin.line = i as u32 + 1;
        }
        let scope = if narrow_scope { LocalScope::Networks(vec!["100.64.0.0/10".parse().unwrap()]) } else { LocalScope::Any };
        let table = RuleTable::new(rules.clone());
        for (flow, peer, inbound) in probes {
            let dir = if inbound { Direction::Inbound } else { Direction::Outbound };
            let want = rules.iter().find(|r| r.matches(&flow, dir, &peer, &scope)).map(|r| r.origin.line);
            let got = table.first_match(&flow, dir, &peer, &scope).map(|r| r.origin.line);
            prop_assert_eq!(got, want, "flow {:?} peer {:?} dir {:?}", flow, peer, dir);
        }
    }
}
