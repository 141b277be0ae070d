//! The scrape endpoint's HTTP/1.1 responder. Hand-written because no light, well-kept synchronous
//! HTTP server crate exists (tiny_http is unmaintained; hyper and axum need an async runtime);
//! the request head is parsed by `httparse`, hyper's parser.
//!
//! One answer per connection (`Connection: close`). Every connection is answered or told why
//! not: 200 with the registry's OpenMetrics text, 404 for another path, 405 for another method,
//! 400 for a malformed head, 431 for one over [`MAX_HEAD`], 408 for one not finished within
//! [`HEAD_TIMEOUT`], 503 when [`MAX_SCRAPES`] scrapes are already being served. After answering,
//! the write side is shut down and the rest of the request drained before closing, so the
//! kernel sends FIN rather than RST and the client never loses the answer.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use prometheus_client::registry::Registry;

/// Scrapes served at once; more get 503 at once.
pub const MAX_SCRAPES: usize = 4;
/// Connections held at once (served, refused with 503, or draining); more are closed unanswered.
pub const MAX_CONNECTIONS: usize = 64;
/// The longest request head read.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an answer may take to write, and the client to close after it.
const LINGER: Duration = Duration::from_secs(2);
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The endpoint's accept thread; scrapes are answered on short-lived threads of their own, so a
/// stalled scraper never holds up another, nor the event loop.
pub struct MetricsServer {
    pub local_addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `listen` (`host:port`, or `:port` for every address) and serves `path`.
    pub fn start(listen: &str, path: &str, registry: Arc<Registry>) -> Result<MetricsServer> {
        let addr = if listen.starts_with(':') { format!("0.0.0.0{listen}") } else { listen.to_string() };
        let listener = TcpListener::bind(&addr).with_context(|| format!("binding stats.listen {listen}"))?;
        let local_addr = listener.local_addr()?;
        let endpoint = Arc::new(Endpoint {
            path: path.to_string(),
            registry,
            scrapes: Arc::default(),
            connections: Arc::default(),
        });
        std::thread::Builder::new().name("cos-mesh-metrics".into()).spawn(move || {
            for stream in listener.incoming().flatten() {
                endpoint.dispatch(stream);
            }
        })?;
        Ok(MetricsServer { local_addr })
    }
}

struct Endpoint {
    path: String,
    registry: Arc<Registry>,
    scrapes: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
}

impl Endpoint {
    fn dispatch(self: &Arc<Self>, stream: TcpStream) {
        let Some(connection) = Slot::take(&self.connections, MAX_CONNECTIONS) else {
            return; // closed unanswered: the bound on threads and sockets held
        };
        let scrape = Slot::take(&self.scrapes, MAX_SCRAPES);
        let endpoint = self.clone();
        let _ = std::thread::Builder::new().name("cos-mesh-scrape".into()).spawn(move || {
            let mut stream = stream;
            let _connection = connection;
            let response = match scrape {
                Some(_scrape) => endpoint.answer(&mut stream),
                None => Some(Response::text("503 Service Unavailable", "too many scrapes at once; retry\n")),
            };
            // The scrape's place is free again; writing and draining hold only the connection's.
            if let Some(response) = response {
                let _ = finish(stream, &response);
            }
        });
    }

    /// Reads the request and decides the answer; `None` when there is nobody to answer.
    fn answer(&self, stream: &mut TcpStream) -> Option<Response> {
        Some(match read_head(stream) {
            Err(HeadError::Gone) => return None,
            Err(HeadError::TimedOut) => Response::text("408 Request Timeout", "request head not received in time\n"),
            Err(HeadError::TooLarge) => {
                Response::text("431 Request Header Fields Too Large", "request head over 8 KiB\n")
            }
            Err(HeadError::Malformed) => Response::text("400 Bad Request", "malformed HTTP request\n"),
            Ok(Head { method, target }) => self.route(&method, &target),
        })
    }

    fn route(&self, method: &str, target: &str) -> Response {
        let path = target.split('?').next().unwrap_or(target);
        if path != self.path {
            return Response::text("404 Not Found", &format!("metrics are at {}\n", self.path));
        }
        if method != "GET" {
            return Response { allow_get: true, ..Response::text("405 Method Not Allowed", "only GET\n") };
        }
        let mut body = String::new();
        match prometheus_client::encoding::text::encode(&mut body, &self.registry) {
            Ok(()) => Response { status: "200 OK", content_type: OPENMETRICS, body, allow_get: false },
            Err(_) => Response::text("500 Internal Server Error", "encoding the metrics failed\n"),
        }
    }
}

/// A place among a bounded number, given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// Takes a place if fewer than `limit` are taken.
    fn take(count: &Arc<AtomicUsize>, limit: usize) -> Option<Slot> {
        count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1)).ok()?;
        Some(Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Head {
    method: String,
    target: String,
}

enum HeadError {
    /// The client closed (or the socket failed) before a whole head: nobody to answer.
    Gone,
    TimedOut,
    TooLarge,
    Malformed,
}

/// Reads up to the blank line that ends the request head, within [`HEAD_TIMEOUT`] in all and
/// [`MAX_HEAD`] bytes, however many segments it arrives in.
fn read_head(stream: &mut TcpStream) -> Result<Head, HeadError> {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::TimedOut);
        }
        stream.set_read_timeout(Some(left)).map_err(|_| HeadError::Gone)?;
        match stream.read(&mut buf[len..]) {
            Ok(0) => return Err(HeadError::Gone),
            Ok(n) => len += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(HeadError::TimedOut);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(HeadError::Gone),
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                let (Some(method), Some(target)) = (req.method, req.path) else { return Err(HeadError::Malformed) };
                return Ok(Head { method: method.to_string(), target: target.to_string() });
            }
            Ok(httparse::Status::Partial) if len == MAX_HEAD => return Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(_) => return Err(HeadError::Malformed),
        }
    }
}

struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
    allow_get: bool,
}

impl Response {
    fn text(status: &'static str, body: &str) -> Response {
        Response { status, content_type: "text/plain; charset=utf-8", body: body.to_string(), allow_get: false }
    }
}

/// Writes the answer, shuts the write side (FIN after the answer) and reads whatever the client
/// still sends until it closes or [`LINGER`] passes: closing with unread bytes would send RST,
/// which can destroy the answer in the client's buffers.
fn finish(mut stream: TcpStream, r: &Response) -> io::Result<()> {
    stream.set_write_timeout(Some(LINGER))?;
    let allow = if r.allow_get { "Allow: GET\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(r.body.as_bytes())?;
    stream.shutdown(Shutdown::Write)?;
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut sink) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(()),
        }
    }
}
