//! Stamps the library with a build identity: a hash of the sources, the manifest and the lock
//! file. `cos-mesh run` hands over to `cos-mesh-daemon` only when the daemon carries the same
//! identity, so a stale daemon binary left beside a rebuilt `cos-mesh` (`cargo run` builds only
//! the binary it runs) is never the one that starts. Hashing the inputs rather than stamping a
//! time keeps builds reproducible.

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
