//! Sockets the caller hands in (asyncio's `sock=` arguments and
//! `connect_accepted_socket`): checked to be stream sockets of the family
//! the call expects, made non-blocking, and given `TCP_NODELAY` when they
//! are TCP, as every socket the loop makes itself.
//!
//! `TCP_NODELAY` is asyncio's `_set_nodelay`: set on every TCP stream
//! transport (asyncio sets it in `_SelectorSocketTransport.__init__`), so
//! that small writes go out at once; never on Unix sockets, which have no
//! such option.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use rustix::net::{AddressFamily, SocketType};

/// Which families a call takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Families {
    /// Any stream socket (`connect_accepted_socket`, `create_connection`,
    /// `create_server`).
    Any,
    /// `AF_UNIX` (`create_unix_connection`, `create_unix_server`).
    Unix,
}

/// Describes a socket as asyncio's messages show it (`{sock!r}`).
fn describe(sock: &OwnedFd, family: Option<AddressFamily>, kind: SocketType) -> String {
    let family = match family {
        Some(AddressFamily::INET) => "AF_INET".to_string(),
        Some(AddressFamily::INET6) => "AF_INET6".to_string(),
        Some(AddressFamily::UNIX) => "AF_UNIX".to_string(),
        Some(other) => format!("{}", other.as_raw()),
        None => "?".to_string(),
    };
    let kind = match kind {
        SocketType::STREAM => "SOCK_STREAM".to_string(),
        SocketType::DGRAM => "SOCK_DGRAM".to_string(),
        SocketType::SEQPACKET => "SOCK_SEQPACKET".to_string(),
        SocketType::RAW => "SOCK_RAW".to_string(),
        other => format!("{}", other.as_raw()),
    };
    format!(
        "<socket fd={}, family={family}, type={kind}>",
        sock.as_raw_fd()
    )
}

fn family_of(sock: &OwnedFd) -> Option<AddressFamily> {
    rustix::net::getsockname(sock)
        .ok()
        .map(|a| a.address_family())
}

/// Checks that `sock` is a stream socket of `families` (asyncio's "A Stream
/// Socket was expected, got ..." and "A UNIX Domain Stream Socket was
/// expected, got ...", `InvalidInput`). Returns whether it is TCP.
pub(crate) fn check(sock: &OwnedFd, families: Families) -> io::Result<bool> {
    let kind = rustix::net::sockopt::socket_type(sock)?;
    let family = family_of(sock);
    let family_ok = match families {
        Families::Any => true,
        Families::Unix => family == Some(AddressFamily::UNIX),
    };
    if kind != SocketType::STREAM || !family_ok {
        let what = if families == Families::Unix {
            "A UNIX Domain Stream Socket"
        } else {
            "A Stream Socket"
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} was expected, got {}", describe(sock, family, kind)),
        ));
    }
    Ok(matches!(
        family,
        Some(AddressFamily::INET | AddressFamily::INET6)
    ))
}

/// Makes `sock` non-blocking.
pub(crate) fn set_nonblocking(sock: &OwnedFd) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(sock)?;
    rustix::fs::fcntl_setfl(sock, flags | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}

/// A connected socket handed in: checked, non-blocking, `TCP_NODELAY` if
/// TCP.
pub(crate) fn connected(sock: OwnedFd, families: Families) -> io::Result<OwnedFd> {
    let tcp = check(&sock, families)?;
    set_nonblocking(&sock)?;
    if tcp {
        let _ = rustix::net::sockopt::set_tcp_nodelay(&sock, true);
    }
    Ok(sock)
}
