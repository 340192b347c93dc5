//! Helpers shared by the subprocess tests: a protocol that records every
//! call, output and order extraction, bounded runs, reaping checks.
#![allow(dead_code)]

use std::io;
use std::time::{Duration, Instant};

use aioloop::prelude::*;

use crate::util::*;

#[derive(Debug, Clone, PartialEq)]
pub enum Ev {
    Made,
    Data(i32, Vec<u8>),
    PipeLost(i32, Option<io::ErrorKind>),
    Exited(Option<i32>),
    Pause,
    Resume,
    Lost,
}

/// What a test does on top of recording: called after each event is
/// recorded, with the event and the transport.
pub type Hook = Box<dyn FnMut(&Ev, &SubprocessTransport)>;

/// Records every call (then runs its hook, if any); completes `done` at
/// `connection_lost`.
pub struct Rec {
    pub evs: Log<Ev>,
    pub done: Option<aioloop::Future<()>>,
    pub transport: Option<SubprocessTransport>,
    pub hook: Option<Hook>,
}

impl Rec {
    fn record(&mut self, ev: Ev) {
        self.evs.borrow_mut().push(ev.clone());
        if let (Some(hook), Some(t)) = (&mut self.hook, &self.transport) {
            hook(&ev, t);
        }
    }
}

impl SubprocessProtocol for Rec {
    fn connection_made(&mut self, t: SubprocessTransport) {
        self.transport = Some(t);
        self.record(Ev::Made);
    }
    fn pipe_data_received(&mut self, fd: i32, data: &[u8]) {
        self.record(Ev::Data(fd, data.to_vec()));
    }
    fn pipe_connection_lost(&mut self, fd: i32, error: Option<io::Error>) {
        self.record(Ev::PipeLost(fd, error.map(|e| e.kind())));
    }
    fn process_exited(&mut self) {
        let code = self.transport.as_ref().and_then(|t| t.get_returncode());
        self.record(Ev::Exited(code));
    }
    fn pause_writing(&mut self) {
        self.record(Ev::Pause);
    }
    fn resume_writing(&mut self) {
        self.record(Ev::Resume);
    }
    fn connection_lost(&mut self, error: Option<io::Error>) {
        assert!(error.is_none());
        self.record(Ev::Lost);
        if let Some(d) = &self.done {
            let _ = d.set_result(());
        }
    }
}

pub struct Run {
    pub evs: Log<Ev>,
    pub done: aioloop::Future<()>,
}

impl Run {
    pub fn new(lp: &EventLoop) -> Run {
        Run {
            evs: log(),
            done: lp.create_future(),
        }
    }
    pub fn factory(&self) -> impl FnOnce() -> Rec + 'static {
        let (evs, done) = (self.evs.clone(), self.done.clone());
        move || Rec {
            evs,
            done: Some(done),
            transport: None,
            hook: None,
        }
    }

    /// A factory whose protocol also runs `hook` after recording each event.
    pub fn factory_with(
        &self,
        hook: impl FnMut(&Ev, &SubprocessTransport) + 'static,
    ) -> impl FnOnce() -> Rec + 'static {
        let (evs, done) = (self.evs.clone(), self.done.clone());
        move || Rec {
            evs,
            done: Some(done),
            transport: None,
            hook: Some(Box::new(hook)),
        }
    }
}

/// Everything fd `fd` carried, in order.
pub fn output(evs: &[Ev], fd: i32) -> Vec<u8> {
    let mut out = Vec::new();
    for e in evs {
        if let Ev::Data(f, d) = e {
            if *f == fd {
                out.extend_from_slice(d);
            }
        }
    }
    out
}

/// The events without the data, for order checks.
pub fn shape(evs: &[Ev]) -> Vec<Ev> {
    evs.iter()
        .filter(|e| !matches!(e, Ev::Data(..)))
        .cloned()
        .collect()
}

/// Tests that count the process's fds run alone; the others share.
pub static FDS: std::sync::RwLock<()> = std::sync::RwLock::new(());

pub fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    FDS.read().unwrap_or_else(|e| e.into_inner())
}

pub fn exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    FDS.write().unwrap_or_else(|e| e.into_inner())
}

pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Whether `pid` is gone (reaped) or not our child any more.
pub fn reaped(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A recycled pid would not be our child; a zombie has state Z.
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            let ppid_is_us = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1))
                .map(|p| p == std::process::id().to_string())
                .unwrap_or(false);
            !ppid_is_us && !state.starts_with('Z')
        }
    }
}

/// Waits (bounded) until `pid` is reaped; panics otherwise.
pub fn assert_reaped_soon(pid: u32) {
    let deadline = Instant::now() + LIMIT;
    while !reaped(pid) {
        assert!(Instant::now() < deadline, "child {pid} was not reaped");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `python3 -c code` under a recording protocol; returns stdout and the
/// return code.
pub fn python(lp: &EventLoop, code: &str, opts: SubprocessOptions) -> (String, Option<i32>) {
    let r = Run::new(lp);
    let (l, f, done) = (lp.clone(), r.factory(), r.done.clone());
    let code = code.to_string();
    let t = run(lp, async move {
        let (t, _p) = l
            .subprocess_exec(f, "python3", ["-c", code.as_str()], opts)
            .await
            .unwrap();
        done.await.unwrap();
        t
    });
    let out = String::from_utf8(output(&r.evs.borrow(), 1)).unwrap();
    (out, t.get_returncode())
}

impl Rec {
    pub fn dummy() -> Rec {
        Rec {
            evs: log(),
            done: None,
            transport: None,
            hook: None,
        }
    }
}
