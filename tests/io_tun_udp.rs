//! The TUN and UDP drivers for real, inside network namespaces this test creates.

mod support;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use cos_mesh::io::netlink::Route;
use cos_mesh::io::poll::{self, PollFd};
use cos_mesh::io::udp::MAX_DATAGRAM;
use cos_mesh::io::{RecvBatch, SendBatch, Tun, TunConfig, Udp};
use support::{Netns, veth, wait_until};

fn tun_config(name: &str, addr: &str) -> TunConfig {
    TunConfig {
        name: name.into(),
        address: addr.parse().unwrap(),
        mtu: 1420,
        tx_queue: 500,
        routes: Vec::new(),
        queues: 1,
    }
}

#[test]
fn tun_device_gets_address_mtu_queue_routes_and_goes_away_on_drop() {
    let ns = Netns::new("t");
    let mut cfg = tun_config("nebula1", "100.64.0.1/10");
    cfg.tx_queue = 1000;
    cfg.routes = vec![Route { dst: "10.99.0.0/16".parse().unwrap(), mtu: Some(1300), metric: Some(7) }];
    let tun = ns.run(move || Tun::create(&cfg).unwrap());
    assert_eq!(tun.name(), "nebula1");

    let link = ns.exec_ok("ip", &["-d", "addr", "show", "dev", "nebula1"]);
    for want in [",UP,", "mtu 1420", "qlen 1000", "tun type tun pi off", "inet 100.64.0.1/10"] {
        assert!(link.contains(want), "`ip -d addr show` lacks {want:?}:\n{link}");
    }
    let routes = ns.exec_ok("ip", &["route", "show", "dev", "nebula1"]);
    assert!(routes.contains("10.99.0.0/16 proto static scope link metric 7 mtu 1300"), "{routes}");
    assert!(routes.contains("100.64.0.0/10 proto kernel scope link src 100.64.0.1"), "{routes}");

    drop(tun);
    assert!(wait_until(Duration::from_secs(5), || !ns.exec("ip", &["link", "show", "nebula1"]).status.success()));
}

#[test]
fn tun_multi_queue_and_bad_names() {
    let ns = Netns::new("t");
    let mut cfg = tun_config("mq0", "100.64.1.1/10");
    cfg.queues = 2;
    let tun = ns.run(move || Tun::create(&cfg).unwrap());
    assert_eq!(tun.queues().len(), 2);
    let link = ns.exec_ok("ip", &["-d", "link", "show", "dev", "mq0"]);
    assert!(link.contains("multi_queue numqueues 2"), "{link}");

    let errors = ns.run(|| {
        ["lo", "", "much-too-long-name"]
            .iter()
            .map(|name| Tun::create(&tun_config(name, "100.64.1.2/10")).unwrap_err().to_string())
            .collect::<Vec<_>>()
    });
    assert!(errors[0].starts_with("creating TUN device lo (TUNSETIFF; needs CAP_NET_ADMIN): "), "{}", errors[0]);
    assert!(errors[1].contains("is not a valid interface name"), "{}", errors[1]);
    assert!(errors[2].contains("is not a valid interface name"), "{}", errors[2]);
}

/// Two overlay nodes in two namespaces, each a TUN plus a UDP socket on a veth underlay,
/// bridged by a loop that only shuttles packets (TUN → UDP batch → UDP batch → TUN). `ping`
/// between the overlay addresses proves both drivers end to end.
#[test]
fn ping_crosses_two_tuns_bridged_over_batched_udp() {
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    veth(&a, "198.18.1.1/24", &b, "198.18.1.2/24");
    let side = |ns: &Netns, overlay: &'static str, underlay: &'static str| {
        ns.run(move || {
            let tun = Tun::create(&tun_config("nebula1", overlay)).unwrap();
            let udp = Udp::bind(underlay.parse().unwrap(), Some(1 << 20), Some(1 << 20)).unwrap();
            (tun, udp)
        })
    };
    let (tun_a, udp_a) = side(&a, "100.64.0.1/10", "198.18.1.1:0");
    let (tun_b, udp_b) = side(&b, "100.64.0.2/10", "198.18.1.2:0");
    let (addr_a, addr_b) = (udp_a.local_addr().unwrap(), udp_b.local_addr().unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    let bridge = {
        let stop = stop.clone();
        thread::spawn(move || {
            let nodes = [(tun_a, udp_a, addr_b), (tun_b, udp_b, addr_a)];
            let mut rx = RecvBatch::new(16, MAX_DATAGRAM);
            let mut tx = SendBatch::new(16, 2048);
            let mut buf = vec![0u8; 2048];
            let mut carried = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let mut fds: Vec<PollFd<'_>> = nodes
                    .iter()
                    .flat_map(|(tun, udp, _)| [PollFd::new(tun.as_fd(), false), PollFd::new(udp.as_fd(), false)])
                    .collect();
                poll::wait(&mut fds, Some(Duration::from_millis(50))).unwrap();
                for (tun, udp, peer) in &nodes {
                    while let Ok(n) = tun.read(&mut buf) {
                        assert!(tx.push(*peer, &buf[..n]));
                        if tx.is_full() {
                            carried += udp.send_batch(&mut tx).unwrap();
                        }
                    }
                    if !tx.is_empty() {
                        carried += udp.send_batch(&mut tx).unwrap();
                    }
                }
                for (tun, udp, _) in &nodes {
                    while let Ok(n) = udp.recv_batch(&mut rx) {
                        for (_, packet) in rx.iter() {
                            tun.write(packet).unwrap();
                        }
                        if n < rx.capacity() {
                            break;
                        }
                    }
                }
            }
            carried
        })
    };

    let ping = a.exec("ping", &["-c", "3", "-i", "0.2", "-W", "2", "100.64.0.2"]);
    // 1392 bytes of ICMP payload + 28 of headers = 1420, the MTU: must pass unfragmented (DF).
    let full = a.exec("ping", &["-c", "1", "-W", "2", "-M", "do", "-s", "1392", "100.64.0.2"]);
    let too_big = a.exec("ping", &["-c", "1", "-W", "1", "-M", "do", "-s", "1393", "100.64.0.2"]);
    stop.store(true, Ordering::Relaxed);
    let carried = bridge.join().unwrap();

    let out = String::from_utf8_lossy(&ping.stdout);
    assert!(ping.status.success() && out.contains("3 received"), "{out}{}", String::from_utf8_lossy(&ping.stderr));
    assert!(full.status.success(), "{}", String::from_utf8_lossy(&full.stdout));
    assert!(!too_big.status.success(), "a 1421-byte packet should not fit MTU 1420");
    assert!(carried >= 8, "the bridge carried {carried} datagrams");
}

/// recvmmsg/sendmmsg over loopback, IPv4 and IPv6: every datagram arrives whole, in order, with
/// its source; an unroutable destination is dropped without losing the rest.
#[test]
fn udp_batches_over_loopback() {
    let ns = Netns::new("u");
    let report = ns.run(|| {
        for host in ["127.0.0.1:0", "[::1]:0"] {
            let a = Udp::bind(host.parse().unwrap(), Some(1 << 20), Some(1 << 20)).unwrap();
            let b = Udp::bind(host.parse().unwrap(), Some(1 << 20), None).unwrap();
            let to = b.local_addr().unwrap();
            let bufs = b.buffers().unwrap();
            assert!(bufs.read >= 1 << 20, "SO_RCVBUFFORCE: {bufs:?}");

            let mut rx = RecvBatch::new(64, MAX_DATAGRAM);
            assert_eq!(b.recv_batch(&mut rx).unwrap_err().kind(), ErrorKind::WouldBlock);

            let mut tx = SendBatch::new(32, 1500);
            let payload = |i: usize| vec![i as u8; 1 + i * 13];
            let mut sent = 0;
            for i in 0..100 {
                if !tx.push(to, &payload(i)) {
                    sent += a.send_batch(&mut tx).unwrap();
                    assert!(tx.push(to, &payload(i)));
                }
            }
            sent += a.send_batch(&mut tx).unwrap();
            assert_eq!(sent, 100);

            let mut got = Vec::new();
            let ok = wait_until(Duration::from_secs(5), || {
                while let Ok(_n) = b.recv_batch(&mut rx) {
                    got.extend(rx.iter().map(|(from, d)| (from, d.to_vec())));
                }
                got.len() >= 100
            });
            assert!(ok, "received {} of 100", got.len());
            for (i, (from, data)) in got.iter().enumerate() {
                assert_eq!(*from, a.local_addr().unwrap());
                assert_eq!(*data, payload(i), "datagram {i}");
            }

            // The middle datagram has no route (only loopback exists here): it is dropped, the
            // others still go.
            let nowhere: SocketAddr = if to.is_ipv4() { "198.19.255.1:9" } else { "[2001:db8::1]:9" }.parse().unwrap();
            for dst in [to, nowhere, to] {
                assert!(tx.push(dst, b"x"));
            }
            assert_eq!(a.send_batch(&mut tx).unwrap(), 2);
            assert_eq!(tx.dropped, 1);
            assert!(tx.is_empty());
            let mut arrived = 0;
            assert!(wait_until(Duration::from_secs(5), || {
                arrived += b.recv_batch(&mut rx).unwrap_or(0);
                arrived == 2
            }));
        }
        "ok"
    });
    assert_eq!(report, "ok");
}
