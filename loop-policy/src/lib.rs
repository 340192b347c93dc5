//! Event loop policies for aioloop: asyncio's `get_running_loop`,
//! `get_event_loop`, `set_event_loop`, `new_event_loop`, and the policy
//! behind them.
//!
//! # Should I be using this crate?
//!
//! Use it (through the `aioloop` facade, feature `policy`, on by default) when
//! code needs to *find* a loop rather than be handed one: a library
//! function called from inside a callback or task that wants the loop
//! running it ([`get_running_loop`]), or a program that keeps "the current
//! loop" of each thread in one well-known place ([`set_event_loop`],
//! [`get_event_loop`]), or that wants every loop it creates built one way
//! ([`set_event_loop_policy`]).
//!
//! If you can pass an [`EventLoop`](loop_core::EventLoop) around, do that
//! and skip this crate: `loop_core` alone creates and runs loops, and
//! [`loop_core::running_loop`] already answers "which loop runs here?" with
//! an `Option`. Python itself deprecated the policy system in 3.14 (removal
//! planned for 3.16) in favour of passing a loop factory to its runner;
//! aioloop keeps it because asyncio's low-level API index lists it, not as
//! the recommended way in.
//!
//! # The API at a glance
//!
//! | asyncio | here |
//! |---|---|
//! | `asyncio.get_running_loop()` | [`get_running_loop`] |
//! | `asyncio.get_event_loop()` | [`get_event_loop`] |
//! | `asyncio.set_event_loop(loop)` | [`set_event_loop`] |
//! | `asyncio.new_event_loop()` | [`new_event_loop`] |
//! | `asyncio.get_event_loop_policy()` / `set_event_loop_policy(p)` | [`get_event_loop_policy`], [`set_event_loop_policy`] |
//! | `AbstractEventLoopPolicy` | the [`EventLoopPolicy`] trait |
//! | `DefaultEventLoopPolicy` | [`DefaultEventLoopPolicy`] |
//! | its `threading.local` | [`PerThreadLoop`], for custom policies |
//!
//! ```
//! use loop_policy::{get_event_loop, get_running_loop, new_event_loop, set_event_loop};
//!
//! // Outside a running loop there is none to get.
//! assert!(get_running_loop().is_err());
//!
//! // Make a loop this thread's current one, and find it again elsewhere.
//! let lp = new_event_loop()?;
//! set_event_loop(Some(lp.clone()));
//! assert!(get_event_loop()?.ptr_eq(&lp));
//!
//! // Inside the loop, the running loop is found without being passed in.
//! let same = lp.run_until_complete(async {
//!     let here = get_running_loop()?;
//!     here.sleep(std::time::Duration::from_millis(1)).await?;
//!     Ok::<_, loop_core::LoopError>(here.ptr_eq(&get_event_loop()?))
//! })??;
//! assert!(same);
//!
//! set_event_loop(None);
//! lp.close()?;
//! # Ok::<(), loop_core::LoopError>(())
//! ```
//!
//! # Semantics chosen
//!
//! - **No implicit loop.** With the default policy, [`get_event_loop`]
//!   outside a running loop returns the loop set in this thread, or errs
//!   when none was set, on every thread, the main one included. This is
//!   Python 3.14's behaviour. Python up to 3.13 created a loop implicitly
//!   on the main thread (with a `DeprecationWarning` in 3.12 and 3.13);
//!   that is not kept, so no loop exists that the program did not ask for.
//! - **Errors are values.** Where asyncio raises `RuntimeError`, these
//!   functions return a [`LoopError`](loop_core::LoopError) of kind
//!   [`ErrorKind::InvalidState`](loop_core::ErrorKind::InvalidState) with
//!   asyncio's message: "no running event loop" from [`get_running_loop`],
//!   "There is no current event loop in thread 'main'." from the default
//!   policy.
//! - **One current loop per thread.** The default policy keeps the current
//!   loop in thread-local storage, like CPython's `threading.local`: each
//!   thread sets, gets and clears its own, and loops in different threads
//!   run at the same time. `EventLoop` is `!Send`, so a loop can only be
//!   current in the thread that made it.
//! - **A process-wide policy.** The policy is shared by all threads
//!   (`Arc<dyn EventLoopPolicy>`, so policies are `Send + Sync`).
//!   `set_event_loop_policy(None)` installs a *fresh* default policy on
//!   next use, as asyncio does: loops set under the old one are forgotten.
//! - **Nothing is closed for you.** Replacing or clearing the current loop,
//!   or replacing the policy, drops references to loops; it never stops or
//!   closes them.
//! - **No lock around user code.** Policy methods run with no lock held, so
//!   a policy may call any function here, including
//!   [`set_event_loop_policy`].
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![doc(test(attr(deny(warnings))))]

mod functions;
mod global_policy;
mod per_thread;
mod policy;

pub use functions::{get_event_loop, get_running_loop, new_event_loop, set_event_loop};
pub use global_policy::{get_event_loop_policy, set_event_loop_policy};
pub use per_thread::PerThreadLoop;
pub use policy::{DefaultEventLoopPolicy, EventLoopPolicy};
