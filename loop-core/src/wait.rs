//! [`wait`]: asyncio's `asyncio.wait`, over futures and tasks
//! ([`Waitable`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use loop_futures::{take_cancellation, Waitable};

use crate::sleep::Deadline;
use crate::{running, ErrorKind, LoopError};

/// When [`wait`] returns (asyncio's `return_when`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReturnWhen {
    /// As soon as one is done (asyncio's `FIRST_COMPLETED`).
    #[doc(alias = "FIRST_COMPLETED")]
    FirstCompleted,
    /// As soon as one is done with an exception (not a cancellation), or
    /// when all are done (asyncio's `FIRST_EXCEPTION`).
    #[doc(alias = "FIRST_EXCEPTION")]
    FirstException,
    /// When all are done (asyncio's `ALL_COMPLETED`).
    #[doc(alias = "ALL_COMPLETED")]
    AllCompleted,
}

/// Waits for the futures or tasks `aws` until `return_when` holds (or the
/// [`timeout`](Wait::timeout) passes), then gives them back split into
/// `(done, pending)`, each in the order given (asyncio's `asyncio.wait`,
/// which returns sets).
///
/// Nothing is cancelled, taken or raised: read the outcomes from the
/// handles. Cancelling the awaiting task ends the wait with the
/// cancellation and leaves `aws` running. An empty `aws` is an
/// [`ErrorKind::InvalidArgument`] error, as in asyncio.
///
/// ```
/// use loop_core::{run, wait, LoopError, ReturnWhen};
/// use std::time::Duration;
/// let (done, pending) = run(|lp| async move {
///     let fast = lp.create_task(async { Ok::<_, LoopError>(1) })?;
///     let slow = lp.create_task({
///         let lp = lp.clone();
///         async move { lp.sleep(Duration::from_secs(3600)).await }
///     })?;
///     let (done, pending) = wait([fast.clone()], ReturnWhen::FirstCompleted).await?;
///     let (_, still) = wait([slow], ReturnWhen::AllCompleted)
///         .timeout(Duration::from_millis(1))
///         .await?;
///     Ok::<_, LoopError>((done.len(), pending.len() + still.len()))
/// })
/// .unwrap();
/// assert_eq!((done, pending), (1, 1));
/// ```
#[doc(alias = "asyncio.wait")]
pub fn wait<I, W>(aws: I, return_when: ReturnWhen) -> Wait<W>
where
    I: IntoIterator<Item = W>,
    W: Waitable,
{
    Wait {
        items: aws.into_iter().collect(),
        return_when,
        timeout: None,
        timer: None,
    }
}

/// The future of [`wait`].
#[must_use = "futures do nothing unless awaited"]
pub struct Wait<W> {
    items: Vec<W>,
    return_when: ReturnWhen,
    timeout: Option<Duration>,
    timer: Option<Deadline>,
}

impl<W> Wait<W> {
    /// Returns after `timeout` (from the first poll) even if `return_when`
    /// does not hold yet: no error, the unfinished ones are in `pending`
    /// (asyncio's `timeout=`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl<W: Waitable> Wait<W> {
    fn split(&mut self) -> (Vec<W>, Vec<W>) {
        std::mem::take(&mut self.items)
            .into_iter()
            .partition(|w| w.is_done())
    }
}

impl<W: Waitable> Future for Wait<W> {
    type Output = Result<(Vec<W>, Vec<W>), LoopError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(err) = take_cancellation() {
            return Poll::Ready(Err(err));
        }
        if this.items.is_empty() {
            return Poll::Ready(Err(LoopError::new(
                ErrorKind::InvalidArgument,
                "wait(): the set of futures and tasks is empty",
            )));
        }
        let mut done = 0;
        let mut failed = false;
        for w in &this.items {
            if w.poll_done(cx).is_ready() {
                done += 1;
                failed |= w.has_exception();
            }
        }
        let ready = match this.return_when {
            ReturnWhen::AllCompleted => done == this.items.len(),
            ReturnWhen::FirstCompleted => done > 0,
            ReturnWhen::FirstException => failed || done == this.items.len(),
        };
        if ready {
            return Poll::Ready(Ok(this.split()));
        }
        if let Some(limit) = this.timeout {
            if this.timer.is_none() {
                let Some(lp) = running::running_loop() else {
                    return Poll::Ready(Err(LoopError::new(
                        ErrorKind::InvalidState,
                        "no running event loop: wait() with a timeout is awaited in a task",
                    )));
                };
                this.timer = Some(Deadline::new(&lp, lp.time().checked_add(limit)));
            }
            let timer = this.timer.as_mut().expect("set above");
            match timer.poll_fired(cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => return Poll::Ready(Ok(this.split())),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Pending
    }
}

// The handles are never pinned (no structural pinning).
impl<W> Unpin for Wait<W> {}

impl<W> fmt::Debug for Wait<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait")
            .field("len", &self.items.len())
            .field("return_when", &self.return_when)
            .field("timeout", &self.timeout)
            .finish()
    }
}
