//! hyper 1.x on the loop (feature `hyper`): `aioloop::hyper`'s servers
//! against real clients (curl, HTTP/1.1 and HTTP/2 with prior knowledge),
//! hyper's own clients running on the loop, and the header-read timeout
//! (hyper's timer on the loop's timers) against a silent raw TCP client.
#![cfg(feature = "hyper")]

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::net_util::*;
use crate::util::*;
use aioloop::hyper::{
    serve_http1, serve_http1_with, serve_http2, HyperStream, LoopExecutor, LoopTimer,
};
use aioloop::prelude::*;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response};

fn on_loop<F: Future<Output = ()> + 'static>(test: impl FnOnce(EventLoop) -> F) {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    run(&lp, test(lp.clone()));
    finish(&lp, &seen);
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn port_of(server: &Server) -> u16 {
    server.sockets()[0].as_inet().unwrap().port()
}

/// `GET /` answers "hello"; `POST /echo` answers the request body.
async fn hello_or_echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == Method::POST {
        let body = req.into_body().collect().await.map(|b| b.to_bytes());
        return Ok(Response::new(Full::new(body.unwrap_or_default())));
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
}

/// Runs curl with `args` off the loop; returns its standard output.
async fn curl(l: &EventLoop, args: Vec<String>) -> String {
    let out = l
        .run_in_executor(move || {
            Command::new("curl")
                .args(["--silent", "--show-error", "--max-time", "60"])
                .args(&args)
                .output()
        })
        .unwrap()
        .await
        .unwrap()
        .expect("running /usr/bin/curl");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn curl_sends_several_requests_over_one_kept_alive_connection() {
    on_loop(|l| async move {
        // serve_http1 clones the service once per accepted connection.
        let connections = Rc::new(Cell::new(0usize));
        let server = serve_http1(&l, local(), Counted(connections.clone()))
            .await
            .unwrap();
        let url = format!("http://127.0.0.1:{}/", port_of(&server));
        // One curl, four URLs: curl reuses its connection when the server
        // keeps it alive; %{num_connects} is 1 for the first transfer and 0
        // for each reuse.
        let out = curl(
            &l,
            vec![
                "--write-out".into(),
                "[%{num_connects} %{http_code}]\n".into(),
                url.clone(),
                url.clone(),
                url.clone(),
                url,
            ],
        )
        .await;
        assert_eq!(
            out,
            "hello\n[1 200]\nhello\n[0 200]\nhello\n[0 200]\nhello\n[0 200]\n"
        );
        assert_eq!(connections.get(), 1, "one accepted connection");
        server.close();
        server.close_clients();
        server.wait_closed().await;
    });
}

/// The hello/echo service, counting its clones (one per connection).
struct Counted(Rc<Cell<usize>>);

impl Clone for Counted {
    fn clone(&self) -> Counted {
        self.0.set(self.0.get() + 1);
        Counted(self.0.clone())
    }
}

impl hyper::service::Service<Request<Incoming>> for Counted {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>>>>;
    fn call(&self, req: Request<Incoming>) -> Self::Future {
        Box::pin(hello_or_echo(req))
    }
}

#[test]
fn curl_posts_one_megabyte_and_gets_it_back() {
    let dir = std::env::temp_dir().join(format!("aioloop-hyper-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sent = dir.join("sent.bin");
    let got = dir.join("got.bin");
    let data = pattern(1 << 20, 13);
    std::fs::write(&sent, &data).unwrap();
    let (s, g) = (sent.clone(), got.clone());
    on_loop(|l| async move {
        let server = serve_http1(&l, local(), hyper::service::service_fn(hello_or_echo))
            .await
            .unwrap();
        let url = format!("http://127.0.0.1:{}/echo", port_of(&server));
        let out = curl(
            &l,
            vec![
                "--data-binary".into(),
                format!("@{}", s.display()),
                "--output".into(),
                g.display().to_string(),
                "--write-out".into(),
                "%{http_code} %{size_upload} %{size_download}".into(),
                url,
            ],
        )
        .await;
        assert_eq!(out, "200 1048576 1048576");
        server.close();
        server.close_clients();
        server.wait_closed().await;
    });
    assert!(std::fs::read(&got).unwrap() == data, "the echo differs");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hyper_client_on_the_loop_against_the_server() {
    on_loop(|l| async move {
        let server = serve_http1(&l, local(), hyper::service::service_fn(hello_or_echo))
            .await
            .unwrap();
        let port = port_of(&server);
        let io = HyperStream::connect(&l, "127.0.0.1", port).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        let conn = l.create_task(conn).unwrap();
        for _ in 0..3 {
            let req = Request::get(format!("http://127.0.0.1:{port}/"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let res = sender.send_request(req).await.unwrap();
            assert_eq!(res.status(), 200);
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"hello\n");
        }
        // A body well above the transport's high-water mark, both ways.
        let big = Bytes::from(pattern(700_000, 5));
        let req = Request::post(format!("http://127.0.0.1:{port}/echo"))
            .body(Full::new(big.clone()))
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(body == big, "the echo differs");
        // Every request went over the one connection.
        assert_eq!(server.active_connections(), 1);
        // Dropping the sender ends the client connection cleanly.
        drop(sender);
        conn.await.unwrap().unwrap();
        server.close();
        server.wait_closed().await;
    });
}

#[test]
fn h2c_with_prior_knowledge_from_curl_and_a_hyper_client() {
    on_loop(|l| async move {
        let server = serve_http2(&l, local(), hyper::service::service_fn(hello_or_echo))
            .await
            .unwrap();
        let port = port_of(&server);
        let out = curl(
            &l,
            vec![
                "--http2-prior-knowledge".into(),
                "--write-out".into(),
                "[%{http_version} %{http_code}]".into(),
                format!("http://127.0.0.1:{port}/"),
            ],
        )
        .await;
        assert_eq!(out, "hello\n[2 200]");

        // hyper's HTTP/2 client on the loop: concurrent streams on one
        // connection (the client's streams are tasks of LoopExecutor).
        let io = HyperStream::connect(&l, "127.0.0.1", port).await.unwrap();
        let (sender, conn) = hyper::client::conn::http2::handshake(LoopExecutor::new(&l), io)
            .await
            .unwrap();
        let conn = l.create_task(conn).unwrap();
        let mut tasks = Vec::new();
        for i in 0..8usize {
            let mut sender = sender.clone();
            tasks.push(
                l.create_task(async move {
                    let body = Bytes::from(pattern(100_000 + i, i));
                    let req = Request::post(format!("http://127.0.0.1:{port}/echo"))
                        .body(Full::new(body.clone()))
                        .unwrap();
                    let res = sender.send_request(req).await.unwrap();
                    assert_eq!(res.version(), hyper::Version::HTTP_2);
                    let got = res.into_body().collect().await.unwrap().to_bytes();
                    assert!(got == body, "stream {i}: the echo differs");
                })
                .unwrap(),
            );
        }
        for t in tasks {
            t.await.unwrap();
        }
        drop(sender);
        conn.await.unwrap().unwrap();
        server.close();
        server.close_clients();
        server.wait_closed().await;
    });
}

#[test]
fn header_read_timeout_closes_a_silent_client() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    on_loop(|l| async move {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(LoopTimer::new(&l))
            .header_read_timeout(TIMEOUT);
        let server = serve_http1_with(
            &l,
            local(),
            ServerOptions::default(),
            builder,
            hyper::service::service_fn(hello_or_echo),
        )
        .await
        .unwrap();
        let port = port_of(&server);
        // A raw client that connects and says nothing; it waits (bounded)
        // for the server to close the connection.
        let (elapsed, read) = l
            .run_in_executor(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let start = Instant::now();
                let mut buf = [0u8; 256];
                let read = s.read(&mut buf).map_err(|e| e.kind());
                (start.elapsed(), read)
            })
            .unwrap()
            .await
            .unwrap();
        // EOF (or a reset): the server closed it; a timeout of the read
        // would be Err(WouldBlock/TimedOut) after 20 s.
        match read {
            Ok(0) | Err(std::io::ErrorKind::ConnectionReset) => {}
            other => panic!("the server did not close the silent client: {other:?}"),
        }
        assert!(
            elapsed >= TIMEOUT - Duration::from_millis(50),
            "{elapsed:?}"
        );
        assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");

        // A client that does speak is served by the same server.
        let answer = l
            .run_in_executor(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .unwrap();
                let mut all = String::new();
                s.read_to_string(&mut all).map(|_| all)
            })
            .unwrap()
            .await
            .unwrap()
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nhello\n"), "{answer}");
        server.close();
        server.wait_closed().await;
    });
}

#[test]
fn hyper_over_a_stream_pair_ends_every_connection_cleanly() {
    use aioloop::hyper::FuturesIo;
    use std::cell::RefCell;
    on_loop(|l| async move {
        // hyper on asyncio's high-level streams through the generic
        // futures-io adapter: each connection's outcome is recorded.
        let outcomes: Rc<RefCell<Vec<String>>> = Rc::default();
        let changed = Rc::new(Notify::default());
        let c = changed.clone();
        let o = outcomes.clone();
        let server = l
            .start_server(
                move |r, w| {
                    let (o, c) = (o.clone(), c.clone());
                    async move {
                        let io = FuturesIo::new(StreamPair::new(r, w));
                        let served = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, hyper::service::service_fn(hello_or_echo))
                            .await;
                        o.borrow_mut().push(format!("{served:?}"));
                        c.wake();
                    }
                },
                &["127.0.0.1"],
                0,
                ServerOptions::default(),
            )
            .await
            .unwrap();
        let url = format!("http://127.0.0.1:{}/", port_of(&server));
        // Keep-alive, then the client goes away: hyper shuts down.
        let out = curl(&l, vec![url.clone(), url.clone()]).await;
        assert_eq!(out, "hello\nhello\n");
        // The client asks to close: hyper closes after its response.
        let out = curl(&l, vec!["--header".into(), "Connection: close".into(), url]).await;
        assert_eq!(out, "hello\n");
        server.close();
        server.wait_closed().await;
        // The client tasks may end after their connections.
        changed.until(|| outcomes.borrow().len() == 2).await;
        assert_eq!(*outcomes.borrow(), ["Ok(())", "Ok(())"]);
    });
}

/// A one-shot value sent from another thread (its waker crosses threads).
#[derive(Default)]
struct FromThread(std::sync::Mutex<(Option<String>, Option<std::task::Waker>)>);

impl FromThread {
    fn send(&self, v: String) {
        let waker = {
            let mut s = self.0.lock().unwrap();
            s.0 = Some(v);
            s.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    async fn recv(&self) -> String {
        std::future::poll_fn(|cx| {
            let mut s = self.0.lock().unwrap();
            match s.0.take() {
                Some(v) => std::task::Poll::Ready(v),
                None => {
                    s.1 = Some(cx.waker().clone());
                    std::task::Poll::Pending
                }
            }
        })
        .await
    }
}

#[test]
fn a_service_that_waits_is_woken_through_the_connection_waker() {
    // The response is ready only after a loop timer, then a value sent from
    // another thread: the connection is woken by its waker (not by its
    // protocol), on the loop thread and from another thread.
    on_loop(|l| async move {
        let lp = l.clone();
        let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
            let lp = lp.clone();
            async move {
                lp.sleep(Duration::from_millis(20)).await.unwrap();
                let slot = std::sync::Arc::new(FromThread::default());
                let s = slot.clone();
                let sender = std::thread::spawn(move || s.send("waited\n".into()));
                let text = slot.recv().await;
                sender.join().unwrap();
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
            }
        });
        let server = serve_http1(&l, local(), service).await.unwrap();
        let url = format!("http://127.0.0.1:{}/", port_of(&server));
        let out = curl(&l, vec![url.clone(), url]).await;
        assert_eq!(out, "waited\nwaited\n");
        server.close();
        server.close_clients();
        server.wait_closed().await;
    });
}

#[test]
fn a_panicking_service_is_reported_and_its_connection_closed() {
    let ((), seen) = on_loop_recording(|l| async move {
        let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
            if req.uri().path() == "/panic" {
                panic!("the service panicked");
            }
            hello_or_echo(req).await
        });
        let server = serve_http1(&l, local(), service).await.unwrap();
        let port = port_of(&server);
        let got = l
            .run_in_executor(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                s.write_all(b"GET /panic HTTP/1.1\r\nHost: x\r\n\r\n")
                    .unwrap();
                let mut all = Vec::new();
                s.read_to_end(&mut all).map(|_| all).map_err(|e| e.kind())
            })
            .unwrap()
            .await
            .unwrap();
        // Closed without an answer (EOF, or a reset).
        match got {
            Ok(bytes) => assert!(bytes.is_empty(), "{:?}", String::from_utf8_lossy(&bytes)),
            Err(kind) => assert_eq!(kind, std::io::ErrorKind::ConnectionReset),
        }
        // The server goes on serving.
        let out = curl(&l, vec![format!("http://127.0.0.1:{port}/")]).await;
        assert_eq!(out, "hello\n");
        server.close();
        server.close_clients();
        server.wait_closed().await;
    });
    let seen = seen.borrow();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert!(
        seen[0]
            .panic
            .as_deref()
            .unwrap_or("")
            .contains("the service panicked"),
        "{seen:#?}"
    );
}
