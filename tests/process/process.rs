#![cfg(feature = "process")]
//! The high-level `Process` (asyncio's `create_subprocess_exec` /
//! `create_subprocess_shell`): `communicate` without deadlock on large
//! input and output, streams read line by line, stdin written with `drain`,
//! futures-io reads and writes, `wait`, signals, the readers' backpressure
//! on the pipes, and a child that stops reading its input.

use std::io;
use std::time::Duration;

use crate::util::*;
use aioloop::prelude::*;
use aioloop::Stdio;
use futures_lite::{AsyncReadExt, AsyncWriteExt};

#[test]
fn communicate_moves_eight_mebibytes_each_way_without_deadlock() {
    let lp = new_loop();
    let l = lp.clone();
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 253) as u8).collect();
    let sent = data.clone();
    let (out, err, code) = run(&lp, async move {
        let mut p = l
            .create_subprocess_exec("cat", Vec::<&str>::new(), SubprocessOptions::new())
            .await
            .unwrap();
        let (out, err) = p.communicate(Some(&sent)).await.unwrap();
        (out, err, p.returncode())
    });
    assert!(out == data, "cat's output differs ({} bytes)", out.len());
    assert!(err.is_empty());
    assert_eq!(code, Some(0));
}

/// `StreamWriter::write_owned` on a child's stdin: the shared buffer is
/// kept by the pipe (no copy) and let go once written; `cat` echoes every
/// byte in order, read concurrently from its stdout.
#[test]
fn stdin_write_owned_feeds_cat_in_order_and_lets_go_of_the_buffer() {
    let lp = new_loop();
    let l = lp.clone();
    let chunk: std::rc::Rc<[u8]> = (0..256u32 << 10).map(|i| (i % 251) as u8).collect();
    let c = chunk.clone();
    let (got, code) = run(&lp, async move {
        let mut p = l
            .create_subprocess_exec("cat", Vec::<&str>::new(), SubprocessOptions::new())
            .await
            .unwrap();
        let stdin = p.stdin.take().unwrap();
        let stdout = p.stdout.take().unwrap();
        let writer = l
            .create_task(async move {
                for i in 0..16u8 {
                    stdin.write(&[i]).unwrap();
                    stdin.write_owned(c.clone()).unwrap();
                    // 256 KiB never fit a pipe: the rest is kept, uncopied.
                    assert!(std::rc::Rc::strong_count(&c) > 2, "kept");
                    stdin.drain().await.unwrap();
                }
                stdin.close();
                c
            })
            .unwrap();
        let got = stdout.read_to_end().await.unwrap();
        let c = writer.await.unwrap();
        assert_eq!(std::rc::Rc::strong_count(&c), 2, "the pipe let go of it");
        (got, p.wait().await.unwrap())
    });
    let expected: Vec<u8> = (0..16u8)
        .flat_map(|i| [&[i][..], &chunk].concat())
        .collect();
    assert!(
        got == expected,
        "cat's output differs ({} bytes)",
        got.len()
    );
    assert_eq!(code, 0);
}

#[test]
fn communicate_collects_stdout_and_stderr_and_the_exit_status() {
    let lp = new_loop();
    let l = lp.clone();
    let (out, err, code, pid_ok) = run(&lp, async move {
        let mut p = l
            .create_subprocess_shell(
                "echo out; echo err >&2; exit 2",
                SubprocessOptions::new().stdin(Stdio::DevNull),
            )
            .await
            .unwrap();
        assert!(p.stdin.is_none());
        let pid_ok = p.pid() > 0;
        let (out, err) = p.communicate(None).await.unwrap();
        (out, err, p.returncode(), pid_ok)
    });
    assert_eq!(out, b"out\n");
    assert_eq!(err, b"err\n");
    assert_eq!(code, Some(2));
    assert!(pid_ok);
}

#[test]
fn lines_in_and_out_with_a_python_child() {
    let lp = new_loop();
    let l = lp.clone();
    let code = "import sys\nfor l in sys.stdin:\n    print(l.strip()[::-1], flush=True)";
    let (lines, rc) = run(&lp, async move {
        let p = l
            .create_subprocess_exec("python3", ["-c", code], SubprocessOptions::new())
            .await
            .unwrap();
        let stdin = p.stdin.as_ref().unwrap();
        let stdout = p.stdout.as_ref().unwrap();
        let mut lines = Vec::new();
        for word in ["alpha", "beta", "gamma"] {
            stdin.write(format!("{word}\n").as_bytes()).unwrap();
            stdin.drain().await.unwrap();
            let line = stdout.readline().await.unwrap();
            lines.push(String::from_utf8(line).unwrap());
        }
        stdin.close();
        // At the end of stdout, readline gives an empty line.
        assert!(stdout.readline().await.unwrap().is_empty());
        assert!(stdout.at_eof());
        (lines, p.wait().await.unwrap())
    });
    assert_eq!(lines, ["ahpla\n", "ateb\n", "ammag\n"]);
    assert_eq!(rc, 0);
}

#[test]
fn futures_io_reads_and_writes() {
    let lp = new_loop();
    let l = lp.clone();
    let got = run(&lp, async move {
        let mut p = l
            .create_subprocess_exec("tr", ["a-z", "A-Z"], SubprocessOptions::new())
            .await
            .unwrap();
        let mut stdin = p.stdin.take().unwrap();
        let mut stdout = p.stdout.take().unwrap();
        stdin.write_all(b"through futures-io\n").await.unwrap();
        AsyncWriteExt::close(&mut stdin).await.unwrap();
        let mut got = String::new();
        stdout.read_to_string(&mut got).await.unwrap();
        assert_eq!(p.wait().await.unwrap(), 0);
        got
    });
    assert_eq!(got, "THROUGH FUTURES-IO\n");
}

#[test]
fn signals_and_wait() {
    let lp = new_loop();
    let l = lp.clone();
    let (code, again) = run(&lp, async move {
        let p = l
            .create_subprocess_exec("sleep", ["30"], SubprocessOptions::new())
            .await
            .unwrap();
        p.terminate().unwrap();
        let code = p.wait().await.unwrap();
        (code, p.kill().unwrap_err().raw_os_error())
    });
    assert_eq!(code, -15);
    assert_eq!(again, Some(3), "ESRCH once it exited");

    let l = lp.clone();
    let code = run(&lp, async move {
        let p = l
            .create_subprocess_exec("sleep", ["30"], SubprocessOptions::new())
            .await
            .unwrap();
        p.send_signal(rustix::process::Signal::INT.as_raw())
            .unwrap();
        p.wait().await.unwrap()
    });
    assert_eq!(code, -2);
}

#[test]
fn an_unread_stdout_pauses_its_pipe_and_reading_resumes_it() {
    let lp = new_loop();
    let l = lp.clone();
    let total = run(&lp, async move {
        let p = l
            .create_subprocess_exec(
                "head",
                ["-c", "1000000", "/dev/zero"],
                SubprocessOptions::new().limit(4096),
            )
            .await
            .unwrap();
        let stdout = p.stdout.as_ref().unwrap();
        let pipe = p.transport().get_pipe_transport(1).unwrap();
        // Nobody reads: the reader buffers up to twice its limit, then
        // pauses the pipe.
        while stdout.buffered() <= 2 * 4096 {
            l.sleep(Duration::from_millis(2)).await.unwrap();
        }
        assert!(!pipe.is_reading(), "paused above twice the limit");
        // Bounded: what the pipe read before the pause took effect (one
        // 64 KiB read per iteration; output that arrives before
        // `connection_made` waits in the transport's queue, as asyncio's
        // pending calls, for an iteration or two).
        assert!(stdout.buffered() <= 2 * 4096 + 4 * 65536, "bounded");
        let all = stdout.read_to_end().await.unwrap();
        assert_eq!(p.wait().await.unwrap(), 0);
        all.len()
    });
    assert_eq!(total, 1_000_000);
}

#[test]
fn communicate_ignores_a_child_that_stops_reading() {
    let lp = new_loop();
    let l = lp.clone();
    let (out, code) = run(&lp, async move {
        let mut p = l
            .create_subprocess_exec("head", ["-c", "5"], SubprocessOptions::new())
            .await
            .unwrap();
        let (out, _) = p.communicate(Some(&vec![b'z'; 4 << 20])).await.unwrap();
        (out, p.returncode())
    });
    assert_eq!(out, b"zzzzz");
    assert_eq!(code, Some(0));
}

#[test]
fn a_missing_program_is_not_found() {
    let lp = new_loop();
    let l = lp.clone();
    let err = run(&lp, async move {
        l.create_subprocess_exec("aioloop-no-such-program", ["x"], SubprocessOptions::new())
            .await
            .unwrap_err()
    });
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    // A zero limit is refused, as asyncio refuses limit <= 0.
    let l = lp.clone();
    let err = run(&lp, async move {
        l.create_subprocess_exec(
            "true",
            Vec::<&str>::new(),
            SubprocessOptions::new().limit(0),
        )
        .await
        .unwrap_err()
    });
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
}
