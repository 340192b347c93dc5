//! The io_uring backend (Linux): readiness through `IORING_OP_POLL_ADD`,
//! level-triggered like the epoll backend.
//!
//! # Why the `io-uring` crate
//! It is tokio's maintained binding: it maps the rings, keeps their head and
//! tail indices with the right atomics, builds every opcode's SQE, probes
//! opcodes, and wraps `io_uring_enter` with its extended argument (the
//! timeout). rustix's `io_uring` module has only the raw system calls and
//! structs, so the ring management (mmap offsets, memory ordering of the
//! indices) would be ours to write, in `unsafe`, for no gain. The crate's
//! `unsafe` entries that this backend uses are `SubmissionQueue::push`,
//! whose contract (buffers live until completion) is trivially kept by the
//! polls (they point at no memory) and kept by the completion path's sends
//! as uring/streams.rs argues, and the registration of the provided-buffer
//! ring (uring/bufs.rs).
//!
//! # The completion path
//! Besides readiness, the backend moves the bytes of stream sockets itself
//! for the transports that ask ([`UringStream`](crate::UringStream)):
//! multishot receives into a provided-buffer ring (uring/bufs.rs) and one
//! `SEND` per stream per iteration, queued in the same submission ring and
//! submitted by the same `wait`; uring/streams.rs holds their table, its
//! invariants and the safety argument. Servers accept the same way
//! ([`UringAccept`](crate::UringAccept)): one multishot `ACCEPT` per
//! listening socket, whose completions carry the new fds (uring/accepts.rs
//! says who owns an accepted fd until a server takes it). Datagram sockets
//! too ([`UringDatagram`](crate::UringDatagram)): one multishot `RECVMSG`
//! each, into a buffer ring of their own (uring/datagrams.rs).
//!
//! # What runs where
//! `add` and `modify` check the fd (one `fstat`, see below) and queue the
//! change: a key to arm, a `POLL_REMOVE` in the submission ring. The next
//! `wait` submits everything and waits in one `io_uring_enter`, with the
//! timeout as that call's own argument (`IORING_ENTER_EXT_ARG`; rounded up
//! to whole milliseconds as the epoll backend's, so timers never fire early
//! and both backends wake alike). A zero-timeout wait with nothing to
//! submit makes no system call at all: it only reads the completion ring.
//! `delete` alone may submit at once (see the invariants), and so does the
//! release of a completion-path stream (uring/streams.rs), for the same
//! reason.
//!
//! # Oneshot polls, re-armed: why not multishot
//! A multishot poll posts a completion when the file *wakes its waiters*
//! (new data arrived), not while it *is* readable: that is edge-triggered.
//! asyncio's readers are level-triggered: a reader that leaves data unread
//! runs again next iteration. Multishot cannot say "still readable" without
//! a system call per fd per iteration. A oneshot poll can: after it
//! completes, the key is queued for re-arming, and the next `wait` submits
//! the new `POLL_ADD` in the same `io_uring_enter`; the kernel checks the
//! fd's readiness when it arms the poll and, if it is still readable,
//! completes it at once, inside that call. So a reader runs every iteration
//! while its fd stays readable, for one SQE per event and no extra system
//! call. A re-arm not yet submitted costs nothing to cancel (the common
//! "read EOF, remove the reader, close" needs no SQE at all).
//!
//! The wake-up eventfd is the exception: it wants edge semantics (the epoll
//! backend registers it edge-triggered for the same reason), so it has one
//! multishot poll and its counter is never read back (the notifier resets
//! it if it ever saturates). If the kernel ends that poll (a completion
//! without `IORING_CQE_F_MORE`), it is re-armed before the next wait.
//!
//! # Invariants
//! - **Ownership.** The reactor owns the ring (`IoUring`: the ring fd and
//!   its mappings); dropping it (the loop's `close`) unmaps and closes it,
//!   after the completion path's operations were cancelled and waited for,
//!   and before the buffer ring is unmapped (uring/streams.rs).
//!   The notifier owns the eventfd; the reactor keeps its number only to
//!   re-arm its poll, and the loop closes the reactor before the notifier.
//! - **`user_data`.** [`WAKE`] is the eventfd's poll; [`IGNORED`] marks
//!   `POLL_REMOVE` and `ASYNC_CANCEL` requests, whose own completions mean
//!   nothing here. A value with bit 31 set (and not one of those two) is an
//!   operation of the completion path (uring/streams.rs; with bit 29 too,
//!   an accept: uring/accepts.rs; with bit 28 and not 29, a datagram
//!   receive: uring/datagrams.rs). Every
//!   other value is a poll on a registration: `generation << 32 | key`, the
//!   key being io.rs's slab index (below 2^31) and the generation a counter of the
//!   reactor, new for every `POLL_ADD` (1 ..= `u32::MAX - 1`, so no poll
//!   equals the two constants, whose high halves are all ones).
//! - **No completion is misattributed.** A registration remembers the
//!   `user_data` of its one poll in flight (`armed`). A completion counts
//!   only if the slot of its key is occupied and armed with exactly that
//!   value; anything else is a stale completion (of a poll that `modify` or
//!   `delete` cancelled, or that completed before its registration went) and
//!   is dropped. The same fd number or key registered again gets a new
//!   generation, so an old completion cannot speak for it. A stale poll
//!   lives at most until the `POLL_REMOVE` queued for it is submitted (by
//!   `delete` at once, by the next `wait` otherwise), far fewer than 2^32
//!   arms, so a wrapped generation never meets its old completion.
//! - **Nothing reports a deleted registration, and `delete` lets go of the
//!   file.** A poll in flight holds a reference on the *file*, not the fd:
//!   the caller may close the fd right after `delete`, and the socket must
//!   close then (a peer waits for the FIN). So `delete` submits, before it
//!   returns, the `POLL_REMOVE` of the registration's poll in flight, and
//!   one that a `modify` queued since the last submission (an epoch counter
//!   of submissions tells): one system call, as epoll's `EPOLL_CTL_DEL`. A
//!   registration with no poll in the kernel needs nothing.
//! - **Errors.** A poll that fails with `EBADF` (the fd was closed before
//!   the poll was armed) ends its registration silently, as epoll forgets a
//!   closed file; any other failure is reported as readable and writable,
//!   so that the callback runs and meets the error, and is re-armed (epoll
//!   reports `EPOLLERR` every iteration the same way).
//! - **Checks at the call, as epoll.** `add` and `modify` check the fd with
//!   one `fstat` (their one system call, as `epoll_ctl` is epoll's), so
//!   that what epoll answers at once is answered at once: `EBADF` for a
//!   closed fd, `EPERM` for a regular file or a directory at `add`, and
//!   `ENOENT` at `modify` when the fd number now names another file (the
//!   identity `(st_dev, st_ino)` recorded at `add` differs).
//! - **Difference from epoll.** A character device that has no poll method
//!   (`/dev/null`) is accepted and reported always ready, as `poll(2)`
//!   reports it, where epoll refuses it with `EPERM`.
//!
//! # Availability
//! [`UringReactor::new`] probes what this backend uses: `io_uring_setup`
//! (`ENOSYS` on old kernels or under seccomp, `EPERM` when
//! `kernel.io_uring_disabled` says so), the extended enter argument and
//! `IORING_FEAT_NODROP` (Linux 5.11), the `POLL_ADD` and `POLL_REMOVE`
//! opcodes (the register probe, Linux 5.6) and multishot polls (Linux 5.13:
//! an older kernel refuses the eventfd's poll with `EINVAL`). Any failure is
//! returned, and the caller falls back to epoll.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use rustix::event::{eventfd, EventfdFlags, PollFlags};
use rustix::io::Errno;

use super::{borrow_fd, Completed, Interest, Notifier, Readiness};

mod accepts;
mod bufs;
mod datagrams;
mod ops;
mod streams;
pub(crate) use accepts::close_accepted;
pub(crate) use bufs::BufRing;
pub(crate) use datagrams::{NAME_LEN as DGRAM_NAME_LEN, OUT_HEADER as DGRAM_OUT_HEADER};

/// The `user_data` of the eventfd's multishot poll.
const WAKE: u64 = u64::MAX;
/// The `user_data` of `POLL_REMOVE` requests (their completions are skipped).
const IGNORED: u64 = u64::MAX - 1;

/// Submission ring entries; the completion ring is [`CQ_ENTRIES`]. A full
/// submission ring is submitted early; a full completion ring overflows into
/// the kernel's list (`IORING_FEAT_NODROP`), flushed by the next enter.
const SQ_ENTRIES: u32 = 256;
const CQ_ENTRIES: u32 = 2048;

/// The completions read per `wait` at most (the rest wait for the next).
const MAX_REAP: usize = 4096;

/// One registration: a slot of `State::regs`, indexed by key.
struct Reg {
    fd: RawFd,
    /// The file's identity at `add` (`st_dev`, `st_ino`): `modify` checks
    /// that the fd number still names this file.
    file: FileId,
    interest: Interest,
    /// The `user_data` of this registration's poll in the kernel, if any.
    armed: Option<u64>,
    /// The key is in `State::to_arm` (at most once).
    queued: bool,
    /// `modify` queued a `POLL_REMOVE` of this registration's previous poll
    /// at this submission epoch: until the epoch moves on, that poll is
    /// still in the kernel (see `delete`).
    remove_queued_at: Option<u64>,
}

pub(crate) struct State {
    /// Declared first: dropped before `streams` and its buffer ring.
    ring: IoUring,
    /// The completion path's streams and operations (uring/streams.rs).
    streams: streams::Streams,
    /// The completion path's listeners (uring/accepts.rs).
    accepts: accepts::Accepts,
    /// The completion path's datagram sockets and their buffer ring
    /// (uring/datagrams.rs).
    datagrams: datagrams::Datagrams,
    regs: Vec<Option<Reg>>,
    /// Keys whose poll the next `wait` arms (duplicates and keys gone since
    /// are skipped: see `Reg::queued`).
    to_arm: Vec<usize>,
    /// The generation of the next `POLL_ADD`.
    next_gen: u32,
    /// The notifier's eventfd (owned by the notifier, which outlives us).
    wake_fd: RawFd,
    /// Its multishot poll is in flight.
    wake_armed: bool,
    /// Counts the submissions (every `io_uring_enter` that submits).
    epoch: u64,
}

pub(crate) struct UringReactor {
    /// Borrowed only inside one reactor call, never across user code.
    state: RefCell<State>,
}

/// `(st_dev, st_ino)`: which file an fd number names.
type FileId = (u64, u64);

/// The identity of the file `fd` names, with `add`'s checks: `EBADF` for a
/// closed fd, `EPERM` for a regular file or a directory (what `epoll_ctl`
/// answers for a file that cannot be polled).
fn file_id(fd: RawFd) -> io::Result<FileId> {
    // SAFETY: io.rs passes only non-negative fds; used for this one call.
    let st = rustix::fs::fstat(unsafe { borrow_fd(fd) })?;
    let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
    if matches!(
        kind,
        rustix::fs::FileType::RegularFile | rustix::fs::FileType::Directory
    ) {
        return Err(errno(Errno::PERM));
    }
    Ok((st.st_dev, st.st_ino))
}

fn errno(e: Errno) -> io::Error {
    e.into()
}

fn unsupported(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, what.to_string())
}

impl UringReactor {
    /// A ring and the wake-up eventfd, after probing that the kernel has
    /// what this backend uses (see the module docs); any error means "use
    /// another backend".
    pub(crate) fn new() -> io::Result<(UringReactor, OwnedFd)> {
        let ring = Self::setup()?;
        let params = ring.params();
        if !params.is_feature_ext_arg() || !params.is_feature_nodrop() {
            return Err(unsupported(
                "io_uring lacks IORING_FEAT_EXT_ARG or IORING_FEAT_NODROP (Linux 5.11)",
            ));
        }
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        for (code, name) in [
            (opcode::PollAdd::CODE, "IORING_OP_POLL_ADD"),
            (opcode::PollRemove::CODE, "IORING_OP_POLL_REMOVE"),
        ] {
            if !probe.is_supported(code) {
                return Err(unsupported(&format!("io_uring lacks {name}")));
            }
        }
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let reactor = UringReactor {
            state: RefCell::new(State {
                ring,
                regs: Vec::new(),
                to_arm: Vec::new(),
                next_gen: 1,
                wake_fd: wake.as_raw_fd(),
                wake_armed: false,
                epoch: 0,
                streams: streams::Streams::default(),
                accepts: accepts::Accepts::default(),
                datagrams: datagrams::Datagrams::default(),
            }),
        };
        {
            // Arm the eventfd's multishot poll now: a kernel without
            // multishot polls refuses it at submission, with EINVAL.
            let mut st = reactor.state.borrow_mut();
            st.arm_wake()?;
            st.submit()?;
            let mut cq = st.ring.completion();
            cq.sync();
            if let Some(cqe) = cq.next() {
                if cqe.user_data() == WAKE && cqe.result() < 0 {
                    return Err(io::Error::from_raw_os_error(-cqe.result()));
                }
                // An eventfd at zero cannot have completed otherwise.
                debug_assert!(false, "unexpected completion at set-up");
            }
        }
        Ok((reactor, wake))
    }

    /// `io_uring_setup`, with `IORING_SETUP_SUBMIT_ALL` (Linux 5.18: one
    /// failed SQE does not stop the rest of its batch) where the kernel
    /// has it.
    ///
    /// First with `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN`
    /// (Linux 6.1; a loop is used by the thread that built it only, as
    /// `EventLoop` is `!Send`): the kernel neither interrupts the loop thread
    /// to post completions (with a busy completion path, every received
    /// packet would) nor posts them before the loop asks, in its wait, for
    /// the whole batch. `IORING_SETUP_TASKRUN_FLAG` makes the kernel flag
    /// pending work, so that a zero-timeout wait knows it must enter
    /// (`wait` checks it), and [`State::submit`] asks for that work to run,
    /// since a cancelled operation lets go of its file only then. Else
    /// `IORING_SETUP_COOP_TASKRUN` (5.19: no interrupt, completions posted
    /// at the next kernel entry), else neither. The 1 KiB echo on one
    /// connection costs epoll's CPU per message with the first, ~10% more
    /// with the second (`cargo xtask bench net`, 1k_x1_1cpu).
    fn setup() -> io::Result<IoUring> {
        let inval = |r: &io::Result<IoUring>| matches!(r, Err(e) if e.raw_os_error() == Some(Errno::INVAL.raw_os_error()));
        let deferred = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_submit_all()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .build(SQ_ENTRIES);
        if !inval(&deferred) {
            return deferred;
        }
        let coop = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_submit_all()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(SQ_ENTRIES);
        if !inval(&coop) {
            return coop;
        }
        let with_all = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_submit_all()
            .build(SQ_ENTRIES);
        if !inval(&with_all) {
            return with_all;
        }
        IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .build(SQ_ENTRIES)
    }

    /// Starts watching `fd` under `key`: checked now, armed by the next
    /// `wait`.
    pub(crate) fn add(&self, fd: RawFd, key: usize, interest: Interest) -> io::Result<()> {
        // Keys stay below 2^31: bit 31 of `user_data` marks a completion
        // operation (uring/streams.rs).
        if key >= 1 << 31 {
            return Err(errno(Errno::NOSPC));
        }
        let file = file_id(fd)?;
        let mut st = self.state.borrow_mut();
        if key >= st.regs.len() {
            st.regs.resize_with(key + 1, || None);
        }
        debug_assert!(st.regs[key].is_none(), "key {key} registered twice");
        st.regs[key] = Some(Reg {
            fd,
            file,
            interest,
            armed: None,
            queued: true,
            remove_queued_at: None,
        });
        st.to_arm.push(key);
        Ok(())
    }

    /// Changes what `key` waits for: its poll in flight (if any) is
    /// cancelled and a new one is armed by the next `wait`, both queued.
    /// Fails as `EPOLL_CTL_MOD` does when the fd was closed (`EBADF`) or
    /// now names another file (`ENOENT`: the watched file is gone), which
    /// costs one `fstat`, as epoll's modify costs one `epoll_ctl`.
    pub(crate) fn modify(&self, fd: RawFd, key: usize, interest: Interest) -> io::Result<()> {
        let file = file_id(fd).map_err(|e| match Errno::from_io_error(&e) {
            Some(Errno::PERM) => errno(Errno::NOENT),
            _ => e,
        })?;
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        let armed = match st.regs.get(key) {
            Some(Some(reg)) if reg.fd == fd && reg.file == file => reg.armed,
            _ => return Err(errno(Errno::NOENT)),
        };
        // First the one step that can fail, so that a failure changes nothing.
        if let Some(ud) = armed {
            st.push(&opcode::PollRemove::new(ud).build().user_data(IGNORED))?;
        }
        // After the push: a full ring made it submit what came before.
        // (`push` does not touch the registrations: the slot is still there.)
        let epoch = st.epoch;
        if let Some(Some(reg)) = st.regs.get_mut(key) {
            reg.interest = interest;
            if armed.is_some() {
                reg.armed = None;
                reg.remove_queued_at = Some(epoch);
            }
            if !reg.queued {
                reg.queued = true;
                st.to_arm.push(key);
            }
        }
        Ok(())
    }

    /// Stops watching `key`. A poll in flight is cancelled *now* (the
    /// caller may close the fd next, and the kernel's reference on the file
    /// must go with it): its `POLL_REMOVE`, and one that `modify` queued
    /// since the last submission, are submitted before this returns. Their
    /// completions, and the poll's if it completed meanwhile, are stale.
    pub(crate) fn delete(&self, _fd: RawFd, key: usize) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        let Some(reg) = st.regs.get_mut(key).and_then(Option::take) else {
            return Err(errno(Errno::NOENT));
        };
        let mut submit = reg.remove_queued_at == Some(st.epoch);
        if let Some(ud) = reg.armed {
            st.push(&opcode::PollRemove::new(ud).build().user_data(IGNORED))?;
            submit = true;
        }
        if submit {
            st.submit()?;
        }
        Ok(())
    }

    pub(crate) fn wait(
        &self,
        out: &mut Vec<Readiness>,
        done: &mut Vec<Completed>,
        timeout: Option<Duration>,
        notifier: &Notifier,
    ) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        st.arm_queued()?;
        st.arm_streams()?;
        st.arm_accepts()?;
        st.arm_datagrams()?;
        let res = match timeout {
            Some(d) if d.is_zero() => {
                // Nothing to wait for: enter only to submit, or to flush
                // completions the kernel holds back (overflow, task work).
                let mut sq = st.ring.submission();
                sq.sync();
                let enter = !sq.is_empty() || sq.cq_overflow() || sq.taskrun();
                drop(sq);
                if enter {
                    st.ring.submit()
                } else {
                    Ok(0)
                }
            }
            Some(d) => {
                let ts = types::Timespec::from(round_up_to_ms(d));
                let args = types::SubmitArgs::new().timespec(&ts);
                st.ring.submitter().submit_with_args(1, &args)
            }
            None => st.ring.submit_and_wait(1),
        };
        match res {
            // Submitted (ETIME: and the timeout passed). An epoch too many
            // (nothing was queued) only means no pending removal.
            Ok(_) => st.epoch += 1,
            Err(e) => match Errno::from_io_error(&e) {
                Some(Errno::TIME) => st.epoch += 1,
                // A signal came, or the completion ring is full: read it
                // now; what was not submitted goes with the next enter.
                Some(Errno::INTR) | Some(Errno::BUSY) | Some(Errno::AGAIN) => {}
                _ => return Err(e),
            },
        }
        st.reap(out, done, notifier);
        Ok(())
    }

    /// Runs `f` on the backend's state (the completion path's calls,
    /// uring_stream.rs); never across user code.
    pub(crate) fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.borrow_mut())
    }

    /// Whether streams, listeners or datagram sockets of the completion path are open or have
    /// operations in flight: the loop must wait for their completions.
    pub(crate) fn has_streams(&self) -> bool {
        let st = self.state.borrow();
        st.streams.is_busy() || st.accepts.table.is_busy() || st.datagrams.table.is_busy()
    }
}

impl Drop for State {
    /// Cancels the completion path's operations and waits for them before
    /// the ring and the buffers go (uring/streams.rs).
    fn drop(&mut self) {
        self.drain_streams();
    }
}

/// `d` rounded up to whole milliseconds, as the epoll backend's timeout
/// (`epoll_pwait` takes milliseconds, rounded up): timers never fire early,
/// and a heap of timers a few microseconds apart is served in millisecond
/// batches, not one wake-up each.
fn round_up_to_ms(d: Duration) -> Duration {
    let ms = d.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// The poll events of `interest` (`POLLERR`/`POLLHUP` always come).
fn poll_flags(interest: Interest) -> u32 {
    let mut flags = PollFlags::empty();
    if interest.read {
        flags |= PollFlags::IN | PollFlags::RDHUP;
    }
    if interest.write {
        flags |= PollFlags::OUT;
    }
    u32::from(flags.bits())
}

impl State {
    /// Submits what is queued, without waiting, and runs the kernel's
    /// pending task work (`GETEVENTS` with a zero timeout): with
    /// `IORING_SETUP_DEFER_TASKRUN`, a cancelled operation lets go of its
    /// file only then, and `delete` and a stream's release promise that the
    /// fd may be closed next.
    fn submit(&mut self) -> io::Result<usize> {
        let ts = types::Timespec::new();
        let args = types::SubmitArgs::new().timespec(&ts);
        let n = match self.ring.submitter().submit_with_args(1, &args) {
            Ok(n) => n,
            Err(e) if Errno::from_io_error(&e) == Some(Errno::TIME) => 0,
            Err(e) => return Err(e),
        };
        self.epoch += 1;
        Ok(n)
    }

    /// Pushes one SQE, submitting what is queued first if the ring is full.
    fn push(&mut self, sqe: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: `push` requires that whatever the SQE points at stays
            // valid until the operation completes. Polls, poll removals,
            // cancellations, multishot accepts and stream receives (which
            // take their buffers from the provided-buffer ring) point at no
            // memory of ours: they carry an fd, a mask or a buffer group,
            // flags and `user_data` values.
            // The SQEs that point at memory are the completion path's SEND,
            // built by uring/streams.rs, whose caller keeps its bytes
            // unmoved in the stream's slot until the completion is reaped
            // (the SAFETY note at that call and the module docs there), and
            // the datagram RECVMSG, whose `msghdr` stays boxed in its slot
            // until the final completion (uring/datagrams.rs).
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                return Ok(());
            }
            self.submit()?;
        }
    }

    /// A fresh `user_data` for a poll on `key`.
    fn next_user_data(&mut self, key: usize) -> u64 {
        let generation = self.next_gen;
        self.next_gen = match generation.wrapping_add(1) {
            0 | u32::MAX => 1,
            g => g,
        };
        (u64::from(generation) << 32) | key as u64
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        let sqe = opcode::PollAdd::new(types::Fd(self.wake_fd), u32::from(PollFlags::IN.bits()))
            .multi(true)
            .build()
            .user_data(WAKE);
        self.push(&sqe)?;
        self.wake_armed = true;
        Ok(())
    }

    /// Writes a `POLL_ADD` for every queued key still registered and not
    /// armed, and re-arms the eventfd's poll if the kernel ended it.
    fn arm_queued(&mut self) -> io::Result<()> {
        if !self.wake_armed {
            self.arm_wake()?;
        }
        let mut keys = std::mem::take(&mut self.to_arm);
        let mut res = Ok(());
        for &key in &keys {
            let arm = match self.regs.get_mut(key) {
                Some(Some(reg)) if reg.queued => {
                    reg.queued = false;
                    (reg.armed.is_none() && !reg.interest.is_empty())
                        .then_some((reg.fd, reg.interest))
                }
                _ => None, // gone, or already armed from an earlier entry
            };
            let Some((fd, interest)) = arm else {
                continue;
            };
            let ud = self.next_user_data(key);
            let sqe = opcode::PollAdd::new(types::Fd(fd), poll_flags(interest))
                .build()
                .user_data(ud);
            let pushed = self.push(&sqe);
            if let Some(Some(reg)) = self.regs.get_mut(key) {
                if pushed.is_ok() {
                    reg.armed = Some(ud);
                } else {
                    // Not armed after all: try again next time.
                    reg.queued = true;
                    self.to_arm.push(key);
                }
            }
            if let Err(e) = pushed {
                res = Err(e);
            }
        }
        keys.clear();
        if self.to_arm.is_empty() {
            // Keep the allocation.
            self.to_arm = keys;
        }
        res
    }

    /// Reads the completion ring into readiness reports.
    fn reap(&mut self, out: &mut Vec<Readiness>, done: &mut Vec<Completed>, notifier: &Notifier) {
        let State {
            ring,
            regs,
            to_arm,
            wake_armed,
            streams,
            accepts,
            datagrams,
            ..
        } = self;
        let mut cq = ring.completion();
        cq.sync();
        for cqe in cq.by_ref().take(MAX_REAP) {
            let ud = cqe.user_data();
            let res = cqe.result();
            match ud {
                WAKE => {
                    notifier.clear_notified();
                    if !cqueue::more(cqe.flags()) {
                        *wake_armed = false;
                    }
                    continue;
                }
                IGNORED => continue,
                _ if accepts::is_accept(ud) => {
                    accepts.reap_op(ud, res, cqe.flags(), done);
                    continue;
                }
                _ if datagrams::is_datagram(ud) => {
                    datagrams.reap_op(ud, res, cqe.flags(), done);
                    continue;
                }
                _ if ud & streams::OP_TAG != 0 => {
                    streams.reap_op(ud, res, cqe.flags(), done);
                    continue;
                }
                _ => {}
            }
            let key = (ud & u64::from(u32::MAX)) as usize;
            let Some(Some(reg)) = regs.get_mut(key) else {
                continue; // deleted: stale
            };
            if reg.armed != Some(ud) {
                continue; // cancelled by modify: stale
            }
            reg.armed = None;
            if res == -Errno::BADF.raw_os_error() {
                // The fd was closed before the poll was armed: gone, as
                // epoll forgets a closed file. Nothing to report or re-arm.
                continue;
            }
            if !reg.queued {
                reg.queued = true;
                to_arm.push(key);
            }
            if res == -Errno::CANCELED.raw_os_error() {
                continue;
            }
            let (readable, writable) = if res < 0 {
                (true, true)
            } else {
                let f = PollFlags::from_bits_retain(res as u16);
                let err = f.intersects(PollFlags::ERR | PollFlags::HUP);
                (
                    err || f.intersects(PollFlags::IN | PollFlags::RDHUP | PollFlags::PRI),
                    err || f.contains(PollFlags::OUT),
                )
            };
            out.push(Readiness {
                key,
                readable,
                writable,
                hup: false,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::round_up_to_ms;
    use std::time::Duration;

    #[test]
    fn the_timeout_is_rounded_up_to_whole_milliseconds() {
        let cases = [
            (Duration::ZERO, Duration::ZERO),
            (Duration::from_nanos(1), Duration::from_millis(1)),
            (Duration::from_micros(999), Duration::from_millis(1)),
            (Duration::from_millis(1), Duration::from_millis(1)),
            (Duration::from_micros(1001), Duration::from_millis(2)),
            (Duration::from_secs(3), Duration::from_secs(3)),
        ];
        for (d, want) in cases {
            assert_eq!(round_up_to_ms(d), want, "{d:?}");
        }
        assert!(round_up_to_ms(Duration::MAX) >= Duration::from_secs(u64::MAX / 1000));
    }
}
