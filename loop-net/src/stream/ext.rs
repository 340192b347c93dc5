//! [`StreamLoopExt`]: asyncio's stream connection and server methods, as an
//! extension trait of [`EventLoop`].

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use loop_core::EventLoop;

use crate::dns::Service;
use crate::stream::connect::{self, ConnectOptions, IntoProtocol, ServerOptions};
use crate::stream::server::Server;
use crate::transport::Transport;

mod sealed {
    pub trait Sealed {}
    impl Sealed for loop_core::EventLoop {}
}

/// asyncio's TCP and Unix stream methods on [`EventLoop`]: `create_connection`,
/// `create_server`, `create_unix_connection`, `create_unix_server`,
/// `connect_accepted_socket`.
///
/// Bring it into scope (`use loop_net::StreamLoopExt;`, or
/// `use aioloop::prelude::*;`). The protocol factory returns a
/// [`Protocol`](crate::Protocol) (or [`Buffered`](crate::Buffered) around a
/// [`BufferedProtocol`](crate::BufferedProtocol)); the methods that open one
/// connection return `(Transport, ProtocolHandle<P>)`, asyncio's
/// `(transport, protocol)`. Errors are [`io::Error`]s, as asyncio raises
/// `OSError`.
///
/// Every method's future is lazy and `'static`, like a coroutine object:
/// nothing happens until it is awaited (or given to `create_task`), and it
/// keeps no borrow of the loop or of the arguments (it owns copies of the
/// host names and paths), so it may outlive the call that made it.
///
/// ```
/// use loop_core::EventLoop;
/// use loop_net::{BaseProtocol, Protocol, ServerOptions, StreamLoopExt, Transport};
///
/// struct Echo(Option<Transport>);
/// impl BaseProtocol for Echo {
///     fn connection_made(&mut self, t: Transport) { self.0 = Some(t); }
/// }
/// impl Protocol for Echo {
///     fn data_received(&mut self, data: &[u8]) { let _ = self.0.as_ref().unwrap().write(data); }
/// }
///
/// #[derive(Default)]
/// struct Client { got: Vec<u8>, transport: Option<Transport> }
/// impl BaseProtocol for Client {
///     fn connection_made(&mut self, t: Transport) {
///         t.write(b"hello").unwrap();
///         self.transport = Some(t);
///     }
/// }
/// impl Protocol for Client {
///     fn data_received(&mut self, data: &[u8]) {
///         self.got.extend_from_slice(data);
///         if self.got.len() == 5 { self.transport.as_ref().unwrap().close(); }
///     }
/// }
///
/// let lp = EventLoop::new()?;
/// let lp2 = lp.clone();
/// let got = lp.run_until_complete(async move {
///     let server = lp2.create_server(|| Echo(None), &["127.0.0.1"], 0, ServerOptions::default()).await?;
///     let port = server.sockets()[0].as_inet().unwrap().port();
///     let (_t, client) = lp2
///         .create_connection(Client::default, Some("127.0.0.1"), port, Default::default())
///         .await?;
///     // Woken after each call into the protocol, not on a timer.
///     client.wait_until(|c: &Client| c.got.len() >= 5).await;
///     server.close();
///     let got = client.with(|c| c.got.clone());
///     Ok::<_, std::io::Error>(got)
/// })??;
/// assert_eq!(got, b"hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait StreamLoopExt: sealed::Sealed {
    /// Opens a TCP connection to `host:port` (asyncio's
    /// `loop.create_connection(protocol_factory, host, port, ...)`).
    ///
    /// The host is resolved (numeric hosts without a lookup); `port` is a
    /// number (`8080`), or a service name or number as text (`"http"`,
    /// `"8080"`: a [`Service`], resolved as `getaddrinfo` does; an unknown
    /// name is a [`ResolveError`](crate::ResolveError)). Each address is
    /// tried in order until one connects, or, with
    /// [`happy_eyeballs_delay`](ConnectOptions::happy_eyeballs_delay), raced
    /// as RFC 8305 describes (families interleaved). When every attempt fails,
    /// the error is the first attempt's as the OS gave it
    /// (`raw_os_error()` kept) if every attempt failed with the same errno,
    /// else one error whose message lists each address's failure
    /// ("Multiple exceptions: ...", as asyncio); with
    /// [`all_errors`](ConnectOptions::all_errors), every attempt's error
    /// ([`ConnectErrors`](crate::ConnectErrors)). The socket gets
    /// `TCP_NODELAY`. `host: None` with [`ConnectOptions::sock`] wraps an
    /// already connected socket (port 0). Cancel (drop) the future to give
    /// up, for example under a timeout.
    #[doc(alias = "loop.create_connection")]
    fn create_connection<F: IntoProtocol>(
        &self,
        factory: impl FnOnce() -> F + 'static,
        host: Option<&str>,
        port: impl Into<Service>,
        options: ConnectOptions,
    ) -> impl Future<Output = io::Result<(Transport, F::Handle)>> + 'static;

    /// Listens on `hosts` (every interface, IPv4 and IPv6, when empty or
    /// `""`) at `port` (0: an ephemeral port; a service name as text, as for
    /// [`create_connection`](Self::create_connection)) and accepts
    /// connections, each with a new protocol from `factory` (asyncio's
    /// `loop.create_server`). Accepted TCP connections get `TCP_NODELAY`.
    /// With [`ServerOptions::sock`], serves on that socket instead (then no
    /// hosts and port 0).
    #[doc(alias = "loop.create_server")]
    fn create_server<F: IntoProtocol>(
        &self,
        factory: impl Fn() -> F + 'static,
        hosts: &[&str],
        port: impl Into<Service>,
        options: ServerOptions,
    ) -> impl Future<Output = io::Result<Server>> + 'static;

    /// Opens a Unix stream connection to `path` (a leading NUL byte names a
    /// Linux abstract socket); asyncio's `loop.create_unix_connection`.
    #[doc(alias = "loop.create_unix_connection")]
    fn create_unix_connection<F: IntoProtocol>(
        &self,
        factory: impl FnOnce() -> F + 'static,
        path: &Path,
    ) -> impl Future<Output = io::Result<(Transport, F::Handle)>> + 'static;

    /// Wraps an already connected `AF_UNIX` stream socket (asyncio's
    /// `loop.create_unix_connection(factory, sock=sock)`); resolves after
    /// `connection_made`. Any other socket is refused (`InvalidInput`, "A
    /// UNIX Domain Stream Socket was expected, got ...").
    #[doc(alias = "loop.create_unix_connection")]
    #[doc(alias = "sock")]
    fn create_unix_connection_sock<F: IntoProtocol>(
        &self,
        factory: impl FnOnce() -> F + 'static,
        sock: OwnedFd,
    ) -> impl Future<Output = io::Result<(Transport, F::Handle)>> + 'static;

    /// Listens on the Unix socket `path` (asyncio's
    /// `loop.create_unix_server`). A stale socket file (nobody listening: a
    /// connect is refused) is replaced; a live one is an `AddrInUse` error,
    /// never stolen. The file is removed when the server closes. A leading
    /// NUL byte names a Linux abstract socket (no file). With
    /// [`ServerOptions::sock`], serves on that `AF_UNIX` socket instead (then
    /// `path` is empty: `Path::new("")`);
    /// [`ServerOptions::cleanup_socket`] decides whether the file is removed.
    #[doc(alias = "loop.create_unix_server")]
    fn create_unix_server<F: IntoProtocol>(
        &self,
        factory: impl Fn() -> F + 'static,
        path: &Path,
        options: ServerOptions,
    ) -> impl Future<Output = io::Result<Server>> + 'static;

    /// Wraps an already accepted (or connected) stream socket in a transport
    /// and protocol (asyncio's `loop.connect_accepted_socket`). The socket is
    /// made non-blocking and, if TCP, gets `TCP_NODELAY`; a socket that is
    /// not a stream socket is refused (`InvalidInput`, "A Stream Socket was
    /// expected, got ...").
    #[doc(alias = "loop.connect_accepted_socket")]
    fn connect_accepted_socket<F: IntoProtocol>(
        &self,
        factory: impl FnOnce() -> F + 'static,
        sock: OwnedFd,
    ) -> impl Future<Output = io::Result<(Transport, F::Handle)>> + 'static;
}

impl StreamLoopExt for EventLoop {
    fn create_connection<F: IntoProtocol>(
        &self,
        factory: impl FnOnce() -> F + 'static,
        host: Option<&str>,
        port: impl Into<Service>,
        options: ConnectOptions,
    ) -> impl Future<Output = io::Result<(Transport, F::Handle)>> + 'static {
        let lp = self.clone();
        let host = host.map(str::to_owned);
        let port = port.into();
        async move { connect::create_connection(&lp, factory, host.as_deref(), port, options).await }
    }

    fn create_server<F: IntoProtocol>(
        &self,
        factory: impl Fn() -> F + 'static,
        hosts: &[&str],
        port: impl Into<Service>,
        options: ServerOptions,
    ) -> impl Future<Output = io::Result<Server>> + 'static {
        let lp = self.clone();
        let hosts: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        let port = port.into();
        async move {
            let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
            connect::create_server(&lp, factory, &hosts, port, options).await
        }
    }

    fn create_unix_connection<F: IntoProtocol>(
        &self,
        factory: impl FnOnce() -> F + 'static,
        path: &Path,
    ) -> impl Future<Output = io::Result<(Transport, F::Handle)>> + 'static {
        let lp = self.clone();
        let path = path.to_owned();
        async move { connect::create_unix_connection(&lp, factory, &path).await }
    }

    fn create_unix_connection_sock<F: IntoProtocol>(
        &self,
        factory: impl FnOnce() -> F + 'static,
        sock: OwnedFd,
    ) -> impl Future<Output = io::Result<(Transport, F::Handle)>> + 'static {
        let lp = self.clone();
        async move { connect::unix_connection_on(&lp, factory, sock).await }
    }

    fn create_unix_server<F: IntoProtocol>(
        &self,
        factory: impl Fn() -> F + 'static,
        path: &Path,
        options: ServerOptions,
    ) -> impl Future<Output = io::Result<Server>> + 'static {
        let lp = self.clone();
        let path = path.to_owned();
        async move { connect::create_unix_server(&lp, factory, &path, options) }
    }

    fn connect_accepted_socket<F: IntoProtocol>(
        &self,
        factory: impl FnOnce() -> F + 'static,
        sock: OwnedFd,
    ) -> impl Future<Output = io::Result<(Transport, F::Handle)>> + 'static {
        let lp = self.clone();
        async move { connect::connect_accepted_socket(&lp, factory, sock).await }
    }
}
