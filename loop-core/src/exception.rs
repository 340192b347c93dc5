//! The exception handler: where errors that no caller can receive go.
//!
//! A panic in a callback, an error in a task nobody awaits, a failure inside
//! the loop's own machinery: none of these has a caller to return to, so the
//! loop reports them as an [`ExceptionContext`] to its exception handler, as
//! asyncio does. The default handler logs the context (through the `log`
//! crate at `error` level, target `aioloop`, when a logger is installed; to
//! stderr otherwise). A handler that panics is itself caught, and the default
//! handler reports both.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use crate::event_loop::EventLoop;
use crate::LoopError;

/// An installed exception handler: called on the loop thread with the loop
/// and the context.
pub type ExceptionHandler = Rc<dyn Fn(&EventLoop, &ExceptionContext)>;

/// What went wrong, for the exception handler: asyncio's `context` dict as a
/// struct.
///
/// `message` is always set; `error` is the error value (asyncio's
/// `'exception'` key); `handle` describes the callback involved (asyncio's
/// `'handle'`), including where it was scheduled; `extra` holds any other
/// key (`'protocol'`, `'transport'`, `'socket'`...) as text.
#[derive(Clone)]
pub struct ExceptionContext {
    /// A human-readable description.
    pub message: String,
    /// The error, if there is one.
    pub error: Option<Rc<dyn std::error::Error>>,
    /// The callback involved, described (`<Handle scheduled at src/main.rs:9:8>`).
    pub handle: Option<String>,
    /// Any other context, as `(key, value)` pairs.
    pub extra: Vec<(String, String)>,
}

impl ExceptionContext {
    /// A context with only a message.
    pub fn new(message: impl Into<String>) -> Self {
        ExceptionContext {
            message: message.into(),
            error: None,
            handle: None,
            extra: Vec::new(),
        }
    }

    /// Adds the error.
    pub fn with_error(mut self, error: impl std::error::Error + 'static) -> Self {
        self.error = Some(Rc::new(error));
        self
    }

    /// Adds a `key: value` pair.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((key.into(), value.into()));
        self
    }

    /// The error as a [`LoopError`], if it is one (a caught panic is).
    pub fn loop_error(&self) -> Option<&LoopError> {
        self.error.as_ref()?.downcast_ref::<LoopError>()
    }
}

impl fmt::Debug for ExceptionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExceptionContext")
            .field("message", &self.message)
            .field("error", &self.error.as_ref().map(|e| e.to_string()))
            .field("handle", &self.handle)
            .field("extra", &self.extra)
            .finish()
    }
}

impl fmt::Display for ExceptionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(h) = &self.handle {
            write!(f, "\nhandle: {h}")?;
        }
        for (k, v) in &self.extra {
            write!(f, "\n{k}: {v}")?;
        }
        if let Some(e) = &self.error {
            write!(f, "\nerror: {e}")?;
            let mut source = e.source();
            while let Some(s) = source {
                write!(f, "\ncaused by: {s}")?;
                source = s.source();
            }
        }
        Ok(())
    }
}

impl EventLoop {
    /// Installs `handler` as the loop's exception handler, replacing any
    /// other. (asyncio's `set_exception_handler(None)` is
    /// [`clear_exception_handler`](Self::clear_exception_handler).)
    ///
    /// ```
    /// use loop_core::EventLoop;
    /// use std::{cell::RefCell, rc::Rc};
    /// let lp = EventLoop::new().unwrap();
    /// let seen = Rc::new(RefCell::new(Vec::new()));
    /// let s = seen.clone();
    /// lp.set_exception_handler(move |_lp, ctx| s.borrow_mut().push(ctx.message.clone()));
    /// lp.call_soon(|| panic!("oops")).unwrap();
    /// lp.call_soon(|| println!("still running")).unwrap();
    /// lp.stop();
    /// lp.run_forever().unwrap();
    /// assert!(seen.borrow()[0].starts_with("Exception in callback"));
    /// ```
    #[doc(alias = "loop.set_exception_handler")]
    pub fn set_exception_handler(&self, handler: impl Fn(&EventLoop, &ExceptionContext) + 'static) {
        *self.inner.exception_handler.borrow_mut() = Some(Rc::new(handler));
    }

    /// Removes the custom exception handler: the default one is used again.
    #[doc(alias = "set_exception_handler")]
    pub fn clear_exception_handler(&self) {
        let old = self.inner.exception_handler.borrow_mut().take();
        drop(old);
    }

    /// The custom exception handler, or `None` when the default one is used.
    #[doc(alias = "loop.get_exception_handler")]
    pub fn get_exception_handler(&self) -> Option<ExceptionHandler> {
        self.inner.exception_handler.borrow().clone()
    }

    /// Reports `context` to the exception handler (the custom one if set,
    /// else the default one). Never panics: a panicking handler is reported
    /// through the default handler.
    #[doc(alias = "loop.call_exception_handler")]
    pub fn call_exception_handler(&self, context: ExceptionContext) {
        let handler = self.inner.exception_handler.borrow().clone();
        let Some(handler) = handler else {
            self.default_exception_handler(&context);
            return;
        };
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| handler(self, &context))) {
            let report = ExceptionContext::new("Unhandled error in exception handler")
                .with_error(LoopError::panicked("the exception handler", payload))
                .with("context", context.to_string());
            self.default_exception_handler(&report);
        }
    }

    /// The default exception handler: logs `context` (the message, the
    /// handle, the extra keys, the error and its sources) through `log` at
    /// `error` level when a logger is installed, else to stderr.
    #[doc(alias = "loop.default_exception_handler")]
    pub fn default_exception_handler(&self, context: &ExceptionContext) {
        if crate::debug::logger_installed() {
            log::error!(target: "aioloop", "{context}");
        } else {
            eprintln!("aioloop: {context}");
        }
    }
}
