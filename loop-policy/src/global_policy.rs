//! The process-wide policy: `get_event_loop_policy` and
//! `set_event_loop_policy`.
//!
//! One `RwLock` holds it. The lock is held only to clone the `Arc` out or to
//! swap it, never while a policy method or a policy's `Drop` runs, so
//! policies may call these functions from inside their methods.

use std::sync::{Arc, PoisonError, RwLock};

use crate::policy::{DefaultEventLoopPolicy, EventLoopPolicy};

/// `None` until first asked for: the default policy is installed lazily, as
/// in asyncio.
static POLICY: RwLock<Option<Arc<dyn EventLoopPolicy>>> = RwLock::new(None);

/// The process-wide policy; a [`DefaultEventLoopPolicy`] unless
/// [`set_event_loop_policy`] installed another.
///
/// The default is created on the first call (or the first after
/// `set_event_loop_policy(None)`), in whichever thread makes it.
///
/// ```
/// use loop_policy::get_event_loop_policy;
/// let policy = get_event_loop_policy();
/// let lp = policy.new_event_loop()?;
/// policy.set_event_loop(Some(lp.clone()));
/// assert!(loop_policy::get_event_loop()?.ptr_eq(&lp));
/// policy.set_event_loop(None);
/// # Ok::<(), loop_core::LoopError>(())
/// ```
#[doc(alias = "asyncio.get_event_loop_policy")]
pub fn get_event_loop_policy() -> Arc<dyn EventLoopPolicy> {
    if let Some(policy) = POLICY
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
    {
        return policy.clone();
    }
    POLICY
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(|| Arc::new(DefaultEventLoopPolicy::new()))
        .clone()
}

/// Installs `policy` for the whole process; `None` goes back to the default.
///
/// As in asyncio, `None` means a *fresh* [`DefaultEventLoopPolicy`] (made on
/// the next [`get_event_loop_policy`]): the loops set as current under an
/// earlier default policy are not current any more. The previous policy is
/// dropped once the last `Arc` to it goes (callers may still hold one);
/// its loops are dropped, never closed, by this call.
///
/// ```
/// use loop_policy::{get_event_loop_policy, set_event_loop_policy, DefaultEventLoopPolicy};
/// use std::sync::Arc;
///
/// let mine: Arc<DefaultEventLoopPolicy> = Arc::new(DefaultEventLoopPolicy::new());
/// set_event_loop_policy(Some(mine.clone()));
/// let installed = get_event_loop_policy();
/// assert!(std::ptr::addr_eq(Arc::as_ptr(&installed), Arc::as_ptr(&mine)));
/// set_event_loop_policy(None);
/// ```
#[doc(alias = "asyncio.set_event_loop_policy")]
pub fn set_event_loop_policy(policy: Option<Arc<dyn EventLoopPolicy>>) {
    let old = {
        let mut slot = POLICY.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *slot, policy)
    };
    // The old policy's `Drop` (user code) runs here, with the lock released.
    drop(old);
}
