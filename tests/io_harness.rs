//! The e2e harness itself: namespaces and links appear, processes run inside, a NAT router
//! translates, and everything is gone afterwards, also when a test panics.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use support::{Netns, Router, default_route, leftovers, run, veth, wait_until};

fn netns_exists(name: &str) -> bool {
    String::from_utf8_lossy(&run("ip", &["netns", "list"]).stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn a_panicking_test_still_removes_its_namespaces_and_processes() {
    let mut names = Vec::new();
    let mut orphan = None;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let a = Netns::new("p");
        let b = Netns::new("p");
        names.push(a.name().to_string());
        names.push(b.name().to_string());
        veth(&a, "198.18.2.1/24", &b, "198.18.2.2/24");
        let _sleeper = a.spawn("sleep", &["600"]);
        // No guard: dropping the namespace must kill it (`ip netns exec` execs, so the pid is sleep's).
        orphan = Some(b.command("sleep", &["600"]).spawn().unwrap());
        assert!(netns_exists(a.name()) && netns_exists(b.name()));
        panic!("simulated assertion failure");
    }));
    assert!(result.is_err());
    for n in &names {
        assert!(!netns_exists(n), "{n} survived the panic");
    }
    let status = orphan.expect("spawned").wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
}

#[test]
fn processes_run_inside_and_threads_enter_namespaces() {
    let a = Netns::new("x");
    let b = Netns::new("x");
    veth(&a, "198.18.3.1/24", &b, "198.18.3.2/24");
    let ping = a.exec("ping", &["-c", "1", "-W", "2", "198.18.3.2"]);
    assert!(ping.status.success(), "{}", String::from_utf8_lossy(&ping.stdout));

    // A thread inside `b` binds to b's underlay address, which exists only there.
    let addr = b.run(|| std::net::UdpSocket::bind("198.18.3.2:0").map(|s| s.local_addr().unwrap()));
    assert!(addr.is_ok(), "{addr:?}");
    assert!(std::net::UdpSocket::bind("198.18.3.2:0").is_err(), "the address leaked into the root namespace");

    // A panic inside the namespace thread surfaces in the test.
    let r = catch_unwind(AssertUnwindSafe(|| b.run(|| panic!("inside"))));
    assert!(r.is_err());
}

/// inside (198.18.4.2) → router (198.18.4.1 | 198.18.5.1) → outside (198.18.5.2): the outside
/// host sees the router's address, not the inside host's.
#[test]
fn router_masquerades() {
    let router = Router::new();
    let inside = Netns::new("i");
    let outside = Netns::new("o");
    veth(&inside, "198.18.4.2/24", &router.ns, "198.18.4.1/24");
    let (_, router_out) = veth(&outside, "198.18.5.2/24", &router.ns, "198.18.5.1/24");
    default_route(&inside, "198.18.4.1");
    router.masquerade(&router_out);

    let listener = outside.spawn("python3", &["-c", "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('198.18.5.2', 5000)); d, a = s.recvfrom(100); print(a[0], flush=True)"]);
    assert!(wait_until(Duration::from_secs(5), || !outside
        .exec("ss", &["-ulnH", "sport", "= :5000"])
        .stdout
        .is_empty()));
    inside.exec_ok(
        "python3",
        &["-c", "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('198.18.5.2', 5000))"],
    );
    let out = listener.wait();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "198.18.5.1", "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn names_are_unique_short_and_cleaned_up() {
    let names: Vec<String> = (0..50).map(|_| support::unique("veth")).collect();
    let mut dedup = names.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), names.len());
    assert!(names.iter().all(|n| n.len() <= 15 && n.starts_with(&support::prefix())));
    {
        let _ns = Netns::new("c");
        assert!(!leftovers().is_empty());
    }
    // Other tests of this binary may hold namespaces right now; wait for them to finish theirs.
    assert!(wait_until(Duration::from_secs(60), || leftovers().is_empty()), "left behind: {:?}", leftovers());
}
