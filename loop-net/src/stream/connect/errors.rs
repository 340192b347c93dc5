//! The error of a `create_connection` whose every attempt failed: asyncio's
//! rules for turning the attempts' errors into one, and [`ConnectErrors`]
//! for `all_errors`.
//!
//! asyncio raises the first attempt's `OSError` when every attempt failed
//! with the same text, else one `OSError("Multiple exceptions: ...")`
//! without an errno; with `all_errors=True` it raises every error (an
//! `ExceptionGroup`). Rust's `io::Error` keeps an errno only without a
//! message of its own, so "the same" here is the same errno: then the
//! first attempt's error is returned as the OS gave it
//! (`raw_os_error()` kept; the message does not name the address, which
//! `all_errors` gives). Different errors become one error whose message
//! lists each address with its error, of the first error's kind.

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// Every failed attempt of a `create_connection` made with
/// [`ConnectOptions::all_errors`](crate::ConnectOptions::all_errors)
/// (asyncio's `ExceptionGroup("create_connection failed", [...])`): each
/// address tried, with its own error (its errno kept).
///
/// It comes inside the returned [`io::Error`] (whose kind is the first
/// attempt's); get it back with [`ConnectErrors::from_io`].
///
/// ```
/// use loop_net::ConnectErrors;
/// # let err = std::io::Error::other("x");
/// if let Some(all) = ConnectErrors::from_io(&err) {
///     for (addr, e) in all.attempts() {
///         println!("{addr}: {e} (errno {:?})", e.raw_os_error());
///     }
/// }
/// ```
#[doc(alias = "all_errors")]
#[derive(Debug)]
pub struct ConnectErrors {
    attempts: Vec<(SocketAddr, io::Error)>,
}

impl ConnectErrors {
    /// Each attempt, in the order it was made: the address and its error.
    pub fn attempts(&self) -> &[(SocketAddr, io::Error)] {
        &self.attempts
    }

    /// Takes the attempts out.
    pub fn into_attempts(self) -> Vec<(SocketAddr, io::Error)> {
        self.attempts
    }

    /// The [`ConnectErrors`] inside `err`, if `err` carries one.
    pub fn from_io(err: &io::Error) -> Option<&ConnectErrors> {
        err.get_ref()?.downcast_ref::<ConnectErrors>()
    }
}

impl fmt::Display for ConnectErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "create_connection failed ({} attempts)",
            self.attempts.len()
        )?;
        for (addr, e) in &self.attempts {
            write!(f, "; {addr}: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConnectErrors {}

/// The one error for a `create_connection` whose attempts all failed (see
/// the module docs); with `all_errors`, every attempt's.
pub(crate) fn combine(mut errors: Vec<(SocketAddr, io::Error)>, all_errors: bool) -> io::Error {
    let Some(first) = errors.first() else {
        return io::Error::new(io::ErrorKind::NotFound, "getaddrinfo() returned empty list");
    };
    let kind = first.1.kind();
    if all_errors {
        return io::Error::new(kind, ConnectErrors { attempts: errors });
    }
    let errno = first.1.raw_os_error();
    let alike = errno.is_some() && errors.iter().all(|(_, e)| e.raw_os_error() == errno);
    if alike || errors.len() == 1 {
        return errors.swap_remove(0).1;
    }
    let parts: Vec<String> = errors
        .iter()
        .map(|(a, e)| format!("Connect call failed {a}: {e}"))
        .collect();
    io::Error::new(kind, format!("Multiple exceptions: {}", parts.join(", ")))
}
