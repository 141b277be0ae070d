//! The example `config.yml` that Debian's nebula 1.6.1 package ships loads unchanged: an
//! operator's existing Nebula config is a cos-mesh config. (`.ci/run` installs the package.)

use std::path::Path;

use cos_mesh::config::{Config, OverlayIp};

const EXAMPLE: &str = "/usr/share/doc/nebula/examples/config.yml";

#[test]
fn nebula_1_6_1_example_config_loads_unchanged() {
    assert!(Path::new(EXAMPLE).exists(), "{EXAMPLE} is missing: install Debian's nebula package (bash .ci/run does)");
    let loaded = Config::load(Path::new(EXAMPLE)).unwrap_or_else(|e| panic!("{e}"));
    let c = &loaded.config;
    assert_eq!(c.tun.mtu, 1300);
    assert_eq!(c.tun.dev, "nebula1");
    assert_eq!(c.lighthouse.interval, 60);
    assert!(c.static_host_map.contains_key(&OverlayIp("192.168.100.1".parse().unwrap())));
    let warned: Vec<&str> = loaded.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(warned, ["tun.drop_local_broadcast", "tun.drop_multicast"]);
    loaded.check_overlay("192.168.100.5/24".parse().unwrap()).unwrap();
}
