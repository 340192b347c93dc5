#![cfg(feature = "process")]
//! Children that misbehave, and protocols that do unusual things from
//! inside their callbacks:
//! - a child that closes its stdout long before it exits;
//! - a child that exits while we still write to its stdin (BrokenPipe as
//!   `pipe_connection_lost(0, ..)`, never a panic or a hang);
//! - a grandchild that keeps the pipes open after the child exited
//!   (`process_exited` first, `connection_lost` only when the pipes close);
//! - a ping-pong with a Python child and with `cat`, written from inside
//!   `pipe_data_received`;
//! - `close` and `kill` from inside the protocol's own callbacks;
//! - a panicking protocol (reported; the rest is still delivered).

use std::cell::RefCell;
use std::io::{self, Write};
use std::rc::Rc;

use crate::process_util::*;
use crate::util::*;
use aioloop::prelude::*;

#[test]
fn a_child_that_closes_stdout_early() {
    let lp = new_loop();
    let r = Run::new(&lp);
    // Once stdout is lost (the child still runs), let the child go.
    let f = r.factory_with(|ev, t| {
        if *ev == Ev::PipeLost(1, None) {
            assert_eq!(t.get_returncode(), None, "still running");
            t.get_pipe_transport(0).unwrap().write(b"go\n").unwrap();
        }
    });
    let (l, done) = (lp.clone(), r.done.clone());
    run(&lp, async move {
        let (_t, _p) = l
            .subprocess_shell(
                f,
                "echo before; exec 1>&-; read x; exit 4",
                SubprocessOptions::new(),
            )
            .await
            .unwrap();
        done.await.unwrap();
    });
    let evs = r.evs.borrow().clone();
    assert_eq!(output(&evs, 1), b"before\n");
    let s = shape(&evs);
    let lost1 = s.iter().position(|e| *e == Ev::PipeLost(1, None)).unwrap();
    let exited = s.iter().position(|e| *e == Ev::Exited(Some(4))).unwrap();
    assert!(lost1 < exited, "{s:?}");
    assert_eq!(s.last(), Some(&Ev::Lost));
}

#[test]
fn a_child_that_exits_while_we_write_its_stdin() {
    let lp = new_loop();
    let r = Run::new(&lp);
    let (l, f, done) = (lp.clone(), r.factory(), r.done.clone());
    let seen = record_exceptions(&lp);
    let t = run(&lp, async move {
        // head reads a little and exits; 4 MiB cannot fit in the pipe.
        let (t, _p) = l
            .subprocess_exec(f, "head", ["-c", "10"], SubprocessOptions::new())
            .await
            .unwrap();
        let stdin = t.get_pipe_transport(0).unwrap();
        stdin.write(&vec![b'x'; 4 << 20]).unwrap();
        done.await.unwrap();
        t
    });
    let evs = r.evs.borrow().clone();
    assert_eq!(output(&evs, 1), b"xxxxxxxxxx");
    assert_eq!(t.get_returncode(), Some(0));
    let s = shape(&evs);
    assert!(
        s.contains(&Ev::PipeLost(0, Some(io::ErrorKind::BrokenPipe))),
        "stdin lost with BrokenPipe: {s:?}"
    );
    assert_eq!(s.iter().filter(|e| **e == Ev::Lost).count(), 1);
    assert!(
        seen.borrow().is_empty(),
        "nothing reported: {:?}",
        seen.borrow()
    );
}

#[test]
fn a_grandchild_holding_the_pipes() {
    let lp = new_loop();
    let dir = std::env::temp_dir().join(format!("aioloop-grandchild-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("release");
    let _ = std::fs::remove_file(&fifo);
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();

    let r = Run::new(&lp);
    let (l, f, done) = (lp.clone(), r.factory(), r.done.clone());
    let evs = r.evs.clone();
    let fifo2 = fifo.clone();
    // The shell starts a grandchild that inherits stdout and waits on the
    // FIFO, then exits at once.
    let cmd = format!("(read x < {}; echo late) & echo early", fifo.display());
    let t = run(&lp, async move {
        let (t, p) = l
            .subprocess_shell(
                f,
                cmd,
                SubprocessOptions::new().stdin(aioloop::Stdio::DevNull),
            )
            .await
            .unwrap();
        // Not `t.wait()`: as asyncio's, it resolves after connection_lost,
        // which the grandchild holds back.
        let ev = evs.clone();
        p.wait_until(|_: &Rec| ev.borrow().contains(&Ev::Exited(Some(0))))
            .await;
        assert_eq!(t.get_returncode(), Some(0));
        // The child exited; stdout is still open in the grandchild.
        let s = shape(&evs.borrow());
        assert!(!s.contains(&Ev::PipeLost(1, None)), "{s:?}");
        assert!(!s.contains(&Ev::Lost));
        // Release the grandchild (opening the FIFO blocks until it reads).
        let releaser = std::thread::spawn(move || {
            let mut w = std::fs::OpenOptions::new()
                .write(true)
                .open(&fifo2)
                .unwrap();
            w.write_all(b"go\n").unwrap();
        });
        done.await.unwrap();
        releaser.join().unwrap();
        t
    });
    let evs = r.evs.borrow().clone();
    assert_eq!(output(&evs, 1), b"early\nlate\n");
    let s = shape(&evs);
    let exited = s.iter().position(|e| *e == Ev::Exited(Some(0))).unwrap();
    let lost1 = s.iter().position(|e| *e == Ev::PipeLost(1, None)).unwrap();
    assert!(exited < lost1, "{s:?}");
    assert_eq!(s.last(), Some(&Ev::Lost));
    assert_eq!(t.get_returncode(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends `rounds` lines one at a time, each after the previous answer came
/// back; then closes stdin.
struct PingPong {
    rounds: usize,
    sent: usize,
    got: Vec<u8>,
    answers: Rc<RefCell<Vec<String>>>,
    transport: Option<SubprocessTransport>,
}

impl PingPong {
    fn send_next(&mut self) {
        let stdin = self
            .transport
            .as_ref()
            .unwrap()
            .get_pipe_transport(0)
            .unwrap();
        if self.sent == self.rounds {
            stdin.write_eof().unwrap();
        } else {
            stdin
                .write(format!("line {}\n", self.sent).as_bytes())
                .unwrap();
            self.sent += 1;
        }
    }
}

impl SubprocessProtocol for PingPong {
    fn connection_made(&mut self, t: SubprocessTransport) {
        self.transport = Some(t);
        self.send_next();
    }
    fn pipe_data_received(&mut self, fd: i32, data: &[u8]) {
        assert_eq!(fd, 1);
        self.got.extend_from_slice(data);
        while let Some(end) = self.got.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.got.drain(..=end).collect();
            self.answers
                .borrow_mut()
                .push(String::from_utf8(line).unwrap().trim_end().to_string());
            self.send_next();
        }
    }
}

fn ping_pong(program: &str, args: &[&str]) -> (Vec<String>, Option<i32>) {
    let lp = new_loop();
    let answers = Rc::new(RefCell::new(Vec::new()));
    let a = answers.clone();
    let l = lp.clone();
    let (program, args): (String, Vec<String>) =
        (program.into(), args.iter().map(|s| s.to_string()).collect());
    let code = run(&lp, async move {
        let (t, _p) = l
            .subprocess_exec(
                move || PingPong {
                    rounds: 100,
                    sent: 0,
                    got: Vec::new(),
                    answers: a,
                    transport: None,
                },
                program,
                args,
                SubprocessOptions::new(),
            )
            .await
            .unwrap();
        t.wait().await.unwrap()
    });
    let out = answers.borrow().clone();
    (out, Some(code))
}

#[test]
fn ping_pong_with_a_python_child() {
    let (answers, code) = ping_pong(
        "python3",
        &[
            "-u",
            "-c",
            "import sys\nfor l in sys.stdin: sys.stdout.write(l.upper())",
        ],
    );
    assert_eq!(code, Some(0));
    assert_eq!(answers.len(), 100);
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a, &format!("LINE {i}"));
    }
}

#[test]
fn ping_pong_with_cat() {
    // cat writes each line as it reads it (its output is a pipe: unbuffered
    // reads and writes).
    let (answers, code) = ping_pong("cat", &[]);
    assert_eq!(code, Some(0));
    assert_eq!(
        answers,
        (0..100).map(|i| format!("line {i}")).collect::<Vec<_>>()
    );
}

#[test]
fn close_from_inside_pipe_data_received() {
    let lp = new_loop();
    let r = Run::new(&lp);
    let f = r.factory_with(|ev, t| {
        if matches!(ev, Ev::Data(..)) {
            t.close();
        }
    });
    let (l, done) = (lp.clone(), r.done.clone());
    let t = run(&lp, async move {
        // `yes` writes forever: only the close stops it.
        let (t, _p) = l
            .subprocess_exec(f, "yes", Vec::<&str>::new(), SubprocessOptions::new())
            .await
            .unwrap();
        done.await.unwrap();
        t
    });
    assert_eq!(t.get_returncode(), Some(-9));
    let s = shape(&r.evs.borrow());
    assert_eq!(s.first(), Some(&Ev::Made));
    assert!(s.contains(&Ev::Exited(Some(-9))), "{s:?}");
    assert_eq!(
        s.iter().filter(|e| matches!(e, Ev::PipeLost(..))).count(),
        3
    );
    assert_eq!(s.last(), Some(&Ev::Lost));
    assert!(!output(&r.evs.borrow(), 1).is_empty());
}

#[test]
fn kill_from_inside_connection_made() {
    let lp = new_loop();
    let r = Run::new(&lp);
    let f = r.factory_with(|ev, t| {
        if *ev == Ev::Made {
            t.kill().unwrap();
        }
    });
    let (l, done) = (lp.clone(), r.done.clone());
    run(&lp, async move {
        let opts = SubprocessOptions::new()
            .stdin(aioloop::Stdio::DevNull)
            .stdout(aioloop::Stdio::DevNull)
            .stderr(aioloop::Stdio::DevNull);
        let (_t, _p) = l.subprocess_exec(f, "sleep", ["30"], opts).await.unwrap();
        done.await.unwrap();
    });
    assert_eq!(
        shape(&r.evs.borrow()),
        vec![Ev::Made, Ev::Exited(Some(-9)), Ev::Lost]
    );
}

#[test]
fn a_panicking_protocol_is_reported_and_the_rest_delivered() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let r = Run::new(&lp);
    let f = r.factory_with(|ev, _t| {
        if matches!(ev, Ev::Data(..)) {
            panic!("boom in pipe_data_received");
        }
    });
    let (l, done) = (lp.clone(), r.done.clone());
    run(&lp, async move {
        let (_t, _p) = l
            .subprocess_shell(f, "echo hi", SubprocessOptions::new())
            .await
            .unwrap();
        done.await.unwrap();
    });
    let s = shape(&r.evs.borrow());
    assert!(s.contains(&Ev::Exited(Some(0))));
    assert_eq!(s.last(), Some(&Ev::Lost));
    let seen = seen.borrow();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].message.contains("pipe_data_received"), "{seen:?}");
    assert_eq!(seen[0].panic.as_deref(), Some("boom in pipe_data_received"));
}

/// A write to stdin from inside the protocol's own method that crosses the
/// high-water mark: `pause_writing` cannot re-enter the protocol (`&mut
/// self`), so it comes right after that method returns, before anything
/// else the loop runs (here: a callback scheduled first, inside the
/// method), as loop-net's protocols get theirs. Both ways a method is
/// called: through the queue (`connection_made`) and at once
/// (`pipe_data_received`).
#[test]
fn pause_writing_caused_inside_a_callback_comes_right_after_it() {
    struct Writer {
        log: Log<&'static str>,
        done: aioloop::Future<()>,
        transport: Option<SubprocessTransport>,
    }
    impl Writer {
        /// Schedules a callback, then writes 1 MiB to stdin.
        fn flood(&mut self, what: &'static str) {
            let t = self.transport.as_ref().unwrap();
            let log = self.log.clone();
            t.get_loop()
                .expect("connection_lost has not run")
                .call_soon(move || log.borrow_mut().push("next callback"))
                .unwrap();
            let stdin = t.get_pipe_transport(0).unwrap();
            stdin.write(&vec![b'w'; 1 << 20]).unwrap();
            self.log.borrow_mut().push(what);
        }
    }
    impl SubprocessProtocol for Writer {
        fn connection_made(&mut self, t: SubprocessTransport) {
            self.transport = Some(t);
            self.flood("made returns");
        }
        fn pipe_data_received(&mut self, _fd: i32, data: &[u8]) {
            if data.starts_with(b"half") {
                self.flood("data returns");
                let t = self.transport.as_ref().unwrap();
                t.get_pipe_transport(0).unwrap().write_eof().unwrap();
            }
        }
        fn pause_writing(&mut self) {
            self.log.borrow_mut().push("pause_writing");
        }
        fn resume_writing(&mut self) {
            self.log.borrow_mut().push("resume_writing");
        }
        fn connection_lost(&mut self, _error: Option<io::Error>) {
            let _ = self.done.set_result(());
        }
    }
    let lp = new_loop();
    let log: Log<&'static str> = crate::util::log();
    let done = lp.create_future::<()>();
    let (l, lg, d) = (lp.clone(), log.clone(), done.clone());
    let out = run(&lp, async move {
        // Reads the first MiB, says "half", then counts the rest.
        let (t, _p) = l
            .subprocess_shell(
                move || Writer {
                    log: lg,
                    done: d,
                    transport: None,
                },
                "head -c 1048576 >/dev/null; echo half; wc -c",
                SubprocessOptions::new(),
            )
            .await
            .unwrap();
        done.await.unwrap();
        t.get_returncode()
    });
    assert_eq!(out, Some(0));
    let log = log.borrow().clone();
    let expected = [
        "made returns",
        "pause_writing",
        "next callback",
        "resume_writing",
        "data returns",
        "pause_writing",
        "next callback",
        "resume_writing",
    ];
    assert_eq!(log, expected, "{log:?}");
}
