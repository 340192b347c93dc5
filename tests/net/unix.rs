//! Unix stream transports and servers through the facade:
//! create_unix_server / create_unix_connection echo, half-close, the socket
//! file's life (a stale file is replaced, a live server is never stolen from:
//! LESSONS G12, the file is removed on close, other files are left alone),
//! and Linux abstract names (no file at all).
#![cfg(feature = "net")]

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::net_util::*;
use crate::util::*;
use aioloop::prelude::*;
use aioloop::SockAddr;

/// Connects a recording client that writes `payload` at once and waits for
/// the echo.
async fn echo_once(lp: &EventLoop, path: &Path, payload: Vec<u8>) -> (Transport, Rc<Recorder>) {
    let rec = Recorder::new();
    let (r, p) = (rec.clone(), payload.clone());
    let (t, _h) = lp
        .create_unix_connection(
            move || {
                RecordingProtocol::new(&r, Hooks::none().on_made(move |t, _| t.write(&p).unwrap()))
            },
            path,
        )
        .await
        .unwrap();
    assert!(
        rec.is_made(),
        "create_unix_connection returned before connection_made"
    );
    rec.until_data(payload.len()).await;
    assert!(rec.bytes() == payload, "the echo differs");
    (t, rec)
}

fn is_socket(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false)
}

/// An echo server (recorded in `acc`) on the Unix socket `path`.
async fn echo_server(lp: &EventLoop, acc: &Rc<Accepted>, path: &Path) -> Server {
    lp.create_unix_server(acc.factory(Hooks::echo), path, ServerOptions::default())
        .await
        .unwrap()
}

/// The error of a `create_unix_server` on `path` that must fail.
async fn server_err(lp: &EventLoop, path: &Path) -> io::Error {
    lp.create_unix_server(
        || RecordingProtocol::new(&Recorder::new(), Hooks::none()),
        path,
        ServerOptions::default(),
    )
    .await
    .unwrap_err()
}

/// The error of a `create_unix_connection` to `path` that must fail.
async fn connect_err(lp: &EventLoop, path: &Path) -> io::Error {
    lp.create_unix_connection(
        || RecordingProtocol::new(&Recorder::new(), Hooks::none()),
        path,
    )
    .await
    .map(|_| ())
    .unwrap_err()
}

#[test]
fn unix_echo_of_one_mebibyte_and_addresses() {
    let tmp = TempPath::new("echo");
    let path = tmp.0.clone();
    on_loop(|l| async move {
        let acc = Accepted::new();
        let server = echo_server(&l, &acc, &path).await;
        assert!(is_socket(&path));
        assert!(server.is_serving());
        assert_eq!(server.sockets(), vec![SockAddr::Unix(path.clone())]);
        let payload = pattern(1 << 20, 7);
        let (t, rec) = echo_once(&l, &path, payload.clone()).await;
        assert!(acc.get(0).bytes() == payload);
        // The client is unnamed; its peer is the server's path.
        assert_eq!(t.peername(), Some(SockAddr::Unix(path.clone())));
        assert_eq!(t.sockname(), Some(SockAddr::Unix(PathBuf::new())));
        let srv_t = acc.get(0).transport();
        assert_eq!(srv_t.sockname(), Some(SockAddr::Unix(path.clone())));
        assert!(t.fd().is_some());
        t.close();
        rec.until_lost().await;
        acc.until_all_lost(1).await;
        rec.assert_clean_life();
        acc.get(0).assert_clean_life();
        server.close();
        server.wait_closed().await;
    });
}

#[test]
fn unix_write_eof_half_closes() {
    let tmp = TempPath::new("eof");
    let path = tmp.0.clone();
    on_loop(|l| async move {
        let acc = Accepted::new();
        let server = l
            .create_unix_server(
                acc.factory(|| {
                    Hooks::none().on_eof(|t, r| {
                        t.write(
                            &[b"len=".to_vec(), r.data_len().to_string().into_bytes()].concat(),
                        )
                        .unwrap();
                        t.close();
                        true
                    })
                }),
                &path,
                ServerOptions::default(),
            )
            .await
            .unwrap();
        let rec = Recorder::new();
        let r = rec.clone();
        let (t, _h) = l
            .create_unix_connection(move || RecordingProtocol::new(&r, Hooks::none()), &path)
            .await
            .unwrap();
        assert!(t.can_write_eof());
        t.write(b"12345").unwrap();
        t.write_eof().unwrap();
        rec.until_lost().await;
        assert_eq!(rec.bytes(), b"len=5");
        assert_eq!(
            rec.events(),
            vec![Ev::Made, Ev::Data(5), Ev::Eof, Ev::Lost(None)]
        );
        acc.until_all_lost(1).await;
        acc.get(0).assert_clean_life();
        server.close();
    });
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let tmp = TempPath::new("stale");
    let path = tmp.0.clone();
    // A socket file nobody listens on any more.
    drop(UnixListener::bind(&path).unwrap());
    assert!(is_socket(&path));
    assert_eq!(
        UnixStream::connect(&path).unwrap_err().kind(),
        io::ErrorKind::ConnectionRefused
    );
    on_loop(|l| async move {
        let acc = Accepted::new();
        let server = echo_server(&l, &acc, &path).await;
        let (t, _) = echo_once(&l, &path, b"fresh".to_vec()).await;
        t.close();
        acc.until_all_lost(1).await;
        server.close();
    });
}

#[test]
fn a_live_socket_is_addr_in_use_and_its_server_keeps_working() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    let tmp = TempPath::new("live");
    let path = tmp.0.clone();
    let other = UnixListener::bind(&path).unwrap();
    let p = path.clone();
    run(&lp, async move {
        let err = server_err(&l, &p).await;
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert!(err.to_string().contains(&p.display().to_string()), "{err}");
    });
    // The other server was not robbed of its path.
    assert!(is_socket(&path));
    // (The probe that proved it live is one empty connection in its queue:
    // a connect() is how liveness is told apart from a stale file.)
    let mut c = UnixStream::connect(&path).unwrap();
    c.write_all(b"still mine").unwrap();
    drop(c);
    let mut got = Vec::new();
    for _ in 0..2 {
        let (mut s, _) = other.accept().unwrap();
        s.read_to_end(&mut got).unwrap();
        if !got.is_empty() {
            break;
        }
    }
    assert_eq!(got, b"still mine");
    // An aioloop server is not robbed either.
    let l = lp.clone();
    let tmp2 = TempPath::new("live2");
    let path2 = tmp2.0.clone();
    run(&lp, async move {
        let acc = Accepted::new();
        let first = echo_server(&l, &acc, &path2).await;
        let err = server_err(&l, &path2).await;
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let (t, _) = echo_once(&l, &path2, b"first still serves".to_vec()).await;
        t.close();
        acc.until_all_lost(1).await;
        first.close();
    });
    finish(&lp, &seen);
}

#[test]
fn close_removes_the_file_the_server_created_and_nothing_else() {
    let tmp = TempPath::new("close");
    let path = tmp.0.clone();
    let regular = TempPath::new("regular");
    std::fs::write(&regular.0, b"not a socket").unwrap();
    let reg = regular.0.clone();
    on_loop(|l| async move {
        let acc = Accepted::new();
        let server = echo_server(&l, &acc, &path).await;
        let (t, rec) = echo_once(&l, &path, b"x".to_vec()).await;
        server.close();
        assert!(!path.exists(), "close left the socket file");
        assert_eq!(
            UnixStream::connect(&path).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        // The accepted connection lives on.
        t.write(b"y").unwrap();
        rec.until_data(2).await;
        t.close();
        acc.until_all_lost(1).await;
        server.wait_closed().await;
        // A file that is not a socket is neither removed nor bound over.
        let err = server_err(&l, &reg).await;
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert_eq!(std::fs::read(&reg).unwrap(), b"not a socket");
    });
}

#[test]
fn connecting_to_a_missing_or_dead_path_fails() {
    let missing = TempPath::new("missing");
    let dead = TempPath::new("dead");
    drop(UnixListener::bind(&dead.0).unwrap());
    let (m, d) = (missing.0.clone(), dead.0.clone());
    on_loop(|l| async move {
        let err = connect_err(&l, &m).await;
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        let err = connect_err(&l, &d).await;
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    });
}

#[test]
fn abstract_names_work_and_create_no_file() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    let name = format!("\0aioloop-test-{}-abstract", std::process::id());
    let path = PathBuf::from(OsStr::from_bytes(name.as_bytes()));
    let tmp_before: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .filter(|n| n.to_string_lossy().contains("abstract"))
        .collect();
    run(&lp, async move {
        for round in 0..2 {
            // Twice: closing releases the name (nothing to unlink).
            let acc = Accepted::new();
            let server = echo_server(&l, &acc, &path).await;
            assert_eq!(server.sockets(), vec![SockAddr::Unix(path.clone())]);
            let (t, rec) = echo_once(&l, &path, pattern(10_000, round)).await;
            assert_eq!(t.peername(), Some(SockAddr::Unix(path.clone())));
            // A second server on a live abstract name is refused.
            let err = server_err(&l, &path).await;
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
            t.close();
            rec.until_lost().await;
            acc.until_all_lost(1).await;
            server.close();
            server.wait_closed().await;
        }
    });
    let tmp_after: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .filter(|n| n.to_string_lossy().contains("abstract"))
        .collect();
    assert_eq!(tmp_before, tmp_after, "an abstract name created a file");
    assert!(
        !Path::new(&name[1..]).exists(),
        "a file named like the abstract socket appeared"
    );
    finish(&lp, &seen);
}

#[test]
fn unix_server_close_clients_and_wait_closed() {
    let tmp = TempPath::new("clients");
    let path = tmp.0.clone();
    on_loop(|l| async move {
        let acc = Accepted::new();
        let server = echo_server(&l, &acc, &path).await;
        let (_t1, r1) = echo_once(&l, &path, b"a".to_vec()).await;
        let (_t2, r2) = echo_once(&l, &path, b"b".to_vec()).await;
        server.close();
        let mut waiting = Box::pin(server.wait_closed());
        assert!(futures_lite::future::poll_once(waiting.as_mut())
            .await
            .is_none());
        server.close_clients();
        waiting.await;
        r1.until_lost().await;
        r2.until_lost().await;
        for r in acc.all().iter().chain([&r1, &r2]) {
            r.assert_clean_life();
        }
        assert!(r1.saw_eof() && r2.saw_eof());
    });
}

/// LESSONS 12: on close a server removes only the socket file *it* bound
/// (asyncio's `cleanup_socket` compares the inode). Here another program
/// (as asyncio before 3.13 does) unlinks the path and binds its own
/// listening socket there while our server runs; closing our server must
/// leave that other socket file alone, and the other server reachable.
/// Dropping a server without `close` follows the same rule.
#[test]
fn close_leaves_a_socket_file_that_another_program_bound_over_ours() {
    let tmp = TempPath::new("rebound");
    let path = tmp.0.clone();
    on_loop(|l| async move {
        for closing in [true, false] {
            let acc = Accepted::new();
            let server = echo_server(&l, &acc, &path).await;
            assert!(is_socket(&path));
            // Another program takes the path over.
            std::fs::remove_file(&path).unwrap();
            let theirs = UnixListener::bind(&path).unwrap();
            if closing {
                server.close();
                server.wait_closed().await;
            } else {
                drop(server);
            }
            assert!(
                is_socket(&path),
                "closing our server removed another program's socket file (close: {closing})"
            );
            let _client = UnixStream::connect(&path).unwrap();
            theirs.accept().unwrap();
            std::fs::remove_file(&path).unwrap();
        }
    });
}
