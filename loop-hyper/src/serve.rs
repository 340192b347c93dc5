//! `serve_http1` / `serve_http2`: a listening [`Server`] whose every
//! accepted connection is served by hyper in a task of the loop.
//!
//! There is no accept loop of ours: the server is loop-net's
//! `create_server`, whose protocol factory makes a [`HyperStream`]'s
//! protocol; its `connection_made` starts serving the connection (HTTP/1:
//! polled inline by a `Driver` from the protocol's callbacks; HTTP/2: a
//! task, whose streams are tasks too). So the
//! server keeps loop-net's semantics: `close()` stops listening,
//! `wait_closed()` waits for the connections too, `close_clients()` closes
//! them.

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use hyper::body::{Body, Incoming};
use hyper::rt::bounds::Http2ServerConnExec;
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use loop_core::EventLoop;
use loop_net::{Server, ServerOptions, StreamLoopExt};

use crate::driver::Driver;
use crate::io::{HyperProtocol, HyperStream, IntoHyper};
use crate::rt::{LoopExecutor, LoopTimer};

type BoxError = Box<dyn StdError + Send + Sync>;

/// Listens on `addr` and serves HTTP/1.1 with `service` on every accepted
/// connection, on `lp` (keep-alive on; hyper's header-read
/// timeout of 30 s on, through [`LoopTimer`]).
///
/// `service` is cloned for each connection (`hyper::service::service_fn`
/// over a `Clone` closure is); it need not be `Send`. For other settings
/// use [`serve_http1_with`].
///
/// ```no_run
/// use std::convert::Infallible;
/// use hyper::{body::Incoming, Request, Response};
/// use loop_core::EventLoop;
/// use loop_hyper::serve_http1;
///
/// let lp = EventLoop::new()?;
/// let l = lp.clone();
/// lp.run_until_complete(async move {
///     let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
///         Ok::<_, Infallible>(Response::new(String::from("hello\n")))
///     });
///     let server = serve_http1(&l, "127.0.0.1:8080".parse().unwrap(), service).await?;
///     server.serve_forever().await.map_err(std::io::Error::from)
/// })??;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub async fn serve_http1<S, B>(lp: &EventLoop, addr: SocketAddr, service: S) -> io::Result<Server>
where
    S: HttpService<Incoming, ResBody = B> + Clone + 'static,
    S::Error: Into<BoxError>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    let mut builder = http1::Builder::new();
    builder.timer(LoopTimer::new(lp));
    serve_http1_with(lp, addr, ServerOptions::default(), builder, service).await
}

/// [`serve_http1`] with the server's options (backlog, `reuse_port`...)
/// and hyper's builder as you configured it. Give the builder a
/// [`LoopTimer`] (`builder.timer(LoopTimer::new(&lp))`) for its timeouts.
///
/// Connections are served without hyper's upgrade support: upgrades need
/// `Send` I/O (`hyper::upgrade::Upgraded` boxes it as `Send`), and a
/// connection of the loop is not.
pub async fn serve_http1_with<S, B>(
    lp: &EventLoop,
    addr: SocketAddr,
    options: ServerOptions,
    builder: http1::Builder,
    service: S,
) -> io::Result<Server>
where
    S: HttpService<Incoming, ResBody = B> + Clone + 'static,
    S::Error: Into<BoxError>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    let builder = Rc::new(builder);
    let handle = lp.handle();
    let serve = move |io: HyperStream| {
        let conn = builder.serve_connection(io, service.clone());
        // Polled inline from the connection's protocol callbacks (driver.rs).
        // Errors end one connection (a reset client, a header timeout):
        // nothing to report, as a tokio accept loop drops them too.
        Some(Driver::new(handle.clone(), async move {
            let _ = conn.await;
        }))
    };
    listen(lp, addr, options, Rc::new(serve)).await
}

/// Listens on `addr` and serves HTTP/2 (cleartext, "prior knowledge": the
/// client speaks HTTP/2 from the first byte) with `service` on every
/// accepted connection; streams run as tasks of `lp` ([`LoopExecutor`]).
pub async fn serve_http2<S, B>(lp: &EventLoop, addr: SocketAddr, service: S) -> io::Result<Server>
where
    S: HttpService<Incoming, ResBody = B> + Clone + 'static,
    S::Error: Into<BoxError>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    LoopExecutor: Http2ServerConnExec<S::Future, B>,
{
    let mut builder = http2::Builder::new(LoopExecutor::new(lp));
    builder.timer(LoopTimer::new(lp));
    serve_http2_with(lp, addr, ServerOptions::default(), builder, service).await
}

/// [`serve_http2`] with the server's options and hyper's builder as you
/// configured it.
pub async fn serve_http2_with<S, B>(
    lp: &EventLoop,
    addr: SocketAddr,
    options: ServerOptions,
    builder: http2::Builder<LoopExecutor>,
    service: S,
) -> io::Result<Server>
where
    S: HttpService<Incoming, ResBody = B> + Clone + 'static,
    S::Error: Into<BoxError>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    LoopExecutor: Http2ServerConnExec<S::Future, B>,
{
    let builder = Rc::new(builder);
    let l = lp.clone();
    let serve = move |io: HyperStream| {
        let conn = builder.serve_connection(io, service.clone());
        // HTTP/2 runs its streams as tasks; the connection is one too.
        let _ = l.create_task(async move {
            let _ = conn.await;
        });
        None
    };
    listen(lp, addr, options, Rc::new(serve)).await
}

/// `create_server` with a [`HyperStream`] protocol whose `connection_made`
/// calls `serve` (which returns the connection's driver, if it is polled
/// inline).
async fn listen(
    lp: &EventLoop,
    addr: SocketAddr,
    options: ServerOptions,
    serve: Rc<dyn Fn(HyperStream) -> Option<Rc<Driver>>>,
) -> io::Result<Server> {
    let host = addr.ip().to_string();
    let factory = move || {
        let serve = serve.clone();
        IntoHyper(HyperProtocol::new(Some(Box::new(
            move |io: HyperStream| serve(io),
        ))))
    };
    lp.create_server(factory, &[host.as_str()], addr.port(), options)
        .await
}
