//! The stateful firewall as the mesh core's packet policy.

use std::time::Instant;

use crate::cert::pool::VerifiedCert;
use crate::firewall::Action;
use crate::firewall::{self, Firewall, PeerIdentity};
use crate::mesh::{Direction, Policy, ProbeVerdict, Verdict};
use crate::packet::{Flow, MAX_REJECT_LEN, build_reject};

pub struct FirewallPolicy {
    pub fw: Firewall,
}

impl Policy for FirewallPolicy {
    type Peer = PeerIdentity;

    fn peer(&self, cert: &VerifiedCert) -> PeerIdentity {
        PeerIdentity::from(cert)
    }

    fn check(&mut self, now: Instant, dir: Direction, peer: &PeerIdentity, packet: &[u8]) -> Verdict {
        let v = match dir {
            Direction::Inbound => self.fw.inbound(packet, peer, now),
            Direction::Outbound => self.fw.outbound(packet, peer, now),
        };
        match v {
            firewall::Verdict::Allow => Verdict::Allow,
            firewall::Verdict::Drop(_) => Verdict::Drop,
            firewall::Verdict::Reject(_) => {
                let mut buf = [0u8; MAX_REJECT_LEN];
                match build_reject(packet, &mut buf) {
                    Ok(n) => Verdict::Reject(buf[..n].to_vec()),
                    Err(_) => Verdict::Drop,
                }
            }
        }
    }

    /// The rules alone decide (as for a flow's first packet); conntrack is not consulted nor
    /// changed.
    fn would_pass(&self, dir: Direction, peer: &PeerIdentity, flow: &Flow) -> ProbeVerdict {
        let dir = match dir {
            Direction::Inbound => firewall::Direction::Inbound,
            Direction::Outbound => firewall::Direction::Outbound,
        };
        if peer.owns_address(flow.remote_ip) && self.fw.evaluate(dir, flow, peer).is_some() {
            return ProbeVerdict::Allow;
        }
        match self.fw.action(dir) {
            Action::Drop => ProbeVerdict::Drop,
            Action::Reject => ProbeVerdict::Reject,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Instant;

    use super::FirewallPolicy;
    use crate::cert::Fingerprint;
    use crate::firewall::{Firewall, PeerIdentity, config::parse_rules_str};
    use crate::mesh::{Direction, Policy, Probe, ProbeVerdict};

    fn policy(yaml: &str) -> FirewallPolicy {
        let cfg = parse_rules_str(yaml, "rules.yaml".as_ref()).unwrap();
        FirewallPolicy { fw: Firewall::compile(&cfg, &[]).unwrap() }
    }

    #[test]
    fn probes_get_the_rules_verdict_and_leave_conntrack_alone() {
        let us = IpAddr::V4(Ipv4Addr::new(100, 64, 0, 1));
        let them = IpAddr::V4(Ipv4Addr::new(100, 64, 0, 2));
        let client = PeerIdentity::new("client-1", ["nomad-client"], vec![them], vec![], "ca", Fingerprint([0; 32]));
        let other = PeerIdentity::new("web-1", ["web"], vec![them], vec![], "ca", Fingerprint([0; 32]));
        let mut p = policy(
            "inbound:\n  - {port: 4647, proto: tcp, group: nomad-client}\n  - {port: any, proto: icmp, host: any}\n",
        );
        let nomad = Probe::Tcp(4647).flow(us, them, true);
        assert_eq!(p.would_pass(Direction::Inbound, &client, &nomad), ProbeVerdict::Allow);
        assert_eq!(p.would_pass(Direction::Inbound, &other, &nomad), ProbeVerdict::Drop);
        assert_eq!(p.would_pass(Direction::Inbound, &other, &Probe::Tcp(22).flow(us, them, true)), ProbeVerdict::Drop);
        assert_eq!(
            p.would_pass(Direction::Inbound, &other, &Probe::IcmpEcho.flow(us, them, true)),
            ProbeVerdict::Allow
        );
        // Outbound has no rules here: default deny.
        assert_eq!(p.would_pass(Direction::Outbound, &client, &nomad), ProbeVerdict::Drop);
        assert!(p.fw.conntrack().is_empty(), "a probe creates no flow");
        // A real packet of the same flow does create one, which the probe then ignores.
        assert_eq!(
            p.fw.flow(crate::firewall::Direction::Inbound, &nomad, &client, Instant::now()),
            crate::firewall::Verdict::Allow
        );
        assert_eq!(p.fw.conntrack().len(), 1);
        assert_eq!(p.would_pass(Direction::Inbound, &other, &nomad), ProbeVerdict::Drop);
        let r = policy("inbound_action: reject\ninbound:\n  - {port: 4646, proto: tcp, host: any}\n");
        assert_eq!(r.would_pass(Direction::Inbound, &client, &nomad), ProbeVerdict::Reject);
    }
}
