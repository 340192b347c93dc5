//! The Linux backend: epoll through rustix, level-triggered.

use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::time::Duration;

use rustix::event::{epoll, eventfd, EventfdFlags, Timespec};

use super::{borrow_fd, Interest, Notifier, Readiness};

/// The epoll key of the wake-up eventfd; fd keys are slab indices, far below.
const WAKE_KEY: u64 = u64::MAX;

/// The longest single wait: whole seconds whose milliseconds fit an `i32`.
const MAX_WAIT: Duration = Duration::from_secs(i32::MAX as u64 / 1000);

pub(crate) struct EpollReactor {
    epoll: OwnedFd,
    events: std::cell::RefCell<Vec<epoll::Event>>,
}

impl EpollReactor {
    pub(crate) fn new() -> io::Result<(EpollReactor, OwnedFd)> {
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(
            &ep,
            &wake,
            epoll::EventData::new_u64(WAKE_KEY),
            // Edge-triggered: every write is one new edge, so the loop never
            // has to read the counter back (one syscall less per wake-up).
            // The counter only saturates after 2^64-2 writes; `write_eventfd`
            // resets it if that ever happens.
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )?;
        Ok((
            EpollReactor {
                epoll: ep,
                events: std::cell::RefCell::new(Vec::with_capacity(256)),
            },
            // The notifier owns the eventfd; the epoll set watches it.
            wake,
        ))
    }

    fn flags(interest: Interest) -> epoll::EventFlags {
        let mut flags = epoll::EventFlags::empty();
        if interest.read {
            flags |= epoll::EventFlags::IN | epoll::EventFlags::RDHUP;
        }
        if interest.write {
            flags |= epoll::EventFlags::OUT;
        }
        if interest.edge {
            flags |= epoll::EventFlags::ET;
        }
        flags
    }

    pub(crate) fn add(&self, fd: RawFd, key: usize, interest: Interest) -> io::Result<()> {
        // SAFETY: io.rs passes only non-negative fds and uses them for this call.
        let fd = unsafe { borrow_fd(fd) };
        epoll::add(
            &self.epoll,
            fd,
            epoll::EventData::new_u64(key as u64),
            Self::flags(interest),
        )?;
        Ok(())
    }

    pub(crate) fn modify(&self, fd: RawFd, key: usize, interest: Interest) -> io::Result<()> {
        // SAFETY: as in `add`.
        let fd = unsafe { borrow_fd(fd) };
        epoll::modify(
            &self.epoll,
            fd,
            epoll::EventData::new_u64(key as u64),
            Self::flags(interest),
        )?;
        Ok(())
    }

    pub(crate) fn delete(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: as in `add`.
        let fd = unsafe { borrow_fd(fd) };
        epoll::delete(&self.epoll, fd)?;
        Ok(())
    }

    pub(crate) fn wait(
        &self,
        out: &mut Vec<Readiness>,
        timeout: Option<Duration>,
        notifier: &Notifier,
    ) -> io::Result<()> {
        let ts = timeout.map(|d| {
            // rustix passes a timeout that fits epoll_wait's i32 milliseconds
            // to epoll_pwait; a longer one needs epoll_pwait2 (Linux 5.11),
            // which older kernels answer with ENOSYS, failing the loop. So
            // wait at most ~24.8 days: waking early is harmless, since due
            // timers are found by comparing deadlines with the clock.
            let d = d.min(MAX_WAIT);
            Timespec {
                tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2),
                tv_nsec: i64::from(d.subsec_nanos()),
            }
        });
        let mut events = self.events.borrow_mut();
        events.clear();
        match epoll::wait(
            &self.epoll,
            rustix::buffer::spare_capacity(&mut *events),
            ts.as_ref(),
        ) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        for ev in events.iter() {
            let key = ev.data.u64();
            if key == WAKE_KEY {
                notifier.clear_notified();
                continue;
            }
            let f = ev.flags;
            let err = f.intersects(epoll::EventFlags::ERR | epoll::EventFlags::HUP);
            out.push(Readiness {
                key: key as usize,
                readable: err
                    || f.intersects(
                        epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::PRI,
                    ),
                writable: err || f.contains(epoll::EventFlags::OUT),
                hup: err || f.contains(epoll::EventFlags::RDHUP),
            });
        }
        // A full buffer means more may be waiting: grow for the next call.
        if events.len() == events.capacity() {
            let more = events.capacity();
            events.reserve(more);
        }
        Ok(())
    }
}

pub(crate) fn write_eventfd(fd: &OwnedFd) -> io::Result<()> {
    loop {
        match rustix::io::write(fd.as_fd(), &1u64.to_ne_bytes()) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => {
                // The counter is saturated: reset it by reading, then write
                // again so that the edge the loop waits for happens.
                let mut buf = [0u8; 8];
                let _ = rustix::io::read(fd.as_fd(), &mut buf);
            }
            Err(e) => return Err(e.into()),
        }
    }
}
