//! Leaf value types of the configuration: where PEM comes from, overlay and underlay
//! addresses, Go durations. Each parses from the string Nebula's config holds and fails with a
//! message that says what was expected.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// Where a PEM item comes from: Nebula accepts a file path or the PEM text itself. A relative
/// path is taken from the working directory, as Nebula does (`/` under systemd), so configs
/// should use absolute paths.
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    Path(PathBuf),
    Inline(String),
}

impl PemSource {
    /// The PEM bytes: the file's contents or the inline text.
    pub fn read(&self) -> std::io::Result<Vec<u8>> {
        match self {
            PemSource::Path(p) => std::fs::read(p),
            PemSource::Inline(s) => Ok(s.as_bytes().to_vec()),
        }
    }

    /// What to call it in a message: the path, or "inline PEM".
    pub fn describe(&self) -> String {
        match self {
            PemSource::Path(p) => p.display().to_string(),
            PemSource::Inline(_) => "inline PEM".to_string(),
        }
    }
}

/// Never prints inline PEM: `pki.key` may hold a private key.
impl fmt::Debug for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemSource::Path(p) => write!(f, "Path({})", p.display()),
            PemSource::Inline(s) => write!(f, "Inline(<{} bytes>)", s.len()),
        }
    }
}

impl<'de> Deserialize<'de> for PemSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.contains("-----BEGIN") {
            Ok(PemSource::Inline(s))
        } else if s.trim().is_empty() {
            Err(de::Error::custom("expected a file path or inline PEM, found an empty string"))
        } else {
            Ok(PemSource::Path(PathBuf::from(s)))
        }
    }
}

/// A `static_host_map` key: an overlay address, IPv4 or IPv6 (any network of the host's
/// certificate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OverlayIp(pub IpAddr);

impl<'de> Deserialize<'de> for OverlayIp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.trim().parse::<IpAddr>().map(OverlayIp).map_err(|_| {
            de::Error::custom(format!(
                "static_host_map key {s:?} is not an overlay IP address (e.g. \"100.64.0.1\" or \"fd00::1\")"
            ))
        })
    }
}

/// The host part of an underlay address: an IP, or a DNS name the daemon resolves (and
/// re-resolves) itself.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UnderlayHost {
    Ip(IpAddr),
    Dns(String),
}

/// An underlay `host:port` (`198.18.0.1:4242`, `[2001:db8::1]:4242`, `lighthouse.example:4242`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Underlay {
    pub host: UnderlayHost,
    pub port: u16,
}

impl FromStr for Underlay {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Underlay::parse(s, false)
    }
}

impl Underlay {
    /// `host:port`; port 0 only where it has a meaning (`advertise_addrs`: my listening port).
    fn parse(s: &str, port_zero: bool) -> Result<Self, String> {
        let bad =
            |why: &str| format!("{s:?} is not an underlay address: {why} (expected host:port, e.g. 198.18.0.1:4242)");
        let (host, port) = s.trim().rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port: u16 = port.parse().map_err(|_| bad("the port is not a number 1-65535"))?;
        if port == 0 && !port_zero {
            return Err(bad("port 0"));
        }
        let host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            UnderlayHost::Ip(IpAddr::V6(v6.parse().map_err(|_| bad("bad IPv6 address"))?))
        } else if let Ok(ip) = host.parse::<Ipv4Addr>() {
            UnderlayHost::Ip(IpAddr::V4(ip))
        } else if is_dns_name(host) {
            UnderlayHost::Dns(host.to_string())
        } else {
            return Err(bad("the host is neither an IP address nor a DNS name"));
        };
        Ok(Underlay { host, port })
    }
}

/// A `lighthouse.advertise_addrs` entry: an underlay `host:port` where port 0 stands for this
/// node's listening port (as in Nebula).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AdvertiseAddr(pub Underlay);

impl<'de> Deserialize<'de> for AdvertiseAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Underlay::parse(&String::deserialize(d)?, true).map(AdvertiseAddr).map_err(de::Error::custom)
    }
}

impl fmt::Display for Underlay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            UnderlayHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            UnderlayHost::Ip(ip) => write!(f, "{ip}:{}", self.port),
            UnderlayHost::Dns(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

impl<'de> Deserialize<'de> for Underlay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        // A dotted all-numeric string that failed to parse as IPv4 is a typo, not a name.
        && !s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// `tun.unsafe_routes[].via`: the overlay IP of the node that routes the network, or Nebula's
/// list of weighted gateways (`- gateway: 100.64.0.1` / `weight: 10`, weight 1 by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Never empty.
    pub gateways: Vec<Gateway>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// Any overlay address (IPv4 or IPv6) of the node that routes the network.
    #[serde(deserialize_with = "overlay_ip")]
    pub gateway: IpAddr,
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

impl Via {
    /// The gateway all of the route's traffic goes through: the highest weight, the first
    /// listed on a tie. (Nebula balances across the list; cos-mesh does not yet.)
    pub fn primary(&self) -> IpAddr {
        let best = self.gateways.iter().map(|g| g.weight).max().unwrap_or(0);
        self.gateways.iter().find(|g| g.weight == best).map(|g| g.gateway).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }
}

const VIA_EXPECTED: &str = "expected the overlay IP of the node that routes this network (e.g. 100.64.0.1 or fd00::1), or a list of \
     `- gateway: IP` entries with an optional `weight`";

impl<'de> Deserialize<'de> for Via {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Via;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(VIA_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Via, E> {
                if s.trim().is_empty() {
                    return Err(E::custom(format!("is empty; {VIA_EXPECTED}")));
                }
                let gateway =
                    s.trim().parse().map_err(|_| E::custom(format!("{s:?} is not an IP address; {VIA_EXPECTED}")))?;
                Ok(Via { gateways: vec![Gateway { gateway, weight: 1 }] })
            }
            fn visit_unit<E: de::Error>(self) -> Result<Via, E> {
                Err(E::custom(format!("is empty; {VIA_EXPECTED}")))
            }
            fn visit_none<E: de::Error>(self) -> Result<Via, E> {
                self.visit_unit()
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Via, D::Error> {
                d.deserialize_any(V)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Via, A::Error> {
                let mut gateways = Vec::new();
                while let Some(g) = seq.next_element::<Gateway>()? {
                    gateways.push(g);
                }
                if gateways.is_empty() {
                    return Err(de::Error::custom(format!("is an empty list; {VIA_EXPECTED}")));
                }
                Ok(Via { gateways })
            }
        }
        d.deserialize_any(V)
    }
}

fn overlay_ip<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.trim()
        .parse()
        .map_err(|_| de::Error::custom(format!("{s:?} is not an overlay IP address (e.g. 100.64.0.1 or fd00::1)")))
}

/// A Go duration string (`100ms`, `1s`, `1h30m`), as Nebula writes timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoDuration(pub Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::duration::parse(&s).map(GoDuration).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn underlay_addresses() {
        let ok = [
            ("198.18.0.1:4242", "198.18.0.1:4242"),
            ("[2001:db8::1]:4242", "[2001:db8::1]:4242"),
            ("lighthouse.example.net:4242", "lighthouse.example.net:4242"),
            (" lh1:1 ", "lh1:1"),
        ];
        for (input, shown) in ok {
            assert_eq!(input.parse::<Underlay>().map(|u| u.to_string()), Ok(shown.to_string()), "{input}");
        }
        for bad in
            ["198.18.0.1", "198.18.0.1:0", "198.18.0.1:70000", "300.1.1.1:4242", "bad host:1", ":4242", "[::1:4242"]
        {
            let err = bad.parse::<Underlay>().unwrap_err();
            assert!(err.contains("is not an underlay address"), "{bad}: {err}");
        }
    }

    #[test]
    fn pem_source_never_prints_inline_key() {
        let s = PemSource::Inline("-----BEGIN NEBULA X25519 PRIVATE KEY-----\nSECRET\n".into());
        assert!(!format!("{s:?}").contains("SECRET"));
        assert_eq!(s.describe(), "inline PEM");
    }
}
