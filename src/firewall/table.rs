//! Compiled lookup tables: rules indexed by protocol, then by port, so a verdict only looks at
//! the rules that can apply to the packet's protocol and port instead of scanning the list.
//!
//! Port ranges are cut into disjoint segments at every range boundary; each segment holds the
//! ids of the rules covering it, found by binary search. `20000-32000` is one segment, not
//! 12001 entries. Within a list, rule ids ascend, so the first peer match is the earliest rule
//! in file order; `explain` reports that rule.

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
    any_port: Vec<u32>,
    /// `port: fragment`: non-first fragments only.
    fragment: Vec<u32>,
    /// Segment starts, ascending, `starts[0] == 0`; segment `i` ends where `i + 1` starts.
    starts: Vec<u32>,
    /// Per segment, the range of `ids` holding its rules.
    spans: Vec<(u32, u32)>,
    ids: Vec<u32>,
}

impl RuleTable {
    pub fn new(rules: Vec<Rule>) -> RuleTable {
        let mut protos: [PortIndex; 4] = Default::default();
        for (p, index) in protos.iter_mut().enumerate() {
            let mine = || {
                rules
                    .iter()
                    .enumerate()
                    .filter(move |(_, r)| r.proto as usize == p)
            };
            index.any_port = mine()
                .filter(|(_, r)| r.port == PortSel::Any)
                .map(|(i, _)| i as u32)
                .collect();
            index.fragment = mine()
                .filter(|(_, r)| r.port == PortSel::Fragment)
                .map(|(i, _)| i as u32)
                .collect();
            let ranges: Vec<(u32, u32, u32)> = mine()
                .filter_map(|(i, r)| match r.port {
                    PortSel::Range(a, b) => Some((u32::from(a), u32::from(b) + 1, i as u32)),
                    _ => None,
                })
                .collect();
            index.build_segments(&ranges);
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
            let by_port: &[u32] = if flow.fragment {
                &index.fragment
            } else {
                port.map_or(&[][..], |p| index.segment(p))
            };
            for list in [&index.any_port[..], by_port] {
                for &id in list {
                    if id >= best {
                        break;
                    }
                    if self.rules[id as usize].matches_peer(flow, peer, scope) {
                        best = id;
                        break;
                    }
                }
            }
        };
        scan(&self.protos[ProtoSel::Any as usize]);
        if let Some(p) = ProtoSel::of_packet(flow.proto) {
            scan(&self.protos[p as usize]);
        }
        self.rules.get(best as usize)
    }
}

impl PortIndex {
    /// `ranges` are half-open `(start, end, rule id)` in ascending id order.
    fn build_segments(&mut self, ranges: &[(u32, u32, u32)]) {
        let mut cuts: Vec<u32> = ranges.iter().flat_map(|&(a, b, _)| [a, b]).collect();
        cuts.push(0);
        cuts.sort_unstable();
        cuts.dedup();
        for (n, &start) in cuts.iter().enumerate() {
            let end = cuts.get(n + 1).copied().unwrap_or(u32::MAX);
            let from = self.ids.len() as u32;
            // Rules covering this segment; ranges are in id order, so the ids come out sorted.
            self.ids.extend(
                ranges
                    .iter()
                    .filter(|&&(a, b, _)| a <= start && end <= b)
                    .map(|&(_, _, id)| id),
            );
            let to = self.ids.len() as u32;
            // Merge with the previous segment when it holds the same rules.
            if let Some(&(pf, pt)) = self.spans.last()
                && self.ids[pf as usize..pt as usize] == self.ids[from as usize..to as usize]
            {
                self.ids.truncate(from as usize);
                continue;
            }
            self.starts.push(start);
            self.spans.push((from, to));
        }
    }

    #[inline]
    fn segment(&self, port: u16) -> &[u32] {
        let i = self.starts.partition_point(|&s| s <= u32::from(port));
        match i.checked_sub(1).and_then(|i| self.spans.get(i)) {
            Some(&(from, to)) => &self.ids[from as usize..to as usize],
            None => &[],
        }
    }
}
