#![cfg(feature = "net")]
//! Panic reports a user can act on (issue 13, item 6): one report per panic
//! (the loop's, not the panic hook's as well), with the panic's
//! `file:line:col`, and a protocol's panic names the protocol's type.
//!
//! The stderr test runs this binary again as a child (`AIOLOOP_PANIC_CHILD`
//! set, one test selected) and counts the reports in the child's stderr.
//! aioloop's panic hook is process-wide, so these tests have their own
//! binary.

mod util;

use std::cell::RefCell;
use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};

use aioloop::prelude::*;
use util::*;

/// Every exception-handler call: the message, the error's text, the extras.
type Reports = Rc<RefCell<Vec<(String, String, Vec<(String, String)>)>>>;

fn record(lp: &EventLoop) -> Reports {
    let seen: Reports = Rc::default();
    let s = seen.clone();
    lp.set_exception_handler(move |_, ctx| {
        let error = ctx
            .error
            .as_ref()
            .map(|e| e.to_string())
            .unwrap_or_default();
        s.borrow_mut()
            .push((ctx.message.clone(), error, ctx.extra.clone()));
    });
    seen
}

#[test]
fn a_callback_panic_is_reported_with_its_location() {
    let lp = new_loop();
    let seen = record(&lp);
    let line = line!() + 1;
    lp.call_soon(|| panic!("callback boom")).unwrap();
    one_iteration(&lp);
    let seen = seen.borrow();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (_, error, _) = &seen[0];
    let at = format!("tests/panic_reports.rs:{line}:");
    assert!(error.contains(&at), "no location {at} in {error:?}");
    assert!(error.contains("callback boom"), "{error:?}");
    drop(seen);
    lp.close().unwrap();
}

#[test]
fn a_panicking_task_error_carries_the_location() {
    let lp = new_loop();
    let l = lp.clone();
    let line = line!() + 3;
    let err = lp
        .run_until_complete(async move {
            let task = l.create_task(async { panic!("task boom") }).unwrap();
            task.await.unwrap_err()
        })
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::Panicked);
    let panic = err.panic().expect("a PanicError source");
    assert_eq!(panic.message(), "task boom");
    let loc = panic.location().expect("the location");
    assert!(
        loc.starts_with(&format!("tests/panic_reports.rs:{line}:")),
        "{loc}"
    );
    assert!(err.to_string().contains(loc), "{err}");
    lp.close().unwrap();
}

/// A protocol whose `data_received` panics.
struct Exploder(Option<Transport>);

impl BaseProtocol for Exploder {
    fn connection_made(&mut self, t: Transport) {
        self.0 = Some(t);
    }
}

impl Protocol for Exploder {
    fn data_received(&mut self, _data: &[u8]) {
        EXPLODER_LINE.store(line!() + 1, Ordering::SeqCst);
        panic!("protocol boom");
    }
}

/// The line of `Exploder`'s `panic!`.
static EXPLODER_LINE: AtomicU32 = AtomicU32::new(0);

#[test]
fn a_protocol_panic_names_the_protocol_type_and_where_it_panicked() {
    let lp = new_loop();
    let seen = record(&lp);
    let l = lp.clone();
    let s = seen.clone();
    let dog = Watchdog::start(&lp);
    lp.run_until_complete(async move {
        let server = l
            .create_server(
                || Exploder(None),
                &["127.0.0.1"],
                0,
                ServerOptions::default(),
            )
            .await
            .unwrap();
        let port = server.sockets()[0].as_inet().unwrap().port();
        let writer = l
            .run_in_executor(move || {
                let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
                c.write_all(b"x").unwrap();
                c
            })
            .unwrap();
        let _client = writer.await.unwrap();
        // The panic closes the connection: wait for its report.
        while s.borrow().is_empty() {
            l.sleep(std::time::Duration::from_millis(1)).await.unwrap();
        }
        server.close();
        server.wait_closed().await;
    })
    .unwrap();
    dog.disarm();
    let seen = seen.borrow();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (message, error, extra) = &seen[0];
    assert_eq!(
        message,
        "Fatal error: protocol.data_received() call failed."
    );
    let name = std::any::type_name::<Exploder>();
    assert!(name.ends_with("Exploder"), "{name}");
    assert!(
        extra.contains(&("protocol".to_string(), name.to_string())),
        "{extra:?}"
    );
    assert!(extra
        .iter()
        .any(|(k, v)| k == "transport" && v.starts_with("fd=")));
    let line = EXPLODER_LINE.load(Ordering::SeqCst);
    let want = format!("{name}.data_received() panicked at tests/panic_reports.rs:{line}:");
    assert!(
        error.starts_with(&want),
        "{error:?} does not start with {want:?}"
    );
    drop(seen);
    lp.close().unwrap();
}

/// Run as a child only: a panicking callback on a running loop (reported
/// by the default exception handler to stderr), and a panic on a thread of
/// its own outside any loop (printed by the panic hook).
#[test]
fn child_scenario() {
    if std::env::var_os("AIOLOOP_PANIC_CHILD").is_none() {
        return;
    }
    let lp = EventLoop::new().unwrap();
    lp.call_soon(|| panic!("callback marker 7f3a")).unwrap();
    let stopper = lp.clone();
    lp.call_soon(move || stopper.stop()).unwrap();
    lp.run_forever().unwrap();
    let outside = std::thread::spawn(|| panic!("outside marker 91c2"));
    assert!(outside.join().is_err());
    lp.close().unwrap();
}

#[test]
fn stderr_holds_one_report_per_panic_with_its_location() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_scenario",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("AIOLOOP_PANIC_CHILD", "1")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed: {}\n{stderr}",
        out.status
    );
    // The callback's panic: one report (the loop's), with the location.
    // The "panicked at" lines about `marker` (the hook's format puts the
    // message on the next line, the loop's on the same one).
    let lines: Vec<&str> = stderr.lines().collect();
    let about = |marker: &str| -> Vec<&str> {
        (0..lines.len())
            .filter(|&i| lines[i].contains("panicked at"))
            .filter(|&i| {
                lines[i].contains(marker) || lines.get(i + 1).is_some_and(|n| n.contains(marker))
            })
            .map(|i| lines[i])
            .collect()
    };
    let callback = about("callback marker 7f3a");
    assert_eq!(callback.len(), 1, "{callback:?}\nstderr:\n{stderr}");
    assert!(
        callback[0].contains("callback panicked at tests/panic_reports.rs:"),
        "{callback:?}"
    );
    assert!(
        !stderr.contains("thread 'main' panicked"),
        "the hook printed the loop's panic too:\n{stderr}"
    );
    // A panic outside the loop is the hook's, once.
    let outside = about("outside marker 91c2");
    assert_eq!(outside.len(), 1, "{outside:?}\nstderr:\n{stderr}");
    assert!(outside[0].starts_with("thread '"), "{outside:?}");
}
