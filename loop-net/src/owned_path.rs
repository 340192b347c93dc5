//! [`OwnedPath`]: a Unix socket file that we bound, removed when its owner
//! (a server, a datagram endpoint) goes away, if the path still names that
//! same socket: never a file that someone else put there since (another
//! program that unlinked ours and bound its own, LESSONS 12). The same
//! check as asyncio 3.13's `cleanup_socket`: compare device and inode.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::net::{AddressFamily, SocketFlags, SocketType};

use crate::SockAddr;

/// A socket file we bound; removing it is `Drop`.
#[derive(Debug)]
pub(crate) struct OwnedPath {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl OwnedPath {
    /// Records the socket file just bound at `path` (`None` if it cannot
    /// be read: then nothing will be removed).
    pub(crate) fn bound(path: PathBuf) -> Option<OwnedPath> {
        let meta = std::fs::symlink_metadata(&path).ok()?;
        Some(OwnedPath {
            path,
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl Drop for OwnedPath {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if meta.dev() == self.dev && meta.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Before binding `path` for a socket of type `kind` (stream or datagram):
/// removes it only if it is a socket file nobody uses (a non-blocking
/// `connect` of that type to it is refused, `ECONNREFUSED`); one in use is
/// an `AddrInUse` error (a stream server whose backlog is full, `EAGAIN`,
/// counts as in use); any other file is left alone (`bind` then fails
/// with `EADDRINUSE`), as is a socket of the other type (`EPROTOTYPE`).
pub(crate) fn remove_stale_socket(path: &Path, kind: SocketType) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Ok(());
    }
    let probe = rustix::net::socket_with(
        AddressFamily::UNIX,
        kind,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    let addr = SockAddr::Unix(path.to_path_buf()).to_raw()?;
    match rustix::net::connect(&probe, &addr) {
        Ok(()) | Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INPROGRESS) => {
            let what = if kind == SocketType::STREAM {
                "a server is already listening on this socket"
            } else {
                "a socket is already bound to this path"
            };
            Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{}: {what}", path.display()),
            ))
        }
        Err(rustix::io::Errno::CONNREFUSED) => match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        Err(_) => Ok(()),
    }
}
