//! Stamps the library with a build identity: a hash of the sources, the manifest and the lock
//! file. `cos-mesh run` hands over to `cos-mesh-daemon` only when the daemon carries the same
//! identity, so a stale daemon binary left beside a rebuilt `cos-mesh` (`cargo run` builds only
//! the binary it runs) is never the one that starts. Hashing the inputs rather than stamping a
//! time keeps builds reproducible.
//!
//! Also hands the linker the daemon's link order (`src/bin/cos-mesh-daemon.order`, written by
//! `bench/hot-code.sh`): the functions a running daemon executes, placed first and together, so
//! its code stays resident in a few 64 KB windows instead of megabytes spread over the binary.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

fn main() {
    for input in ["src", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={input}");
    }
    let mut files = vec![PathBuf::from("Cargo.toml"), PathBuf::from("Cargo.lock")];
    collect(Path::new("src"), &mut files);
    files.sort();
    let mut h = DefaultHasher::new();
    for f in &files {
        f.hash(&mut h);
        std::fs::read(f).unwrap_or_default().hash(&mut h);
    }
    println!("cargo:rustc-env=COS_MESH_BUILD_ID={:016x}", h.finish());

    if lld_links_release() {
        let order = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join(DAEMON_ORDER);
        println!("cargo:rustc-link-arg-bin=cos-mesh-daemon=-Wl,--symbol-ordering-file={}", order.display());
        // Names of functions that changed since the file was written are skipped, silently.
        println!("cargo:rustc-link-arg-bin=cos-mesh-daemon=-Wl,--no-warn-symbol-ordering");
    }
}

const DAEMON_ORDER: &str = "src/bin/cos-mesh-daemon.order";

/// A release build linked by lld, the only linker here that reads a symbol order: Rust's default
/// on x86_64 Linux since 1.90, unless the build chooses its own linker.
fn lld_links_release() -> bool {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let flags = env("CARGO_ENCODED_RUSTFLAGS");
    let rustc = std::process::Command::new(env("RUSTC")).arg("-V").output();
    let minor = rustc.ok().and_then(|o| {
        let v = String::from_utf8_lossy(&o.stdout).split_whitespace().nth(1)?.to_string();
        v.split('.').nth(1)?.parse::<u32>().ok()
    });
    env("PROFILE") == "release"
        && env("TARGET") == "x86_64-unknown-linux-gnu"
        && minor.is_some_and(|m| m >= 90)
        && !flags.contains("link")
        && std::env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_none()
        && Path::new(DAEMON_ORDER).exists()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}
