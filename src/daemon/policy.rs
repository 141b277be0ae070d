//! The stateful firewall as the mesh core's packet policy.

use std::time::Instant;

use crate::cert::pool::VerifiedCert;
use crate::firewall::{self, Firewall, PeerIdentity};
use crate::mesh::{Direction, Policy, Verdict};
use crate::packet::{MAX_REJECT_LEN, build_reject};

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
}
