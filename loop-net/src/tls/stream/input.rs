//! The TLS transport's read path (a child module of `tls_stream`):
//! ciphertext in, plaintext out to the protocol.
//!
//! One `recv` per readiness into a 64 KiB buffer shared by the thread's TLS
//! transports (on the completion path, the ring buffer the kernel filled:
//! tls/stream/completion.rs); the bytes are fed to rustls (which takes at most one record
//! buffer at a time), each batch decrypted, and the plaintext handed to the
//! protocol from a second shared buffer (or read straight into a
//! `BufferedProtocol`'s buffer). When the protocol cannot take more (it
//! paused reading, is in use because the delivery was reached from inside
//! one of its methods, e.g. a `resume_reading` in a `with_mut` closure, or
//! `connection_made` is still due), the undecrypted rest is kept in order
//! (`pending_in`: at most one read's worth on readiness; on the completion
//! path also what raced the cancelled receive) and the socket is not read
//! until it has been delivered: bytes are never reordered or dropped. A
//! TCP EOF is given to rustls only after that backlog, so it cannot cut
//! delivered data short. Closing keeps the backlog too: once flushed, it
//! is fed (its plaintext discarded) before what comes after, the peer's
//! `close_notify` among it (shutdown.rs).

use std::cell::RefCell;
use std::io::{self, BufRead, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use rustix::net::RecvFlags;

use crate::protocol::AnyProtocol;
use crate::stream::READ_SIZE;
use crate::tls::tls_error;

use crate::flow::FlowOwner;
use crate::lifecycle::LifecycleOwner;

use super::{State, TlsStream};

thread_local! {
    /// Ciphertext read from a socket, shared by the thread's TLS transports.
    static CIPHER_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Plaintext on its way to a protocol, likewise shared.
    static PLAIN_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What one attempt to hand plaintext to the protocol did.
enum Delivery {
    /// Some bytes were delivered.
    Data,
    /// rustls has no plaintext now.
    Empty,
    /// The protocol is in use (the delivery was reached from inside one of
    /// its methods): delivered right after it is free.
    Busy,
    /// The peer's `close_notify`: the clean end of its data.
    Eof,
    /// A fatal condition (TCP EOF without `close_notify`, an empty
    /// `get_buffer`).
    Failed(io::Error),
}

impl TlsStream {
    pub(super) fn on_readable(self: &Rc<Self>) {
        if !self.reading.get() {
            return;
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            match self.state() {
                State::Lost | State::Closing => return,
                State::Open => {
                    if !self.life.is_made() || self.app_paused.get() {
                        return;
                    }
                    if self.life.protocol().in_use() {
                        // Cannot be (the loop dispatches between
                        // callbacks); the bytes wait in the socket,
                        // unwatched until the protocol is free.
                        self.stop_reading();
                        self.when_protocol_free(|_| {});
                        return;
                    }
                }
                State::Handshaking | State::ShuttingDown => {}
            }
            if self.stalled.get() && !self.process_backlog() {
                return;
            }
            self.read_once();
        }));
        if let Err(payload) = outcome {
            self.protocol_failed("data_received", payload);
        }
        self.drain_deferred();
    }

    /// One `recv`, fed to rustls.
    fn read_once(self: &Rc<Self>) {
        let mut buf = CIPHER_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
        if buf.len() < READ_SIZE {
            buf.resize(READ_SIZE, 0);
        }
        let got = self.with_fd(|fd| rustix::net::recv(fd, &mut buf[..], RecvFlags::empty()));
        match got {
            None => {}
            Some(Ok((0, _))) => self.on_tcp_eof(),
            Some(Ok((n, _))) => self.ingest(&buf[..n]),
            Some(Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR)) => {}
            Some(Err(e)) => self.fail(e.into()),
        }
        CIPHER_BUF.with(|b| {
            let mut slot = b.borrow_mut();
            if slot.is_empty() {
                *slot = buf;
            }
        });
    }

    /// Feeds ciphertext to rustls, record batch by record batch, delivering
    /// the plaintext in between; what the protocol cannot take now is kept,
    /// in order, in `pending_in`.
    pub(super) fn ingest(self: &Rc<Self>, mut input: &[u8]) {
        while !input.is_empty() {
            if self.dead() {
                return;
            }
            let fed = self.conn.borrow_mut().read_tls(&mut input);
            match fed {
                // The peer's close_notify was seen: nothing after it counts.
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => {
                    self.fail(e);
                    return;
                }
            }
            if !self.process_packets() {
                return;
            }
            if !self.deliver_plaintext() {
                if !input.is_empty() && !self.dead() {
                    self.pending_in.push(input);
                    self.stalled.set(true);
                }
                return;
            }
        }
    }

    /// Delivers the backlog (rustls' plaintext, then `pending_in`, then a
    /// TCP EOF seen meanwhile). True when nothing is left and reading may go
    /// on.
    pub(super) fn process_backlog(self: &Rc<Self>) -> bool {
        self.stalled.set(false);
        if !self.deliver_plaintext() {
            return false;
        }
        let pending = self.pending_in.take();
        if !pending.is_empty() {
            self.ingest(&pending);
            if self.stalled.get() || self.dead() {
                return false;
            }
        }
        // A receive error met behind the backlog (completion path).
        if let Some(e) = self.pending_in.take_error() {
            self.fail(e);
            return false;
        }
        if self.tcp_eof.get() && !self.eof_fed.get() {
            self.feed_eof();
            return false;
        }
        !self.dead()
    }

    /// Decrypts what rustls has, writes its answers, and notices the end
    /// of the handshake. False when the connection failed.
    fn process_packets(self: &Rc<Self>) -> bool {
        let result = self.conn.borrow_mut().process_new_packets();
        // Handshake messages, alerts (also the one for an error), key
        // updates. The alert for an error leaves at once: the connection
        // is closed right after (on the completion path a queued send
        // would be cancelled with it).
        self.urgent.set(result.is_err());
        let flushed = self.flush_tls();
        self.urgent.set(false);
        match result {
            Err(e) => {
                self.fail(tls_error(e));
                false
            }
            Ok(_) if !flushed => false,
            Ok(_) => {
                if self.state() == State::Handshaking && !self.conn.borrow().is_handshaking() {
                    self.handshake_complete();
                }
                !self.dead()
            }
        }
    }

    /// Hands rustls' plaintext to the protocol. True when all of it went
    /// (or is discarded, when closing) and more may be fed.
    fn deliver_plaintext(self: &Rc<Self>) -> bool {
        loop {
            match self.state() {
                State::Lost => return false,
                State::Handshaking => return true,
                State::Closing | State::ShuttingDown => {
                    self.discard_plaintext();
                    return !self.dead();
                }
                State::Open => {}
            }
            if self.life.lost_claimed() {
                return false;
            }
            if !self.life.is_made() || self.app_paused.get() || self.peer_closed.get() {
                self.stalled.set(true);
                return false;
            }
            let protocol = self.life.protocol();
            match self.deliver_one(&protocol) {
                Delivery::Data => continue,
                Delivery::Empty => return true,
                Delivery::Busy => {
                    self.stalled.set(true);
                    self.stop_reading();
                    self.when_protocol_free(|_| {});
                    return false;
                }
                Delivery::Eof => {
                    self.on_peer_close_notify(&protocol);
                    return false;
                }
                Delivery::Failed(e) => {
                    self.fatal(e);
                    return false;
                }
            }
        }
    }

    fn deliver_one(&self, protocol: &AnyProtocol) -> Delivery {
        let delivered = match protocol {
            AnyProtocol::Streaming(p) => p.try_call(|p| {
                let mut buf = PLAIN_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
                if buf.len() < READ_SIZE {
                    buf.resize(READ_SIZE, 0);
                }
                let got = self.conn.borrow_mut().reader().read(&mut buf[..]);
                let outcome = match got {
                    Ok(0) => Delivery::Eof,
                    Ok(n) => {
                        p.data_received(&buf[..n]);
                        Delivery::Data
                    }
                    Err(e) => classify_read_error(e),
                };
                PLAIN_BUF.with(|b| {
                    let mut slot = b.borrow_mut();
                    if slot.is_empty() {
                        *slot = buf;
                    }
                });
                outcome
            }),
            AnyProtocol::Buffered(p) => p.try_call(|p| {
                // Look before asking for a buffer: get_buffer is user code.
                let available = {
                    let mut conn = self.conn.borrow_mut();
                    let mut reader = conn.reader();
                    match reader.fill_buf() {
                        Ok([]) => return Delivery::Eof,
                        Ok(chunk) => chunk.len(),
                        Err(e) => return classify_read_error(e),
                    }
                };
                let target = p.get_buffer(available.max(READ_SIZE));
                if target.is_empty() {
                    return Delivery::Failed(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "get_buffer() returned an empty buffer",
                    ));
                }
                let got = self.conn.borrow_mut().reader().read(target);
                match got {
                    Ok(0) => Delivery::Eof,
                    Ok(n) => {
                        p.buffer_updated(n);
                        Delivery::Data
                    }
                    Err(e) => classify_read_error(e),
                }
            }),
        };
        delivered.unwrap_or(Delivery::Busy)
    }

    /// Closing: what still arrives is decrypted (to see the peer's
    /// `close_notify`) and dropped.
    pub(super) fn discard_plaintext(self: &Rc<Self>) {
        let ended = {
            let mut conn = self.conn.borrow_mut();
            let mut reader = conn.reader();
            loop {
                match reader.fill_buf() {
                    Ok([]) => break true,
                    Ok(chunk) => {
                        let n = chunk.len();
                        reader.consume(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            }
        };
        if ended {
            self.peer_closed.set(true);
            if self.state() == State::ShuttingDown {
                self.schedule_lost(None);
            }
        }
    }

    /// The peer's `close_notify`: its EOF.
    fn on_peer_close_notify(self: &Rc<Self>, protocol: &AnyProtocol) {
        self.peer_closed.set(true);
        self.stop_reading();
        let keep_open = catch_unwind(AssertUnwindSafe(|| protocol.try_eof_received()));
        match keep_open {
            // asyncio's SSLProtocol: half-open TLS is not kept; it warns
            // and shuts down all the same.
            Ok(Some(true)) => {
                loop_core::debug::warn(
                    "returning true from eof_received() has no effect when using ssl",
                );
                self.close_impl();
            }
            // None: in use (reached from inside one of its methods): the
            // default answer, as before.
            Ok(Some(false)) | Ok(None) => self.close_impl(),
            Err(payload) => self.protocol_failed("eof_received", payload),
        }
    }

    pub(super) fn on_tcp_eof(self: &Rc<Self>) {
        self.tcp_eof.set(true);
        self.stop_reading();
        match self.state() {
            // asyncio's `eof_received` in DO_HANDSHAKE: ConnectionResetError.
            State::Handshaking => self.handshake_failed(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the peer closed the connection during the TLS handshake",
            )),
            State::Open => {
                if !self.stalled.get() {
                    self.feed_eof();
                }
            }
            State::Closing => self.peer_closed.set(true),
            State::ShuttingDown => self.schedule_lost(None),
            State::Lost => {}
        }
    }

    /// Tells rustls the TCP stream ended, then lets the reader say whether
    /// that was clean (after `close_notify`) or a truncation.
    fn feed_eof(self: &Rc<Self>) {
        if self.eof_fed.replace(true) {
            return;
        }
        let _ = self.conn.borrow_mut().read_tls(&mut io::empty());
        let _ = self.deliver_plaintext();
    }
}

fn classify_read_error(e: io::Error) -> Delivery {
    match e.kind() {
        io::ErrorKind::WouldBlock => Delivery::Empty,
        io::ErrorKind::UnexpectedEof => Delivery::Failed(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed the connection without sending TLS close_notify (truncated)",
        )),
        _ => Delivery::Failed(e),
    }
}
