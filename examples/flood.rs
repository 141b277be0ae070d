//! A bounded UDP flood for `bench/attack.sh`: sends one kind of hostile datagram at a daemon's
//! port as fast as one thread can (or at `--rate`), and stops after `--count` datagrams or
//! `--seconds`, whichever comes first.
//!
//! Hand-written because it is a test tool of ~150 lines: std's `UdpSocket` on a connected socket
//! is all it needs, and no crate generates these specific datagrams.
//!
//! ```text
//! cargo run --release --example flood -- --target 198.18.1.2:4242 --kind wg-init --seconds 8
//! ```
//!
//! Kinds: `garbage` (random bytes, random length 1..=1400), `wg-init` (WireGuard handshake
//! initiation shape: type 1, three zero bytes, 148 bytes, the rest random), `hello` (a cos-mesh
//! Hello with valid framing, version and padding around a random "certificate" of 300 bytes),
//! `wg-mac1` (like `wg-init`, but with a valid mac1 for the target's static public key
//! `--pubkey`, base64 as `wg pubkey` prints it or 64 hex digits: it passes the mac1 check that
//! anyone who knows the public key can satisfy, so the target must count it against its handshake
//! budget and answer with cookies), `replay` (the bytes of `--payload FILE`, e.g. a captured
//! genuine initiation, sent unchanged).
//!
//! Only test addresses are accepted as targets: the underlay range 198.18.0.0/15 and the
//! overlay range 100.64.0.0/10. Prints one `key=value` line with what was sent.

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use blake2::digest::consts::U16;
use blake2::digest::{Digest, Mac};
use blake2::{Blake2s256, Blake2sMac};
use clap::Parser;
use ipnet::Ipv4Net;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// How many distinct random datagrams are prepared before sending (the flood cycles through
/// them, so no random numbers are drawn while sending).
const POOL: usize = 4096;
/// Where mac1 starts in an initiation: it covers everything before it (type, sender index,
/// ephemeral key, encrypted static key and timestamp); mac2 follows it.
const MAC1_AT: usize = 116;
/// The length of the junk certificate inside a `hello` datagram.
const HELLO_CERT_LEN: usize = 300;

#[derive(Parser)]
struct Args {
    /// Where to send: an address in 198.18.0.0/15 or 100.64.0.0/10, with the port.
    #[arg(long)]
    target: SocketAddr,
    /// garbage | wg-init | wg-mac1 | hello | replay
    #[arg(long)]
    kind: String,
    /// The target's static public key for `wg-mac1`: base64 (as `wg pubkey` prints it) or hex.
    #[arg(long)]
    pubkey: Option<String>,
    /// The datagram `replay` sends.
    #[arg(long)]
    payload: Option<std::path::PathBuf>,
    /// Stop after this many datagrams.
    #[arg(long, default_value_t = 5_000_000)]
    count: u64,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Datagrams per second; 0 sends as fast as the socket takes them.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seed of the random content (the same seed sends the same datagrams).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> Result<ExitCode> {
    let a = Args::parse();
    let allowed: [Ipv4Net; 2] = ["198.18.0.0/15".parse()?, "100.64.0.0/10".parse()?];
    let SocketAddr::V4(v4) = a.target else { bail!("--target must be an IPv4 test address") };
    if !allowed.iter().any(|n| n.contains(v4.ip())) {
        bail!("--target {} is outside the test ranges 198.18.0.0/15 and 100.64.0.0/10", a.target);
    }
    if !(a.seconds > 0.0 && a.seconds <= 120.0) {
        bail!("--seconds must be between 0 and 120, not {}", a.seconds);
    }
    let pool = datagrams(&a)?;
    let sock = UdpSocket::bind("0.0.0.0:0").context("binding the flood socket")?;
    sock.connect(a.target).with_context(|| format!("connecting to {}", a.target))?;

    let start = Instant::now();
    let limit = Duration::from_secs_f64(a.seconds);
    let (mut sent, mut errors, mut bytes) = (0u64, 0u64, 0u64);
    while sent + errors < a.count {
        // Check the clock and the pacing every 64 datagrams: cheap enough for > 1M/s.
        if (sent + errors) % 64 == 0 {
            let elapsed = start.elapsed();
            if elapsed >= limit {
                break;
            }
            if a.rate > 0 {
                let due = Duration::from_secs_f64((sent + errors) as f64 / a.rate as f64);
                if let Some(wait) = due.checked_sub(elapsed) {
                    std::thread::sleep(wait);
                }
            }
        }
        let d = &pool[((sent + errors) as usize) % pool.len()];
        match sock.send(d) {
            Ok(n) => {
                sent += 1;
                bytes += n as u64;
            }
            // ECONNREFUSED (an ICMP port unreachable came back) or ENOBUFS: count and go on.
            Err(_) => errors += 1,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "kind={} target={} sent={sent} errors={errors} bytes={bytes} seconds={secs:.2} rate={:.0}",
        a.kind,
        a.target,
        sent as f64 / secs
    );
    Ok(ExitCode::SUCCESS)
}

/// The datagrams to cycle through for `a.kind`.
fn datagrams(a: &Args) -> Result<Vec<Vec<u8>>> {
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    let random = |rng: &mut ChaCha8Rng, len: usize| {
        let mut v = vec![0u8; len];
        rng.fill_bytes(&mut v);
        v
    };
    Ok(match a.kind.as_str() {
        "garbage" => (0..POOL)
            .map(|_| {
                let len = 1 + (rng.next_u32() as usize % 1400);
                random(&mut rng, len)
            })
            .collect(),
        "wg-init" => (0..POOL)
            .map(|_| {
                let mut v = random(&mut rng, cos_mesh::mesh::wire::WG_INIT_LEN);
                v[..4].copy_from_slice(&[1, 0, 0, 0]);
                v
            })
            .collect(),
        "wg-mac1" => {
            let key = mac1_key(a.pubkey.as_deref().context("--kind wg-mac1 needs --pubkey KEY")?)?;
            (0..POOL)
                .map(|_| {
                    let mut v = random(&mut rng, cos_mesh::mesh::wire::WG_INIT_LEN);
                    v[..4].copy_from_slice(&[1, 0, 0, 0]);
                    let mut mac = Blake2sMac::<U16>::new_from_slice(&key).expect("a 32-byte key");
                    mac.update(&v[..MAC1_AT]);
                    v[MAC1_AT..MAC1_AT + 16].copy_from_slice(&mac.finalize().into_bytes());
                    v
                })
                .collect()
        }
        "hello" => (0..POOL)
            .map(|_| {
                let cert = random(&mut rng, HELLO_CERT_LEN);
                cos_mesh::mesh::wire::hello(rng.next_u64(), &cert)
            })
            .collect(),
        "replay" => {
            let path = a.payload.as_ref().context("--kind replay needs --payload FILE")?;
            let d = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            if d.is_empty() || d.len() > 65_000 {
                bail!("{}: a datagram of 1..65000 bytes was expected, found {} bytes", path.display(), d.len());
            }
            vec![d]
        }
        other => bail!("--kind {other}: expected garbage, wg-init, wg-mac1, hello or replay"),
    })
}

/// mac1's key for a responder: BLAKE2s-256("mac1----" || its static public key), from the key
/// in base64 (44 characters, as `wg pubkey` prints it) or hex (64 digits).
fn mac1_key(text: &str) -> Result<[u8; 32]> {
    use base64::Engine;
    let text = text.trim();
    let bytes = if text.len() == 64 {
        hex::decode(text).with_context(|| format!("--pubkey {text}: 64 characters but not hex"))?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .with_context(|| format!("--pubkey {text}: expected base64 (44 characters) or hex (64 digits)"))?
    };
    let Ok(public) = <[u8; 32]>::try_from(bytes.as_slice()) else {
        bail!("--pubkey {text}: a 32-byte key was expected, found {} bytes", bytes.len());
    };
    let mut h = Blake2s256::new();
    h.update(b"mac1----");
    h.update(public);
    Ok(h.finalize().into())
}
