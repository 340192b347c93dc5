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

use std::cell::{RefCell, RefMut};
use std::fmt;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use crate::stream_error::{clone_io_error, IncompleteReadError, LimitOverrunError, StreamError};
use crate::transport::Transport;

/// asyncio's default limit of a [`StreamReader`] (`_DEFAULT_LIMIT`): 64 KiB.
pub const DEFAULT_LIMIT: usize = 64 * 1024;

/// Ids of waiters: every read that waits, and every reader handle (the
/// `AsyncRead` side), has its own.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// A byte queue that reads from its front without moving the rest each
/// time: the consumed prefix is dropped once it is at least half the
/// storage (amortised O(1) per byte).
#[derive(Default)]
struct ByteQueue {
    data: Vec<u8>,
    head: usize,
}

impl ByteQueue {
    fn bytes(&self) -> &[u8] {
        &self.data[self.head..]
    }

    fn len(&self) -> usize {
        self.data.len() - self.head
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn extend(&mut self, more: &[u8]) {
        self.data.extend_from_slice(more);
    }

    fn consume(&mut self, n: usize) {
        self.head += n.min(self.len());
        if self.head == self.data.len() {
            self.data.clear();
            self.head = 0;
        } else if self.head >= 4096 && self.head * 2 >= self.data.len() {
            self.data.drain(..self.head);
            self.head = 0;
        }
    }

    /// Removes and returns the first `n` bytes (fewer if there are fewer).
    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.len());
        if self.head == 0 && n == self.data.len() {
            return std::mem::take(&mut self.data);
        }
        let out = self.data[self.head..self.head + n].to_vec();
        self.consume(n);
        out
    }

    fn clear(&mut self) {
        self.data.clear();
        self.head = 0;
    }
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
    fn maybe_resume(&mut self) -> Option<Transport> {
        if self.paused && self.buffer.len() <= self.limit {
            self.paused = false;
            return self.transport.clone();
        }
        None
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
            if matches!(inner.waiter, Some((id, _)) if id == self.id) {
                inner.waiter = None;
            }
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
            let waker = inner.take_waiter(false);
            let pause = if !inner.paused && inner.buffer.len() > 2 * inner.limit {
                let t = inner.transport.clone();
                inner.paused = t.is_some();
                t
            } else {
                None
            };
            (waker, pause)
        };
        if let Some(w) = waker {
            w.wake();
        }
        if let Some(t) = pause {
            t.pause_reading();
        }
        Ok(())
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

    /// Waits for the next `feed_data`, `feed_eof` or `set_exception`
    /// (asyncio's `_wait_for_data`).
    fn wait_for_data(&self, method: &'static str) -> WaitForData<'_> {
        WaitForData {
            reader: self,
            id: next_id(),
            method,
            since: None,
        }
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

    /// Reads up to `n` bytes (asyncio's `read(n)` with `n >= 0`): as soon as
    /// at least one byte is buffered, at most `n` of them; an empty vector at
    /// the end of file, or at once when `n == 0`. Not bounded by the limit.
    #[doc(alias = "StreamReader.read")]
    pub async fn read(&self, n: usize) -> Result<Vec<u8>, StreamError> {
        self.check_exception()?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let must_wait = {
            let inner = self.state();
            inner.buffer.is_empty() && !inner.eof
        };
        if must_wait {
            self.wait_for_data("read").await?;
        }
        let (data, resume) = {
            let mut inner = self.state();
            let data = inner.buffer.take(n);
            (data, inner.maybe_resume())
        };
        Self::resume_if(resume);
        Ok(data)
    }

    /// Reads until the end of file and returns every byte (asyncio's
    /// `read()` / `read(-1)`): reads of at most the limit each, so a paused
    /// transport is resumed as the buffer drains.
    #[doc(alias = "StreamReader.read")]
    pub async fn read_to_end(&self) -> Result<Vec<u8>, StreamError> {
        self.check_exception()?;
        let limit = self.limit();
        let mut out = Vec::new();
        loop {
            let block = self.read(limit).await?;
            if block.is_empty() {
                return Ok(out);
            }
            if out.is_empty() {
                out = block;
            } else {
                out.extend_from_slice(&block);
            }
        }
    }

    /// Reads exactly `n` bytes (asyncio's `readexactly`). At the end of file
    /// before `n` bytes: [`StreamError::IncompleteRead`] with the bytes read
    /// (taken from the buffer) and `expected: Some(n)`. Not bounded by the
    /// limit.
    #[doc(alias = "StreamReader.readexactly")]
    pub async fn readexactly(&self, n: usize) -> Result<Vec<u8>, StreamError> {
        self.check_exception()?;
        if n == 0 {
            return Ok(Vec::new());
        }
        loop {
            {
                let mut inner = self.state();
                if inner.buffer.len() >= n {
                    break;
                }
                if inner.eof {
                    let partial = inner.buffer.take(usize::MAX);
                    return Err(StreamError::IncompleteRead(IncompleteReadError {
                        partial,
                        expected: Some(n),
                    }));
                }
            }
            self.wait_for_data("readexactly").await?;
        }
        let (data, resume) = {
            let mut inner = self.state();
            let data = inner.buffer.take(n);
            (data, inner.maybe_resume())
        };
        Self::resume_if(resume);
        Ok(data)
    }

    /// Reads up to and including `separator` (asyncio's `readuntil`).
    ///
    /// - Found within the limit (not counting the separator): the bytes and
    ///   the separator are removed from the buffer and returned.
    /// - End of file first: [`StreamError::IncompleteRead`] with the whole
    ///   buffer (which is emptied; it may end with part of the separator)
    ///   and `expected: None`.
    /// - Not within the limit: [`StreamError::LimitOverrun`]; the data stays
    ///   in the buffer.
    /// - An empty separator: [`StreamError::InvalidArgument`].
    #[doc(alias = "StreamReader.readuntil")]
    pub async fn readuntil(&self, separator: &[u8]) -> Result<Vec<u8>, StreamError> {
        let seplen = separator.len();
        if seplen == 0 {
            return Err(StreamError::InvalidArgument(
                "Separator should be at least one-byte string",
            ));
        }
        self.check_exception()?;
        // Bytes from the start of the buffer known not to hold the
        // separator's start.
        let mut offset = 0;
        let isep = loop {
            {
                let mut inner = self.state();
                let buflen = inner.buffer.len();
                if buflen - offset >= seplen {
                    if let Some(i) = find(&inner.buffer.bytes()[offset..], separator) {
                        break offset + i;
                    }
                    offset = buflen + 1 - seplen;
                    if offset > inner.limit {
                        return Err(StreamError::LimitOverrun(LimitOverrunError {
                            consumed: offset,
                            message: "Separator is not found, and chunk exceed the limit",
                        }));
                    }
                }
                // A complete separator may have come with the last bytes, so
                // the end of file is checked after the search.
                if inner.eof {
                    let partial = inner.buffer.take(usize::MAX);
                    return Err(StreamError::IncompleteRead(IncompleteReadError {
                        partial,
                        expected: None,
                    }));
                }
            }
            self.wait_for_data("readuntil").await?;
        };
        let (chunk, resume) = {
            let mut inner = self.state();
            if isep > inner.limit {
                return Err(StreamError::LimitOverrun(LimitOverrunError {
                    consumed: isep,
                    message: "Separator is found, but chunk is longer than limit",
                }));
            }
            let chunk = inner.buffer.take(isep + seplen);
            (chunk, inner.maybe_resume())
        };
        Self::resume_if(resume);
        Ok(chunk)
    }

    /// Reads one line, through its `\n` (asyncio's `readline`). At the end
    /// of file: what is left, without a newline (empty once everything was
    /// read). A line longer than the limit is [`StreamError::LineTooLong`]
    /// and, as asyncio does, it is discarded: through its newline when that
    /// is buffered, else the whole buffer.
    #[doc(alias = "StreamReader.readline")]
    pub async fn readline(&self) -> Result<Vec<u8>, StreamError> {
        match self.readuntil(b"\n").await {
            Ok(line) => Ok(line),
            Err(StreamError::IncompleteRead(e)) => Ok(e.partial),
            Err(StreamError::LimitOverrun(e)) => {
                let resume = {
                    let mut inner = self.state();
                    if inner.buffer.bytes().get(e.consumed) == Some(&b'\n') {
                        inner.buffer.consume(e.consumed + 1);
                    } else {
                        inner.buffer.clear();
                    }
                    inner.maybe_resume()
                };
                Self::resume_if(resume);
                Err(StreamError::LineTooLong(e))
            }
            Err(other) => Err(other),
        }
    }

    /// The `AsyncRead` side: copies buffered bytes into `buf`, or registers
    /// this handle as the waiter.
    pub(crate) fn poll_read_into(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut inner = self.state();
        if let Some(e) = inner.exception_copy() {
            return Poll::Ready(Err(e));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if !inner.buffer.is_empty() {
            let n = buf.len().min(inner.buffer.len());
            buf[..n].copy_from_slice(&inner.buffer.bytes()[..n]);
            inner.buffer.consume(n);
            if matches!(inner.waiter, Some((id, _)) if id == self.id) {
                inner.waiter = None;
            }
            let resume = inner.maybe_resume();
            drop(inner);
            Self::resume_if(resume);
            return Poll::Ready(Ok(n));
        }
        if inner.eof {
            return Poll::Ready(Ok(0));
        }
        match &inner.waiter {
            Some((id, _)) if *id != self.id => {
                return Poll::Ready(Err(StreamError::AlreadyWaiting {
                    method: "poll_read",
                }
                .into()))
            }
            _ => {}
        }
        inner.waiter = Some((self.id, cx.waker().clone()));
        let resume = if inner.paused {
            inner.paused = false;
            inner.transport.clone()
        } else {
            None
        };
        drop(inner);
        Self::resume_if(resume);
        Poll::Pending
    }
}

/// The first index of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if let [b] = needle {
        return hay.iter().position(|x| x == b);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// asyncio's `_wait_for_data`: resolves at the next event that wakes the
/// waiter; fails if another read is waiting, or if the event was
/// `set_exception`.
struct WaitForData<'a> {
    reader: &'a StreamReader,
    id: u64,
    method: &'static str,
    /// The event count when this wait registered.
    since: Option<u64>,
}

impl std::future::Future for WaitForData<'_> {
    type Output = Result<(), StreamError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let id = self.id;
        let mut inner = self.reader.state();
        if let Some(since) = self.since {
            if inner.events != since {
                if matches!(inner.waiter, Some((w, _)) if w == id) {
                    inner.waiter = None;
                }
                if inner.failed_waiter == Some(id) {
                    inner.failed_waiter = None;
                    if let Some(e) = inner.exception_copy() {
                        return Poll::Ready(Err(StreamError::Io(e)));
                    }
                }
                return Poll::Ready(Ok(()));
            }
            // Polled again without an event: refresh the waker.
            if let Some((w, waker)) = &mut inner.waiter {
                if *w == id {
                    waker.clone_from(cx.waker());
                }
            }
            return Poll::Pending;
        }
        // A registration of this same handle's `AsyncRead` side is stale:
        // that side needs `&mut` on the handle, which this read's `&`
        // excludes, so nothing polls it any more.
        if matches!(inner.waiter, Some((w, _)) if w != self.reader.id) {
            return Poll::Ready(Err(StreamError::AlreadyWaiting {
                method: self.method,
            }));
        }
        inner.waiter = Some((id, cx.waker().clone()));
        let since = inner.events;
        // Waiting while paused would deadlock (readexactly(n) with n above
        // the limit): resume first.
        let resume = if inner.paused {
            inner.paused = false;
            inner.transport.clone()
        } else {
            None
        };
        drop(inner);
        self.since = Some(since);
        StreamReader::resume_if(resume);
        Poll::Pending
    }
}

impl Drop for WaitForData<'_> {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.reader.inner.try_borrow_mut() {
            if matches!(inner.waiter, Some((w, _)) if w == self.id) {
                inner.waiter = None;
            }
            if inner.failed_waiter == Some(self.id) {
                inner.failed_waiter = None;
            }
        }
    }
}

impl futures_lite::io::AsyncRead for StreamReader {
    /// Copies up to `buf.len()` buffered bytes; `Ok(0)` at the end of file;
    /// the reader's exception as an error; `Pending` (this handle registered
    /// as the waiter) while the buffer is empty. Another handle waiting is
    /// an error of kind `ResourceBusy`.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_read_into(cx, buf)
    }
}
