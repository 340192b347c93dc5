//! Re-entrancy: from inside a call_soon callback, a timer callback, a reader
//! and a task, every loop method may be called (stop, call_soon, cancelling
//! itself and others, remove/add_reader, close, run_*, the exception handler
//! API), and Drop code run by the loop may schedule work.

use std::cell::RefCell;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use crate::util::*;
use aioloop::{EventLoop, ExceptionContext};

#[derive(Clone, Copy, Debug)]
enum Via {
    CallSoon,
    Timer,
    Reader,
    Task,
}

/// Everything the body touches.
struct Scene {
    lp: EventLoop,
    log: Log<String>,
    /// Cancels the running callback itself (its handle, or its reader).
    cancel_self: RefCell<Option<Box<dyn Fn()>>>,
    /// A callback due in the same batch, after the body: cancelled by it.
    victim: RefCell<Option<aioloop::TimerHandle>>,
    /// A registered reader (never readable) that the body removes.
    other_fd: RawFd,
    /// A readable socket that the body starts watching.
    new_fd: RawFd,
    runs: Rc<std::cell::Cell<usize>>,
}

fn body(s: &Scene) {
    let lp = &s.lp;
    bump(&s.runs);
    let push = |m: String| s.log.borrow_mut().push(m);
    lp.stop();
    let l = s.log.clone();
    lp.call_soon(move || l.borrow_mut().push("call_soon ran".into()))
        .unwrap();
    if let Some(cancel) = s.cancel_self.borrow().as_ref() {
        cancel();
    }
    s.victim.borrow().as_ref().unwrap().cancel();
    assert!(lp.remove_reader(s.other_fd).unwrap());
    let (l, lp2, fd) = (s.log.clone(), lp.clone(), s.new_fd);
    lp.add_reader(fd, move || {
        l.borrow_mut().push("added reader ran".into());
        lp2.remove_reader(fd).unwrap();
    })
    .unwrap();
    push(format!("close: {:?}", lp.close().unwrap_err().kind()));
    push(format!(
        "run_forever: {:?}",
        lp.run_forever().unwrap_err().kind()
    ));
    push(format!(
        "run_until_complete: {:?}",
        lp.run_until_complete(async {}).unwrap_err().kind()
    ));
    let l = s.log.clone();
    lp.set_exception_handler(move |_, ctx| {
        l.borrow_mut().push(format!("handler: {}", ctx.message))
    });
    lp.call_exception_handler(ExceptionContext::new("from inside"));
    assert!(lp.is_running() && !lp.is_closed());
    push("body done".into());
}

fn scenario(via: Via) {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let (_x, other) = UnixStream::pair().unwrap();
    lp.add_reader(other.as_raw_fd(), || panic!("never readable"))
        .unwrap();
    let (mut new_w, new) = UnixStream::pair().unwrap();
    new_w.write_all(b"!").unwrap();
    let (mut own_w, own) = UnixStream::pair().unwrap();
    own_w.write_all(b"go").unwrap();

    let scene = Rc::new(Scene {
        lp: lp.clone(),
        log: log(),
        cancel_self: RefCell::new(None),
        victim: RefCell::new(None),
        other_fd: other.as_raw_fd(),
        new_fd: new.as_raw_fd(),
        runs: counter(),
    });
    let s = scene.clone();
    let run_body = move || body(&s);
    match via {
        Via::CallSoon => {
            let h = lp.call_soon(run_body.clone()).unwrap();
            *scene.cancel_self.borrow_mut() = Some(Box::new(move || h.cancel()));
        }
        Via::Timer => {
            let h = lp.call_later(Duration::ZERO, run_body.clone()).unwrap();
            *scene.cancel_self.borrow_mut() = Some(Box::new(move || h.cancel()));
        }
        Via::Reader => {
            let fd = own.as_raw_fd();
            lp.add_reader(fd, run_body.clone()).unwrap();
            let lp2 = lp.clone();
            *scene.cancel_self.borrow_mut() =
                Some(Box::new(move || assert!(lp2.remove_reader(fd).unwrap())));
        }
        Via::Task => {}
    }
    // Due in the same iteration, queued after the body.
    let l = scene.log.clone();
    *scene.victim.borrow_mut() = Some(
        lp.call_later(Duration::ZERO, move || {
            l.borrow_mut().push("victim ran".into())
        })
        .unwrap(),
    );

    let dog = Watchdog::start(&lp);
    match via {
        Via::Task => lp.run_until_complete(async move { run_body() }).unwrap(),
        _ => lp.run_forever().unwrap(),
    }
    dog.disarm();
    assert_eq!(
        *scene.log.borrow(),
        [
            "close: Running",
            "run_forever: AlreadyRunning",
            "run_until_complete: AlreadyRunning",
            "handler: from inside",
            "body done",
        ],
        "via {via:?}"
    );
    // What the body scheduled runs in the next iteration; nothing else.
    one_iteration(&lp);
    one_iteration(&lp);
    let log = scene.log.borrow();
    assert_eq!(
        log[5..],
        ["call_soon ran", "added reader ran"],
        "via {via:?}"
    );
    drop(log);
    assert_eq!(scene.runs.get(), 1, "the body ran once (via {via:?})");
    assert!(
        seen.borrow().is_empty(),
        "no panic anywhere: {:?}",
        seen.borrow()
    );
    *scene.cancel_self.borrow_mut() = None;
    lp.close().unwrap();
}

#[test]
fn everything_from_inside_a_call_soon_callback() {
    scenario(Via::CallSoon);
}

#[test]
fn everything_from_inside_a_timer_callback() {
    scenario(Via::Timer);
}

#[test]
fn everything_from_inside_a_reader() {
    scenario(Via::Reader);
}

#[test]
fn everything_from_inside_a_task() {
    scenario(Via::Task);
}

/// Schedules a callback from its `Drop`.
struct ScheduleOnDrop {
    lp: EventLoop,
    log: Log<String>,
    name: &'static str,
}

impl Drop for ScheduleOnDrop {
    fn drop(&mut self) {
        let (l, name) = (self.log.clone(), self.name);
        let r = self
            .lp
            .call_soon(move || l.borrow_mut().push(format!("scheduled by {name}'s drop")));
        self.log.borrow_mut().push(format!(
            "{} dropped: {}",
            self.name,
            if r.is_ok() { "ok" } else { "refused" }
        ));
    }
}

#[test]
fn drop_code_run_by_the_loop_may_schedule_callbacks() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let log = log::<String>();
    let guard = |name| ScheduleOnDrop {
        lp: lp.clone(),
        log: log.clone(),
        name,
    };
    // Cancelled before the run.
    let g = guard("cancelled handle");
    lp.call_soon(move || drop(g)).unwrap().cancel();
    // Cancelled timer, from inside a callback.
    let g = guard("cancelled timer");
    let t = lp
        .call_later(Duration::from_secs(3600), move || drop(g))
        .unwrap();
    lp.call_soon(move || t.cancel()).unwrap();
    // A replaced reader's closure.
    let (_a, b) = UnixStream::pair().unwrap();
    let fd = b.as_raw_fd();
    let g = guard("replaced reader");
    lp.add_reader(fd, move || {
        let _ = &g;
    })
    .unwrap();
    let lp2 = lp.clone();
    lp.call_soon(move || lp2.add_reader(fd, || {}).unwrap())
        .unwrap();
    // A callback that consumed its capture while running.
    let g = guard("consumed");
    lp.call_soon(move || drop(g)).unwrap();

    one_iteration(&lp);
    one_iteration(&lp);
    let got = log.borrow().clone();
    for name in [
        "cancelled handle",
        "cancelled timer",
        "replaced reader",
        "consumed",
    ] {
        assert!(got.contains(&format!("{name} dropped: ok")), "{got:?}");
        assert!(
            got.contains(&format!("scheduled by {name}'s drop")),
            "{got:?}"
        );
    }

    // Dropped by close(): scheduling is refused with an error, no panic.
    let g = guard("closed");
    lp.call_soon(move || drop(g)).unwrap();
    lp.remove_reader(fd).unwrap();
    lp.close().unwrap();
    assert!(log
        .borrow()
        .contains(&"closed dropped: refused".to_string()));
    assert!(seen.borrow().is_empty(), "{:?}", seen.borrow());
}

#[test]
fn drop_code_may_close_or_stop_the_loop_it_is_dropped_by() {
    /// Tries to close and stop the loop from its `Drop`, logging the outcome.
    struct CloseOnDrop(EventLoop, Log<String>);
    impl Drop for CloseOnDrop {
        fn drop(&mut self) {
            let r = self.0.close().map_err(|e| e.kind());
            self.0.stop();
            self.1.borrow_mut().push(format!("{r:?}"));
        }
    }
    let lp = new_loop();
    let log = log::<String>();
    // Cancelled from inside a callback: the loop is running, close is refused.
    let h = lp
        .call_later(Duration::from_secs(60), {
            let g = CloseOnDrop(lp.clone(), log.clone());
            move || drop(g)
        })
        .unwrap();
    lp.call_soon(move || h.cancel()).unwrap();
    run_bounded(&lp);
    assert_eq!(*log.borrow(), ["Err(Running)"]);
    assert!(!lp.is_closed());
    // Dropped by close() itself: the loop is already closed, so Ok.
    let g = CloseOnDrop(lp.clone(), log.clone());
    lp.call_soon(move || drop(g)).unwrap();
    let g = CloseOnDrop(lp.clone(), log.clone());
    lp.call_later(Duration::from_secs(60), move || drop(g))
        .unwrap();
    lp.close().unwrap();
    assert!(lp.is_closed());
    assert_eq!(*log.borrow(), ["Err(Running)", "Ok(())", "Ok(())"]);
}

#[test]
fn the_exception_handler_may_use_the_loop() {
    let lp = new_loop();
    let log = log::<String>();
    let l = log.clone();
    lp.set_exception_handler(move |lp, ctx| {
        l.borrow_mut().push(ctx.message.clone());
        // Replace itself, schedule, stop, report again (to the new handler).
        let l2 = l.clone();
        lp.set_exception_handler(move |_, ctx| {
            l2.borrow_mut().push(format!("second: {}", ctx.message))
        });
        let l3 = l.clone();
        lp.call_soon(move || l3.borrow_mut().push("scheduled by handler".into()))
            .unwrap();
        lp.call_exception_handler(ExceptionContext::new("nested report"));
        lp.stop();
    });
    lp.call_soon(|| panic!("boom")).unwrap();
    run_bounded(&lp);
    one_iteration(&lp);
    let got = log.borrow();
    assert!(got[0].starts_with("Exception in callback"), "{got:?}");
    assert_eq!(got[1..], ["second: nested report", "scheduled by handler"]);
    drop(got);
    lp.close().unwrap();
}
