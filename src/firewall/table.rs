//! Compiled lookup tables: rules indexed by protocol, then by port, so a verdict only looks at
//! the rules that can apply to the packet's protocol and port instead of scanning the list.
//!
//! Port ranges are cut into disjoint segments at every range boundary; each segment holds the
//! ids of the rules covering it, found by binary search. `20000-32000` is one segment, not
//! 12001 entries. Within a cell, group-only rules are indexed by group, so a thousand rules on
//! one port for a thousand groups cost a lookup per peer group, not a scan. Rule ids ascend in
//! every list, so the first peer match is the earliest rule in file order; `explain` reports it.

use super::peer::PeerIdentity;
use super::rules::{Direction, LocalScope, PortSel, ProtoSel, Rule, packet_port};
use crate::packet::Flow;

/// The rules of one direction, compiled.
#[derive(Debug, Clone, Default)]
pub struct RuleTable {
    rules: Vec<Rule>,
    /// Indexed by `ProtoSel as usize`; `Any` is consulted for every packet.
    protos: [PortIndex; 4],
}

#[derive(Debug, Clone, Default)]
struct PortIndex {
    /// `port: any`: match every port and fragments.
    any_port: Bucket,
    /// `port: fragment`: non-first fragments only.
    fragment: Bucket,
    /// Segment starts, ascending, `starts[0] == 0`; segment `i` ends where `i + 1` starts.
    starts: Vec<u32>,
    /// Per segment, its index in `buckets` (adjacent segments with the same rules share one).
    segment_bucket: Vec<u32>,
    buckets: Vec<Bucket>,
}

/// The rules that apply to one (protocol, port) cell, split so that the common case, rules
/// that select peers by group only, is found by the peer's groups instead of by scanning.
#[derive(Debug, Clone, Default, PartialEq)]
struct Bucket {
    /// Rules selecting by host, cidr, `any`, CA or local_cidr alone: checked in order.
    scan: Vec<u32>,
    /// Group-only rules, keyed by one of their required groups (a peer must have all of them,
    /// so it must have that one), sorted by group.
    by_group: Vec<(Box<str>, Vec<u32>)>,
}

impl RuleTable {
    pub fn new(rules: Vec<Rule>) -> RuleTable {
        let mut protos: [PortIndex; 4] = Default::default();
        for (p, index) in protos.iter_mut().enumerate() {
            let mine = || rules.iter().enumerate().filter(move |(_, r)| r.proto as usize == p);
            let ids = |port: PortSel| mine().filter(|(_, r)| r.port == port).map(|(i, _)| i as u32).collect::<Vec<_>>();
            index.any_port = Bucket::new(&rules, &ids(PortSel::Any));
            index.fragment = Bucket::new(&rules, &ids(PortSel::Fragment));
            let ranges: Vec<(u32, u32, u32)> = mine()
                .filter_map(|(i, r)| match r.port {
                    PortSel::Range(a, b) => Some((u32::from(a), u32::from(b) + 1, i as u32)),
                    _ => None,
                })
                .collect();
            index.build_segments(&rules, &ranges);
        }
        RuleTable { rules, protos }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The first rule (in file order) that allows `flow` from `peer`, if any.
    #[inline]
    pub fn first_match(
        &self,
        flow: &Flow,
        direction: Direction,
        peer: &PeerIdentity,
        scope: &LocalScope,
    ) -> Option<&Rule> {
        let port = packet_port(flow, direction);
        let mut best = u32::MAX;
        let mut scan = |index: &PortIndex| {
            self.bucket_match(&index.any_port, flow, peer, scope, &mut best);
            if flow.fragment {
                self.bucket_match(&index.fragment, flow, peer, scope, &mut best);
            } else if let Some(b) = port.and_then(|p| index.segment(p)) {
                self.bucket_match(b, flow, peer, scope, &mut best);
            }
        };
        scan(&self.protos[ProtoSel::Any as usize]);
        if let Some(p) = ProtoSel::of_packet(flow.proto) {
            scan(&self.protos[p as usize]);
        }
        self.rules.get(best as usize)
    }

    /// Lowers `best` to the first rule of `bucket` below it that matches.
    #[inline]
    fn bucket_match(&self, bucket: &Bucket, flow: &Flow, peer: &PeerIdentity, scope: &LocalScope, best: &mut u32) {
        let mut first_in = |list: &[u32]| {
            for &id in list {
                if id >= *best {
                    break;
                }
                if self.rules[id as usize].matches_peer(flow, peer, scope) {
                    *best = id;
                    break;
                }
            }
        };
        first_in(&bucket.scan);
        if bucket.by_group.is_empty() {
            return;
        }
        for g in peer.groups() {
            if let Ok(i) = bucket.by_group.binary_search_by(|(k, _)| k.as_ref().cmp(g.as_str())) {
                first_in(&bucket.by_group[i].1);
            }
        }
    }
}

impl Bucket {
    /// `ids` ascending.
    fn new(rules: &[Rule], ids: &[u32]) -> Bucket {
        let mut b = Bucket::default();
        for &id in ids {
            let r = &rules[id as usize];
            match r.groups.first() {
                Some(g) if !r.any_peer && r.host.is_none() && r.cidr.is_none() => {
                    match b.by_group.binary_search_by(|(k, _)| k.as_ref().cmp(g.as_str())) {
                        Ok(i) => b.by_group[i].1.push(id),
                        Err(i) => b.by_group.insert(i, (g.as_str().into(), vec![id])),
                    }
                }
                _ => b.scan.push(id),
            }
        }
        b
    }
}

impl PortIndex {
    /// `ranges` are half-open `(start, end, rule id)` in ascending id order.
    fn build_segments(&mut self, rules: &[Rule], ranges: &[(u32, u32, u32)]) {
        let mut cuts: Vec<u32> = ranges.iter().flat_map(|&(a, b, _)| [a, b]).collect();
        cuts.push(0);
        cuts.sort_unstable();
        cuts.dedup();
        let mut previous: Option<Vec<u32>> = None;
        for (n, &start) in cuts.iter().enumerate() {
            let end = cuts.get(n + 1).copied().unwrap_or(u32::MAX);
            // Rules covering this segment; ranges are in id order, so the ids come out sorted.
            let ids: Vec<u32> =
                ranges.iter().filter(|&&(a, b, _)| a <= start && end <= b).map(|&(_, _, id)| id).collect();
            if previous.as_ref() == Some(&ids) {
                continue; // same rules as the segment before: extend it
            }
            self.starts.push(start);
            self.segment_bucket.push(self.buckets.len() as u32);
            self.buckets.push(Bucket::new(rules, &ids));
            previous = Some(ids);
        }
    }

    #[inline]
    fn segment(&self, port: u16) -> Option<&Bucket> {
        let i = self.starts.partition_point(|&s| s <= u32::from(port)).checked_sub(1)?;
        self.buckets.get(*self.segment_bucket.get(i)? as usize)
    }
}
