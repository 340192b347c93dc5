//! [`Process`]: asyncio's high-level `asyncio.subprocess.Process`, built on
//! a subprocess transport and loop-net's streams.
//!
//! The protocol is asyncio's `SubprocessStreamProtocol`: stdout and stderr
//! feed a [`StreamReader`] each (which pauses its pipe when more than twice
//! its limit is buffered, and resumes it as the user reads), and stdin is a
//! [`StreamWriter`] over the stdin pipe whose [`FlowControl`] the protocol
//! feeds from `pause_writing` / `resume_writing` / `pipe_connection_lost(0)`.
//! Once the child runs, the stdout and stderr pipes append their reads to
//! the readers' buffers themselves ([`StreamReader::feed_directly_from`]: no
//! copy, where asyncio's `pipe_data_received` copies into `feed_data`); the
//! protocol still gets their `pipe_connection_lost`, so the end of each
//! stream (`feed_eof`) and the process's `connection_lost` keep their order
//! after the last byte.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::future::Future;
use std::io;

use loop_core::EventLoop;
use loop_net::{FlowControl, StreamReader, StreamWriter};

use crate::subprocess_ext::SubprocessLoopExt;
use crate::subprocess_options::SubprocessOptions;
use crate::subprocess_protocol::SubprocessProtocol;
use crate::subprocess_transport::SubprocessTransport;

/// The default limit of the stdout and stderr readers (asyncio's
/// `streams._DEFAULT_LIMIT`, 64 KiB).
pub const DEFAULT_LIMIT: usize = 64 * 1024;

/// A child process with stream access to its standard streams, as
/// `asyncio.create_subprocess_exec` returns it.
///
/// `stdin`, `stdout` and `stderr` are `Some` for the streams given as
/// [`Stdio::Pipe`](crate::Stdio::Pipe) (the default), like the attributes of
/// asyncio's `Process` (and the fields of `std::process::Child`): take them
/// out to move them into other tasks.
///
/// ```
/// use loop_core::EventLoop;
/// use loop_process::{SubprocessLoopExt, SubprocessOptions};
///
/// let lp = EventLoop::new()?;
/// let l = lp.clone();
/// let (out, code) = lp.run_until_complete(async move {
///     let mut p = l
///         .create_subprocess_exec("tr", ["a-z", "A-Z"], SubprocessOptions::new())
///         .await?;
///     let (out, _err) = p.communicate(Some(b"shout\n")).await?;
///     Ok::<_, std::io::Error>((out, p.returncode()))
/// })??;
/// assert_eq!(out, b"SHOUT\n");
/// assert_eq!(code, Some(0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "asyncio.subprocess.Process")]
pub struct Process {
    transport: SubprocessTransport,
    /// A writer to the child's stdin (asyncio's `Process.stdin`).
    #[doc(alias = "Process.stdin")]
    pub stdin: Option<StreamWriter>,
    /// A reader of the child's stdout (asyncio's `Process.stdout`).
    #[doc(alias = "Process.stdout")]
    pub stdout: Option<StreamReader>,
    /// A reader of the child's stderr (asyncio's `Process.stderr`).
    #[doc(alias = "Process.stderr")]
    pub stderr: Option<StreamReader>,
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.pid())
            .field("returncode", &self.returncode())
            .finish()
    }
}

impl Process {
    /// The child's process id (asyncio's `Process.pid`).
    #[doc(alias = "Process.pid")]
    pub fn pid(&self) -> u32 {
        self.transport.get_pid()
    }

    /// The return code: `None` while the child runs; minus the signal if a
    /// signal ended it (asyncio's `Process.returncode`).
    #[doc(alias = "Process.returncode")]
    pub fn returncode(&self) -> Option<i32> {
        self.transport.get_returncode()
    }

    /// The subprocess transport underneath.
    pub fn transport(&self) -> &SubprocessTransport {
        &self.transport
    }

    /// Waits for the child to exit; returns its return code (asyncio's
    /// `Process.wait()`). As in asyncio, a child that fills an unread stdout
    /// or stderr pipe can block forever: read them, or use
    /// [`communicate`](Self::communicate).
    #[doc(alias = "Process.wait")]
    pub fn wait(&self) -> impl Future<Output = io::Result<i32>> + 'static {
        self.transport.wait()
    }

    /// Sends `signal` (asyncio's `Process.send_signal`); see
    /// [`SubprocessTransport::send_signal`].
    #[doc(alias = "Process.send_signal")]
    pub fn send_signal(&self, signal: i32) -> io::Result<()> {
        self.transport.send_signal(signal)
    }

    /// Sends `SIGTERM` (asyncio's `Process.terminate`).
    #[doc(alias = "Process.terminate")]
    pub fn terminate(&self) -> io::Result<()> {
        self.transport.terminate()
    }

    /// Sends `SIGKILL` (asyncio's `Process.kill`).
    #[doc(alias = "Process.kill")]
    pub fn kill(&self) -> io::Result<()> {
        self.transport.kill()
    }

    /// Writes `input` to stdin (if given) and closes it, reads stdout and
    /// stderr to their end, all at once, then waits for the exit (asyncio's
    /// `Process.communicate(input)`). Returns what stdout and stderr
    /// carried (empty for a stream that is not a pipe). No deadlock
    /// whatever the sizes: writing waits on the pipe's flow control while
    /// the reads go on. A child that exits without reading all its input
    /// is not an error (asyncio ignores `BrokenPipeError` and
    /// `ConnectionResetError` there). Takes the streams out of `self`.
    #[doc(alias = "Process.communicate")]
    pub fn communicate(
        &mut self,
        input: Option<&[u8]>,
    ) -> impl Future<Output = io::Result<(Vec<u8>, Vec<u8>)>> + 'static {
        let stdin = self.stdin.take();
        let stdout = self.stdout.take();
        let stderr = self.stderr.take();
        let input = input.map(<[u8]>::to_vec);
        let wait = self.transport.wait();
        async move {
            let feed = async move {
                if let Some(w) = stdin {
                    feed_stdin(&w, input.as_deref()).await?;
                }
                Ok::<(), io::Error>(())
            };
            let out = read_all(stdout);
            let err = read_all(stderr);
            let (fed, (out, err)) =
                futures_lite::future::zip(feed, futures_lite::future::zip(out, err)).await;
            fed?;
            let (out, err) = (out?, err?);
            wait.await?;
            Ok((out, err))
        }
    }
}

async fn feed_stdin(w: &StreamWriter, input: Option<&[u8]>) -> io::Result<()> {
    let ignore = |e: io::Error| match e.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Ok(()),
        _ => Err(e),
    };
    if let Some(data) = input {
        if let Err(e) = w.write(data) {
            return ignore(e.into());
        }
        if let Err(e) = w.drain().await {
            return ignore(e);
        }
    }
    w.close();
    Ok(())
}

async fn read_all(r: Option<StreamReader>) -> io::Result<Vec<u8>> {
    match r {
        Some(r) => r.read_to_end().await.map_err(io::Error::from),
        None => Ok(Vec::new()),
    }
}

/// asyncio's `SubprocessStreamProtocol`: the pipes to and from a
/// [`Process`]'s streams.
struct StreamProtocol {
    stdout: Option<StreamReader>,
    stderr: Option<StreamReader>,
    stdin_flow: FlowControl,
}

impl SubprocessProtocol for StreamProtocol {
    fn connection_made(&mut self, t: SubprocessTransport) {
        for (fd, reader) in [(1, &self.stdout), (2, &self.stderr)] {
            if let (Some(r), Some(pipe)) = (reader, t.get_pipe_transport(fd)) {
                let _ = r.set_transport(pipe);
            }
        }
    }

    fn pipe_data_received(&mut self, fd: i32, data: &[u8]) {
        let reader = if fd == 1 { &self.stdout } else { &self.stderr };
        if let Some(r) = reader {
            let _ = r.feed_data(data);
        }
    }

    fn pipe_connection_lost(&mut self, fd: i32, error: Option<io::Error>) {
        if fd == 0 {
            self.stdin_flow.connection_lost(error.as_ref());
            return;
        }
        let reader = if fd == 1 { &self.stdout } else { &self.stderr };
        if let Some(r) = reader {
            match error {
                None => r.feed_eof(),
                Some(e) => r.set_exception(e),
            }
        }
    }

    fn pause_writing(&mut self) {
        self.stdin_flow.pause_writing();
    }

    fn resume_writing(&mut self) {
        self.stdin_flow.resume_writing();
    }
}

/// Builds the [`Process`] around a started transport.
pub(crate) async fn create(
    lp: EventLoop,
    program: OsString,
    args: Vec<OsString>,
    options: SubprocessOptions,
) -> io::Result<Process> {
    let limit = options.stream_limit().unwrap_or(DEFAULT_LIMIT);
    let reader = || StreamReader::with_limit(limit).map_err(io::Error::from);
    let stdout = options.stdout_is_pipe().then(reader).transpose()?;
    let stderr = options.stderr_is_pipe().then(reader).transpose()?;
    let stdin_flow = FlowControl::new();
    let protocol = StreamProtocol {
        stdout: stdout.clone(),
        stderr: stderr.clone(),
        stdin_flow: stdin_flow.clone(),
    };
    let (transport, _) = lp
        .subprocess_exec(move || protocol, program, args, options)
        .await?;
    // The pipes append their reads to the readers' buffers themselves (no
    // copy); the protocol above still hears of their end.
    for (fd, reader) in [(1, &stdout), (2, &stderr)] {
        if let (Some(r), Some(pipe)) = (reader, transport.get_pipe_transport(fd)) {
            r.feed_directly_from(&pipe);
        }
    }
    let stdin = transport
        .get_pipe_transport(0)
        .map(|t| StreamWriter::new(t, stdin_flow, None));
    Ok(Process {
        transport,
        stdin,
        stdout,
        stderr,
    })
}

/// The program and arguments of `create_subprocess_shell`.
pub(crate) fn shell(cmd: &OsStr) -> (OsString, Vec<OsString>) {
    (
        OsString::from("/bin/sh"),
        vec![OsString::from("-c"), cmd.to_owned()],
    )
}
