//! Which descriptors a child inherits: 0, 1, 2 and the `pass_fds`, nothing
//! else (asyncio's `close_fds=True`, Popen's default), whatever the parent
//! left without `O_CLOEXEC`.
//!
//! # How
//! In the child, between `fork` and `exec` (a `pre_exec` closure, where only
//! async-signal-safe calls are allowed): every fd from 3 up is marked
//! close-on-exec with one `close_range(3, ~0, CLOSE_RANGE_CLOEXEC)` (Linux
//! 5.11; before that, by reading `/proc/self/fd` with `getdents64` into a
//! buffer on the stack, or, without `/proc`, by trying every number below
//! the fd limit), then close-on-exec is cleared on each of the `pass_fds`.
//! Marking rather than closing keeps the standard library's own error pipe
//! (already close-on-exec) working until the `exec`.
//!
//! # When
//! A `pre_exec` closure turns the standard library's `posix_spawn` (a
//! `vfork`-like, cheap spawn) into `fork` + `exec`, so the work is done only
//! when it is needed: when `pass_fds` is set, or when the parent has an fd
//! above 2 without close-on-exec right now. The check reads `/proc/self/fd`
//! and asks each fd's flags (`fcntl(F_GETFD)`): a few system calls, against
//! the page-table copy of a `fork`. It looks at 64 fds at most: with more
//! open (a server's connections), the work is done without asking. Every fd that aioloop and Rust's
//! standard library open is close-on-exec, so the check usually finds none
//! and the spawn keeps the fast path.
//!
//! The check cannot see an fd that *another thread* opens without
//! close-on-exec between the check and the spawn (a raw `open`, `dup` or
//! `socket` without the flag, racing with the spawn); the child may inherit
//! that one. Any inheritable fd that exists when the spawn starts is never
//! inherited. Where `/proc` cannot be read, the work is always done.

use std::ffi::{c_int, CStr};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::fs::{Mode, OFlags, RawDir, CWD};

/// The directory listing a process's open fds.
#[cfg(target_os = "linux")]
const FD_DIR: &CStr = c"/proc/self/fd";
#[cfg(not(target_os = "linux"))]
const FD_DIR: &CStr = c"/dev/fd";

/// Makes `cmd`'s child inherit only 0, 1, 2 and `pass_fds` (see the module
/// docs). `pass_fds` must be open in the parent (checked by the caller).
pub(crate) fn restrict(cmd: &mut Command, pass_fds: &[RawFd]) {
    if pass_fds.is_empty() && !has_inheritable_fd() {
        return;
    }
    let keep: Vec<RawFd> = pass_fds.iter().copied().filter(|&fd| fd > 2).collect();
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed. It makes raw system calls
    // (`close_range`, `open`, `getdents64`, `getrlimit`, `fcntl`), reads
    // `keep` (allocated in the parent before the fork, never freed or
    // grown in the child) and a buffer on its own stack, builds
    // `io::Error`s from errno only (no allocation), takes no lock and
    // allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            mark_cloexec_from_3()?;
            for &fd in &keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Whether `fd` is open in this process.
pub(crate) fn is_open(fd: RawFd) -> bool {
    // SAFETY: `fcntl(F_GETFD)` only reads the fd's flags; on a number that
    // is not open it fails with EBADF and touches nothing.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1
}

/// How many fds the check looks at before it gives up and does the work
/// anyway: it must stay cheap next to a `fork` when thousands are open.
const CHECK_AT_MOST: usize = 64;

/// Whether an fd above 2 is open without close-on-exec (true if that
/// cannot be known cheaply: no fd directory, or more than
/// [`CHECK_AT_MOST`] fds).
fn has_inheritable_fd() -> bool {
    let mut found = false;
    let mut seen = 0;
    let listed = for_each_fd(|fd| {
        seen += 1;
        // SAFETY: as in `is_open`: the flags are read, nothing else; an fd
        // closed by another thread meanwhile gives EBADF.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        found |= (flags != -1 && flags & libc::FD_CLOEXEC == 0) || seen > CHECK_AT_MOST;
        !found
    });
    found || listed.is_err()
}

/// Marks every fd from 3 up close-on-exec. Async-signal-safe.
fn mark_cloexec_from_3() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `close_range` with `CLOSE_RANGE_CLOEXEC` changes only the
        // flags of the fds in the range; the arguments are plain integers.
        let r = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
            )
        };
        if r == 0 {
            return Ok(());
        }
        // ENOSYS or EINVAL (a kernel before 5.11): the slower ways.
    }
    if for_each_fd(|fd| {
        set_cloexec(fd);
        true
    })
    .is_ok()
    {
        return Ok(());
    }
    // No fd directory: every number below the limit.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1 << 20)
        .min(c_int::MAX as u64) as c_int;
    for fd in 3..limit {
        set_cloexec(fd);
    }
    Ok(())
}

fn set_cloexec(fd: RawFd) {
    // SAFETY: sets the close-on-exec flag of `fd` (nothing if it is not
    // open); no memory is touched.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

/// Calls `f` with each open fd above 2 (but the directory's own), until it
/// returns false, read from the fd directory with a buffer on the stack: no
/// allocation, so usable between fork and exec.
fn for_each_fd(mut f: impl FnMut(RawFd) -> bool) -> io::Result<()> {
    let dir = rustix::fs::openat(
        CWD,
        FD_DIR,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let own = dir.as_raw_fd();
    let mut buf = [MaybeUninit::<u8>::uninit(); 1024];
    let mut entries = RawDir::new(&dir, &mut buf);
    while let Some(entry) = entries.next() {
        let entry = entry?;
        if let Some(fd) = parse_fd(entry.file_name().to_bytes()) {
            if fd > 2 && fd != own && !f(fd) {
                break;
            }
        }
    }
    Ok(())
}

/// An fd number from a directory entry's name (`None` for `.` and `..`).
fn parse_fd(name: &[u8]) -> Option<RawFd> {
    if name.is_empty() || name.len() > 10 {
        return None;
    }
    let mut n: i64 = 0;
    for &b in name {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(b - b'0');
    }
    RawFd::try_from(n).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_names_parse() {
        assert_eq!(parse_fd(b"17"), Some(17));
        assert_eq!(parse_fd(b"."), None);
        assert_eq!(parse_fd(b".."), None);
        assert_eq!(parse_fd(b"99999999999"), None);
    }

    #[test]
    fn the_listing_names_an_open_fd() {
        let (r, _w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let mut seen = false;
        for_each_fd(|fd| {
            seen |= fd == r.as_raw_fd();
            true
        })
        .unwrap();
        assert!(seen);
        assert!(is_open(r.as_raw_fd()));
    }
}
