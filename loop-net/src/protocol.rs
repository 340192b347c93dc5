//! Protocols: the callbacks a user implements, as in asyncio.
//!
//! # Delivery rules
//! - A protocol lives in an `Rc<RefCell<P>>` that the transport and the user
//!   share ([`ProtocolHandle`]). Its methods take `&mut self`.
//! - The transport calls it only from the loop: `connection_made` first,
//!   then `data_received`/`eof_received` (or `get_buffer`/`buffer_updated`),
//!   then `connection_lost` exactly once, always through `call_soon`.
//! - `pause_writing` and `resume_writing` are synchronous, as in asyncio:
//!   `write()` calls `pause_writing` before it returns. When the protocol is
//!   the one calling `write()` (from inside one of its own callbacks, so its
//!   `RefCell` is borrowed), the notification is delivered right after that
//!   callback returns instead, in order, before anything else runs. No
//!   protocol method is ever re-entered, and no borrow of the protocol is held
//!   by the transport while another protocol's code runs.
//!
//! The state machine is asyncio's:
//! `start -> connection_made [-> data_received]* [-> eof_received] -> connection_lost -> end`.

use std::any::Any;
use std::cell::{Ref, RefCell, RefMut};
use std::fmt;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use loop_core::{EventLoop, ExceptionContext, LoopError};

use crate::transport::Transport;

/// What every protocol receives: the connection's start and end, and the
/// transport's flow-control signals (asyncio's `BaseProtocol`).
#[doc(alias = "asyncio.BaseProtocol")]
pub trait BaseProtocol: 'static {
    /// The connection is ready; keep `transport` to write to it.
    #[doc(alias = "BaseProtocol.connection_made")]
    fn connection_made(&mut self, transport: Transport) {
        let _ = transport;
    }

    /// The connection is closed: `None` after a normal close or EOF, the
    /// error otherwise. Called exactly once, after `connection_made`.
    #[doc(alias = "BaseProtocol.connection_lost")]
    fn connection_lost(&mut self, error: Option<io::Error>) {
        let _ = error;
    }

    /// The transport's write buffer went above its high-water mark: stop
    /// writing until [`resume_writing`](Self::resume_writing).
    #[doc(alias = "BaseProtocol.pause_writing")]
    fn pause_writing(&mut self) {}

    /// The write buffer drained to its low-water mark or below.
    #[doc(alias = "BaseProtocol.resume_writing")]
    fn resume_writing(&mut self) {}

    /// The protocol's type name, which the report of a panic in one of its
    /// methods names (`protocol: my_app::Echo`, and the error's
    /// `my_app::Echo.data_received() panicked at src/main.rs:12:9: ...`).
    /// The default, [`std::any::type_name`] of the implementing type, needs
    /// no override.
    fn protocol_type_name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

/// A streaming protocol: receives bytes as they arrive (asyncio's `Protocol`).
///
/// ```
/// use loop_net::{BaseProtocol, Protocol, Transport};
/// /// Echoes every byte back.
/// struct Echo(Option<Transport>);
/// impl BaseProtocol for Echo {
///     fn connection_made(&mut self, t: Transport) {
///         self.0 = Some(t);
///     }
/// }
/// impl Protocol for Echo {
///     fn data_received(&mut self, data: &[u8]) {
///         if let Some(t) = &self.0 {
///             let _ = t.write(data);
///         }
///     }
/// }
/// let _factory = || Echo(None);
/// ```
#[doc(alias = "asyncio.Protocol")]
pub trait Protocol: BaseProtocol {
    /// Some bytes arrived. The slice is the transport's read buffer, valid
    /// only during the call (no allocation per read).
    #[doc(alias = "Protocol.data_received")]
    fn data_received(&mut self, data: &[u8]);

    /// The peer closed its writing side. Return `true` to keep the
    /// connection half-open (you may still write), `false` (the default) to
    /// let the transport close.
    #[doc(alias = "Protocol.eof_received")]
    fn eof_received(&mut self) -> bool {
        false
    }
}

/// A streaming protocol that hands the transport its own buffer to read into
/// (asyncio's `BufferedProtocol`): no copy between the socket and the
/// protocol.
#[doc(alias = "asyncio.BufferedProtocol")]
pub trait BufferedProtocol: BaseProtocol {
    /// The buffer to read into next; `size_hint` is how much the transport
    /// would like (it reads at most the slice's length). An empty slice is an
    /// error that aborts the connection.
    #[doc(alias = "BufferedProtocol.get_buffer")]
    fn get_buffer(&mut self, size_hint: usize) -> &mut [u8];

    /// `n` bytes were written at the start of the last buffer.
    #[doc(alias = "BufferedProtocol.buffer_updated")]
    fn buffer_updated(&mut self, n: usize);

    /// As [`Protocol::eof_received`].
    #[doc(alias = "BufferedProtocol.eof_received")]
    fn eof_received(&mut self) -> bool {
        false
    }
}

/// The user's handle on a protocol that a transport drives: shared with the
/// transport, borrowed on demand.
pub struct ProtocolHandle<P: ?Sized> {
    pub(crate) cell: Rc<RefCell<P>>,
}

impl<P: ?Sized> Clone for ProtocolHandle<P> {
    fn clone(&self) -> Self {
        ProtocolHandle {
            cell: self.cell.clone(),
        }
    }
}

impl<P> ProtocolHandle<P> {
    /// Wraps a protocol.
    pub fn new(protocol: P) -> Self {
        ProtocolHandle {
            cell: Rc::new(RefCell::new(protocol)),
        }
    }
}

impl<P: ?Sized> ProtocolHandle<P> {
    /// Wraps a cell that is already shared: for crates that drive protocols
    /// of kinds of their own (loop-process's subprocess protocols).
    pub fn from_cell(cell: Rc<RefCell<P>>) -> Self {
        ProtocolHandle { cell }
    }

    /// The shared cell the transport drives (see [`from_cell`](Self::from_cell)).
    pub fn cell(&self) -> &Rc<RefCell<P>> {
        &self.cell
    }

    /// Borrows the protocol. Panics if it is mutably borrowed, which happens
    /// only inside one of its own callbacks.
    pub fn borrow(&self) -> Ref<'_, P> {
        self.cell.borrow()
    }

    /// Borrows the protocol mutably; see [`borrow`](Self::borrow).
    pub fn borrow_mut(&self) -> RefMut<'_, P> {
        self.cell.borrow_mut()
    }

    /// Whether two handles share one protocol.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.cell, &other.cell)
    }
}

impl<P: ?Sized> fmt::Debug for ProtocolHandle<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProtocolHandle")
    }
}

/// The protocol a transport drives, type-erased.
#[derive(Clone)]
pub enum AnyProtocol {
    /// A [`Protocol`].
    Streaming(Rc<RefCell<dyn Protocol>>),
    /// A [`BufferedProtocol`].
    Buffered(Rc<RefCell<dyn BufferedProtocol>>),
}

impl fmt::Debug for AnyProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnyProtocol::Streaming(_) => f.write_str("AnyProtocol::Streaming"),
            AnyProtocol::Buffered(_) => f.write_str("AnyProtocol::Buffered"),
        }
    }
}

impl<P: Protocol> From<ProtocolHandle<P>> for AnyProtocol {
    fn from(h: ProtocolHandle<P>) -> Self {
        AnyProtocol::Streaming(h.cell)
    }
}

impl AnyProtocol {
    /// Wraps a buffered protocol (a `From` impl would overlap with the
    /// streaming one).
    pub fn buffered<P: BufferedProtocol>(h: ProtocolHandle<P>) -> Self {
        AnyProtocol::Buffered(h.cell)
    }

    /// Whether two values drive the same protocol.
    pub fn ptr_eq(&self, other: &AnyProtocol) -> bool {
        match (self, other) {
            (AnyProtocol::Streaming(a), AnyProtocol::Streaming(b)) => Rc::ptr_eq(a, b),
            (AnyProtocol::Buffered(a), AnyProtocol::Buffered(b)) => Rc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Runs `f` on the protocol as a [`BaseProtocol`], if it is not busy.
    /// Returns `false` (and does not call `f`) when the protocol is inside
    /// one of its own callbacks.
    /// The protocol's type name ([`BaseProtocol::protocol_type_name`]), for
    /// reports; a placeholder while the protocol is borrowed elsewhere.
    pub(crate) fn type_name(&self) -> &'static str {
        let name = match self {
            AnyProtocol::Streaming(p) => p.try_borrow().ok().map(|p| p.protocol_type_name()),
            AnyProtocol::Buffered(p) => p.try_borrow().ok().map(|p| p.protocol_type_name()),
        };
        name.unwrap_or("<protocol in use>")
    }

    pub(crate) fn try_with_base(&self, f: impl FnOnce(&mut dyn BaseProtocol)) -> bool {
        match self {
            AnyProtocol::Streaming(p) => match p.try_borrow_mut() {
                Ok(mut p) => {
                    f(upcast_streaming(&mut *p));
                    true
                }
                Err(_) => false,
            },
            AnyProtocol::Buffered(p) => match p.try_borrow_mut() {
                Ok(mut p) => {
                    f(upcast_buffered(&mut *p));
                    true
                }
                Err(_) => false,
            },
        }
    }
}

/// What came of offering `connection_made` to a protocol
/// ([`AnyProtocol::deliver_connection_made`]).
pub(crate) enum Made {
    /// It was called and returned.
    Called,
    /// The protocol is busy (a task holds its handle across an await): it
    /// was not called, and the transport is handed back for the retry.
    Busy(Transport),
    /// It panicked: the payload, for the transport to report
    /// ([`report_protocol_panic`]) before it closes.
    Panicked(Box<dyn Any + Send>),
}

impl AnyProtocol {
    /// Calls `connection_made(transport)`, catching a panic; a busy protocol
    /// is not called (every stream-like transport's first delivery).
    pub(crate) fn deliver_connection_made(&self, transport: Transport) -> Made {
        let mut arg = Some(transport);
        let called = catch_unwind(AssertUnwindSafe(|| {
            self.try_with_base(|p| {
                if let Some(t) = arg.take() {
                    p.connection_made(t)
                }
            })
        }));
        match called {
            Ok(true) => Made::Called,
            Ok(false) => Made::Busy(arg.take().expect("connection_made was not called")),
            Err(payload) => Made::Panicked(payload),
        }
    }
}

/// Reports that the protocol callback `what` panicked (asyncio's "Fatal
/// error: protocol.{what}() call failed.", with `transport` and the
/// protocol's type as context; the error names the type and where it
/// panicked) and returns the error the transport closes with.
pub(crate) fn report_protocol_panic(
    lp: &EventLoop,
    what: &str,
    payload: Box<dyn Any + Send>,
    transport: String,
    protocol: &AnyProtocol,
) -> io::Error {
    let name = protocol.type_name();
    let err = LoopError::panicked(format!("{name}.{what}()"), payload);
    lp.call_exception_handler(
        ExceptionContext::new(format!("Fatal error: protocol.{what}() call failed."))
            .with_error(err.clone())
            .with("transport", transport)
            .with("protocol", name),
    );
    io::Error::other(err.to_string())
}

impl AnyProtocol {
    /// Calls `connection_lost(error)`, catching a panic and reporting it to
    /// the exception handler (with `transport` as context). When the protocol
    /// is borrowed elsewhere (a task holding its handle across an await), the
    /// error is handed back for the caller to retry later.
    pub(crate) fn deliver_connection_lost(
        &self,
        lp: &EventLoop,
        error: Option<io::Error>,
        transport: &str,
    ) -> Result<(), Option<io::Error>> {
        let mut error = Some(error);
        let called = catch_unwind(AssertUnwindSafe(|| {
            self.try_with_base(|p| p.connection_lost(error.take().flatten()))
        }));
        match called {
            Ok(true) => Ok(()),
            Ok(false) => Err(error.take().flatten()),
            Err(payload) => {
                let name = self.type_name();
                lp.call_exception_handler(
                    ExceptionContext::new("protocol.connection_lost() failed")
                        .with_error(LoopError::panicked(
                            format!("{name}.connection_lost()"),
                            payload,
                        ))
                        .with("transport", transport)
                        .with("protocol", name),
                );
                Ok(())
            }
        }
    }
}

impl AnyProtocol {
    /// What a lost transport holds instead of its protocol (asyncio sets
    /// `_protocol = None`): one with nothing to call, so that a protocol
    /// that keeps its `Transport` is no `Rc` cycle.
    pub(crate) fn released() -> AnyProtocol {
        AnyProtocol::Streaming(Rc::new(RefCell::new(Released)))
    }
}

/// What a lost transport holds instead of its protocol: nothing to call.
struct Released;

impl BaseProtocol for Released {}

impl Protocol for Released {
    fn data_received(&mut self, _: &[u8]) {}
}

fn upcast_streaming(p: &mut dyn Protocol) -> &mut dyn BaseProtocol {
    p
}

fn upcast_buffered(p: &mut dyn BufferedProtocol) -> &mut dyn BaseProtocol {
    p
}
