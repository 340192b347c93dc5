//! Protocols: the callbacks a user implements, as in asyncio, and the
//! [`ProtocolHandle`] through which a protocol is reached.
//!
//! # Delivery rules
//! - A protocol lives in a [`ProtocolCell`] that the transport and the user
//!   share through [`ProtocolHandle`]s. Its methods take `&mut self`. User
//!   code reaches it only through closures ([`ProtocolHandle::with`],
//!   [`ProtocolHandle::with_mut`]), which cannot be held across an
//!   `.await`: no borrow of a protocol lives between two callbacks.
//! - The transport calls it only from the loop: `connection_made` first,
//!   then `data_received`/`eof_received` (or `get_buffer`/`buffer_updated`),
//!   then `connection_lost` exactly once, always through `call_soon`.
//! - So a protocol is *in use* only while one of its own methods or a
//!   `with`/`with_mut` closure runs, and whatever a transport cannot deliver
//!   then (it was called from inside: a `write()` that owes `pause_writing`,
//!   a `resume_reading()` with input waiting) is deferred on the cell
//!   ([`ProtocolHandle::when_free`]) and runs, in order, right after that
//!   method or closure returns, before anything else. No protocol method is
//!   ever re-entered, nothing is retried on a timer, and no borrow of the
//!   protocol is held by the transport while another protocol's code runs.
//! - After each call into the protocol (a delivery or a `with_mut`), the
//!   tasks waiting in [`ProtocolHandle::wait_until`] are woken to look at its
//!   state again. With nobody waiting and nothing deferred this costs one
//!   check of a flag.
//!
//! The state machine is asyncio's:
//! `start -> connection_made [-> data_received]* [-> eof_received] -> connection_lost -> end`.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use loop_core::{EventLoop, ExceptionContext, LoopError, WaiterList};

use crate::lifecycle::{offer_made_with, Made};
use crate::transport::Transport;

/// What every protocol receives: the connection's start and end, and the
/// transport's flow-control signals (asyncio's `BaseProtocol`).
#[doc(alias = "asyncio.BaseProtocol")]
pub trait BaseProtocol: 'static {
    /// The connection is ready; keep `transport` to write to it.
    #[doc(alias = "BaseProtocol.connection_made")]
    fn connection_made(&mut self, transport: Transport) {
        let _ = transport;
    }

    /// The connection is closed: `None` after a normal close or EOF, the
    /// error otherwise. Called exactly once, after `connection_made`.
    #[doc(alias = "BaseProtocol.connection_lost")]
    fn connection_lost(&mut self, error: Option<io::Error>) {
        let _ = error;
    }

    /// The transport's write buffer went above its high-water mark: stop
    /// writing until [`resume_writing`](Self::resume_writing).
    #[doc(alias = "BaseProtocol.pause_writing")]
    fn pause_writing(&mut self) {}

    /// The write buffer drained to its low-water mark or below.
    #[doc(alias = "BaseProtocol.resume_writing")]
    fn resume_writing(&mut self) {}

    /// The protocol's type name, which the report of a panic in one of its
    /// methods names (`protocol: my_app::Echo`, and the error's
    /// `my_app::Echo.data_received() panicked at src/main.rs:12:9: ...`).
    /// The default, [`std::any::type_name`] of the implementing type, needs
    /// no override.
    fn protocol_type_name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

/// A streaming protocol: receives bytes as they arrive (asyncio's `Protocol`).
///
/// ```
/// use loop_net::{BaseProtocol, Protocol, Transport};
/// /// Echoes every byte back.
/// struct Echo(Option<Transport>);
/// impl BaseProtocol for Echo {
///     fn connection_made(&mut self, t: Transport) {
///         self.0 = Some(t);
///     }
/// }
/// impl Protocol for Echo {
///     fn data_received(&mut self, data: &[u8]) {
///         if let Some(t) = &self.0 {
///             let _ = t.write(data);
///         }
///     }
/// }
/// let _factory = || Echo(None);
/// ```
#[doc(alias = "asyncio.Protocol")]
pub trait Protocol: BaseProtocol {
    /// Some bytes arrived. The slice is the transport's read buffer, valid
    /// only during the call (no allocation per read). By default they are
    /// dropped (asyncio's `Protocol.data_received` does nothing), so a
    /// protocol that overrides nothing is valid.
    #[doc(alias = "Protocol.data_received")]
    fn data_received(&mut self, data: &[u8]) {
        let _ = data;
    }

    /// The peer closed its writing side. Return `true` to keep the
    /// connection half-open (you may still write), `false` (the default) to
    /// let the transport close.
    #[doc(alias = "Protocol.eof_received")]
    fn eof_received(&mut self) -> bool {
        false
    }
}

/// A streaming protocol that hands the transport its own buffer to read into
/// (asyncio's `BufferedProtocol`): no copy between the socket and the
/// protocol.
#[doc(alias = "asyncio.BufferedProtocol")]
pub trait BufferedProtocol: BaseProtocol {
    /// The buffer to read into next; `size_hint` is how much the transport
    /// would like (it reads at most the slice's length). An empty slice is an
    /// error that aborts the connection.
    #[doc(alias = "BufferedProtocol.get_buffer")]
    fn get_buffer(&mut self, size_hint: usize) -> &mut [u8];

    /// `n` bytes were written at the start of the last buffer (or, after
    /// [`get_vec_buffer`](Self::get_vec_buffer), appended to the vector).
    #[doc(alias = "BufferedProtocol.buffer_updated")]
    fn buffer_updated(&mut self, n: usize);

    /// Optional, instead of [`get_buffer`](Self::get_buffer): a growable
    /// buffer of the protocol's own that the transport appends its next
    /// read to without zeroing it first (asyncio has no counterpart: a
    /// Python buffer is always initialised). The transport reserves room
    /// for `size_hint` more bytes, reads into the vector's spare capacity,
    /// grows its length by what it read, and then always calls
    /// [`buffer_updated`](Self::buffer_updated) with that count: 0 when
    /// nothing was read (the fd was not ready, an error, or the end of
    /// file, which `eof_received` follows). `None`, the default: the
    /// transport asks [`get_buffer`](Self::get_buffer).
    ///
    /// Read pipes (`connect_read_pipe`, a child's stdout and stderr) honour
    /// it; the other transports always use `get_buffer`.
    fn get_vec_buffer(&mut self, size_hint: usize) -> Option<&mut Vec<u8>> {
        let _ = size_hint;
        None
    }

    /// As [`Protocol::eof_received`].
    #[doc(alias = "BufferedProtocol.eof_received")]
    fn eof_received(&mut self) -> bool {
        false
    }
}

/// Where a protocol lives: the protocol itself, the work deferred until it
/// is free, and the tasks waiting on its state. Shared by the transport and
/// the user's [`ProtocolHandle`]s; it has no public methods of its own (the
/// handle is the way in), so no borrow of it can be kept.
pub struct ProtocolCell<P: ?Sized> {
    hooks: Hooks,
    /// The protocol's type, for the exception handler's `protocol` key.
    type_name: &'static str,
    value: RefCell<P>,
}

/// What waits for a protocol: see [`ProtocolCell`].
#[derive(Default)]
struct Hooks {
    /// Something is deferred or waiting: the one check after each call.
    armed: Cell<bool>,
    /// The deferred work is being run (a call it makes does not run it again).
    running: Cell<bool>,
    /// The protocol was called mutably since the waiters were last woken.
    changed: Cell<bool>,
    /// Work deferred while the protocol was in use, in order.
    deferred: RefCell<VecDeque<Box<dyn FnOnce()>>>,
    /// Tasks in [`ProtocolHandle::wait_until`].
    waiters: WaiterList,
}

impl<P> ProtocolCell<P> {
    /// A cell holding `protocol`.
    pub(crate) fn new(protocol: P) -> Self {
        ProtocolCell {
            hooks: Hooks::default(),
            type_name: std::any::type_name::<P>(),
            value: RefCell::new(protocol),
        }
    }
}

impl<P: ?Sized> ProtocolCell<P> {
    /// The protocol's type name (what an exception-handler context gives as
    /// `protocol`, where asyncio gives the protocol object).
    pub(crate) fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// Whether the protocol is in use (one of its methods or a
    /// `with`/`with_mut` closure runs).
    pub(crate) fn in_use(&self) -> bool {
        self.value.try_borrow_mut().is_err()
    }

    /// Calls `f` on the protocol, or returns `None` (without calling it)
    /// when the protocol is in use. A panic in `f` propagates, after the
    /// borrow was released and the deferred work ran. Afterwards, the
    /// deferred work runs and the waiters are woken.
    pub(crate) fn try_call<R>(&self, f: impl FnOnce(&mut P) -> R) -> Option<R> {
        let mut guard = self.value.try_borrow_mut().ok()?;
        let result = catch_unwind(AssertUnwindSafe(|| f(&mut guard)));
        drop(guard);
        self.released(true);
        match result {
            Ok(r) => Some(r),
            Err(payload) => resume_unwind(payload),
        }
    }

    /// Reads the protocol without running deferred work or waking waiters
    /// (`None` while it is in use): for reports made while unwinding.
    pub(crate) fn peek<R>(&self, f: impl FnOnce(&P) -> R) -> Option<R> {
        self.value.try_borrow().ok().map(|p| f(&p))
    }

    /// As [`try_call`](Self::try_call) with a shared borrow; the waiters are
    /// not woken (nothing changed).
    fn try_look<R>(&self, f: impl FnOnce(&P) -> R) -> Option<R> {
        let guard = self.value.try_borrow().ok()?;
        let result = catch_unwind(AssertUnwindSafe(|| f(&guard)));
        drop(guard);
        self.released(false);
        match result {
            Ok(r) => Some(r),
            Err(payload) => resume_unwind(payload),
        }
    }

    /// Runs `f` once the protocol is free: now if it is, else right after
    /// the method or closure that uses it returns (in the order deferred).
    pub(crate) fn when_free(&self, f: impl FnOnce() + 'static) {
        self.hooks.deferred.borrow_mut().push_back(Box::new(f));
        self.hooks.armed.set(true);
        // Free: now, after what was deferred before it.
        self.released(false);
    }

    /// A borrow ended: run what was deferred (if the protocol is free now:
    /// an outer borrow runs it when it ends) and, after a change, wake the
    /// waiters.
    fn released(&self, changed: bool) {
        if !self.hooks.armed.get() {
            return;
        }
        if changed {
            self.hooks.changed.set(true);
        }
        if self.hooks.running.get() || self.in_use() {
            return;
        }
        self.hooks.running.set(true);
        let _reset = ResetOnDrop(&self.hooks.running);
        loop {
            if self.in_use() {
                // A deferred call is still running up the stack: it runs
                // the rest when it returns.
                return;
            }
            let next = self.hooks.deferred.borrow_mut().pop_front();
            match next {
                Some(f) => f(),
                None => break,
            }
        }
        // Also a mutable call made by the deferred work.
        let waiters = if self.hooks.changed.replace(false) {
            self.hooks.waiters.take()
        } else {
            WaiterList::new()
        };
        // Waiters kept (after a look, nothing changed) keep it armed.
        let kept = !self.hooks.waiters.is_empty();
        self.hooks.armed.set(kept);
        drop(_reset);
        waiters.wake_all();
    }

    /// Registers `waker` to be woken after the next call into the protocol.
    fn add_waiter(&self, waker: &Waker) {
        self.hooks.waiters.register(waker);
        self.hooks.armed.set(true);
    }
}

/// Clears a flag when dropped (also on unwinding).
struct ResetOnDrop<'a>(&'a Cell<bool>);

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl<P: ?Sized> fmt::Debug for ProtocolCell<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtocolCell")
            .field("in_use", &self.in_use())
            .finish_non_exhaustive()
    }
}

/// The user's handle on a protocol that a transport drives: shared with the
/// transport, reached through closures.
///
/// A protocol can be looked at ([`with`](Self::with)), changed
/// ([`with_mut`](Self::with_mut)) and waited on
/// ([`wait_until`](Self::wait_until)), never borrowed: a closure cannot be
/// held across an `.await`, so the transport always finds its protocol free
/// between callbacks.
///
/// ```
/// use loop_net::{BaseProtocol, Protocol, ProtocolHandle};
/// #[derive(Default)]
/// struct Count(usize);
/// impl BaseProtocol for Count {}
/// impl Protocol for Count {
///     fn data_received(&mut self, data: &[u8]) {
///         self.0 += data.len();
///     }
/// }
/// let handle = ProtocolHandle::new(Count::default());
/// handle.with_mut(|p| p.data_received(b"abc"));
/// assert_eq!(handle.with(|p| p.0), 3);
/// ```
pub struct ProtocolHandle<P: ?Sized> {
    pub(crate) cell: Rc<ProtocolCell<P>>,
}

impl<P: ?Sized> Clone for ProtocolHandle<P> {
    fn clone(&self) -> Self {
        ProtocolHandle {
            cell: self.cell.clone(),
        }
    }
}

impl<P> ProtocolHandle<P> {
    /// Wraps a protocol.
    pub fn new(protocol: P) -> Self {
        ProtocolHandle {
            cell: Rc::new(ProtocolCell::new(protocol)),
        }
    }
}

impl<P: ?Sized> ProtocolHandle<P> {
    /// Wraps a cell that is already shared: for crates that drive protocols
    /// of kinds of their own (loop-process turns a `ProtocolHandle<P>` into
    /// a `ProtocolHandle<dyn SubprocessProtocol>` through
    /// [`cell`](Self::cell) and this).
    pub fn from_cell(cell: Rc<ProtocolCell<P>>) -> Self {
        ProtocolHandle { cell }
    }

    /// The shared cell the transport drives (see [`from_cell`](Self::from_cell)).
    pub fn cell(&self) -> &Rc<ProtocolCell<P>> {
        &self.cell
    }

    /// Calls `f` with the protocol and returns what it returns.
    ///
    /// What a transport could not deliver while `f` ran (because `f` called
    /// into it) is delivered right after `f` returns.
    ///
    /// # Panics
    /// If the protocol is in use by a `with_mut` closure or one of its own
    /// methods, that is, when called from inside one of them (a protocol
    /// reaches its own state through `self`).
    pub fn with<R>(&self, f: impl FnOnce(&P) -> R) -> R {
        match self.cell.try_look(f) {
            Some(r) => r,
            None => in_use_panic("with"),
        }
    }

    /// Calls `f` with the protocol, mutably, and returns what it returns.
    ///
    /// `f` may call the protocol's transport: what the transport owes the
    /// protocol meanwhile (`pause_writing` after a `write`, data after a
    /// `resume_reading`) is delivered right after `f` returns, in order.
    /// Then the tasks in [`wait_until`](Self::wait_until) look again.
    ///
    /// # Panics
    /// If the protocol is in use: when called from inside one of its own
    /// methods or another `with`/`with_mut` closure on it.
    pub fn with_mut<R>(&self, f: impl FnOnce(&mut P) -> R) -> R {
        match self.cell.try_call(f) {
            Some(r) => r,
            None => in_use_panic("with_mut"),
        }
    }

    /// As [`with_mut`](Self::with_mut), but `None` (and `f` is not called)
    /// when the protocol is in use: for code that may run from inside one
    /// of its methods, as crates that drive protocols of their own kinds.
    pub fn try_with_mut<R>(&self, f: impl FnOnce(&mut P) -> R) -> Option<R> {
        self.cell.try_call(f)
    }

    /// Whether the protocol is in use: one of its methods or a
    /// `with`/`with_mut` closure on it is running (so `with` and `with_mut`
    /// would panic, and `try_with_mut` gives `None`).
    pub fn is_in_use(&self) -> bool {
        self.cell.in_use()
    }

    /// Runs `f` once the protocol is free: at once if it is, else right
    /// after the method or closure that uses it returns, in the order of the
    /// calls (what a transport does with a delivery it cannot make now).
    pub fn when_free(&self, f: impl FnOnce() + 'static) {
        self.cell.when_free(f)
    }

    /// Waits until `condition` holds for the protocol, and returns what it
    /// gave: `condition` returns a `bool` (the future then gives `()`) or an
    /// `Option<T>` (the future gives the `T`).
    ///
    /// The condition is checked when the future is first polled and again
    /// after each call into the protocol (every delivery by its transport,
    /// every [`with_mut`](Self::with_mut)), never on a timer: a task waiting
    /// here costs nothing while the protocol is not called. It never
    /// resolves if the condition never holds (after `connection_lost`, the
    /// protocol is no longer called): wait for a state that
    /// `connection_lost` sets, or add a timeout.
    ///
    /// ```
    /// # use loop_net::{BaseProtocol, Protocol, ProtocolHandle};
    /// # #[derive(Default)]
    /// # struct Lines { lines: Vec<String>, done: bool }
    /// # impl BaseProtocol for Lines {}
    /// # impl Protocol for Lines { fn data_received(&mut self, _: &[u8]) {} }
    /// /// The first line, or `None` if the connection ends without one.
    /// async fn first_line(handle: &ProtocolHandle<Lines>) -> Option<String> {
    ///     handle
    ///         .wait_until(|p: &Lines| match p.lines.first() {
    ///             Some(line) => Some(Some(line.clone())),
    ///             None if p.done => Some(None),
    ///             None => None,
    ///         })
    ///         .await
    /// }
    ///
    /// /// Waits for the end (a `bool` condition: the wait gives `()`).
    /// async fn finished(handle: &ProtocolHandle<Lines>) {
    ///     handle.wait_until(|p: &Lines| p.done).await
    /// }
    /// # let _ = (first_line, finished);
    /// ```
    #[doc(alias = "asyncio.Condition.wait_for")]
    pub fn wait_until<F, C>(&self, condition: F) -> WaitUntil<P, F>
    where
        F: FnMut(&P) -> C,
        C: Condition,
    {
        WaitUntil {
            cell: self.cell.clone(),
            condition,
        }
    }

    /// Whether two handles share one protocol.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.cell, &other.cell)
    }
}

fn in_use_panic(what: &str) -> ! {
    panic!(
        "ProtocolHandle::{what}: the protocol is in use (called from inside one of its own \
         methods or another with/with_mut closure on it)"
    )
}

impl<P: ?Sized> fmt::Debug for ProtocolHandle<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProtocolHandle")
    }
}

/// What a [`ProtocolHandle::wait_until`] condition returns: `bool` (holds or
/// not; the wait gives `()`) or `Option<T>` (`Some` holds; the wait gives
/// the `T`).
pub trait Condition {
    /// What the wait resolves to.
    type Output;

    /// `Some` when the condition holds.
    fn check(self) -> Option<Self::Output>;
}

impl Condition for bool {
    type Output = ();

    fn check(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Condition for Option<T> {
    type Output = T;

    fn check(self) -> Option<T> {
        self
    }
}

/// The future of [`ProtocolHandle::wait_until`].
#[must_use = "futures do nothing unless polled"]
pub struct WaitUntil<P: ?Sized, F> {
    cell: Rc<ProtocolCell<P>>,
    condition: F,
}

impl<P: ?Sized, F> fmt::Debug for WaitUntil<P, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WaitUntil")
    }
}

impl<P: ?Sized, F> Unpin for WaitUntil<P, F> {}

impl<P: ?Sized, F, C> Future for WaitUntil<P, F>
where
    F: FnMut(&P) -> C,
    C: Condition,
{
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = self.get_mut();
        let condition = &mut this.condition;
        // In use (polled from inside a protocol method): its end wakes us.
        if let Some(Some(out)) = this.cell.try_look(|p| condition(p).check()) {
            return Poll::Ready(out);
        }
        this.cell.add_waiter(cx.waker());
        Poll::Pending
    }
}

/// The protocol a transport drives, type-erased.
#[derive(Clone)]
pub enum AnyProtocol {
    /// A [`Protocol`].
    Streaming(Rc<ProtocolCell<dyn Protocol>>),
    /// A [`BufferedProtocol`].
    Buffered(Rc<ProtocolCell<dyn BufferedProtocol>>),
}

impl fmt::Debug for AnyProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnyProtocol::Streaming(_) => f.write_str("AnyProtocol::Streaming"),
            AnyProtocol::Buffered(_) => f.write_str("AnyProtocol::Buffered"),
        }
    }
}

impl<P: Protocol> From<ProtocolHandle<P>> for AnyProtocol {
    fn from(h: ProtocolHandle<P>) -> Self {
        AnyProtocol::Streaming(h.cell)
    }
}

impl AnyProtocol {
    /// Wraps a buffered protocol (a `From` impl would overlap with the
    /// streaming one).
    pub fn buffered<P: BufferedProtocol>(h: ProtocolHandle<P>) -> Self {
        AnyProtocol::Buffered(h.cell)
    }

    /// Whether two values drive the same protocol.
    pub fn ptr_eq(&self, other: &AnyProtocol) -> bool {
        match (self, other) {
            (AnyProtocol::Streaming(a), AnyProtocol::Streaming(b)) => Rc::ptr_eq(a, b),
            (AnyProtocol::Buffered(a), AnyProtocol::Buffered(b)) => Rc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// The protocol's type name ([`BaseProtocol::protocol_type_name`]), for
    /// reports; the name its cell recorded while the protocol is in use.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            AnyProtocol::Streaming(p) => {
                p.peek(|p| p.protocol_type_name()).unwrap_or(p.type_name())
            }
            AnyProtocol::Buffered(p) => p.peek(|p| p.protocol_type_name()).unwrap_or(p.type_name()),
        }
    }

    /// Runs `f` on the protocol as a [`BaseProtocol`], unless it is in use
    /// (`None`, and `f` is not called): see [`ProtocolCell`].
    pub(crate) fn try_base<R>(&self, f: impl FnOnce(&mut dyn BaseProtocol) -> R) -> Option<R> {
        match self {
            AnyProtocol::Streaming(p) => p.try_call(|p| f(upcast_streaming(p))),
            AnyProtocol::Buffered(p) => p.try_call(|p| f(upcast_buffered(p))),
        }
    }

    /// Calls `eof_received`, unless the protocol is in use (`None`).
    pub(crate) fn try_eof_received(&self) -> Option<bool> {
        match self {
            AnyProtocol::Streaming(p) => p.try_call(|p| p.eof_received()),
            AnyProtocol::Buffered(p) => p.try_call(|p| p.eof_received()),
        }
    }

    /// Whether the protocol is in use (one of its methods or a
    /// `with`/`with_mut` closure on it runs).
    pub(crate) fn in_use(&self) -> bool {
        match self {
            AnyProtocol::Streaming(p) => p.in_use(),
            AnyProtocol::Buffered(p) => p.in_use(),
        }
    }

    /// Runs `f` once the protocol is free ([`ProtocolHandle::when_free`]):
    /// how a transport delivers what it could not deliver from inside one
    /// of the protocol's methods.
    pub(crate) fn when_free(&self, f: impl FnOnce() + 'static) {
        match self {
            AnyProtocol::Streaming(p) => p.when_free(f),
            AnyProtocol::Buffered(p) => p.when_free(f),
        }
    }
}

impl crate::lifecycle::LifeProtocol for AnyProtocol {
    type Handle = Transport;

    fn in_use(&self) -> bool {
        AnyProtocol::in_use(self)
    }

    fn when_free(&self, f: impl FnOnce() + 'static) {
        AnyProtocol::when_free(self, f)
    }

    /// Calls `connection_made(transport)`, catching a panic; a protocol in
    /// use is not called (every stream-like transport's first delivery).
    fn offer_made(&self, transport: Transport) -> Made<Transport> {
        offer_made_with(transport, |arg| {
            self.try_base(|p| {
                if let Some(t) = arg.take() {
                    p.connection_made(t)
                }
            })
        })
    }
}

/// Reports that the protocol callback `what` panicked (asyncio's "Fatal
/// error: protocol.{what}() call failed.", with `transport` and the
/// protocol's type as context; the error names the type and where it
/// panicked) and returns the error the transport closes with.
pub(crate) fn report_protocol_panic(
    lp: &EventLoop,
    what: &str,
    payload: Box<dyn Any + Send>,
    transport: String,
    protocol: &AnyProtocol,
) -> io::Error {
    let name = protocol.type_name();
    let err = LoopError::panicked(format!("{name}.{what}()"), payload);
    lp.call_exception_handler(
        ExceptionContext::new(format!("Fatal error: protocol.{what}() call failed."))
            .with_error(err.clone())
            .with("transport", transport)
            .with("protocol", name),
    );
    io::Error::other(err.to_string())
}

/// Reports a `connection_made` that panicked, as asyncio reports a
/// callback that raised ("Exception in callback ..."): not fatal, the
/// transport goes on (asyncio calls `connection_made` through `call_soon`).
pub(crate) fn report_made_panic(
    lp: &EventLoop,
    payload: Box<dyn Any + Send>,
    transport: String,
    protocol: &AnyProtocol,
) {
    let name = protocol.type_name();
    let err = LoopError::panicked(format!("{name}.connection_made()"), payload);
    lp.call_exception_handler(
        ExceptionContext::new(format!("Exception in callback {name}.connection_made()"))
            .with_error(err)
            .with("transport", transport)
            .with("protocol", name),
    );
}

impl AnyProtocol {
    /// Calls `connection_lost(error)`, catching a panic and reporting it to
    /// the exception handler (with `transport` as context). When the
    /// protocol is in use (this was reached from inside one of its
    /// methods), the error is handed back, to be delivered when it is free.
    pub(crate) fn deliver_connection_lost(
        &self,
        lp: &EventLoop,
        error: Option<io::Error>,
        transport: &str,
    ) -> Result<(), Option<io::Error>> {
        let mut error = Some(error);
        let called = catch_unwind(AssertUnwindSafe(|| {
            self.try_base(|p| p.connection_lost(error.take().flatten()))
        }));
        match called {
            Ok(Some(())) => Ok(()),
            Ok(None) => Err(error.take().flatten()),
            Err(payload) => {
                let name = self.type_name();
                lp.call_exception_handler(
                    ExceptionContext::new("protocol.connection_lost() failed")
                        .with_error(LoopError::panicked(
                            format!("{name}.connection_lost()"),
                            payload,
                        ))
                        .with("transport", transport)
                        .with("protocol", name),
                );
                Ok(())
            }
        }
    }
}

impl AnyProtocol {
    /// What a lost transport holds instead of its protocol (asyncio sets
    /// `_protocol = None`): one with nothing to call, so that a protocol
    /// that keeps its `Transport` is no `Rc` cycle.
    pub(crate) fn released() -> AnyProtocol {
        AnyProtocol::Streaming(Rc::new(ProtocolCell::new(Released)))
    }
}

impl crate::lifecycle::Released for AnyProtocol {
    fn released() -> AnyProtocol {
        AnyProtocol::released()
    }
}

/// What a lost transport holds instead of its protocol: nothing to call.
struct Released;

impl BaseProtocol for Released {}

impl Protocol for Released {
    fn data_received(&mut self, _: &[u8]) {}
}

fn upcast_streaming(p: &mut dyn Protocol) -> &mut dyn BaseProtocol {
    p
}

fn upcast_buffered(p: &mut dyn BufferedProtocol) -> &mut dyn BaseProtocol {
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn work_deferred_while_in_use_runs_in_order_right_after_the_borrow_ends() {
        let h = ProtocolHandle::new(Vec::<&'static str>::new());
        let log = Rc::new(RefCell::new(Vec::new()));
        let (l1, l2) = (log.clone(), log.clone());
        let inner = h.clone();
        h.with_mut(|v| {
            v.push("closure");
            inner.when_free(move || l1.borrow_mut().push("first"));
            let (l3, again) = (l2.clone(), inner.clone());
            inner.when_free(move || {
                l2.borrow_mut().push("second");
                // Deferred from deferred work: after the rest, still in order.
                again.when_free(move || l3.borrow_mut().push("third"));
                again.with_mut(|v| v.push("second's call"));
            });
            assert!(log.borrow().is_empty(), "ran while in use");
        });
        assert_eq!(*log.borrow(), ["first", "second", "third"]);
        assert_eq!(h.with(|v| v.clone()), ["closure", "second's call"]);
        // Free: at once.
        let l = log.clone();
        h.when_free(move || l.borrow_mut().push("now"));
        assert_eq!(log.borrow().last(), Some(&"now"));
    }

    #[test]
    fn a_panic_in_with_mut_propagates_after_the_deferred_work_ran() {
        let h = ProtocolHandle::new(0u32);
        let ran = Rc::new(Cell::new(false));
        let (r, inner) = (ran.clone(), h.clone());
        let caught = catch_unwind(AssertUnwindSafe(|| {
            h.with_mut(|_| {
                inner.when_free(move || r.set(true));
                panic!("user code");
            })
        }));
        assert!(caught.is_err());
        assert!(ran.get());
        assert_eq!(h.with_mut(|n| std::mem::replace(n, 1)), 0, "still usable");
    }

    #[test]
    fn waiters_are_woken_after_a_change_and_not_after_a_look() {
        let h = ProtocolHandle::new(0u32);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut wait = h.wait_until(|n: &u32| (*n >= 2).then_some(*n * 10));
        assert!(Pin::new(&mut wait).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut wait).poll(&mut cx).is_pending());
        h.with(|_| ());
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "woken by a look");
        h.with_mut(|n| *n += 1);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "one waker, registered once"
        );
        assert!(Pin::new(&mut wait).poll(&mut cx).is_pending());
        h.with_mut(|n| *n += 1);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert_eq!(Pin::new(&mut wait).poll(&mut cx), Poll::Ready(20));
        // Nobody waits: nothing to wake, nothing armed.
        h.with_mut(|n| *n += 1);
        assert!(!h.cell.hooks.armed.get());
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_change_made_by_deferred_work_after_a_look_wakes_the_waiters() {
        let h = ProtocolHandle::new(0u32);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut wait = h.wait_until(|n: &u32| *n == 1);
        assert!(Pin::new(&mut wait).poll(&mut cx).is_pending());
        let inner = h.clone();
        h.with(|_| {
            // As a transport would: deliver once the look is over.
            let again = inner.clone();
            inner.when_free(move || again.with_mut(|n| *n = 1));
        });
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "not woken after the change"
        );
        assert!(Pin::new(&mut wait).poll(&mut cx).is_ready());
    }

    #[test]
    #[should_panic(expected = "the protocol is in use")]
    fn with_inside_with_mut_on_the_same_protocol_is_a_clear_panic() {
        let h = ProtocolHandle::new(0u32);
        let inner = h.clone();
        h.with_mut(|_| inner.with(|n| *n));
    }
}
