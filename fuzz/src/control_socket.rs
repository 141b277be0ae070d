//! The control socket's request reader (`daemon::control::read_request`): one line, at most 256
//! bytes, from a local client.

use cos_mesh::daemon::control::{Request, read_request};

pub fn run(data: &[u8]) {
    if let Some(r) = read_request(data) {
        // Whatever parsed prints back as a line that parses to the same request.
        assert_eq!(read_request(format!("{}\n", r.line()).as_bytes()), Some(r));
        if !matches!(r, Request::Ping(_)) {
            // The three words parse only alone on their line.
            let head = String::from_utf8_lossy(&data[..data.len().min(256)]);
            assert!(head.lines().next().unwrap_or_default().trim() == r.line());
        }
    }
}
