//! The control socket's request reader (`daemon::control::read_request`): one line, at most 256
//! bytes, from a local client.

use cos_mesh::daemon::control::{Request, read_request};

pub fn run(data: &[u8]) {
    if let Some(r) = read_request(data) {
        // Only the three words parse, whatever surrounds them on the line.
        let head = String::from_utf8_lossy(&data[..data.len().min(256)]);
        assert!(head.lines().next().unwrap_or_default().trim() == r.as_str());
        assert!(matches!(r, Request::Status | Request::Members | Request::Reload));
    }
}
