//! Debug mode: asyncio's `set_debug`, with the slow-callback report.
//!
//! In debug mode every ready callback is timed, and one that runs longer than
//! [`slow_callback_duration`](EventLoop::slow_callback_duration) (100 ms by
//! default, as asyncio) is reported as a warning naming the callback and the
//! source location that scheduled it. Debug mode is off by default; the
//! environment variable `AIOLOOP_DEBUG=1` turns it on for every new loop (the
//! counterpart of `PYTHONASYNCIODEBUG`), and `cargo xtask ci` runs the test
//! suite once that way.
//!
//! asyncio's debug mode also refuses non-thread-safe calls from other
//! threads at run time; here that check is done by the compiler, always:
//! `EventLoop` is `!Send`, so such a call does not build (see
//! [`LoopHandle`](crate::LoopHandle)).
//!
//! Reports go through the `log` crate (target `aioloop`) when a logger is
//! installed, and to stderr otherwise.

use std::cell::Cell;
use std::time::Duration;

use crate::event_loop::EventLoop;

pub(crate) fn debug_from_env() -> bool {
    matches!(
        std::env::var("AIOLOOP_DEBUG").as_deref(),
        Ok("1") | Ok("true") | Ok("yes") | Ok("on")
    )
}

pub(crate) struct DebugState {
    enabled: Cell<bool>,
    slow_callback: Cell<Duration>,
}

impl DebugState {
    pub(crate) fn new(enabled: bool) -> Self {
        DebugState {
            enabled: Cell::new(enabled),
            slow_callback: Cell::new(Duration::from_millis(100)),
        }
    }

    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        self.enabled.get()
    }
}

/// Whether a `log` logger is installed (`log` has no direct query; a logger
/// that sets a maximum level above `Off` is taken as installed).
pub(crate) fn logger_installed() -> bool {
    log::max_level() != log::LevelFilter::Off
}

impl EventLoop {
    /// Turns debug mode on or off (see the [`debug`](crate::debug) module).
    #[doc(alias = "loop.set_debug")]
    pub fn set_debug(&self, enabled: bool) {
        self.inner.debug.enabled.set(enabled);
    }

    /// Whether debug mode is on.
    #[doc(alias = "loop.get_debug")]
    pub fn get_debug(&self) -> bool {
        self.inner.debug.enabled()
    }

    /// Sets the duration above which a callback is reported as slow in debug
    /// mode (asyncio's `loop.slow_callback_duration` attribute).
    #[doc(alias = "slow_callback_duration")]
    pub fn set_slow_callback_duration(&self, duration: Duration) {
        self.inner.debug.slow_callback.set(duration);
    }

    /// The slow-callback threshold of debug mode (100 ms unless changed).
    #[doc(alias = "loop.slow_callback_duration")]
    pub fn slow_callback_duration(&self) -> Duration {
        self.inner.debug.slow_callback.get()
    }

    pub(crate) fn check_slow_callback(&self, what: &str, took: Duration) {
        if took < self.inner.debug.slow_callback.get() {
            return;
        }
        warn(&format!(
            "Executing {what} took {:.3} seconds",
            took.as_secs_f64()
        ));
    }
}

/// One debug line of the loop's own (asyncio's `logger.debug`): through the
/// `log` crate (target `aioloop`, level debug) when a logger is installed;
/// otherwise to stderr, and only when `debug` (the loop's debug mode) is on.
pub(crate) fn debug_line(debug: bool, msg: &str) {
    if logger_installed() {
        log::debug!(target: "aioloop", "{msg}");
    } else if debug {
        eprintln!("aioloop: {msg}");
    }
}

/// Logs a warning the way the loop's own reports go (asyncio's
/// `logger.warning`): through the `log` crate (target `aioloop`) when a
/// logger is installed, to stderr otherwise. For the extension crates'
/// warnings (loop-net's dropped writes).
pub fn warn(msg: &str) {
    if logger_installed() {
        log::warn!(target: "aioloop", "{msg}");
    } else {
        eprintln!("aioloop: {msg}");
    }
}
