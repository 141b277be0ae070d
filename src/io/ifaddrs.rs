//! The host's own IPv4 addresses, which a node reports to the lighthouses (`getifaddrs(3)`
//! through `nix`).

#![forbid(unsafe_code)]

use std::net::Ipv4Addr;

use nix::net::if_::InterfaceFlags;

/// `(interface, address)` for every IPv4 address on an interface that is up; empty when the
/// list cannot be read.
pub fn ipv4_addresses() -> Vec<(String, Ipv4Addr)> {
    let Ok(list) = nix::ifaddrs::getifaddrs() else {
        return vec![];
    };
    list.filter(|ifa| ifa.flags.contains(InterfaceFlags::IFF_UP))
        .filter_map(|ifa| {
            let ip = ifa.address.as_ref()?.as_sockaddr_in()?.ip();
            Some((ifa.interface_name, ip))
        })
        .collect()
}
