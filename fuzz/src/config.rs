//! Node config YAML (`config::Config::load`): one file, and a directory of several files merged
//! in name order. The input's NUL-separated parts are the files.

use cos_mesh::config::Config;

use super::fixtures::{scratch, write_parts};

/// The whole input is one config file.
pub fn file(data: &[u8]) {
    let dir = scratch("config-file");
    let path = dir.join("config.yaml");
    std::fs::write(&path, data).expect("write config");
    load(&path);
}

/// Up to 8 files `00.yaml`, `01.yaml`, … merged as a config directory.
pub fn dir(data: &[u8]) {
    let dir = scratch("config-dir");
    write_parts(&dir, data, 8, |i| format!("{i:02}.yaml"));
    load(&dir);
}

fn load(path: &std::path::Path) {
    match Config::load(path) {
        Ok(loaded) => {
            let _ = loaded.check_overlay("100.64.0.0/10".parse().expect("net"));
            for w in &loaded.warnings {
                let _ = w.to_string();
            }
        }
        Err(e) => {
            // Errors are for operators: they name a file and never leak a type name.
            let text = e.to_string();
            assert!(text.contains(".yaml") || text.contains(path.to_str().unwrap_or_default()), "{text}");
        }
    }
}
