//! The read end of a pipe: asyncio's `_UnixReadPipeTransport`. A child
//! module of `pipe`, whose shared lifecycle it plugs into ([`PipeEnd`]).
//!
//! Reading starts after `connection_made` (unless the protocol paused it
//! there). Each readiness does one `read` (bounded work per iteration) into
//! a 64 KiB buffer shared by the thread's pipe transports (taken out of its
//! slot for the call), handed to `data_received` as a slice: no allocation
//! per read. A [`BufferedProtocol`](crate::BufferedProtocol) gets the bytes
//! in its own buffer: the slice of `get_buffer`, or appended to the vector
//! of `get_vec_buffer` (into its spare capacity, not zeroed: how a
//! `StreamReader` fed straight from a child's stdout takes its bytes). The protocol is free whenever the loop dispatches (no
//! borrow of it lives between callbacks); should a readiness find it in
//! use, nothing is read, the fd is unwatched (a level-triggered reader
//! would spin) and watched again right after the protocol is free. End of file:
//! `eof_received()` (its return value is ignored: a read pipe has nothing
//! left to keep open), then `connection_lost(None)`. A read error other than
//! `EAGAIN`/`EINTR` is fatal: reported to the exception handler ("Fatal read
//! error on pipe transport", but for `EIO`, as asyncio) and
//! `connection_lost(Some(err))`. `pause_reading`
//! unregisters the fd; `is_reading` is asyncio's `not paused and not
//! closing`. The write side of the `Transport` API is refused with an
//! `InvalidState` error (`write`, `writelines`, `write_eof`);
//! `can_write_eof` is false.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::{Rc, Weak};

use loop_core::{ErrorKind, EventLoop, ExceptionContext, LoopError};
use rustix::io::Errno;

use super::{
    ensure_open, launch, prepare_pipe_fd, start_watch, stop_watch, wait_made, Dir, Life,
    PipeDirection, PipeEnd, Watch,
};
use crate::lifecycle::{self, LifeState as State, LifecycleOwner};
use crate::protocol::AnyProtocol;
use crate::stream::READ_SIZE;
use crate::transport::{ExtraInfo, Transport, TransportImpl};
use crate::write_buffer::WriteBufferLimits;

thread_local! {
    /// The read buffer shared by every read pipe of this thread.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The read end: asyncio's `_UnixReadPipeTransport`.
pub(crate) struct ReadPipe {
    me: Weak<ReadPipe>,
    life: Life,
    /// `pause_reading` was called (and not undone).
    paused: Cell<bool>,
    reader: Watch,
    /// Never used: a read pipe has no writer.
    unused: Watch,
}

/// What one read gave.
enum Got {
    /// The protocol is in use: nothing was read.
    Busy,
    Data,
    /// End of file; `eof_received` was called.
    Eof,
}

impl ReadPipe {
    /// Wraps the read end `fd` (a FIFO, socket or character device open for
    /// reading; anything else is refused) and `protocol`: sets `O_NONBLOCK`,
    /// schedules `connection_made`, and starts reading after it. Does not
    /// wait: see [`wait_made`](Self::wait_made).
    pub(crate) fn start(
        lp: &EventLoop,
        fd: OwnedFd,
        protocol: AnyProtocol,
    ) -> io::Result<(Transport, Rc<ReadPipe>)> {
        ensure_open(lp)?;
        let info = prepare_pipe_fd(&fd, PipeDirection::Read)?;
        let pipe = Rc::new_cyclic(|me| ReadPipe {
            me: me.clone(),
            life: Life::new(lp, fd, info, protocol),
            paused: Cell::new(false),
            reader: Watch::default(),
            unused: Watch::default(),
        });
        launch(pipe)
    }

    /// Resolves once `connection_made` was called (or the pipe is lost), as
    /// asyncio's `connect_read_pipe` waits for it.
    pub(crate) fn wait_made(self: &Rc<Self>) -> impl std::future::Future<Output = ()> + 'static {
        wait_made(self)
    }

    fn rc(&self) -> Rc<ReadPipe> {
        self.me
            .upgrade()
            .expect("a live ReadPipe is owned by an Rc")
    }

    fn start_reading(self: &Rc<Self>) {
        if self.life.state() != State::Open || self.paused.get() || !self.life.is_made() {
            return;
        }
        if let Err(e) = start_watch(self, Dir::Read, true) {
            self.force_close(Some(e.into()));
        }
    }

    fn on_readable(self: &Rc<Self>) {
        if self.life.state() != State::Open || !self.reader.on.get() {
            return;
        }
        let protocol = self.life.protocol();
        let stage = Cell::new("data_received");
        let outcome = catch_unwind(AssertUnwindSafe(|| self.read_into(&protocol, &stage)));
        drop(protocol);
        match outcome {
            Ok(Ok(Got::Data)) => {}
            Ok(Ok(Got::Busy)) => {
                stop_watch(&**self, Dir::Read);
                let me = self.clone();
                self.life.protocol().when_free(move || me.start_reading());
            }
            Ok(Ok(Got::Eof)) => self.close_impl(),
            Ok(Err(e)) => match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => {}
                _ => {
                    self.report_read_error(&e);
                    self.force_close(Some(e));
                }
            },
            Err(payload) => self.protocol_failed(stage.get(), payload),
        }
    }

    /// asyncio's `_fatal_error(exc, 'Fatal read error on pipe transport')`:
    /// the exception handler hears of it, but for EIO (what a pty gives
    /// once its other side is closed: an end, not a fault).
    fn report_read_error(&self, e: &io::Error) {
        if e.raw_os_error() == Some(Errno::IO.raw_os_error()) {
            return;
        }
        let copy = match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(e.kind(), e.to_string()),
        };
        self.life.lp().call_exception_handler(
            ExceptionContext::new("Fatal read error on pipe transport")
                .with_error(copy)
                .with("transport", format!("{} fd={}", Self::NAME, self.life.raw)),
        );
    }

    /// One `read` into the protocol, which gets the data or the EOF.
    fn read_into(&self, protocol: &AnyProtocol, stage: &Cell<&'static str>) -> io::Result<Got> {
        let got = match protocol {
            AnyProtocol::Streaming(p) => p.try_call(|p| {
                let mut buf = READ_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
                if buf.len() < READ_SIZE {
                    buf.resize(READ_SIZE, 0);
                }
                let got = self
                    .life
                    .with_fd(|fd| rustix::io::read(fd, &mut buf[..]))
                    .unwrap_or(Err(Errno::AGAIN));
                let result = match got {
                    Ok(0) => {
                        stage.set("eof_received");
                        let _ = p.eof_received();
                        Ok(Got::Eof)
                    }
                    Ok(n) => {
                        p.data_received(&buf[..n]);
                        Ok(Got::Data)
                    }
                    Err(e) => Err(io::Error::from(e)),
                };
                READ_BUF.with(|b| {
                    let mut slot = b.borrow_mut();
                    if slot.is_empty() {
                        *slot = buf;
                    }
                });
                result
            }),
            AnyProtocol::Buffered(p) => p.try_call(|p| {
                stage.set("get_buffer");
                if let Some(got) = p.get_vec_buffer(READ_SIZE).map(|v| self.read_into_vec(v)) {
                    stage.set("buffer_updated");
                    p.buffer_updated(*got.as_ref().unwrap_or(&0));
                    return match got {
                        Ok(0) => {
                            stage.set("eof_received");
                            let _ = p.eof_received();
                            Ok(Got::Eof)
                        }
                        Ok(_) => Ok(Got::Data),
                        Err(e) => Err(io::Error::from(e)),
                    };
                }
                let target = p.get_buffer(READ_SIZE);
                if target.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "get_buffer() returned an empty buffer",
                    ));
                }
                let got = self
                    .life
                    .with_fd(|fd| rustix::io::read(fd, &mut *target))
                    .unwrap_or(Err(Errno::AGAIN));
                match got {
                    Ok(0) => {
                        stage.set("eof_received");
                        let _ = p.eof_received();
                        Ok(Got::Eof)
                    }
                    Ok(n) => {
                        stage.set("buffer_updated");
                        p.buffer_updated(n);
                        Ok(Got::Data)
                    }
                    Err(e) => Err(io::Error::from(e)),
                }
            }),
        };
        got.unwrap_or(Ok(Got::Busy))
    }

    /// One `read` appended to a buffered protocol's own vector
    /// ([`get_vec_buffer`](crate::BufferedProtocol::get_vec_buffer)): into
    /// its spare capacity, not zeroed. The caller then calls
    /// `buffer_updated`, whatever the read gave.
    fn read_into_vec(&self, vec: &mut Vec<u8>) -> rustix::io::Result<usize> {
        vec.reserve(READ_SIZE);
        self.life
            .with_fd(|fd| rustix::io::read(fd, rustix::buffer::spare_capacity(vec)))
            .unwrap_or(Err(Errno::AGAIN))
    }

    fn close_impl(self: &Rc<Self>) {
        if !self.life.begin_closing() {
            return;
        }
        stop_watch(&**self, Dir::Read);
        lifecycle::schedule_lost(self, None);
    }

    fn not_supported(what: &str) -> LoopError {
        LoopError::new(
            ErrorKind::InvalidState,
            format!("{what} is not supported by a read pipe transport"),
        )
    }
}

impl PipeEnd for ReadPipe {
    const NAME: &'static str = "read pipe";

    fn shared(&self) -> &Life {
        &self.life
    }

    fn watch(&self, dir: Dir) -> &Watch {
        match dir {
            Dir::Read => &self.reader,
            Dir::Write => &self.unused,
        }
    }

    fn on_ready(self: &Rc<Self>, dir: Dir) {
        if dir == Dir::Read {
            self.on_readable();
        }
    }

    fn start_io(self: &Rc<Self>) {
        self.start_reading();
    }

    fn force_close(self: &Rc<Self>, error: Option<io::Error>) {
        if self.life.lost_claimed() {
            return;
        }
        self.life.force_closing();
        stop_watch(&**self, Dir::Read);
        lifecycle::schedule_lost(self, error);
    }
}

impl TransportImpl for ReadPipe {
    fn write(&self, _data: &[u8]) -> Result<(), LoopError> {
        Err(Self::not_supported("write()"))
    }

    fn writelines(&self, _chunks: &[&[u8]]) -> Result<(), LoopError> {
        Err(Self::not_supported("writelines()"))
    }

    fn write_eof(&self) -> Result<(), LoopError> {
        Err(Self::not_supported("write_eof()"))
    }

    fn can_write_eof(&self) -> bool {
        false
    }

    fn close(&self) {
        self.rc().close_impl()
    }

    fn abort(&self) {
        self.rc().close_impl()
    }

    fn is_closing(&self) -> bool {
        self.life.state() != State::Open
    }

    fn set_protocol(&self, protocol: AnyProtocol) {
        if self.life.state() == State::Lost {
            return;
        }
        let old = self.life.replace_protocol(protocol);
        drop(old);
    }

    fn get_protocol(&self) -> AnyProtocol {
        self.life.protocol()
    }

    fn pause_reading(&self) {
        if self.life.state() != State::Open || self.paused.replace(true) {
            return;
        }
        stop_watch(self, Dir::Read);
    }

    fn resume_reading(&self) {
        if self.life.state() != State::Open || !self.paused.replace(false) {
            return;
        }
        self.rc().start_reading();
    }

    fn is_reading(&self) -> bool {
        self.life.state() == State::Open && !self.paused.get()
    }

    fn write_buffer_size(&self) -> usize {
        0
    }

    fn write_buffer_limits(&self) -> WriteBufferLimits {
        WriteBufferLimits::default()
    }

    fn set_write_buffer_limits(&self, _limits: WriteBufferLimits) {}

    fn extra_info(&self, name: &str) -> Option<ExtraInfo> {
        self.life.extra_info(name)
    }

    fn get_loop(&self) -> Option<EventLoop> {
        self.life.lp().get()
    }

    fn writes_after_lost(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use loop_core::EventLoop;

    use super::ReadPipe;
    use crate::protocol::{AnyProtocol, ProtocolHandle};
    use crate::test_protocol::{check_in_use_read, Rec};

    /// See `check_in_use_read` (test_protocol.rs).
    #[test]
    fn a_readiness_that_finds_the_protocol_in_use_unwatches_until_it_is_free() {
        let lp = EventLoop::new().unwrap();
        let (read_end, write_end) = rustix::pipe::pipe().unwrap();
        let h = ProtocolHandle::new(Rec::default());
        let (t, pipe) = ReadPipe::start(&lp, read_end, AnyProtocol::from(h.clone())).unwrap();
        let mut writer = std::fs::File::from(write_end);
        check_in_use_read(
            &lp,
            &h,
            |data| writer.write_all(data).unwrap(),
            || pipe.on_readable(),
            || pipe.reader.on.get(),
        );
        t.close();
        drop(writer);
        lp.run_until_complete(async {}).unwrap();
        lp.close().unwrap();
    }
}
