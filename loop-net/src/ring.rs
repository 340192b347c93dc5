//! What the stream transports share on io_uring's completion path: the
//! plain socket transport (stream/completion.rs) and the TLS transport
//! (tls/stream/completion.rs) each hold a [`Ring`] (the loop's
//! `UringStream` for their socket, `None` on readiness) and a [`Stash`].
//!
//! # The write rule ([`Ring::write`])
//! A write made while a completion is delivered, in an iteration that
//! delivers several, is handed to the loop, which sends what the iteration
//! wrote in one `SEND` per stream with the next wait. Any other write (one
//! completion alone, a task, a timer), and a large one anywhere
//! ([`QUEUE_BELOW`]), tries the socket first when nothing is queued, and
//! only the rest is queued: stream/completion.rs gives the figures. Once
//! something is queued, every later write queues behind it, so the bytes
//! leave in order.
//!
//! # The stash ([`Stash`])
//! `stop_recv` cancels the receive, but bytes the kernel received before
//! the cancellation took effect still come. A transport that is not
//! reading keeps them, in order, with an EOF or error met behind them, and
//! feeds them before anything newer once it reads again.
//!
//! # The end ([`Ring::release`])
//! The loop's stream is released (its cancellations submitted at once)
//! *before* the transport closes its fd, so the socket really closes with
//! the fd: an aborted transport's peer sees the end at once.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;

use loop_core::{StreamHandler, UringStream};

use crate::loop_slot::LoopSlot;

/// A write of at least this many bytes is tried on the socket at once even
/// inside a completion's delivery: queueing copies the bytes (a 64 KiB
/// copy costs several times the one system call it would save), while a
/// send straight from the caller's slice copies nothing. Smaller writes
/// are queued and coalesced.
pub(crate) const QUEUE_BELOW: usize = 16 * 1024;

/// A transport's completion path: the loop's stream for its socket, or
/// nothing (readiness).
#[derive(Default)]
pub(crate) struct Ring {
    stream: RefCell<Option<UringStream>>,
}

impl Ring {
    /// Opens the path for `fd` if the loop offers it (once, at creation).
    pub(crate) fn open(&self, lp: &LoopSlot, fd: RawFd, handler: Rc<dyn StreamHandler>) {
        *self.stream.borrow_mut() = lp.uring_stream(fd, handler);
    }

    /// Whether the transport moves its bytes by completion.
    pub(crate) fn is_on(&self) -> bool {
        self.stream.borrow().is_some()
    }

    /// Starts the multishot receive (nothing when not on the path).
    pub(crate) fn start_recv(&self) -> io::Result<()> {
        match &*self.stream.borrow() {
            Some(s) => s.start_recv(),
            None => Ok(()),
        }
    }

    /// Cancels the receive; what races the cancellation still comes (the
    /// transport stashes it).
    pub(crate) fn stop_recv(&self) {
        if let Some(s) = &*self.stream.borrow() {
            // A failure to queue the cancellation leaves the receive armed;
            // its bytes go to the stash, so nothing is delivered anyway.
            let _ = s.stop_recv();
        }
    }

    /// Whether no receive is in the kernel (always, off the path).
    #[cfg(feature = "tls")]
    pub(crate) fn recv_idle(&self) -> bool {
        self.stream.borrow().as_ref().is_none_or(|s| s.recv_idle())
    }

    /// Bytes written and not yet taken by the kernel (`None`: not on the
    /// path).
    pub(crate) fn buffered(&self) -> Option<usize> {
        self.stream.borrow().as_ref().map(|s| s.buffered())
    }

    /// `abort()`: what is not sent yet is dropped, the send in flight
    /// cancelled.
    pub(crate) fn discard(&self) {
        if let Some(s) = &*self.stream.borrow() {
            let _ = s.discard_sends();
        }
    }

    /// Releases the loop's stream: call it before the fd closes (module
    /// docs). Idempotent.
    pub(crate) fn release(&self) {
        let stream = self.stream.borrow_mut().take();
        if let Some(s) = stream {
            let _ = s.release();
        }
    }

    /// Writes `chunks` by the write rule (module docs), or, with
    /// `at_once`, tries the socket first wherever it is called (for bytes
    /// the transport closes right after: queued, they would be cancelled
    /// with the stream). `send_now` tries the socket with `chunks` (all of
    /// them) and returns what it took. `None` when not on the path;
    /// `Some(Err)` when the socket refused with an error (fatal for the
    /// transport).
    pub(crate) fn write(
        &self,
        chunks: &[&[u8]],
        at_once: bool,
        send_now: impl FnOnce(&[&[u8]]) -> io::Result<usize>,
    ) -> Option<io::Result<()>> {
        let buffered = self.buffered()?;
        let total: usize = chunks.iter().map(|c| c.len()).sum();
        let first = at_once || UringStream::batch() < 2 || total >= QUEUE_BELOW;
        let mut skip = 0;
        if first && buffered == 0 {
            match send_now(chunks) {
                Ok(n) if n >= total => return Some(Ok(())),
                Ok(n) => skip = n,
                Err(e) => return Some(Err(e)),
            }
        }
        let mut rest: Vec<&[u8]> = Vec::new();
        let queued: &[&[u8]] = if skip == 0 {
            chunks
        } else {
            for c in chunks {
                if skip >= c.len() {
                    skip -= c.len();
                } else {
                    rest.push(&c[skip..]);
                    skip = 0;
                }
            }
            &rest
        };
        if let Some(s) = &*self.stream.borrow() {
            s.write(queued);
        }
        Some(Ok(()))
    }
}

/// Bytes received while the transport was not reading, with what came
/// behind them (module docs).
#[derive(Default)]
pub(crate) struct Stash {
    bytes: RefCell<Vec<u8>>,
    /// The peer's EOF came behind the bytes.
    eof: Cell<bool>,
    /// The receive failed behind the bytes (a reset while paused): fatal
    /// once they are delivered, as the readiness path meets it then.
    error: RefCell<Option<io::Error>>,
}

impl Stash {
    /// Keeps `data` after what the stash holds.
    pub(crate) fn push(&self, data: &[u8]) {
        self.bytes.borrow_mut().extend_from_slice(data);
    }

    /// Puts `data` before what the stash holds.
    pub(crate) fn push_front(&self, data: &[u8]) {
        let mut bytes = self.bytes.borrow_mut();
        let rest = std::mem::take(&mut *bytes);
        bytes.extend_from_slice(data);
        bytes.extend_from_slice(&rest);
    }

    /// The bytes, leaving the stash without any (the EOF or error stays).
    pub(crate) fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.bytes.borrow_mut())
    }

    /// Whether no bytes are kept.
    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.borrow().is_empty()
    }

    /// Whether bytes, an EOF or an error wait.
    pub(crate) fn holds_anything(&self) -> bool {
        !self.is_empty() || self.eof.get() || self.error.borrow().is_some()
    }

    /// The peer's EOF came behind the bytes.
    pub(crate) fn set_eof(&self) {
        self.eof.set(true);
    }

    /// Whether the EOF was behind the bytes (cleared).
    pub(crate) fn take_eof(&self) -> bool {
        self.eof.replace(false)
    }

    /// The receive failed behind the bytes.
    pub(crate) fn set_error(&self, e: io::Error) {
        *self.error.borrow_mut() = Some(e);
    }

    /// The error behind the bytes, if any (cleared).
    pub(crate) fn take_error(&self) -> Option<io::Error> {
        self.error.borrow_mut().take()
    }

    /// Drops everything (closing).
    #[cfg(feature = "tls")]
    pub(crate) fn clear(&self) {
        self.bytes.borrow_mut().clear();
        self.eof.set(false);
        self.error.borrow_mut().take();
    }
}
