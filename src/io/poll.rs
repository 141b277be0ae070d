//! Waiting for several file descriptors at once: a thin `poll(2)` wrapper for the event loop.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// One descriptor to wait on, and after [`wait`] what it is ready for.
#[derive(Debug, Clone, Copy)]
pub struct PollFd<'a> {
    fd: BorrowedFd<'a>,
    want_write: bool,
    revents: libc::c_short,
}

impl<'a> PollFd<'a> {
    /// Wait for `fd` to be readable (and writable too if `want_write`, e.g. a UDP socket whose
    /// send batch hit `WouldBlock`).
    pub fn new(fd: BorrowedFd<'a>, want_write: bool) -> PollFd<'a> {
        PollFd { fd, want_write, revents: 0 }
    }

    pub fn readable(&self) -> bool {
        self.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0
    }

    pub fn writable(&self) -> bool {
        self.revents & (libc::POLLOUT | libc::POLLERR) != 0
    }
}

/// Waits until one of `fds` is ready or `timeout` passes (`None` waits forever; the loop passes
/// the core's `poll_timeout()` minus now). Returns how many are ready; 0 on timeout or when a
/// signal interrupted the wait (the signalfd is then readable on the next call).
pub fn wait(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> io::Result<usize> {
    let mut raw: [libc::pollfd; 16] = [libc::pollfd { fd: -1, events: 0, revents: 0 }; 16];
    if fds.len() > raw.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "more than 16 descriptors"));
    }
    for (r, f) in raw.iter_mut().zip(fds.iter()) {
        r.fd = f.fd.as_raw_fd();
        r.events = libc::POLLIN | if f.want_write { libc::POLLOUT } else { 0 };
    }
    // Round up so a deadline 0.4 ms away does not turn into a busy loop of 0 ms waits.
    let ms = match timeout {
        None => -1,
        Some(d) => d.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int,
    };
    // SAFETY: `raw[..fds.len()]` is an initialised pollfd array.
    let n = unsafe { libc::poll(raw.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(0) } else { Err(e) };
    }
    for (r, f) in raw.iter().zip(fds.iter_mut()) {
        f.revents = r.revents;
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn reports_readiness_and_times_out() {
        let (a, b) = UnixDatagram::pair().unwrap();
        let mut fds = [PollFd::new(b.as_fd(), false)];
        assert_eq!(wait(&mut fds, Some(Duration::from_millis(10))).unwrap(), 0);
        assert!(!fds[0].readable());
        a.send(b"x").unwrap();
        assert_eq!(wait(&mut fds, Some(Duration::from_secs(5))).unwrap(), 1);
        assert!(fds[0].readable());
        let mut w = [PollFd::new(a.as_fd(), true)];
        wait(&mut w, None).unwrap();
        assert!(w[0].writable());
    }
}
