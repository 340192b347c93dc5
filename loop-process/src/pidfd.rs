//! The pidfd system calls, Linux only (5.3 and later). Elsewhere there are
//! no pidfds: [`open`] fails with `Unsupported`, so no pidfd ever exists and
//! the other two are never reached with one (the SIGCHLD watcher is used).

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::process::{Pid, Signal};

/// `pidfd_open(pid, 0)`.
pub(crate) fn open(pid: Pid) -> io::Result<OwnedFd> {
    #[cfg(target_os = "linux")]
    {
        Ok(rustix::process::pidfd_open(
            pid,
            rustix::process::PidfdFlags::empty(),
        )?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// `pidfd_send_signal(pidfd, sig)`.
pub(crate) fn send_signal(pidfd: BorrowedFd<'_>, sig: Signal) -> rustix::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::pidfd_send_signal(pidfd, sig)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (pidfd, sig);
        Err(rustix::io::Errno::NOSYS)
    }
}

/// `waitid(P_PIDFD, pidfd, WEXITED | WNOHANG)`: `Some(code)` once the child
/// was reaped (its exit status, minus the signal that killed it, or
/// `unknown` when it cannot be known), `None` while it runs.
pub(crate) fn try_reap(pidfd: BorrowedFd<'_>, unknown: i32) -> Option<i32> {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{WaitId, WaitIdOptions};
        match rustix::process::waitid(
            WaitId::PidFd(pidfd),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        ) {
            Ok(Some(status)) if status.exited() || status.killed() || status.dumped() => {
                Some(match (status.exit_status(), status.terminating_signal()) {
                    (Some(code), _) => code,
                    (None, Some(sig)) => -sig,
                    (None, None) => unknown,
                })
            }
            Ok(_) | Err(rustix::io::Errno::INTR) => None,
            // ECHILD: reaped by someone else; anything else: the pidfd is of
            // no use any more. Either way the child is gone to us.
            Err(_) => Some(unknown),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pidfd;
        Some(unknown)
    }
}
