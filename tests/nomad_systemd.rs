//! `systemd/nomad.service.d/cos-mesh.conf` checked by systemd itself: `systemd-analyze verify`
//! loads a stub nomad.service with the drop-in and the repo's cos-mesh.service from a temporary
//! unit path, and the drop-in's Requires= must take effect.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn repo(p: &str) -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(p)).unwrap()
}

fn verify(units: &Path) -> Output {
    Command::new("systemd-analyze")
        .args(["verify", units.join("nomad.service").to_str().unwrap()])
        .env("SYSTEMD_UNIT_PATH", format!("{}:", units.display()))
        .output()
        .expect("systemd-analyze (Debian package systemd; bash .ci/run installs it)")
}

/// A unit directory: a stub of Nomad's packaged unit, the drop-in, and cos-mesh.service with
/// its binary swapped for /bin/true (verify checks that ExecStart exists).
fn units(with_cos_mesh: bool) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let nomad = "[Unit]\nDescription=Nomad\nWants=network-online.target\nAfter=network-online.target\n\n\
                 [Service]\nType=notify\nExecStart=/bin/true agent -config /etc/nomad.d\n\n\
                 [Install]\nWantedBy=multi-user.target\n";
    fs::write(p.join("nomad.service"), nomad).unwrap();
    fs::create_dir(p.join("nomad.service.d")).unwrap();
    fs::write(p.join("nomad.service.d/cos-mesh.conf"), repo("systemd/nomad.service.d/cos-mesh.conf")).unwrap();
    if with_cos_mesh {
        let unit = repo("systemd/cos-mesh.service").replace("/usr/local/bin/cos-mesh", "/bin/true");
        fs::write(p.join("cos-mesh.service"), unit).unwrap();
    }
    d
}

#[test]
fn drop_in_verifies_and_makes_nomad_require_cos_mesh() {
    let d = units(true);
    let out = verify(d.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(!stderr.contains("cos-mesh.conf"), "the drop-in drew a warning: {stderr}");

    // Without cos-mesh.service, Nomad cannot start: proof the drop-in was read and Requires= holds.
    let d = units(false);
    let out = verify(d.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nomad.service must require cos-mesh.service");
    assert!(stderr.contains("cos-mesh.service not found"), "{stderr}");
}

#[test]
fn drop_in_orders_nomad_after_cos_mesh_without_binding() {
    let text = repo("systemd/nomad.service.d/cos-mesh.conf");
    let keys: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
    assert_eq!(keys, ["[Unit]", "Requires=cos-mesh.service", "After=cos-mesh.service"]);
    // cos-mesh's own unit orders itself before Nomad and is Type=notify (READY once nebula1 is up).
    let unit = repo("systemd/cos-mesh.service");
    assert!(unit.contains("Type=notify") && unit.contains("Before=nomad.service"));
}
