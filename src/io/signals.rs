//! SIGHUP (reload) and SIGTERM / SIGINT (shutdown) as a readable file descriptor (`signalfd`),
//! so the event loop's `poll(2)` wakes for them like for a packet and handles them in order,
//! outside any signal handler.
//!
//! The signals are blocked in the thread that calls [`Signals::new`], and threads spawned later
//! inherit the mask. Create it first thing in `main`, before starting workers: a thread that
//! does not block them would get the default action (termination) instead.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: reload pki, blocklist, firewall, static hosts and logging.
    Reload,
    /// SIGTERM or SIGINT: shut down cleanly.
    Shutdown,
}

/// A nonblocking signalfd for SIGHUP, SIGTERM and SIGINT.
#[derive(Debug)]
pub struct Signals {
    fd: OwnedFd,
}

impl Signals {
    /// Blocks the three signals in this thread and opens the fd that receives them.
    pub fn new() -> io::Result<Signals> {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
        let mut set: libc::sigset_t = unsafe { zeroed() };
        // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
        unsafe {
            libc::sigemptyset(&mut set);
            for s in [libc::SIGHUP, libc::SIGTERM, libc::SIGINT] {
                libc::sigaddset(&mut set, s);
            }
        }
        // SAFETY: `set` is initialised; the old mask is not wanted.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        // SAFETY: -1 asks for a new fd; `set` is initialised.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor we own.
        Ok(Signals { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// The next pending signal, or `None` when none is pending.
    pub fn next(&self) -> io::Result<Option<Signal>> {
        loop {
            // SAFETY: signalfd_siginfo is plain data; read fills it whole or fails.
            let mut info: libc::signalfd_siginfo = unsafe { zeroed() };
            let want = size_of::<libc::signalfd_siginfo>();
            // SAFETY: `info` is writable for `want` bytes.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), (&raw mut info).cast(), want) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return Ok(None),
                    _ => return Err(e),
                }
            }
            if n as usize != want {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "short read from signalfd"));
            }
            match info.ssi_signo as libc::c_int {
                libc::SIGHUP => return Ok(Some(Signal::Reload)),
                libc::SIGTERM | libc::SIGINT => return Ok(Some(Signal::Shutdown)),
                _ => continue,
            }
        }
    }
}

impl Signals {
    /// Blocks until a signal arrives.
    pub fn wait(&self) -> io::Result<Signal> {
        loop {
            if let Some(s) = self.next()? {
                return Ok(s);
            }
            let mut fds = [super::PollFd::new(self.as_fd(), false)];
            super::poll::wait(&mut fds, None)?;
        }
    }
}

impl AsRawFd for Signals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs on its own thread: `raise` directs the signal at the calling thread, which has it
    /// blocked, so it waits for the signalfd instead of killing the test process.
    #[test]
    fn hup_means_reload_and_term_int_mean_shutdown() {
        std::thread::spawn(|| {
            let s = Signals::new().unwrap();
            assert_eq!(s.next().unwrap(), None);
            for (sig, want) in
                [(libc::SIGHUP, Signal::Reload), (libc::SIGTERM, Signal::Shutdown), (libc::SIGINT, Signal::Shutdown)]
            {
                // SAFETY: the signal is blocked in this thread, so raising it only queues it.
                assert_eq!(unsafe { libc::raise(sig) }, 0);
                assert_eq!(s.next().unwrap(), Some(want));
            }
            assert_eq!(s.next().unwrap(), None);
        })
        .join()
        .unwrap();
    }
}
