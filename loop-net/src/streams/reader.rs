//! [`StreamReader`]: asyncio's buffered reader of a stream, fed by a
//! protocol and read by tasks.
//!
//! # Invariants
//! - The reader owns its buffer; the transport only ever *feeds* it
//!   ([`feed_data`](StreamReader::feed_data)). Nothing is read from a socket
//!   here.
//! - **Backpressure** is asyncio's: when the buffer grows past twice the
//!   limit, the transport's reading is paused; a read that drains it to the
//!   limit or below resumes it (`_maybe_resume_transport`); a read that must
//!   wait for data while the transport is paused resumes it first (so
//!   `readexactly(n)` with `n` above the limit cannot deadlock).
//! - **One waiter at a time.** A read that has to wait registers its waker
//!   under its own id; a second read that has to wait meanwhile fails with
//!   [`StreamError::AlreadyWaiting`] (asyncio's `RuntimeError`). A waiter is
//!   unregistered when it is woken (as asyncio clears `_waiter`) or dropped.
//!   Waiting needs no loop, only wakers, so any executor may drive a read.
//! - **No borrow across foreign code.** The state is an `Rc<RefCell<_>>`;
//!   every method releases its borrow before it wakes a waker or calls the
//!   transport (`pause_reading`/`resume_reading` may deliver data to the
//!   protocol at once, which feeds this reader again).
//!
//! This module holds the reader's state and its feeding side (what a
//! protocol calls, or a read pipe straight into the buffer:
//! streams/reader/direct_feed.rs); its child modules hold the buffer (streams/reader/byte_queue.rs),
//! asyncio's reads (streams/reader/reads.rs), and the waiting for data with
//! the `AsyncRead` side (streams/reader/wait.rs).

use std::cell::{RefCell, RefMut};
use std::fmt;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Waker;

use crate::streams::error::{clone_io_error, IncompleteReadError, StreamError};
use crate::transport::Transport;

mod byte_queue;
mod direct_feed;
mod reads;
mod wait;

use byte_queue::ByteQueue;

/// asyncio's default limit of a [`StreamReader`] (`_DEFAULT_LIMIT`): 64 KiB.
pub const DEFAULT_LIMIT: usize = 64 * 1024;

/// Ids of waiters: every read that waits, and every reader handle (the
/// `AsyncRead` side), has its own.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

struct Inner {
    buffer: ByteQueue,
    limit: usize,
    eof: bool,
    exception: Option<io::Error>,
    transport: Option<Transport>,
    /// Whether *we* paused the transport's reading.
    paused: bool,
    /// The read waiting for data: its id and waker.
    waiter: Option<(u64, Waker)>,
    /// The waiter last woken by `set_exception`: its wait fails.
    failed_waiter: Option<u64>,
    /// Bumped by every event that wakes a waiter.
    events: u64,
}

impl Inner {
    /// Unregisters the waiter and returns its waker, to be woken once the
    /// borrow is released.
    fn take_waiter(&mut self, failed: bool) -> Option<Waker> {
        self.events = self.events.wrapping_add(1);
        let (id, waker) = self.waiter.take()?;
        if failed {
            self.failed_waiter = Some(id);
        }
        Some(waker)
    }

    /// asyncio's `_maybe_resume_transport`: the transport to resume, if
    /// reading was paused by us and the buffer is down to the limit.
    /// After bytes were appended: the waiter to wake, and the transport to
    /// pause when the buffer went past twice the limit.
    fn fed(&mut self) -> (Option<Waker>, Option<Transport>) {
        let waker = self.take_waiter(false);
        let pause = if !self.paused && self.buffer.len() > 2 * self.limit {
            let t = self.transport.clone();
            self.paused = t.is_some();
            t
        } else {
            None
        };
        (waker, pause)
    }

    fn maybe_resume(&mut self) -> Option<Transport> {
        if self.paused && self.buffer.len() <= self.limit {
            self.paused = false;
            return self.transport.clone();
        }
        None
    }

    /// The transport to resume before waiting for data, if reading was
    /// paused by us (waiting while paused would deadlock: `readexactly(n)`
    /// with `n` above the limit).
    fn unpause(&mut self) -> Option<Transport> {
        if self.paused {
            self.paused = false;
            return self.transport.clone();
        }
        None
    }

    /// Unregisters the waiter if it is `id`.
    fn clear_waiter(&mut self, id: u64) {
        if matches!(self.waiter, Some((w, _)) if w == id) {
            self.waiter = None;
        }
    }

    /// The end of file came before what a read waits for: the read fails
    /// with the whole buffer (which is emptied).
    fn incomplete_read(&mut self, expected: Option<usize>) -> StreamError {
        StreamError::IncompleteRead(IncompleteReadError {
            partial: self.buffer.take(usize::MAX),
            expected,
        })
    }

    fn exception_copy(&self) -> Option<io::Error> {
        self.exception.as_ref().map(clone_io_error)
    }
}

/// A stream's reading side: a buffer fed by a protocol
/// ([`StreamReaderProtocol`](crate::StreamReaderProtocol) or your own), read
/// by a task with `read`, `readline`, `readuntil`, `readexactly`
/// (asyncio's `StreamReader`).
///
/// A cheap handle (an `Rc`): clones share one buffer. Every method takes
/// `&self`. Only one read may wait for data at a time
/// ([`StreamError::AlreadyWaiting`] otherwise). Waiting uses wakers only, so
/// the reads work in any task (no loop is needed to feed or read a reader).
///
/// It also implements [`futures_lite::io::AsyncRead`] (the `futures-io`
/// trait): see [`StreamPair`](crate::StreamPair) for the semantics.
///
/// ```
/// use loop_net::{StreamError, StreamReader};
/// let r = StreamReader::new();
/// r.feed_data(b"hello\nwor").unwrap();
/// r.feed_eof();
/// futures_lite::future::block_on(async {
///     assert_eq!(r.readline().await.unwrap(), b"hello\n");
///     match r.readexactly(5).await {
///         Err(StreamError::IncompleteRead(e)) => {
///             assert_eq!(e.partial, b"wor");
///             assert_eq!(e.expected, Some(5));
///         }
///         other => panic!("{other:?}"),
///     }
///     assert!(r.at_eof());
/// });
/// ```
#[doc(alias = "asyncio.StreamReader")]
pub struct StreamReader {
    inner: Rc<RefCell<Inner>>,
    /// This handle's id as a waiter of the `AsyncRead` interface.
    id: u64,
}

impl Clone for StreamReader {
    fn clone(&self) -> Self {
        StreamReader {
            inner: self.inner.clone(),
            id: next_id(),
        }
    }
}

impl Default for StreamReader {
    fn default() -> Self {
        StreamReader::new()
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        // A pending `poll_read` of this handle leaves its registration
        // behind; let go of it so another handle may wait.
        if let Ok(mut inner) = self.inner.try_borrow_mut() {
            inner.clear_waiter(self.id);
        }
    }
}

impl fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner.try_borrow() {
            Ok(i) => f
                .debug_struct("StreamReader")
                .field("buffered", &i.buffer.len())
                .field("limit", &i.limit)
                .field("eof", &i.eof)
                .field("exception", &i.exception)
                .field("paused", &i.paused)
                .field("waiting", &i.waiter.is_some())
                .finish(),
            Err(_) => f.write_str("StreamReader { <busy> }"),
        }
    }
}

impl StreamReader {
    /// A reader with asyncio's default limit, [`DEFAULT_LIMIT`] (64 KiB).
    pub fn new() -> StreamReader {
        StreamReader::build(DEFAULT_LIMIT)
    }

    /// A reader with `limit` (asyncio's `limit=`): the longest line or
    /// `readuntil` chunk, and half the buffer size at which the transport is
    /// paused. Zero is [`StreamError::InvalidArgument`] ("Limit cannot be <=
    /// 0").
    pub fn with_limit(limit: usize) -> Result<StreamReader, StreamError> {
        if limit == 0 {
            return Err(StreamError::InvalidArgument("Limit cannot be <= 0"));
        }
        Ok(StreamReader::build(limit))
    }

    fn build(limit: usize) -> StreamReader {
        StreamReader {
            inner: Rc::new(RefCell::new(Inner {
                buffer: ByteQueue::default(),
                limit,
                eof: false,
                exception: None,
                transport: None,
                paused: false,
                waiter: None,
                failed_waiter: None,
                events: 0,
            })),
            id: next_id(),
        }
    }

    fn state(&self) -> RefMut<'_, Inner> {
        // Never held across foreign code (wakers, transport calls), so it
        // cannot be borrowed already.
        self.inner.borrow_mut()
    }

    /// The limit given at creation.
    pub fn limit(&self) -> usize {
        self.state().limit
    }

    /// How many bytes are buffered, not yet read.
    pub fn buffered(&self) -> usize {
        self.state().buffer.len()
    }

    /// Whether two handles share one reader.
    pub fn ptr_eq(&self, other: &StreamReader) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    /// The connection's error, as set by
    /// [`set_exception`](Self::set_exception) (a copy: same OS error code, or
    /// kind and message).
    #[doc(alias = "StreamReader.exception")]
    pub fn exception(&self) -> Option<io::Error> {
        self.state().exception_copy()
    }

    /// Makes every later read fail with (a copy of) `error`, and fails the
    /// read that is waiting, if any (asyncio's `set_exception`). Bytes
    /// already buffered are not read any more.
    #[doc(alias = "StreamReader.set_exception")]
    pub fn set_exception(&self, error: io::Error) {
        let waker = {
            let mut inner = self.state();
            inner.exception = Some(error);
            inner.take_waiter(true)
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Gives the reader the transport to pause and resume (asyncio's
    /// `set_transport`). [`StreamReaderProtocol`](crate::StreamReaderProtocol)
    /// calls it in `connection_made`. A second call is
    /// [`StreamError::InvalidState`] ("Transport already set").
    #[doc(alias = "StreamReader.set_transport")]
    pub fn set_transport(&self, transport: Transport) -> Result<(), StreamError> {
        let mut inner = self.state();
        if inner.transport.is_some() {
            return Err(StreamError::InvalidState("Transport already set"));
        }
        inner.transport = Some(transport);
        Ok(())
    }

    /// The transport given to [`set_transport`](Self::set_transport).
    pub fn transport(&self) -> Option<Transport> {
        self.state().transport.clone()
    }

    /// Appends bytes to the buffer and wakes the waiting read. Past twice
    /// the limit, pauses the transport's reading (once). After
    /// [`feed_eof`](Self::feed_eof) it is [`StreamError::InvalidState`]
    /// ("feed_data after feed_eof") and the bytes are dropped.
    #[doc(alias = "StreamReader.feed_data")]
    pub fn feed_data(&self, data: &[u8]) -> Result<(), StreamError> {
        let (waker, pause) = {
            let mut inner = self.state();
            if inner.eof {
                return Err(StreamError::InvalidState("feed_data after feed_eof"));
            }
            if data.is_empty() {
                return Ok(());
            }
            inner.buffer.extend(data);
            inner.fed()
        };
        Self::after_fed(waker, pause);
        Ok(())
    }

    /// Wakes the waiter and pauses the transport, as [`Inner::fed`] found,
    /// with no borrow held.
    fn after_fed(waker: Option<Waker>, pause: Option<Transport>) {
        if let Some(w) = waker {
            w.wake();
        }
        if let Some(t) = pause {
            t.pause_reading();
        }
    }

    /// Makes `transport`, a read pipe, feed this reader straight from its
    /// reads: each read appends to the reader's buffer (no copy between the
    /// pipe and the reader, asyncio's `feed_data` without the
    /// `data_received` in between), with `feed_data`'s wake-up and
    /// backpressure, and the end of the transport ends the reader
    /// (`feed_eof`, or `set_exception` with its error). The transport's
    /// protocol is replaced by one that does this and hands the rest
    /// (`eof_received`, `connection_lost`) on to the protocol it replaces,
    /// which so still sees the end of the pipe but no longer its data. Sets
    /// the reader's transport
    /// ([`set_transport`](Self::set_transport)) unless one is set.
    ///
    /// How the high-level `Process` (loop-process) reads a child's stdout
    /// and stderr. Any transport works; one whose reads do not honour
    /// [`BufferedProtocol::get_vec_buffer`](crate::BufferedProtocol::get_vec_buffer)
    /// (only read pipes do) copies as `feed_data` does.
    pub fn feed_directly_from(&self, transport: &Transport) {
        let next = transport.get_protocol();
        let feed = direct_feed::DirectFeed::new(self.clone(), next);
        transport.set_protocol(crate::AnyProtocol::buffered(crate::ProtocolHandle::new(
            feed,
        )));
        let mut inner = self.state();
        if inner.transport.is_none() {
            inner.transport = Some(transport.clone());
        }
    }

    /// Lends the buffer's storage to a read that appends to it
    /// (streams/reader/direct_feed.rs); nothing else touches the reader
    /// until [`restore_storage`](Self::restore_storage).
    fn lend_storage(&self) -> (Vec<u8>, usize) {
        self.state().buffer.lend()
    }

    /// Takes back the storage lent by [`lend_storage`](Self::lend_storage),
    /// `added` bytes longer, and does what `feed_data` does after
    /// appending.
    fn restore_storage(&self, storage: (Vec<u8>, usize), added: usize) {
        let (waker, pause) = {
            let mut inner = self.state();
            inner.buffer.restore(storage);
            if added == 0 {
                return;
            }
            inner.fed()
        };
        Self::after_fed(waker, pause);
    }

    /// Marks the end of the stream and wakes the waiting read (asyncio's
    /// `feed_eof`). Idempotent.
    #[doc(alias = "StreamReader.feed_eof")]
    pub fn feed_eof(&self) {
        let waker = {
            let mut inner = self.state();
            inner.eof = true;
            inner.take_waiter(false)
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether the end of file was fed and every byte was read.
    #[doc(alias = "StreamReader.at_eof")]
    pub fn at_eof(&self) -> bool {
        let inner = self.state();
        inner.eof && inner.buffer.is_empty()
    }

    /// Takes up to `n` bytes from the buffer, then resumes the transport if
    /// that brought the buffer down to the limit.
    fn take_resuming(&self, n: usize) -> Vec<u8> {
        let (data, resume) = {
            let mut inner = self.state();
            let data = inner.buffer.take(n);
            (data, inner.maybe_resume())
        };
        Self::resume_if(resume);
        data
    }

    fn resume_if(t: Option<Transport>) {
        if let Some(t) = t {
            t.resume_reading();
        }
    }

    fn check_exception(&self) -> Result<(), StreamError> {
        match self.state().exception_copy() {
            Some(e) => Err(StreamError::Io(e)),
            None => Ok(()),
        }
    }
}
