use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use super::*;

const PKI: &str = "pki:\n  ca: /etc/nebula/ca.crt\n  cert: /etc/nebula/host.crt\n  key: /etc/nebula/host.key\n";

/// A config as a Nebula 1.6 operator writes it: anchors, `cipher`, `sshd`, Go durations.
const NEBULA_STYLE: &str = r#"
pki:
  ca: /etc/nebula/ca.crt
  cert: /etc/nebula/host.crt
  key: /etc/nebula/host.key
  blocklist:
    - c99d4e650533b92061b09918e838a5a0a6aaee21eed1d12fd937682865936c72
static_host_map:
  "100.64.0.1": ["198.18.0.1:4242", "lighthouse.example.net:4242"]
lighthouse:
  am_lighthouse: false
  interval: 60
  hosts: &lighthouses
    - "100.64.0.1"
  remote_allow_list:
    "10.0.0.0/8": false
  local_allow_list:
    interfaces:
      "tun0": false
    "198.18.0.0/15": true
listen:
  host: "[::]"
  port: 4242
  batch: 128
  read_buffer: 10485760
  write_buffer: 10485760
punchy:
  punch: true
  respond: true
  delay: 1s
relay:
  relays: *lighthouses
  use_relays: true
cipher: chachapoly
sshd:
  enabled: false
  listen: 127.0.0.1:2222
tun:
  disabled: false
  dev: nebula1
  drop_local_broadcast: false
  tx_queue: 500
  mtu: 1300
  unsafe_routes:
    - route: 172.16.1.0/24
      via: 100.64.0.1
      mtu: 1300
      metric: 100
logging:
  level: info
  format: text
handshakes:
  try_interval: 100ms
  retries: 20
firewall:
  conntrack:
    tcp_timeout: 12m
  outbound:
    - &any_rule
      port: any
      proto: any
      host: any
  inbound:
    - *any_rule
"#;

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

fn load_str(text: &str) -> Result<LoadedConfig, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "config.yml", text);
    Config::load(&p)
}

#[test]
fn nebula_style_config_loads_with_warnings_naming_unimplemented_keys() {
    let loaded = load_str(NEBULA_STYLE).unwrap();
    let c = &loaded.config;
    assert_eq!(c.tun.mtu, 1300);
    assert_eq!(c.listen.host, "::".parse::<std::net::IpAddr>().unwrap());
    assert_eq!(c.listen.batch, 128);
    assert_eq!(c.lighthouse.hosts, vec![std::net::IpAddr::V4(Ipv4Addr::new(100, 64, 0, 1))]);
    assert_eq!(c.relay.relays, c.lighthouse.hosts, "the anchor *lighthouses resolves");
    assert_eq!(c.handshakes.try_interval.0, Duration::from_millis(100));
    assert_eq!(c.lighthouse.interval, 60);
    let lh = &c.static_host_map[&OverlayIp(Ipv4Addr::new(100, 64, 0, 1).into())];
    assert_eq!(lh[1].host, UnderlayHost::Dns("lighthouse.example.net".into()));
    assert_eq!(c.tun.unsafe_routes[0].metric, Some(100));
    assert!(c.tun.unsafe_routes[0].install);

    let keys: Vec<&str> = loaded.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(keys, ["cipher", "sshd", "tun.drop_local_broadcast"]);
    let cipher = loaded.warnings[0].to_string();
    assert!(cipher.contains("config.yml: cipher: WireGuard's cipher is fixed (ChaCha20-Poly1305)"), "{cipher}");
}

#[test]
fn defaults() {
    let c = load_str(PKI).unwrap().config;
    assert_eq!((c.listen.host.to_string().as_str(), c.listen.port, c.listen.batch), ("0.0.0.0", 4242, 64));
    assert_eq!((c.tun.dev.as_str(), c.tun.mtu, c.tun.tx_queue, c.tun.disabled), ("nebula1", 1420, 500, false));
    assert_eq!(c.control_socket(), ControlAddr::Abstract("cos-mesh/nebula1".into()));
    assert!(c.pki.disconnect_invalid);
    assert_eq!(c.lighthouse.interval, 10);
    assert_eq!((c.punchy.delay.0, c.punchy.respond_delay.0), (Duration::from_millis(100), Duration::from_millis(500)));
    assert!(c.punchy.punch && c.punchy.respond, "punching is on by default");
    assert_eq!((c.handshakes.try_interval.0, c.handshakes.retries), (Duration::from_millis(100), 10));
    assert!(c.relay.use_relays);
    assert_eq!((c.logging.level, c.logging.format), (LogLevel::Info, LogFormat::Text));
    assert_eq!(c.stats.path, "/metrics");
}

#[test]
fn inline_pem_is_accepted() {
    let text = "pki:\n  ca: |\n    -----BEGIN NEBULA CERTIFICATE-----\n    AAAA\n    -----END NEBULA CERTIFICATE-----\n  cert: host.crt\n  key: host.key\n";
    let c = load_str(text).unwrap().config;
    assert!(matches!(c.pki.ca, Some(PemSource::Inline(ref s)) if s.starts_with("-----BEGIN NEBULA CERTIFICATE")));
    assert_eq!(c.pki.cert, Some(PemSource::Path("host.crt".into())));
}

/// Unknown keys and bad values fail with file:line:column and the key.
#[test]
fn parse_errors_name_line_and_key() {
    let cases: &[(&str, usize, &str)] = &[
        ("tunn:\n  mtu: 1300\n", 1, "unknown field `tunn`"),
        ("listen:\n  host: 0.0.0.0\n  portt: 4242\n", 3, "unknown field `portt`"),
        (
            "tun:\n  unsafe_routes:\n    - route: 10.0.0.0/8\n      via: 100.64.0.1\n      metrc: 5\n",
            5,
            "unknown field `metrc`",
        ),
        ("listen:\n  port: 99999\n", 2, "listen.port 99999 is out of range: a UDP port is 0-65535"),
        (
            "static_host_map:\n  \"fd00::1/64\": [\"198.18.0.1:4242\"]\n",
            2,
            "static_host_map key \"fd00::1/64\" is not an overlay IP address",
        ),
        ("static_host_map:\n  \"100.64.0.1\": [\"198.18.0.1\"]\n", 2, "is not an underlay address: no port"),
        ("logging:\n  format: xml\n", 2, "xml"),
        ("punchy:\n  delay: 5 seconds\n", 2, "invalid duration"),
        ("tun: [1, 2\n", 1, "tun: expected a map of keys"),
        (
            "lighthouse:\n  am_lighthouse: maybe\n",
            2,
            "lighthouse.am_lighthouse: expected true or false, found \"maybe\"",
        ),
        ("listen:\n  port: fourtwo\n", 2, "listen.port: expected a whole number, found \"fourtwo\""),
        ("tun:\n  mtu: [1]\n", 2, "tun.mtu: expected a single value (not a list or map), found a list"),
        ("tun:\n  mtu: 1\ntun:\n  mtu: 2\n", 3, "duplicate mapping key: tun (a key may appear only once per map)"),
        ("tun: {}\n---\ntun: {}\n", 3, "a config file holds one YAML document"),
    ];
    for (body, line, needle) in cases {
        let err = load_str(&format!("{PKI}{body}")).unwrap_err();
        let msg = err.to_string();
        let want_line = line + 4; // after the PKI lines
        assert!(
            matches!(&err, ConfigError::Parse { line: l, .. } if *l == want_line),
            "{body:?}: expected line {want_line}: {msg}"
        );
        assert!(msg.contains(&format!("config.yml:{want_line}:")), "{msg}");
        assert!(msg.contains(needle), "{body:?}: {msg} lacks {needle:?}");
    }
}

/// Values that parse but are wrong: the error names the field.
#[test]
fn validation_errors_name_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("tun:\n  mtu: 100\n", "tun.mtu", "100 is out of range 576-65475"),
        ("tun:\n  mtu: 70000\n", "tun.mtu", "out of range"),
        ("tun:\n  routes:\n    - {route: 100.64.1.0/24, mtu: 9}\n", "tun.routes[0].mtu", "out of range"),
        ("tun:\n  dev: this-name-is-too-long\n", "tun.dev", "not a Linux interface name"),
        ("tun:\n  dev: \"a/b\"\n", "tun.dev", "not a Linux interface name"),
        ("listen:\n  batch: 0\n", "listen.batch", "out of range 1-1024"),
        ("routines: 0\n", "routines", "0 is out of range 1-64 (data-path workers)"),
        ("routines: 65\n", "routines", "out of range 1-64"),
        ("lighthouse:\n  hosts: [\"100.64.0.9\"]\n", "lighthouse.hosts[0]", "100.64.0.9 is not in static_host_map"),
        ("lighthouse:\n  interval: 0\n", "lighthouse.interval", "at least 1"),
        (
            "lighthouse:\n  local_allow_list:\n    \"not-a-cidr\": true\n",
            "lighthouse.local_allow_list.not-a-cidr",
            "not a CIDR",
        ),
        ("static_host_map:\n  \"100.64.0.1\": []\n", "static_host_map.100.64.0.1", "no underlay address"),
        ("handshakes:\n  retries: 0\n", "handshakes.retries", "at least 1"),
        ("control:\n  socket: relative.sock\n", "control.socket", "not an absolute path"),
        ("stats:\n  type: prometheus\n", "stats.listen", "is required"),
        ("stats:\n  type: prometheus\n  listen: nope\n", "stats.listen", "not an IP:port"),
        ("stats:\n  type: prometheus\n  listen: \":8080\"\n  path: metrics\n", "stats.path", "must start with '/'"),
        ("pki:\n  ca: a\n  cert: b\n  key: c\n  blocklist: [\"abc\"]\n", "pki.blocklist", "entry 0"),
    ];
    for (body, field, needle) in cases {
        // A case about `pki` carries its own whole section (YAML forbids a duplicate key).
        let text = if body.starts_with("pki:") { body.to_string() } else { format!("{PKI}{body}") };
        let err = load_str(&text).unwrap_err();
        let msg = err.to_string();
        match &err {
            ConfigError::Invalid { field: f, file, .. } => {
                assert_eq!(f, field, "{body:?}: {msg}");
                assert!(file.ends_with("config.yml"));
            }
            other => panic!("{body:?}: expected a validation error, got {other}"),
        }
        assert!(msg.contains(needle), "{body:?}: {msg} lacks {needle:?}");
    }
    let err = load_str("tun:\n  mtu: 1300\n").unwrap_err();
    assert!(err.to_string().ends_with("config.yml: pki.ca: is required (a file path or inline PEM)"), "{err}");
}

#[test]
fn lighthouse_may_omit_hosts_and_warns_when_listing_them() {
    let loaded = load_str(&format!("{PKI}lighthouse:\n  am_lighthouse: true\n  hosts: [\"100.64.0.9\"]\n")).unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    assert_eq!(loaded.warnings[0].key, "lighthouse.hosts");
}

#[test]
fn directory_merges_in_name_order_and_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "20-tun.yaml", "tun:\n  mtu: 1300\ncipher: aes\n");
    write(dir.path(), "10-base.yml", &format!("{PKI}tun:\n  mtu: 1400\n  dev: mesh0\n"));
    write(dir.path(), "README.md", "not yaml: [");
    let loaded = Config::load(dir.path()).unwrap();
    let names: Vec<_> = loaded.files.iter().map(|f| f.file_name().unwrap().to_str().unwrap()).collect();
    assert_eq!(names, ["10-base.yml", "20-tun.yaml"]);
    assert_eq!((loaded.config.tun.mtu, loaded.config.tun.dev.as_str()), (1300, "mesh0"));
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0].file.ends_with("20-tun.yaml"));
    assert!(loaded.origin("pki.key").ends_with("10-base.yml"));

    // A bad value in the second file is blamed on it.
    write(dir.path(), "30-bad.yaml", "tun:\n  mtu: 10\n");
    let err = Config::load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { file, field, .. } if file.ends_with("30-bad.yaml") && field == "tun.mtu"),
        "{err}"
    );
    // A value the YAML parser takes but the merged config refuses still names file, line, key.
    write(dir.path(), "30-bad.yaml", "# comment\nlighthouse:\n  am_lighthouse: \"yes\"\n");
    let err = Config::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("30-bad.yaml:3:"), "{err}");
    assert!(err.ends_with("lighthouse.am_lighthouse: expected true or false, found \"yes\""), "{err}");
    // An unknown key carries that file's line.
    write(dir.path(), "30-bad.yaml", "# comment\nlisten:\n  prot: 1\n");
    let err = Config::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("30-bad.yaml:3:3: unknown field `prot`"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(Config::load(empty.path()), Err(ConfigError::EmptyDir { .. })));
    assert!(Config::load(&empty.path().join("missing.yml")).unwrap_err().to_string().starts_with("reading config "));
}

#[test]
fn overlay_membership_is_checked_against_the_certificate_network() {
    let loaded = load_str(NEBULA_STYLE).unwrap();
    loaded.check_overlay("100.64.0.11/10".parse().unwrap()).unwrap();
    let err = loaded.check_overlay("10.42.0.11/16".parse().unwrap()).unwrap_err().to_string();
    assert!(err.ends_with("config.yml: static_host_map.100.64.0.1: 100.64.0.1 is outside the overlay network 10.42.0.0/16 (from this node's certificate)"), "{err}");
}

#[test]
fn ipv6_static_host_map_keys_must_be_in_an_ipv6_network_of_the_certificate() {
    let text = format!("{PKI}static_host_map:\n  \"fd00:1::7\": [\"[2001:db8::7]:4242\"]\n");
    let loaded = load_str(&text).unwrap();
    let key = OverlayIp("fd00:1::7".parse().unwrap());
    assert_eq!(loaded.config.static_host_map[&key][0].port, 4242);
    let nets = |v: &[&str]| v.iter().map(|n| n.parse().unwrap()).collect::<Vec<ipnet::IpNet>>();
    loaded.check_networks(&nets(&["100.64.0.11/10", "fd00:1::11/64"])).unwrap();
    let err = loaded.check_networks(&nets(&["100.64.0.11/10", "fd00:2::11/64"])).unwrap_err().to_string();
    assert!(err.ends_with("static_host_map.fd00:1::7: fd00:1::7 is outside the IPv6 overlay networks fd00:2::/64 (from this node's certificate)"), "{err}");
    let err = loaded.check_networks(&nets(&["100.64.0.11/10"])).unwrap_err().to_string();
    assert!(err.contains("this node's certificate has no IPv6 network"), "{err}");
}

/// An IPv6-only node lists its lighthouses and relays by IPv6 overlay addresses; an IPv4 one
/// is refused, since a certificate without IPv4 networks cannot reach it.
#[test]
fn lighthouses_and_relays_may_be_ipv6_overlay_addresses() {
    let text = format!(
        "{PKI}static_host_map:\n  \"fd00:1::1\": [\"[2001:db8::1]:4242\"]\nlighthouse:\n  hosts: [\"fd00:1::1\"]\nrelay:\n  relays: [\"fd00:1::1\"]\n"
    );
    let loaded = load_str(&text).unwrap();
    let lh: std::net::IpAddr = "fd00:1::1".parse().unwrap();
    assert_eq!((loaded.config.lighthouse.hosts.clone(), loaded.config.relay.relays.clone()), (vec![lh], vec![lh]));
    let v6_only = vec!["fd00:1::11/64".parse().unwrap()];
    loaded.check_networks(&v6_only).unwrap();
    let text = format!("{PKI}relay:\n  relays: [100.64.0.1]\n");
    let err = load_str(&text).unwrap().check_networks(&v6_only).unwrap_err().to_string();
    assert!(
        err.ends_with(
            "relay.relays[0]: 100.64.0.1 is an IPv4 overlay address, but this node's certificate has no IPv4 network"
        ),
        "{err}"
    );
    let err = load_str(&format!("{PKI}lighthouse:\n  hosts: [\"fd00::1:x\"]\n")).unwrap_err().to_string();
    assert!(err.contains("lighthouse.hosts") && err.contains("expected an IP address"), "{err}");
}

#[test]
fn empty_keys_mean_empty_as_in_nebula() {
    let text = format!(
        "{PKI}  blocklist:\ntun:\n  routes:\n  unsafe_routes:\nlighthouse:\nstatic_host_map:\nrelay:\n  relays:\n"
    );
    let c = load_str(&text).unwrap().config;
    assert!(c.tun.routes.is_empty() && c.tun.unsafe_routes.is_empty() && c.static_host_map.is_empty());
    assert_eq!((c.tun.mtu, c.lighthouse.interval), (1420, 10), "a null section keeps its defaults");
}

#[test]
fn shipped_example_config_loads_without_warnings() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config.yaml"));
    let loaded = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.config.tun.mtu, 1420);
    loaded.check_overlay("100.64.0.11/10".parse().unwrap()).unwrap();
}

/// Every key of Nebula 1.11's example config, set: the load succeeds, what cos-mesh implements
/// is applied, and every other key is named in a warning. A key that is neither listed here as
/// implemented nor warned about fails the test: nothing is silently inert.
#[test]
fn nebula_1_11_example_config_loads_with_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nebula-1.11-all-keys.yml");
    let loaded = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let c = &loaded.config;
    let warned: Vec<&str> = loaded.warnings.iter().map(|w| w.key.as_str()).collect();

    // Applied: ECMP picks the highest weight; port 0 is the listening port; the allow list.
    assert_eq!(c.tun.unsafe_routes[0].via.primary(), Ipv4Addr::new(192, 168, 100, 10));
    assert_eq!(c.tun.unsafe_routes[1].via.primary(), Ipv4Addr::new(192, 168, 100, 99));
    assert!(warned.contains(&"tun.unsafe_routes[0].via"), "ECMP is named: {warned:?}");
    assert_eq!(c.lighthouse.advertise_addrs[1].0.port, 0);
    let allow = c.local_allow_list();
    assert!(!allow.allows("docker0", "10.1.1.1".parse().unwrap()));
    assert!(allow.allows("eth0", "10.1.1.1".parse().unwrap()));
    assert!(!allow.allows("eth0", "198.18.0.1".parse().unwrap()));

    const IMPLEMENTED: &[&str] = &[
        "pki.ca",
        "pki.cert",
        "pki.key",
        "pki.blocklist",
        "pki.disconnect_invalid",
        "pki.initiating_version",
        "static_host_map",
        "lighthouse.am_lighthouse",
        "lighthouse.serve_dns",
        "lighthouse.dns",
        "lighthouse.interval",
        "lighthouse.hosts",
        "lighthouse.remote_allow_list",
        "lighthouse.local_allow_list",
        "lighthouse.advertise_addrs",
        "listen.host",
        "listen.port",
        "listen.batch",
        "listen.read_buffer",
        "listen.write_buffer",
        "punchy.punch",
        "punchy.respond",
        "punchy.delay",
        "punchy.respond_delay",
        "relay.relays",
        "relay.am_relay",
        "relay.use_relays",
        "tun.disabled",
        "tun.dev",
        "tun.tx_queue",
        "tun.mtu",
        "tun.routes",
        "tun.unsafe_routes",
        "logging.level",
        "logging.format",
        "stats.type",
        "stats.listen",
        "stats.path",
        "handshakes.try_interval",
        "handshakes.retries",
        "routines",
        "firewall.outbound_action",
        "firewall.inbound_action",
        "firewall.default_local_cidr_any",
        "firewall.conntrack.tcp_timeout",
        "firewall.conntrack.udp_timeout",
        "firewall.conntrack.default_timeout",
        "firewall.outbound",
        "firewall.inbound",
    ];
    let doc: serde_json::Value = serde_saphyr::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let mut leaves = Vec::new();
    leaf_paths(&doc, "", &mut leaves);
    let covered = |leaf: &str, key: &str| {
        leaf == key || leaf.starts_with(&format!("{key}.")) || leaf.starts_with(&format!("{key}["))
    };
    for leaf in &leaves {
        let implemented = IMPLEMENTED.iter().any(|k| covered(leaf, k));
        let warning = warned.iter().any(|k| covered(leaf, k));
        assert!(implemented || warning, "{leaf}: neither implemented nor named in a warning");
    }
    for key in ["cipher", "sshd", "static_map", "tunnels", "firewall.conntrack.max_connections", "tun.drop_multicast"] {
        assert!(warned.contains(&key), "{key} not warned: {warned:?}");
    }
}

/// Dotted paths of the keys set in `v` (maps descend; lists and scalars are leaves).
fn leaf_paths(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    match v.as_object() {
        Some(m) if !m.is_empty() => {
            for (k, v) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                leaf_paths(v, &p, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn unsafe_route_via_is_explained_when_empty_or_wrong() {
    for (via, needle) in [
        ("", "tun.unsafe_routes[0].via: is empty; expected the overlay IP of the node"),
        ("[]", "tun.unsafe_routes[0].via: is an empty list"),
        ("\"\"", "tun.unsafe_routes[0].via: is empty"),
        ("banana", "\"banana\" is not an IP address"),
    ] {
        let err = load_str(&format!("{PKI}tun:\n  unsafe_routes:\n    - route: 10.0.0.0/8\n      via: {via}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.yml:8:"), "{via:?}: {err}");
        assert!(err.contains(needle), "{via:?}: {err} lacks {needle:?}");
        assert!(!err.contains("Option<") && !err.contains("deserialize"), "{err}");
    }
}

/// IPv6 `tun.routes` and `tun.unsafe_routes` (as Nebula takes them with v2 certificates): a v6
/// route through a gateway named by its v6 or v4 overlay address; refused below IPv6's minimum
/// MTU, and on a certificate without an IPv6 network (packets into it would have no source).
#[test]
fn ipv6_routes_and_unsafe_routes() {
    let text = format!(
        "{PKI}tun:\n  routes:\n    - {{route: \"fd00:1:2::/64\", mtu: 1300}}\n  unsafe_routes:\n    - {{route: \"2001:db8:99::/48\", via: \"fd00:1::2\"}}\n    - {{route: \"2001:db8:98::/48\", via: [{{gateway: 100.64.0.2, weight: 2}}]}}\n"
    );
    let loaded = load_str(&text).unwrap();
    let t = &loaded.config.tun;
    assert_eq!(t.routes[0].route, "fd00:1:2::/64".parse::<ipnet::IpNet>().unwrap());
    assert_eq!(t.unsafe_routes[0].route, "2001:db8:99::/48".parse::<ipnet::IpNet>().unwrap());
    assert_eq!(t.unsafe_routes[0].via.primary(), "fd00:1::2".parse::<std::net::IpAddr>().unwrap());
    assert_eq!(t.unsafe_routes[1].via.primary(), std::net::IpAddr::V4(Ipv4Addr::new(100, 64, 0, 2)));
    let nets = |v: &[&str]| v.iter().map(|n| n.parse().unwrap()).collect::<Vec<ipnet::IpNet>>();
    loaded.check_networks(&nets(&["100.64.0.11/10", "fd00:1::11/64"])).unwrap();
    let err = loaded.check_networks(&nets(&["100.64.0.11/10"])).unwrap_err().to_string();
    assert!(
        err.ends_with("tun.unsafe_routes[0].via: fd00:1::2 is an IPv6 overlay address, but this node's certificate has no IPv6 network"),
        "{err}"
    );
    let text = format!("{PKI}tun:\n  routes:\n    - {{route: \"fd00:1:2::/64\", mtu: 1300}}\n");
    let err = load_str(&text).unwrap().check_networks(&nets(&["100.64.0.11/10"])).unwrap_err().to_string();
    assert!(
        err.ends_with("tun.routes[0].route: fd00:1:2::/64 is an IPv6 route, but this node's certificate has no IPv6 network to send from"),
        "{err}"
    );
    let text =
        format!("{PKI}tun:\n  unsafe_routes:\n    - {{route: \"2001:db8:99::/48\", via: \"fd00:1::2\", mtu: 1200}}\n");
    let err = load_str(&text).unwrap_err().to_string();
    assert!(err.contains("tun.unsafe_routes[0].mtu: 1200 is below 1280, the smallest MTU IPv6 allows"), "{err}");
}
