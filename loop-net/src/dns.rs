//! DNS: `getaddrinfo` and `getnameinfo` through the system resolver.
//!
//! # Design
//! The lookups call the C library's `getaddrinfo`/`getnameinfo` (through
//! `libc`; rustix has no resolver), so `/etc/hosts`, `nsswitch.conf`,
//! `/etc/gai.conf` and the system's DNS configuration apply exactly as for
//! any other program. Those calls block, so they run on the resolver pool
//! (see `dns/resolver.rs`), never on the loop thread and never on the user's
//! default executor.
//!
//! Except when they cannot block: a numeric host (an IPv4 or IPv6 literal,
//! or no host at all) with a numeric port (or none) is resolved on the spot,
//! by the same C call with `AI_NUMERICHOST`/`AI_NUMERICSERV` added, which
//! makes the C library parse instead of look up. This is asyncio's
//! `_ipaddr_info` shortcut, kept exact: the results are the C library's own
//! (the same entries, order, and errors). Likewise `getnameinfo` with both
//! `NI_NUMERICHOST` and `NI_NUMERICSERV` only formats, and runs on the spot.
//!
//! Errors keep the resolver's code and text: a failed lookup is an
//! [`io::Error`] whose inner error is a [`ResolveError`] (the `EAI_*` code
//! and `gai_strerror`'s message); `EAI_SYSTEM` becomes the OS error itself,
//! as in Python.

pub(crate) mod resolver;

use std::ffi::{CStr, CString};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::{BitOr, BitOrAssign};
use std::ptr;

use loop_core::{EventLoop, LoopError};
use rustix::net::SocketAddrAny;

/// Defines an open set of C constants as a newtype over the raw value.
macro_rules! raw_constants {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$cmeta:meta])* $konst:ident = $value:expr,)* }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(i32);

        impl $name {
            $($(#[$cmeta])* pub const $konst: $name = $name($value);)*

            /// The value for a raw C constant.
            pub const fn from_raw(raw: i32) -> Self {
                $name(raw)
            }

            /// The raw C value.
            pub const fn as_raw(self) -> i32 {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                $(if self.0 == $value {
                    return f.write_str(concat!(stringify!($name), "::", stringify!($konst)));
                })*
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }
    };
}

raw_constants! {
    /// An address family (Python's `socket.AddressFamily`, `AF_*`).
    AddressFamily {
        /// `AF_UNSPEC`: any family (the default in hints).
        UNSPEC = libc::AF_UNSPEC,
        /// `AF_INET`: IPv4.
        INET = libc::AF_INET,
        /// `AF_INET6`: IPv6.
        INET6 = libc::AF_INET6,
        /// `AF_UNIX`: Unix-domain sockets.
        UNIX = libc::AF_UNIX,
    }
}

raw_constants! {
    /// A socket type (Python's `socket.SocketKind`, `SOCK_*`).
    SocketKind {
        /// `0`: any type (the default in hints).
        ANY = 0,
        /// `SOCK_STREAM`.
        STREAM = libc::SOCK_STREAM,
        /// `SOCK_DGRAM`.
        DGRAM = libc::SOCK_DGRAM,
        /// `SOCK_RAW`.
        RAW = libc::SOCK_RAW,
        /// `SOCK_SEQPACKET`.
        SEQPACKET = libc::SOCK_SEQPACKET,
    }
}

raw_constants! {
    /// A protocol number (`IPPROTO_*`; asyncio's `proto`).
    IpProtocol {
        /// `0`: any protocol (the default in hints).
        ANY = 0,
        /// `IPPROTO_TCP`.
        TCP = libc::IPPROTO_TCP,
        /// `IPPROTO_UDP`.
        UDP = libc::IPPROTO_UDP,
    }
}

/// Defines a set of C flag bits as a newtype with `|`.
macro_rules! raw_flags {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$cmeta:meta])* $konst:ident = $value:expr,)* }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(i32);

        impl $name {
            $($(#[$cmeta])* pub const $konst: $name = $name($value);)*

            /// No flags.
            pub const fn empty() -> Self {
                $name(0)
            }

            /// Whether every bit of `other` is set in `self`.
            pub const fn contains(self, other: $name) -> bool {
                self.0 & other.0 == other.0
            }

            /// Flags from raw C bits (unknown bits are kept).
            pub const fn from_raw(raw: i32) -> Self {
                $name(raw)
            }

            /// The raw C bits.
            pub const fn as_raw(self) -> i32 {
                self.0
            }
        }

        impl BitOr for $name {
            type Output = $name;
            fn bitor(self, rhs: $name) -> $name {
                $name(self.0 | rhs.0)
            }
        }

        impl BitOrAssign for $name {
            fn bitor_assign(&mut self, rhs: $name) {
                self.0 |= rhs.0;
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut rest = self.0;
                let mut first = true;
                f.write_str(concat!(stringify!($name), "("))?;
                $(if $value != 0 && self.0 & $value == $value {
                    if !first { f.write_str(" | ")?; }
                    f.write_str(stringify!($konst))?;
                    first = false;
                    rest &= !$value;
                })*
                if rest != 0 || first {
                    if !first { f.write_str(" | ")?; }
                    write!(f, "{rest:#x}")?;
                }
                f.write_str(")")
            }
        }
    };
}

raw_flags! {
    /// `getaddrinfo` flags (`AI_*`).
    AddrInfoFlags {
        /// `AI_PASSIVE`: with no host, return wildcard addresses (for `bind`)
        /// instead of loopback ones.
        PASSIVE = libc::AI_PASSIVE,
        /// `AI_CANONNAME`: fill in [`AddrInfo::canonname`] of the first entry.
        CANONNAME = libc::AI_CANONNAME,
        /// `AI_NUMERICHOST`: the host must be a numeric address; never look
        /// it up.
        NUMERICHOST = libc::AI_NUMERICHOST,
        /// `AI_NUMERICSERV`: the port must be numeric; never look it up.
        NUMERICSERV = libc::AI_NUMERICSERV,
        /// `AI_V4MAPPED`: with `INET6` and no IPv6 address, return IPv4-mapped
        /// IPv6 addresses.
        V4MAPPED = libc::AI_V4MAPPED,
        /// `AI_ALL`: with `V4MAPPED`, return both IPv6 and mapped IPv4.
        ALL = libc::AI_ALL,
        /// `AI_ADDRCONFIG`: only families configured on this host.
        ADDRCONFIG = libc::AI_ADDRCONFIG,
    }
}

raw_flags! {
    /// `getnameinfo` flags (`NI_*`).
    NameInfoFlags {
        /// `NI_NUMERICHOST`: the numeric form of the host, no reverse lookup.
        NUMERICHOST = libc::NI_NUMERICHOST,
        /// `NI_NUMERICSERV`: the numeric port, no service lookup.
        NUMERICSERV = libc::NI_NUMERICSERV,
        /// `NI_NOFQDN`: only the host part of local names.
        NOFQDN = libc::NI_NOFQDN,
        /// `NI_NAMEREQD`: fail if the host has no name.
        NAMEREQD = libc::NI_NAMEREQD,
        /// `NI_DGRAM`: the service is UDP (some ports differ).
        DGRAM = libc::NI_DGRAM,
    }
}

/// The port part of a lookup (asyncio's `port` argument): none, a number, or
/// a service name such as `"http"` (looked up in `/etc/services`).
///
/// Converts from `u16`, `Option<u16>`, `&str` and `String`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Service {
    /// No port (`None` in asyncio): the results carry port 0.
    #[default]
    Any,
    /// A port number.
    Port(u16),
    /// A service name, or a port number written as text.
    Name(String),
}

impl From<u16> for Service {
    fn from(port: u16) -> Self {
        Service::Port(port)
    }
}

impl From<Option<u16>> for Service {
    fn from(port: Option<u16>) -> Self {
        port.map_or(Service::Any, Service::Port)
    }
}

impl From<&str> for Service {
    fn from(name: &str) -> Self {
        Service::Name(name.to_string())
    }
}

impl From<String> for Service {
    fn from(name: String) -> Self {
        Service::Name(name)
    }
}

impl Service {
    /// Whether the C library would parse this rather than look it up.
    fn is_numeric(&self) -> bool {
        match self {
            Service::Any | Service::Port(_) => true,
            Service::Name(s) => !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()),
        }
    }

    fn to_c(&self) -> io::Result<Option<CString>> {
        match self {
            Service::Any => Ok(None),
            Service::Port(p) => Ok(Some(CString::new(p.to_string()).expect("digits"))),
            Service::Name(s) => c_string(s, "port").map(Some),
        }
    }
}

/// What to look up and how: asyncio's `family`, `type`, `proto` and `flags`
/// arguments of `getaddrinfo`. The default asks for every family, type and
/// protocol, with no flags.
///
/// ```
/// use loop_net::{AddrInfoFlags, AddrInfoHints, AddressFamily, SocketKind};
/// let hints = AddrInfoHints {
///     family: AddressFamily::INET,
///     socktype: SocketKind::STREAM,
///     flags: AddrInfoFlags::ADDRCONFIG,
///     ..Default::default()
/// };
/// assert_eq!(hints.protocol.as_raw(), 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AddrInfoHints {
    /// The address family (`family=`).
    pub family: AddressFamily,
    /// The socket type (`type=`).
    pub socktype: SocketKind,
    /// The protocol (`proto=`).
    pub protocol: IpProtocol,
    /// `AI_*` flags (`flags=`).
    pub flags: AddrInfoFlags,
}

/// One result of `getaddrinfo`: asyncio's
/// `(family, type, proto, canonname, sockaddr)` tuple.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AddrInfo {
    /// The address family (`INET` or `INET6`).
    pub family: AddressFamily,
    /// The socket type to create for this address.
    pub socktype: SocketKind,
    /// The protocol to create the socket with.
    pub protocol: IpProtocol,
    /// The canonical name of the host: set on the first entry when
    /// [`AddrInfoFlags::CANONNAME`] was asked for, else `None` (asyncio's
    /// `''`).
    pub canonname: Option<String>,
    /// The address and port (with flow info and scope id for IPv6).
    pub addr: SocketAddr,
}

/// A resolver failure: the `EAI_*` code `getaddrinfo` or `getnameinfo`
/// returned, with `gai_strerror`'s text (Python's `socket.gaierror`).
///
/// The DNS methods return it inside an [`io::Error`]; get it back with
/// [`ResolveError::from_io`].
///
/// ```
/// use loop_net::ResolveError;
/// # let err: std::io::Error = std::io::Error::other("x");
/// if let Some(gai) = ResolveError::from_io(&err) {
///     if gai.code() == ResolveError::NONAME {
///         println!("no such host: {}", gai.message());
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResolveError {
    code: i32,
    message: String,
}

impl ResolveError {
    /// `EAI_AGAIN`: a temporary failure (no answer from the name server).
    pub const AGAIN: i32 = libc::EAI_AGAIN;
    /// `EAI_BADFLAGS`: invalid flags.
    pub const BADFLAGS: i32 = libc::EAI_BADFLAGS;
    /// `EAI_FAIL`: a permanent failure of the name server.
    pub const FAIL: i32 = libc::EAI_FAIL;
    /// `EAI_FAMILY`: the address family is not supported.
    pub const FAMILY: i32 = libc::EAI_FAMILY;
    /// `EAI_MEMORY`: out of memory.
    pub const MEMORY: i32 = libc::EAI_MEMORY;
    /// `EAI_NONAME`: the host or service is not known.
    pub const NONAME: i32 = libc::EAI_NONAME;
    /// `EAI_SERVICE`: the service is not available for the socket type.
    pub const SERVICE: i32 = libc::EAI_SERVICE;
    /// `EAI_SOCKTYPE`: the socket type is not supported.
    pub const SOCKTYPE: i32 = libc::EAI_SOCKTYPE;
    /// `EAI_OVERFLOW`: a result did not fit (getnameinfo).
    pub const OVERFLOW: i32 = libc::EAI_OVERFLOW;
    /// `EAI_SYSTEM`: a system error (reported as the OS error itself).
    pub const SYSTEM: i32 = libc::EAI_SYSTEM;

    /// The error for `code`, with the C library's text for it.
    pub fn new(code: i32) -> Self {
        ResolveError {
            code,
            message: gai_strerror(code),
        }
    }

    /// The `EAI_*` code.
    pub fn code(&self) -> i32 {
        self.code
    }

    /// The C library's text for the code (`gai_strerror`).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The symbolic name of the code (`"EAI_NONAME"`), if it is a known one.
    pub fn name(&self) -> Option<&'static str> {
        Some(match self.code {
            Self::AGAIN => "EAI_AGAIN",
            Self::BADFLAGS => "EAI_BADFLAGS",
            Self::FAIL => "EAI_FAIL",
            Self::FAMILY => "EAI_FAMILY",
            Self::MEMORY => "EAI_MEMORY",
            Self::NONAME => "EAI_NONAME",
            Self::SERVICE => "EAI_SERVICE",
            Self::SOCKTYPE => "EAI_SOCKTYPE",
            Self::OVERFLOW => "EAI_OVERFLOW",
            Self::SYSTEM => "EAI_SYSTEM",
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            libc::EAI_NODATA => "EAI_NODATA",
            _ => return None,
        })
    }

    /// The resolver error inside `err`, if `err` is one.
    pub fn from_io(err: &io::Error) -> Option<&ResolveError> {
        err.get_ref()?.downcast_ref::<ResolveError>()
    }

    fn into_io(self) -> io::Error {
        let kind = match self.code {
            Self::NONAME => io::ErrorKind::NotFound,
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            libc::EAI_NODATA => io::ErrorKind::NotFound,
            Self::BADFLAGS | Self::FAMILY | Self::SOCKTYPE | Self::SERVICE => {
                io::ErrorKind::InvalidInput
            }
            Self::MEMORY => io::ErrorKind::OutOfMemory,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{} ({name})", self.message),
            None => write!(f, "{} (resolver error {})", self.message, self.code),
        }
    }
}

impl std::error::Error for ResolveError {}

fn gai_strerror(code: i32) -> String {
    // SAFETY: gai_strerror accepts any code and returns a pointer to a
    // NUL-terminated string that stays valid (static storage in glibc, musl
    // and the BSDs); we copy it out at once and check for null.
    unsafe {
        let p = libc::gai_strerror(code);
        if p.is_null() {
            format!("resolver error {code}")
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

/// The error for a non-zero return of getaddrinfo/getnameinfo. Call it right
/// after the call: `EAI_SYSTEM` reads `errno`.
fn gai_error(code: i32) -> io::Error {
    if code == libc::EAI_SYSTEM {
        let os = io::Error::last_os_error();
        if os.raw_os_error().is_some_and(|e| e != 0) {
            return os;
        }
    }
    ResolveError::new(code).into_io()
}

fn c_string(s: &str, what: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the {what} contains a NUL byte: {s:?}"),
        )
    })
}

/// Whether the C library parses `host` instead of looking it up.
fn is_numeric_host(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
        || host
            .split_once('%')
            .is_some_and(|(addr, scope)| !scope.is_empty() && addr.parse::<Ipv6Addr>().is_ok())
}

/// Frees the list `getaddrinfo` returned.
struct AddrInfoList(*mut libc::addrinfo);

impl Drop for AddrInfoList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from a successful getaddrinfo and is
            // freed exactly once, here.
            unsafe { libc::freeaddrinfo(self.0) };
        }
    }
}

/// The blocking `getaddrinfo` call.
fn lookup(
    host: Option<&CStr>,
    service: Option<&CStr>,
    hints: &AddrInfoHints,
) -> io::Result<Vec<AddrInfo>> {
    let c_hints = libc::addrinfo {
        ai_flags: hints.flags.as_raw(),
        ai_family: hints.family.as_raw(),
        ai_socktype: hints.socktype.as_raw(),
        ai_protocol: hints.protocol.as_raw(),
        ai_addrlen: 0,
        ai_addr: ptr::null_mut(),
        ai_canonname: ptr::null_mut(),
        ai_next: ptr::null_mut(),
    };
    let mut res: *mut libc::addrinfo = ptr::null_mut();
    // SAFETY: `host` and `service` are NUL-terminated strings that outlive
    // the call, or null; `c_hints` is a fully initialised addrinfo whose
    // pointers are null, as getaddrinfo requires of hints; `res` is a valid
    // place for the result pointer.
    let rc = unsafe {
        libc::getaddrinfo(
            host.map_or(ptr::null(), CStr::as_ptr),
            service.map_or(ptr::null(), CStr::as_ptr),
            &c_hints,
            &mut res,
        )
    };
    if rc != 0 {
        return Err(gai_error(rc));
    }
    let list = AddrInfoList(res);
    let mut out = Vec::new();
    let mut node = list.0.cast_const();
    while !node.is_null() {
        // SAFETY: `node` is an element of the list getaddrinfo returned,
        // which stays valid until `list` is dropped after this loop. Each
        // ai_addr points at ai_addrlen initialised bytes of a socket address
        // (we check the length fits before copying), and ai_canonname, when
        // not null, at a NUL-terminated string.
        let (entry, next) = unsafe {
            let ai = &*node;
            let len = ai.ai_addrlen as usize;
            let fits = len >= std::mem::size_of::<libc::sa_family_t>()
                && len <= std::mem::size_of::<rustix::net::addr::SocketAddrStorage>();
            let addr = if ai.ai_addr.is_null() || !fits {
                None
            } else {
                SocketAddr::try_from(SocketAddrAny::read(ai.ai_addr.cast(), ai.ai_addrlen)).ok()
            };
            let canonname = (!ai.ai_canonname.is_null()).then(|| {
                CStr::from_ptr(ai.ai_canonname)
                    .to_string_lossy()
                    .into_owned()
            });
            let entry = addr.map(|addr| AddrInfo {
                family: AddressFamily::from_raw(ai.ai_family),
                socktype: SocketKind::from_raw(ai.ai_socktype),
                protocol: IpProtocol::from_raw(ai.ai_protocol),
                canonname,
                addr,
            });
            (entry, ai.ai_next.cast_const())
        };
        out.extend(entry);
        node = next;
    }
    Ok(out)
}

/// The blocking `getnameinfo` call.
fn name_info(addr: SocketAddr, flags: NameInfoFlags) -> io::Result<(String, String)> {
    const NI_MAXHOST: usize = 1025;
    const NI_MAXSERV: usize = 32;
    let raw = SocketAddrAny::from(addr);
    let mut host = [0u8; NI_MAXHOST];
    let mut serv = [0u8; NI_MAXSERV];
    // SAFETY: `raw` holds `addr_len()` initialised bytes of a valid socket
    // address; each buffer is writable for the length passed with it, and
    // getnameinfo writes NUL-terminated strings within those lengths.
    let rc = unsafe {
        libc::getnameinfo(
            raw.as_ptr().cast(),
            raw.addr_len(),
            host.as_mut_ptr().cast(),
            NI_MAXHOST as libc::socklen_t,
            serv.as_mut_ptr().cast(),
            NI_MAXSERV as libc::socklen_t,
            flags.as_raw(),
        )
    };
    if rc != 0 {
        return Err(gai_error(rc));
    }
    let text = |buf: &[u8]| {
        CStr::from_bytes_until_nul(buf)
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    Ok((text(&host), text(&serv)))
}

/// `getaddrinfo` on `lp`: on the spot for numeric input, else on the
/// resolver pool. See [`NetLoopExt::getaddrinfo`](crate::NetLoopExt::getaddrinfo).
pub(crate) fn getaddrinfo(
    lp: &EventLoop,
    host: Option<&str>,
    service: Service,
    hints: AddrInfoHints,
) -> impl std::future::Future<Output = io::Result<Vec<AddrInfo>>> + 'static {
    let numeric = host.is_none_or(is_numeric_host) && service.is_numeric();
    let prepared = host
        .map(|h| c_string(h, "host"))
        .transpose()
        .and_then(|h| Ok((h, service.to_c()?)));
    let lp = lp.clone();
    async move {
        if lp.is_closed() {
            return Err(LoopError::closed().into());
        }
        let (host, service) = prepared?;
        if numeric {
            let mut hints = hints;
            if host.is_some() {
                hints.flags |= AddrInfoFlags::NUMERICHOST;
            }
            if service.is_some() {
                hints.flags |= AddrInfoFlags::NUMERICSERV;
            }
            return lookup(host.as_deref(), service.as_deref(), &hints);
        }
        resolver::run(&lp, move || {
            lookup(host.as_deref(), service.as_deref(), &hints)
        })
        .await
    }
}

/// `getnameinfo` on `lp`. See [`NetLoopExt::getnameinfo`](crate::NetLoopExt::getnameinfo).
pub(crate) fn getnameinfo(
    lp: &EventLoop,
    addr: SocketAddr,
    flags: NameInfoFlags,
) -> impl std::future::Future<Output = io::Result<(String, String)>> + 'static {
    let lp = lp.clone();
    async move {
        if lp.is_closed() {
            return Err(LoopError::closed().into());
        }
        if flags.contains(NameInfoFlags::NUMERICHOST | NameInfoFlags::NUMERICSERV) {
            return name_info(addr, flags);
        }
        resolver::run(&lp, move || name_info(addr, flags)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_hosts_are_recognised() {
        for h in [
            "127.0.0.1",
            "::1",
            "fe80::1%lo",
            "::ffff:1.2.3.4",
            "0.0.0.0",
        ] {
            assert!(is_numeric_host(h), "{h}");
        }
        for h in [
            "localhost",
            "127.1",
            "",
            "fe80::1%",
            "1.2.3.4%lo",
            "example.com",
        ] {
            assert!(!is_numeric_host(h), "{h}");
        }
        assert!(Service::Any.is_numeric());
        assert!(Service::from("8080").is_numeric());
        assert!(!Service::from("http").is_numeric());
        assert!(!Service::from("").is_numeric());
    }

    #[test]
    fn lookup_parses_numeric_input() {
        let host = CString::new("127.0.0.1").unwrap();
        let port = CString::new("80").unwrap();
        let hints = AddrInfoHints {
            socktype: SocketKind::STREAM,
            flags: AddrInfoFlags::NUMERICHOST | AddrInfoFlags::NUMERICSERV,
            ..Default::default()
        };
        let got = lookup(Some(&host), Some(&port), &hints).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].family, AddressFamily::INET);
        assert_eq!(got[0].socktype, SocketKind::STREAM);
        assert_eq!(got[0].protocol, IpProtocol::TCP);
        assert_eq!(got[0].addr, "127.0.0.1:80".parse().unwrap());
    }

    #[test]
    fn resolver_errors_keep_code_and_text() {
        let host = CString::new("not-an-ip").unwrap();
        let hints = AddrInfoHints {
            flags: AddrInfoFlags::NUMERICHOST,
            ..Default::default()
        };
        let err = lookup(Some(&host), None, &hints).unwrap_err();
        let gai = ResolveError::from_io(&err).expect("a resolver error");
        assert_eq!(gai.code(), ResolveError::NONAME);
        assert_eq!(gai.message(), gai_strerror(libc::EAI_NONAME));
        assert_eq!(gai.name(), Some("EAI_NONAME"));
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("EAI_NONAME"), "{err}");
    }

    #[test]
    fn name_info_formats_numerically() {
        let (host, serv) = name_info(
            "[::1]:443".parse().unwrap(),
            NameInfoFlags::NUMERICHOST | NameInfoFlags::NUMERICSERV,
        )
        .unwrap();
        assert_eq!((host.as_str(), serv.as_str()), ("::1", "443"));
    }

    #[test]
    fn flags_debug_names_bits() {
        let f = AddrInfoFlags::PASSIVE | AddrInfoFlags::from_raw(0x4000);
        assert_eq!(format!("{f:?}"), "AddrInfoFlags(PASSIVE | 0x4000)");
        assert_eq!(
            format!("{:?}", NameInfoFlags::empty()),
            "NameInfoFlags(0x0)"
        );
        assert_eq!(format!("{:?}", SocketKind::DGRAM), "SocketKind::DGRAM");
        assert_eq!(
            format!("{:?}", AddressFamily::from_raw(99)),
            "AddressFamily(99)"
        );
    }
}
