//! Independent TLS implementations as peers of aioloop's TLS transports:
//! OpenSSL's `openssl s_server` (the server of an aioloop client) and
//! `openssl s_client` (a client of an aioloop server), and Python's asyncio
//! with its `ssl` module in both directions (`tests/python/tls_peer.py`).
//! The certificates are made by rcgen for each test and written as PEM
//! files for the peers.
//!
//! The loop keeps running while a peer process works: a blocking driver of
//! the process (feeding its stdin, reading its stdout) runs on the loop's
//! default executor and the loop task awaits it; a server process's first
//! lines are read before the loop starts. Every wait is bounded ([`PEER_LIMIT`],
//! then the process is killed and the test fails). When `openssl` or
//! `python3` is missing, each test says why and returns.
#![cfg(feature = "tls")]

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use crate::net_util::{Accepted, Ev, Hooks, Recorder, RecordingProtocol};
use crate::tls_util::*;
use crate::util::on_loop;
use aioloop::prelude::*;

/// `n` lines of text whose reversals are all different.
fn text_lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "line {i:05} of the aioloop tls test {}",
                "abcdefghij".repeat(i % 7)
            )
        })
        .collect()
}

#[test]
fn aioloop_client_against_openssl_s_server() {
    let test = "aioloop_client_against_openssl_s_server";
    if !have("openssl", "version", test) {
        return;
    }
    let pki = Pki::new(&["localhost"]);
    let mut child = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            "127.0.0.1:0",
            "-naccept",
            "1",
            "-rev",
        ])
        .args([
            "-cert",
            &pki.path("server.pem"),
            "-key",
            &pki.path("server.key"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning openssl s_server");
    let port = first_line_matching(&mut child, "openssl s_server", |line| {
        line.strip_prefix("ACCEPT ")
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
    });
    let reaper = Reaper(Some(child));

    let server_der = pki.server_der.as_ref().to_vec();
    let opts = client_opts(&pki)
        .shutdown_timeout(Duration::from_secs(20))
        .unwrap();
    on_loop(|l| async move {
        let log = Recorder::new();
        let lg = log.clone();
        let (t, _h) = l
            .create_connection(
                move || RecordingProtocol::new(&lg, Hooks::none()),
                Some("127.0.0.1"),
                port,
                connect_tls(opts),
            )
            .await
            .expect("TLS connection to openssl s_server");
        assert_eq!(t.peer_certificate(), Some(server_der));
        assert_eq!(t.tls_version().as_deref(), Some("TLSv1.3"));
        // s_server -rev sends every line back reversed.
        let lines = text_lines(3000);
        let mut want = Vec::new();
        for line in &lines {
            t.write(format!("{line}\n").as_bytes()).unwrap();
            want.extend(line.bytes().rev());
            want.push(b'\n');
        }
        log.until_data_or_lost(want.len()).await;
        assert!(
            *log.data.borrow() == want,
            "s_server's reversed lines differ"
        );
        t.close();
        log.until_lost().await;
        assert_eq!(
            log.lost_outcome(),
            Some(None),
            "{:?}",
            log.lost_error.borrow()
        );
    });
    let child = reaper.take();
    let (status, out) = wait_bounded(child, "openssl s_server");
    assert!(status.success(), "openssl s_server failed: {out}");
}

#[test]
fn openssl_s_client_against_an_aioloop_server() {
    let test = "openssl_s_client_against_an_aioloop_server";
    if !have("openssl", "version", test) {
        return;
    }
    let pki = Pki::new(&["localhost"]);
    let ca = pki.path("ca.pem");
    let tls = TlsServerOptions::new(pki.server_config());
    on_loop(|l| async move {
        let acc = Accepted::new();
        let server = l
            .create_server(
                acc.factory(Hooks::echo_paced),
                &["127.0.0.1"],
                0,
                serve_tls(tls),
            )
            .await
            .unwrap();
        let port = server.sockets()[0].as_inet().unwrap().port();
        let payload = pattern(256 * 1024);
        let expected = payload.clone();
        // Drives s_client off the loop thread: feed stdin, read the echo,
        // then close stdin (s_client sends close_notify and exits).
        let driver = l
            .run_in_executor(move || -> Result<(), String> {
                let mut child = Command::new("openssl")
                    .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
                    .args(["-CAfile", &ca, "-servername", "localhost"])
                    .args([
                        "-verify_return_error",
                        "-quiet",
                        "-no_ign_eof",
                        "-nocommands",
                    ])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| format!("spawning openssl s_client: {e}"))?;
                let mut stdin = child.stdin.take().unwrap();
                let mut stdout = child.stdout.take().unwrap();
                let writer = thread::spawn(move || {
                    for chunk in payload.chunks(10_000) {
                        if stdin.write_all(chunk).is_err() {
                            break;
                        }
                    }
                    stdin
                });
                let mut got = vec![0u8; expected.len()];
                let read = stdout.read_exact(&mut got);
                drop(writer.join().unwrap()); // EOF on stdin: s_client shuts down
                let (status, out) = wait_bounded(child, "openssl s_client");
                read.map_err(|e| format!("reading the echo: {e}; s_client said: {out}"))?;
                if got != expected {
                    return Err("s_client got a different echo".into());
                }
                if !status.success() {
                    return Err(format!("s_client exited with {status}: {out}"));
                }
                Ok(())
            })
            .unwrap();
        driver.await.unwrap().unwrap();
        acc.get(0).until_lost().await;
        assert_eq!(acc.get(0).lost_outcome(), Some(None));
        assert!(
            acc.get(0).events().contains(&Ev::Eof),
            "s_client's close_notify"
        );
        server.close();
        server.wait_closed().await;
    });
}

#[test]
fn aioloop_client_against_python_asyncio_ssl_server() {
    let test = "aioloop_client_against_python_asyncio_ssl_server";
    if !have("python3", "--version", test) {
        return;
    }
    let pki = Pki::new(&["localhost"]);
    let mut child = Command::new("python3")
        .arg(tls_peer_script())
        .args(["server", &pki.path("server.pem"), &pki.path("server.key")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning python3");
    let port = first_line_matching(&mut child, "tls_peer.py server", |line| {
        line.strip_prefix("port ").and_then(|p| p.parse().ok())
    });
    let reaper = Reaper(Some(child));

    let opts = client_opts(&pki);
    on_loop(|l| async move {
        let log = Recorder::new();
        let lg = log.clone();
        let (t, _h) = l
            .create_connection(
                move || RecordingProtocol::new(&lg, Hooks::none()),
                Some("127.0.0.1"),
                port,
                connect_tls(opts),
            )
            .await
            .expect("TLS connection to Python");
        let data = pattern(1 << 20);
        for chunk in data.chunks(48 * 1024 + 7) {
            t.write(chunk).unwrap();
        }
        log.until_data_or_lost(data.len()).await;
        assert!(*log.data.borrow() == data, "Python's echo differs");
        t.close();
        log.until_lost().await;
        assert_eq!(
            log.lost_outcome(),
            Some(None),
            "{:?}",
            log.lost_error.borrow()
        );
    });
    let child = reaper.take();
    let (status, out) = wait_bounded(child, "tls_peer.py server");
    // Exit status 0: Python's connection ended without an error.
    assert!(status.success(), "tls_peer.py server failed: {out}");
}

#[test]
fn python_asyncio_ssl_client_against_an_aioloop_server() {
    let test = "python_asyncio_ssl_client_against_an_aioloop_server";
    if !have("python3", "--version", test) {
        return;
    }
    let pki = Pki::new(&["localhost"]);
    let ca = pki.path("ca.pem");
    let tls = TlsServerOptions::new(pki.server_config());
    on_loop(|l| async move {
        let acc = Accepted::new();
        let server = l
            .create_server(
                acc.factory(Hooks::echo_paced),
                &["127.0.0.1"],
                0,
                serve_tls(tls),
            )
            .await
            .unwrap();
        let port = server.sockets()[0].as_inet().unwrap().port();
        let driver = l
            .run_in_executor(move || {
                let child = Command::new("python3")
                    .arg(tls_peer_script())
                    .args([
                        "client",
                        &port.to_string(),
                        &ca,
                        &(1 << 20).to_string(),
                        "50000",
                    ])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawning python3");
                wait_bounded(child, "tls_peer.py client")
            })
            .unwrap();
        let (status, out) = driver.await.unwrap();
        assert!(status.success(), "tls_peer.py client failed: {out}");
        assert!(
            out.contains("ok: echoed 1048576 bytes over TLSv1.3"),
            "{out}"
        );
        acc.get(0).until_lost().await;
        assert_eq!(acc.get(0).lost_outcome(), Some(None));
        server.close();
        server.wait_closed().await;
    });
}
