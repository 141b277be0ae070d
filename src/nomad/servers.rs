//! The overlay IPs of the mesh's Nomad servers (`retry_join`): from the running daemon's member
//! list, or from the PKI inventory. Both select the same thing, members of group `nomad-server`,
//! so the two sources agree on a healthy mesh.

use std::net::Ipv4Addr;

use serde_json::Value;

use super::SERVER_GROUP;
use crate::inventory::Inventory;

/// Servers in the daemon's answer to `members` (`{"members":[{"name","vpn_ip","groups"}]}`),
/// sorted and without duplicates.
pub fn from_members(answer: &Value) -> Vec<Ipv4Addr> {
    members_in_group(answer, SERVER_GROUP)
}

/// Nodes of the inventory whose groups (role groups and extra groups) include `nomad-server`.
pub fn from_inventory(inv: &Inventory) -> Vec<Ipv4Addr> {
    inventory_group(inv, SERVER_GROUP)
}

/// Members of `group` in the daemon's answer (e.g. `consul-server` for Consul's retry_join).
pub fn members_in_group(answer: &Value, group: &str) -> Vec<Ipv4Addr> {
    let members = answer["members"].as_array().map(Vec::as_slice).unwrap_or_default();
    let in_group = |m: &&Value| m["groups"].as_array().is_some_and(|gs| gs.iter().any(|g| g == group));
    let ips = members.iter().filter(in_group).filter_map(|m| m["vpn_ip"].as_str()?.parse().ok());
    sorted(ips.collect())
}

/// Nodes of the inventory in `group`.
/// Nodes of the inventory in `group`, by their IPv4 overlay address (the Nomad and Consul
/// settings cos-mesh writes bind IPv4; an IPv6-only node is left out).
pub fn inventory_group(inv: &Inventory, group: &str) -> Vec<Ipv4Addr> {
    let v4 = |n: &crate::inventory::Node| match n.ip.addr() {
        std::net::IpAddr::V4(ip) => Some(ip),
        std::net::IpAddr::V6(_) => None,
    };
    sorted(inv.with_group(group).filter_map(v4).collect())
}

fn sorted(mut ips: Vec<Ipv4Addr>) -> Vec<Ipv4Addr> {
    ips.sort();
    ips.dedup();
    ips
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_of_the_server_group_only() {
        let answer = json!({"members": [
            {"name": "s2", "vpn_ip": "100.64.0.12", "groups": ["nomad-server"]},
            {"name": "c1", "vpn_ip": "100.64.1.1", "groups": ["nomad-client"]},
            {"name": "s1", "vpn_ip": "100.64.0.11", "groups": ["ops", "nomad-server"]},
            {"name": "odd", "vpn_ip": null, "groups": ["nomad-server"]},
        ]});
        assert_eq!(from_members(&answer), ["100.64.0.11".parse::<Ipv4Addr>().unwrap(), "100.64.0.12".parse().unwrap()]);
        assert!(from_members(&json!({})).is_empty());
    }
}
