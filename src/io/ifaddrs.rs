//! The host's own addresses, which a node reports to the lighthouses (`getifaddrs(3)` through
//! `nix`).

#![forbid(unsafe_code)]

use std::net::IpAddr;

use nix::net::if_::InterfaceFlags;

/// `(interface, address)` for every IPv4 address on an interface that is up, and every IPv6
/// one too when `with_v6` (a socket bound to `::` is reachable on both); empty when the list
/// cannot be read.
pub fn ip_addresses(with_v6: bool) -> Vec<(String, IpAddr)> {
    let Ok(list) = nix::ifaddrs::getifaddrs() else {
        return vec![];
    };
    list.filter(|ifa| ifa.flags.contains(InterfaceFlags::IFF_UP))
        .filter_map(|ifa| {
            let addr = ifa.address.as_ref()?;
            let ip = match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
                (Some(v4), _) => IpAddr::V4(v4.ip()),
                (None, Some(v6)) if with_v6 => IpAddr::V6(v6.ip()),
                _ => return None,
            };
            Some((ifa.interface_name, ip))
        })
        .collect()
}
