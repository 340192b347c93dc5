//! Debug mode: set_debug / get_debug, the slow-callback warning (and its
//! absence with debug off), and the default exception handler logging through
//! an installed `log` logger. Its own binary: it installs a global logger.

mod util;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use aioloop::{EventLoop, ExceptionContext};
use log::{Level, LevelFilter, Log, Metadata, Record};
use util::*;

#[derive(Debug, Clone)]
struct Entry {
    level: Level,
    target: String,
    text: String,
}

static RECORDS: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

struct Collector;

impl Log for Collector {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &Record<'_>) {
        RECORDS.lock().unwrap().push(Entry {
            level: record.level(),
            target: record.target().to_string(),
            text: record.args().to_string(),
        });
    }
    fn flush(&self) {}
}

static COLLECTOR: Collector = Collector;

fn install_logger() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&COLLECTOR).unwrap();
        log::set_max_level(LevelFilter::Trace);
    });
}

/// The records (of every test in this binary) whose text contains `needle`.
fn records_with(needle: &str) -> Vec<Entry> {
    RECORDS
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.text.contains(needle))
        .cloned()
        .collect()
}

/// Works on the loop thread for `d`: the slow work being measured, not a
/// synchronisation.
fn busy_wait(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

fn debug_loop(debug: bool) -> EventLoop {
    EventLoop::builder().debug(debug).build().unwrap()
}

#[test]
fn set_debug_and_get_debug() {
    let from_env = matches!(
        std::env::var("AIOLOOP_DEBUG").as_deref(),
        Ok("1") | Ok("true") | Ok("yes") | Ok("on")
    );
    let lp = new_loop();
    assert_eq!(
        lp.get_debug(),
        from_env,
        "the default follows AIOLOOP_DEBUG"
    );
    lp.set_debug(true);
    assert!(lp.get_debug());
    lp.set_debug(false);
    assert!(!lp.get_debug());
    assert!(debug_loop(true).get_debug());
    assert!(!debug_loop(false).get_debug());

    assert_eq!(lp.slow_callback_duration(), Duration::from_millis(100));
    lp.set_slow_callback_duration(Duration::from_millis(7));
    assert_eq!(lp.slow_callback_duration(), Duration::from_millis(7));
    // Toggling from inside a callback.
    let lp2 = lp.clone();
    lp.call_soon(move || lp2.set_debug(true)).unwrap();
    one_iteration(&lp);
    assert!(lp.get_debug());
    lp.close().unwrap();
}

#[track_caller]
fn slow_callback_site(lp: &EventLoop) -> String {
    let h = lp
        .call_soon(|| busy_wait(Duration::from_millis(50)))
        .unwrap();
    let loc = h.location();
    format!("{}:{}:{}", loc.file(), loc.line(), loc.column())
}

#[test]
fn a_slow_callback_is_reported_in_debug_mode() {
    install_logger();
    let lp = debug_loop(true);
    lp.set_slow_callback_duration(Duration::from_millis(20));
    let site = slow_callback_site(&lp);
    // A quick one from the same loop is not reported.
    let quick = lp.call_soon(|| {}).unwrap();
    let quick_site = format!("{}:{}", quick.location().file(), quick.location().line());
    one_iteration(&lp);
    let found = records_with(&site);
    assert_eq!(found.len(), 1, "{found:?}");
    let e = &found[0];
    assert_eq!(e.level, Level::Warn);
    assert_eq!(e.target, "aioloop");
    assert!(e.text.contains("took"), "{}", e.text);
    assert!(records_with(&quick_site).is_empty());
    lp.close().unwrap();
}

#[test]
fn no_slow_callback_report_with_debug_off() {
    install_logger();
    let lp = debug_loop(false);
    lp.set_slow_callback_duration(Duration::from_millis(20));
    let site = slow_callback_site(&lp);
    one_iteration(&lp);
    assert!(records_with(&site).is_empty(), "{:?}", records_with(&site));
    lp.close().unwrap();
}

#[test]
fn slow_timers_readers_and_tasks_are_reported_too() {
    install_logger();
    let lp = debug_loop(true);
    lp.set_slow_callback_duration(Duration::from_millis(20));
    let before = RECORDS.lock().unwrap().len();
    let timer = lp
        .call_later(Duration::ZERO, || busy_wait(Duration::from_millis(40)))
        .unwrap();
    let timer_site = format!("{}:{}", timer.location().file(), timer.location().line());
    let (mut a, b) = UnixStream::pair().unwrap();
    std::io::Write::write_all(&mut a, b"x").unwrap();
    let (lp2, fd) = (lp.clone(), b.as_raw_fd());
    lp.add_reader(fd, move || {
        busy_wait(Duration::from_millis(40));
        lp2.remove_reader(fd).unwrap();
    })
    .unwrap();
    lp.run_until_complete(async { busy_wait(Duration::from_millis(40)) })
        .unwrap();
    one_iteration(&lp);
    assert_eq!(records_with(&timer_site).len(), 1);
    let mine: Vec<Entry> = RECORDS.lock().unwrap()[before..]
        .iter()
        .filter(|e| e.level == Level::Warn && e.text.contains("took"))
        .cloned()
        .collect();
    assert!(
        mine.iter()
            .any(|e| e.text.contains("<reader/writer callback>")),
        "{mine:?}"
    );
    assert!(mine.iter().any(|e| e.text.contains("<Task ")), "{mine:?}");
    lp.close().unwrap();
}

#[test]
fn cancelled_callbacks_are_neither_run_nor_timed_in_debug_mode() {
    install_logger();
    let lp = debug_loop(true);
    lp.set_slow_callback_duration(Duration::ZERO);
    let ran = counter();
    let r = ran.clone();
    let h = lp.call_soon(move || bump(&r)).unwrap();
    let site = format!("{}:{}", h.location().file(), h.location().line());
    h.cancel();
    one_iteration(&lp);
    assert_eq!(ran.get(), 0);
    assert!(records_with(&site).is_empty());
    lp.close().unwrap();
}

#[test]
fn the_default_exception_handler_logs_at_error_level() {
    install_logger();
    let lp = new_loop();
    let marker = "marker-4f1c: a context for the default handler";
    lp.call_exception_handler(ExceptionContext::new(marker).with("where", "debug_mode.rs"));
    let found = records_with(marker);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].level, Level::Error);
    assert_eq!(found[0].target, "aioloop");
    assert!(found[0].text.contains("where: debug_mode.rs"));

    // A panicking callback with no custom handler goes the same way.
    lp.call_soon(|| panic!("marker-9d2e: callback panic"))
        .unwrap();
    one_iteration(&lp);
    let found = records_with("marker-9d2e");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].level, Level::Error);
    assert!(found[0].text.starts_with("Exception in callback"));

    // And the report of a panicking custom handler.
    lp.set_exception_handler(|_, _| panic!("marker-77ab: handler panic"));
    lp.call_exception_handler(ExceptionContext::new("marker-0c3d: original"));
    let found = records_with("marker-77ab");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].level, Level::Error);
    assert!(
        found[0].text.contains("marker-0c3d"),
        "names the original context"
    );
    lp.close().unwrap();
}
