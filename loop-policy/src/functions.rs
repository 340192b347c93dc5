//! asyncio's module-level functions for finding the loop:
//! `get_running_loop`, `get_event_loop`, `set_event_loop`, `new_event_loop`.
//!
//! `get_event_loop` follows Python 3.14: the running loop, else the
//! policy's current loop, else an error (no implicit loop, not even on the
//! main thread). The policy creates no loop it keeps: `new_event_loop`
//! hands the owning handle to the caller, and `set_event_loop` keeps
//! whatever handle it is given (an owner moved in is dropped, closing its
//! loop, when it is replaced or its thread ends; a clone leaves ownership
//! with the caller).

use loop_core::{running_loop, ErrorKind, EventLoop, LoopError};

use crate::global_policy::get_event_loop_policy;

/// The loop running on this thread.
///
/// Inside a callback, a task, or the future given to `run_until_complete`,
/// that is the loop running it. Anywhere else (no loop runs on this thread,
/// or the code runs on an executor thread) it errs with
/// [`ErrorKind::InvalidState`] and asyncio's message, "no running event
/// loop". It never consults the policy.
///
/// ```
/// use loop_core::{ErrorKind, EventLoop};
/// use loop_policy::get_running_loop;
///
/// assert_eq!(get_running_loop().unwrap_err().kind(), ErrorKind::InvalidState);
/// let lp = EventLoop::new()?;
/// let inside = lp.run_until_complete(async { get_running_loop() })??;
/// assert!(inside.ptr_eq(&lp));
/// # Ok::<(), loop_core::LoopError>(())
/// ```
#[doc(alias = "asyncio.get_running_loop")]
pub fn get_running_loop() -> Result<EventLoop, LoopError> {
    running_loop().ok_or_else(|| LoopError::new(ErrorKind::InvalidState, "no running event loop"))
}

/// The running loop if one runs on this thread, else the current loop of
/// the process-wide policy (its
/// [`get_event_loop`](crate::EventLoopPolicy::get_event_loop)).
///
/// With the default policy that is the loop given to [`set_event_loop`] in
/// this thread, and an [`ErrorKind::InvalidState`] error ("There is no
/// current event loop in thread 'main'.") when there is none: no loop is
/// created behind your back (Python 3.14's behaviour; see
/// [`DefaultEventLoopPolicy`](crate::DefaultEventLoopPolicy)). Inside a
/// callback or task prefer [`get_running_loop`], which cannot fall back.
///
/// ```
/// use loop_policy::{get_event_loop, new_event_loop, set_event_loop};
///
/// let lp = new_event_loop()?;
/// assert!(get_event_loop().is_err()); // nothing set yet
/// set_event_loop(Some(lp.clone()));
/// assert!(get_event_loop()?.ptr_eq(&lp));
///
/// // While another loop runs here, that one wins.
/// let other = new_event_loop()?;
/// let seen = other.run_until_complete(async { get_event_loop() })??;
/// assert!(seen.ptr_eq(&other));
/// set_event_loop(None);
/// # Ok::<(), loop_core::LoopError>(())
/// ```
#[doc(alias = "asyncio.get_event_loop")]
pub fn get_event_loop() -> Result<EventLoop, LoopError> {
    match running_loop() {
        Some(lp) => Ok(lp),
        None => get_event_loop_policy().get_event_loop(),
    }
}

/// Makes `lp` the current loop through the process-wide policy (for the
/// calling thread, with the default policy); `None` clears it.
///
/// The loop it replaces is neither stopped nor closed, unless the policy
/// held its owning handle (`set_event_loop(Some(new_event_loop()?))`):
/// dropping that closes the loop. Setting a clone leaves ownership with
/// the caller. Setting a loop does
/// not run it, and a loop running on this thread stays what
/// [`get_event_loop`] returns until it stops.
#[doc(alias = "asyncio.set_event_loop")]
pub fn set_event_loop(lp: Option<EventLoop>) {
    get_event_loop_policy().set_event_loop(lp);
}

/// A new loop from the process-wide policy: the owning handle (dropping it
/// closes the loop; see [`EventLoop`](loop_core::EventLoop)). It is not made
/// current: pass it (or a clone) to [`set_event_loop`] for that, and close it
/// when done.
///
/// ```
/// use loop_policy::new_event_loop;
/// let a = new_event_loop()?;
/// let b = new_event_loop()?;
/// assert!(!a.ptr_eq(&b));
/// # Ok::<(), loop_core::LoopError>(())
/// ```
#[doc(alias = "asyncio.new_event_loop")]
pub fn new_event_loop() -> Result<EventLoop, LoopError> {
    get_event_loop_policy().new_event_loop()
}
