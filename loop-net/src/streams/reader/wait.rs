//! How a [`StreamReader`] waits (a child module of `stream_reader`): the
//! one waiter of a read that must wait for data (asyncio's
//! `_wait_for_data`), and the `futures-io` `AsyncRead` side, which
//! registers the reading handle itself as that waiter.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{next_id, StreamReader};
use crate::streams::error::StreamError;

impl StreamReader {
    /// Waits for the next `feed_data`, `feed_eof` or `set_exception`
    /// (asyncio's `_wait_for_data`).
    pub(super) fn wait_for_data(&self, method: &'static str) -> WaitForData<'_> {
        WaitForData {
            reader: self,
            id: next_id(),
            method,
            since: None,
        }
    }

    /// The `AsyncRead` side: copies buffered bytes into `buf`, or registers
    /// this handle as the waiter.
    pub(crate) fn poll_read_into(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(err) = loop_core::take_cancellation() {
            self.state().clear_waiter(self.id);
            return Poll::Ready(Err(err.into()));
        }
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
            inner.clear_waiter(self.id);
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
        let resume = inner.unpause();
        drop(inner);
        Self::resume_if(resume);
        Poll::Pending
    }
}

/// asyncio's `_wait_for_data`: resolves at the next event that wakes the
/// waiter; fails if another read is waiting, or if the event was
/// `set_exception`.
pub(super) struct WaitForData<'a> {
    reader: &'a StreamReader,
    id: u64,
    method: &'static str,
    /// The event count when this wait registered.
    since: Option<u64>,
}

impl std::future::Future for WaitForData<'_> {
    type Output = Result<(), StreamError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The awaiting task's cancellation: this wait ends (its drop frees
        // the waiter slot) with the `LoopError` inside the `io::Error`.
        if let Some(err) = loop_core::take_cancellation() {
            return Poll::Ready(Err(StreamError::Io(err.into())));
        }
        let id = self.id;
        let mut inner = self.reader.state();
        if let Some(since) = self.since {
            if inner.events != since {
                inner.clear_waiter(id);
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
        // Waiting while paused would deadlock: resume first.
        let resume = inner.unpause();
        drop(inner);
        self.since = Some(since);
        StreamReader::resume_if(resume);
        Poll::Pending
    }
}

impl Drop for WaitForData<'_> {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.reader.inner.try_borrow_mut() {
            inner.clear_waiter(self.id);
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
