//! The metrics endpoint under abuse, on a real daemon in a namespace with a real tunnel: 50
//! scrapers at once, a request split across writes, a client that never finishes its head, a
//! malformed request. Every connection gets a complete answer or a status, and pings through the
//! tunnel keep their latency while the scrapers hammer.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::daemon::{Host, Pki, Segment};
use support::wait_until;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const ENDPOINT: &str = "127.0.0.1:9109";
const SCRAPERS: usize = 50;

/// A whole answer: status line, headers and exactly Content-Length bytes of body.
struct Answer {
    status: u16,
    body: String,
}

/// Reads one answer to the end; panics on a reset, a short body or a missing status.
fn read_answer(s: &mut TcpStream, what: &str) -> Answer {
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap_or_else(|e| panic!("{what}: reading the answer: {e}"));
    let text = String::from_utf8(raw).unwrap_or_else(|e| panic!("{what}: answer not UTF-8: {e}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{what}: no complete head: {text:?}"));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{what}: {head:?}"));
    assert!(head.starts_with("HTTP/1.1 "), "{what}: {head:?}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no Content-Length: {head:?}"));
    assert_eq!(body.len(), length, "{what}: body cut short");
    Answer { status, body: body.to_string() }
}

fn scrape(request: &[u8], what: &str) -> Answer {
    let mut s = TcpStream::connect(ENDPOINT).unwrap_or_else(|e| panic!("{what}: connecting: {e}"));
    s.write_all(request).unwrap();
    read_answer(&mut s, what)
}

/// `ping -c COUNT -i 0.05` through the tunnel: (received, average RTT, worst RTT) in ms; the
/// RTTs are 0 when nothing came back.
fn ping_rtt(host: &Host, ip: &str, count: u32) -> (u32, f64, f64) {
    let out = host.ns.exec("ping", &["-q", "-c", &count.to_string(), "-i", "0.05", "-W", "2", ip]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let received = text
        .split(", ")
        .find_map(|p| p.strip_suffix(" received"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ping summary: {text}"));
    let rtt: Vec<f64> = text
        .split(" = ")
        .nth(1)
        .map(|v| v.trim_end_matches(|c: char| c.is_whitespace() || c == 's' || c == 'm'))
        .map(|v| v.split('/').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default();
    eprintln!("ping: {}", text.trim().replace('\n', " | "));
    match rtt[..] {
        [_, avg, max, _] => (received, avg, max),
        _ => (received, 0.0, 0.0),
    }
}

#[test]
fn the_metrics_endpoint_answers_every_scraper_and_never_slows_the_tunnel() {
    let pki = Pki::new("scrape");
    let seg = Segment::new();
    let mut a = Host::new(&seg, "a", "198.18.0.1", "100.64.0.1");
    let mut b = Host::new(&seg, "b", "198.18.0.2", "100.64.0.2");
    let (ca_crt, ka) = pki.sign("a", "100.64.0.1/10", "nomad-server");
    let (cb_crt, kb) = pki.sign("b", "100.64.0.2/10", "nomad-client");
    let rules = format!("  include: [{REPO}/firewall/base.yaml]");
    let stats = format!("stats:\n  type: prometheus\n  listen: {ENDPOINT}\n  path: /metrics\n");
    a.configure(&pki.ca_crt(), &ca_crt, &ka, &[("100.64.0.2", "198.18.0.2")], &rules, &stats);
    b.configure(&pki.ca_crt(), &cb_crt, &kb, &[("100.64.0.1", "198.18.0.1")], &rules, "");
    a.start();
    b.start();
    assert!(wait_until(Duration::from_secs(10), || a.ping("100.64.0.2")));
    let (_, quiet_avg, _) = ping_rtt(&a, "100.64.0.2", 20);

    // A request split across several writes is read to its blank line and answered.
    let split = a.ns.run(|| {
        let mut s = TcpStream::connect(ENDPOINT).unwrap();
        s.set_nodelay(true).unwrap();
        for part in ["GE", "T /metr", "ics HTTP/1.1\r\nHo", "st: x\r\nAccept: */*\r\n", "\r\n"] {
            s.write_all(part.as_bytes()).unwrap();
            thread::sleep(Duration::from_millis(60));
        }
        read_answer(&mut s, "split request")
    });
    assert_eq!(split.status, 200);
    assert!(split.body.contains("\ncos_mesh_peers "), "{}", split.body);
    assert!(split.body.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF: {}", split.body);

    // Long headers (over one segment's worth, under the 8 KiB bound) are fine too.
    let long = a.ns.run(|| {
        let padding = "x".repeat(3000);
        scrape(
            format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-A: {padding}\r\nX-B: {padding}\r\n\r\n").as_bytes(),
            "long",
        )
    });
    assert_eq!(long.status, 200);
    // Wrong path, wrong method, garbage, an oversized head: each a status, never a reset.
    let statuses = a.ns.run(|| {
        [
            &b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            b"\x16\x03\x01 not http at all\r\n\r\n",
            format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(9000)).into_bytes().leak(),
        ]
        .map(|r| scrape(r, "odd request").status)
    });
    assert_eq!(statuses, [404, 405, 400, 431]);

    // A client that sends part of a head and then nothing is told 408 (and holds only itself up).
    // The scrapes above may still hold their places for a moment: a 503 at once means retry.
    let slow = a.ns.run(|| {
        thread::spawn(|| {
            for _ in 0..50 {
                let mut s = TcpStream::connect(ENDPOINT).unwrap();
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").unwrap();
                let started = Instant::now();
                let status = read_answer(&mut s, "slow client").status;
                if status != 503 {
                    return (status, started.elapsed());
                }
                thread::sleep(Duration::from_millis(20));
            }
            panic!("the slow client never got a place");
        })
    });
    // Let it take its place before the storm.
    thread::sleep(Duration::from_millis(200));

    // 50 scrapers at once, again and again, while pings cross the tunnel.
    let stop = Arc::new(AtomicBool::new(false));
    let stop_scrapers = stop.clone();
    let scrapers = a.ns.run(move || {
        (0..SCRAPERS)
            .map(|i| {
                let stop = stop_scrapers.clone();
                thread::spawn(move || {
                    let (mut ok, mut busy) = (0u32, 0u32);
                    while !stop.load(Ordering::Relaxed) || ok + busy == 0 {
                        let mut s = TcpStream::connect(ENDPOINT).unwrap();
                        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                        let _ = s.shutdown(Shutdown::Write);
                        let answer = read_answer(&mut s, &format!("scraper {i}"));
                        match answer.status {
                            200 => {
                                assert!(answer.body.ends_with("# EOF\n"), "scraper {i}: incomplete body");
                                ok += 1;
                            }
                            503 => busy += 1,
                            other => panic!("scraper {i}: status {other}"),
                        }
                    }
                    (ok, busy)
                })
            })
            .collect::<Vec<_>>()
    });
    let (received, loaded_avg, loaded_max) = ping_rtt(&a, "100.64.0.2", 40);
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut busy) = (0, 0);
    for s in scrapers {
        let (o, b) = s.join().expect("a scraper failed");
        ok += o;
        busy += b;
    }
    let (slow_status, slow_took) = slow.join().expect("the slow client failed");
    eprintln!(
        "scrapes: {ok} answered 200, {busy} answered 503; ping avg {quiet_avg:.3} ms quiet, \
         {loaded_avg:.3} ms (max {loaded_max:.3}) under scraping; slow client {slow_status} after {slow_took:?}"
    );
    assert!(ok > 0, "some scrapes are served while busy ones are refused");
    assert_eq!(received, 40, "pings lost while scrapers hammered");
    // The loop never waits on a scraper: a blocked loop would show up as seconds, not milliseconds.
    assert!(
        loaded_avg < quiet_avg + 20.0 && loaded_max < 250.0,
        "tunnel slowed: {loaded_avg} ms avg, {loaded_max} max"
    );
    assert_eq!(slow_status, 408);
    assert!(slow_took >= Duration::from_secs(4), "408 only after the head timeout: {slow_took:?}");
    // And when the storm is over, a scrape is served again.
    assert_eq!(a.ns.run(|| scrape(b"GET /metrics HTTP/1.1\r\n\r\n", "after").status), 200);
}
