//! The socket stream transport's `Transport` methods (a child module of
//! `stream`).

use std::os::fd::AsRawFd;

use loop_core::{EventLoop, LoopError};
use rustix::net::Shutdown;

use super::{Notice, State, Stream};
use crate::protocol::AnyProtocol;
use crate::transport::{ExtraInfo, TransportImpl};
use crate::write_buffer::WriteBufferLimits;

impl TransportImpl for Stream {
    fn write(&self, data: &[u8]) -> Result<(), LoopError> {
        self.sendfile.check_write()?;
        self.rc().write_impl(&[data])
    }

    fn writelines(&self, chunks: &[&[u8]]) -> Result<(), LoopError> {
        self.sendfile.check_write()?;
        self.rc().write_impl(chunks)
    }

    fn write_eof(&self) -> Result<(), LoopError> {
        if self.life.state() != State::Open || self.eof.get() {
            return Ok(());
        }
        self.eof.set(true);
        if self.buffer.borrow().is_empty() {
            let _ = self.with_fd(|fd| rustix::net::shutdown(fd, Shutdown::Write));
        }
        Ok(())
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    fn close(&self) {
        if !self.upgrade.forward(|t| t.close()) {
            self.rc().close_impl()
        }
    }

    fn abort(&self) {
        if !self.upgrade.forward(|t| t.abort()) {
            self.rc().force_close(None)
        }
    }

    fn is_closing(&self) -> bool {
        self.life.state() != State::Open
    }

    fn set_protocol(&self, protocol: AnyProtocol) {
        let old = self.life.replace_protocol(protocol);
        drop(old);
        self.sendfile.protocol_replaced();
        if self.flow.is_paused() {
            self.notify(Notice::Pause);
        }
    }

    fn get_protocol(&self) -> AnyProtocol {
        self.life.protocol()
    }

    fn pause_reading(&self) {
        if self.life.state() == State::Open {
            // Remembered, so that a pause from inside connection_made holds
            // when the transport would start reading after it.
            self.user_paused.set(true);
            self.stop_reading();
        }
    }

    fn resume_reading(&self) {
        if self.life.state() == State::Open {
            self.user_paused.set(false);
            self.rc().start_reading();
        }
    }

    fn is_reading(&self) -> bool {
        self.life.state() == State::Open && self.reading.get()
    }

    fn write_buffer_size(&self) -> usize {
        self.buffer.borrow().len()
    }

    fn write_buffer_limits(&self) -> WriteBufferLimits {
        self.flow.limits()
    }

    fn set_write_buffer_limits(&self, limits: WriteBufferLimits) {
        self.flow.set_limits(limits);
        self.maybe_pause_protocol();
    }

    fn extra_info(&self, name: &str) -> Option<ExtraInfo> {
        match name {
            "peername" => self.peername.clone().map(ExtraInfo::Addr),
            "sockname" => self.sockname.clone().map(ExtraInfo::Addr),
            "socket" => self
                .fd
                .borrow()
                .as_ref()
                .map(|fd| ExtraInfo::Fd(fd.as_raw_fd())),
            _ => None,
        }
    }

    fn get_loop(&self) -> Option<EventLoop> {
        self.life.lp().get()
    }

    fn writes_after_lost(&self) -> u64 {
        self.writes_after_lost.get()
    }

    fn dropped_on_loss(&self) -> usize {
        self.dropped_on_loss.get()
    }

    fn sendfile_support(&self) -> Option<&dyn crate::sendfile::transport::SendfileSupport> {
        Some(self)
    }

    #[cfg(feature = "tls")]
    fn upgrade_hook(&self) -> Option<std::rc::Rc<Stream>> {
        Some(self.rc())
    }
}
