//! [`shield`]: asyncio's `asyncio.shield`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use loop_futures::{observe_cancellation, take_cancellation};

use crate::tasks::Task;
use crate::{running, ErrorKind, LoopError};

/// Runs `fut` as a task that the cancellation of the awaiting task does not
/// reach (asyncio's `asyncio.shield(aw)`).
///
/// Awaiting the [`Shield`] gives the task's output; when the awaiting task
/// is cancelled, the await gives the cancellation at once and the shielded
/// task goes on (keep [`Shield::task`] to await it later). The task is
/// created at once on the running loop (at the first poll when no loop
/// runs yet). To shield a task you already have, use `Shield::from(task)`.
///
/// ```
/// use loop_core::{run, shield, LoopError};
/// let out = run(|_lp| async move { shield(async { 7 }).await }).unwrap();
/// assert_eq!(out, 7);
/// # let _: Result<(), LoopError> = Ok(());
/// ```
#[doc(alias = "asyncio.shield")]
pub fn shield<F>(fut: F) -> Shield<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let state = match running::running_loop() {
        Some(lp) => match lp.create_task(fut) {
            Ok(t) => State::Task(t),
            Err(e) => State::Failed(e),
        },
        None => State::Deferred(Box::pin(fut)),
    };
    Shield { state }
}

enum State<T> {
    Deferred(Pin<Box<dyn Future<Output = T>>>),
    Task(Task<T>),
    Failed(LoopError),
    Done,
}

/// The future of [`shield`]: the shielded task's output, moved out as an
/// `.await` of the task would.
#[must_use = "futures do nothing unless awaited"]
pub struct Shield<T> {
    state: State<T>,
}

impl<T: 'static> Shield<T> {
    /// The shielded task (none before it is created, or once failed).
    pub fn task(&self) -> Option<Task<T>> {
        match &self.state {
            State::Task(t) => Some(t.clone()),
            _ => None,
        }
    }

    fn spawn_deferred(&mut self) {
        if !matches!(self.state, State::Deferred(_)) {
            return;
        }
        let State::Deferred(fut) = std::mem::replace(&mut self.state, State::Done) else {
            unreachable!("matched above");
        };
        self.state = match running::running_loop() {
            Some(lp) => match lp.create_task(fut) {
                Ok(t) => State::Task(t),
                Err(e) => State::Failed(e),
            },
            None => State::Failed(LoopError::new(
                ErrorKind::InvalidState,
                "no running event loop: shield() is awaited in a task",
            )),
        };
    }
}

impl<T: 'static> From<Task<T>> for Shield<T> {
    /// Shields a task that already runs (asyncio's `shield(task)`).
    fn from(task: Task<T>) -> Self {
        Shield {
            state: State::Task(task),
        }
    }
}

impl<T: 'static> Future for Shield<T> {
    type Output = Result<T, LoopError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.spawn_deferred();
        if let Some(err) = take_cancellation() {
            return Poll::Ready(Err(err));
        }
        match std::mem::replace(&mut this.state, State::Done) {
            State::Task(t) => {
                if t.poll_done(cx).is_pending() {
                    this.state = State::Task(t);
                    return Poll::Pending;
                }
                let out = t.take_result();
                this.state = State::Task(t);
                Poll::Ready(match out {
                    Err(e) if e.is_cancelled() => Err(observe_cancellation(e)),
                    other => other,
                })
            }
            State::Failed(e) => Poll::Ready(Err(e)),
            State::Done | State::Deferred(_) => Poll::Ready(Err(LoopError::new(
                ErrorKind::InvalidState,
                "shield future polled after it completed",
            ))),
        }
    }
}

impl<T> fmt::Debug for Shield<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shield").finish_non_exhaustive()
    }
}
