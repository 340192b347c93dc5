//! DNS through the facade: getaddrinfo / getnameinfo with the system
//! resolver, the numeric fast path (answered on the first poll, no pool), the
//! dedicated resolver pool (not the default executor: lesson 10), resolver
//! errors that keep their EAI code, and cancellation without thread leaks.
//! Only loopback names and addresses; the machine has no network, so the one
//! unresolvable name may fail with either EAI_NONAME or EAI_AGAIN.
#![cfg(feature = "net")]

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use crate::util::*;
use aioloop::prelude::*;
use aioloop::{
    AddrInfoFlags, AddrInfoHints, AddressFamily, IpProtocol, Job, NameInfoFlags, ResolveError,
    SocketKind,
};
use futures_lite::future::{block_on, poll_once};

fn stream() -> AddrInfoHints {
    AddrInfoHints {
        socktype: SocketKind::STREAM,
        ..Default::default()
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn an_ipv4_literal_resolves_to_itself() {
    let lp = new_loop();
    let infos = run(&lp, lp.getaddrinfo("127.0.0.1", 80, stream())).unwrap();
    assert_eq!(infos.len(), 1, "{infos:?}");
    let info = &infos[0];
    assert_eq!(info.family, AddressFamily::INET);
    assert_eq!(info.socktype, SocketKind::STREAM);
    assert_eq!(info.protocol, IpProtocol::TCP);
    assert_eq!(info.canonname, None);
    assert_eq!(info.addr, addr("127.0.0.1:80"));
    lp.close().unwrap();
}

#[test]
fn an_ipv6_literal_resolves_to_itself() {
    let lp = new_loop();
    let hints = AddrInfoHints {
        socktype: SocketKind::DGRAM,
        ..Default::default()
    };
    let infos = run(&lp, lp.getaddrinfo("::1", "443", hints)).unwrap();
    assert_eq!(infos.len(), 1, "{infos:?}");
    assert_eq!(infos[0].family, AddressFamily::INET6);
    assert_eq!(infos[0].protocol, IpProtocol::UDP);
    assert_eq!(infos[0].addr, addr("[::1]:443"));
    lp.close().unwrap();
}

#[test]
fn any_socket_type_gives_the_c_library_list() {
    // With no type in the hints, the C library lists one entry per type; the
    // fast path is the same C call, so it does too.
    let lp = new_loop();
    let infos = run(
        &lp,
        lp.getaddrinfo("127.0.0.1", 7, AddrInfoHints::default()),
    )
    .unwrap();
    assert!(infos.iter().all(|i| i.addr == addr("127.0.0.1:7")));
    let kinds: Vec<_> = infos.iter().map(|i| (i.socktype, i.protocol)).collect();
    assert!(
        kinds.contains(&(SocketKind::STREAM, IpProtocol::TCP)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(SocketKind::DGRAM, IpProtocol::UDP)),
        "{kinds:?}"
    );
    lp.close().unwrap();
}

#[test]
fn numeric_input_is_answered_on_the_first_poll() {
    // No loop iteration, no executor, no resolver thread: the first poll of
    // the future already has the answer.
    let lp = new_loop();
    let first = block_on(poll_once(lp.getaddrinfo("::1", 9, stream())));
    let infos = first.expect("ready on the first poll").unwrap();
    assert_eq!(infos[0].addr, addr("[::1]:9"));
    // No host at all, port only: also no lookup.
    let first = block_on(poll_once(lp.getaddrinfo(None, 8080, stream())));
    let infos = first.expect("ready on the first poll").unwrap();
    assert!(!infos.is_empty());
    assert!(infos
        .iter()
        .all(|i| i.addr.ip().is_loopback() && i.addr.port() == 8080));
    // With AI_PASSIVE: the wildcard addresses, for bind.
    let passive = AddrInfoHints {
        flags: AddrInfoFlags::PASSIVE,
        ..stream()
    };
    let infos = block_on(poll_once(lp.getaddrinfo(None, "8080", passive)))
        .expect("ready on the first poll")
        .unwrap();
    assert!(
        infos.iter().all(|i| i.addr.ip().is_unspecified()),
        "{infos:?}"
    );
    // getnameinfo with NUMERICHOST | NUMERICSERV only formats.
    let flags = NameInfoFlags::NUMERICHOST | NameInfoFlags::NUMERICSERV;
    let names = block_on(poll_once(lp.getnameinfo(addr("127.0.0.1:80"), flags)))
        .expect("ready on the first poll")
        .unwrap();
    assert_eq!(names, ("127.0.0.1".to_string(), "80".to_string()));
    lp.close().unwrap();
}

#[test]
fn localhost_resolves_to_loopback_addresses() {
    let lp = new_loop();
    let infos = run(&lp, lp.getaddrinfo("localhost", 80, stream())).unwrap();
    assert!(!infos.is_empty());
    for info in &infos {
        assert!(info.addr.ip().is_loopback(), "{info:?}");
        assert_eq!(info.addr.port(), 80);
        assert_eq!(info.socktype, SocketKind::STREAM);
    }
    // Asking for the canonical name fills it in on the first entry.
    let hints = AddrInfoHints {
        family: AddressFamily::INET,
        flags: AddrInfoFlags::CANONNAME,
        ..stream()
    };
    let infos = run(&lp, lp.getaddrinfo("localhost", None, hints)).unwrap();
    assert_eq!(infos[0].addr, addr("127.0.0.1:0"));
    assert!(infos[0].canonname.as_deref().is_some_and(|c| !c.is_empty()));
    lp.close().unwrap();
}

#[test]
fn dns_works_after_the_default_executor_is_shut_down() {
    let lp = new_loop();
    run(&lp, lp.shutdown_default_executor(None)).unwrap();
    assert!(
        lp.run_in_executor(|| ()).is_err(),
        "the default executor is shut"
    );
    let numeric = run(&lp, lp.getaddrinfo("127.0.0.1", 1, stream())).unwrap();
    assert_eq!(numeric[0].addr, addr("127.0.0.1:1"));
    let named = run(&lp, lp.getaddrinfo("localhost", 1, stream())).unwrap();
    assert!(named.iter().all(|i| i.addr.ip().is_loopback()));
    let names = run(
        &lp,
        lp.getnameinfo(addr("127.0.0.1:80"), NameInfoFlags::empty()),
    )
    .unwrap();
    assert!(!names.0.is_empty());
    lp.close().unwrap();
}

/// An executor that never runs its jobs (until the test drops it): a default
/// executor saturated by unrelated blocking work.
struct Saturated(Rc<RefCell<Vec<Job>>>);

impl Executor for Saturated {
    fn execute(&self, job: Job) {
        self.0.borrow_mut().push(job);
    }
}

#[test]
fn a_saturated_default_executor_does_not_delay_dns() {
    let lp = new_loop();
    let parked = Rc::new(RefCell::new(Vec::new()));
    lp.set_default_executor(Saturated(parked.clone()));
    let stuck = lp.run_in_executor(|| 1).unwrap();
    let lp2 = lp.clone();
    let infos = run(&lp, async move {
        // The stuck job is still pending while the name resolves.
        let infos = lp2.getaddrinfo("localhost", 443, stream()).await;
        let names = lp2
            .getnameinfo(addr("127.0.0.1:443"), NameInfoFlags::empty())
            .await;
        (infos, names)
    });
    let (infos, names) = infos;
    assert!(infos.unwrap().iter().all(|i| i.addr.ip().is_loopback()));
    let (host, serv) = names.unwrap();
    assert!(!host.is_empty());
    assert!(serv == "https" || serv == "443", "{serv}");
    assert_eq!(
        parked.borrow().len(),
        1,
        "the default executor never ran its job"
    );
    // Dropping the parked job completes its future with an error.
    parked.borrow_mut().clear();
    let err = run(&lp, stuck).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState);
    lp.close().unwrap();
}

#[test]
fn an_unresolvable_name_keeps_the_resolver_code() {
    let lp = new_loop();
    let err = run(&lp, lp.getaddrinfo("nonexistent.invalid", 80, stream())).unwrap_err();
    let gai = ResolveError::from_io(&err).expect("a resolver error inside the io::Error");
    assert!(
        gai.code() == ResolveError::NONAME || gai.code() == ResolveError::AGAIN,
        "EAI_NONAME or EAI_AGAIN, got {gai:?}"
    );
    assert!(!gai.message().is_empty());
    assert!(gai.name().is_some());
    assert!(err.to_string().contains(gai.message()), "{err}");
    lp.close().unwrap();
}

#[test]
fn resolver_errors_from_either_path_keep_code_and_text() {
    let lp = new_loop();
    // Fast path (no host, numeric port): AI_CANONNAME without a host.
    let hints = AddrInfoHints {
        flags: AddrInfoFlags::CANONNAME,
        ..stream()
    };
    let err = run(&lp, lp.getaddrinfo(None, 80, hints)).unwrap_err();
    let gai = ResolveError::from_io(&err).unwrap();
    assert_eq!(gai.code(), ResolveError::BADFLAGS);
    assert_eq!(gai.name(), Some("EAI_BADFLAGS"));
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    // Pool path (a service name): unknown service.
    let err = run(
        &lp,
        lp.getaddrinfo("127.0.0.1", "no-such-service-xyz", stream()),
    )
    .unwrap_err();
    let gai = ResolveError::from_io(&err).unwrap();
    assert_eq!(gai.code(), ResolveError::SERVICE, "{gai:?}");
    assert!(!gai.message().is_empty());
    // A NUL byte cannot reach the C library.
    let err = run(&lp, lp.getaddrinfo("local\0host", 80, stream())).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(ResolveError::from_io(&err).is_none());
    lp.close().unwrap();
}

#[test]
fn a_service_name_is_looked_up() {
    let lp = new_loop();
    let infos = run(&lp, lp.getaddrinfo("127.0.0.1", "http", stream())).unwrap();
    assert_eq!(infos[0].addr, addr("127.0.0.1:80"));
    lp.close().unwrap();
}

#[test]
fn getnameinfo_numeric() {
    let lp = new_loop();
    let flags = NameInfoFlags::NUMERICHOST | NameInfoFlags::NUMERICSERV;
    let v4 = run(&lp, lp.getnameinfo(addr("127.0.0.1:80"), flags)).unwrap();
    assert_eq!(v4, ("127.0.0.1".to_string(), "80".to_string()));
    let v6 = run(&lp, lp.getnameinfo(addr("[::1]:8443"), flags)).unwrap();
    assert_eq!(v6, ("::1".to_string(), "8443".to_string()));
    // Numeric host, service name looked up (through the pool).
    let named = run(
        &lp,
        lp.getnameinfo(addr("127.0.0.1:80"), NameInfoFlags::NUMERICHOST),
    )
    .unwrap();
    assert_eq!(named.0, "127.0.0.1");
    assert!(named.1 == "http" || named.1 == "80", "{named:?}");
    lp.close().unwrap();
}

/// Threads of this process named like the resolver pool's.
fn resolver_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "aioloop-dns")
        .count()
}

#[test]
fn dropped_lookups_leak_no_threads() {
    let lp = new_loop();
    // Start many lookups (each first poll submits a job), then drop them all
    // (most before their job ran).
    for i in 0..64 {
        let host = if i % 2 == 0 {
            "localhost"
        } else {
            "nonexistent.invalid"
        };
        let _ = block_on(poll_once(lp.getaddrinfo(host, 80, stream())));
    }
    assert!(resolver_threads() <= 4, "at most four resolver threads");
    // The pool still answers, and still within its bound.
    let infos = run(&lp, lp.getaddrinfo("localhost", 80, stream())).unwrap();
    assert!(!infos.is_empty());
    assert!(resolver_threads() <= 4, "at most four resolver threads");
    lp.close().unwrap();
}

#[test]
fn a_closed_loop_refuses_lookups() {
    let lp = new_loop();
    lp.close().unwrap();
    let err = block_on(lp.getaddrinfo("127.0.0.1", 80, stream())).unwrap_err();
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<LoopError>());
    assert_eq!(
        inner.map(LoopError::kind),
        Some(ErrorKind::Closed),
        "{err:?}"
    );
    let err = block_on(lp.getnameinfo(addr("127.0.0.1:80"), NameInfoFlags::empty())).unwrap_err();
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<LoopError>());
    assert_eq!(
        inner.map(LoopError::kind),
        Some(ErrorKind::Closed),
        "{err:?}"
    );
}
