//! The optional Prometheus endpoint (`stats: {type: prometheus, listen, path}`): a plain HTTP
//! responder in the daemon's poll loop, exposition text rendered from the core's counters.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Scrapes answered at once.
const MAX_SCRAPES: usize = 4;
use std::time::Duration;

use anyhow::{Context, Result};

/// Serves the latest exposition text from its own thread: a slow or idle scraper can never
/// stall the event loop, which only replaces the snapshot (once a second).
pub struct MetricsServer {
    snapshot: Arc<Mutex<String>>,
}

impl MetricsServer {
    pub fn start(listen: &str, path: &str) -> Result<MetricsServer> {
        let addr = if listen.starts_with(':') { format!("0.0.0.0{listen}") } else { listen.to_string() };
        let listener = TcpListener::bind(&addr).with_context(|| format!("binding stats.listen {listen}"))?;
        let snapshot = Arc::new(Mutex::new(String::new()));
        let (shared, path) = (snapshot.clone(), path.to_string());
        let active = Arc::new(AtomicUsize::new(0));
        std::thread::Builder::new().name("cos-mesh-metrics".into()).spawn(move || {
            for stream in listener.incoming().flatten() {
                // Each scrape on its own short-lived thread (a few at most), so an idle client
                // holds only itself up.
                if active.fetch_add(1, Ordering::SeqCst) >= MAX_SCRAPES {
                    active.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let body = shared.lock().map(|s| s.clone()).unwrap_or_default();
                let (path, done) = (path.clone(), active.clone());
                let spawned = std::thread::Builder::new().name("cos-mesh-scrape".into()).spawn(move || {
                    let _ = answer(stream, &path, &body);
                    done.fetch_sub(1, Ordering::SeqCst);
                });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })?;
        Ok(MetricsServer { snapshot })
    }

    /// Replaces what scrapes get.
    pub fn set(&self, body: String) {
        if let Ok(mut s) = self.snapshot.lock() {
            *s = body;
        }
    }
}

fn answer(mut s: TcpStream, path: &str, body: &str) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut req = [0u8; 1024];
    let n = s.read(&mut req)?;
    let line = String::from_utf8_lossy(&req[..n]);
    let target = line.split_whitespace().nth(1).unwrap_or("");
    let (status, text) = if line.starts_with("GET ") && target == path {
        ("200 OK", body.to_string())
    } else {
        ("404 Not Found", format!("metrics are at {path}\n"))
    };
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
}

/// Builds Prometheus exposition text.
#[derive(Default)]
pub struct Exposition(String);

impl Exposition {
    pub fn metric(&mut self, name: &str, kind: &str, help: &str, samples: &[(&str, f64)]) {
        let _ = writeln!(self.0, "# HELP cos_mesh_{name} {help}\n# TYPE cos_mesh_{name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(self.0, "cos_mesh_{name}{labels} {v}");
        }
    }

    /// Every numeric field of a serializable counters struct as `<prefix>_<field>_total`.
    pub fn counters(&mut self, prefix: &str, help: &str, counters: &impl serde::Serialize) {
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(counters) {
            for (k, v) in map {
                if let Some(n) = v.as_f64() {
                    self.metric(&format!("{prefix}_{k}_total"), "counter", help, &[("", n)]);
                }
            }
        }
    }

    pub fn finish(self) -> String {
        self.0
    }
}

/// A label value with `\` and `"` escaped.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}
