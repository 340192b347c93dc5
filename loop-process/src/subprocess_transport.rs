//! [`SubprocessTransport`]: asyncio's `BaseSubprocessTransport` over a child
//! process, its pipes and its watcher.
//!
//! # Shape
//! The transport is an `Rc` handle on the child's state ([`Inner`]). The
//! state holds the pid (and pidfd), the return code once known, the pipe
//! transports (loop-net's read and write pipes, each driving a small
//! [`PipeAdapter`] protocol that forwards to the subprocess protocol with its
//! fd number), and the user's protocol.
//!
//! # Delivery
//! Every call to the protocol goes through one FIFO ([`Call`]), so the order
//! is the order of events, as asyncio's `_call` (always `call_soon`) gives.
//! A call is made at once when the queue is empty, `connection_made` has run
//! and the protocol is free; otherwise it is queued. The protocol is in use
//! only while one of its own methods or a `with_mut` closure runs (no borrow
//! of it lives between callbacks), so a queued call waits at most until
//! that returns: the drain is deferred on the protocol
//! ([`ProtocolHandle::when_free`]) and runs right then, before anything
//! else; nothing is retried on a timer. `connection_made` and
//! `connection_lost` always go through the loop. Calls made before
//! `connection_made` (output that arrives while the pipes are still being
//! connected) wait for it, as asyncio's `_pending_calls`. Panics in the
//! protocol are caught and given to the loop's exception handler.
//!
//! # Bounded memory
//! Output is handed to the protocol straight from the pipe's read buffer.
//! Only output that must wait behind a queued call is copied, and the pipe
//! it came from then stops being read (`pause_reading`) until the queued
//! calls are delivered (it is watched again as their delivery starts: no
//! read can come in between, and a `pause_reading` the protocol makes while
//! they are delivered stands): at most one read (64 KiB) per pipe is ever
//! copied, however much the child writes and however the protocol behaves
//! ([`SubprocessTransport::pending_output_size`]). A pipe the user had
//! paused is left alone. In practice a copy is made only for output that
//! arrives while the pipes are being connected, before `connection_made`:
//! a call queued while the protocol is in use is delivered before the loop
//! reads again.
//!
//! # The end
//! The lifecycle is loop-net's [`Lifecycle`] (its rules are stated there):
//! `connection_lost` is claimed and queued once the return code is known
//! and every pipe transport has called its `connection_lost` (asyncio's
//! `_try_finish`). After it ran, the pipes, the protocol (a protocol that
//! keeps its transport is no `Rc` cycle) and the loop are released
//! (asyncio's `_call_connection_lost` sets `_loop`, `_proc` and `_protocol`
//! to `None`).
//!
//! # Who keeps the child
//! Until the child exits, the watcher (the loop's reader on the pidfd, or
//! the loop's SIGCHLD watch) owns a strong reference to the state, so a
//! dropped transport still has its child reaped. If the loop closes first,
//! the state is dropped with the reader, and a child that still runs goes to
//! the orphan reaper (child_watcher.rs).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::{Rc, Weak};

use loop_core::{EventLoop, ExceptionContext, LoopError};
use loop_net::lifecycle::{LifeState, Lifecycle};
use loop_net::{BaseProtocol, Protocol, ProtocolHandle, Transport};
use rustix::process::{Pid, Signal};

use crate::child_watcher::{self, Orphan};
use crate::subprocess_protocol::SubprocessProtocol;

/// A running (or finished) child process, as its protocol and its owner see
/// it (asyncio's `SubprocessTransport`). Cheap to clone: all clones are the
/// same transport.
///
/// Returned by [`SubprocessLoopExt::subprocess_exec`](crate::SubprocessLoopExt::subprocess_exec)
/// and `subprocess_shell`, and given to the protocol's `connection_made`.
#[doc(alias = "asyncio.SubprocessTransport")]
#[derive(Clone)]
pub struct SubprocessTransport {
    pub(crate) inner: Rc<Inner>,
}

/// What [`SubprocessTransport::get_extra_info`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubprocessInfo {
    /// `"subprocess"` and `"pid"`: the child's process id (asyncio gives the
    /// `Popen` object under `"subprocess"`; its pid is the part that
    /// applies).
    Pid(u32),
    /// `"args"`: the program and its arguments, as started (`Popen.args`).
    Args(Vec<OsString>),
    /// `"pidfd"`: the pidfd the loop watches the child through (Linux),
    /// owned by the transport: do not close it. Absent once the child was
    /// reaped, and with the SIGCHLD watcher.
    Pidfd(RawFd),
}

/// One call to the protocol, queued.
enum Call {
    Made,
    Data(i32, Vec<u8>),
    PipeLost(i32, Option<io::Error>),
    Exited,
    PauseWriting,
    ResumeWriting,
    Lost,
}

impl Call {
    fn name(&self) -> &'static str {
        match self {
            Call::Made => "connection_made",
            Call::Data(..) => "pipe_data_received",
            Call::PipeLost(..) => "pipe_connection_lost",
            Call::Exited => "process_exited",
            Call::PauseWriting => "pause_writing",
            Call::ResumeWriting => "resume_writing",
            Call::Lost => "connection_lost",
        }
    }
}

/// One of the child's pipes.
struct PipeSlot {
    fd: i32,
    transport: Transport,
    disconnected: bool,
    /// Its reading is paused because its output waits in the queue.
    held: bool,
}

/// The state of one child (see the module docs).
pub(crate) struct Inner {
    /// `connection_made`/`connection_lost` bookkeeping, the protocol and the
    /// loop (loop-net's lifecycle.rs).
    life: Lifecycle<Option<ProtocolHandle<dyn SubprocessProtocol>>>,
    pid: Pid,
    args: Vec<OsString>,
    /// The pidfd, while the child is not reaped (pidfd watcher only).
    pidfd: RefCell<Option<OwnedFd>>,
    returncode: Cell<Option<i32>>,
    /// `close()` was called (asyncio's `_closed`: what `is_closing` says,
    /// also after `connection_lost`).
    closed: Cell<bool>,
    /// Whether the child was handed to the orphan reaper (its loop closed
    /// before it exited): no signal may be sent any more.
    orphaned: Cell<bool>,
    /// Whether the pipes are connected and `connection_made` queued.
    started: Cell<bool>,
    pipes: RefCell<Vec<PipeSlot>>,
    calls: RefCell<VecDeque<Call>>,
    /// The bytes of the `Call::Data` in `calls`.
    queued_bytes: Cell<usize>,
    flush_scheduled: Cell<bool>,
    /// A drain is deferred until the protocol is free.
    drain_deferred: Cell<bool>,
    exit_waiters: RefCell<Vec<loop_core::Future<i32>>>,
}

impl Inner {
    pub(crate) fn new(
        lp: &EventLoop,
        pid: Pid,
        args: Vec<OsString>,
        pidfd: Option<OwnedFd>,
        protocol: ProtocolHandle<dyn SubprocessProtocol>,
    ) -> Rc<Inner> {
        Rc::new(Inner {
            life: Lifecycle::new(lp, Some(protocol)),
            pid,
            args,
            pidfd: RefCell::new(pidfd),
            returncode: Cell::new(None),
            closed: Cell::new(false),
            orphaned: Cell::new(false),
            started: Cell::new(false),
            pipes: RefCell::new(Vec::new()),
            calls: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            flush_scheduled: Cell::new(false),
            drain_deferred: Cell::new(false),
            exit_waiters: RefCell::new(Vec::new()),
        })
    }

    /// Resolves once `connection_made` ran (what `subprocess_exec` awaits).
    pub(crate) fn made(self: &Rc<Self>) -> impl std::future::Future<Output = ()> + 'static {
        let me = self.clone();
        std::future::poll_fn(move |cx| me.life.poll_made(cx))
    }

    pub(crate) fn pidfd_raw(&self) -> Option<RawFd> {
        self.pidfd.borrow().as_ref().map(|fd| fd.as_raw_fd())
    }

    pub(crate) fn add_pipe(&self, fd: i32, transport: Transport) {
        self.pipes.borrow_mut().push(PipeSlot {
            fd,
            transport,
            disconnected: false,
            held: false,
        });
    }

    /// The pipes are connected: `connection_made` goes first, then what
    /// arrived meanwhile.
    pub(crate) fn start(self: &Rc<Self>) {
        self.started.set(true);
        self.calls.borrow_mut().push_front(Call::Made);
        self.schedule_flush();
        // The child may have exited, and its pipes closed, while they were
        // being connected.
        self.try_finish();
    }

    /// The watcher reaped the child.
    pub(crate) fn process_exited(self: &Rc<Self>, code: i32) {
        if self.returncode.get().is_some() {
            return;
        }
        self.returncode.set(Some(code));
        // The pidfd has served: free the fd (thousands of children may be
        // in flight).
        self.pidfd.borrow_mut().take();
        self.deliver(Call::Exited);
        self.try_finish();
    }

    /// The watcher was dropped before the child exited (its loop closed):
    /// hand the child to the orphan reaper, and let go of the protocol and
    /// the pipes (a protocol that keeps its transport would otherwise keep
    /// this state alive forever).
    fn abandon(&self) {
        if self.returncode.get().is_some() || self.orphaned.replace(true) {
            return;
        }
        let pidfd = self.pidfd.try_borrow_mut().ok().and_then(|mut p| p.take());
        child_watcher::adopt(Orphan {
            pid: self.pid,
            pidfd,
        });
        let protocol = self.life.replace_protocol(None);
        let pipes = self
            .pipes
            .try_borrow_mut()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        let calls = self
            .calls
            .try_borrow_mut()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default();
        drop(calls);
        drop(pipes);
        drop(protocol);
    }

    fn pipe_lost(self: &Rc<Self>, fd: i32, error: Option<io::Error>) {
        {
            let mut pipes = self.pipes.borrow_mut();
            match pipes.iter_mut().find(|p| p.fd == fd && !p.disconnected) {
                Some(p) => p.disconnected = true,
                None => return,
            }
        }
        self.deliver(Call::PipeLost(fd, error));
        self.try_finish();
    }

    /// asyncio's `_try_finish`: queue `connection_lost` once the child
    /// exited and every pipe closed.
    fn try_finish(self: &Rc<Self>) {
        if self.life.lost_claimed() || self.returncode.get().is_none() || !self.started.get() {
            return;
        }
        if self.pipes.borrow().iter().all(|p| p.disconnected) && self.life.claim_lost() {
            self.calls.borrow_mut().push_back(Call::Lost);
            self.schedule_flush();
        }
    }

    /// Delivers `data` from pipe `fd` at once if possible (no copy);
    /// otherwise queues a copy and stops reading that pipe until the queued
    /// calls are delivered (see the module docs).
    fn data_received(self: &Rc<Self>, fd: i32, data: &[u8]) {
        if self.can_call_now() {
            let protocol = self.life.protocol();
            let Some(p) = protocol else {
                return;
            };
            let called = p.try_with_mut(|p| {
                self.guarded("pipe_data_received", || p.pipe_data_received(fd, data))
            });
            if called.is_some() {
                self.drain();
                return;
            }
        }
        self.hold_pipe(fd);
        self.queued_bytes.set(self.queued_bytes.get() + data.len());
        self.deliver(Call::Data(fd, data.to_vec()));
    }

    /// Stops reading pipe `fd` while its output waits in the queue.
    fn hold_pipe(&self, fd: i32) {
        let transport = {
            let mut pipes = self.pipes.borrow_mut();
            match pipes.iter_mut().find(|p| p.fd == fd && !p.held) {
                Some(slot) if slot.transport.is_reading() => {
                    slot.held = true;
                    slot.transport.clone()
                }
                _ => return,
            }
        };
        transport.pause_reading();
    }

    /// The queued calls are about to be delivered: read the held pipes
    /// again.
    fn release_pipes(&self) {
        let held: Vec<Transport> = self
            .pipes
            .borrow_mut()
            .iter_mut()
            .filter_map(|p| std::mem::take(&mut p.held).then(|| p.transport.clone()))
            .collect();
        for t in held {
            t.resume_reading();
        }
    }

    fn can_call_now(&self) -> bool {
        self.life.is_made() && self.calls.borrow().is_empty()
    }

    /// Makes `call` at once if nothing is queued and the protocol is free;
    /// queues it otherwise.
    fn deliver(self: &Rc<Self>, call: Call) {
        let mut call = Some(call);
        if self.can_call_now() {
            let protocol = self.life.protocol();
            let Some(p) = protocol else {
                return;
            };
            let lost = matches!(call, Some(Call::Lost));
            let made = p.try_with_mut(|p| {
                if let Some(c) = call.take() {
                    self.make(p, c)
                }
            });
            if made.is_some() {
                if lost {
                    self.release();
                } else {
                    self.drain();
                }
                return;
            }
        }
        let call = call.expect("not made");
        self.calls.borrow_mut().push_back(call);
        if self.life.is_made() || self.started.get() {
            self.schedule_flush();
            self.drain_when_free();
        }
    }

    /// Drains right after the protocol's running method (or `with_mut`
    /// closure) returns, if it is in use.
    fn drain_when_free(self: &Rc<Self>) {
        let Some(p) = self.life.protocol() else {
            return;
        };
        if self.drain_deferred.replace(true) {
            return;
        }
        let me = self.clone();
        p.when_free(move || {
            me.drain_deferred.set(false);
            me.drain();
        });
    }

    fn schedule_flush(self: &Rc<Self>) {
        if self.flush_scheduled.replace(true) {
            return;
        }
        let me = self.clone();
        let scheduled = match self.life.get_loop() {
            Some(lp) => lp.call_soon(move || me.flush()).is_ok(),
            None => false,
        };
        if !scheduled {
            // A closed loop: nothing will run again.
            self.flush_scheduled.set(false);
        }
    }

    fn flush(self: &Rc<Self>) {
        self.flush_scheduled.set(false);
        self.drain();
    }

    /// Makes the queued calls, in order, while the protocol is free: called
    /// by the scheduled flush, right after each call to the protocol (so
    /// that what the protocol caused during a call, a `pause_writing` from
    /// its own write to stdin, reaches it right after that call returns,
    /// before anything else runs), and when a protocol that was in use is
    /// free again. The held pipes are watched again as the drain starts:
    /// no read can happen while it delivers (reads come from the loop), and
    /// a `pause_reading` the protocol makes meanwhile then stands.
    fn drain(self: &Rc<Self>) {
        if !self.life.is_made() && !self.started.get() {
            return;
        }
        match self.life.protocol() {
            Some(p) if p.is_in_use() => {}
            _ => self.release_pipes(),
        }
        loop {
            if self.calls.borrow().is_empty() {
                return;
            }
            let Some(protocol) = self.life.protocol() else {
                self.calls.borrow_mut().clear();
                self.queued_bytes.set(0);
                return;
            };
            let mut lost = false;
            let made = protocol.try_with_mut(|p| {
                let Some(call) = self.calls.borrow_mut().pop_front() else {
                    return;
                };
                if let Call::Data(_, data) = &call {
                    self.queued_bytes.set(self.queued_bytes.get() - data.len());
                }
                lost = matches!(call, Call::Lost);
                self.make(p, call);
            });
            if made.is_none() {
                // In use: right after it returns.
                self.drain_when_free();
                return;
            }
            if lost {
                self.release();
                return;
            }
        }
    }

    fn make(self: &Rc<Self>, p: &mut dyn SubprocessProtocol, call: Call) {
        let name = call.name();
        match call {
            Call::Made => {
                self.life.set_made();
                let t = SubprocessTransport {
                    inner: self.clone(),
                };
                self.guarded(name, || p.connection_made(t));
            }
            Call::Data(fd, data) => self.guarded(name, || p.pipe_data_received(fd, &data)),
            Call::PipeLost(fd, err) => self.guarded(name, || p.pipe_connection_lost(fd, err)),
            Call::Exited => self.guarded(name, || p.process_exited()),
            Call::PauseWriting => self.guarded(name, || p.pause_writing()),
            Call::ResumeWriting => self.guarded(name, || p.resume_writing()),
            Call::Lost => self.guarded(name, || p.connection_lost(None)),
        }
    }

    /// Runs one protocol method; a panic goes to the exception handler.
    fn guarded(&self, name: &'static str, f: impl FnOnce()) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
            let Some(lp) = self.life.get_loop() else {
                return;
            };
            lp.call_exception_handler(
                ExceptionContext::new(format!("subprocess protocol.{name}() failed"))
                    .with_error(LoopError::panicked(name, payload))
                    .with("pid", self.pid.as_raw_nonzero().get().to_string()),
            );
        }
    }

    /// After `connection_lost`: wake the waiters of [`wait`]
    /// (asyncio's `_call_connection_lost`), let go of the pipes, the
    /// protocol and the loop ([`Lifecycle::finish`]).
    ///
    /// [`wait`]: SubprocessTransport::wait
    fn release(&self) {
        self.life.finish(
            || {
                if let Some(code) = self.returncode.get() {
                    let waiters = std::mem::take(&mut *self.exit_waiters.borrow_mut());
                    for w in waiters {
                        let _ = w.set_result(code);
                    }
                }
                self.queued_bytes.set(0);
                let pipes = std::mem::take(&mut *self.pipes.borrow_mut());
                drop(pipes);
            },
            || {},
        );
    }

    /// Whether `connection_lost` ran (asyncio's `_proc = None`): signals
    /// are refused with ESRCH from then on.
    fn is_lost(&self) -> bool {
        self.life.state() == LifeState::Lost
    }

    fn send_signal(&self, signal: i32) -> io::Result<()> {
        let sig = to_signal(signal)?;
        // asyncio's `_check_proc`: refused once `connection_lost` ran.
        if self.is_lost() {
            return Err(no_such_process());
        }
        // Exited (and reaped: the pid may be another process's now), but
        // `connection_lost` has not run: nothing to do, as asyncio ignores
        // the `ProcessLookupError` of its `os.kill`.
        if self.returncode.get().is_some() {
            return Ok(());
        }
        if self.orphaned.get() {
            // The orphan reaper may reap it at any moment: a signal by pid
            // could reach a recycled pid.
            return Err(LoopError::closed().into());
        }
        let sent = match &*self.pidfd.borrow() {
            Some(fd) => crate::pidfd::send_signal(fd.as_fd(), sig),
            // SIGCHLD watcher: the child is reaped on this thread, in the
            // step that records its return code, so while that is `None`
            // the pid is still ours.
            None => rustix::process::kill_process(self.pid, sig),
        };
        match sent {
            // Exited, not yet reaped: as above.
            Err(rustix::io::Errno::SRCH) => Ok(()),
            other => other.map_err(io::Error::from),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.returncode.get().is_none() && !self.orphaned.get() {
            child_watcher::adopt(Orphan {
                pid: self.pid,
                pidfd: self.pidfd.get_mut().take(),
            });
        }
    }
}

/// asyncio's `ProcessLookupError`: an `io::Error` with `ESRCH`.
fn no_such_process() -> io::Error {
    io::Error::from_raw_os_error(rustix::io::Errno::SRCH.raw_os_error())
}

/// Checks a signal number: 1 to 64 (real-time signals included).
fn to_signal(signal: i32) -> io::Result<Signal> {
    if let Some(sig) = Signal::from_named_raw(signal) {
        return Ok(sig);
    }
    // SAFETY: `libc::SIGRTMIN()`/`SIGRTMAX()` bound the real-time signals
    // the C library leaves to applications; a number in that range is a
    // valid signal that the C library does not reserve, which is what
    // `from_raw_unchecked` requires.
    if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&signal) {
        return Ok(unsafe { Signal::from_raw_unchecked(signal) });
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        LoopError::new(
            loop_core::ErrorKind::InvalidArgument,
            format!("invalid signal number {signal}"),
        ),
    ))
}

impl SubprocessTransport {
    /// The child's process id (asyncio's `get_pid()`).
    #[doc(alias = "SubprocessTransport.get_pid")]
    pub fn get_pid(&self) -> u32 {
        self.inner.pid.as_raw_nonzero().get() as u32
    }

    /// The transport of one of the child's pipes: 0 is the write pipe to its
    /// stdin, 1 and 2 the read pipes from its stdout and stderr (asyncio's
    /// `get_pipe_transport(fd)`). `None` if that stream is not a pipe, or
    /// after `connection_lost`.
    #[doc(alias = "SubprocessTransport.get_pipe_transport")]
    pub fn get_pipe_transport(&self, fd: i32) -> Option<Transport> {
        self.inner
            .pipes
            .borrow()
            .iter()
            .find(|p| p.fd == fd)
            .map(|p| p.transport.clone())
    }

    /// The child's return code: `None` while it runs, its exit status once
    /// it exited, minus the signal number if a signal killed it (`-9` after
    /// [`kill`](Self::kill)), as asyncio. 255 if the status could not be
    /// known (another part of the process reaped the child).
    #[doc(alias = "SubprocessTransport.get_returncode")]
    pub fn get_returncode(&self) -> Option<i32> {
        self.inner.returncode.get()
    }

    /// Sends `signal` to the child (asyncio's `send_signal`). Through the
    /// pidfd on Linux, so a signal never reaches another process that
    /// reused the pid. Once the child has exited but before the protocol's
    /// `connection_lost`: nothing is sent and `Ok(())` is returned (asyncio
    /// ignores the `ProcessLookupError` there); after `connection_lost`: an
    /// error with `ESRCH`, asyncio's `ProcessLookupError`. An invalid
    /// number: [`InvalidInput`](io::ErrorKind::InvalidInput).
    #[doc(alias = "SubprocessTransport.send_signal")]
    pub fn send_signal(&self, signal: i32) -> io::Result<()> {
        self.inner.send_signal(signal)
    }

    /// Sends `SIGTERM` (asyncio's `terminate()`); see
    /// [`send_signal`](Self::send_signal).
    #[doc(alias = "SubprocessTransport.terminate")]
    pub fn terminate(&self) -> io::Result<()> {
        self.inner.send_signal(Signal::TERM.as_raw())
    }

    /// Sends `SIGKILL` (asyncio's `kill()`); see
    /// [`send_signal`](Self::send_signal).
    #[doc(alias = "SubprocessTransport.kill")]
    pub fn kill(&self) -> io::Result<()> {
        self.inner.send_signal(Signal::KILL.as_raw())
    }

    /// Closes the pipes and kills the child if it still runs (asyncio's
    /// `close()`); the loop reaps it, then the protocol gets
    /// `process_exited` and `connection_lost`. Idempotent.
    #[doc(alias = "SubprocessTransport.close")]
    pub fn close(&self) {
        if self.inner.closed.replace(true) {
            return;
        }
        self.inner.life.begin_closing();
        let pipes: Vec<Transport> = self
            .inner
            .pipes
            .borrow()
            .iter()
            .filter(|p| !p.disconnected)
            .map(|p| p.transport.clone())
            .collect();
        for t in pipes {
            t.close();
        }
        if self.inner.returncode.get().is_none() {
            // It may have exited already, unreaped: the signal then does
            // nothing, and the watcher reaps it as usual.
            let _ = self.inner.send_signal(Signal::KILL.as_raw());
        }
    }

    /// Whether [`close`](Self::close) was called (asyncio's `is_closing()`).
    #[doc(alias = "SubprocessTransport.is_closing")]
    pub fn is_closing(&self) -> bool {
        self.inner.closed.get()
    }

    /// Information about the child (asyncio's `get_extra_info(name)`):
    /// `"subprocess"` or `"pid"`, `"args"`, `"pidfd"`; see
    /// [`SubprocessInfo`]. `None` for other names.
    #[doc(alias = "BaseTransport.get_extra_info")]
    pub fn get_extra_info(&self, name: &str) -> Option<SubprocessInfo> {
        match name {
            "subprocess" | "pid" => Some(SubprocessInfo::Pid(self.get_pid())),
            "args" => Some(SubprocessInfo::Args(self.inner.args.clone())),
            "pidfd" => self.inner.pidfd_raw().map(SubprocessInfo::Pidfd),
            _ => None,
        }
    }

    /// Waits for the child to exit and returns its return code (what
    /// asyncio's `Process.wait()` awaits). Does not close anything.
    ///
    /// As asyncio's `_wait`: at once if `connection_lost` already ran;
    /// otherwise it resolves after the protocol's `connection_lost`, that
    /// is once the child exited *and* its pipes closed (a grandchild that
    /// keeps a pipe open keeps this waiting).
    pub fn wait(&self) -> impl std::future::Future<Output = io::Result<i32>> + 'static {
        let inner = self.inner.clone();
        async move {
            // Done only once `connection_lost` ran (the exit alone is not
            // enough: the pipes may still be open).
            if let (true, Some(code)) = (inner.is_lost(), inner.returncode.get()) {
                return Ok(code);
            }
            let lp = inner.life.get_loop().ok_or_else(LoopError::closed)?;
            let fut = lp.create_future::<i32>();
            inner.exit_waiters.borrow_mut().push(fut.clone());
            drop(inner);
            fut.await.map_err(io::Error::from)
        }
    }

    /// The bytes of the child's output that were read from its pipes and
    /// wait, copied, for the protocol. Output is delivered straight from
    /// the read buffer when nothing is queued before it; what waits behind
    /// a queued call (a notice owed while the protocol was in use, or
    /// `connection_made`) is copied, and that pipe is not read again until
    /// the queued calls are delivered. So this is at most one read (64 KiB)
    /// per pipe.
    pub fn pending_output_size(&self) -> usize {
        self.inner.queued_bytes.get()
    }

    /// The loop the child is watched by; `None` once `connection_lost` has
    /// run (asyncio's transport sets its `_loop` to `None` then), so a
    /// transport kept after that does not keep its loop alive.
    pub fn get_loop(&self) -> Option<EventLoop> {
        self.inner.life.get_loop()
    }

    /// Whether two handles are the same transport.
    pub fn ptr_eq(&self, other: &SubprocessTransport) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}

impl fmt::Debug for SubprocessTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubprocessTransport")
            .field("pid", &self.get_pid())
            .field("returncode", &self.get_returncode())
            .field("closing", &self.is_closing())
            .finish()
    }
}

/// Owned by the watcher until the child exits: reports the exit, or, if
/// dropped first (the loop closed), abandons the child to the orphan reaper.
pub(crate) struct WatchGuard(Option<Rc<Inner>>);

impl WatchGuard {
    pub(crate) fn new(inner: Rc<Inner>) -> WatchGuard {
        WatchGuard(Some(inner))
    }

    /// The child was reaped with return code `code`.
    pub(crate) fn exited(mut self, code: i32) {
        if let Some(inner) = self.0.take() {
            inner.process_exited(code);
        }
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            inner.abandon();
        }
    }
}

/// The protocol of one pipe transport: forwards to the subprocess protocol
/// with the pipe's fd number.
pub(crate) struct PipeAdapter {
    pub(crate) fd: i32,
    pub(crate) inner: Weak<Inner>,
}

impl BaseProtocol for PipeAdapter {
    fn connection_lost(&mut self, error: Option<io::Error>) {
        if let Some(inner) = self.inner.upgrade() {
            inner.pipe_lost(self.fd, error);
        }
    }

    fn pause_writing(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.deliver(Call::PauseWriting);
        }
    }

    fn resume_writing(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.deliver(Call::ResumeWriting);
        }
    }
}

impl Protocol for PipeAdapter {
    fn data_received(&mut self, data: &[u8]) {
        if let Some(inner) = self.inner.upgrade() {
            inner.data_received(self.fd, data);
        }
    }
}
