//! The `EventLoopPolicy` trait (asyncio's `AbstractEventLoopPolicy`) and
//! the default policy.

use std::fmt;
use std::thread;

use loop_core::{ErrorKind, EventLoop, LoopError};

use crate::per_thread::PerThreadLoop;

/// What a policy does: keep a "current" loop for each context (the default
/// policy's context is the thread) and create new loops.
///
/// The policy is process-wide, so it is `Send + Sync`; the loops it hands
/// out are `!Send`, so a policy keeps them in thread-local storage
/// ([`PerThreadLoop`] does that for you) and creates them on the thread that
/// asks.
///
/// Install one with [`set_event_loop_policy`](crate::set_event_loop_policy);
/// the free functions [`get_event_loop`](crate::get_event_loop),
/// [`set_event_loop`](crate::set_event_loop) and
/// [`new_event_loop`](crate::new_event_loop) then go through it. The loop
/// calls no policy method itself, and no lock is held while one runs, so a
/// method may call any function of this crate, including
/// `set_event_loop_policy`.
///
/// # Example: a policy whose loops start in debug mode
///
/// ```
/// use loop_core::{EventLoop, LoopError};
/// use loop_policy::{new_event_loop, EventLoopPolicy, PerThreadLoop};
/// use std::sync::Arc;
///
/// #[derive(Debug, Default)]
/// struct DebugPolicy {
///     current: PerThreadLoop,
/// }
///
/// impl EventLoopPolicy for DebugPolicy {
///     fn get_event_loop(&self) -> Result<EventLoop, LoopError> {
///         match self.current.get() {
///             Some(lp) => Ok(lp),
///             None => {
///                 // This policy creates the loop on first use.
///                 let lp = self.new_event_loop()?;
///                 self.current.set(Some(lp.clone()));
///                 Ok(lp)
///             }
///         }
///     }
///     fn set_event_loop(&self, lp: Option<EventLoop>) {
///         self.current.set(lp);
///     }
///     fn new_event_loop(&self) -> Result<EventLoop, LoopError> {
///         EventLoop::builder().debug(true).build()
///     }
/// }
///
/// loop_policy::set_event_loop_policy(Some(Arc::new(DebugPolicy::default())));
/// assert!(new_event_loop()?.get_debug());
/// assert!(loop_policy::get_event_loop()?.get_debug());
/// loop_policy::set_event_loop_policy(None); // back to the default
/// # Ok::<(), LoopError>(())
/// ```
#[doc(alias = "AbstractEventLoopPolicy")]
#[doc(alias = "asyncio.AbstractEventLoopPolicy")]
pub trait EventLoopPolicy: Send + Sync {
    /// The current loop of the calling context.
    ///
    /// Returns a loop or an error, never "nothing": a policy that has no
    /// loop for this context and does not create one errs (the default
    /// policy with [`ErrorKind::InvalidState`]).
    #[doc(alias = "AbstractEventLoopPolicy.get_event_loop")]
    fn get_event_loop(&self) -> Result<EventLoop, LoopError>;

    /// Makes `lp` the current loop of the calling context; `None` clears it.
    #[doc(alias = "AbstractEventLoopPolicy.set_event_loop")]
    fn set_event_loop(&self, lp: Option<EventLoop>);

    /// Creates a new loop by this policy's rules. It does not become the
    /// current loop: call [`set_event_loop`](Self::set_event_loop) for that.
    #[doc(alias = "AbstractEventLoopPolicy.new_event_loop")]
    fn new_event_loop(&self) -> Result<EventLoop, LoopError>;
}

impl fmt::Debug for dyn EventLoopPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("dyn EventLoopPolicy")
    }
}

type LoopFactory = Box<dyn Fn() -> Result<EventLoop, LoopError> + Send + Sync>;

/// asyncio's default policy: one current loop per thread, set explicitly.
///
/// - [`get_event_loop`](EventLoopPolicy::get_event_loop) returns the loop
///   set in this thread, and errs with [`ErrorKind::InvalidState`] ("There
///   is no current event loop in thread 'main'.") when none is set. This is
///   Python 3.14's behaviour. Python 3.12 and 3.13 instead created a loop
///   implicitly on the main thread (with a `DeprecationWarning` since
///   3.12); that is **not** kept: no thread gets a loop it did not ask for.
/// - [`set_event_loop`](EventLoopPolicy::set_event_loop) sets or clears the
///   loop of the calling thread only.
/// - [`new_event_loop`](EventLoopPolicy::new_event_loop) builds a loop with
///   [`EventLoop::new`] (which honours `AIOLOOP_BACKEND` and
///   `AIOLOOP_DEBUG`), or with the factory given to
///   [`with_loop_factory`](Self::with_loop_factory) (asyncio's
///   `_loop_factory`).
///
/// ```
/// use loop_core::ErrorKind;
/// use loop_policy::{DefaultEventLoopPolicy, EventLoopPolicy};
///
/// let policy = DefaultEventLoopPolicy::new();
/// let err = policy.get_event_loop().unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidState);
///
/// let lp = policy.new_event_loop()?;
/// policy.set_event_loop(Some(lp.clone()));
/// assert!(policy.get_event_loop()?.ptr_eq(&lp));
/// policy.set_event_loop(None);
/// assert!(policy.get_event_loop().is_err());
/// # Ok::<(), loop_core::LoopError>(())
/// ```
#[doc(alias = "asyncio.DefaultEventLoopPolicy")]
#[doc(alias = "BaseDefaultEventLoopPolicy")]
pub struct DefaultEventLoopPolicy {
    current: PerThreadLoop,
    factory: Option<LoopFactory>,
}

impl DefaultEventLoopPolicy {
    /// The default policy, making loops with [`EventLoop::new`].
    pub fn new() -> Self {
        DefaultEventLoopPolicy {
            current: PerThreadLoop::new(),
            factory: None,
        }
    }

    /// The default policy, making loops with `factory` (for a chosen backend,
    /// debug mode, clock...).
    ///
    /// ```
    /// use loop_core::{Backend, EventLoop};
    /// use loop_policy::{DefaultEventLoopPolicy, EventLoopPolicy};
    ///
    /// let policy = DefaultEventLoopPolicy::with_loop_factory(|| {
    ///     EventLoop::builder().backend(Backend::Polling).debug(true).build()
    /// });
    /// let lp = policy.new_event_loop()?;
    /// assert_eq!(lp.backend(), Backend::Polling);
    /// assert!(lp.get_debug());
    /// # Ok::<(), loop_core::LoopError>(())
    /// ```
    pub fn with_loop_factory(
        factory: impl Fn() -> Result<EventLoop, LoopError> + Send + Sync + 'static,
    ) -> Self {
        DefaultEventLoopPolicy {
            current: PerThreadLoop::new(),
            factory: Some(Box::new(factory)),
        }
    }
}

impl Default for DefaultEventLoopPolicy {
    fn default() -> Self {
        DefaultEventLoopPolicy::new()
    }
}

impl EventLoopPolicy for DefaultEventLoopPolicy {
    fn get_event_loop(&self) -> Result<EventLoop, LoopError> {
        self.current.get().ok_or_else(no_current_loop)
    }

    fn set_event_loop(&self, lp: Option<EventLoop>) {
        self.current.set(lp);
    }

    fn new_event_loop(&self) -> Result<EventLoop, LoopError> {
        match &self.factory {
            Some(factory) => factory(),
            None => EventLoop::new(),
        }
    }
}

impl fmt::Debug for DefaultEventLoopPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultEventLoopPolicy")
            .field("current", &self.current)
            .field("custom_factory", &self.factory.is_some())
            .finish()
    }
}

/// asyncio's `RuntimeError('There is no current event loop in thread %r.')`.
fn no_current_loop() -> LoopError {
    let current = thread::current();
    let name = match current.name() {
        Some(name) => format!("'{name}'"),
        None => format!("{:?}", current.id()),
    };
    LoopError::new(
        ErrorKind::InvalidState,
        format!("There is no current event loop in thread {name}."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn no_loop_is_an_error_naming_the_thread() {
        let policy = Arc::new(DefaultEventLoopPolicy::new());
        let p = policy.clone();
        let err = thread::Builder::new()
            .name("worker-7".into())
            .spawn(move || p.get_event_loop().unwrap_err())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidState);
        assert_eq!(
            err.to_string(),
            "There is no current event loop in thread 'worker-7'."
        );
    }

    #[test]
    fn no_loop_is_created_implicitly_on_any_thread() {
        // Python 3.12 created one on the main thread; 3.14 does not, nor do we.
        let policy = DefaultEventLoopPolicy::new();
        assert!(policy.get_event_loop().is_err());
        assert!(policy.get_event_loop().is_err());
    }

    #[test]
    fn set_get_and_clear() {
        let policy = DefaultEventLoopPolicy::new();
        let lp = policy.new_event_loop().unwrap();
        assert!(policy.get_event_loop().is_err(), "new_event_loop set it");
        policy.set_event_loop(Some(lp.clone()));
        assert!(policy.get_event_loop().unwrap().ptr_eq(&lp));
        policy.set_event_loop(None);
        assert!(policy.get_event_loop().is_err());
    }

    #[test]
    fn two_default_policies_do_not_share_loops() {
        let a = DefaultEventLoopPolicy::new();
        let b = DefaultEventLoopPolicy::new();
        a.set_event_loop(Some(a.new_event_loop().unwrap()));
        assert!(b.get_event_loop().is_err());
    }

    #[test]
    fn new_event_loop_uses_the_factory_each_time() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let policy = DefaultEventLoopPolicy::with_loop_factory(move || {
            c.fetch_add(1, Ordering::SeqCst);
            EventLoop::builder().debug(true).build()
        });
        let one = policy.new_event_loop().unwrap();
        let two = policy.new_event_loop().unwrap();
        assert!(!one.ptr_eq(&two));
        assert!(one.get_debug() && two.get_debug());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_failing_factory_error_is_returned() {
        let policy = DefaultEventLoopPolicy::with_loop_factory(|| {
            Err(LoopError::new(ErrorKind::InvalidArgument, "no loops today"))
        });
        let err = policy.new_event_loop().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(err.message(), "no loops today");
    }

    #[test]
    fn policies_are_send_and_sync_and_debug() {
        fn check<T: Send + Sync + fmt::Debug>() {}
        check::<DefaultEventLoopPolicy>();
        check::<PerThreadLoop>();
        let p: Arc<dyn EventLoopPolicy> = Arc::new(DefaultEventLoopPolicy::new());
        assert_eq!(format!("{p:?}"), "dyn EventLoopPolicy");
    }
}
