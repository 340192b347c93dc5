//! [`Lifecycle`]: the one lifecycle every transport kind keeps (stream,
//! TLS, datagram, pipe here; subprocess in loop-process), so that a fix to
//! it lands once.
//!
//! # Invariants
//! - **States.** `Open -> Closing -> Lost`, one way only. `close()` moves
//!   to `Closing` (what is buffered is still sent), `abort()` and fatal
//!   errors too (the buffer is dropped); `Lost` is reached only when
//!   `connection_lost` has run (or could never run: the loop closed, the
//!   waiting future was dropped before `connection_made`). A kind may have
//!   states of its own around these (TLS: `Handshaking`, `ShuttingDown`).
//! - **`connection_made` first.** It is delivered through `call_soon`, before
//!   anything else reaches the protocol; a `close`/`abort` before it only
//!   schedules `connection_lost` after it. If the protocol is in use when
//!   it is due (shared with another transport, the offer came from inside
//!   one of its methods), it is delivered right after that method returns
//!   ([`ProtocolHandle::when_free`](crate::ProtocolHandle::when_free)), never retried
//!   on a timer. Tasks waiting for it ([`Lifecycle::poll_made`]) are woken
//!   when it ran or the transport is lost.
//! - **`connection_lost` exactly once, through `call_soon`.** Whichever path
//!   comes first claims it ([`Lifecycle::claim_lost`]); nothing schedules
//!   it twice and nothing delivers it synchronously from `close()`. It
//!   waits for a protocol in use as `connection_made` does, and is
//!   delivered only if `connection_made` was.
//! - **Release.** When it has run ([`Lifecycle::finish`]), the transport
//!   closes what it owns and gives up its fd's claim (loop-core's
//!   `claim_fd`: the number is anyone's again), then lets go of its
//!   protocol (a protocol that
//!   keeps its transport would otherwise be an `Rc` cycle leaked with every
//!   connection; asyncio sets `_protocol = None`) and of its loop (asyncio
//!   sets `_loop = None`: a transport kept after this does not keep the
//!   loop alive). The protocol is dropped outside any borrow of the
//!   transport's state, since its `Drop` is user code.
//!
//! The loop-net kinds drive these steps through the crate's
//! `LifecycleOwner` trait and its `schedule_made`, `schedule_lost` and
//! `finish_lost` functions; the subprocess transport (loop-process), whose
//! calls go through a queue of their own, uses [`Lifecycle`]'s methods
//! directly.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::task::{Context, Poll};

use loop_core::{EventLoop, WaiterList};

use crate::loop_slot::LoopSlot;

/// Where a transport is in its lifecycle (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LifeState {
    /// Usable: writes are taken, reads delivered.
    Open,
    /// `close`, `abort` or a fatal error: `connection_lost` is due.
    Closing,
    /// `connection_lost` has run (or never will): everything is released.
    Lost,
}

/// What a lifecycle holds in place of its protocol once it let go of it.
pub trait Released {
    /// An inert protocol, or none.
    fn released() -> Self;
}

impl<T> Released for Option<T> {
    fn released() -> Self {
        None
    }
}

/// The state, the protocol and the loop of one transport, and the rules of
/// the module docs.
pub struct Lifecycle<P> {
    /// Released once `connection_lost` has run (loop_slot.rs).
    lp: LoopSlot,
    state: Cell<LifeState>,
    lost_claimed: Cell<bool>,
    made: Cell<bool>,
    made_waiters: WaiterList,
    protocol: RefCell<P>,
}

impl<P: Clone + Released> Lifecycle<P> {
    /// An `Open` transport of `lp` driving `protocol`, owning no single
    /// fd of its own (the subprocess transport: its pipes are transports).
    pub fn new(lp: &EventLoop, protocol: P) -> Lifecycle<P> {
        Lifecycle::with_slot(LoopSlot::new(lp), protocol)
    }

    /// An `Open` transport of `lp` driving `protocol` that owns `fd`: the
    /// fd is claimed (loop-core's `claim_fd`), so the user's `add_reader`
    /// and friends on it are refused, naming `transport <{kind} fd=N>`,
    /// until the transport is released.
    pub(crate) fn owning(lp: &EventLoop, protocol: P, fd: RawFd, kind: &str) -> Lifecycle<P> {
        Lifecycle::with_slot(LoopSlot::owning(lp, fd, kind), protocol)
    }

    fn with_slot(lp: LoopSlot, protocol: P) -> Lifecycle<P> {
        Lifecycle {
            lp,
            state: Cell::new(LifeState::Open),
            lost_claimed: Cell::new(false),
            made: Cell::new(false),
            made_waiters: WaiterList::new(),
            protocol: RefCell::new(protocol),
        }
    }

    /// The loop's slot, for registrations (crate-internal).
    pub(crate) fn lp(&self) -> &LoopSlot {
        &self.lp
    }

    /// The loop, until the transport let go of it after `connection_lost`.
    pub fn get_loop(&self) -> Option<EventLoop> {
        self.lp.get()
    }

    /// The current state.
    pub fn state(&self) -> LifeState {
        self.state.get()
    }

    /// `Open -> Closing`; false (and nothing changes) if it was not open.
    pub fn begin_closing(&self) -> bool {
        if self.state.get() != LifeState::Open {
            return false;
        }
        self.state.set(LifeState::Closing);
        true
    }

    /// `Closing` unless already `Lost` (a forced close).
    pub fn force_closing(&self) {
        if self.state.get() != LifeState::Lost {
            self.state.set(LifeState::Closing);
        }
    }

    /// A clone of the protocol (an `Rc`): take it out before calling it.
    pub fn protocol(&self) -> P {
        self.protocol.borrow().clone()
    }

    /// Replaces the protocol (`set_protocol`), returning the old one for
    /// the caller to drop after the borrow ended.
    pub fn replace_protocol(&self, protocol: P) -> P {
        self.protocol.replace(protocol)
    }

    /// Whether `connection_made` was delivered.
    pub fn is_made(&self) -> bool {
        self.made.get()
    }

    /// `connection_made` was delivered (or panicked): wakes its waiters.
    pub fn set_made(&self) {
        self.made.set(true);
        self.made_waiters.wake_all();
    }

    /// Ready once `connection_made` ran or the transport is lost (what
    /// `create_connection` and friends wait for).
    pub fn poll_made(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.made.get() || self.state.get() == LifeState::Lost {
            return Poll::Ready(());
        }
        self.made_waiters.register(cx.waker());
        Poll::Pending
    }

    /// Claims the one scheduling of `connection_lost`: true the first time
    /// only.
    pub fn claim_lost(&self) -> bool {
        !self.lost_claimed.replace(true)
    }

    /// Whether `connection_lost` is scheduled (or the transport is lost).
    pub fn lost_claimed(&self) -> bool {
        self.lost_claimed.get()
    }

    /// The transport handed what it owns to another (`start_tls`): `Lost`
    /// without `connection_lost` (its successor delivers it), the protocol
    /// swapped out and returned for the caller to drop. The loop is kept:
    /// the old handle forwards to its successor.
    #[cfg(feature = "tls")]
    pub(crate) fn hand_over(&self) -> P {
        self.state.set(LifeState::Lost);
        self.lost_claimed.set(true);
        self.protocol.replace(P::released())
    }

    /// The end: `Lost`, the waiters woken, `close` run (unregister and
    /// close what the transport owns), the protocol swapped for its
    /// released form, `hook` run, the old protocol dropped, the loop let
    /// go. Idempotent but for `close` and `hook`, which run each time.
    pub fn finish(&self, close: impl FnOnce(), hook: impl FnOnce()) {
        self.state.set(LifeState::Lost);
        self.lost_claimed.set(true);
        self.made_waiters.wake_all();
        close();
        // The fd is closed: its number is free for anyone, user code that
        // runs below included (the protocol's `Drop`, the hook).
        self.lp.release_claim();
        let released = self.protocol.replace(P::released());
        hook();
        drop(released);
        self.lp.release();
    }
}

impl<P> fmt::Debug for Lifecycle<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lifecycle")
            .field("state", &self.state.get())
            .field("made", &self.made.get())
            .field("lost_claimed", &self.lost_claimed.get())
            .finish_non_exhaustive()
    }
}

/// What came of offering `connection_made` to a protocol.
pub(crate) enum Made<H> {
    /// It was called and returned.
    Called,
    /// The protocol is in use (the offer came from inside one of its
    /// methods): it was not called, and the handle is given back to be
    /// offered again when it is free.
    Busy(H),
    /// It panicked: the payload, for the transport to report before it
    /// closes.
    Panicked(Box<dyn Any + Send>),
}

/// Offers `connection_made` through `try_call`, which is given the handle
/// (in an `Option` it takes it from) and returns `None` without calling
/// the protocol when it is in use; a panic is caught.
pub(crate) fn offer_made_with<H>(
    handle: H,
    try_call: impl FnOnce(&mut Option<H>) -> Option<()>,
) -> Made<H> {
    let mut arg = Some(handle);
    let called = catch_unwind(AssertUnwindSafe(|| try_call(&mut arg)));
    match called {
        Ok(Some(())) => Made::Called,
        Ok(None) => Made::Busy(arg.take().expect("connection_made was not called")),
        Err(payload) => Made::Panicked(payload),
    }
}

/// A protocol slot the loop-net transports deliver to.
pub(crate) trait LifeProtocol: Clone + Released + 'static {
    /// The transport handle `connection_made` gets.
    type Handle: 'static;
    /// Whether one of its methods (or a `with`/`with_mut` closure) runs.
    fn in_use(&self) -> bool;
    /// Runs `f` right after the protocol is free (now if it is).
    fn when_free(&self, f: impl FnOnce() + 'static);
    /// Offers `connection_made(handle)`.
    fn offer_made(&self, handle: Self::Handle) -> Made<Self::Handle>;
}

/// A loop-net transport kind, as the shared steps see it.
pub(crate) trait LifecycleOwner: Sized + 'static {
    type Protocol: LifeProtocol;
    fn life(&self) -> &Lifecycle<Self::Protocol>;
    /// `connection_made` was delivered (or panicked): before anything else
    /// (TLS marks its waiter ready here).
    fn made_delivered(&self) {}
    /// `connection_made` returned: start the transport's I/O.
    fn after_made(self: &Rc<Self>);
    /// A protocol method panicked: report it and close with an error.
    fn protocol_failed(self: &Rc<Self>, what: &str, payload: Box<dyn Any + Send>);
    /// `connection_made` panicked. By default that is fatal
    /// ([`protocol_failed`](Self::protocol_failed)); a kind that keeps
    /// asyncio's socket-transport behaviour (the panic reported as a loop
    /// callback's, the transport going on) reports it and returns `true`,
    /// and its I/O starts as after a normal return.
    fn made_panicked(self: &Rc<Self>, payload: Box<dyn Any + Send>) -> bool {
        self.protocol_failed("connection_made", payload);
        false
    }
    /// `connection_lost` was just scheduled.
    fn lost_scheduled(self: &Rc<Self>) {}
    /// Whether the protocol is owed `connection_lost`.
    fn owes_lost(&self) -> bool {
        self.life().is_made()
    }
    /// Calls `connection_lost` (and whatever the protocol is owed first).
    fn deliver_lost(self: &Rc<Self>, protocol: &Self::Protocol, error: Option<io::Error>);
    /// Unregisters and closes what the transport owns.
    fn close_resources(&self);
    /// Runs after the protocol was swapped out, before it is dropped (a
    /// server's count of its connections).
    fn lost_hook(&self) {}
}

/// Schedules the delivery of `connection_made(handle)` (through the loop),
/// after which the transport's I/O starts.
pub(crate) fn schedule_made<T: LifecycleOwner>(
    me: &Rc<T>,
    handle: <T::Protocol as LifeProtocol>::Handle,
) -> Result<(), loop_core::LoopError> {
    let m = me.clone();
    me.life()
        .lp()
        .call_soon(move || deliver_made(&m, handle))
        .map(drop)
}

/// Calls `connection_made` (always first: a `close`/`abort` before it only
/// schedules `connection_lost` after it), then starts the I/O.
pub(crate) fn deliver_made<T: LifecycleOwner>(
    me: &Rc<T>,
    handle: <T::Protocol as LifeProtocol>::Handle,
) {
    let life = me.life();
    if life.state() == LifeState::Lost {
        // Abandoned before this ran: the protocol is never called.
        return;
    }
    let protocol = life.protocol();
    match protocol.offer_made(handle) {
        Made::Called => {
            life.set_made();
            me.made_delivered();
            me.after_made();
        }
        Made::Busy(h) => {
            // Offered from inside one of the protocol's methods (it is
            // shared with another transport): right after it returns.
            let again = me.clone();
            protocol.when_free(move || deliver_made(&again, h));
        }
        Made::Panicked(payload) => {
            life.set_made();
            me.made_delivered();
            if me.made_panicked(payload) {
                me.after_made();
            }
        }
    }
}

/// Schedules `connection_lost(error)` through the loop, once: the first
/// call wins. On a closed loop nothing can be delivered: the transport is
/// released at once.
pub(crate) fn schedule_lost<T: LifecycleOwner>(me: &Rc<T>, error: Option<io::Error>) {
    if !me.life().claim_lost() {
        return;
    }
    me.lost_scheduled();
    let m = me.clone();
    if me
        .life()
        .lp()
        .call_soon(move || call_connection_lost(&m, error))
        .is_err()
    {
        finish_lost(&**me);
    }
}

fn call_connection_lost<T: LifecycleOwner>(me: &Rc<T>, error: Option<io::Error>) {
    let life = me.life();
    if life.state() == LifeState::Lost {
        return;
    }
    let protocol = life.protocol();
    if protocol.in_use() {
        // Reached from inside one of the protocol's methods: right after it
        // returns (after a connection_made deferred the same way).
        let m = me.clone();
        protocol.when_free(move || call_connection_lost(&m, error));
        return;
    }
    if me.owes_lost() {
        // The protocol is free: this cannot be handed back.
        me.deliver_lost(&protocol, error);
    }
    // Else connection_made was never delivered: neither is connection_lost.
    drop(protocol);
    finish_lost(&**me);
}

/// The end (see [`Lifecycle::finish`]); also what abandons a transport
/// whose `connection_made` never ran.
pub(crate) fn finish_lost<T: LifecycleOwner>(me: &T) {
    me.life().finish(|| me.close_resources(), || me.lost_hook());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    /// A protocol that records what it is given (the real protocols are
    /// exercised through every transport by the integration tests).
    #[derive(Clone, Default)]
    struct Log(Rc<RefCell<Vec<&'static str>>>);

    impl Log {
        fn push(&self, what: &'static str) {
            self.0.borrow_mut().push(what);
        }
        fn calls(&self) -> Vec<&'static str> {
            self.0.borrow().clone()
        }
    }

    impl Released for Log {
        fn released() -> Log {
            Log::default()
        }
    }

    impl LifeProtocol for Log {
        type Handle = ();
        fn in_use(&self) -> bool {
            false
        }
        fn when_free(&self, f: impl FnOnce() + 'static) {
            f()
        }
        fn offer_made(&self, (): ()) -> Made<()> {
            self.push("connection_made");
            Made::Called
        }
    }

    struct Owner {
        life: Lifecycle<Log>,
        closed: Cell<u32>,
    }

    impl LifecycleOwner for Owner {
        type Protocol = Log;
        fn life(&self) -> &Lifecycle<Log> {
            &self.life
        }
        fn after_made(self: &Rc<Self>) {
            self.life.protocol().push("start I/O");
        }
        fn protocol_failed(self: &Rc<Self>, _: &str, _: Box<dyn Any + Send>) {
            unreachable!("the log does not panic")
        }
        fn deliver_lost(self: &Rc<Self>, protocol: &Log, _: Option<io::Error>) {
            protocol.push("connection_lost");
        }
        fn close_resources(&self) {
            self.closed.set(self.closed.get() + 1);
        }
    }

    fn owner(lp: &EventLoop, log: &Log) -> Rc<Owner> {
        Rc::new(Owner {
            life: Lifecycle::new(lp, log.clone()),
            closed: Cell::new(0),
        })
    }

    /// Runs the loop until the callbacks queued so far (and theirs) ran.
    fn settle(lp: &EventLoop) {
        lp.run_until_complete(async {}).unwrap();
        lp.run_until_complete(async {}).unwrap();
    }

    #[test]
    fn states_go_one_way() {
        let lp = EventLoop::new().unwrap();
        let life = Lifecycle::new(&lp, Log::default());
        assert_eq!(life.state(), LifeState::Open);
        assert!(life.begin_closing());
        assert_eq!(life.state(), LifeState::Closing);
        assert!(!life.begin_closing(), "closing twice is a no-op");
        life.force_closing();
        assert_eq!(life.state(), LifeState::Closing);
        life.finish(|| {}, || {});
        assert_eq!(life.state(), LifeState::Lost);
        life.force_closing();
        assert!(!life.begin_closing());
        assert_eq!(life.state(), LifeState::Lost, "Lost is final");
    }

    #[test]
    fn connection_lost_is_claimed_once() {
        let lp = EventLoop::new().unwrap();
        let life = Lifecycle::new(&lp, Log::default());
        assert!(!life.lost_claimed());
        assert!(life.claim_lost());
        assert!(!life.claim_lost());
        assert!(life.lost_claimed());
    }

    #[test]
    fn finish_releases_the_protocol_then_the_loop() {
        let lp = EventLoop::new().unwrap();
        let weak = lp.downgrade();
        let log = Log::default();
        let life = Lifecycle::new(&lp, log.clone());
        assert_eq!(Rc::strong_count(&log.0), 2);
        let order = Log::default();
        life.finish(|| order.push("close"), || order.push("hook"));
        assert_eq!(order.calls(), ["close", "hook"]);
        assert_eq!(Rc::strong_count(&log.0), 1, "the protocol was let go");
        assert!(life.get_loop().is_none(), "the loop was let go");
        drop(lp);
        assert!(weak.upgrade().is_none(), "the lifecycle kept its loop");
    }

    /// Counts its wake-ups.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn made_waiters_register_once_and_wake_on_made_or_loss() {
        let lp = EventLoop::new().unwrap();
        for lose in [false, true] {
            let life = Lifecycle::new(&lp, Log::default());
            let count = Arc::new(Counter(AtomicUsize::new(0)));
            let waker = Waker::from(count.clone());
            let mut cx = Context::from_waker(&waker);
            assert!(life.poll_made(&mut cx).is_pending());
            assert!(life.poll_made(&mut cx).is_pending());
            if lose {
                life.finish(|| {}, || {});
            } else {
                life.set_made();
            }
            assert_eq!(
                count.0.load(Ordering::SeqCst),
                1,
                "one registration, one wake"
            );
            assert!(life.poll_made(&mut cx).is_ready());
        }
    }

    #[test]
    fn connection_made_comes_first_and_connection_lost_once_through_the_loop() {
        let lp = EventLoop::new().unwrap();
        let log = Log::default();
        let me = owner(&lp, &log);
        schedule_made(&me, ()).unwrap();
        // Closed before connection_made ran, twice.
        assert!(me.life.begin_closing());
        schedule_lost(&me, None);
        schedule_lost(&me, None);
        assert!(log.calls().is_empty(), "nothing is delivered synchronously");
        settle(&lp);
        assert_eq!(
            log.calls(),
            ["connection_made", "start I/O", "connection_lost"]
        );
        assert_eq!(me.life.state(), LifeState::Lost);
        assert_eq!(me.closed.get(), 1);
        assert!(me.life.get_loop().is_none());
        assert!(me.life.protocol().calls().is_empty(), "released");
    }

    #[test]
    fn a_transport_lost_before_connection_made_never_calls_its_protocol() {
        let lp = EventLoop::new().unwrap();
        let log = Log::default();
        let me = owner(&lp, &log);
        schedule_made(&me, ()).unwrap();
        // Abandoned (the waiting future was dropped) before it ran.
        finish_lost(&*me);
        settle(&lp);
        assert!(log.calls().is_empty());
        assert_eq!(me.closed.get(), 1);
    }

    #[test]
    fn on_a_closed_loop_the_transport_is_released_at_once() {
        let lp = EventLoop::new().unwrap();
        let log = Log::default();
        let me = owner(&lp, &log);
        lp.close().unwrap();
        schedule_lost(&me, None);
        assert_eq!(me.life.state(), LifeState::Lost);
        assert_eq!(me.closed.get(), 1);
        assert!(log.calls().is_empty());
    }
}
