//! A server whose accept() runs out of file descriptors (EMFILE) reports it
//! ("socket.accept() out of system resource"), stops watching the listener
//! instead of spinning, and accepts again after asyncio's one-second retry
//! delay once descriptors are free.
//!
//! Its own test binary: it lowers RLIMIT_NOFILE and fills the descriptor
//! table of the whole process, which would break tests running beside it.
#![cfg(feature = "net")]

mod net_util;
mod util;

use std::cell::RefCell;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use aioloop::prelude::*;
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

#[test]
fn accept_out_of_descriptors_is_reported_then_retried() {
    const N: usize = 3;
    let lp = util::new_loop();
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
            ServerOptions::default(),
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
}
