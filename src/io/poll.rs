//! Waiting for several file descriptors at once: `poll(2)` through `nix`, behind the small
//! readable/writable interface the event loop uses.

#![forbid(unsafe_code)]

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use nix::poll::{PollFlags, PollTimeout};

/// The most descriptors one [`wait`] takes (the loop has a handful).
const MAX_FDS: usize = 16;

/// One descriptor to wait on, and after [`wait`] what it is ready for.
#[derive(Debug, Clone, Copy)]
pub struct PollFd<'a> {
    fd: BorrowedFd<'a>,
    want_write: bool,
    revents: PollFlags,
}

impl<'a> PollFd<'a> {
    /// Wait for `fd` to be readable (and writable too if `want_write`, e.g. a UDP socket whose
    /// send batch hit `WouldBlock`).
    pub fn new(fd: BorrowedFd<'a>, want_write: bool) -> PollFd<'a> {
        PollFd { fd, want_write, revents: PollFlags::empty() }
    }

    pub fn readable(&self) -> bool {
        self.revents.intersects(PollFlags::POLLIN | PollFlags::POLLERR | PollFlags::POLLHUP)
    }

    pub fn writable(&self) -> bool {
        self.revents.intersects(PollFlags::POLLOUT | PollFlags::POLLERR)
    }

    fn request(&self) -> nix::poll::PollFd<'a> {
        let write = if self.want_write { PollFlags::POLLOUT } else { PollFlags::empty() };
        nix::poll::PollFd::new(self.fd, PollFlags::POLLIN | write)
    }
}

/// Waits until one of `fds` is ready or `timeout` passes (`None` waits forever; the loop passes
/// the core's `poll_timeout()` minus now). Returns how many are ready; 0 on timeout or when a
/// signal interrupted the wait (the signalfd is then readable on the next call).
pub fn wait(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> io::Result<usize> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "more than 16 descriptors"));
    }
    // Round up so a deadline 0.4 ms away does not turn into a busy loop of 0 ms waits.
    let timeout = match timeout {
        None => PollTimeout::NONE,
        Some(d) => PollTimeout::try_from(d.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX),
    };
    let Some(first) = fds.first() else {
        return Ok(nix::poll::poll(&mut [], timeout).map_or(0, |n| n as usize));
    };
    // On the stack, no allocation per wakeup; slots past `fds.len()` are never passed in.
    let mut raw: [nix::poll::PollFd<'_>; MAX_FDS] = std::array::from_fn(|i| fds.get(i).unwrap_or(first).request());
    let n = match nix::poll::poll(&mut raw[..fds.len()], timeout) {
        Ok(n) => n,
        Err(nix::errno::Errno::EINTR) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    for (r, f) in raw.iter().zip(fds.iter_mut()) {
        f.revents = r.revents().unwrap_or(PollFlags::empty());
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
