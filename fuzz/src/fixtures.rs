//! What the targets share, built once per process: a CA and node certificates from fixed keys
//! (so an input behaves the same in every run: a crash reproduces), and a scratch directory for
//! the targets that read files.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cos_mesh::cert::armor;
use cos_mesh::cert::keys::HostSecret;
use cos_mesh::cert::pool::CaPool;
use cos_mesh::cert::{Certificate, Details};
use cos_mesh::unixtime::UnixTime;
use ed25519_dalek::SigningKey;

/// The wall clock every target runs at; the certificates are valid for a year around it.
pub const WALL0: i64 = 1_800_000_000;

/// A node of the fixture mesh: `100.64.0.<n>`, key bytes all `n`.
pub struct NodeId {
    pub cert: Certificate,
    key_pem: String,
}

impl NodeId {
    pub fn key(&self) -> HostSecret {
        HostSecret::from_pem(self.key_pem.as_bytes()).expect("fixture key")
    }

    pub fn key_bytes(&self) -> [u8; 32] {
        *self.key().bytes()
    }
}

pub struct Pki {
    pub ca_pem: String,
    /// Nodes 1 (lighthouse, group `ops`), 2, 3 (group `ops`) and 4.
    pub nodes: Vec<NodeId>,
    /// A node signed by another CA: well formed, never trusted.
    pub foreign: Certificate,
    /// Expired a second before [`WALL0`].
    pub expired: Certificate,
}

impl Pki {
    pub fn pool(&self) -> CaPool {
        CaPool::from_pem(self.ca_pem.as_bytes()).expect("fixture CA")
    }

    /// Node `n` (1-based).
    pub fn node(&self, n: u8) -> &NodeId {
        &self.nodes[usize::from(n) - 1]
    }
}

pub fn vpn(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, 0, n)
}

fn ca(seed: u8, name: &str) -> (SigningKey, Certificate) {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let d = Details {
        name: name.into(),
        ips: vec!["100.64.0.0/10".parse().expect("net")],
        subnets: vec![],
        groups: vec![],
        not_before: UnixTime(WALL0 - 86_400),
        not_after: UnixTime(WALL0 + 365 * 86_400),
        public_key: key.verifying_key().to_bytes(),
        is_ca: true,
        issuer: None,
    };
    let cert = Certificate::sign(&d, &key).expect("sign CA");
    (key, cert)
}

fn node(ca: &(SigningKey, Certificate), n: u8, groups: &[&str], not_after: i64) -> NodeId {
    let key_pem = armor::encode(armor::X25519_PRIVATE_KEY, &[n; 32]);
    let key = HostSecret::from_pem(key_pem.as_bytes()).expect("key");
    let d = Details {
        name: format!("node-{n}"),
        ips: vec![format!("100.64.0.{n}/10").parse().expect("ip")],
        subnets: vec![],
        groups: groups.iter().map(|g| g.to_string()).collect(),
        not_before: UnixTime(WALL0 - 3600),
        not_after: UnixTime(not_after),
        public_key: key.public().0,
        is_ca: false,
        issuer: Some(ca.1.fingerprint()),
    };
    NodeId { cert: Certificate::sign(&d, &ca.0).expect("sign node"), key_pem }
}

/// The fixture PKI, built on first use.
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let main = ca(0xca, "fuzz-ca");
        let other = ca(0xcb, "other-ca");
        let year = WALL0 + 300 * 86_400;
        let nodes = vec![
            node(&main, 1, &["lighthouse", "ops"], year),
            node(&main, 2, &[], year),
            node(&main, 3, &["ops"], year),
            node(&main, 4, &["nomad-client"], year),
        ];
        Pki {
            ca_pem: main.1.to_pem(),
            foreign: node(&other, 5, &[], year).cert,
            expired: node(&main, 6, &[], WALL0 - 1).cert,
            nodes,
        }
    })
}

/// A directory private to this process for targets that must read files; `sub` is emptied.
pub fn scratch(sub: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let base = DIR.get_or_init(|| std::env::temp_dir().join(format!("cos-mesh-fuzz-{}", std::process::id())));
    let dir = base.join(sub);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Removes the scratch directory (the corpus replay test calls it when done).
pub fn remove_scratch() {
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("cos-mesh-fuzz-{}", std::process::id())));
}

/// Writes the NUL-separated parts of `data` as files `names(i)` in `dir` (NUL never appears in
/// YAML, so a corpus file of several configs stays readable text). Returns the paths written.
pub fn write_parts(dir: &Path, data: &[u8], max: usize, names: impl Fn(usize) -> String) -> Vec<PathBuf> {
    data.split(|b| *b == 0)
        .take(max)
        .enumerate()
        .map(|(i, part)| {
            let p = dir.join(names(i));
            std::fs::write(&p, part).expect("write scratch file");
            p
        })
        .collect()
}
