//! The errors of [`StreamReader`](crate::StreamReader): [`StreamError`]
//! and asyncio's `IncompleteReadError` and `LimitOverrunError`, and the copy
//! of an `io::Error` that `set_exception` hands to every later read.

use std::fmt;
use std::io;

/// An end of file came before the read was complete (asyncio's
/// `IncompleteReadError`). The bytes read so far are in
/// [`partial`](Self::partial) and are no longer in the reader's buffer.
#[doc(alias = "asyncio.IncompleteReadError")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteReadError {
    /// The bytes read before the end of file.
    pub partial: Vec<u8>,
    /// How many bytes were wanted (`readexactly`), `None` for
    /// `readuntil` (asyncio's "undefined").
    pub expected: Option<usize>,
}

impl fmt::Display for IncompleteReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.expected {
            Some(n) => write!(
                f,
                "{} bytes read on a total of {n} expected bytes",
                self.partial.len()
            ),
            None => write!(
                f,
                "{} bytes read on a total of undefined expected bytes",
                self.partial.len()
            ),
        }
    }
}

impl std::error::Error for IncompleteReadError {}

/// `readuntil` could not find the separator within the reader's limit
/// (asyncio's `LimitOverrunError`). The data stays in the buffer.
#[doc(alias = "asyncio.LimitOverrunError")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitOverrunError {
    /// How many bytes are known not to hold the separator (separator not
    /// found), or where the separator starts (found beyond the limit):
    /// asyncio's `consumed`.
    pub consumed: usize,
    pub(crate) message: &'static str,
}

impl LimitOverrunError {
    /// asyncio's message: "Separator is not found, and chunk exceed the
    /// limit" or "Separator is found, but chunk is longer than limit".
    pub fn message(&self) -> &'static str {
        self.message
    }
}

impl fmt::Display for LimitOverrunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message)
    }
}

impl std::error::Error for LimitOverrunError {}

/// Why a [`StreamReader`](crate::StreamReader) read (or call) failed.
///
/// Converts into an [`io::Error`] (for `?` in functions returning
/// `io::Result`): [`Io`](Self::Io) gives its error back, the others become
/// the `io::Error`'s inner error with the kind listed on each variant.
#[derive(Debug)]
#[non_exhaustive]
pub enum StreamError {
    /// End of file before the read was complete (`readexactly`,
    /// `readuntil`); asyncio's `IncompleteReadError`. io kind:
    /// `UnexpectedEof`.
    IncompleteRead(IncompleteReadError),
    /// `readuntil`: the separator is not within the limit; the data is left
    /// in the buffer, so read it another way (`read`, `readexactly`) or fail.
    /// asyncio's `LimitOverrunError`. io kind: `InvalidData`.
    LimitOverrun(LimitOverrunError),
    /// `readline`: the line is longer than the limit. As asyncio (which
    /// raises `ValueError` here), the line was discarded from the buffer
    /// (through its newline if that was in the buffer, else the whole
    /// buffer), so the next read starts after it. io kind: `InvalidData`.
    LineTooLong(LimitOverrunError),
    /// A read had to wait while another read was already waiting for data
    /// (asyncio's `RuntimeError`); only one task may read at a time. io
    /// kind: `ResourceBusy`.
    AlreadyWaiting {
        /// The method that was refused (`"read"`, `"readuntil"`, ...).
        method: &'static str,
    },
    /// An argument is out of range: an empty separator, a zero limit
    /// (asyncio's `ValueError`). io kind: `InvalidInput`.
    InvalidArgument(&'static str),
    /// The call does not fit the reader's state: `feed_data` after
    /// `feed_eof`, a second `set_transport`. io kind: `Other`.
    InvalidState(&'static str),
    /// The exception given to [`StreamReader::set_exception`](crate::StreamReader::set_exception) (the
    /// connection's error): every later read fails with a copy of it.
    Io(io::Error),
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::IncompleteRead(e) => e.fmt(f),
            StreamError::LimitOverrun(e) | StreamError::LineTooLong(e) => e.fmt(f),
            StreamError::AlreadyWaiting { method } => write!(
                f,
                "{method}() called while another coroutine is already waiting for incoming data"
            ),
            StreamError::InvalidArgument(m) | StreamError::InvalidState(m) => f.write_str(m),
            StreamError::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StreamError::IncompleteRead(e) => Some(e),
            StreamError::LimitOverrun(e) | StreamError::LineTooLong(e) => Some(e),
            StreamError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl StreamError {
    /// The [`io::ErrorKind`] this error has as an `io::Error` (listed on
    /// each variant; [`Io`](Self::Io) keeps its own).
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            StreamError::Io(e) => e.kind(),
            StreamError::IncompleteRead(_) => io::ErrorKind::UnexpectedEof,
            StreamError::LimitOverrun(_) | StreamError::LineTooLong(_) => {
                io::ErrorKind::InvalidData
            }
            StreamError::AlreadyWaiting { .. } => io::ErrorKind::ResourceBusy,
            StreamError::InvalidArgument(_) => io::ErrorKind::InvalidInput,
            StreamError::InvalidState(_) => io::ErrorKind::Other,
        }
    }
}

impl From<StreamError> for io::Error {
    fn from(err: StreamError) -> io::Error {
        match err {
            StreamError::Io(e) => e,
            other => io::Error::new(other.kind(), other),
        }
    }
}

/// A stream error as a loop error (through its `io::Error` form), so a
/// function returning `Result<_, LoopError>` can `?` a stream read: an
/// [`ErrorKind::Io`](loop_core::ErrorKind::Io) error whose source is the
/// `io::Error` (of this error's [`kind`](StreamError::kind), with this error
/// inside it).
impl From<StreamError> for loop_core::LoopError {
    fn from(err: StreamError) -> loop_core::LoopError {
        loop_core::LoopError::from(io::Error::from(err))
    }
}

impl From<io::Error> for StreamError {
    fn from(err: io::Error) -> StreamError {
        StreamError::Io(err)
    }
}

/// A copy of an `io::Error` (which is not `Clone`): the same OS error code;
/// else the same kind with the same inner error when that is a
/// [`LoopError`](loop_core::LoopError) (cheap to clone), or the same kind and
/// message.
pub(crate) fn clone_io_error(e: &io::Error) -> io::Error {
    if let Some(code) = e.raw_os_error() {
        return io::Error::from_raw_os_error(code);
    }
    match e.get_ref() {
        None => io::Error::from(e.kind()),
        Some(inner) => match inner.downcast_ref::<loop_core::LoopError>() {
            Some(le) => io::Error::new(e.kind(), le.clone()),
            None => io::Error::new(e.kind(), inner.to_string()),
        },
    }
}
