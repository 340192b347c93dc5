//! A tour of aioloop: every area that exists today, exercised for real, one
//! line each. Exits 0 only if every step checked out.
//!
//! Run it with `cargo run --release --example tour`.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aioloop::prelude::*;
use aioloop::{rustls, SockAddr};
use futures_lite::StreamExt as _;

type Step = Result<String, String>;
type StepFn = fn(&EventLoop) -> Step;

fn main() {
    let lp = match EventLoop::new() {
        Ok(lp) => lp,
        Err(e) => {
            eprintln!("cannot create a loop: {e}");
            std::process::exit(1);
        }
    };
    println!("aioloop tour (backend: {:?})", lp.backend());
    let steps: [(&str, StepFn); 15] = [
        ("callbacks and timers in order", callbacks_and_timers),
        ("thread-safe wake-up", threadsafe_wakeup),
        ("executor job", executor_job),
        ("fd readiness (add_reader)", fd_readiness),
        ("panic caught by the exception handler", exception_handler),
        ("async streams finalised by shutdown_asyncgens", asyncgens),
        (
            "tasks: run, gather, a cancellation observed, wait_for",
            tasks,
        ),
        ("the policy's loop", policy),
        ("TCP echo round trip", tcp_echo),
        ("Unix socket echo round trip", unix_echo),
        ("UDP datagram round trip", udp_echo),
        ("TLS handshake with a generated certificate", tls_echo),
        ("file sent with sendfile", sendfile),
        ("a subprocess through its pipes", subprocess),
        (
            "a signal sent to ourselves, handled on the loop",
            signal_step,
        ),
    ];
    let mut failed = 0;
    let only = std::env::var("TOUR_ONLY").ok();
    for (i, (name, step)) in steps.into_iter().enumerate() {
        if let Some(only) = &only {
            if !only.split(',').any(|x| x == i.to_string()) {
                continue;
            }
        }
        match step(&lp) {
            Ok(detail) => println!("  ok   {name}: {detail}"),
            Err(why) => {
                failed += 1;
                println!("  FAIL {name}: {why}");
            }
        }
    }
    let closed = lp.close().map(|_| lp.is_closed());
    match closed {
        Ok(true) => println!("  ok   loop closed"),
        other => {
            failed += 1;
            println!("  FAIL loop close: {other:?}");
        }
    }
    if failed > 0 {
        println!("{failed} step(s) failed");
        std::process::exit(1);
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn callbacks_and_timers(lp: &EventLoop) -> Step {
    let log = Rc::new(RefCell::new(Vec::new()));
    let start = lp.time();
    for (delay, name) in [
        (20u64, "timer 20ms"),
        (5, "timer 5ms"),
        (5, "timer 5ms (2nd)"),
    ] {
        let log = log.clone();
        lp.call_later(Duration::from_millis(delay), move || {
            log.borrow_mut().push(name)
        })
        .map_err(err)?;
    }
    let l = log.clone();
    lp.call_soon(move || l.borrow_mut().push("call_soon"))
        .map_err(err)?;
    let cancelled = lp.call_soon(|| unreachable!("cancelled")).map_err(err)?;
    cancelled.cancel();
    let stopper = lp.clone();
    lp.call_later(Duration::from_millis(25), move || stopper.stop())
        .map_err(err)?;
    lp.run_forever().map_err(err)?;
    let got = log.borrow().clone();
    let want = vec!["call_soon", "timer 5ms", "timer 5ms (2nd)", "timer 20ms"];
    if got != want {
        return Err(format!("order {got:?}, expected {want:?}"));
    }
    Ok(format!("{} in {:?}", got.join(" -> "), lp.time() - start))
}

fn threadsafe_wakeup(lp: &EventLoop) -> Step {
    let handle = lp.handle();
    let sent = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel::<Instant>();
    let t = std::thread::spawn(move || {
        handle
            .call_soon_threadsafe(move || tx.send(Instant::now()).unwrap())
            .unwrap();
        handle.stop().unwrap();
    });
    lp.run_forever().map_err(err)?;
    t.join().map_err(|_| "sender thread panicked".to_string())?;
    let at = rx.try_recv().map_err(|_| "the callback did not run")?;
    Ok(format!(
        "callback from another thread ran after {:?}",
        at - sent
    ))
}

fn executor_job(lp: &EventLoop) -> Step {
    let job = lp
        .run_in_executor(|| (std::thread::current().id(), (1..=1_000_000u64).sum::<u64>()))
        .map_err(err)?;
    let (tid, sum) = lp.run_until_complete(job).map_err(err)?.map_err(err)?;
    if tid == std::thread::current().id() || sum != 500_000_500_000 {
        return Err("job ran on the loop thread or computed the wrong sum".into());
    }
    Ok(format!("sum computed on {tid:?}: {sum}"))
}

fn fd_readiness(lp: &EventLoop) -> Step {
    let (mut a, b) = UnixStream::pair().map_err(err)?;
    b.set_nonblocking(true).map_err(err)?;
    a.write_all(b"ping").map_err(err)?;
    let got = Rc::new(RefCell::new(Vec::new()));
    let (g, lp2, fd) = (got.clone(), lp.clone(), b.as_raw_fd());
    let mut reader = b.try_clone().map_err(err)?;
    lp.add_reader(fd, move || {
        let mut buf = [0u8; 16];
        if let Ok(n) = reader.read(&mut buf) {
            g.borrow_mut().extend_from_slice(&buf[..n]);
        }
        // Remove by the fd that was registered (not the clone's number).
        let _ = lp2.remove_reader(fd);
        lp2.stop();
    })
    .map_err(err)?;
    lp.run_forever().map_err(err)?;
    if &*got.borrow() != b"ping" {
        return Err(format!("read {:?}", got.borrow()));
    }
    Ok("read \"ping\" from a socketpair when it became readable".into())
}

fn exception_handler(lp: &EventLoop) -> Step {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    lp.set_exception_handler(move |_, ctx| s.borrow_mut().push(ctx.message.clone()));
    lp.call_soon(|| panic!("deliberate")).map_err(err)?;
    let after = Rc::new(RefCell::new(false));
    let a = after.clone();
    lp.call_soon(move || *a.borrow_mut() = true).map_err(err)?;
    lp.stop();
    // The panic is printed by the default panic hook; that is expected.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let run = lp.run_forever();
    std::panic::set_hook(hook);
    run.map_err(err)?;
    lp.clear_exception_handler();
    let msg = seen.borrow().first().cloned().ok_or("handler not called")?;
    if !*after.borrow() {
        return Err("the next callback did not run".into());
    }
    Ok(format!("handler got {msg:?}; the next callback still ran"))
}

fn asyncgens(lp: &EventLoop) -> Step {
    struct Guard(Rc<RefCell<bool>>);
    impl Drop for Guard {
        fn drop(&mut self) {
            *self.0.borrow_mut() = true;
        }
    }
    let dropped = Rc::new(RefCell::new(false));
    let guard = Guard(dropped.clone());
    let stream = futures_lite::stream::iter(0..3).map(move |x| {
        let _keep = &guard;
        x
    });
    let gen = lp.track_async_gen(stream).map_err(err)?;
    let lp2 = lp.clone();
    lp.run_until_complete(async move {
        let mut gen = gen;
        let first = futures_lite::StreamExt::next(&mut gen).await;
        lp2.shutdown_asyncgens().await.map(|_| (first, gen))
    })
    .map_err(err)?
    .map_err(err)
    .and_then(|(first, _gen)| {
        if first != Some(0) || !*dropped.borrow() {
            Err("stream not finalised".to_string())
        } else {
            Ok("a half-consumed stream was dropped on the loop thread".to_string())
        }
    })
}

/// asyncio's entry points on a loop of their own (`aioloop::run`, which the
/// tour's loop, idle between steps, does not prevent): `gather`, a task
/// that observes its cancellation at its await and cleans up, `wait_for`.
fn tasks(_lp: &EventLoop) -> Step {
    aioloop::run(|lp| async move {
        let work = (1..=3u64).map(|i| {
            let lp = lp.clone();
            async move {
                lp.sleep(Duration::from_millis(4 - i)).await?;
                Ok::<_, LoopError>(i * 14)
            }
        });
        let parts = gather(work).await?;
        let lp2 = lp.clone();
        let cleaned = Rc::new(RefCell::new(false));
        let c = cleaned.clone();
        let blocked = lp.create_task_named(
            async move {
                let slept = lp2.sleep(Duration::from_secs(3600)).await;
                if slept.is_err() {
                    // Cleanup may await too; then the cancellation goes on.
                    lp2.sleep(Duration::from_millis(1)).await?;
                    *c.borrow_mut() = true;
                }
                slept
            },
            "blocked",
        )?;
        lp.sleep(Duration::ZERO).await?;
        blocked.cancel(Some("tour says stop"));
        // Keep the message only: a body that kept the error would end
        // cancelled itself.
        let message = blocked.clone().await.err().map(|e| e.message().to_string());
        let timed_out = wait_for(
            lp.sleep(Duration::from_secs(3600)),
            Duration::from_millis(2),
        )
        .await
        .is_err_and(|e| e.kind() == ErrorKind::Timeout);
        let sum: u64 = parts.iter().sum();
        if sum != 84 || !blocked.cancelled() || !*cleaned.borrow() || !timed_out {
            return Ok(Err(format!(
                "gathered {parts:?}, cancelled {}, cleaned up {}, timed out {timed_out}",
                blocked.cancelled(),
                cleaned.borrow()
            )));
        }
        Ok::<Step, LoopError>(Ok(format!(
            "run(): gathered {parts:?}; task {:?} cancelled with {message:?} after cleaning up; \
             wait_for timed out",
            blocked.get_name()
        )))
    })
    .map_err(err)?
}

fn policy(lp: &EventLoop) -> Step {
    set_event_loop(Some(lp.clone()));
    let current = get_event_loop().map_err(err)?;
    let inside = lp
        .run_until_complete(async { get_running_loop() })
        .map_err(err)?
        .map_err(err)?;
    set_event_loop(None);
    let none = get_event_loop().is_err();
    if !current.ptr_eq(lp) || !inside.ptr_eq(lp) || !none {
        return Err("get_event_loop / get_running_loop disagree".into());
    }
    Ok("set_event_loop, get_event_loop and get_running_loop agree; cleared gives an error".into())
}

/// Echoes every byte back to the peer.
struct Echo(Option<Transport>);

impl BaseProtocol for Echo {
    fn connection_made(&mut self, transport: Transport) {
        self.0 = Some(transport);
    }
}

impl Protocol for Echo {
    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.0 {
            let _ = t.write(data);
        }
    }
}

/// Sends one message, collects the echo, closes when it is all back.
struct Client {
    message: Vec<u8>,
    got: Vec<u8>,
    transport: Option<Transport>,
    done: aioloop::Future<()>,
}

impl BaseProtocol for Client {
    fn connection_made(&mut self, transport: Transport) {
        let _ = transport.write(&self.message);
        self.transport = Some(transport);
    }

    fn connection_lost(&mut self, _error: Option<std::io::Error>) {
        let _ = self.done.set_result(());
    }
}

impl Protocol for Client {
    fn data_received(&mut self, data: &[u8]) {
        self.got.extend_from_slice(data);
        if self.got.len() >= self.message.len() {
            if let Some(t) = &self.transport {
                t.close();
            }
        }
    }
}

fn client(lp: &EventLoop, message: &[u8]) -> (impl Fn() -> Client, aioloop::Future<()>) {
    let done: aioloop::Future<()> = lp.create_future();
    let (d, m) = (done.clone(), message.to_vec());
    let factory = move || Client {
        message: m.clone(),
        got: Vec::new(),
        transport: None,
        done: d.clone(),
    };
    (factory, done)
}

fn tcp_echo(lp: &EventLoop) -> Step {
    let message: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let (factory, done) = client(lp, &message);
    let lp2 = lp.clone();
    let (got, addr) = lp
        .run_until_complete(async move {
            let server = lp2
                .create_server(|| Echo(None), &["127.0.0.1"], 0, ServerOptions::default())
                .await?;
            let addr = server.sockets()[0].clone();
            let port = addr.as_inet().map(|a| a.port()).unwrap_or(0);
            let (_t, client) = lp2
                .create_connection(factory, Some("127.0.0.1"), port, ConnectOptions::default())
                .await?;
            let _ = done.await;
            server.close();
            server.close_clients();
            server.wait_closed().await;
            let got = client.with(|c| c.got.clone());
            Ok::<_, std::io::Error>((got, addr))
        })
        .map_err(err)?
        .map_err(err)?;
    if got != message {
        return Err(format!(
            "echoed {} bytes, not the {} sent",
            got.len(),
            message.len()
        ));
    }
    Ok(format!(
        "64 KiB sent to {} and echoed back intact",
        addr.as_inet().map(|a| a.to_string()).unwrap_or_default()
    ))
}

fn unix_echo(lp: &EventLoop) -> Step {
    let dir = std::env::temp_dir().join(format!("aioloop-tour-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(err)?;
    let path = dir.join("echo.sock");
    let message = b"hello over a unix socket".to_vec();
    let (factory, done) = client(lp, &message);
    let (lp2, p) = (lp.clone(), path.clone());
    let got = lp
        .run_until_complete(async move {
            let server = lp2
                .create_unix_server(|| Echo(None), &p, ServerOptions::default())
                .await?;
            let (_t, client) = lp2.create_unix_connection(factory, &p).await?;
            let _ = done.await;
            server.close();
            server.close_clients();
            server.wait_closed().await;
            let got = client.with(|c| c.got.clone());
            Ok::<_, std::io::Error>(got)
        })
        .map_err(err)?
        .map_err(err)?;
    let removed = !path.exists();
    let _ = std::fs::remove_dir_all(&dir);
    if got != message || !removed {
        return Err(format!("echo {got:?}, socket file removed: {removed}"));
    }
    Ok(format!(
        "{} bytes echoed over {}; the socket file removed on close",
        got.len(),
        path.display()
    ))
}

/// Sends every datagram back to where it came from; resolves `lost` when
/// the endpoint is gone.
struct DatagramEcho {
    transport: Option<DatagramTransport>,
    lost: aioloop::Future<()>,
}

impl DatagramProtocol for DatagramEcho {
    fn connection_made(&mut self, transport: DatagramTransport) {
        self.transport = Some(transport);
    }

    fn datagram_received(&mut self, data: &[u8], addr: SockAddr) {
        if let Some(t) = &self.transport {
            let _ = t.sendto(data, Some(addr));
        }
    }

    fn connection_lost(&mut self, _error: Option<std::io::Error>) {
        let _ = self.lost.set_result(());
    }
}

/// Sends one datagram to its connected peer; resolves `echo` with the first
/// datagram back (or the first error), `lost` when the endpoint is gone.
struct DatagramClient {
    message: Vec<u8>,
    echo: aioloop::Future<Vec<u8>>,
    lost: aioloop::Future<()>,
}

impl DatagramProtocol for DatagramClient {
    fn connection_made(&mut self, transport: DatagramTransport) {
        if let Err(e) = transport.sendto(&self.message, None) {
            let _ = self.echo.set_exception(e);
        }
    }

    fn datagram_received(&mut self, data: &[u8], _addr: SockAddr) {
        let _ = self.echo.set_result(data.to_vec());
    }

    fn error_received(&mut self, error: std::io::Error) {
        let _ = self.echo.set_exception(error);
    }

    fn connection_lost(&mut self, _error: Option<std::io::Error>) {
        let _ = self.lost.set_result(());
    }
}

fn udp_echo(lp: &EventLoop) -> Step {
    let message = b"hello over UDP".to_vec();
    let echo: aioloop::Future<Vec<u8>> = lp.create_future();
    let server_lost: aioloop::Future<()> = lp.create_future();
    let client_lost: aioloop::Future<()> = lp.create_future();
    // A failure guard for a datagram lost on the way, never a synchronisation.
    let e = echo.clone();
    let guard = lp
        .call_later(Duration::from_secs(2), move || {
            e.cancel(Some("no echo within 2 s"));
        })
        .map_err(err)?;
    let (lp2, m) = (lp.clone(), message.clone());
    let result = lp.run_until_complete(async move {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let sl = server_lost.clone();
        let (server, _) = lp2
            .create_datagram_endpoint(
                move || DatagramEcho {
                    transport: None,
                    lost: sl,
                },
                DatagramOptions::default().with_local_addr(any),
            )
            .await?;
        let to = server.sockname().and_then(|a| a.as_inet());
        let client = match to {
            Some(to) => {
                let (e, cl) = (echo.clone(), client_lost.clone());
                lp2.create_datagram_endpoint(
                    move || DatagramClient {
                        message: m,
                        echo: e,
                        lost: cl,
                    },
                    DatagramOptions::default().with_remote_addr(to),
                )
                .await
            }
            None => Err(std::io::Error::other("the server endpoint has no address")),
        };
        let got = match &client {
            Ok(_) => echo.await.map_err(std::io::Error::from),
            Err(_) => Ok(Vec::new()),
        };
        server.close();
        let _ = server_lost.await;
        let (client, _) = client?;
        client.close();
        let _ = client_lost.await;
        Ok::<_, std::io::Error>((got?, to.unwrap_or(any)))
    });
    guard.cancel();
    let (got, to) = result.map_err(err)?.map_err(err)?;
    if got != message {
        return Err(format!("echo {got:?}, sent {message:?}"));
    }
    Ok(format!(
        "a {}-byte datagram sent to {to} came back intact; both endpoints closed",
        got.len()
    ))
}

fn tls_echo(lp: &EventLoop) -> Step {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).map_err(err)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(err)?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .map_err(err)?;
    // The client trusts exactly this self-signed certificate.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).map_err(err)?;
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(err)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Bounds on a handshake or a shutdown that would not finish.
    let limit = Duration::from_secs(5);
    let server_opts = ServerOptions {
        tls: Some(
            TlsServerOptions::new(Arc::new(server_config))
                .handshake_timeout(limit)
                .and_then(|o| o.shutdown_timeout(limit))
                .map_err(err)?,
        ),
        ..ServerOptions::default()
    };
    let connect_opts = ConnectOptions {
        tls: Some(
            TlsClientOptions::new(Arc::new(client_config))
                .server_hostname("localhost")
                .handshake_timeout(limit)
                .and_then(|o| o.shutdown_timeout(limit))
                .map_err(err)?,
        ),
        ..ConnectOptions::default()
    };
    let message = b"hello over TLS".to_vec();
    let (factory, done) = client(lp, &message);
    let lp2 = lp.clone();
    let (got, version, cipher) = lp
        .run_until_complete(async move {
            let server = lp2
                .create_server(|| Echo(None), &["127.0.0.1"], 0, server_opts)
                .await?;
            let port = server.sockets()[0].as_inet().map(|a| a.port()).unwrap_or(0);
            let connected = lp2
                .create_connection(factory, Some("127.0.0.1"), port, connect_opts)
                .await;
            let outcome = match connected {
                Ok((t, client)) => {
                    let (version, cipher) = (t.tls_version(), t.cipher());
                    let _ = done.await;
                    let got = client.with(|c| c.got.clone());
                    Ok((got, version, cipher))
                }
                Err(e) => Err(e),
            };
            server.close();
            server.close_clients();
            server.wait_closed().await;
            outcome
        })
        .map_err(err)?
        .map_err(err)?;
    if got != message {
        return Err(format!("echo {got:?}, sent {message:?}"));
    }
    let (Some(version), Some(cipher)) = (version, cipher) else {
        return Err("the transport reports no TLS version or cipher".into());
    };
    Ok(format!(
        "self-signed cert for localhost from rcgen; {version}, {} ({}-bit key); {} bytes echoed",
        cipher.name,
        cipher.secret_bits,
        got.len()
    ))
}

/// Collects what it receives; resolves `done` with it at end of stream.
struct Sink {
    got: Vec<u8>,
    done: aioloop::Future<Vec<u8>>,
}

impl BaseProtocol for Sink {}

impl Protocol for Sink {
    fn data_received(&mut self, data: &[u8]) {
        self.got.extend_from_slice(data);
    }

    fn eof_received(&mut self) -> bool {
        let _ = self.done.set_result(std::mem::take(&mut self.got));
        false
    }
}

fn sendfile(lp: &EventLoop) -> Step {
    let data: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    let path = std::env::temp_dir().join(format!("aioloop-tour-sendfile-{}", std::process::id()));
    std::fs::write(&path, &data).map_err(err)?;
    let file = std::fs::File::open(&path).map_err(err)?;
    let done: aioloop::Future<Vec<u8>> = lp.create_future();
    let lp2 = lp.clone();
    let result = lp.run_until_complete(async move {
        let d = done.clone();
        let factory = move || Sink {
            got: Vec::new(),
            done: d.clone(),
        };
        let server = lp2
            .create_server(factory, &["127.0.0.1"], 0, ServerOptions::default())
            .await?;
        let port = server.sockets()[0].as_inet().map(|a| a.port()).unwrap_or(0);
        let (t, _) = lp2
            .create_connection(
                || Echo(None),
                Some("127.0.0.1"),
                port,
                ConnectOptions::default(),
            )
            .await?;
        let sent = lp2.sendfile(&t, &file, 1000, None, true).await?;
        t.write_eof()?;
        let got = done.await?;
        t.close();
        server.close();
        server.wait_closed().await;
        Ok::<_, std::io::Error>((sent, got))
    });
    let _ = std::fs::remove_file(&path);
    let (sent, got) = result.map_err(err)?.map_err(err)?;
    if sent != data.len() as u64 - 1000 || got != data[1000..] {
        return Err(format!("sent {sent}, the server got {} bytes", got.len()));
    }
    Ok(format!(
        "{sent} bytes of a file from offset 1000, zero-copy with sendfile(2), arrived intact"
    ))
}

/// Collects a child's stdout; resolves `done` with it at `connection_lost`
/// (after the exit and the end of every pipe).
struct Collect {
    got: Vec<u8>,
    done: aioloop::Future<Vec<u8>>,
}

impl SubprocessProtocol for Collect {
    fn pipe_data_received(&mut self, fd: i32, data: &[u8]) {
        if fd == 1 {
            self.got.extend_from_slice(data);
        }
    }
    fn connection_lost(&mut self, _error: Option<std::io::Error>) {
        let _ = self.done.set_result(std::mem::take(&mut self.got));
    }
}

fn subprocess(lp: &EventLoop) -> Step {
    let done: aioloop::Future<Vec<u8>> = lp.create_future();
    let lp2 = lp.clone();
    let d = done.clone();
    let result = lp.run_until_complete(async move {
        let (t, _p) = lp2
            .subprocess_exec(
                move || Collect {
                    got: Vec::new(),
                    done: d,
                },
                "tr",
                ["a-z", "A-Z"],
                SubprocessOptions::new().stderr(aioloop::Stdio::DevNull),
            )
            .await?;
        let stdin = t
            .get_pipe_transport(0)
            .ok_or_else(|| std::io::Error::other("no stdin pipe"))?;
        stdin.write(b"hello through a child's pipes\n")?;
        stdin.write_eof()?;
        let got = done.await?;
        Ok::<_, std::io::Error>((got, t.get_pid(), t.get_returncode()))
    });
    let (got, pid, code) = result.map_err(err)?.map_err(err)?;
    if got != b"HELLO THROUGH A CHILD'S PIPES\n" || code != Some(0) {
        return Err(format!(
            "read {:?}, return code {code:?}",
            String::from_utf8_lossy(&got)
        ));
    }
    Ok(format!(
        "subprocess_exec(\"tr a-z A-Z\") pid {pid}: wrote to its stdin pipe, read {:?} back, return code 0, reaped by the loop",
        String::from_utf8_lossy(&got).trim_end()
    ))
}

fn signal_step(lp: &EventLoop) -> Step {
    use rustix::process::{getpid, kill_process, Signal};
    let usr1 = Signal::USR1.as_raw();
    let ran_on = Rc::new(RefCell::new(None));
    let (r, lp2) = (ran_on.clone(), lp.clone());
    lp.add_signal_handler(usr1, move || {
        *r.borrow_mut() = Some(std::thread::current().id());
        lp2.stop();
    })
    .map_err(err)?;
    // Sent from another thread while the loop sleeps with nothing else to do.
    let sender = std::thread::spawn(|| kill_process(getpid(), Signal::USR1));
    let guard = lp.call_later(Duration::from_secs(5), {
        let lp = lp.clone();
        move || lp.stop()
    });
    let run = lp.run_forever();
    if let Ok(g) = guard {
        g.cancel();
    }
    let removed = lp.remove_signal_handler(usr1).map_err(err)?;
    sender
        .join()
        .map_err(|_| "sender thread panicked".to_string())?
        .map_err(err)?;
    run.map_err(err)?;
    let ran = *ran_on.borrow();
    match ran {
        Some(id) if id == std::thread::current().id() && removed => Ok(
            "SIGUSR1 from another thread woke the loop; the handler ran on the loop thread and was removed".into(),
        ),
        other => Err(format!("handler ran on {other:?}, removed: {removed}")),
    }
}
