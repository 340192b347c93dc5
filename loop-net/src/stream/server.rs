//! [`Server`]: listening sockets that accept connections into transports.
//!
//! Each listening socket is watched (level-triggered) while the server
//! serves. A readiness accepts up to `backlog` connections in a row (asyncio
//! does the same), each made non-blocking and close-on-exec by `accept4`,
//! with `TCP_NODELAY` on TCP, and wrapped in a stream transport with a fresh
//! protocol from the factory. When accepting fails for lack of resources
//! (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`), the server reports it to the
//! exception handler, stops watching that socket, and tries again one second
//! later (asyncio's `ACCEPT_RETRY_DELAY`), so a full descriptor table neither
//! spins the loop nor stops the server for good.
//!
//! On the io_uring backend a listening socket has no watcher: one multishot
//! accept (loop-core's `UringAccept`) hands each new connection to the
//! server as the loop's ready work, with no system call per connection for
//! accepting it. The rules stay: a transient error (`ECONNABORTED`...) is
//! skipped and the accept armed again; running out of resources is reported
//! once and the accept armed again a second later. `close()` cancels the
//! accept before the listening socket closes, and a connection the kernel
//! accepted that the server will not serve is closed (never leaked).
//!
//! As in asyncio 3.12+, `close()` stops listening but leaves the accepted
//! connections alone; `close_clients()` / `abort_clients()` end them, and
//! `wait_closed()` resolves once the server is closed and every connection
//! it accepted is gone.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::task::Poll;
use std::time::Duration;

use loop_core::{
    AcceptHandler, EventLoop, ExceptionContext, FdClaim, LoopError, UringAccept, WaiterList,
};
use rustix::io::Errno;
use rustix::net::SocketFlags;

use crate::addr::SockAddr;
use crate::owned_path::OwnedPath;
use crate::protocol::AnyProtocol;
use crate::stream::Stream;
use crate::transport::Transport;

/// asyncio's `ACCEPT_RETRY_DELAY`.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_secs(1);

pub(crate) type Factory = Box<dyn Fn() -> AnyProtocol>;

/// Wraps an accepted socket in a transport, instead of the plain stream
/// transport (a TLS server's, tls.rs). On error the lost hook was not called.
pub(crate) type Starter = Rc<
    dyn Fn(
        &EventLoop,
        OwnedFd,
        AnyProtocol,
        Option<crate::stream::LostHook>,
    ) -> Result<Transport, LoopError>,
>;

/// A listening server (asyncio's `Server`): returned by `create_server` and
/// `create_unix_server`.
#[doc(alias = "asyncio.Server")]
#[derive(Clone)]
pub struct Server {
    inner: Rc<ServerInner>,
}

struct Listener {
    /// The multishot accept on the io_uring backend (opened at the first
    /// `watch`); declared first, so that it is released before `fd` closes.
    ring: RefCell<Option<UringAccept>>,
    /// Opening the accept was tried (it stays `None` off io_uring).
    ring_tried: Cell<bool>,
    /// The loop's claim on `fd` (issue 15): the user's `add_reader` on it
    /// is refused; ours goes through it. Released before `fd` closes.
    claim: FdClaim,
    fd: OwnedFd,
    /// Accepting: a reader is registered, or the multishot accept wanted.
    watched: Cell<bool>,
}

impl Listener {
    /// Stops accepting for now (the resource retry): removes the reader;
    /// the kernel already ended a multishot accept.
    fn unwatch(&self) {
        if self.watched.replace(false) && self.ring.borrow().is_none() {
            let _ = self.claim.remove_reader();
        }
    }

    /// Stops accepting for good, before `fd` closes: the multishot accept
    /// is cancelled (submitted at once), or the reader removed.
    fn shut(&self) {
        self.unwatch();
        let ring = self.ring.borrow_mut().take();
        if let Some(ring) = ring {
            let _ = ring.release();
        }
    }
}

/// What the multishot accept of one listener reports to (loop-core's
/// `AcceptHandler`): holds the server and the listener weakly.
struct AcceptSink {
    server: Weak<ServerInner>,
    listener: Weak<Listener>,
}

impl AcceptHandler for AcceptSink {
    fn accepted(&self, fd: OwnedFd) {
        let Some(me) = self.server.upgrade() else {
            return; // `fd` closes here
        };
        if me.closed.get() || !me.serving.get() {
            return;
        }
        me.take_connection(fd);
    }

    fn accept_failed(&self, error: io::Error) {
        let (Some(me), Some(l)) = (self.server.upgrade(), self.listener.upgrade()) else {
            return;
        };
        let errno = Errno::from_io_error(&error).unwrap_or(Errno::IO);
        ServerInner::accept_error(&me, &l, errno);
        // Armed again unless the error parked the listener or closed it.
        if l.watched.get() && me.serving.get() && !me.closed.get() {
            if let Some(ring) = &*l.ring.borrow() {
                ring.start();
            }
        }
    }
}

pub(crate) struct ServerInner {
    lp: EventLoop,
    listeners: RefCell<Vec<Rc<Listener>>>,
    factory: Factory,
    backlog: usize,
    tcp: bool,
    serving: Cell<bool>,
    closed: Cell<bool>,
    clients: RefCell<Vec<Option<Transport>>>,
    free: RefCell<Vec<usize>>,
    active: Cell<usize>,
    waiters: WaiterList,
    /// A Unix socket file this server bound, removed on close (if it is
    /// still ours).
    unix_path: RefCell<Option<OwnedPath>>,
    /// How accepted sockets become transports; `None`: plain streams.
    starter: RefCell<Option<Starter>>,
}

impl Server {
    pub(crate) fn new(
        lp: &EventLoop,
        fds: Vec<OwnedFd>,
        factory: Factory,
        backlog: usize,
        tcp: bool,
        unix_path: Option<PathBuf>,
    ) -> Server {
        Server {
            inner: Rc::new(ServerInner {
                lp: lp.clone(),
                listeners: RefCell::new(
                    fds.into_iter()
                        .map(|fd| {
                            Rc::new(Listener {
                                ring: RefCell::new(None),
                                ring_tried: Cell::new(false),
                                claim: lp.claim_fd(fd.as_raw_fd(), {
                                    let kind = if tcp { "TCP" } else { "Unix" };
                                    format!("server <{kind} server fd={}>", fd.as_raw_fd())
                                }),
                                fd,
                                watched: Cell::new(false),
                            })
                        })
                        .collect(),
                ),
                factory,
                backlog: backlog.max(1),
                tcp,
                serving: Cell::new(false),
                closed: Cell::new(false),
                clients: RefCell::new(Vec::new()),
                free: RefCell::new(Vec::new()),
                active: Cell::new(0),
                waiters: WaiterList::new(),
                unix_path: RefCell::new(unix_path.and_then(OwnedPath::bound)),
                starter: RefCell::new(None),
            }),
        }
    }

    /// Makes accepted sockets into transports with `starter` (TLS).
    #[cfg(feature = "tls")]
    pub(crate) fn set_starter(&self, starter: Starter) {
        *self.inner.starter.borrow_mut() = Some(starter);
    }

    /// Starts accepting connections (idempotent); `create_server` does it
    /// unless told not to (`start_serving: false`).
    #[doc(alias = "Server.start_serving")]
    pub fn start_serving(&self) -> Result<(), LoopError> {
        let inner = &self.inner;
        if inner.closed.get() {
            return Err(LoopError::new(
                loop_core::ErrorKind::InvalidState,
                "the server is closed",
            ));
        }
        inner.serving.set(true);
        let listeners = inner.listeners.borrow().clone();
        for l in listeners {
            ServerInner::watch(&self.inner, &l)?;
        }
        Ok(())
    }

    /// Whether the server is accepting connections.
    #[doc(alias = "Server.is_serving")]
    pub fn is_serving(&self) -> bool {
        self.inner.serving.get() && !self.inner.closed.get()
    }

    /// Stops listening: the listening sockets are closed (and a Unix socket
    /// file this server created is removed). Accepted connections stay open.
    /// Idempotent.
    #[doc(alias = "Server.close")]
    pub fn close(&self) {
        let inner = &self.inner;
        if inner.closed.replace(true) {
            return;
        }
        inner.serving.set(false);
        let listeners = std::mem::take(&mut *inner.listeners.borrow_mut());
        for l in &listeners {
            l.shut();
        }
        drop(listeners);
        // Removed only if the path still names the socket we bound.
        let path = inner.unix_path.borrow_mut().take();
        drop(path);
        inner.wake_waiters();
    }

    /// Closes every connection this server accepted (each flushes first).
    #[doc(alias = "Server.close_clients")]
    pub fn close_clients(&self) {
        for t in self.inner.client_list() {
            t.close();
        }
    }

    /// Aborts every connection this server accepted.
    #[doc(alias = "Server.abort_clients")]
    pub fn abort_clients(&self) {
        for t in self.inner.client_list() {
            t.abort();
        }
    }

    /// Resolves once the server is closed and every accepted connection is
    /// lost.
    #[doc(alias = "Server.wait_closed")]
    pub fn wait_closed(&self) -> impl Future<Output = ()> + 'static {
        let inner = self.inner.clone();
        std::future::poll_fn(move |cx| {
            if inner.closed.get() && inner.active.get() == 0 {
                return Poll::Ready(());
            }
            inner.waiters.register(cx.waker());
            Poll::Pending
        })
    }

    /// Starts serving if needed and resolves when the server is closed
    /// (asyncio's `serve_forever`, which runs until cancelled). Cancelling
    /// the task that awaits it closes the server (the listening sockets;
    /// accepted connections stay open) and the await gives the task's
    /// `Cancelled` error, as asyncio's `serve_forever` closes the server and
    /// raises `CancelledError`; the task may handle it or let it end the task
    /// cancelled. So does a `wait_for`/`timeout` around it that expires.
    /// Dropping the future before the server is closed closes it too. It
    /// returns `Ok` when someone else calls [`close`](Self::close).
    #[doc(alias = "Server.serve_forever")]
    pub fn serve_forever(&self) -> impl Future<Output = Result<(), LoopError>> + 'static {
        let server = self.clone();
        async move {
            server.start_serving()?;
            let close_on_drop = CloseOnDrop(Some(server.clone()));
            let inner = server.inner.clone();
            let lp = inner.lp.clone();
            let outcome = std::future::poll_fn(move |cx| {
                // The awaiting task's cancellation (loop-futures' cancel.rs)
                // is observed here, not left to the drop of the task's body.
                loop_core::check_await(&lp, "Server.serve_forever")?;
                if inner.closed.get() {
                    return Poll::Ready(Ok(()));
                }
                inner.waiters.register(cx.waker());
                Poll::Pending
            })
            .await;
            // Closed on an error (cancelled), or by someone else.
            drop(close_on_drop);
            outcome
        }
    }

    /// The addresses of the listening sockets (asyncio's `sockets`, which
    /// holds socket objects); empty once closed.
    #[doc(alias = "Server.sockets")]
    pub fn sockets(&self) -> Vec<SockAddr> {
        self.inner
            .listeners
            .borrow()
            .iter()
            .filter_map(|l| rustix::net::getsockname(&l.fd).ok())
            .map(SockAddr::from_raw)
            .collect()
    }

    /// The listening sockets' file descriptors (owned by the server).
    pub fn listener_fds(&self) -> Vec<RawFd> {
        self.inner
            .listeners
            .borrow()
            .iter()
            .map(|l| l.fd.as_raw_fd())
            .collect()
    }

    /// How many accepted connections are still open.
    pub fn active_connections(&self) -> usize {
        self.inner.active.get()
    }

    /// The loop the server runs on.
    #[doc(alias = "Server.get_loop")]
    pub fn get_loop(&self) -> EventLoop {
        self.inner.lp.clone()
    }
}

impl ServerInner {
    fn watch(me: &Rc<ServerInner>, l: &Rc<Listener>) -> Result<(), LoopError> {
        if l.watched.get() {
            return Ok(());
        }
        if !l.ring_tried.replace(true) {
            let sink = AcceptSink {
                server: Rc::downgrade(me),
                listener: Rc::downgrade(l),
            };
            *l.ring.borrow_mut() = l.claim.uring_accept(Rc::new(sink));
        }
        if let Some(ring) = &*l.ring.borrow() {
            ring.start();
            l.watched.set(true);
            return Ok(());
        }
        let server = Rc::downgrade(me);
        let listener = Rc::downgrade(l);
        l.claim.add_reader(move || {
            if let (Some(s), Some(l)) = (server.upgrade(), listener.upgrade()) {
                ServerInner::accept_ready(&s, &l);
            }
        })?;
        l.watched.set(true);
        Ok(())
    }

    fn accept_ready(me: &Rc<ServerInner>, l: &Rc<Listener>) {
        for _ in 0..me.backlog {
            if me.closed.get() || !me.serving.get() {
                return;
            }
            match rustix::net::accept_with(
                l.fd.as_fd(),
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            ) {
                Ok(conn) => me.take_connection(conn),
                Err(Errno::AGAIN) => return,
                Err(e) => {
                    if !ServerInner::accept_error(me, l, e) {
                        return;
                    }
                }
            }
        }
    }

    /// A failed accept, by readiness or completion: whether to go on
    /// accepting at once (a transient error). Running out of resources is
    /// reported, the listener parked and watched again a second later;
    /// another error is reported.
    fn accept_error(me: &Rc<ServerInner>, l: &Rc<Listener>, e: Errno) -> bool {
        match e {
            Errno::INTR | Errno::CONNABORTED | Errno::PROTO => true,
            Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM => {
                me.lp.call_exception_handler(
                    ExceptionContext::new("socket.accept() out of system resource")
                        .with_error(io::Error::from(e))
                        .with("socket", format!("fd={}", l.fd.as_raw_fd())),
                );
                l.unwatch();
                let (server, listener) = (Rc::downgrade(me), Rc::downgrade(l));
                let _ = me.lp.call_later(ACCEPT_RETRY_DELAY, move || {
                    if let (Some(s), Some(l)) = (server.upgrade(), listener.upgrade()) {
                        if s.serving.get() && !s.closed.get() {
                            let _ = ServerInner::watch(&s, &l);
                        }
                    }
                });
                false
            }
            e => {
                me.lp.call_exception_handler(
                    ExceptionContext::new("Error on transport creation for incoming connection")
                        .with_error(io::Error::from(e)),
                );
                false
            }
        }
    }

    /// A new connection: `TCP_NODELAY` on TCP, then a transport.
    fn take_connection(self: &Rc<Self>, conn: OwnedFd) {
        if self.tcp {
            let _ = rustix::net::sockopt::set_tcp_nodelay(&conn, true);
        }
        ServerInner::accepted(self, conn);
    }

    fn accepted(me: &Rc<ServerInner>, conn: OwnedFd) {
        let protocol = (me.factory)();
        let key = {
            let mut clients = me.clients.borrow_mut();
            match me.free.borrow_mut().pop() {
                Some(k) => k,
                None => {
                    clients.push(None);
                    clients.len() - 1
                }
            }
        };
        me.active.set(me.active.get() + 1);
        let server: Weak<ServerInner> = Rc::downgrade(me);
        let on_lost = Box::new(move || {
            if let Some(s) = server.upgrade() {
                s.detach(key);
            }
        });
        let starter = me.starter.borrow().clone();
        let started = match starter {
            Some(start) => start(&me.lp, conn, protocol, Some(on_lost)),
            None => Stream::start(&me.lp, conn, protocol, Some(on_lost)),
        };
        match started {
            Ok(t) => me.clients.borrow_mut()[key] = Some(t),
            Err(_) => me.detach(key),
        }
    }

    fn detach(&self, key: usize) {
        let old = self
            .clients
            .borrow_mut()
            .get_mut(key)
            .and_then(|c| c.take());
        drop(old);
        self.free.borrow_mut().push(key);
        self.active.set(self.active.get().saturating_sub(1));
        if self.active.get() == 0 {
            self.wake_waiters();
        }
    }

    fn client_list(&self) -> Vec<Transport> {
        self.clients.borrow().iter().flatten().cloned().collect()
    }

    fn wake_waiters(&self) {
        self.waiters.wake_all();
    }
}

/// A server dropped without [`Server::close`] stops listening as `close`
/// does. Its listening sockets close with it, so their readers must leave the
/// loop first: a registration left behind for a closed fd would capture the
/// next socket that reuses the fd number (with epoll, its reader would never
/// fire).
impl Drop for ServerInner {
    fn drop(&mut self) {
        for l in self.listeners.get_mut().drain(..) {
            l.shut();
        }
        drop(self.unix_path.get_mut().take());
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("sockets", &self.sockets())
            .field("serving", &self.is_serving())
            .field("active", &self.active_connections())
            .finish()
    }
}

/// Closes the server if `serve_forever`'s future is dropped while it serves.
struct CloseOnDrop(Option<Server>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(server) = self.0.take() {
            server.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{BaseProtocol, Protocol, ServerOptions, StreamLoopExt};
    use loop_core::EventLoop;

    struct Quiet;
    impl BaseProtocol for Quiet {}
    impl Protocol for Quiet {
        fn data_received(&mut self, _: &[u8]) {}
    }

    #[test]
    fn a_server_dropped_without_close_unregisters_its_listeners() {
        let lp = EventLoop::new().unwrap();
        let lp2 = lp.clone();
        let fd = lp
            .run_until_complete(async move {
                let server = lp2
                    .create_server(|| Quiet, &["127.0.0.1"], 0, ServerOptions::default())
                    .await
                    .unwrap();
                let fd = server.listener_fds()[0];
                drop(server);
                fd
            })
            .unwrap();
        // No reader is left registered for the closed (and reusable) fd.
        assert!(matches!(lp.remove_reader(fd), Ok(false)));
        lp.close().unwrap();
    }
}
