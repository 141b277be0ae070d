//! `cos-mesh run` hands over to `cos-mesh-daemon` only when it is of the same build: a stale
//! daemon binary left beside a rebuilt `cos-mesh` must never be the one that runs (the real
//! hand-over is asserted under load in tests/dataplane_e2e.rs).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn scratch() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cos-mesh-handover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_daemon_binary_of_another_build_is_passed_over() {
    let dir = scratch();
    let cli = dir.join("cos-mesh");
    std::fs::copy(env!("CARGO_BIN_EXE_cos-mesh"), &cli).unwrap();
    // A "daemon" of another build: answers --build-id with another hash, and leaves a mark if
    // it is ever started as the daemon.
    let mark = dir.join("stale-daemon-ran");
    let stale = dir.join("cos-mesh-daemon");
    std::fs::write(
        &stale,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --build-id ]; then echo 0000000000000000; exit 0; fi\ntouch {}\n",
            mark.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o755)).unwrap();
    let missing = dir.join("missing.yaml");
    let out = Command::new(&cli).arg("run").arg("-c").arg(&missing).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!mark.exists(), "the stale daemon was started: {stderr}");
    assert!(stderr.contains("is from another build"), "{stderr}");
    // The daemon ran in this process instead and reported the missing config itself.
    assert!(!out.status.success());
    assert!(stderr.contains("missing.yaml"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_daemon_binary_of_this_build_reports_the_same_identity() {
    let out = Command::new(env!("CARGO_BIN_EXE_cos-mesh-daemon")).arg("--build-id").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), cos_mesh::BUILD_ID);
}
