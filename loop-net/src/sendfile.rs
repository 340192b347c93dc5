//! `sock_sendfile`: a file to a stream socket, zero-copy where the kernel
//! can, else by reading and sending.
//!
//! # Design (asyncio's, kept)
//! 1. Check the arguments: a non-blocking `SOCK_STREAM` socket, a positive
//!    `count` if one is given.
//! 2. Native path (Linux): the file must be a regular file (`fstat`); send
//!    `[offset, min(offset + count, size))` with `sendfile(2)` and an explicit
//!    offset, waiting for writability on `EAGAIN`. If the very first call
//!    fails with an error that means "sendfile cannot do this" (`EINVAL`,
//!    `ENOSYS`, `EOPNOTSUPP`, `ESPIPE`), or the file is not a regular file,
//!    or the platform has no sendfile, the native path is unavailable.
//! 3. Unavailable and `fallback` false: a [`SendfileNotAvailableError`].
//!    Unavailable and `fallback` true: seek to `offset`, then read blocks of
//!    256 KiB on the default executor (file reads may block; the loop must
//!    not) and send each with the `sock_sendall` machinery.
//! 4. Whatever the path, and also when the future is dropped half-way, the
//!    file position ends at `offset + bytes sent` (asyncio's
//!    `_sock_sendfile_update_filepos` and `file.seek(offset + total_sent)`).

pub(crate) mod transport;

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use loop_core::EventLoop;
use rustix::io::Errno;

use crate::readiness::{check_call, Direction, FdIo};
use crate::sock::send_all;

/// Bytes read per block by the fallback (asyncio's 256 KiB cap).
pub(crate) const FALLBACK_BLOCK: usize = 256 * 1024;

/// The most Linux sends in one `sendfile` call.
#[cfg(any(target_os = "linux", target_os = "android"))]
const MAX_SENDFILE_CHUNK: u64 = 0x7fff_f000;

/// `sock_sendfile` could not use the native `sendfile(2)` path and was told
/// not to fall back (asyncio's `SendfileNotAvailableError`).
///
/// It reaches the caller inside an [`io::Error`] of kind
/// [`Unsupported`](io::ErrorKind::Unsupported); get it back with
/// [`SendfileNotAvailableError::from_io`]. Nothing was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendfileNotAvailableError {
    reason: String,
}

impl SendfileNotAvailableError {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        SendfileNotAvailableError {
            reason: reason.into(),
        }
    }

    /// Why the native path was unavailable.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The error inside `err`, if `err` is one.
    pub fn from_io(err: &io::Error) -> Option<&SendfileNotAvailableError> {
        err.get_ref()?.downcast_ref::<SendfileNotAvailableError>()
    }
}

impl fmt::Display for SendfileNotAvailableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sendfile is not available: {}", self.reason)
    }
}

impl std::error::Error for SendfileNotAvailableError {}

/// How the native path ended, short of success.
pub(crate) enum NativeError {
    Unavailable(String),
    Io(io::Error),
}

/// Keeps the file position at `offset + sent` however the call ends.
struct FilePosition<'a> {
    file: BorrowedFd<'a>,
    offset: u64,
    sent: u64,
    /// The fallback read ahead: set the position even if nothing was sent.
    moved: bool,
}

impl Drop for FilePosition<'_> {
    fn drop(&mut self) {
        if self.sent > 0 || self.moved {
            // A pipe or socket has no position; nothing to restore then.
            let _ = rustix::fs::seek(
                self.file,
                rustix::fs::SeekFrom::Start(self.offset.saturating_add(self.sent)),
            );
        }
    }
}

pub(crate) async fn sock_sendfile(
    lp: &EventLoop,
    sock: BorrowedFd<'_>,
    file: BorrowedFd<'_>,
    offset: u64,
    count: Option<u64>,
    fallback: bool,
) -> io::Result<u64> {
    check_call(lp, sock, "sock_sendfile")?;
    if rustix::net::sockopt::socket_type(sock)? != rustix::net::SocketType::STREAM {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "sock_sendfile: only SOCK_STREAM socket allowed",
        ));
    }
    if count == Some(0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "sock_sendfile: count must be a positive integer (got 0)",
        ));
    }
    let mut pos = FilePosition {
        file,
        offset,
        sent: 0,
        moved: false,
    };
    match native(lp, sock, file, offset, count, &mut pos.sent).await {
        Ok(()) => return Ok(pos.sent),
        Err(NativeError::Io(e)) => return Err(e),
        Err(NativeError::Unavailable(reason)) if !fallback => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                SendfileNotAvailableError::new(reason),
            ))
        }
        Err(NativeError::Unavailable(_)) => {}
    }
    pos.moved = true;
    fallback_copy(lp, sock, file, offset, count, &mut pos.sent).await?;
    Ok(pos.sent)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) async fn native(
    lp: &EventLoop,
    sock: BorrowedFd<'_>,
    file: BorrowedFd<'_>,
    offset: u64,
    count: Option<u64>,
    sent: &mut u64,
) -> Result<(), NativeError> {
    let not_regular = || NativeError::Unavailable("not a regular file".to_string());
    let st = rustix::fs::fstat(file).map_err(|_| not_regular())?;
    if !rustix::fs::FileType::from_raw_mode(st.st_mode).is_file() {
        return Err(not_regular());
    }
    let size = u64::try_from(st.st_size).unwrap_or(0);
    let end = match count {
        Some(c) => offset.saturating_add(c).min(size),
        None => size,
    };
    let mut at = offset.min(size);
    let mut io = FdIo::new(lp, sock, Direction::Write, "sock_sendfile");
    while at < end {
        let chunk = (end - at).min(MAX_SENDFILE_CHUNK) as usize;
        let result = io
            .run(|| {
                let mut off = at;
                Ok(rustix::fs::sendfile(sock, file, Some(&mut off), chunk)?)
            })
            .await;
        match result {
            // The file shrank under us: what is left is gone.
            Ok(0) => break,
            Ok(n) => {
                at += n as u64;
                *sent += n as u64;
            }
            Err(e) if *sent == 0 && sendfile_unsupported(&e) => {
                return Err(NativeError::Unavailable(format!("sendfile(2) failed: {e}")))
            }
            Err(e) => return Err(NativeError::Io(e)),
        }
    }
    Ok(())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) async fn native(
    _lp: &EventLoop,
    _sock: BorrowedFd<'_>,
    _file: BorrowedFd<'_>,
    _offset: u64,
    _count: Option<u64>,
    _sent: &mut u64,
) -> Result<(), NativeError> {
    Err(NativeError::Unavailable(
        "sendfile(2) is not used on this platform".to_string(),
    ))
}

/// Errors of a first `sendfile` call that mean it cannot serve this pair of
/// descriptors (as opposed to a failing socket).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn sendfile_unsupported(e: &io::Error) -> bool {
    let Some(code) = e.raw_os_error() else {
        return false;
    };
    [Errno::INVAL, Errno::NOSYS, Errno::OPNOTSUPP, Errno::SPIPE]
        .iter()
        .any(|errno| errno.raw_os_error() == code)
}

/// Read blocks on the default executor and send them with `sock_sendall`'s
/// loop.
async fn fallback_copy(
    lp: &EventLoop,
    sock: BorrowedFd<'_>,
    file: BorrowedFd<'_>,
    offset: u64,
    count: Option<u64>,
    sent: &mut u64,
) -> io::Result<()> {
    if offset != 0 {
        rustix::fs::seek(file, rustix::fs::SeekFrom::Start(offset))?;
    }
    // The executor thread reads through its own descriptor for the same open
    // file (so the file position is shared, as with asyncio's `readinto`).
    let reader = Arc::new(file.try_clone_to_owned()?);
    let block = count.map_or(FALLBACK_BLOCK, |c| {
        usize::try_from(c).map_or(FALLBACK_BLOCK, |c| c.min(FALLBACK_BLOCK))
    });
    let mut buf = vec![0u8; block];
    let mut io = FdIo::new(lp, sock, Direction::Write, "sock_sendfile");
    loop {
        let want = match count {
            Some(c) => usize::try_from(c - *sent).map_or(block, |left| left.min(block)),
            None => block,
        };
        if want == 0 {
            return Ok(());
        }
        let fd = reader.clone();
        let job = lp
            .run_in_executor(move || {
                let result = loop {
                    match rustix::io::read(fd.as_fd(), &mut buf[..want]) {
                        Err(Errno::INTR) => continue,
                        other => break other,
                    }
                };
                (buf, result)
            })
            .map_err(io::Error::from)?;
        let (returned, result) = job.await.map_err(io::Error::from)?;
        buf = returned;
        let n = result?;
        if n == 0 {
            return Ok(());
        }
        send_all(&mut io, sock, &buf[..n], sent).await?;
    }
}
