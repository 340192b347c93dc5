//! The socket stream transport's side of `start_tls` (tls.rs): handing its
//! socket over to a TLS transport. A child module of `stream`, so that it
//! reaches the transport's state without widening it.
//!
//! # The sequence (`detach_for_upgrade`)
//! 1. Stop reading at once: bytes that arrive from now on belong to the
//!    TLS layer and stay in the kernel's buffer for it (asyncio pauses
//!    reading first too). If the future is dropped before step 3, reading
//!    resumes as it was.
//! 2. Wait until the write buffer is empty and every flow-control notice
//!    was delivered: a protocol paused by this transport gets its paired
//!    `resume_writing` from this transport, so the TLS transport starts
//!    unpaused and its protocol never sees an unpaired `resume_writing`
//!    (LESSONS C.6).
//! 3. Take the socket: unregister it, mark the transport lost without
//!    `connection_lost` (its connection goes on as TLS), release its
//!    protocol, and hand over the socket, the water marks and the lost hook
//!    (a server's connection count). The stream hands every byte it reads
//!    to its protocol at once, so it holds no unconsumed input: what the
//!    protocol received but did not consume is given to `start_tls` by its
//!    caller (`start_tls_with_data`).
//!
//! Afterwards `close`/`abort` on the old handle act on the successor
//! (`Server::close_clients` keeps reaching the connection).

use loop_core::WaiterList;
use std::cell::{Cell, RefCell};

use crate::transport::Transport;

/// A stream transport's upgrade state.
#[derive(Default)]
pub(super) struct UpgradeState {
    waiters: WaiterList,
    successor: RefCell<Option<Transport>>,
    /// A `start_tls` waits for the buffer to drain before taking the socket.
    detaching: Cell<bool>,
}

impl UpgradeState {
    /// Whether a `start_tls` is taking this transport over (a sendfile,
    /// which writes on its own duplicate of the socket, must not start).
    pub(super) fn in_progress(&self) -> bool {
        self.detaching.get()
    }

    /// Wakes an upgrade waiting for the buffer to drain.
    pub(super) fn wake(&self) {
        self.waiters.wake_all();
    }

    /// Runs `f` on the transport that took this one's socket over; false
    /// when there is none.
    pub(super) fn forward(&self, f: impl FnOnce(&Transport)) -> bool {
        let successor = self.successor.borrow().clone();
        match successor {
            Some(t) => {
                f(&t);
                true
            }
            None => false,
        }
    }
}

#[cfg(feature = "tls")]
mod detach {
    use std::io;
    use std::os::fd::OwnedFd;
    use std::rc::Rc;
    use std::task::Poll;

    use super::super::{LostHook, State, Stream};
    use crate::flow::FlowOwner;
    use crate::transport::Transport;
    use crate::write_buffer::WriteBufferLimits;
    use loop_core::{ErrorKind, LoopError};

    /// What `start_tls` takes over from a stream transport.
    pub(crate) struct Detached {
        pub(crate) fd: OwnedFd,
        pub(crate) limits: WriteBufferLimits,
        pub(crate) on_lost: Option<LostHook>,
        /// Bytes the completion path received after reading stopped:
        /// the first bytes of the TLS stream.
        pub(crate) early: Vec<u8>,
    }

    /// Resumes reading if the upgrade is abandoned before the hand-over.
    struct ResumeOnDrop {
        stream: Rc<Stream>,
        was_reading: bool,
        armed: bool,
    }

    impl Drop for ResumeOnDrop {
        fn drop(&mut self) {
            self.stream.upgrade.detaching.set(false);
            if self.armed && self.was_reading && self.stream.life.state() == State::Open {
                self.stream.start_reading();
            }
        }
    }

    impl Stream {
        /// See the module docs.
        pub(crate) async fn detach_for_upgrade(self: &Rc<Self>) -> io::Result<Detached> {
            if self.life.state() != State::Open
                || self.life.lost_claimed()
                || self.eof.get()
                || self.read_eof.get()
                || self.upgrade.successor.borrow().is_some()
            {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "start_tls(): the transport is closing or half-closed",
                ));
            }
            if self.sendfile.holds_notices() || self.upgrade.detaching.get() {
                // sendfile(2) writes on a duplicate of the socket until it
                // ends: handing the socket to TLS now would mix plain bytes
                // into the TLS stream.
                return Err(io::Error::from(LoopError::new(
                    ErrorKind::InvalidState,
                    "start_tls(): a sendfile or another start_tls is in progress on this transport",
                )));
            }
            self.upgrade.detaching.set(true);
            let mut guard = ResumeOnDrop {
                stream: self.clone(),
                was_reading: self.reading.get(),
                armed: true,
            };
            self.stop_reading();
            let me = self.clone();
            std::future::poll_fn(move |cx| {
                if me.life.state() != State::Open || me.life.lost_claimed() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "start_tls(): the connection was lost while its buffer drained",
                    )));
                }
                // On the completion path, also wait for the stopped
                // receive to end: its last bytes go to the stash, which
                // goes to the TLS transport (completion.rs).
                let drained = me.life.is_made() && me.buffered() == 0 && me.ring.recv_idle();
                if drained && !me.flow.is_empty() {
                    // Notices are owed: deliver them now.
                    me.drain_deferred();
                }
                if drained && me.flow.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                if drained {
                    // Still owed: the protocol is in use, and gets them
                    // right after it is free; look again then.
                    let waker = cx.waker().clone();
                    let protocol = me.life.protocol();
                    protocol.when_free(move || waker.wake());
                } else {
                    me.upgrade.waiters.register(cx.waker());
                }
                Poll::Pending
            })
            .await?;
            guard.armed = false;
            self.stop_writing();
            self.ring.release();
            let early = self.stash.take();
            let fd = self
                .fd
                .borrow_mut()
                .take()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
            let released = self.life.hand_over();
            let on_lost = self.on_lost.borrow_mut().take();
            drop(released);
            Ok(Detached {
                fd,
                limits: self.flow.limits(),
                on_lost,
                early,
            })
        }

        /// The TLS transport now owns this one's socket.
        pub(crate) fn set_successor(&self, successor: Transport) {
            *self.upgrade.successor.borrow_mut() = Some(successor);
        }
    }
}
