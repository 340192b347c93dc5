//! The portable backend: the `polling` crate in level mode.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use polling::{Event, Events, PollMode, Poller};

use super::{borrow_fd, Interest, Readiness};

pub(crate) struct PortableReactor {
    poller: Arc<Poller>,
    events: std::cell::RefCell<Events>,
}

impl PortableReactor {
    pub(crate) fn new() -> io::Result<(PortableReactor, Arc<Poller>)> {
        let poller = Arc::new(Poller::new()?);
        Ok((
            PortableReactor {
                poller: poller.clone(),
                events: std::cell::RefCell::new(Events::new()),
            },
            poller,
        ))
    }

    fn event(key: usize, interest: Interest) -> Event {
        match (interest.read, interest.write) {
            (true, true) => Event::all(key),
            (true, false) => Event::readable(key),
            (false, true) => Event::writable(key),
            (false, false) => Event::none(key),
        }
    }

    pub(crate) fn add(&self, fd: RawFd, key: usize, interest: Interest) -> io::Result<()> {
        // SAFETY: `Poller::add_with_mode` requires the source to be deleted
        // from the poller before it is closed. io.rs deletes every
        // registration on remove_reader/remove_writer and on close(), and the
        // loop's contract (as asyncio's) is that the user removes a reader or
        // writer before closing its fd. The fd is non-negative (checked).
        unsafe {
            self.poller
                .add_with_mode(fd, Self::event(key, interest), PollMode::Level)
        }
    }

    pub(crate) fn modify(&self, fd: RawFd, key: usize, interest: Interest) -> io::Result<()> {
        // SAFETY: used for this one call only; the kernel checks the number.
        let fd = unsafe { borrow_fd(fd) };
        self.poller
            .modify_with_mode(fd, Self::event(key, interest), PollMode::Level)
    }

    pub(crate) fn delete(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: as in `modify`.
        let fd = unsafe { borrow_fd(fd) };
        self.poller.delete(fd)
    }

    pub(crate) fn wait(
        &self,
        out: &mut Vec<Readiness>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        let mut events = self.events.borrow_mut();
        events.clear();
        match self.poller.wait(&mut events, timeout) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            let err = ev.is_err().unwrap_or(false) || ev.is_interrupt();
            out.push(Readiness {
                key: ev.key,
                readable: ev.readable || err,
                writable: ev.writable || err,
                hup: err,
            });
        }
        Ok(())
    }
}
