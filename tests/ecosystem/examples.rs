//! The `echo_server` and `echo_client` examples, run as the processes a user
//! would start: the exact `listening on ...` lines, echoes checked with std
//! sockets, shutdown on stdin EOF with exit status 0, shutdown on SIGINT and
//! SIGTERM (sent with the `kill` command) with `shutting down` and exit
//! status 0, the client's `ok:` line and its failures (exit 1), and bad
//! arguments (exit 2).
//!
//! Examples have no `CARGO_BIN_EXE_*`; the binaries are found next to this
//! test's own executable (`target/<profile>/examples/`). A plain
//! `cargo test` builds them; when they are missing (for instance with
//! `cargo test --test examples` on a clean target directory) or older than
//! their source, each test says so and returns.
#![cfg(feature = "net")]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A failure guard for a loaded machine, never a synchronisation.
const LIMIT: Duration = Duration::from_secs(60);

/// The built example `name`, or `None` (after saying so) if it is missing.
fn example(test: &str, name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<this test> -> target/<profile>/examples/<name>
    let path = exe.parent()?.parent()?.join("examples").join(name);
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.rs"));
    let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let why = match (modified(&path), modified(&source)) {
        (None, _) => "is not built",
        (Some(bin), Some(src)) if bin < src => "is older than its source",
        _ => return Some(path),
    };
    eprintln!(
        "{test}: skipped: {} {why} (a plain `cargo test` builds the examples)",
        path.display()
    );
    None
}

/// A running `echo_server`: its stdout lines arrive on a channel; dropping
/// it kills the process if it still runs.
struct EchoServer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Option<JoinHandle<String>>,
}

impl EchoServer {
    fn spawn(bin: &PathBuf, args: &[&str]) -> EchoServer {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning echo_server");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        EchoServer {
            child,
            stdin,
            lines,
            stderr: Some(stderr),
        }
    }

    /// The next stdout line; panics after [`LIMIT`] or at EOF.
    fn line(&mut self) -> String {
        match self.lines.recv_timeout(LIMIT) {
            Ok(line) => line,
            Err(e) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = self.stderr.take().unwrap().join().unwrap_or_default();
                panic!("no line from echo_server ({e}); stderr:\n{stderr}")
            }
        }
    }

    /// Closes stdin (the shutdown request) and waits for the exit, bounded.
    /// Returns the status, the stdout lines not read yet, and stderr.
    fn shut_down(mut self) -> (ExitStatus, Vec<String>, String) {
        drop(self.stdin.take());
        let status = wait_bounded(&mut self.child, "echo_server");
        let stderr = self.stderr.take().unwrap().join().unwrap_or_default();
        let rest: Vec<String> = self.lines.try_iter().collect();
        (status, rest, stderr)
    }

    /// Sends `signal` (`INT`, `TERM`) to the server from another process:
    /// the `kill` command, as a user would.
    fn kill(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal}: {status:?}");
    }

    /// Waits for the exit after a signal, bounded, with stdin still open (so
    /// that its end plays no part). Returns the status, every stdout line not
    /// read yet (up to EOF), and stderr.
    fn wait_exit(mut self) -> (ExitStatus, Vec<String>, String) {
        let status = wait_bounded(&mut self.child, "echo_server");
        let mut rest = Vec::new();
        loop {
            match self.lines.recv_timeout(LIMIT) {
                Ok(line) => rest.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("echo_server's stdout not closed {LIMIT:?} after its exit")
                }
            }
        }
        drop(self.stdin.take());
        let stderr = self.stderr.take().unwrap().join().unwrap_or_default();
        (status, rest, stderr)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits for `child` to exit, polling; kills it and panics after [`LIMIT`].
fn wait_bounded(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Runs a process to completion with stdin closed, bounded by [`LIMIT`].
fn run_to_end(bin: &PathBuf, args: &[&str]) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning an example");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let status = wait_bounded(&mut child, &bin.display().to_string());
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The port of a `listening on tcp://{ip}:PORT` line, checking the rest of
/// the line exactly.
fn tcp_port(line: &str, ip: &str) -> u16 {
    let prefix = format!("listening on tcp://{ip}:");
    let port = line
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("expected {prefix:?}PORT, got {line:?}"));
    let port: u16 = port
        .parse()
        .unwrap_or_else(|e| panic!("bad port in {line:?}: {e}"));
    assert_ne!(port, 0, "{line:?}");
    port
}

/// Sends `size` patterned bytes through `stream` (from a second thread, so
/// that neither side's socket buffer can stall the other), reads the echo,
/// and checks it.
fn echo_check<S>(stream: S, clone: S, size: usize)
where
    S: Read + Write + Send + 'static,
{
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let to_send = data.clone();
    let mut writer = clone;
    let w = thread::spawn(move || writer.write_all(&to_send));
    let mut reader = stream;
    let mut got = vec![0u8; size];
    reader.read_exact(&mut got).expect("reading the echo");
    w.join().unwrap().expect("writing");
    assert!(got == data, "the echo differs from what was sent");
}

fn tcp_echo_check(port: u16, ip: &str, size: usize) -> TcpStream {
    let s = TcpStream::connect((ip, port)).expect("connecting");
    s.set_read_timeout(Some(LIMIT)).unwrap();
    echo_check(s.try_clone().unwrap(), s.try_clone().unwrap(), size);
    s
}

fn unix_echo_check(path: &PathBuf, size: usize) -> UnixStream {
    let s = UnixStream::connect(path).expect("connecting");
    s.set_read_timeout(Some(LIMIT)).unwrap();
    echo_check(s.try_clone().unwrap(), s.try_clone().unwrap(), size);
    s
}

/// Checks that the next read from a client of the server is EOF (0 bytes);
/// data, a reset, or no answer within its [`LIMIT`] read timeout fail.
fn assert_eof(mut client: impl Read, what: &str) {
    let mut buf = [0u8; 1024];
    match client.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: {n} unexpected bytes instead of EOF"),
        Err(e) => panic!("{what}: no EOF: {e}"),
    }
}

/// The exit of a server shut down by a signal: status 0 (not killed by the
/// signal), `shutting down` as the only line after the `listening on` ones,
/// nothing on stderr.
fn assert_signal_exit((status, rest, stderr): (ExitStatus, Vec<String>, String)) {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.code(),
        Some(0),
        "{status:?} (signal {:?})\nstderr: {stderr}",
        status.signal()
    );
    assert_eq!(rest, ["shutting down"], "stderr: {stderr}");
    assert!(stderr.is_empty(), "stderr: {stderr}");
}

/// `echo_server --tcp 127.0.0.1:0` with a client connected, shut down by
/// `kill -SIGNAL`: the client gets EOF, new connections are refused, and the
/// server exits 0 after `shutting down`.
fn tcp_signal_shutdown(test: &str, signal: &str) {
    let Some(bin) = example(test, "echo_server") else {
        return;
    };
    let mut server = EchoServer::spawn(&bin, &["--tcp", "127.0.0.1:0"]);
    let port = tcp_port(&server.line(), "127.0.0.1");
    let client = tcp_echo_check(port, "127.0.0.1", 100_000);
    server.kill(signal);
    // The server closes the client (EOF, not a reset) after it stopped
    // listening.
    assert_eof(&client, "the TCP client");
    let refused = TcpStream::connect(("127.0.0.1", port));
    assert!(
        matches!(&refused, Err(e) if e.kind() == io::ErrorKind::ConnectionRefused),
        "a new connection after SIG{signal}: {refused:?}"
    );
    assert_signal_exit(server.wait_exit());
}

/// A fresh directory for a Unix socket, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("aioloop-ex-{}-{n}", std::process::id()));
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

/// The `ok: N messages of SIZE bytes in X ms` line, checked.
fn assert_client_ok(out: &Output, count: u64, size: usize) {
    assert!(
        out.status.success(),
        "echo_client failed: {:?}\nstderr: {}",
        out.status,
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let prefix = format!("ok: {count} messages of {size} bytes in ");
    let ms = stdout
        .strip_suffix(" ms\n")
        .and_then(|s| s.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("unexpected output {stdout:?}"));
    let ms: f64 = ms.parse().unwrap_or_else(|e| panic!("{stdout:?}: {e}"));
    assert!(ms >= 0.0);
}

#[test]
fn echo_server_defaults_to_loopback_tcp_and_exits_0_when_stdin_closes() {
    let test = "echo_server_defaults_to_loopback_tcp_and_exits_0_when_stdin_closes";
    let Some(bin) = example(test, "echo_server") else {
        return;
    };
    let mut server = EchoServer::spawn(&bin, &[]);
    let port = tcp_port(&server.line(), "127.0.0.1");
    // 1 MiB, more than the server's high-water mark: its flow control
    // (pause_reading while the client has not read its echoes) takes part.
    let s = tcp_echo_check(port, "127.0.0.1", 1 << 20);
    // Our half-close: the server flushes, then closes its side.
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    (&s).read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{} bytes after the echo", rest.len());
    let (status, more, stderr) = server.shut_down();
    assert!(status.success(), "{status:?}\nstderr: {stderr}");
    assert!(more.is_empty(), "unexpected output {more:?}");
    assert!(stderr.is_empty(), "stderr: {stderr}");
}

#[test]
fn echo_server_on_tcp_and_unix_closes_its_clients_at_shutdown() {
    let test = "echo_server_on_tcp_and_unix_closes_its_clients_at_shutdown";
    let Some(bin) = example(test, "echo_server") else {
        return;
    };
    let dir = TempDir::new();
    let path = dir.0.join("echo.sock");
    let mut server = EchoServer::spawn(
        &bin,
        &["--tcp", "127.0.0.1:0", "--unix", path.to_str().unwrap()],
    );
    let port = tcp_port(&server.line(), "127.0.0.1");
    assert_eq!(
        server.line(),
        format!("listening on unix://{}", path.display())
    );
    let tcp = tcp_echo_check(port, "127.0.0.1", 100_000);
    let unix = unix_echo_check(&path, 100_000);
    // Both clients stay connected: the shutdown closes them.
    let (status, more, stderr) = server.shut_down();
    assert!(status.success(), "{status:?}\nstderr: {stderr}");
    assert!(more.is_empty(), "unexpected output {more:?}");
    let mut rest = Vec::new();
    (&tcp)
        .read_to_end(&mut rest)
        .expect("EOF on the TCP client");
    (&unix)
        .read_to_end(&mut rest)
        .expect("EOF on the Unix client");
    assert!(rest.is_empty());
    assert!(!path.exists(), "the socket file outlived the server");
}

#[test]
fn echo_server_prints_ipv6_in_brackets() {
    let test = "echo_server_prints_ipv6_in_brackets";
    let Some(bin) = example(test, "echo_server") else {
        return;
    };
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("{test}: skipped: no IPv6 loopback on this machine");
        return;
    }
    let mut server = EchoServer::spawn(&bin, &["--tcp", "[::1]:0"]);
    let port = tcp_port(&server.line(), "[::1]");
    drop(tcp_echo_check(port, "::1", 10_000));
    let (status, _, stderr) = server.shut_down();
    assert!(status.success(), "{status:?}\nstderr: {stderr}");
}

#[test]
fn echo_server_echoes_datagrams_over_udp() {
    let test = "echo_server_echoes_datagrams_over_udp";
    let Some(bin) = example(test, "echo_server") else {
        return;
    };
    let mut server = EchoServer::spawn(&bin, &["--udp", "127.0.0.1:0", "--tcp", "127.0.0.1:0"]);
    let line = server.line();
    let port: u16 = line
        .strip_prefix("listening on udp://127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("expected listening on udp://127.0.0.1:PORT, got {line:?}"));
    assert_ne!(port, 0);
    let tcp = tcp_port(&server.line(), "127.0.0.1");
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    // One datagram at a time (loopback does not drop them), each echoed
    // whole, empty and near the UDP maximum included.
    let mut buf = vec![0u8; 65_536];
    for size in [0usize, 1, 1000, 60_000] {
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        s.send(&data).unwrap();
        let n = s.recv(&mut buf).expect("the echoed datagram");
        assert!(buf[..n] == data[..], "the echo of {size} bytes differs");
    }
    // The TCP side serves alongside.
    drop(tcp_echo_check(tcp, "127.0.0.1", 1000));
    let (status, more, stderr) = server.shut_down();
    assert!(status.success(), "{status:?}\nstderr: {stderr}");
    assert!(more.is_empty(), "unexpected output {more:?}");
    assert!(stderr.is_empty(), "stderr: {stderr}");
}

#[test]
fn echo_server_shuts_down_gracefully_on_sigint() {
    tcp_signal_shutdown("echo_server_shuts_down_gracefully_on_sigint", "INT");
}

#[test]
fn echo_server_shuts_down_gracefully_on_sigterm() {
    tcp_signal_shutdown("echo_server_shuts_down_gracefully_on_sigterm", "TERM");
}

#[test]
fn echo_server_on_unix_and_udp_shuts_down_on_sigint_and_removes_its_socket() {
    let test = "echo_server_on_unix_and_udp_shuts_down_on_sigint_and_removes_its_socket";
    let Some(bin) = example(test, "echo_server") else {
        return;
    };
    let dir = TempDir::new();
    let path = dir.0.join("echo.sock");
    let mut server = EchoServer::spawn(
        &bin,
        &["--unix", path.to_str().unwrap(), "--udp", "127.0.0.1:0"],
    );
    assert_eq!(
        server.line(),
        format!("listening on unix://{}", path.display())
    );
    let line = server.line();
    let udp_port: u16 = line
        .strip_prefix("listening on udp://127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("expected listening on udp://127.0.0.1:PORT, got {line:?}"));
    let client = unix_echo_check(&path, 100_000);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(("127.0.0.1", udp_port)).unwrap();
    udp.set_read_timeout(Some(LIMIT)).unwrap();
    udp.send(b"ping").unwrap();
    let mut buf = [0u8; 16];
    let n = udp.recv(&mut buf).expect("the echoed datagram");
    assert_eq!(&buf[..n], b"ping");

    server.kill("INT");
    assert_eof(&client, "the Unix client");
    assert!(
        UnixStream::connect(&path).is_err(),
        "a new connection after SIGINT succeeded"
    );
    assert_signal_exit(server.wait_exit());
    assert!(!path.exists(), "the socket file outlived the server");
}

#[test]
fn echo_server_rejects_bad_arguments_with_status_2() {
    let test = "echo_server_rejects_bad_arguments_with_status_2";
    let Some(bin) = example(test, "echo_server") else {
        return;
    };
    for args in [
        &["--tcp"][..],
        &["--tcp", "127.0.0.1"],
        &["--tcp", "127.0.0.1:99999"],
        &["--tcp", ":80"],
        &["--udp", "127.0.0.1"],
        &["--bogus"],
    ] {
        let out = run_to_end(&bin, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out.stderr).contains("usage: echo_server"), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn echo_client_ping_pongs_with_echo_server_over_tcp_and_unix() {
    let test = "echo_client_ping_pongs_with_echo_server_over_tcp_and_unix";
    let (Some(server_bin), Some(client_bin)) =
        (example(test, "echo_server"), example(test, "echo_client"))
    else {
        return;
    };
    let dir = TempDir::new();
    let path = dir.0.join("echo.sock");
    let mut server = EchoServer::spawn(
        &server_bin,
        &["--tcp", "127.0.0.1:0", "--unix", path.to_str().unwrap()],
    );
    let port = tcp_port(&server.line(), "127.0.0.1");
    server.line();
    let addr = format!("127.0.0.1:{port}");
    let out = run_to_end(
        &client_bin,
        &["--tcp", &addr, "--count", "50", "--size", "3000"],
    );
    assert_client_ok(&out, 50, 3000);
    let out = run_to_end(
        &client_bin,
        &[
            "--unix",
            path.to_str().unwrap(),
            "--count",
            "5",
            "--size",
            "300000",
        ],
    );
    assert_client_ok(&out, 5, 300_000);
    let out = run_to_end(&client_bin, &["--tcp", &addr]);
    assert_client_ok(&out, 1, 1024);
    let (status, _, stderr) = server.shut_down();
    assert!(status.success(), "{status:?}\nstderr: {stderr}");
}

#[test]
fn echo_client_reports_a_corrupted_echo_with_status_1() {
    let test = "echo_client_reports_a_corrupted_echo_with_status_1";
    let Some(bin) = example(test, "echo_client") else {
        return;
    };
    // A bad echo server: flips one bit of the 100th byte.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bad = thread::spawn(move || -> io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_read_timeout(Some(LIMIT))?;
        let mut buf = vec![0u8; 1000];
        s.read_exact(&mut buf)?;
        buf[99] ^= 1;
        s.write_all(&buf)?;
        let _ = s.read_to_end(&mut Vec::new());
        Ok(())
    });
    let addr = format!("127.0.0.1:{port}");
    let out = run_to_end(&bin, &["--tcp", &addr, "--size", "1000"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("message 0: the echo differs at byte 99"),
        "stderr: {stderr}"
    );
    assert!(out.stdout.is_empty());
    bad.join().unwrap().unwrap();
}

#[test]
fn echo_client_reports_refused_connections_and_bad_arguments() {
    let test = "echo_client_reports_refused_connections_and_bad_arguments";
    let Some(bin) = example(test, "echo_client") else {
        return;
    };
    // A port nobody listens on: bound, then released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let out = run_to_end(&bin, &["--tcp", &addr]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains(&format!("cannot connect to tcp://{addr}")),
        "stderr: {}",
        text(&out.stderr)
    );
    let dir = TempDir::new();
    let missing = dir.0.join("nobody.sock");
    let out = run_to_end(&bin, &["--unix", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    for args in [
        &[][..],
        &["--tcp", "127.0.0.1:1", "--unix", "/x"],
        &["--tcp", "127.0.0.1:1", "--size", "0"],
        &["--tcp", "127.0.0.1:1", "--count", "many"],
        &["--what"],
    ] {
        let out = run_to_end(&bin, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out.stderr).contains("usage: echo_client"), "{args:?}");
    }
}

#[cfg(feature = "tls")]
#[test]
fn echo_server_with_tls_serves_a_rustls_client() {
    let test = "echo_server_with_tls_serves_a_rustls_client";
    let Some(bin) = example(test, "echo_server") else {
        return;
    };
    // A self-signed certificate for localhost, as PEM files.
    let dir = TempDir::new();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let mut server = EchoServer::spawn(
        &bin,
        &[
            "--tls",
            cert_path.to_str().unwrap(),
            key_path.to_str().unwrap(),
        ],
    );
    let line = server.line();
    let port: u16 = line
        .strip_prefix("listening on tls://127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));

    tls_echo_check(port, cert.der());
    let (status, more, stderr) = server.shut_down();
    assert!(status.success(), "{status:?}\nstderr: {stderr}");
    assert!(more.is_empty(), "unexpected output {more:?}");
}

/// A TLS client (rustls over a std socket) trusting `cert`: 100 kB echoed
/// byte-exact, then a clean close (our close_notify; the server's, then EOF).
#[cfg(feature = "tls")]
fn tls_echo_check(port: u16, cert: &aioloop::rustls::pki_types::CertificateDer<'static>) {
    use aioloop::rustls;
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(LIMIT)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let data: Vec<u8> = (0..100_000).map(|i| (i % 251) as u8).collect();
    tls.write_all(&data).unwrap();
    let mut echo = vec![0u8; data.len()];
    tls.read_exact(&mut echo).unwrap();
    assert!(echo == data, "the echo differs");
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[cfg(feature = "tls")]
#[test]
fn echo_server_with_tls_and_only_unix_also_serves_tls_on_the_default_tcp_address() {
    let test = "echo_server_with_tls_and_only_unix_also_serves_tls_on_the_default_tcp_address";
    let Some(bin) = example(test, "echo_server") else {
        return;
    };
    let dir = TempDir::new();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let sock_path = dir.0.join("echo.sock");
    let mut server = EchoServer::spawn(
        &bin,
        &[
            "--unix",
            sock_path.to_str().unwrap(),
            "--tls",
            cert_path.to_str().unwrap(),
            key_path.to_str().unwrap(),
        ],
    );
    let lines = [server.line(), server.line()];
    let port = lines
        .iter()
        .find_map(|l| l.strip_prefix("listening on tls://127.0.0.1:"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no TLS listener among {lines:?}"));
    let unix = format!("listening on unix://{}", sock_path.display());
    assert!(lines.contains(&unix), "{lines:?}");
    tls_echo_check(port, cert.der());
    drop(unix_echo_check(&sock_path, 10_000));
    let (status, more, stderr) = server.shut_down();
    assert!(status.success(), "{status:?}\nstderr: {stderr}");
    assert!(more.is_empty(), "unexpected output {more:?}");
}
