//! One report per panic, with its location.
//!
//! The loop catches every panic of user code at its callback boundaries and
//! reports it itself: to the exception handler (a callback, a protocol
//! method, a `Drop`), or as the `Panicked` error of a task or executor job.
//! Rust's panic hook would print the same panic first (`thread 'main'
//! panicked at ...`), so a user saw two reports of one panic, the hook's
//! with the location and the loop's without.
//!
//! So aioloop installs, once per process (when a loop first runs), a panic
//! hook wrapping whatever hook was installed before it. For every panic it
//! records the message and `file:line:col` in a thread-local; then, if the
//! thread is inside a loop's run ([`QuietPanics`] held: `run_forever`,
//! `run_until_complete`, `close`), it prints nothing, since the loop's own
//! report follows, else it calls the previous hook (panics elsewhere, on
//! executor threads included, print as usual). [`PanicError::from_payload`]
//! takes the record, so the loop's report carries the location.
//!
//! A panic that is *not* caught by the loop (a bug of aioloop itself, or a
//! user's `catch_unwind` that re-panics) and unwinds out of the loop's run
//! is printed when the [`QuietPanics`] guard is dropped during the unwind, in
//! the hook's own format: nothing is ever lost. The cost: a panic caught by
//! the user's own `catch_unwind` inside a callback is not printed by the
//! hook either (the payload is theirs).
//!
//! [`PanicError::from_payload`]: crate::PanicError::from_payload

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::panic::{self, PanicHookInfo};
use std::sync::Once;

/// What the hook saw of the last panic on this thread.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub(crate) message: String,
    pub(crate) location: Option<String>,
    /// Printed already (by an unwinding [`QuietPanics`]).
    printed: bool,
}

thread_local! {
    /// How many [`QuietPanics`] guards this thread holds.
    static QUIET: Cell<usize> = const { Cell::new(0) };
    static LAST: RefCell<Option<Record>> = const { RefCell::new(None) };
}

fn message_of(info: &PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}

fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let record = Record {
                message: message_of(info),
                location: info.location().map(|l| l.to_string()),
                printed: false,
            };
            let _ = LAST.try_with(|last| {
                if let Ok(mut last) = last.try_borrow_mut() {
                    *last = Some(record);
                }
            });
            let quiet = QUIET.try_with(|q| q.get() > 0).unwrap_or(false);
            if !quiet {
                previous(info);
            }
        }));
    });
}

/// Takes this thread's record of the last panic if its message is
/// `message` (a record of some other, earlier panic is left alone).
pub(crate) fn take_record(message: &str) -> Option<Record> {
    LAST.try_with(|last| {
        let mut last = last.try_borrow_mut().ok()?;
        if last.as_ref().is_some_and(|r| r.message == message) {
            last.take()
        } else {
            None
        }
    })
    .ok()
    .flatten()
}

/// While held, panics on this thread are not printed by the panic hook:
/// the loop reports them (see the module docs). Held by the event loop for
/// the length of each run and of `close`; guards nest. Installs aioloop's
/// panic hook on first use.
///
/// Dropped while a panic unwinds through it (a panic the loop did not
/// catch), it prints that panic the way the standard hook would.
#[derive(Debug)]
pub struct QuietPanics {
    _not_send: PhantomData<*const ()>,
}

impl QuietPanics {
    /// Enters a quiet section on this thread.
    pub fn enter() -> QuietPanics {
        install_hook();
        let _ = QUIET.try_with(|q| q.set(q.get() + 1));
        QuietPanics {
            _not_send: PhantomData,
        }
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        let _ = QUIET.try_with(|q| q.set(q.get().saturating_sub(1)));
        if !std::thread::panicking() {
            return;
        }
        let unprinted = LAST
            .try_with(|last| {
                let mut last = last.try_borrow_mut().ok()?;
                let record = last.as_mut()?;
                if record.printed {
                    return None;
                }
                record.printed = true;
                Some(record.clone())
            })
            .ok()
            .flatten();
        if let Some(r) = unprinted {
            let thread = std::thread::current();
            eprintln!(
                "thread '{}' panicked at {}:\n{}",
                thread.name().unwrap_or("<unnamed>"),
                r.location.as_deref().unwrap_or("<unknown>"),
                r.message
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_section_records_the_location_and_the_payload_finds_it() {
        let quiet = QuietPanics::enter();
        let line = line!() + 1;
        let caught = std::panic::catch_unwind(|| panic!("quiet boom {}", 1)).unwrap_err();
        drop(quiet);
        let err = crate::PanicError::from_payload(caught);
        assert_eq!(err.message(), "quiet boom 1");
        let loc = err.location().expect("the hook's location");
        assert!(loc.starts_with(&format!("{}:{line}:", file!())), "{loc}");
        // Taken: a second payload with the same text finds nothing.
        let again = crate::PanicError::from_payload(Box::new("quiet boom 1"));
        assert_eq!(again.location(), None);
    }

    #[test]
    fn a_record_of_another_panic_is_not_taken() {
        let _quiet = QuietPanics::enter();
        let _ = std::panic::catch_unwind(|| panic!("first"));
        let other = crate::PanicError::from_payload(Box::new(String::from("second")));
        assert_eq!(other.location(), None);
        assert!(take_record("first").is_some());
    }

    #[test]
    fn a_panic_unwinding_out_of_a_quiet_section_is_printed_by_the_guard() {
        let caught = std::panic::catch_unwind(|| {
            let _quiet = QuietPanics::enter();
            panic!("escapes the loop");
        });
        assert!(caught.is_err());
        let seen = LAST.with(|l| l.borrow().as_ref().map(|r| (r.message.clone(), r.printed)));
        assert_eq!(seen, Some(("escapes the loop".to_string(), true)));
        assert_eq!(QUIET.with(Cell::get), 0);
    }
}
