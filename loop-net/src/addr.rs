//! [`SockAddr`]: a socket address of any family the `sock_*` methods meet.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::net::{AddressFamily as RawFamily, SocketAddrAny, SocketAddrUnix};

use crate::dns::AddressFamily;

/// A socket address: what `sock_connect` and `sock_sendto` take and what
/// `sock_accept` and `sock_recvfrom` return (asyncio's `address`).
///
/// Unix-domain addresses follow Python's `AF_UNIX` convention: a filesystem
/// path; an abstract name (Linux) is a path whose first byte is NUL; an
/// unnamed socket's address is the empty path.
///
/// ```
/// use loop_net::SockAddr;
/// use std::net::SocketAddr;
/// let a: SockAddr = "127.0.0.1:80".parse::<SocketAddr>().unwrap().into();
/// assert_eq!(a.as_inet().unwrap().port(), 80);
/// let u = SockAddr::from(std::path::Path::new("/tmp/app.sock"));
/// assert!(u.as_inet().is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SockAddr {
    /// An IPv4 or IPv6 address and port.
    Inet(SocketAddr),
    /// A Unix-domain address: a path, an abstract name (leading NUL byte), or
    /// empty for an unnamed socket.
    Unix(PathBuf),
    /// An address of another family, which aioloop does not decode.
    Other(AddressFamily),
}

impl SockAddr {
    /// The IP address and port, if this is an `Inet` address.
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            SockAddr::Inet(a) => Some(*a),
            _ => None,
        }
    }

    /// The Unix-domain path, if this is a `Unix` address.
    pub fn as_unix(&self) -> Option<&Path> {
        match self {
            SockAddr::Unix(p) => Some(p),
            _ => None,
        }
    }

    /// The kernel's form, for `connect` and `sendto`.
    pub(crate) fn to_raw(&self) -> io::Result<SocketAddrAny> {
        match self {
            SockAddr::Inet(a) => Ok((*a).into()),
            SockAddr::Unix(p) => {
                let bytes = p.as_os_str().as_bytes();
                let unix = match bytes {
                    [] => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "an empty (unnamed) Unix address cannot be a destination",
                        ))
                    }
                    #[cfg(any(target_os = "linux", target_os = "android"))]
                    [0, name @ ..] => SocketAddrUnix::new_abstract_name(name)?,
                    _ => SocketAddrUnix::new(p.as_path())?,
                };
                Ok(unix.into())
            }
            SockAddr::Other(f) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot use an address of family {f:?} as a destination"),
            )),
        }
    }

    /// Decodes what the kernel returned.
    pub(crate) fn from_raw(raw: SocketAddrAny) -> SockAddr {
        let family = raw.address_family();
        if family == RawFamily::INET || family == RawFamily::INET6 {
            if let Ok(a) = SocketAddr::try_from(raw) {
                return SockAddr::Inet(a);
            }
        } else if family == RawFamily::UNIX {
            // Only the family: an unnamed socket (rustix would decode it as
            // the empty abstract name).
            if raw.addr_len() as usize <= std::mem::size_of::<libc::sa_family_t>() {
                return SockAddr::Unix(PathBuf::new());
            }
            if let Ok(u) = SocketAddrUnix::try_from(raw) {
                if let Some(path) = u.path_bytes() {
                    return SockAddr::Unix(PathBuf::from(OsStr::from_bytes(path)));
                }
                #[cfg(any(target_os = "linux", target_os = "android"))]
                if let Some(name) = u.abstract_name() {
                    let mut bytes = Vec::with_capacity(name.len() + 1);
                    bytes.push(0);
                    bytes.extend_from_slice(name);
                    return SockAddr::Unix(PathBuf::from(std::ffi::OsString::from_vec(bytes)));
                }
                return SockAddr::Unix(PathBuf::new());
            }
        }
        SockAddr::Other(AddressFamily::from_raw(i32::from(family.as_raw())))
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
use std::os::unix::ffi::OsStringExt;

/// Prints the address as people write it: `127.0.0.1:39574`, `[::1]:8080`, a
/// Unix path as it is, an abstract name as `@name` (the form `ss` shows), an
/// unnamed socket as `(unnamed)`, another family as `<family N>`.
///
/// ```
/// use loop_net::SockAddr;
/// use std::net::SocketAddr;
/// let a: SockAddr = "127.0.0.1:39574".parse::<SocketAddr>().unwrap().into();
/// assert_eq!(a.to_string(), "127.0.0.1:39574");
/// let v6: SockAddr = "[::1]:8080".parse::<SocketAddr>().unwrap().into();
/// assert_eq!(v6.to_string(), "[::1]:8080");
/// assert_eq!(SockAddr::from(std::path::Path::new("/tmp/app.sock")).to_string(), "/tmp/app.sock");
/// ```
impl fmt::Display for SockAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SockAddr::Inet(a) => fmt::Display::fmt(a, f),
            SockAddr::Unix(p) => match p.as_os_str().as_bytes() {
                [] => f.write_str("(unnamed)"),
                [0, name @ ..] => write!(f, "@{}", String::from_utf8_lossy(name)),
                _ => fmt::Display::fmt(&p.display(), f),
            },
            SockAddr::Other(family) => write!(f, "<family {}>", family.as_raw()),
        }
    }
}

impl From<SocketAddr> for SockAddr {
    fn from(a: SocketAddr) -> Self {
        SockAddr::Inet(a)
    }
}

impl From<SocketAddrV4> for SockAddr {
    fn from(a: SocketAddrV4) -> Self {
        SockAddr::Inet(a.into())
    }
}

impl From<SocketAddrV6> for SockAddr {
    fn from(a: SocketAddrV6) -> Self {
        SockAddr::Inet(a.into())
    }
}

impl From<&Path> for SockAddr {
    fn from(p: &Path) -> Self {
        SockAddr::Unix(p.to_path_buf())
    }
}

impl From<PathBuf> for SockAddr {
    fn from(p: PathBuf) -> Self {
        SockAddr::Unix(p)
    }
}

impl From<&SockAddr> for SockAddr {
    fn from(a: &SockAddr) -> Self {
        a.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inet_addresses_round_trip() {
        for s in ["127.0.0.1:80", "[::1]:443", "[fe80::1%3]:9"] {
            let a: SocketAddr = s.parse().unwrap();
            let raw = SockAddr::from(a).to_raw().unwrap();
            assert_eq!(SockAddr::from_raw(raw), SockAddr::Inet(a));
        }
    }

    #[test]
    fn unix_addresses_round_trip() {
        let p = SockAddr::from(Path::new("/tmp/x.sock"));
        assert_eq!(SockAddr::from_raw(p.to_raw().unwrap()), p);
        #[cfg(target_os = "linux")]
        {
            let abs = SockAddr::Unix(PathBuf::from(std::ffi::OsString::from_vec(
                b"\0aioloop-test".to_vec(),
            )));
            assert_eq!(SockAddr::from_raw(abs.to_raw().unwrap()), abs);
        }
        let unnamed = SocketAddrUnix::new_unnamed();
        assert_eq!(
            SockAddr::from_raw(unnamed.into()),
            SockAddr::Unix(PathBuf::new())
        );
        assert_eq!(
            SockAddr::Unix(PathBuf::new()).to_raw().unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
