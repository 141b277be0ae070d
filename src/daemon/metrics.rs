//! The optional Prometheus endpoint (`stats: {type: prometheus, listen, path}`): a plain HTTP
//! responder in the daemon's poll loop, exposition text rendered from the core's counters.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result};

pub struct MetricsServer {
    listener: TcpListener,
    path: String,
}

impl MetricsServer {
    pub fn bind(listen: &str, path: &str) -> Result<MetricsServer> {
        let addr = if listen.starts_with(':') { format!("0.0.0.0{listen}") } else { listen.to_string() };
        let listener = TcpListener::bind(&addr).with_context(|| format!("binding stats.listen {listen}"))?;
        listener.set_nonblocking(true)?;
        Ok(MetricsServer { listener, path: path.to_string() })
    }

    pub fn listener(&self) -> &TcpListener {
        &self.listener
    }

    /// Answers every waiting scrape with `body()`.
    pub fn serve(&self, body: impl Fn() -> String) {
        while let Ok((stream, _)) = self.listener.accept() {
            let _ = self.answer(stream, &body);
        }
    }

    fn answer(&self, mut s: TcpStream, body: &impl Fn() -> String) -> std::io::Result<()> {
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut req = [0u8; 1024];
        let n = s.read(&mut req)?;
        let line = String::from_utf8_lossy(&req[..n]);
        let target = line.split_whitespace().nth(1).unwrap_or("");
        let (status, text) = if line.starts_with("GET ") && target == self.path {
            ("200 OK", body())
        } else {
            ("404 Not Found", format!("metrics are at {}\n", self.path))
        };
        write!(
            s,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        )
    }
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
