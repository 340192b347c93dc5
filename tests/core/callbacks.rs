//! call_soon and Handle: FIFO order, one batch per iteration, cancellation
//! (before the run, from another callback, of itself), panics reported to the
//! exception handler, and the exception-handler API itself.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use crate::util::*;
use aioloop::{ErrorKind, EventLoop, ExceptionContext, Handle};

#[test]
fn call_soon_runs_callbacks_in_fifo_order() {
    let lp = new_loop();
    let order = log::<u32>();
    for i in 0..500 {
        let o = order.clone();
        lp.call_soon(move || o.borrow_mut().push(i)).unwrap();
    }
    assert_eq!(lp.ready_len(), 500);
    one_iteration(&lp);
    assert_eq!(*order.borrow(), (0..500).collect::<Vec<_>>());
    assert_eq!(lp.ready_len(), 0);
    lp.close().unwrap();
}

#[test]
fn a_callback_scheduled_from_a_callback_runs_in_the_next_iteration() {
    let lp = new_loop();
    let depth = counter();
    // A chain: each link schedules the next. One iteration runs one link.
    fn link(lp: EventLoop, depth: Rc<std::cell::Cell<usize>>) {
        bump(&depth);
        let lp2 = lp.clone();
        lp.call_soon(move || link(lp2, depth)).unwrap();
    }
    let (lp2, d) = (lp.clone(), depth.clone());
    lp.call_soon(move || link(lp2, d)).unwrap();
    for iteration in 1..=5 {
        one_iteration(&lp);
        assert_eq!(depth.get(), iteration, "exactly one link per iteration");
        assert_eq!(lp.ready_len(), 1);
    }
    lp.close().unwrap();
}

#[test]
fn a_cancelled_handle_never_runs_and_releases_its_closure() {
    let lp = new_loop();
    let ran = counter();
    let drops = counter();
    let (r, g) = (ran.clone(), DropCount(drops.clone()));
    let h = lp
        .call_soon(move || {
            let _g = &g;
            bump(&r);
        })
        .unwrap();
    assert!(!h.cancelled());
    h.cancel();
    assert!(h.cancelled());
    assert_eq!(drops.get(), 1, "cancel drops the closure at once");
    h.cancel(); // twice: a no-op
    let r = ran.clone();
    lp.call_soon(move || bump(&r)).unwrap();
    one_iteration(&lp);
    assert_eq!(ran.get(), 1, "only the live callback ran");
    lp.close().unwrap();
}

#[test]
fn cancelling_a_later_handle_of_the_same_batch_prevents_it() {
    let lp = new_loop();
    let order = log::<&str>();
    let victim: Rc<RefCell<Option<Handle>>> = Rc::default();
    let (o, v) = (order.clone(), victim.clone());
    lp.call_soon(move || {
        o.borrow_mut().push("killer");
        v.borrow().as_ref().unwrap().cancel();
    })
    .unwrap();
    let o = order.clone();
    *victim.borrow_mut() = Some(lp.call_soon(move || o.borrow_mut().push("victim")).unwrap());
    let o = order.clone();
    lp.call_soon(move || o.borrow_mut().push("bystander"))
        .unwrap();
    one_iteration(&lp);
    assert_eq!(*order.borrow(), ["killer", "bystander"]);
    assert!(victim.borrow().as_ref().unwrap().cancelled());
    lp.close().unwrap();
}

#[test]
fn a_callback_cancelling_itself_while_running_is_harmless() {
    let lp = new_loop();
    let me: Rc<RefCell<Option<Handle>>> = Rc::default();
    let ran = counter();
    let (m, r) = (me.clone(), ran.clone());
    let h = lp
        .call_soon(move || {
            bump(&r);
            m.borrow().as_ref().unwrap().cancel();
            bump(&r);
        })
        .unwrap();
    *me.borrow_mut() = Some(h.clone());
    let seen = record_exceptions(&lp);
    one_iteration(&lp);
    one_iteration(&lp);
    assert_eq!(ran.get(), 2, "ran to its end, once");
    assert!(h.cancelled());
    assert!(seen.borrow().is_empty());
    me.borrow_mut().take();
    lp.close().unwrap();
}

#[test]
fn a_panicking_callback_is_reported_and_the_batch_goes_on() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let after = counter();
    let bad = lp.call_soon(|| panic!("callback blew up")).unwrap();
    let a = after.clone();
    lp.call_soon(move || bump(&a)).unwrap();
    one_iteration(&lp);
    assert_eq!(after.get(), 1, "the next callback of the same batch ran");

    let seen = seen.borrow();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert!(
        s.message.starts_with("Exception in callback"),
        "{}",
        s.message
    );
    assert_eq!(s.kind, Some(ErrorKind::Panicked));
    assert_eq!(s.panic.as_deref(), Some("callback blew up"));
    assert!(s.error.as_deref().unwrap().contains("callback blew up"));
    let handle = s.handle.as_deref().expect("ctx.handle is set");
    assert!(handle.contains(file!()), "{handle}");
    let loc = bad.location();
    assert_eq!(loc.file(), file!());
    assert!(
        handle.contains(&format!("{}:{}:{}", loc.file(), loc.line(), loc.column())),
        "{handle} names the call site"
    );
    drop(seen);
    lp.close().unwrap();
}

#[test]
fn a_panic_with_a_non_string_payload_is_reported_too() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    lp.call_soon(|| std::panic::panic_any(42u32)).unwrap();
    let lp2 = lp.clone();
    lp.call_later(std::time::Duration::ZERO, move || {
        drop(lp2);
        panic!("from a timer")
    })
    .unwrap();
    one_iteration(&lp);
    let seen = seen.borrow();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].kind, Some(ErrorKind::Panicked));
    assert!(seen[0].panic.is_some());
    assert_eq!(seen[1].panic.as_deref(), Some("from a timer"));
    assert!(seen[1].handle.as_deref().unwrap().contains(file!()));
    drop(seen);
    lp.close().unwrap();
}

#[test]
fn a_panicking_exception_handler_is_survived() {
    let lp = new_loop();
    let calls = counter();
    let c = calls.clone();
    lp.set_exception_handler(move |_, _| {
        bump(&c);
        panic!("the handler itself fails");
    });
    let after = counter();
    lp.call_soon(|| panic!("first")).unwrap();
    let a = after.clone();
    lp.call_soon(move || bump(&a)).unwrap();
    lp.call_soon(|| panic!("second")).unwrap();
    one_iteration(&lp);
    assert_eq!(calls.get(), 2, "the handler was called for both panics");
    assert_eq!(after.get(), 1);
    // Direct calls are survived too.
    lp.call_exception_handler(ExceptionContext::new("direct"));
    assert_eq!(calls.get(), 3);
    assert_eq!(lp.run_until_complete(async { 9 }).unwrap(), 9);
    lp.close().unwrap();
}

#[test]
fn stop_call_soon_and_close_from_inside_callbacks() {
    let lp = new_loop();
    let log = log::<String>();
    let (lp2, l) = (lp.clone(), log.clone());
    lp.call_soon(move || {
        let l2 = l.clone();
        lp2.call_soon(move || l2.borrow_mut().push("next run".into()))
            .unwrap();
        let e = lp2.close().unwrap_err();
        l.borrow_mut().push(format!("{:?}", e.kind()));
        lp2.stop();
        lp2.stop(); // twice is fine
    })
    .unwrap();
    run_bounded(&lp);
    assert_eq!(*log.borrow(), ["Running"]);
    one_iteration(&lp);
    assert_eq!(*log.borrow(), ["Running", "next run"]);
    lp.close().unwrap();
}

#[test]
fn get_set_and_clear_the_exception_handler() {
    let lp = new_loop();
    assert!(lp.get_exception_handler().is_none(), "default handler");
    let hits = log::<String>();
    let h = hits.clone();
    let me = lp.clone();
    lp.set_exception_handler(move |lp, ctx| {
        assert!(lp.ptr_eq(&me), "the handler is given its loop");
        h.borrow_mut().push(ctx.message.clone());
    });
    let handler = lp.get_exception_handler().expect("custom handler");
    handler(&lp, &ExceptionContext::new("called through get"));
    assert_eq!(*hits.borrow(), ["called through get"]);

    lp.clear_exception_handler();
    assert!(lp.get_exception_handler().is_none());
    // With the default handler back, panics are logged, not recorded.
    lp.call_soon(|| panic!("to the default handler")).unwrap();
    one_iteration(&lp);
    assert_eq!(hits.borrow().len(), 1);
    drop(handler);
    lp.close().unwrap();
}

#[derive(Debug)]
struct Outer(Inner);
#[derive(Debug)]
struct Inner;
impl fmt::Display for Outer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("outer failure")
    }
}
impl fmt::Display for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("inner cause")
    }
}
impl std::error::Error for Outer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}
impl std::error::Error for Inner {}

#[test]
fn call_exception_handler_passes_a_custom_context_through() {
    let lp = new_loop();
    let got: Rc<RefCell<Vec<ExceptionContext>>> = Rc::default();
    let g = got.clone();
    lp.set_exception_handler(move |_, ctx| g.borrow_mut().push(ctx.clone()));
    let mut ctx = ExceptionContext::new("custom message")
        .with("protocol", "<EchoProtocol>")
        .with("transport", "<Transport fd=7>")
        .with_error(Outer(Inner));
    ctx.handle = Some("<Handle custom>".into());
    lp.call_exception_handler(ctx);

    let got = got.borrow();
    assert_eq!(got.len(), 1);
    let c = &got[0];
    assert_eq!(c.message, "custom message");
    assert_eq!(c.handle.as_deref(), Some("<Handle custom>"));
    assert_eq!(
        c.extra,
        [
            ("protocol".to_string(), "<EchoProtocol>".to_string()),
            ("transport".to_string(), "<Transport fd=7>".to_string())
        ]
    );
    assert!(c.loop_error().is_none(), "not a LoopError");
    assert_eq!(c.error.as_ref().unwrap().to_string(), "outer failure");
    let text = c.to_string();
    for part in [
        "custom message",
        "handle: <Handle custom>",
        "protocol: <EchoProtocol>",
        "error: outer failure",
        "caused by: inner cause",
    ] {
        assert!(text.contains(part), "{text:?} lacks {part:?}");
    }
    drop(got);
    lp.close().unwrap();
}

#[test]
fn the_default_exception_handler_does_not_panic() {
    let lp = new_loop();
    lp.default_exception_handler(&ExceptionContext::new("plain"));
    lp.default_exception_handler(
        &ExceptionContext::new("with everything")
            .with("key", "value")
            .with_error(Outer(Inner)),
    );
    // Reached through call_exception_handler when no handler is set, from
    // inside the loop too.
    lp.call_exception_handler(ExceptionContext::new("no custom handler"));
    let lp2 = lp.clone();
    lp.call_soon(move || lp2.call_exception_handler(ExceptionContext::new("inside")))
        .unwrap();
    one_iteration(&lp);
    lp.close().unwrap();
    lp.default_exception_handler(&ExceptionContext::new("after close"));
}

#[test]
fn handles_describe_where_they_were_scheduled() {
    let lp = new_loop();
    let line = line!() + 1;
    let h = lp.call_soon(|| {}).unwrap();
    assert_eq!(h.location().file(), file!());
    assert_eq!(h.location().line(), line);
    let text = format!("{h:?}");
    assert!(text.contains(&format!("{}:{line}", file!())), "{text}");
    assert!(!text.contains("cancelled"));
    h.cancel();
    assert!(format!("{h:?}").contains("cancelled"));
    lp.close().unwrap();
}

/// Wakes itself and yields `n` times, like `await asyncio.sleep(0)`.
struct YieldNow(usize);

impl std::future::Future for YieldNow {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 == 0 {
            return std::task::Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

#[test]
fn a_task_that_yields_runs_once_per_iteration_between_callbacks() {
    let lp = new_loop();
    let order = log::<String>();
    // A callback chain: one link per iteration.
    fn link(lp: EventLoop, order: Log<String>, n: usize) {
        order.borrow_mut().push(format!("cb{n}"));
        if n < 3 {
            let lp2 = lp.clone();
            lp.call_soon(move || link(lp2, order, n + 1)).unwrap();
        }
    }
    let (lp2, o) = (lp.clone(), order.clone());
    lp.call_soon(move || link(lp2, o, 0)).unwrap();
    let o = order.clone();
    lp.run_until_complete(async move {
        for i in 0..3 {
            o.borrow_mut().push(format!("task{i}"));
            YieldNow(1).await;
        }
    })
    .unwrap();
    assert_eq!(
        *order.borrow(),
        ["cb0", "task0", "cb1", "task1", "cb2", "task2", "cb3"],
        "the yielding task and the callbacks alternate, one step per iteration"
    );
    lp.close().unwrap();
}
