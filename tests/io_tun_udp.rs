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
use cos_mesh::io::{Tun, TunBatch, TunConfig, TunRecv, Udp, UdpOptions, UdpRecv};
use support::{Netns, veth, wait_until};

fn tun_config(name: &str, addr: &str) -> TunConfig {
    TunConfig {
        name: name.into(),
        address: Some(addr.parse().unwrap()),
        ipv6: Vec::new(),
        mtu: 1420,
        tx_queue: 500,
        routes: Vec::new(),
        queues: 1,
        offload: true,
    }
}

#[test]
fn tun_device_gets_address_mtu_queue_routes_and_goes_away_on_drop() {
    let ns = Netns::new("t");
    let mut cfg = tun_config("nebula1", "100.64.0.1/10").with_ipv6(["fd00:64::1/64".parse().unwrap()]);
    cfg.tx_queue = 1000;
    cfg.routes = vec![
        Route { dst: "10.99.0.0/16".parse().unwrap(), mtu: Some(1300), metric: Some(7) },
        Route { dst: "2001:db8:99::/48".parse().unwrap(), mtu: Some(1300), metric: Some(7) },
    ];
    let tun = ns.run(move || Tun::create(&cfg).unwrap());
    assert_eq!(tun.name(), "nebula1");
    assert!(tun.offload(), "this kernel has IFF_VNET_HDR and TSO on TUN");

    let link = ns.exec_ok("ip", &["-d", "addr", "show", "dev", "nebula1"]);
    for want in [",UP,", "mtu 1420", "qlen 1000", "tun type tun pi off vnet_hdr on", "inet 100.64.0.1/10"] {
        assert!(link.contains(want), "`ip -d addr show` lacks {want:?}:\n{link}");
    }
    let routes = ns.exec_ok("ip", &["route", "show", "dev", "nebula1"]);
    assert!(routes.contains("10.99.0.0/16 proto static scope link metric 7 mtu 1300"), "{routes}");
    assert!(routes.contains("100.64.0.0/10 proto kernel scope link src 100.64.0.1"), "{routes}");
    // A dual-stack certificate: its IPv6 network is on the device too, with its prefix route.
    let link6 = ns.exec_ok("ip", &["-6", "addr", "show", "dev", "nebula1"]);
    assert!(link6.contains("inet6 fd00:64::1/64"), "{link6}");
    let routes6 = ns.exec_ok("ip", &["-6", "route", "show", "dev", "nebula1"]);
    assert!(routes6.contains("fd00:64::/64"), "{routes6}");
    // An IPv6 route (tun.routes, tun.unsafe_routes) through the device.
    assert!(routes6.contains("2001:db8:99::/48 proto static metric 7 mtu 1300"), "{routes6}");

    drop(tun);
    assert!(wait_until(Duration::from_secs(5), || !ns.exec("ip", &["link", "show", "nebula1"]).status.success()));

    // tun.use_offloads: false gives a plain device.
    let mut plain = tun_config("nebula1", "100.64.0.1/10");
    plain.offload = false;
    let tun = ns.run(move || Tun::create(&plain).unwrap());
    assert!(!tun.offload());
    let link = ns.exec_ok("ip", &["-d", "link", "show", "dev", "nebula1"]);
    assert!(link.contains("vnet_hdr off"), "{link}");
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
/// bridged by a loop that only shuttles packets (TUN batch → UDP → UDP batch → TUN batch).
/// `ping` between the overlay addresses proves both drivers end to end, with offloads on and off.
#[test]
fn ping_crosses_two_tuns_bridged_over_udp_with_and_without_offloads() {
    for offload in [true, false] {
        bridge_and_ping(offload);
    }
}

fn bridge_and_ping(offload: bool) {
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    veth(&a, "198.18.1.1/24", &b, "198.18.1.2/24");
    let side = |ns: &Netns, overlay: &'static str, underlay: &'static str| {
        ns.run(move || {
            let mut cfg = tun_config("nebula1", overlay);
            cfg.offload = offload;
            let tun = Tun::create(&cfg).unwrap();
            let opts = UdpOptions { offloads: offload, ..UdpOptions::default() };
            let udp = Udp::bind_with(underlay.parse().unwrap(), opts).unwrap();
            (tun, udp)
        })
    };
    let (tun_a, udp_a) = side(&a, "100.64.0.1/10", "198.18.1.1:0");
    let (tun_b, udp_b) = side(&b, "100.64.0.2/10", "198.18.1.2:0");
    assert_eq!(tun_a.offload(), offload);
    let (addr_a, addr_b) = (udp_a.local_addr().unwrap(), udp_b.local_addr().unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    let bridge = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut nodes =
                [(TunRecv::new(&tun_a), tun_a, udp_a, addr_b), (TunRecv::new(&tun_b), tun_b, udp_b, addr_a)];
            let mut rx = UdpRecv::new(16);
            let mut tx = TunBatch::new(64, 2048, offload);
            let mut carried = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let mut fds: Vec<PollFd<'_>> = nodes
                    .iter()
                    .flat_map(|(_, tun, udp, _)| [PollFd::new(tun.as_fd(), false), PollFd::new(udp.as_fd(), false)])
                    .collect();
                poll::wait(&mut fds, Some(Duration::from_millis(50))).unwrap();
                drop(fds);
                for (trx, tun, udp, peer) in &mut nodes {
                    while tun.recv(0, trx).is_ok() {
                        for packet in trx.iter() {
                            udp.send(*peer, packet, packet.len()).unwrap();
                            carried += 1;
                        }
                    }
                }
                for (_, tun, udp, _) in &nodes {
                    while udp.recv(&mut rx).is_ok() {
                        for (_, packet) in rx.datagrams() {
                            assert!(tx.push(packet) || (tun.send(0, &mut tx).is_ok() && tx.push(packet)));
                        }
                        tun.send(0, &mut tx).unwrap();
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
    assert!(carried >= 8, "the bridge carried {carried} packets");
}

/// Batched receive and GSO sends over loopback, IPv4 and IPv6: every datagram arrives whole,
/// in order, with its source; a run of equal sizes leaves in one call and arrives split at its
/// stride; an unroutable destination is an error that does not disturb the socket.
#[test]
fn udp_batches_and_gso_runs_over_loopback() {
    let ns = Netns::new("u");
    let report = ns.run(|| {
        for host in ["127.0.0.1:0", "[::1]:0"] {
            let a = Udp::bind(host.parse().unwrap(), Some(1 << 20), Some(1 << 20)).unwrap();
            let b = Udp::bind(host.parse().unwrap(), Some(1 << 20), None).unwrap();
            assert!(a.max_segments() > 1 && b.gro(), "this kernel has UDP GSO and GRO");
            let to = b.local_addr().unwrap();
            let bufs = b.buffers().unwrap();
            assert!(bufs.read >= 1 << 20, "SO_RCVBUFFORCE: {bufs:?}");

            let mut rx = UdpRecv::new(8);
            assert_eq!(b.recv(&mut rx).unwrap_err().kind(), ErrorKind::WouldBlock);

            let payload = |i: usize| vec![i as u8; 1 + i * 13];
            for i in 0..100 {
                a.send(to, &payload(i), 1500).unwrap();
            }
            // A GSO run: 40 datagrams of 1,000 bytes and a last one of 500.
            let run: Vec<u8> = (0..41).flat_map(|i| vec![100 + i as u8; if i == 40 { 500 } else { 1000 }]).collect();
            assert!(a.send(to, &run, 1000).unwrap().gso);

            let mut got = Vec::new();
            let mut buffers = 0;
            let ok = wait_until(Duration::from_secs(5), || {
                while let Ok(n) = b.recv(&mut rx) {
                    buffers += n;
                    got.extend(rx.datagrams().map(|(from, d)| (from, d.to_vec())));
                }
                got.len() >= 141
            });
            assert!(ok, "received {} of 141", got.len());
            assert_eq!(got.len(), 141);
            for (i, (from, data)) in got.iter().enumerate() {
                assert_eq!(*from, a.local_addr().unwrap());
                let want = if i < 100 { payload(i) } else { vec![i as u8; if i == 140 { 500 } else { 1000 }] };
                assert_eq!(*data, want, "datagram {i}");
            }
            assert!(buffers < 141, "GRO should have merged the run: {buffers} buffers");

            // No route (only loopback exists here): an error, and the socket still works.
            let nowhere: SocketAddr = if to.is_ipv4() { "198.19.255.1:9" } else { "[2001:db8::1]:9" }.parse().unwrap();
            assert!(a.send(nowhere, b"x", 1).is_err());
            a.send(to, b"y", 1).unwrap();
            assert!(wait_until(Duration::from_secs(5), || b.recv(&mut rx).is_ok()));
            assert_eq!(rx.datagrams().map(|(_, d)| d.to_vec()).collect::<Vec<_>>(), vec![b"y".to_vec()]);
        }
        "ok"
    });
    assert_eq!(report, "ok");
}

/// A GSO run the path cannot carry (segments larger than the underlay MTU, which the kernel
/// refuses with EINVAL) still arrives: the run goes out one datagram at a time (fragmented by
/// the kernel as before), and that size is not offered to GSO again while smaller ones are.
#[test]
fn a_refused_gso_run_falls_back_to_single_datagrams() {
    let (a, b) = (Netns::new("g"), Netns::new("g"));
    let (va, vb) = veth(&a, "198.18.2.1/24", &b, "198.18.2.2/24");
    a.exec_ok("ip", &["link", "set", &va, "mtu", "1280"]);
    b.exec_ok("ip", &["link", "set", &vb, "mtu", "1280"]);
    let tx = a.run(|| Udp::bind("198.18.2.1:0".parse().unwrap(), None, None).unwrap());
    let rx = b.run(|| Udp::bind("198.18.2.2:0".parse().unwrap(), None, None).unwrap());
    assert!(tx.max_segments() > 1);
    let sent = tx.send(rx.local_addr().unwrap(), &[0x77; 3 * 1400], 1400).unwrap();
    assert!(sent.fell_back && !sent.gso, "{sent:?}");
    // The same size again goes straight to single datagrams; a size the path carries keeps GSO.
    let again = tx.send(rx.local_addr().unwrap(), &[0x77; 3 * 1400], 1400).unwrap();
    assert!(!again.fell_back && !again.gso, "{again:?}");
    assert!(tx.send(rx.local_addr().unwrap(), &[0x66; 3 * 1000], 1000).unwrap().gso);
    let mut buf = UdpRecv::new(8);
    let mut got = Vec::new();
    assert!(wait_until(Duration::from_secs(5), || {
        while rx.recv(&mut buf).is_ok() {
            got.extend(buf.datagrams().map(|(_, d)| d.len()));
        }
        got.len() >= 9
    }));
    assert_eq!(got, vec![1400, 1400, 1400, 1400, 1400, 1400, 1000, 1000, 1000]);
}
