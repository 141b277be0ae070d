//! Firewall rule files: a node config's `firewall:` section or a bare rules file, its
//! `include:`s, compilation, lint, and a few packets through what compiled. The input's
//! NUL-separated parts are `main.yaml`, `inc1.yaml`, `inc2.yaml`, `inc3.yaml`.

use std::time::Instant;

use cos_mesh::firewall::lint::lint_file;
use cos_mesh::firewall::{Firewall, config};

use super::firewall_packet::{identities, packets};
use super::fixtures::{scratch, write_parts};

pub fn run(data: &[u8]) {
    let dir = scratch("firewall-rules");
    let files = write_parts(&dir, data, 4, |i| if i == 0 { "main.yaml".into() } else { format!("inc{i}.yaml") });
    let main = &files[0];
    let _ = lint_file(main, &[]);
    let section = match config::load_config_or_rules(main) {
        Ok(s) => s,
        Err(e) => {
            let _ = (e.to_string(), e.position());
            return;
        }
    };
    let mut fw = match Firewall::compile(&section, &["100.64.0.0/10".parse().expect("net")]) {
        Ok(fw) => fw,
        Err(e) => {
            let _ = (e.to_string(), e.position());
            return;
        }
    };
    let now = Instant::now();
    let peers = identities();
    for p in packets() {
        for peer in peers {
            let _ = fw.inbound(p, peer, now);
            let _ = fw.outbound(p, peer, now);
        }
    }
}
