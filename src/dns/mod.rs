//! DNS for the mesh, served by lighthouses (`lighthouse.serve_dns`, `lighthouse.dns: {host,
//! port}`), as Nebula does: a query for a node's certificate name answers its overlay address.
//! On top of Nebula, `<group>.<zone>` answers every member of a certificate group (so Nomad's or
//! Consul's `retry_join` can name `nomad-server.mesh`) and `<name>.<zone>` a node by name.
//!
//! This file is pure: [`Records`] is built from the member list the daemon publishes, and
//! [`respond`] turns one query datagram into the reply (hickory-proto reads and writes the wire
//! format). [`server`] is the UDP socket on its own thread.

pub mod server;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};

/// The zone of group and `<name>.<zone>` records when `lighthouse.dns` names none.
pub const DEFAULT_ZONE: &str = "mesh";
/// Seconds a resolver may keep an answer: membership changes within a lighthouse interval.
pub const TTL: u32 = 30;
/// Largest reply over UDP without EDNS (RFC 1035), and the most we send with it.
const CLASSIC_UDP: usize = 512;
const MAX_UDP: usize = 1232;

/// One member of the mesh as DNS sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub ipv4: Vec<Ipv4Addr>,
    /// From v2 certificates (IPv6 overlays); empty with v1 certificates.
    pub ipv6: Vec<Ipv6Addr>,
    pub groups: Vec<String>,
}

/// The answers a lighthouse gives, keyed by lower-case name without the trailing dot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    names: BTreeMap<String, Vec<IpAddr>>,
}

impl Records {
    /// Node names (bare, as Nebula answers them, and `<name>.<zone>`) and `<group>.<zone>`. A
    /// node name wins over a group of the same name.
    pub fn new(members: &[Member], zone: &str) -> Records {
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        let mut names: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        let addrs = |m: &Member| -> Vec<IpAddr> {
            m.ipv4.iter().copied().map(IpAddr::V4).chain(m.ipv6.iter().copied().map(IpAddr::V6)).collect()
        };
        for m in members {
            for g in &m.groups {
                names.entry(format!("{}.{zone}", g.to_ascii_lowercase())).or_default().extend(addrs(m));
            }
        }
        for m in members {
            let name = m.name.to_ascii_lowercase();
            names.insert(format!("{name}.{zone}"), addrs(m));
            names.insert(name, addrs(m));
        }
        for ips in names.values_mut() {
            ips.sort();
            ips.dedup();
        }
        Records { names }
    }

    pub fn lookup(&self, name: &str) -> Option<&[IpAddr]> {
        self.names.get(name).map(Vec::as_slice)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// How a datagram was handled, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with records, or NOERROR without (the name exists, not with that type).
    Answered,
    NxDomain,
    /// Unparseable, or not one IN question: FORMERR.
    Malformed,
    /// Not a standard query (update, notify...): NOTIMP.
    NotImplemented,
    /// Too short to carry a DNS header, or itself a response: no reply (never answer answers).
    Dropped,
}

/// The reply to `query` (if any) and what happened.
pub fn respond(query: &[u8], records: &Records) -> (Option<Vec<u8>>, Outcome) {
    // The 12-byte header is the least a reply can echo (its ID); shorter input is dropped.
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return (None, Outcome::Dropped);
    }
    let msg = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => {
            let id = u16::from_be_bytes([query[0], query[1]]);
            return (
                encode(Message::error_msg(id, OpCode::Query, ResponseCode::FormErr), CLASSIC_UDP),
                Outcome::Malformed,
            );
        }
    };
    let id = msg.metadata.id;
    if msg.metadata.message_type != MessageType::Query {
        return (None, Outcome::Dropped);
    }
    if msg.metadata.op_code != OpCode::Query {
        let reply = Message::error_msg(id, msg.metadata.op_code, ResponseCode::NotImp);
        return (encode(reply, CLASSIC_UDP), Outcome::NotImplemented);
    }
    let limit = match &msg.edns {
        Some(e) => usize::from(e.max_payload()).clamp(CLASSIC_UDP, MAX_UDP),
        None => CLASSIC_UDP,
    };
    let mut reply = Message::response(id, OpCode::Query);
    reply.metadata.recursion_desired = msg.metadata.recursion_desired;
    reply.metadata.authoritative = true;
    if msg.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(MAX_UDP as u16);
        reply.set_edns(e);
    }
    let [q] = msg.queries.as_slice() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return (encode(reply, limit), Outcome::Malformed);
    };
    reply.add_query(q.clone());
    if q.query_class() != DNSClass::IN {
        reply.metadata.response_code = ResponseCode::Refused;
        return (encode(reply, limit), Outcome::Malformed);
    }
    let name = q.name().to_lowercase().to_ascii();
    let Some(ips) = records.lookup(name.trim_end_matches('.')) else {
        reply.metadata.response_code = ResponseCode::NXDomain;
        return (encode(reply, limit), Outcome::NxDomain);
    };
    for ip in ips {
        let rdata = match (q.query_type(), ip) {
            (RecordType::A | RecordType::ANY, IpAddr::V4(v4)) => RData::A(A(*v4)),
            (RecordType::AAAA | RecordType::ANY, IpAddr::V6(v6)) => RData::AAAA(AAAA(*v6)),
            _ => continue,
        };
        reply.add_answer(Record::from_rdata(q.name().clone(), TTL, rdata));
    }
    (encode(reply, limit), Outcome::Answered)
}

/// The wire form of `reply` within `limit` bytes: answers are dropped (and TC set, so the
/// resolver may retry over TCP or live with fewer) until it fits.
fn encode(mut reply: Message, limit: usize) -> Option<Vec<u8>> {
    loop {
        let bytes = reply.to_vec().ok()?;
        if bytes.len() <= limit || reply.answers.is_empty() {
            return Some(bytes);
        }
        let keep = reply.answers.len() / 2;
        reply.answers.truncate(keep);
        reply.metadata.truncation = true;
    }
}

#[cfg(test)]
mod tests;
