//! The loop's clock, with a virtual clock for tests.
//!
//! A loop reads time through [`Clock`]: the system's monotonic clock
//! ([`Instant::now`]) by default, or a [`VirtualClock`] given to
//! [`Builder::virtual_clock`](crate::Builder::virtual_clock). A virtual clock
//! only moves when told to ([`VirtualClock::advance`]) or when the loop would
//! otherwise sleep until its next timer: then the loop jumps the clock to that
//! deadline instead of sleeping. Timers of days or years can so be tested in
//! microseconds, with the same ordering and never-early rules as real time.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A clock that moves only when told to, for testing timers without sleeping.
///
/// Clones share the same time. The loop that uses it advances it to the next
/// timer's deadline whenever it would otherwise block waiting for that timer
/// (I/O and thread-safe wake-ups still wait for real).
///
/// ```
/// use loop_core::{EventLoop, VirtualClock};
/// use std::time::Duration;
/// let clock = VirtualClock::new();
/// let lp = EventLoop::builder().virtual_clock(clock.clone()).build().unwrap();
/// let start = lp.time();
/// let lp2 = lp.clone();
/// lp.call_later(Duration::from_secs(12 * 24 * 3600), move || lp2.stop()).unwrap();
/// lp.run_forever().unwrap(); // returns at once in real time
/// assert!(lp.time() - start >= Duration::from_secs(12 * 24 * 3600));
/// ```
#[derive(Clone, Debug)]
pub struct VirtualClock {
    inner: Rc<VirtualInner>,
}

#[derive(Debug)]
struct VirtualInner {
    base: Instant,
    offset: Cell<Duration>,
}

impl VirtualClock {
    /// A virtual clock that starts at the current real time.
    pub fn new() -> Self {
        VirtualClock {
            inner: Rc::new(VirtualInner {
                base: Instant::now(),
                offset: Cell::new(Duration::ZERO),
            }),
        }
    }

    /// The clock's current time.
    pub fn now(&self) -> Instant {
        self.inner.base + self.inner.offset.get()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let offset = self.inner.offset.get().saturating_add(by);
        self.inner.offset.set(offset);
    }

    /// Moves the clock forward to `when`; a `when` in the past changes nothing.
    pub fn advance_to(&self, when: Instant) {
        if let Some(by) = when.checked_duration_since(self.now()) {
            self.advance(by);
        }
    }
}

impl Default for VirtualClock {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a loop reads its time.
#[derive(Clone, Debug, Default)]
pub(crate) enum Clock {
    /// [`Instant::now`].
    #[default]
    System,
    /// A [`VirtualClock`].
    Virtual(VirtualClock),
}

impl Clock {
    #[inline]
    pub(crate) fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            Clock::Virtual(v) => v.now(),
        }
    }

    pub(crate) fn as_virtual(&self) -> Option<&VirtualClock> {
        match self {
            Clock::System => None,
            Clock::Virtual(v) => Some(v),
        }
    }
}

/// The latest instant after `from` that [`Instant`] can represent: what
/// [`TimerHandle::when`](crate::TimerHandle::when) says of a timer that is
/// never due (asyncio's `inf`). A binary search over whole seconds: rare
/// (only for such timers) and at most 64 `checked_add`s.
pub(crate) fn latest_instant(from: Instant) -> Instant {
    let (mut fits, mut overflows) = (0u64, u64::MAX);
    while overflows - fits > 1 {
        let mid = fits + (overflows - fits) / 2;
        if from.checked_add(Duration::from_secs(mid)).is_some() {
            fits = mid;
        } else {
            overflows = mid;
        }
    }
    from + Duration::from_secs(fits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_moves_only_when_told() {
        let c = VirtualClock::new();
        let t0 = c.now();
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_secs(5));
        assert_eq!(c.now() - t0, Duration::from_secs(5));
        c.advance_to(t0); // the past: no change
        assert_eq!(c.now() - t0, Duration::from_secs(5));
        c.advance_to(t0 + Duration::from_secs(9));
        assert_eq!(c.now() - t0, Duration::from_secs(9));
        let shared = c.clone();
        shared.advance(Duration::from_secs(1));
        assert_eq!(c.now() - t0, Duration::from_secs(10));
    }
}
