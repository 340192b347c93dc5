//! The socket stream transport's write path (a child module of `stream`):
//! write first and buffer only the rest, watching for writability while
//! the buffer is non-empty, and the flow-control notices (flow.rs) that
//! the buffer's growing and shrinking owe the protocol.

use std::io;
use std::io::IoSlice;
use std::rc::Rc;

use loop_core::{ErrorKind, LoopError};
use rustix::io::Errno;
use rustix::net::{SendAncillaryBuffer, SendFlags, Shutdown};

use super::{io_error, Notice, State, Stream};
use crate::flow::{FlowOwner, WriteFlow};

/// The most buffers `writelines` hands to one `sendmsg`: an array of this
/// many `IoSlice`s lives on the stack (1 KiB), and Linux refuses more than
/// `IOV_MAX` (1024) in one call.
const MAX_IOV: usize = 64;

/// Groups of up to this many buffers are sent from a smaller array.
const FEW_IOV: usize = 4;

impl Stream {
    fn start_writing(self: &Rc<Self>) {
        if self.writing.get() {
            return;
        }
        let me = self.clone();
        match self
            .life
            .lp()
            .add_writer(self.raw, move || me.on_writable())
        {
            Ok(()) => self.writing.set(true),
            Err(e) => self.fatal(io_error(e)),
        }
    }

    pub(super) fn stop_writing(&self) {
        if self.writing.replace(false) {
            let _ = self.life.lp().remove_writer(self.raw);
        }
    }

    fn on_writable(self: &Rc<Self>) {
        if !self.writing.get() {
            return;
        }
        let sent = self.buffer.borrow().send_pending(|buffer| {
            self.with_fd(|fd| buffer.send_to(fd))
                .unwrap_or(Ok(0))
                .map_err(io::Error::from)
        });
        match sent {
            Ok(n) => {
                self.buffer.borrow_mut().consume(n);
                self.after_drain();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => self.fatal(e),
        }
        self.drain_deferred();
    }

    /// After bytes left the buffer: resume the protocol, and when the buffer
    /// is empty stop watching writability and finish a close or write_eof.
    pub(super) fn after_drain(self: &Rc<Self>) {
        self.sendfile.wake();
        self.upgrade.wake();
        self.maybe_resume_protocol();
        if self.buffered() != 0 {
            return;
        }
        self.stop_writing();
        if self.life.state() == State::Closing {
            self.schedule_lost(None);
        } else if self.eof.get() {
            let _ = self.with_fd(|fd| rustix::net::shutdown(fd, Shutdown::Write));
        }
    }

    pub(super) fn send_now(&self, data: &[u8]) -> io::Result<usize> {
        sent(|| self.with_fd(|fd| rustix::net::send(fd, data, SendFlags::NOSIGNAL)))
    }

    /// One send of `chunks` (`send` for one, `sendmsg` for more).
    fn send_chunks(&self, chunks: &[&[u8]]) -> io::Result<usize> {
        if chunks.len() == 1 {
            self.send_now(chunks[0])
        } else {
            self.sendv_now(chunks)
        }
    }

    /// `writelines`' send: up to [`MAX_IOV`] buffers per `sendmsg`, from an
    /// array on the stack (no allocation), group after group while the
    /// socket takes each whole. The bytes sent, or the error of the first
    /// call (a later error is met again by the next send).
    pub(super) fn sendv_now(&self, chunks: &[&[u8]]) -> io::Result<usize> {
        let mut total = 0;
        for group in chunks.chunks(MAX_IOV) {
            // Most writes are a few buffers (hyper's head and body): fill
            // a small array for them rather than zeroing 1 KiB per call.
            let sent_now = if group.len() <= FEW_IOV {
                self.send_group::<FEW_IOV>(group)
            } else {
                self.send_group::<MAX_IOV>(group)
            };
            let n = match sent_now {
                Ok(n) => n,
                Err(e) if total == 0 => return Err(e),
                Err(_) => return Ok(total),
            };
            total += n;
            if n < group.iter().map(|c| c.len()).sum::<usize>() {
                break;
            }
        }
        Ok(total)
    }

    /// One `sendmsg` of `group` (at most `N` buffers) from an array of `N`.
    fn send_group<const N: usize>(&self, group: &[&[u8]]) -> io::Result<usize> {
        let mut iov = [IoSlice::new(&[]); N];
        for (slot, chunk) in iov.iter_mut().zip(group) {
            *slot = IoSlice::new(chunk);
        }
        let iov = &iov[..group.len()];
        sent(|| {
            self.with_fd(|fd| {
                rustix::net::sendmsg(
                    fd,
                    iov,
                    &mut SendAncillaryBuffer::default(),
                    SendFlags::NOSIGNAL,
                )
            })
        })
    }

    fn check_writable(&self) -> Result<bool, LoopError> {
        if self.eof.get() {
            return Err(LoopError::new(
                ErrorKind::InvalidState,
                "Cannot call write() after write_eof()",
            ));
        }
        if self.life.state() == State::Lost || self.life.lost_claimed() {
            crate::transport::count_dropped_write(
                &self.writes_after_lost,
                "socket.send() raised exception.",
            );
            return Ok(false);
        }
        Ok(true)
    }

    pub(super) fn write_impl(self: &Rc<Self>, chunks: &[&[u8]]) -> Result<(), LoopError> {
        if !self.check_writable()? {
            return Ok(());
        }
        let total: usize = chunks.iter().map(|c| c.len()).sum();
        if total == 0 {
            return Ok(());
        }
        if let Some(written) = self.ring.write(chunks, false, |c| self.send_chunks(c)) {
            // The completion path: sent with the next wait (ring.rs).
            match written {
                Ok(()) => self.maybe_pause_protocol(),
                Err(e) => self.fatal(e),
            }
            return Ok(());
        }
        let mut skip = 0;
        if self.buffer.borrow().is_empty() {
            match self.send_chunks(chunks) {
                Ok(n) if n == total => return Ok(()),
                Ok(n) => skip = n,
                Err(e) => {
                    self.fatal(e);
                    return Ok(());
                }
            }
        }
        self.buffer.borrow_mut().extend_unsent(chunks, skip);
        self.start_writing();
        self.maybe_pause_protocol();
        Ok(())
    }
}

impl FlowOwner for Stream {
    fn flow(&self) -> &WriteFlow<Notice> {
        &self.flow
    }
    fn buffered(&self) -> usize {
        match self.ring.buffered() {
            Some(n) => n,
            None => self.buffer.borrow().len(),
        }
    }
    fn drain_deferred(&self) {
        if !self
            .flow
            .drain_to(&self.life, || format!("fd={}", self.raw))
        {
            let me = self.rc();
            self.flow
                .drain_later(&self.life, move || me.drain_deferred());
        }
    }
    fn holds_notices(&self) -> bool {
        self.sendfile.holds_notices()
    }
}

/// Runs `send` again while it is interrupted: the bytes it took (none when
/// the socket is full, `EAGAIN`, or gone, `None`), or its error.
fn sent(mut send: impl FnMut() -> Option<rustix::io::Result<usize>>) -> io::Result<usize> {
    loop {
        match send().unwrap_or(Ok(0)) {
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
    }
}
