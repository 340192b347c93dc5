//! [`OwnedPath`]: a Unix socket file that we bound, removed when its owner
//! (a server, a datagram endpoint) goes away, if the path still names that
//! same socket: never a file that someone else put there since (another
//! program that unlinked ours and bound its own, LESSONS 12). The same
//! check as asyncio 3.13's `cleanup_socket`: compare device and inode.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

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
