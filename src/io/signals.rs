//! SIGHUP (reload) and SIGTERM / SIGINT (shutdown) as a readable file descriptor (`signalfd`),
//! so the event loop's `poll(2)` wakes for them like for a packet and handles them in order,
//! outside any signal handler.
//!
//! The signals are blocked in the thread that calls [`Signals::new`], and threads spawned later
//! inherit the mask. Create it first thing in `main`, before starting workers: a thread that
//! does not block them would get the default action (termination) instead.

#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use nix::sys::signal::{SigSet, Signal as Sig};
use nix::sys::signalfd::{SfdFlags, SignalFd};

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
    fd: SignalFd,
}

impl Signals {
    /// Blocks the three signals in this thread and opens the fd that receives them.
    pub fn new() -> io::Result<Signals> {
        let mut set = SigSet::empty();
        for s in [Sig::SIGHUP, Sig::SIGTERM, Sig::SIGINT] {
            set.add(s);
        }
        set.thread_block()?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Signals { fd })
    }

    /// The next pending signal, or `None` when none is pending.
    pub fn next(&self) -> io::Result<Option<Signal>> {
        loop {
            let info = match self.fd.read_signal() {
                Ok(Some(info)) => info,
                Ok(None) => return Ok(None),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            match Sig::try_from(info.ssi_signo as i32) {
                Ok(Sig::SIGHUP) => return Ok(Some(Signal::Reload)),
                Ok(Sig::SIGTERM | Sig::SIGINT) => return Ok(Some(Signal::Shutdown)),
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
                [(Sig::SIGHUP, Signal::Reload), (Sig::SIGTERM, Signal::Shutdown), (Sig::SIGINT, Signal::Shutdown)]
            {
                // Blocked in this thread, so raising it only queues it.
                nix::sys::signal::raise(sig).unwrap();
                assert_eq!(s.next().unwrap(), Some(want));
            }
            assert_eq!(s.next().unwrap(), None);
        })
        .join()
        .unwrap();
    }
}
