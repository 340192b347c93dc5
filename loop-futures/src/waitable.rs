//! [`Waitable`]: what `wait` (loop-core) can wait on.

use std::task::{Context, Poll};

use crate::{Future, LoopError, LoopRef, Task};

/// A future or task that `wait` can wait on without taking its result:
/// asyncio's `wait` takes futures and tasks and hands them back, split into
/// done and pending.
///
/// Implemented for [`Future`] (any value type; an exception is an error
/// set with `set_exception`), and for [`Task`]s whose output is a `Result`
/// (an exception is the task's own error, a panic say, or the body's `Err`)
/// or `()` (only the task's own error). Neither kind counts a cancellation
/// as an exception, as asyncio's `FIRST_EXCEPTION`.
pub trait Waitable {
    /// `Ready` once done, registering `cx`'s waker until then.
    fn poll_done(&self, cx: &mut Context<'_>) -> Poll<()>;

    /// Whether it is done.
    fn is_done(&self) -> bool;

    /// Whether it is done with an exception (not a cancellation).
    fn has_exception(&self) -> bool;
}

fn failed<T>(outcome: Option<&Result<T, LoopError>>) -> bool {
    matches!(outcome, Some(Err(e)) if !e.is_cancelled())
}

impl<T: 'static, L: LoopRef> Waitable for Future<T, L> {
    fn poll_done(&self, cx: &mut Context<'_>) -> Poll<()> {
        Future::poll_done(self, cx)
    }

    fn is_done(&self) -> bool {
        self.done()
    }

    fn has_exception(&self) -> bool {
        self.peek(failed)
    }
}

impl<T: 'static, E: 'static, L: LoopRef> Waitable for Task<Result<T, E>, L> {
    fn poll_done(&self, cx: &mut Context<'_>) -> Poll<()> {
        Task::poll_done(self, cx)
    }

    fn is_done(&self) -> bool {
        self.done()
    }

    fn has_exception(&self) -> bool {
        self.peek(|o| failed(o) || matches!(o, Some(Ok(Err(_)))))
    }
}

impl<L: LoopRef> Waitable for Task<(), L> {
    fn poll_done(&self, cx: &mut Context<'_>) -> Poll<()> {
        Task::poll_done(self, cx)
    }

    fn is_done(&self) -> bool {
        self.done()
    }

    fn has_exception(&self) -> bool {
        self.peek(failed)
    }
}
