//! `Notifier::from_env` with a real `NOTIFY_SOCKET`, as systemd sets it. The only test in this
//! binary, because it changes the process environment.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use cos_mesh::io::Notifier;

#[test]
fn notifies_the_socket_named_by_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let systemd = UnixDatagram::bind(&path).unwrap();
    systemd.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let pid = std::process::id().to_string();
    // SAFETY: no other thread of this test binary reads or writes the environment.
    unsafe {
        std::env::set_var("NOTIFY_SOCKET", &path);
        std::env::set_var("WATCHDOG_USEC", "3000000");
        std::env::set_var("WATCHDOG_PID", &pid);
    }
    let n = Notifier::from_env();
    assert!(n.enabled());
    assert_eq!(n.watchdog_interval(), Some(Duration::from_millis(1500)));
    let mut buf = [0u8; 256];
    let mut recv = || {
        let len = systemd.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..len]).into_owned()
    };
    n.ready("up: nebula1 100.64.0.11/10, udp 0.0.0.0:4242").unwrap();
    assert_eq!(recv(), "READY=1\nSTATUS=up: nebula1 100.64.0.11/10, udp 0.0.0.0:4242\n");
    n.reloading().unwrap();
    assert!(recv().starts_with("RELOADING=1\nMONOTONIC_USEC="));
    n.watchdog().unwrap();
    assert_eq!(recv(), "WATCHDOG=1\n");
    n.stopping().unwrap();
    assert_eq!(recv(), "STOPPING=1\n");

    // A watchdog meant for another process is not ours to feed.
    // SAFETY: as above, this binary's only thread touching the environment.
    unsafe { std::env::set_var("WATCHDOG_PID", "1") };
    assert_eq!(Notifier::from_env().watchdog_interval(), None);
    // Without NOTIFY_SOCKET every call is a no-op.
    // SAFETY: as above.
    unsafe { std::env::remove_var("NOTIFY_SOCKET") };
    let off = Notifier::from_env();
    assert!(!off.enabled());
    off.ready("nobody listens").unwrap();
}
