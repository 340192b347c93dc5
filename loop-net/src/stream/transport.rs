//! The socket stream transport's `Transport` methods (a child module of
//! `stream`), and those it shares with the TLS transport
//! ([`socket_transport_methods`]) and what both report as socket facts
//! ([`socket_extra_info`]).

use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd};

use loop_core::{EventLoop, LoopError};
use rustix::net::Shutdown;

use super::{State, Stream};
use crate::addr::SockAddr;
use crate::protocol::AnyProtocol;
use crate::transport::{ExtraInfo, TransportImpl};
use crate::write_buffer::WriteBufferLimits;

/// The `TransportImpl` methods that the socket stream and TLS transports
/// share, written once: both have a `life` (lifecycle.rs), a `flow`
/// (flow.rs), a `sendfile` state, the loss counters, and `write_impl`,
/// `notify` and `maybe_pause_protocol` of their own.
macro_rules! socket_transport_methods {
    () => {
        fn write(&self, data: &[u8]) -> Result<(), LoopError> {
            self.sendfile.check_write()?;
            self.rc().write_impl(&[data])
        }

        fn writelines(&self, chunks: &[&[u8]]) -> Result<(), LoopError> {
            self.sendfile.check_write()?;
            self.rc().write_impl(chunks)
        }

        fn set_protocol(&self, protocol: AnyProtocol) {
            let old = self.life.replace_protocol(protocol);
            drop(old);
            self.sendfile.protocol_replaced();
            if self.flow.is_paused() {
                crate::flow::FlowOwner::notify(self, crate::flow::Notice::Pause);
            }
        }

        fn get_protocol(&self) -> AnyProtocol {
            self.life.protocol()
        }

        fn write_buffer_limits(&self) -> WriteBufferLimits {
            self.flow.limits()
        }

        fn set_write_buffer_limits(&self, limits: WriteBufferLimits) {
            self.flow.set_limits(limits);
            crate::flow::FlowOwner::maybe_pause_protocol(self);
        }

        fn get_loop(&self) -> Option<EventLoop> {
            self.life.get_loop()
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
    };
}
#[cfg(feature = "tls")]
pub(crate) use socket_transport_methods;

/// `get_extra_info`'s socket facts: `Some(answer)` for `"peername"`,
/// `"sockname"` and `"socket"` (the fd while it is open), `None` for any
/// other name.
pub(crate) fn socket_extra_info(
    name: &str,
    peername: &Option<SockAddr>,
    sockname: &Option<SockAddr>,
    fd: &RefCell<Option<OwnedFd>>,
) -> Option<Option<ExtraInfo>> {
    match name {
        "peername" => Some(peername.clone().map(ExtraInfo::Addr)),
        "sockname" => Some(sockname.clone().map(ExtraInfo::Addr)),
        "socket" => Some(fd.borrow().as_ref().map(|fd| ExtraInfo::Fd(fd.as_raw_fd()))),
        _ => None,
    }
}

impl TransportImpl for Stream {
    socket_transport_methods!();

    fn write_eof(&self) -> Result<(), LoopError> {
        if self.life.state() != State::Open || self.eof.get() {
            return Ok(());
        }
        self.eof.set(true);
        if crate::flow::FlowOwner::buffered(self) == 0 {
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
        crate::flow::FlowOwner::buffered(self)
    }

    fn extra_info(&self, name: &str) -> Option<ExtraInfo> {
        socket_extra_info(name, &self.peername, &self.sockname, &self.fd).flatten()
    }

    #[cfg(feature = "tls")]
    fn upgrade_hook(&self) -> Option<std::rc::Rc<Stream>> {
        Some(self.rc())
    }
}
