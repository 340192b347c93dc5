//! Python's own asyncio as an independent peer of aioloop's stream
//! transports: 1 MiB of patterned bytes echoed, byte for byte, over TCP and
//! Unix sockets, with aioloop as the server (a Python client) and as the
//! client (a Python server). The Python side is `tests/python/peer.py`.
//!
//! The loop keeps running while the Python process does: the child's exit
//! is polled with `try_wait` from a loop timer, and a Python server's first
//! stdout line (its port) is read on a helper thread and handed to the loop
//! through `call_soon_threadsafe`. Every test is bounded ([`LIMIT`]): past
//! it the child is killed and the test fails. When `python3` is not on the
//! PATH each test prints why and returns.
#![cfg(feature = "net")]

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use aioloop::net::{
    BaseProtocol, ConnectOptions, Protocol, ServerOptions, StreamLoopExt, Transport,
};
use aioloop::prelude::*;
use futures_lite::future;

/// Bytes echoed per test.
const SIZE: usize = 1 << 20;
/// The Python client's write size: not a power of two, so chunk boundaries
/// drift against the reads.
const CHUNK: usize = 50_000;
/// What the Rust client writes per `write()` call.
const RUST_CHUNK: usize = 48 * 1024 + 7;
/// A failure guard for a loaded machine, never a synchronisation.
const LIMIT: Duration = Duration::from_secs(60);
/// How often the loop checks whether the Python process has exited.
const EXIT_POLL: Duration = Duration::from_millis(5);

/// Byte `i` of the stream (the same rule as peer.py's `pattern`).
fn pattern_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// Counts the bytes of `data` that break the pattern, `data` starting at
/// stream offset `offset`.
fn mismatches(data: &[u8], offset: usize) -> usize {
    data.iter()
        .enumerate()
        .filter(|&(i, &b)| b != pattern_byte(offset + i))
        .count()
}

/// `false` (after saying so) when there is no `python3` to run.
fn have_python(test: &str) -> bool {
    match Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            eprintln!("{test}: skipped: python3 is not on the PATH");
            false
        }
        Err(e) => panic!("cannot run python3: {e}"),
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/peer.py")
}

// --- A loop Future completed from another thread -------------------------

thread_local! {
    /// The futures that [`RemoteSetter`]s will complete, by id. A loop
    /// `Future` is `!Send`; the setter's callback runs on the loop thread,
    /// which is the thread that created it, and finds it here.
    static REMOTE: RefCell<HashMap<u64, Box<dyn Any>>> = RefCell::new(HashMap::new());
}

static NEXT_REMOTE: AtomicU64 = AtomicU64::new(0);

/// Completes, from any thread, a `Future` of the loop that made it.
struct RemoteSetter<T> {
    handle: LoopHandle,
    id: u64,
    _value: PhantomData<fn(T)>,
}

fn remote_future<T: Send + 'static>(lp: &EventLoop) -> (aioloop::Future<T>, RemoteSetter<T>) {
    let fut = lp.create_future::<T>();
    let id = NEXT_REMOTE.fetch_add(1, Ordering::Relaxed);
    REMOTE.with(|r| r.borrow_mut().insert(id, Box::new(fut.clone())));
    let setter = RemoteSetter {
        handle: lp.handle(),
        id,
        _value: PhantomData,
    };
    (fut, setter)
}

impl<T: Send + 'static> RemoteSetter<T> {
    fn set(self, value: T) {
        let id = self.id;
        let _ = self.handle.call_soon_threadsafe(move || {
            let slot = REMOTE.with(|r| r.borrow_mut().remove(&id));
            if let Some(fut) = slot.and_then(|f| f.downcast::<aioloop::Future<T>>().ok()) {
                let _ = fut.set_result(value);
            }
        });
    }
}

// --- The Python process ----------------------------------------------------

/// A running `peer.py`: its stdout lines are collected on a helper thread
/// (the first one also goes to the loop as a `Future`), its stderr on
/// another. Dropping it kills the process if it is still running.
struct Peer {
    child: Rc<RefCell<Child>>,
    first_line: Option<aioloop::Future<Option<String>>>,
    stdout: Option<JoinHandle<Vec<String>>>,
    stderr: Option<JoinHandle<String>>,
}

/// What the Python process left behind.
struct PeerOutput {
    status: Option<ExitStatus>,
    stdout: Vec<String>,
    stderr: String,
}

impl std::fmt::Display for PeerOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "python exit: {:?}; stdout: {:?}; stderr:\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

impl Peer {
    fn spawn(lp: &EventLoop, args: &[&str]) -> Peer {
        let mut child = Command::new("python3")
            .arg(script())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning python3");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (first_line, setter) = remote_future::<Option<String>>(lp);
        let stdout = std::thread::spawn(move || {
            let mut setter = Some(setter);
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(s) = setter.take() {
                    s.set(Some(line.clone()));
                }
                lines.push(line);
            }
            if let Some(s) = setter.take() {
                s.set(None); // EOF before any line: the process is gone
            }
            lines
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Peer {
            child: Rc::new(RefCell::new(child)),
            first_line: Some(first_line),
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    /// Kills the process if it still runs, reaps it, and collects its output.
    fn finish(mut self) -> PeerOutput {
        let status = self.reap();
        let stdout = self.stdout.take().map(|t| t.join().unwrap_or_default());
        let stderr = self.stderr.take().map(|t| t.join().unwrap_or_default());
        PeerOutput {
            status,
            stdout: stdout.unwrap_or_default(),
            stderr: stderr.unwrap_or_default(),
        }
    }

    /// The exit status if the process exited by itself.
    fn reap(&self) -> Option<ExitStatus> {
        let mut child = self.child.borrow_mut();
        match child.try_wait() {
            Ok(Some(status)) => Some(status),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.reap();
    }
}

/// Resolves when the process exits, checking from a loop timer so the loop
/// keeps serving meanwhile.
async fn exited(lp: &EventLoop, child: &RefCell<Child>) -> io::Result<ExitStatus> {
    loop {
        if let Some(status) = child.borrow_mut().try_wait()? {
            return Ok(status);
        }
        lp.sleep(EXIT_POLL).await.map_err(io::Error::from)?;
    }
}

/// Runs `work` on the loop, failing after [`LIMIT`].
fn run_bounded<T: 'static>(
    lp: &EventLoop,
    work: impl std::future::Future<Output = Result<T, String>> + 'static,
) -> Result<T, String> {
    let lp2 = lp.clone();
    let timeout = async move {
        let _ = lp2.sleep(LIMIT).await;
        Err(format!("timed out after {LIMIT:?}"))
    };
    lp.run_until_complete(future::or(work, timeout))
        .map_err(|e| format!("run_until_complete: {e}"))?
}

/// A fresh directory for a Unix socket, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("aioloop-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("creating a temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// --- aioloop as the server ---------------------------------------------------

/// What the server side saw, over all its connections.
#[derive(Debug, Default)]
struct ServerSeen {
    made: usize,
    bytes: usize,
    mismatches: usize,
    eofs: usize,
    lost: Vec<Option<String>>,
    pauses: usize,
}

/// Echoes, checks the pattern as it goes, and pauses reading while its
/// write buffer is above the high-water mark.
struct EchoServer {
    seen: Rc<RefCell<ServerSeen>>,
    transport: Option<Transport>,
}

impl BaseProtocol for EchoServer {
    fn connection_made(&mut self, transport: Transport) {
        self.seen.borrow_mut().made += 1;
        self.transport = Some(transport);
    }

    fn connection_lost(&mut self, error: Option<io::Error>) {
        self.seen
            .borrow_mut()
            .lost
            .push(error.map(|e| e.to_string()));
    }

    fn pause_writing(&mut self) {
        self.seen.borrow_mut().pauses += 1;
        self.transport.as_ref().unwrap().pause_reading();
    }

    fn resume_writing(&mut self) {
        self.transport.as_ref().unwrap().resume_reading();
    }
}

impl Protocol for EchoServer {
    fn data_received(&mut self, data: &[u8]) {
        let mut seen = self.seen.borrow_mut();
        seen.mismatches += mismatches(data, seen.bytes);
        seen.bytes += data.len();
        self.transport.as_ref().unwrap().write(data).unwrap();
    }

    fn eof_received(&mut self) -> bool {
        self.seen.borrow_mut().eofs += 1;
        false // close once the echoes are flushed
    }
}

enum Endpoint<'a> {
    Tcp,
    Unix(&'a Path),
}

/// An aioloop echo server, a Python asyncio client.
fn python_client_case(test: &str, endpoint: Endpoint<'_>) {
    if !have_python(test) {
        return;
    }
    let lp = EventLoop::new().expect("new loop");
    let seen = Rc::new(RefCell::new(ServerSeen::default()));
    let s = seen.clone();
    let factory = move || EchoServer {
        seen: s.clone(),
        transport: None,
    };
    let lp2 = lp.clone();
    let unix_path = match endpoint {
        Endpoint::Unix(p) => Some(p.to_path_buf()),
        Endpoint::Tcp => None,
    };
    let path = unix_path.clone();
    let server = run_bounded(&lp, async move {
        let opts = ServerOptions::default();
        match &path {
            None => lp2.create_server(factory, &["127.0.0.1"], 0, opts).await,
            Some(p) => lp2.create_unix_server(factory, p, opts).await,
        }
        .map_err(|e| format!("create_server: {e}"))
    })
    .unwrap();

    let (size, chunk) = (SIZE.to_string(), CHUNK.to_string());
    let port;
    let args: Vec<&str> = match &unix_path {
        None => {
            port = server.sockets()[0].as_inet().unwrap().port().to_string();
            vec!["client", "tcp", "127.0.0.1", &port, &size, &chunk]
        }
        Some(p) => vec!["client", "unix", p.to_str().unwrap(), &size, &chunk],
    };
    let peer = Peer::spawn(&lp, &args);
    let child = peer.child.clone();
    let (lp2, srv) = (lp.clone(), server.clone());
    let result = run_bounded(&lp, async move {
        let status = exited(&lp2, &child).await.map_err(|e| e.to_string())?;
        // Python exits after reading our EOF, which the transport sends
        // only after its connection_lost ran, so this does not wait long.
        srv.close();
        srv.wait_closed().await;
        Ok(status)
    });
    let out = peer.finish();
    let status = result.unwrap_or_else(|e| panic!("{test}: {e}\n{out}"));
    assert!(status.success(), "{test}: the Python client failed\n{out}");
    assert_eq!(
        out.stdout,
        [format!("ok: echoed {SIZE} bytes")],
        "{test}\n{out}"
    );

    let seen = seen.borrow();
    eprintln!("{test}: {seen:?}");
    assert_eq!(seen.made, 1, "{test}: {seen:?}");
    assert_eq!(seen.bytes, SIZE, "{test}: {seen:?}");
    assert_eq!(seen.mismatches, 0, "{test}: {seen:?}");
    assert_eq!(seen.eofs, 1, "{test}: {seen:?}");
    assert_eq!(
        seen.lost,
        [None],
        "{test}: connection_lost once, without error"
    );
    assert_eq!(server.active_connections(), 0);
    if let Some(p) = &unix_path {
        assert!(!p.exists(), "{test}: the socket file outlived the server");
    }
    drop(seen);
    lp.close().expect("close");
}

#[test]
fn python_client_echoes_through_aioloop_tcp_server() {
    python_client_case(
        "python_client_echoes_through_aioloop_tcp_server",
        Endpoint::Tcp,
    );
}

#[test]
fn python_client_echoes_through_aioloop_unix_server() {
    let dir = TempDir::new("pyclient");
    python_client_case(
        "python_client_echoes_through_aioloop_unix_server",
        Endpoint::Unix(&dir.0.join("echo.sock")),
    );
}

// --- aioloop as the client ---------------------------------------------------

/// What the client side saw.
#[derive(Debug, Default)]
struct ClientSeen {
    sent: usize,
    received: usize,
    mismatches: usize,
    eofs: usize,
    pauses: usize,
    resumes: usize,
    lost: Vec<Option<String>>,
}

/// Sends the pattern in `RUST_CHUNK` writes while the transport is not
/// paused, half-closes after the last byte, and checks what comes back.
struct Pump {
    seen: Rc<RefCell<ClientSeen>>,
    transport: Option<Transport>,
    paused: bool,
    closed: Option<aioloop::Future<()>>,
}

impl Pump {
    fn pump(&mut self) {
        let t = self.transport.clone().unwrap();
        let high = t.get_write_buffer_limits().1;
        let mut seen = self.seen.borrow_mut();
        // A pause_writing that a write() below triggers arrives only after
        // this callback returns, so also stop at the high-water mark.
        while seen.sent < SIZE && !self.paused && t.get_write_buffer_size() <= high {
            let end = (seen.sent + RUST_CHUNK).min(SIZE);
            let chunk: Vec<u8> = (seen.sent..end).map(pattern_byte).collect();
            t.write(&chunk).unwrap();
            seen.sent = end;
            if end == SIZE {
                t.write_eof().unwrap();
            }
        }
    }
}

impl BaseProtocol for Pump {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
        self.pump();
    }

    fn connection_lost(&mut self, error: Option<io::Error>) {
        self.seen
            .borrow_mut()
            .lost
            .push(error.map(|e| e.to_string()));
        if let Some(c) = self.closed.take() {
            c.set_result(()).unwrap();
        }
    }

    fn pause_writing(&mut self) {
        self.seen.borrow_mut().pauses += 1;
        self.paused = true;
    }

    fn resume_writing(&mut self) {
        self.seen.borrow_mut().resumes += 1;
        self.paused = false;
        self.pump();
    }
}

impl Protocol for Pump {
    fn data_received(&mut self, data: &[u8]) {
        let mut seen = self.seen.borrow_mut();
        seen.mismatches += mismatches(data, seen.received);
        seen.received += data.len();
    }

    fn eof_received(&mut self) -> bool {
        self.seen.borrow_mut().eofs += 1;
        false
    }
}

/// A Python asyncio echo server, an aioloop client.
fn python_server_case(test: &str, endpoint: Endpoint<'_>) {
    if !have_python(test) {
        return;
    }
    let lp = EventLoop::new().expect("new loop");
    let unix_path = match endpoint {
        Endpoint::Unix(p) => Some(p.to_path_buf()),
        Endpoint::Tcp => None,
    };
    let args: Vec<&str> = match &unix_path {
        None => vec!["server", "tcp", "127.0.0.1"],
        Some(p) => vec!["server", "unix", p.to_str().unwrap()],
    };
    let mut peer = Peer::spawn(&lp, &args);
    let first_line = peer.first_line.take().unwrap();
    let child = peer.child.clone();
    let seen = Rc::new(RefCell::new(ClientSeen::default()));
    let (lp2, s) = (lp.clone(), seen.clone());
    let result = run_bounded(&lp, async move {
        let line = first_line
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the Python server exited before printing its address")?;
        let closed = lp2.create_future::<()>();
        let for_pump = closed.clone();
        let protocol = move || Pump {
            seen: s,
            transport: None,
            paused: false,
            closed: Some(for_pump),
        };
        let (transport, _pump) = match &unix_path {
            None => {
                let port: u16 = line
                    .strip_prefix("port ")
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| format!("unexpected first line {line:?}"))?;
                lp2.create_connection(protocol, Some("127.0.0.1"), port, ConnectOptions::default())
                    .await
            }
            Some(p) => {
                if line != "ready" {
                    return Err(format!("unexpected first line {line:?}"));
                }
                lp2.create_unix_connection(protocol, p).await
            }
        }
        .map_err(|e| format!("connecting: {e}"))?;
        closed.await.map_err(|e| e.to_string())?;
        if !transport.is_closing() {
            return Err("the transport is not closing after connection_lost".into());
        }
        exited(&lp2, &child).await.map_err(|e| e.to_string())
    });
    let out = peer.finish();
    let status = result.unwrap_or_else(|e| panic!("{test}: {e}\n{out}"));
    assert!(status.success(), "{test}: the Python server failed\n{out}");
    assert_eq!(out.stdout.len(), 2, "{test}\n{out}");
    assert_eq!(
        out.stdout[1],
        format!("ok: echoed {SIZE} bytes"),
        "{test}\n{out}"
    );

    let seen = seen.borrow();
    eprintln!("{test}: {seen:?}");
    assert_eq!(seen.sent, SIZE, "{test}: {seen:?}");
    assert_eq!(seen.received, SIZE, "{test}: {seen:?}");
    assert_eq!(seen.mismatches, 0, "{test}: {seen:?}");
    assert_eq!(seen.eofs, 1, "{test}: {seen:?}");
    assert_eq!(seen.pauses, seen.resumes, "{test}: {seen:?}");
    assert_eq!(
        seen.lost,
        [None],
        "{test}: connection_lost once, without error"
    );
    drop(seen);
    lp.close().expect("close");
}

#[test]
fn aioloop_client_echoes_through_python_tcp_server() {
    python_server_case(
        "aioloop_client_echoes_through_python_tcp_server",
        Endpoint::Tcp,
    );
}

#[test]
fn aioloop_client_echoes_through_python_unix_server() {
    let dir = TempDir::new("pyserver");
    python_server_case(
        "aioloop_client_echoes_through_python_unix_server",
        Endpoint::Unix(&dir.0.join("echo.sock")),
    );
}
