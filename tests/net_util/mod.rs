//! Helpers shared by the stream transport tests (net/tcp.rs, net/unix.rs,
//! net/flow_control.rs, net/stream_faults.rs, accept_emfile.rs, ...): a protocol that
//! records every callback and checks asyncio's state machine, event-driven
//! waits, peers on real loopback sockets, and small system probes.
//!
//! Every test binary that uses this module also declares `mod util;` (the
//! harness, the watchdog and the exception recorder live there).
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use aioloop::{BaseProtocol, BufferedProtocol, Protocol, Transport};

use crate::util::{Notify, LIMIT};

/// `len` bytes of a pattern that is unlikely to line up by chance.
pub fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + seed * 7 + i / 251) % 253) as u8)
        .collect()
}

// ---------------------------------------------------------------------------
// Event-driven waits

/// Lets the loop run `n` full iterations (each one polls for I/O).
pub async fn iterations(n: usize) {
    for _ in 0..n {
        futures_lite::future::yield_now().await;
    }
}

/// Writes `data` (more than the peer's and our socket buffers take) to a
/// peer that does not read, and waits until the kernel took some of what
/// was left (a send is in flight for the rest).
pub async fn write_until_in_flight(t: &Transport, data: &[u8]) {
    t.write(data).unwrap();
    let start = t.get_write_buffer_size();
    assert!(start > 0, "the kernel took everything at once");
    while t.get_write_buffer_size() == start {
        iterations(1).await;
    }
    assert!(
        t.get_write_buffer_size() > 0,
        "the peer took everything unread"
    );
}

/// While a transport is paused with `rec.data_len() == at_pause` bytes
/// received, lets the loop turn until its peer reports (on `wrote`, the
/// running total it wrote) `more` bytes written since, then 20 iterations
/// more; asserts that nothing was delivered meanwhile (bounded by
/// [`LIMIT`]).
pub async fn nothing_while_paused(
    rec: &Recorder,
    at_pause: usize,
    wrote: &std::sync::mpsc::Receiver<usize>,
    more: usize,
) {
    let mut written = 0;
    let start = std::time::Instant::now();
    while written < at_pause + more {
        assert!(start.elapsed() < LIMIT, "the peer stopped writing");
        iterations(1).await;
        while let Ok(n) = wrote.try_recv() {
            written = n;
        }
        assert_eq!(rec.data_len(), at_pause, "data_received while paused");
    }
    iterations(20).await;
    assert_eq!(rec.data_len(), at_pause, "data_received while paused");
}

// ---------------------------------------------------------------------------
// The recording protocol

/// One protocol callback, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    Made,
    /// `data_received` (or `buffer_updated`) with this many bytes.
    Data(usize),
    Eof,
    /// `connection_lost`, with the error's kind if any.
    Lost(Option<io::ErrorKind>),
    Pause,
    Resume,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Start,
    Made,
    Eof,
    Lost,
}

/// What a [`RecordingProtocol`] saw. Shared (`Rc`) between the protocol,
/// which the transport owns, and the test.
pub struct Recorder {
    pub notify: Rc<Notify>,
    pub events: RefCell<Vec<Ev>>,
    pub data: RefCell<Vec<u8>>,
    pub transport: RefCell<Option<Transport>>,
    /// How many times `connection_lost` was called.
    pub lost: Cell<usize>,
    /// The error given to `connection_lost`: kind, errno, text.
    pub lost_error: RefCell<Option<(io::ErrorKind, Option<i32>, String)>>,
    /// Illegal transitions seen (each also panicked inside the callback).
    pub violations: RefCell<Vec<String>>,
    /// Whether writing is paused (between `pause_writing` and
    /// `resume_writing`).
    pub paused: Cell<bool>,
    /// The write buffer size at each `pause_writing` / `resume_writing`.
    pub pause_sizes: RefCell<Vec<usize>>,
    pub resume_sizes: RefCell<Vec<usize>>,
    state: Cell<St>,
}

impl Recorder {
    pub fn new() -> Rc<Recorder> {
        Recorder::with_notify(Rc::new(Notify::default()))
    }

    pub fn with_notify(notify: Rc<Notify>) -> Rc<Recorder> {
        Rc::new(Recorder {
            notify,
            events: RefCell::new(Vec::new()),
            data: RefCell::new(Vec::new()),
            transport: RefCell::new(None),
            lost: Cell::new(0),
            lost_error: RefCell::new(None),
            violations: RefCell::new(Vec::new()),
            paused: Cell::new(false),
            pause_sizes: RefCell::new(Vec::new()),
            resume_sizes: RefCell::new(Vec::new()),
            state: Cell::new(St::Start),
        })
    }

    /// A recorder for a protocol installed with `set_protocol`: it never
    /// gets `connection_made`, so it starts connected, with `transport`.
    pub fn adopted(notify: Rc<Notify>, transport: &Transport) -> Rc<Recorder> {
        let r = Recorder::with_notify(notify);
        r.adopt(transport);
        r
    }

    /// Connects a fresh recorder to `transport` without `connection_made`:
    /// for a protocol handed to `start_tls`, whose transport is known only
    /// once the upgrade returns. A callback before this is an illegal
    /// transition.
    pub fn adopt(&self, transport: &Transport) {
        if self.state.get() != St::Start {
            self.violation(format!("adopted in state {:?}", self.state.get()));
        }
        self.state.set(St::Made);
        *self.transport.borrow_mut() = Some(transport.clone());
    }

    fn violation(&self, what: String) -> ! {
        self.violations.borrow_mut().push(what.clone());
        self.notify.wake();
        panic!("illegal protocol transition: {what}");
    }

    fn on_made(&self, t: &Transport) {
        if self.state.get() != St::Start {
            self.violation(format!("connection_made in state {:?}", self.state.get()));
        }
        self.state.set(St::Made);
        *self.transport.borrow_mut() = Some(t.clone());
        self.events.borrow_mut().push(Ev::Made);
    }

    fn on_data(&self, data: &[u8]) {
        if self.state.get() != St::Made {
            self.violation(format!("data_received in state {:?}", self.state.get()));
        }
        if data.is_empty() {
            self.violation("data_received with no bytes".into());
        }
        self.data.borrow_mut().extend_from_slice(data);
        self.events.borrow_mut().push(Ev::Data(data.len()));
    }

    fn on_eof(&self) {
        if self.state.get() != St::Made {
            self.violation(format!("eof_received in state {:?}", self.state.get()));
        }
        self.state.set(St::Eof);
        self.events.borrow_mut().push(Ev::Eof);
    }

    fn on_lost(&self, err: Option<&io::Error>) {
        self.lost.set(self.lost.get() + 1);
        if !matches!(self.state.get(), St::Made | St::Eof) {
            self.violation(format!("connection_lost in state {:?}", self.state.get()));
        }
        self.state.set(St::Lost);
        *self.lost_error.borrow_mut() = err.map(|e| (e.kind(), e.raw_os_error(), e.to_string()));
        self.events
            .borrow_mut()
            .push(Ev::Lost(err.map(|e| e.kind())));
    }

    fn on_pause(&self) {
        if !matches!(self.state.get(), St::Made | St::Eof) {
            self.violation(format!("pause_writing in state {:?}", self.state.get()));
        }
        if self.paused.replace(true) {
            self.violation("pause_writing while paused".into());
        }
        let size = self.transport().get_write_buffer_size();
        self.pause_sizes.borrow_mut().push(size);
        self.events.borrow_mut().push(Ev::Pause);
    }

    fn on_resume(&self) {
        if !matches!(self.state.get(), St::Made | St::Eof) {
            self.violation(format!("resume_writing in state {:?}", self.state.get()));
        }
        if !self.paused.replace(false) {
            self.violation("resume_writing without pause_writing".into());
        }
        let size = self.transport().get_write_buffer_size();
        self.resume_sizes.borrow_mut().push(size);
        self.events.borrow_mut().push(Ev::Resume);
    }

    /// The transport given to `connection_made`.
    pub fn transport(&self) -> Transport {
        self.transport
            .borrow()
            .clone()
            .expect("connection_made has not been called")
    }

    pub fn is_made(&self) -> bool {
        self.state.get() != St::Start
    }

    pub fn data_len(&self) -> usize {
        self.data.borrow().len()
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.data.borrow().clone()
    }

    pub fn events(&self) -> Vec<Ev> {
        self.events.borrow().clone()
    }

    pub fn count(&self, ev: &Ev) -> usize {
        self.events.borrow().iter().filter(|e| *e == ev).count()
    }

    pub fn saw_eof(&self) -> bool {
        self.count(&Ev::Eof) > 0
    }

    /// The errno of the error given to `connection_lost`, if any.
    pub fn lost_errno(&self) -> Option<i32> {
        self.lost_error.borrow().as_ref().and_then(|e| e.1)
    }

    pub fn lost_kind(&self) -> Option<io::ErrorKind> {
        self.lost_error.borrow().as_ref().map(|e| e.0)
    }

    /// Whether `connection_lost` was called.
    pub fn is_lost(&self) -> bool {
        self.lost.get() > 0
    }

    /// How the connection ended: `None` before `connection_lost`,
    /// `Some(None)` for a clean end, `Some(Some(kind))` for an error.
    pub fn lost_outcome(&self) -> Option<Option<io::ErrorKind>> {
        self.events.borrow().iter().find_map(|e| match e {
            Ev::Lost(k) => Some(*k),
            _ => None,
        })
    }

    /// Resolves once `cond` holds.
    pub async fn until(self: &Rc<Self>, cond: impl Fn(&Recorder) -> bool) {
        let me = self.clone();
        self.notify.until(move || cond(&me)).await
    }

    pub async fn until_made(self: &Rc<Self>) {
        self.until(|r| r.is_made()).await
    }

    pub async fn until_lost(self: &Rc<Self>) {
        self.until(|r| r.lost.get() > 0).await
    }

    pub async fn until_data(self: &Rc<Self>, n: usize) {
        self.until(move |r| r.data_len() >= n).await
    }

    /// Resolves once `n` bytes arrived or the connection was lost (the
    /// test then checks which).
    pub async fn until_data_or_lost(self: &Rc<Self>, n: usize) {
        self.until(move |r| r.data_len() >= n || r.is_lost()).await
    }

    /// Asserts a clean life: no illegal transition, `connection_made` first,
    /// `connection_lost` exactly once and last.
    pub fn assert_clean_life(&self) {
        assert!(
            self.violations.borrow().is_empty(),
            "illegal transitions: {:?}",
            self.violations.borrow()
        );
        let ev = self.events.borrow();
        assert_eq!(ev.first(), Some(&Ev::Made), "{ev:?}");
        assert_eq!(self.lost.get(), 1, "connection_lost calls: {ev:?}");
        assert!(matches!(ev.last(), Some(Ev::Lost(_))), "{ev:?}");
    }
}

type Hook = Box<dyn FnMut(&Transport, &Recorder)>;
type DataHook = Box<dyn FnMut(&Transport, &Recorder, &[u8])>;
type EofHook = Box<dyn FnMut(&Transport, &Recorder) -> bool>;
type LostHook = Box<dyn FnMut(&Transport, &Recorder, Option<&io::Error>)>;

/// User code run inside the callbacks (after recording them).
#[derive(Default)]
pub struct Hooks {
    pub made: Option<Hook>,
    pub data: Option<DataHook>,
    /// The return value of `eof_received` (default: `false`).
    pub eof: Option<EofHook>,
    pub pause: Option<Hook>,
    pub resume: Option<Hook>,
    pub lost: Option<LostHook>,
}

impl Hooks {
    pub fn none() -> Hooks {
        Hooks::default()
    }

    /// Writes every received byte back.
    pub fn echo() -> Hooks {
        Hooks::none().on_data(|t, _, d| t.write(d).unwrap())
    }

    /// Echoes with flow control: reading pauses while writing is paused.
    pub fn echo_paced() -> Hooks {
        Hooks::echo()
            .on_pause(|t, _| t.pause_reading())
            .on_resume(|t, _| t.resume_reading())
    }

    /// `eof_received` returns `true`: the protocol keeps its half open.
    pub fn keep_open() -> Hooks {
        Hooks::none().on_eof(|_, _| true)
    }

    pub fn on_made(mut self, f: impl FnMut(&Transport, &Recorder) + 'static) -> Self {
        self.made = Some(Box::new(f));
        self
    }

    pub fn on_data(mut self, f: impl FnMut(&Transport, &Recorder, &[u8]) + 'static) -> Self {
        self.data = Some(Box::new(f));
        self
    }

    pub fn on_eof(mut self, f: impl FnMut(&Transport, &Recorder) -> bool + 'static) -> Self {
        self.eof = Some(Box::new(f));
        self
    }

    pub fn on_pause(mut self, f: impl FnMut(&Transport, &Recorder) + 'static) -> Self {
        self.pause = Some(Box::new(f));
        self
    }

    pub fn on_resume(mut self, f: impl FnMut(&Transport, &Recorder) + 'static) -> Self {
        self.resume = Some(Box::new(f));
        self
    }

    pub fn on_lost(
        mut self,
        f: impl FnMut(&Transport, &Recorder, Option<&io::Error>) + 'static,
    ) -> Self {
        self.lost = Some(Box::new(f));
        self
    }
}

/// A [`Protocol`] that records every callback in its [`Recorder`], panics
/// on a transition asyncio forbids
/// (`start -> connection_made [-> data_received]* [-> eof_received] -> connection_lost -> end`),
/// and runs its [`Hooks`].
pub struct RecordingProtocol {
    pub rec: Rc<Recorder>,
    pub hooks: Hooks,
}

impl RecordingProtocol {
    pub fn new(rec: &Rc<Recorder>, hooks: Hooks) -> RecordingProtocol {
        RecordingProtocol {
            rec: rec.clone(),
            hooks,
        }
    }
}

/// The callbacks shared by the streaming and the buffered recorder.
fn base_made(rec: &Recorder, hooks: &mut Hooks, t: Transport) {
    rec.on_made(&t);
    if let Some(h) = hooks.made.as_mut() {
        h(&t, rec);
    }
    rec.notify.wake();
}

fn base_lost(rec: &Recorder, hooks: &mut Hooks, err: Option<io::Error>) {
    rec.on_lost(err.as_ref());
    if let Some(h) = hooks.lost.as_mut() {
        let t = rec.transport();
        h(&t, rec, err.as_ref());
    }
    rec.notify.wake();
}

fn base_pause(rec: &Recorder, hooks: &mut Hooks) {
    rec.on_pause();
    if let Some(h) = hooks.pause.as_mut() {
        h(&rec.transport(), rec);
    }
    rec.notify.wake();
}

fn base_resume(rec: &Recorder, hooks: &mut Hooks) {
    rec.on_resume();
    if let Some(h) = hooks.resume.as_mut() {
        h(&rec.transport(), rec);
    }
    rec.notify.wake();
}

fn base_eof(rec: &Recorder, hooks: &mut Hooks) -> bool {
    rec.on_eof();
    let keep = match hooks.eof.as_mut() {
        Some(h) => h(&rec.transport(), rec),
        None => false,
    };
    rec.notify.wake();
    keep
}

impl BaseProtocol for RecordingProtocol {
    fn connection_made(&mut self, t: Transport) {
        base_made(&self.rec, &mut self.hooks, t);
    }
    fn connection_lost(&mut self, err: Option<io::Error>) {
        base_lost(&self.rec, &mut self.hooks, err);
    }
    fn pause_writing(&mut self) {
        base_pause(&self.rec, &mut self.hooks);
    }
    fn resume_writing(&mut self) {
        base_resume(&self.rec, &mut self.hooks);
    }
}

impl Protocol for RecordingProtocol {
    fn data_received(&mut self, data: &[u8]) {
        self.rec.on_data(data);
        if let Some(h) = self.hooks.data.as_mut() {
            h(&self.rec.transport(), &self.rec, data);
        }
        self.rec.notify.wake();
    }
    fn eof_received(&mut self) -> bool {
        base_eof(&self.rec, &mut self.hooks)
    }
}

/// The [`BufferedProtocol`] twin of [`RecordingProtocol`]: hands the
/// transport a buffer of `buf_size` bytes (small, so that big transfers take
/// many `get_buffer` calls) and records what lands in it.
pub struct RecordingBuffered {
    pub rec: Rc<Recorder>,
    pub hooks: Hooks,
    buf: Vec<u8>,
    /// How many times `get_buffer` was called, and whether each
    /// `buffer_updated` followed one.
    pub get_buffer_calls: Rc<Cell<usize>>,
    lent: bool,
}

impl RecordingBuffered {
    pub fn new(rec: &Rc<Recorder>, hooks: Hooks, buf_size: usize) -> RecordingBuffered {
        RecordingBuffered {
            rec: rec.clone(),
            hooks,
            buf: vec![0; buf_size],
            get_buffer_calls: Rc::new(Cell::new(0)),
            lent: false,
        }
    }
}

impl BaseProtocol for RecordingBuffered {
    fn connection_made(&mut self, t: Transport) {
        base_made(&self.rec, &mut self.hooks, t);
    }
    fn connection_lost(&mut self, err: Option<io::Error>) {
        base_lost(&self.rec, &mut self.hooks, err);
    }
    fn pause_writing(&mut self) {
        base_pause(&self.rec, &mut self.hooks);
    }
    fn resume_writing(&mut self) {
        base_resume(&self.rec, &mut self.hooks);
    }
}

impl BufferedProtocol for RecordingBuffered {
    fn get_buffer(&mut self, size_hint: usize) -> &mut [u8] {
        if self.rec.state.get() != St::Made {
            self.rec
                .violation(format!("get_buffer in state {:?}", self.rec.state.get()));
        }
        assert!(size_hint > 0, "get_buffer({size_hint})");
        self.get_buffer_calls.set(self.get_buffer_calls.get() + 1);
        self.lent = true;
        &mut self.buf[..]
    }

    fn buffer_updated(&mut self, n: usize) {
        if !std::mem::replace(&mut self.lent, false) {
            self.rec
                .violation("buffer_updated without get_buffer".into());
        }
        assert!(n <= self.buf.len());
        let data = self.buf[..n].to_vec();
        self.rec.on_data(&data);
        if let Some(h) = self.hooks.data.as_mut() {
            h(&self.rec.transport(), &self.rec, &data);
        }
        self.rec.notify.wake();
    }

    fn eof_received(&mut self) -> bool {
        base_eof(&self.rec, &mut self.hooks)
    }
}

/// The connections a server accepted: one recorder each, in order.
#[derive(Default)]
pub struct Accepted {
    pub notify: Rc<Notify>,
    pub list: RefCell<Vec<Rc<Recorder>>>,
}

impl Accepted {
    pub fn new() -> Rc<Accepted> {
        Rc::new(Accepted::default())
    }

    pub fn len(&self) -> usize {
        self.list.borrow().len()
    }

    pub fn get(&self, i: usize) -> Rc<Recorder> {
        self.list.borrow()[i].clone()
    }

    pub fn all(&self) -> Vec<Rc<Recorder>> {
        self.list.borrow().clone()
    }

    fn add(&self) -> Rc<Recorder> {
        let rec = Recorder::with_notify(self.notify.clone());
        self.list.borrow_mut().push(rec.clone());
        self.notify.wake();
        rec
    }

    /// A protocol factory for `create_server`: a [`RecordingProtocol`] with
    /// `hooks()` for each connection.
    pub fn factory(
        self: &Rc<Self>,
        hooks: impl Fn() -> Hooks + 'static,
    ) -> impl Fn() -> RecordingProtocol + 'static {
        let me = self.clone();
        move || RecordingProtocol::new(&me.add(), hooks())
    }

    /// The [`RecordingBuffered`] factory (wrapped in `Buffered`).
    pub fn buffered_factory(
        self: &Rc<Self>,
        hooks: impl Fn() -> Hooks + 'static,
        buf_size: usize,
    ) -> impl Fn() -> aioloop::Buffered<RecordingBuffered> + 'static {
        let me = self.clone();
        move || aioloop::Buffered(RecordingBuffered::new(&me.add(), hooks(), buf_size))
    }

    /// Resolves once `n` connections were accepted (the factory ran).
    pub async fn until_count(self: &Rc<Self>, n: usize) {
        let me = self.clone();
        self.notify.until(move || me.len() >= n).await
    }

    /// Resolves once `n` connections were accepted and made.
    pub async fn until_made(self: &Rc<Self>, n: usize) {
        let me = self.clone();
        self.notify
            .until(move || me.len() >= n && me.all().iter().all(|r| r.is_made()))
            .await
    }

    /// Resolves once every one of at least `n` connections was lost.
    pub async fn until_all_lost(self: &Rc<Self>, n: usize) {
        let me = self.clone();
        self.notify
            .until(move || me.len() >= n && me.all().iter().all(|r| r.lost.get() > 0))
            .await
    }
}

// ---------------------------------------------------------------------------
// Peers and sockets

/// A blocking loopback listener on an ephemeral port.
pub fn std_listener(addr: &str) -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind(addr).unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// A TCP transport (a [`RecordingProtocol`] with `hooks`) connected to a
/// blocking std peer that reads nothing until told; returns after
/// `connection_made`.
pub async fn connect_to_std_peer(
    lp: &aioloop::EventLoop,
    hooks: Hooks,
) -> (Transport, Rc<Recorder>, TcpStream) {
    use aioloop::StreamLoopExt;
    let (l, addr) = std_listener("127.0.0.1:0");
    let rec = Recorder::new();
    let r = rec.clone();
    let (t, _h) = lp
        .create_connection(
            move || RecordingProtocol::new(&r, hooks),
            Some("127.0.0.1"),
            addr.port(),
            aioloop::ConnectOptions::default(),
        )
        .await
        .unwrap();
    let (theirs, _) = l.accept().unwrap();
    bounded(&theirs);
    rec.until_made().await;
    (t, rec, theirs)
}

/// Gives a peer socket bounded blocking operations: a wedged peer fails
/// its test instead of hanging it.
pub fn bounded(s: &TcpStream) {
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.set_write_timeout(Some(LIMIT)).unwrap();
}

/// Runs `f` on a peer thread with the (bounded) blocking stream.
pub fn peer<T: Send + 'static>(
    s: TcpStream,
    f: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> JoinHandle<T> {
    bounded(&s);
    thread::spawn(move || f(s))
}

/// Reads until EOF (or a reset, which also ends the stream here).
pub fn read_to_end_or_reset(s: &mut impl Read) -> (Vec<u8>, Option<io::ErrorKind>) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (out, Some(e.kind())),
        }
    }
}

/// Writes `data` then reads until EOF: a blocking echo client's half.
pub fn write_all_then_shutdown(s: &mut TcpStream, data: &[u8]) {
    s.write_all(data).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
}

/// `SO_LINGER` 0: closing the socket sends a reset.
pub fn set_linger_zero(fd: impl AsFd) {
    rustix::net::sockopt::set_socket_linger(fd, Some(Duration::ZERO)).unwrap();
}

/// A duplicate of one of this process's fds, by number (through a pidfd:
/// the tests stay free of `unsafe`, which borrowing a raw fd would need).
/// Options set on the duplicate apply to the same socket.
pub fn dup_fd(fd: RawFd) -> OwnedFd {
    use rustix::process::{getpid, pidfd_getfd, pidfd_open, PidfdFlags, PidfdGetfdFlags};
    let me = pidfd_open(getpid(), PidfdFlags::empty()).expect("pidfd_open(self)");
    pidfd_getfd(&me, fd, PidfdGetfdFlags::empty()).expect("pidfd_getfd(self)")
}

/// Shrinks the kernel send buffer of a transport's socket, so that its own
/// write buffer fills after a few KiB instead of megabytes (the kernel may
/// autotune a loopback send buffer to several MiB). The receive buffer of
/// peers is left alone: a tiny receive window makes some TCP stacks crawl.
pub fn small_send_buffer(t: &Transport) {
    let fd = dup_fd(t.fd().expect("the transport has a socket"));
    rustix::net::sockopt::set_socket_send_buffer_size(&fd, 4096).unwrap();
}

/// Whether this machine can bind `::1`.
pub fn ipv6_loopback() -> bool {
    TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

/// A listener that never completes another handshake: its backlog is 0 and
/// already full, so further SYNs are dropped (a connect to it hangs until
/// cancelled, like one to an address that drops packets). `port` 0 picks
/// one. Keep the returned values alive while it is needed.
pub fn black_hole(addr: SocketAddr) -> (OwnedFd, Vec<TcpStream>, SocketAddr) {
    use rustix::net::{AddressFamily, SocketType};
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let l = rustix::net::socket(family, SocketType::STREAM, None).unwrap();
    if addr.is_ipv6() {
        rustix::net::sockopt::set_ipv6_v6only(&l, true).unwrap();
    }
    rustix::net::bind(&l, &addr).unwrap();
    rustix::net::listen(&l, 0).unwrap();
    let bound = SocketAddr::try_from(rustix::net::getsockname(&l).unwrap()).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match TcpStream::connect_timeout(&bound, Duration::from_secs(1)) {
            Ok(s) => fillers.push(s),
            Err(_) => return (l, fillers, bound),
        }
    }
    panic!("the backlog-0 listener at {bound} kept accepting handshakes");
}

/// How many sockets of this process's network namespace are in `SYN_SENT`
/// towards `port` (from /proc/net/tcp and tcp6); `None` without procfs.
pub fn syn_sent_to(port: u16) -> Option<usize> {
    let mut found = None;
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let n = text
            .lines()
            .skip(1)
            .filter(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3
                    && cols[3] == "02"
                    && cols[2]
                        .rsplit(':')
                        .next()
                        .and_then(|p| u16::from_str_radix(p, 16).ok())
                        == Some(port)
            })
            .count();
        found = Some(found.unwrap_or(0) + n);
    }
    found
}

/// Raises the soft `RLIMIT_NOFILE` to at least `want` (bounded by the hard
/// limit); returns the soft limit in force.
pub fn raise_nofile(want: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let cur = lim.current.unwrap_or(u64::MAX);
    if cur >= want {
        return cur;
    }
    let target = match lim.maximum {
        Some(max) => want.min(max),
        None => want,
    };
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: lim.maximum,
        },
    )
    .unwrap();
    target
}

/// A unique path in the temporary directory (removed on drop if present).
pub struct TempPath(pub std::path::PathBuf);

impl TempPath {
    pub fn new(tag: &str) -> TempPath {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("aioloop-{tag}-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&p);
        TempPath(p)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
