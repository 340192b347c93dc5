#![cfg(all(feature = "net", feature = "process"))]
//! What `use aioloop::prelude::*` gives a program (issue 13, item 3): the
//! address and extra-info types print as people write them, `?` takes I/O
//! errors into `LoopError`, and every connection/server future of the
//! extension traits is lazy and `'static` (it can be made from temporary
//! arguments and handed to `create_task`).

use std::io;
use std::net::TcpStream;

use crate::net_util::*;
use crate::util::*;
use aioloop::prelude::*;

/// A protocol that keeps its transport and does nothing else.
#[derive(Default)]
struct Keep(Option<Transport>);

impl BaseProtocol for Keep {
    fn connection_made(&mut self, t: Transport) {
        self.0 = Some(t);
    }
}

impl Protocol for Keep {
    fn data_received(&mut self, _data: &[u8]) {}
}

#[test]
fn the_prelude_brings_sockaddr_datagram_addr_stdio_and_signal_names() {
    // Named through the prelude alone (a compile-time part), and the
    // constants are the platform's numbers.
    let addr: SockAddr = SockAddr::from(std::path::Path::new("/tmp/x.sock"));
    assert_eq!(addr.to_string(), "/tmp/x.sock");
    let d: DatagramAddr = ("127.0.0.1", 53).into();
    assert!(matches!(d, DatagramAddr::Host(..)), "{d:?}");
    // Stdio from the prelude drives a real child: stdout piped, stderr
    // to /dev/null.
    let lp = new_loop();
    let l = lp.clone();
    let out = run(&lp, async move {
        let options = SubprocessOptions::new()
            .stdout(Stdio::Pipe)
            .stderr(Stdio::DevNull);
        let mut child = l
            .create_subprocess_shell("echo out; echo err >&2", options)
            .await
            .unwrap();
        let (stdout, stderr) = child.communicate(None).await.unwrap();
        assert!(stderr.is_empty());
        stdout
    });
    assert_eq!(out, b"out\n");
    lp.close().unwrap();
    assert_eq!(SIGINT, rustix::process::Signal::INT.as_raw());
    assert_eq!(SIGTERM, rustix::process::Signal::TERM.as_raw());
    assert_eq!(aioloop::SIGUSR1, rustix::process::Signal::USR1.as_raw());
}

#[test]
fn peer_and_socket_addresses_print_as_host_colon_port() {
    let (peer, sock, server_port, client_port, fd) = on_loop(|l| async move {
        let server = l
            .create_server(Keep::default, &["127.0.0.1"], 0, ServerOptions::default())
            .await
            .unwrap();
        let port = server.sockets()[0].as_inet().unwrap().port();
        let (t, _h) = l
            .create_connection(Keep::default, Some("127.0.0.1"), port, Default::default())
            .await
            .unwrap();
        let peer = t.get_extra_info("peername").unwrap().to_string();
        let sock = t.get_extra_info("sockname").unwrap().to_string();
        let client_port = t.sockname().unwrap().as_inet().unwrap().port();
        let fd = t.get_extra_info("socket").unwrap().to_string();
        t.close();
        server.close();
        server.wait_closed().await;
        (peer, sock, port, client_port, fd)
    });
    assert_eq!(peer, format!("127.0.0.1:{server_port}"));
    assert_eq!(sock, format!("127.0.0.1:{client_port}"));
    assert!(fd.parse::<i32>().unwrap() > 2, "{fd}");
}

/// Mixes loop calls and I/O in one function with one error type.
fn mixed(lp: &EventLoop, path: &std::path::Path) -> Result<String, LoopError> {
    lp.call_soon(|| {})?;
    let text = std::fs::read_to_string(path)?;
    Ok(text)
}

#[test]
fn question_mark_turns_an_io_error_into_a_loop_error_keeping_it_as_source() {
    let lp = new_loop();
    let err = mixed(&lp, std::path::Path::new("/nonexistent/aioloop/file")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert_eq!(err.io_error().unwrap().kind(), io::ErrorKind::NotFound);
    let source = std::error::Error::source(&err).unwrap();
    assert!(source.downcast_ref::<io::Error>().is_some());
    lp.close().unwrap();
    // And the same function reports the loop's own error with its kind.
    assert_eq!(
        mixed(&lp, std::path::Path::new("/")).unwrap_err().kind(),
        ErrorKind::Closed
    );
}

#[test]
fn server_futures_do_nothing_until_awaited() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let path = TempPath::new("lazy");
    // Made, not polled: no socket file, nothing listening.
    let unix = lp.create_unix_server(Keep::default, &path.0, ServerOptions::default());
    let streams = lp.start_unix_server(
        |_r, _w| async {},
        &path.0,
        ServerOptions::default(),
        aioloop::net::DEFAULT_LIMIT,
    );
    assert!(
        !path.0.exists(),
        "create_unix_server listened before it was awaited"
    );
    drop(streams);
    assert!(!path.0.exists());
    // Awaited: it listens.
    let p = path.0.clone();
    let server = run(&lp, async move { unix.await.unwrap() });
    assert!(p.exists());
    std::os::unix::net::UnixStream::connect(&p).unwrap();
    server.close();
    run(&lp, async move { server.wait_closed().await });
    finish(&lp, &seen);
}

#[test]
fn connection_and_server_futures_own_their_arguments_and_can_be_tasks() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let (listener, addr) = std_listener("127.0.0.1:0");
    let accepted = std::thread::spawn(move || {
        let mut n = 0;
        for s in listener.incoming().take(3) {
            let _s: TcpStream = s.unwrap();
            n += 1;
        }
        n
    });
    // Every host name lives in a temporary `String` dropped before the
    // futures run, and `create_task` takes only `'static` futures.
    let connect = {
        let host = addr.ip().to_string();
        lp.create_connection(Keep::default, Some(&host), addr.port(), Default::default())
    };
    let open = {
        let host = addr.ip().to_string();
        lp.open_connection(&host, addr.port())
    };
    let open_with = {
        let host = addr.ip().to_string();
        lp.open_connection_with(Some(&host), addr.port(), Default::default(), 1024)
    };
    let server = {
        let hosts = [String::from("127.0.0.1")];
        let refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
        lp.create_server(Keep::default, &refs, 0, ServerOptions::default())
    };
    let stream_server = {
        let hosts = [String::from("127.0.0.1")];
        let refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
        lp.start_server(|_r, _w| async {}, &refs, 0, ServerOptions::default())
    };
    let t1 = lp.create_task(connect).unwrap();
    let t2 = lp.create_task(open).unwrap();
    let t3 = lp.create_task(open_with).unwrap();
    let t4 = lp.create_task(server).unwrap();
    let t5 = lp.create_task(stream_server).unwrap();
    run(&lp, async move {
        let (t, _h) = t1.await.unwrap().unwrap();
        let (_r, w2) = t2.await.unwrap().unwrap();
        let (_r, w3) = t3.await.unwrap().unwrap();
        let s4 = t4.await.unwrap().unwrap();
        let s5 = t5.await.unwrap().unwrap();
        assert_eq!(t.peername().unwrap().as_inet(), Some(addr));
        assert_eq!(w2.transport().peername().unwrap().as_inet(), Some(addr));
        assert_eq!(w3.transport().peername().unwrap().as_inet(), Some(addr));
        assert!(s4.is_serving() && s5.is_serving());
        t.close();
        w2.close();
        w3.close();
        for s in [s4, s5] {
            s.close();
            s.wait_closed().await;
        }
    });
    assert_eq!(accepted.join().unwrap(), 3);
    finish(&lp, &seen);
}
