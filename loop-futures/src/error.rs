//! The error type shared by every aioloop crate.
//!
//! Every fallible call of the loop, and every failed future, gives a
//! [`LoopError`]. It lives in this lowest crate so that futures, tasks and the
//! loop share one type; `loop-core` and the facade re-export it. It is an opaque struct
//! with a [`kind`](LoopError::kind), a message phrased like asyncio's own
//! (`"Event loop is closed"`, `"This event loop is already running"`), and,
//! where there is one, a [`source`](std::error::Error::source): the OS error of
//! a failed syscall, or the [`PanicError`] of a callback or task that panicked.

use std::any::Any;
use std::fmt;
use std::io;
use std::sync::{Arc, Weak};

/// What went wrong, in a form code can match on.
///
/// The list grows as the loop grows, so it is `#[non_exhaustive]`: match the
/// kinds you handle and keep a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The loop was closed with `close`. A closed loop
    /// cannot be run or given work; create a new one.
    Closed,
    /// The loop is already running (a nested `run_forever` or
    /// `run_until_complete` from inside a callback), or another loop is running
    /// on this thread. Schedule work with `call_soon` instead of running the
    /// loop again.
    AlreadyRunning,
    /// The call needs the loop to be stopped: `close` while it runs.
    /// Call `stop` and close after `run_*` returns.
    Running,
    /// The loop stopped (someone called `stop`) before the future given to
    /// `run_until_complete` finished. The future was dropped.
    Stopped,
    /// The object is in the wrong state for the call (for example a
    /// registration after `shutdown_asyncgens`, or the default executor after
    /// `shutdown_default_executor`).
    InvalidState,
    /// An argument is out of range: a negative file descriptor, a delay so
    /// long that its deadline cannot be represented, ...
    InvalidArgument,
    /// User code (a callback, a task, an executor job) panicked; the source is
    /// a [`PanicError`] with the panic message.
    Panicked,
    /// A bounded wait ran out of time (`shutdown_default_executor` with jobs
    /// still running).
    Timeout,
    /// A system call failed; the source is the [`io::Error`].
    Io,
    /// The future or task was cancelled; the message is the one given to
    /// `cancel` (asyncio's `CancelledError`).
    Cancelled,
    /// The future was completed with `set_exception`, or the task's future
    /// returned an error through it; the source is that error.
    Exception,
}

/// The error of every fallible loop call: a [`kind`](Self::kind), an
/// asyncio-like message, and an optional source.
///
/// It is cheap to clone (the source is shared), so a failed future can hand
/// the same error to every caller of `result()`.
///
/// ```
/// use loop_futures::{ErrorKind, LoopError};
/// let err = LoopError::closed();
/// assert_eq!(err.kind(), ErrorKind::Closed);
/// assert_eq!(err.to_string(), "Event loop is closed");
/// ```
///
/// One pointer wide: the kind, message and source live behind an `Arc`, so a
/// `Result<T, LoopError>` costs little more than `T` on the success path.
#[derive(Clone)]
pub struct LoopError {
    inner: Arc<ErrorInner>,
}

#[derive(Clone)]
struct ErrorInner {
    kind: ErrorKind,
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl LoopError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        LoopError {
            inner: Arc::new(ErrorInner {
                kind,
                message: message.into(),
                source: None,
            }),
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Arc::make_mut(&mut self.inner).source = Some(Arc::new(source));
        self
    }

    /// Wraps any error as an [`ErrorKind::Exception`] (what `set_exception`
    /// stores); a `LoopError` is kept as it is.
    pub fn exception(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(error);
        match boxed.downcast::<LoopError>() {
            Ok(e) => *e,
            Err(other) => LoopError {
                inner: Arc::new(ErrorInner {
                    kind: ErrorKind::Exception,
                    message: other.to_string(),
                    source: Some(Arc::from(other)),
                }),
            },
        }
    }

    /// A cancellation error with `message` (empty when none was given).
    pub fn cancelled(message: impl Into<String>) -> Self {
        LoopError::new(ErrorKind::Cancelled, message)
    }

    /// A failed system call, with what the loop was doing (`"add_reader(fd=7)"`).
    pub fn io(context: impl fmt::Display, err: io::Error) -> Self {
        LoopError::new(ErrorKind::Io, format!("{context}: {err}")).with_source(err)
    }

    /// The error for a panic payload caught from user code: "`what`
    /// panicked at `file:line:col`: `message`" (the location when aioloop's
    /// panic hook saw the panic, see [`PanicError::location`]).
    pub fn panicked(what: impl fmt::Display, payload: Box<dyn Any + Send>) -> Self {
        let panic = PanicError::from_payload(payload);
        let message = match &panic.location {
            Some(at) => format!("{what} panicked at {at}: {}", panic.message),
            None => format!("{what} panicked: {}", panic.message),
        };
        LoopError::new(ErrorKind::Panicked, message).with_source(panic)
    }

    /// The error of any call on a closed loop: "Event loop is closed".
    pub fn closed() -> Self {
        LoopError::new(ErrorKind::Closed, "Event loop is closed")
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The human-readable message (the same text as `Display`).
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The panic behind a [`ErrorKind::Panicked`] error, if that is what this is.
    pub fn panic(&self) -> Option<&PanicError> {
        self.inner.source.as_ref()?.downcast_ref::<PanicError>()
    }

    /// The OS error behind an [`ErrorKind::Io`] error, if that is what this is.
    pub fn io_error(&self) -> Option<&io::Error> {
        self.inner.source.as_ref()?.downcast_ref::<io::Error>()
    }

    /// Whether this is a cancellation ([`ErrorKind::Cancelled`]).
    pub fn is_cancelled(&self) -> bool {
        self.inner.kind == ErrorKind::Cancelled
    }

    /// The `LoopError` inside an [`io::Error`] made from one (with `?` or
    /// `From`), if `err` is such an error: how an `io::Result` future (a
    /// `sock_*` call, a stream read, `drain`) carries a delivered
    /// cancellation.
    ///
    /// ```
    /// use loop_futures::LoopError;
    /// let io: std::io::Error = LoopError::cancelled("stop").into();
    /// assert!(LoopError::of_io(&io).is_some_and(LoopError::is_cancelled));
    /// ```
    pub fn of_io(err: &io::Error) -> Option<&LoopError> {
        err.get_ref()?.downcast_ref::<LoopError>()
    }

    /// A handle that does not keep this error alive: whether some clone of
    /// it still exists somewhere ([`WeakLoopError::upgrade`]). This is how
    /// a task tells that its body propagated the cancellation delivered to
    /// it (see the `task` module).
    pub fn downgrade(&self) -> WeakLoopError {
        WeakLoopError(Arc::downgrade(&self.inner))
    }

    /// The same error in a new allocation, sharing no identity with `self`
    /// (so that the weak handles of one say nothing about the other).
    pub(crate) fn detached(&self) -> LoopError {
        LoopError {
            inner: Arc::new((*self.inner).clone()),
        }
    }
}

/// A [`LoopError`] that does not keep it alive ([`LoopError::downgrade`]).
#[derive(Clone, Debug)]
pub struct WeakLoopError(Weak<ErrorInner>);

impl WeakLoopError {
    /// The error, if a clone of it still exists.
    pub fn upgrade(&self) -> Option<LoopError> {
        self.0.upgrade().map(|inner| LoopError { inner })
    }

    /// Whether a clone of the error still exists.
    pub fn is_alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}

impl fmt::Debug for LoopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("LoopError");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for LoopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)
    }
}

impl std::error::Error for LoopError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| &**s as &(dyn std::error::Error + 'static))
    }
}

/// An OS error gives its errno back (`raw_os_error` works); any other error
/// becomes an `io::Error` whose inner error is the `LoopError` itself
/// ([`LoopError::of_io`] finds it): kind `InvalidInput` for
/// `InvalidArgument`, `TimedOut` for `Timeout`, `Other` for the rest, a
/// delivered cancellation included (not `Interrupted`, which I/O helpers
/// retry).
impl From<LoopError> for io::Error {
    fn from(err: LoopError) -> io::Error {
        let kind = match err.inner.kind {
            ErrorKind::InvalidArgument => io::ErrorKind::InvalidInput,
            ErrorKind::Timeout => io::ErrorKind::TimedOut,
            _ => io::ErrorKind::Other,
        };
        match err
            .inner
            .source
            .as_ref()
            .and_then(|s| s.downcast_ref::<io::Error>())
        {
            Some(os) if os.raw_os_error().is_some() => {
                io::Error::from_raw_os_error(os.raw_os_error().unwrap_or(0))
            }
            _ => io::Error::new(kind, err),
        }
    }
}

/// An I/O error as a loop error, so that one error type flows through `?` in
/// code that mixes loop calls and I/O.
///
/// The result is an [`ErrorKind::Io`] error with the `io::Error`'s text as its
/// message and the `io::Error` itself as its [`source`](std::error::Error::source)
/// (so [`io_error`](LoopError::io_error) gives back its kind and OS code). An
/// `io::Error` that was made from a `LoopError` (the reverse conversion) gives
/// back that `LoopError`, kind included.
///
/// ```
/// use loop_futures::{ErrorKind, LoopError};
/// fn read_config() -> Result<String, LoopError> {
///     Ok(std::fs::read_to_string("/definitely/not/here")?)
/// }
/// let err = read_config().unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Io);
/// assert_eq!(err.io_error().unwrap().kind(), std::io::ErrorKind::NotFound);
/// ```
impl From<io::Error> for LoopError {
    fn from(err: io::Error) -> LoopError {
        if let Some(inner) = err.get_ref().and_then(|e| e.downcast_ref::<LoopError>()) {
            return inner.clone();
        }
        LoopError::new(ErrorKind::Io, err.to_string()).with_source(err)
    }
}

/// A panic caught at a callback, task or executor-job boundary, kept as an
/// error value with its message.
///
/// The loop never lets a panic in user code unwind through itself: it catches
/// it, wraps the payload here, and reports it (through the exception handler
/// for callbacks, as the result for futures and executor jobs).
#[derive(Clone, PartialEq, Eq)]
pub struct PanicError {
    message: String,
    location: Option<String>,
}

impl PanicError {
    /// Turns a payload from [`std::panic::catch_unwind`] into an error. String
    /// payloads (what `panic!` makes) keep their text.
    ///
    /// The location comes from aioloop's panic hook (installed when a loop
    /// first runs), which records each panic of the thread: the record of
    /// the latest panic is taken when its message matches this payload's.
    pub fn from_payload(payload: Box<dyn Any + Send>) -> Self {
        let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "<non-string panic payload>".to_string()
        };
        let location = crate::panic_report::take_record(&message).and_then(|r| r.location);
        PanicError { message, location }
    }

    /// The panic message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where it panicked, `file:line:col` (`src/main.rs:12:9`), when
    /// aioloop's panic hook saw the panic (the hook is installed when a loop
    /// first runs; another hook installed later replaces it).
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }
}

impl fmt::Debug for PanicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(at) => write!(f, "PanicError({:?} at {at})", self.message),
            None => write!(f, "PanicError({:?})", self.message),
        }
    }
}

impl fmt::Display for PanicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "panic: {}", self.message)
    }
}

impl std::error::Error for PanicError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn panic_payloads_keep_their_text() {
        let caught = std::panic::catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
        let err = LoopError::panicked("callback", caught);
        assert_eq!(err.kind(), ErrorKind::Panicked);
        assert_eq!(err.panic().unwrap().message(), "boom 7");
        assert!(err.to_string().contains("boom 7"));
        assert!(err.source().is_some());
    }

    #[test]
    fn io_errors_keep_the_os_code() {
        let err = LoopError::io("add_reader(fd=-1)", io::Error::from_raw_os_error(9));
        assert_eq!(err.kind(), ErrorKind::Io);
        assert_eq!(err.io_error().unwrap().raw_os_error(), Some(9));
        let back: io::Error = err.into();
        assert_eq!(back.raw_os_error(), Some(9));
    }

    #[test]
    fn io_errors_convert_with_kind_and_source_kept() {
        let os = io::Error::from_raw_os_error(111);
        let text = os.to_string();
        let err = LoopError::from(os);
        assert_eq!(err.kind(), ErrorKind::Io);
        assert_eq!(err.to_string(), text);
        let source = err.source().unwrap().downcast_ref::<io::Error>().unwrap();
        assert_eq!(source.raw_os_error(), Some(111));
        assert_eq!(
            err.io_error().unwrap().kind(),
            io::ErrorKind::ConnectionRefused
        );

        // A LoopError that went through io::Error comes back with its kind.
        let cancelled: io::Error = LoopError::cancelled("stop").into();
        let back = LoopError::from(cancelled);
        assert_eq!(back.kind(), ErrorKind::Cancelled);
        assert_eq!(back.message(), "stop");
    }
}
