//! [`gather`]: asyncio's `asyncio.gather`.
//!
//! Each future is scheduled as a task at once (on the running loop; when no
//! loop runs yet, at the first poll), so they run concurrently whether or
//! not the gather is awaited yet. The gather waits with wakers on the tasks
//! (it takes their outputs itself, in order). Cancelling the task that
//! awaits it cancels every child not done (asyncio's `_GatheringFuture`);
//! the gather then ends with that cancellation once the children are done.
//! Dropping the gather leaves the children running, as in asyncio.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use loop_futures::{observe_cancellation, take_cancellation};

use crate::tasks::Task;
use crate::{running, ErrorKind, LoopError};

type Boxed<T, E> = Pin<Box<dyn Future<Output = Result<T, E>>>>;

/// Runs `futures` concurrently, as tasks, and gives their outputs in order
/// (asyncio's `asyncio.gather(*aws)`).
///
/// Every future's output is a `Result<T, E>` (one `E` that can hold a
/// [`LoopError`]). The first child to fail (an `Err`, a panic, a
/// cancellation) ends the gather with its error at once; the others keep
/// running, as in asyncio. For every outcome in order instead, use
/// [`Gather::return_exceptions`]. Cancelling the awaiting task cancels the
/// children (see the module docs). For outputs of different types, await
/// tasks one by one, or use an enum.
///
/// ```
/// use loop_core::{gather, run, LoopError};
/// use std::time::Duration;
/// let out = run(|lp| async move {
///     let work = (1..=3u64).map(|i| {
///         let lp = lp.clone();
///         async move {
///             lp.sleep(Duration::from_millis(4 - i)).await?;
///             Ok::<_, LoopError>(i * 10)
///         }
///     });
///     gather(work).await
/// })
/// .unwrap();
/// assert_eq!(out, [10, 20, 30]);
/// ```
#[doc(alias = "asyncio.gather")]
pub fn gather<I, F, T, E>(futures: I) -> Gather<T, E>
where
    I: IntoIterator<Item = F>,
    F: Future<Output = Result<T, E>> + 'static,
    T: 'static,
    E: From<LoopError> + 'static,
{
    let children = match running::running_loop() {
        Some(lp) => {
            let mut tasks = Vec::new();
            let mut failed = None;
            for f in futures {
                match lp.create_task(f) {
                    Ok(t) => tasks.push(t),
                    Err(e) => failed = Some(e),
                }
            }
            match failed {
                None => Children::Tasks(tasks),
                Some(e) => Children::Failed(e),
            }
        }
        None => Children::Deferred(
            futures
                .into_iter()
                .map(|f| Box::pin(f) as Boxed<T, E>)
                .collect(),
        ),
    };
    Gather {
        core: Core {
            children,
            results: Vec::new(),
            next: 0,
            cancel_requested: None,
        },
    }
}

enum Children<T, E> {
    Deferred(Vec<Boxed<T, E>>),
    Tasks(Vec<Task<Result<T, E>>>),
    Failed(LoopError),
}

struct Core<T, E> {
    children: Children<T, E>,
    /// The outcomes taken so far, by index.
    results: Vec<Option<Result<T, E>>>,
    /// Every child before this index is done and taken.
    next: usize,
    /// The cancellation delivered to the awaiting task, forwarded to the
    /// children.
    cancel_requested: Option<LoopError>,
}

/// The future of [`gather`]: `Ok` with every output in order, or the first
/// error.
#[must_use = "futures do nothing unless awaited"]
pub struct Gather<T, E> {
    core: Core<T, E>,
}

/// The future of [`Gather::return_exceptions`]: every outcome, in order.
#[must_use = "futures do nothing unless awaited"]
pub struct GatherAll<T, E> {
    core: Core<T, E>,
}

impl<T, E> Gather<T, E> {
    /// Gives every child's outcome, `Ok` or `Err`, in order, once all are
    /// done (asyncio's `gather(..., return_exceptions=True)`); a cancelled
    /// child's is a `Cancelled` error kept as a value. The gather itself
    /// still fails when the awaiting task is cancelled.
    pub fn return_exceptions(self) -> GatherAll<T, E> {
        GatherAll { core: self.core }
    }
}

impl<T: 'static, E: From<LoopError> + 'static> Core<T, E> {
    /// `fail_fast`: end at the first child error (plain `gather`).
    fn poll_core(
        &mut self,
        cx: &mut Context<'_>,
        fail_fast: bool,
    ) -> Poll<Result<Vec<Result<T, E>>, E>> {
        if let Children::Deferred(_) = self.children {
            let Some(lp) = running::running_loop() else {
                return Poll::Ready(Err(LoopError::new(
                    ErrorKind::InvalidState,
                    "no running event loop: gather() is awaited in a task",
                )
                .into()));
            };
            let Children::Deferred(futures) =
                std::mem::replace(&mut self.children, Children::Tasks(Vec::new()))
            else {
                unreachable!("matched above");
            };
            let mut tasks = Vec::with_capacity(futures.len());
            for f in futures {
                match lp.create_task(f) {
                    Ok(t) => tasks.push(t),
                    Err(e) => return Poll::Ready(Err(e.into())),
                }
            }
            self.children = Children::Tasks(tasks);
        }
        let tasks = match &self.children {
            Children::Tasks(t) => t,
            Children::Failed(e) => return Poll::Ready(Err(e.clone().into())),
            Children::Deferred(_) => unreachable!("spawned above"),
        };
        if self.results.len() != tasks.len() {
            self.results = tasks.iter().map(|_| None).collect();
        }
        if let Some(delivered) = take_cancellation() {
            let mut any = false;
            for t in tasks.iter().filter(|t| !t.done()) {
                any |= t.cancel(Some(delivered.message()));
            }
            if !any {
                // Nothing left to cancel: the await itself is cancelled.
                return Poll::Ready(Err(delivered.into()));
            }
            self.cancel_requested = Some(delivered);
        }
        let mut all_done = true;
        for (i, t) in tasks.iter().enumerate().skip(self.next) {
            if self.results[i].is_some() {
                continue;
            }
            if t.poll_done(cx).is_pending() {
                all_done = false;
                continue;
            }
            let out = match t.take_result() {
                Ok(out) => out,
                Err(e) if e.is_cancelled() && fail_fast => {
                    Err(match self.cancel_requested.take() {
                        Some(delivered) => delivered,
                        None => observe_cancellation(e),
                    }
                    .into())
                }
                Err(e) => Err(e.into()),
            };
            if fail_fast && out.is_err() {
                return Poll::Ready(Err(out.err().expect("is_err")));
            }
            self.results[i] = Some(out);
            if i == self.next {
                self.next += 1;
            }
        }
        if !all_done {
            return Poll::Pending;
        }
        if let Some(delivered) = self.cancel_requested.take() {
            return Poll::Ready(Err(delivered.into()));
        }
        Poll::Ready(Ok(self
            .results
            .drain(..)
            .map(|r| r.expect("every child is done"))
            .collect()))
    }
}

impl<T: 'static, E: From<LoopError> + 'static> Future for Gather<T, E> {
    type Output = Result<Vec<T>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().core.poll_core(cx, true).map(|r| {
            r.map(|all| {
                all.into_iter()
                    .map(|o| match o {
                        Ok(v) => v,
                        Err(_) => unreachable!("the first error ended the gather"),
                    })
                    .collect()
            })
        })
    }
}

impl<T: 'static, E: From<LoopError> + 'static> Future for GatherAll<T, E> {
    type Output = Result<Vec<Result<T, E>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().core.poll_core(cx, false)
    }
}

// The outputs are never pinned (no structural pinning): moving a gather is
// fine whatever `T` and `E` are.
impl<T, E> Unpin for Gather<T, E> {}
impl<T, E> Unpin for GatherAll<T, E> {}

impl<T, E> fmt::Debug for Gather<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gather").finish_non_exhaustive()
    }
}

impl<T, E> fmt::Debug for GatherAll<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatherAll").finish_non_exhaustive()
    }
}
