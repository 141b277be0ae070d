//! The shipped unit passes `systemd-analyze verify` (with ExecStart pointed at the built binary,
//! since verify checks that the executable exists) and keeps the settings the daemon relies on.

use std::process::Command;

#[test]
fn unit_verifies_and_allows_what_the_daemon_needs() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/cos-mesh.service")).unwrap();
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=/usr/local/bin/cos-mesh run -c /etc/cos-mesh/config.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=always",
        "AmbientCapabilities=CAP_NET_ADMIN",
        "CapabilityBoundingSet=CAP_NET_ADMIN",
        "DeviceAllow=/dev/net/tun rw",
        "RuntimeDirectory=cos-mesh",
        "Wants=network-online.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit lacks {line:?}");
    }
    // Started once the underlay is up, names resolve and the clock is right (nebula#372).
    let after: Vec<&str> =
        unit.lines().filter_map(|l| l.strip_prefix("After=")).flat_map(|v| v.split_whitespace()).collect();
    for target in ["network-online.target", "nss-lookup.target", "time-sync.target"] {
        assert!(after.contains(&target), "unit is not ordered after {target}: After={after:?}");
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cos-mesh.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/cos-mesh", env!("CARGO_BIN_EXE_cos-mesh"))).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("running systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{stderr}");
    assert!(!stderr.contains("cos-mesh.service"), "systemd-analyze complained about the unit:\n{stderr}");
}
