//! Keeping `SIGPIPE` away from writes to pipes (a child module of `pipe`,
//! used by the write end).
//!
//! Writing to a pipe whose reader is gone raises `SIGPIPE`, whose default
//! action kills the process. Rust programs start with it ignored, as Python
//! does, but a library cannot rely on that. Sockets are written with
//! `MSG_NOSIGNAL`. For other fds, the transport reads the
//! disposition of `SIGPIPE` when it is created: if it is not ignored, each
//! write runs with `SIGPIPE` blocked on the loop thread, and a `SIGPIPE` that
//! the write raised is consumed before the mask is restored (two more
//! syscalls per write; none when it is ignored). Either way the error is
//! `EPIPE`, delivered to the protocol. The thread's signal mask is never left
//! changed (children started later inherit it).

use rustix::io::Errno;

/// Whether the process ignores `SIGPIPE` right now.
pub(super) fn ignored() -> bool {
    // SAFETY: a query (null new action) into a zeroed, owned sigaction.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) != 0 {
            return false;
        }
        old.sa_sigaction == libc::SIG_IGN
    }
}

/// Runs `write` (one write to a pipe) so that it cannot raise `SIGPIPE`
/// when `guard` is set: with the signal blocked on this thread, consuming
/// the one the write raised, then restoring the mask.
pub(super) fn write_guarded(
    guard: bool,
    write: impl FnOnce() -> rustix::io::Result<usize>,
) -> rustix::io::Result<usize> {
    if !guard {
        return write();
    }
    // SAFETY: plain calls on sigset_t values owned by this frame.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) != 0 {
            return write();
        }
        let was_blocked = libc::sigismember(&old, libc::SIGPIPE) == 1;
        // A SIGPIPE already pending (while the caller blocks it) is not
        // ours to consume.
        let pending_before = was_blocked && {
            let mut pending: libc::sigset_t = std::mem::zeroed();
            libc::sigpending(&mut pending) == 0 && libc::sigismember(&pending, libc::SIGPIPE) == 1
        };
        let result = write();
        if result == Err(Errno::PIPE) && !pending_before {
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            while libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) < 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
        }
        if !was_blocked {
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sigpipe_pending() -> bool {
        // SAFETY: as above.
        unsafe {
            let mut pending: libc::sigset_t = std::mem::zeroed();
            libc::sigpending(&mut pending);
            libc::sigismember(&pending, libc::SIGPIPE) == 1
        }
    }

    /// The guarded path, even though the test binary ignores SIGPIPE
    /// (a blocked signal is queued even when ignored, so the path is
    /// really exercised): EPIPE comes back, no SIGPIPE stays pending,
    /// the mask is restored.
    #[test]
    fn a_guarded_write_to_a_pipe_without_reader_is_epipe_and_leaves_no_signal() {
        let (r, w) = rustix::pipe::pipe().unwrap();
        drop(r);
        let got = write_guarded(true, || rustix::io::write(&w, b"x"));
        assert_eq!(got, Err(Errno::PIPE));
        assert!(!sigpipe_pending(), "the SIGPIPE was not consumed");
        // SAFETY: as above.
        let blocked = unsafe {
            let mut cur: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
            libc::sigismember(&cur, libc::SIGPIPE) == 1
        };
        assert!(!blocked, "the thread's mask was left changed");
        assert!(ignored(), "Rust test binaries ignore SIGPIPE");
    }
}
