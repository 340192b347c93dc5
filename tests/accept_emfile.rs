//! A server whose accept() runs out of file descriptors (EMFILE) reports it
//! ("socket.accept() out of system resource"), stops watching the listener
//! instead of spinning, and accepts again after asyncio's one-second retry
//! delay once descriptors are free.
//!
//! Its own test binary: it lowers RLIMIT_NOFILE and fills the descriptor
//! table of the whole process, which would break tests running beside it
//! (its two tests take turns).
//!
//! The server starts serving once the table is full: io_uring's accept
//! takes the RLIMIT_NOFILE in force when it is armed (the kernel reads it
//! at submission), so a multishot accept armed before the limit was
//! lowered would still find room above it.
#![cfg(feature = "net")]

mod net_util;
mod util;

use std::cell::RefCell;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aioloop::prelude::*;
use aioloop::{Backend, EventLoop, Server};
use net_util::*;
use rustix::net::{AddressFamily, SocketType};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use util::run;

fn highest_open_fd() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap()
}

static TABLE: Mutex<()> = Mutex::new(());

#[test]
fn accept_out_of_descriptors_is_reported_then_retried() {
    let _turn = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    out_of_descriptors(util::new_loop());
}

/// The same on io_uring's multishot accept (issue 14): the kernel ends
/// the accept with `EMFILE`; the server reports it once and arms a new
/// accept a second later.
#[test]
fn a_uring_multishot_accept_out_of_descriptors_is_reported_then_retried() {
    let _turn = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lp) = util::uring_loop() else { return };
    let server = out_of_descriptors(lp.clone());
    drop(server);
}

/// The scenario on `lp`; returns the (closed) server.
fn out_of_descriptors(lp: EventLoop) -> Server {
    const N: usize = 3;
    let reports: Rc<RefCell<Vec<String>>> = Rc::new(RefCell::new(Vec::new()));
    let out_of_fds = lp.create_future::<Instant>();
    let (r, f) = (reports.clone(), out_of_fds.clone());
    lp.set_exception_handler(move |_, ctx| {
        r.borrow_mut().push(format!(
            "{}: {:?}",
            ctx.message,
            ctx.error.as_ref().map(|e| e.to_string())
        ));
        if ctx
            .message
            .contains("socket.accept() out of system resource")
            && !f.done()
        {
            f.set_result(Instant::now()).unwrap();
        }
    });
    let acc = Accepted::new();
    let l = lp.clone();
    let a = acc.clone();
    let server = run(&lp, async move {
        l.create_server(
            a.factory(Hooks::echo),
            &["127.0.0.1"],
            0,
            ServerOptions {
                start_serving: false,
                ..ServerOptions::default()
            },
        )
        .await
        .unwrap()
    });
    let addr = server.sockets()[0].as_inet().unwrap();

    // The clients' sockets exist before the table is full; they connect
    // after (a connect needs no new descriptor).
    let clients: Vec<OwnedFd> = (0..N)
        .map(|_| rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap())
        .collect();
    let old = getrlimit(Resource::Nofile);
    let low = highest_open_fd() + 16;
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(low),
            maximum: old.maximum,
        },
    )
    .unwrap();
    let mut fillers = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => fillers.push(f),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::MFILE.raw_os_error()) => break,
            Err(e) => panic!("filling the descriptor table: {e}"),
        }
        assert!(
            fillers.len() < 10_000,
            "the lowered RLIMIT_NOFILE is not enforced"
        );
    }
    server.start_serving().unwrap();
    for fd in server.listener_fds() {
        assert_eq!(
            lp.has_reader(fd),
            lp.backend() != Backend::Uring,
            "the server accepts by completion on io_uring, by readiness elsewhere"
        );
    }
    for c in &clients {
        // Completes in the kernel's accept queue.
        rustix::net::connect(c, &addr).unwrap();
    }

    // The server reports the failure once and waits.
    let f = out_of_fds.clone();
    let failed_at = run(&lp, async move { f.await.unwrap() });
    assert_eq!(acc.len(), 0, "accepted without a free descriptor?");
    // One more loop pass: no report storm while the listener is parked.
    let l = lp.clone();
    run(&lp, async move {
        l.sleep(Duration::from_millis(100)).await.unwrap()
    });
    let storm = reports.borrow().len();
    assert!(
        storm <= 2,
        "the accept failure was reported {storm} times: the loop spins"
    );
    assert!(
        reports.borrow()[0].contains("socket.accept() out of system resource"),
        "{:?}",
        reports.borrow()
    );
    assert!(
        reports.borrow()[0]
            .to_lowercase()
            .contains("too many open files"),
        "{:?}",
        reports.borrow()
    );

    // Descriptors are free again: the retry accepts every waiting client.
    drop(fillers);
    setrlimit(Resource::Nofile, old).unwrap();
    let a = acc.clone();
    run(&lp, async move { a.until_made(N).await });
    let waited = failed_at.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "accepted again after {waited:?}: the retry delay is one second"
    );
    // And they work: each client is echoed.
    let mut threads = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        threads.push(peer(TcpStream::from(c), move |mut s| {
            let msg = pattern(1000, i);
            s.write_all(&msg).unwrap();
            let mut back = vec![0u8; 1000];
            s.read_exact(&mut back).unwrap();
            assert_eq!(back, msg);
        }));
    }
    let a = acc.clone();
    run(&lp, async move {
        a.notify
            .until(|| a.all().iter().all(|r| r.data_len() >= 1000))
            .await
    });
    for t in threads {
        t.join().unwrap();
    }
    let a = acc.clone();
    run(&lp, async move { a.until_all_lost(N).await });
    for r in acc.all() {
        r.assert_clean_life();
    }
    server.close();
    assert_eq!(reports.borrow().len(), storm, "{:?}", reports.borrow());
    lp.close().unwrap();
    server
}
