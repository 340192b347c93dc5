//! [`SubprocessLoopExt`]: asyncio's `subprocess_exec` and `subprocess_shell`
//! as an extension trait of [`EventLoop`].
//!
//! # The spawn sequence
//! As asyncio's `_make_subprocess_transport`:
//! 1. The pipes are made here with `O_CLOEXEC` and the child's ends handed
//!    to `std::process::Command`, so std's `posix_spawn` fast path is kept
//!    unless a `pre_exec` is needed (`start_new_session`, or the descriptor
//!    rule of fd_inheritance.rs); the `Command` is dropped right after the
//!    spawn, closing the child's ends in the parent.
//! 2. `pidfd_open`, and the child watcher registered (child_watcher.rs).
//! 3. stdin, stdout and stderr connected as loop-net pipe transports, each
//!    driving a `PipeAdapter` protocol that forwards to the subprocess
//!    protocol with its fd number and holds only a `Weak` to the state.
//! 4. `connection_made` queued first, ahead of whatever output arrived
//!    meanwhile; the call returns once it ran.
//!
//! A spawning future dropped before it returns kills the child
//! (`KillOnDrop`). `close()` kills with SIGKILL and does not wait (asyncio);
//! dropping the last handle does not kill (the child runs on and is reaped
//! when it exits). `get_extra_info("subprocess")` gives the pid: there is no
//! Popen object.

use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::io;
use std::rc::Rc;

use loop_core::{ErrorKind, EventLoop, LoopError};
use loop_net::{PipeLoopExt, ProtocolHandle};
use rustix::process::{Pid, Signal};

use crate::child_watcher::{self, Watcher, UNKNOWN_STATUS};
use crate::process::{self, Process};
use crate::subprocess_options::SubprocessOptions;
use crate::subprocess_protocol::SubprocessProtocol;
use crate::subprocess_transport::{Inner, PipeAdapter, SubprocessTransport, WatchGuard};

mod sealed {
    pub trait Sealed {}
    impl Sealed for loop_core::EventLoop {}
}

/// asyncio's subprocess methods on [`EventLoop`]: `subprocess_exec` and
/// `subprocess_shell`.
///
/// Bring it into scope (`use loop_process::SubprocessLoopExt;`, or
/// `use aioloop::prelude::*;`). Both return `(SubprocessTransport,
/// ProtocolHandle<P>)`, asyncio's `(transport, protocol)`, once the child
/// runs, its pipes are connected and the protocol's `connection_made` ran.
///
/// Errors are [`io::Error`]s, as asyncio raises `OSError`: a program that
/// does not exist is [`NotFound`](io::ErrorKind::NotFound) (asyncio's
/// `FileNotFoundError`), one that may not be run
/// [`PermissionDenied`](io::ErrorKind::PermissionDenied); bad options are
/// [`InvalidInput`](io::ErrorKind::InvalidInput); a closed loop gives an
/// error whose inner error is a [`LoopError`] of kind
/// [`Closed`](ErrorKind::Closed). Nothing is left behind by a failed call: no
/// fd, no child (a child started before a later step failed is killed and
/// reaped). Dropping the returned future before it completes kills the
/// child, as cancelling asyncio's call does.
///
/// ```
/// use loop_core::EventLoop;
/// use loop_process::{SubprocessLoopExt, SubprocessOptions, SubprocessProtocol};
///
/// /// Collects stdout; completes `done` with it at the end.
/// struct Collect {
///     out: Vec<u8>,
///     done: loop_core::Future<Vec<u8>>,
/// }
/// impl SubprocessProtocol for Collect {
///     fn pipe_data_received(&mut self, _fd: i32, data: &[u8]) {
///         self.out.extend_from_slice(data);
///     }
///     fn connection_lost(&mut self, _err: Option<std::io::Error>) {
///         let _ = self.done.set_result(std::mem::take(&mut self.out));
///     }
/// }
///
/// let lp = EventLoop::new()?;
/// let done = lp.create_future::<Vec<u8>>();
/// let (l, d) = (lp.clone(), done.clone());
/// let (out, code) = lp.run_until_complete(async move {
///     let (transport, _protocol) = l
///         .subprocess_exec(
///             move || Collect { out: Vec::new(), done: d },
///             "echo",
///             ["hello", "child"],
///             SubprocessOptions::new(),
///         )
///         .await?;
///     let out = done.await.map_err(std::io::Error::from)?;
///     Ok::<_, std::io::Error>((out, transport.get_returncode()))
/// })??;
/// assert_eq!(out, b"hello child\n");
/// assert_eq!(code, Some(0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait SubprocessLoopExt: sealed::Sealed {
    /// Starts `program` with `args` (`argv[0]` is `program`; it is looked
    /// up in `PATH` when it has no slash), with a protocol from `factory`
    /// (asyncio's `loop.subprocess_exec(protocol_factory, program, *args,
    /// stdin=, stdout=, stderr=, **kwargs)`).
    #[doc(alias = "loop.subprocess_exec")]
    fn subprocess_exec<P: SubprocessProtocol>(
        &self,
        factory: impl FnOnce() -> P + 'static,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
        options: SubprocessOptions,
    ) -> impl Future<Output = io::Result<(SubprocessTransport, ProtocolHandle<P>)>> + 'static;

    /// Runs `cmd` with the shell, `/bin/sh -c cmd` (asyncio's
    /// `loop.subprocess_shell(protocol_factory, cmd, ...)`). Quoting is the
    /// caller's business, as in asyncio.
    #[doc(alias = "loop.subprocess_shell")]
    fn subprocess_shell<P: SubprocessProtocol>(
        &self,
        factory: impl FnOnce() -> P + 'static,
        cmd: impl AsRef<OsStr>,
        options: SubprocessOptions,
    ) -> impl Future<Output = io::Result<(SubprocessTransport, ProtocolHandle<P>)>> + 'static;

    /// Starts `program` with `args` and returns a [`Process`] whose piped
    /// streams are a [`StreamWriter`](loop_net::StreamWriter) (stdin) and
    /// [`StreamReader`](loop_net::StreamReader)s (stdout, stderr)
    /// (asyncio's `asyncio.create_subprocess_exec(program, *args, ...)`).
    /// The same options and errors as [`subprocess_exec`](Self::subprocess_exec),
    /// plus [`SubprocessOptions::limit`].
    #[doc(alias = "asyncio.create_subprocess_exec")]
    fn create_subprocess_exec(
        &self,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
        options: SubprocessOptions,
    ) -> impl Future<Output = io::Result<Process>> + 'static;

    /// Runs `cmd` with `/bin/sh -c` as a [`Process`] (asyncio's
    /// `asyncio.create_subprocess_shell(cmd, ...)`).
    #[doc(alias = "asyncio.create_subprocess_shell")]
    fn create_subprocess_shell(
        &self,
        cmd: impl AsRef<OsStr>,
        options: SubprocessOptions,
    ) -> impl Future<Output = io::Result<Process>> + 'static;
}

impl SubprocessLoopExt for EventLoop {
    fn create_subprocess_exec(
        &self,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
        options: SubprocessOptions,
    ) -> impl Future<Output = io::Result<Process>> + 'static {
        let program = program.as_ref().to_owned();
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        process::create(self.clone(), program, args, options)
    }

    fn create_subprocess_shell(
        &self,
        cmd: impl AsRef<OsStr>,
        options: SubprocessOptions,
    ) -> impl Future<Output = io::Result<Process>> + 'static {
        let (program, args) = process::shell(cmd.as_ref());
        process::create(self.clone(), program, args, options)
    }

    fn subprocess_exec<P: SubprocessProtocol>(
        &self,
        factory: impl FnOnce() -> P + 'static,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
        options: SubprocessOptions,
    ) -> impl Future<Output = io::Result<(SubprocessTransport, ProtocolHandle<P>)>> + 'static {
        let program = program.as_ref().to_owned();
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        spawn(self.clone(), factory, program, args, options)
    }

    fn subprocess_shell<P: SubprocessProtocol>(
        &self,
        factory: impl FnOnce() -> P + 'static,
        cmd: impl AsRef<OsStr>,
        options: SubprocessOptions,
    ) -> impl Future<Output = io::Result<(SubprocessTransport, ProtocolHandle<P>)>> + 'static {
        let args = vec![OsString::from("-c"), cmd.as_ref().to_owned()];
        spawn(
            self.clone(),
            factory,
            OsString::from("/bin/sh"),
            args,
            options,
        )
    }
}

/// Kills the child if the spawning future is dropped before it completes.
struct KillOnDrop(Option<Rc<Inner>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            SubprocessTransport { inner }.close();
        }
    }
}

async fn spawn<P: SubprocessProtocol>(
    lp: EventLoop,
    factory: impl FnOnce() -> P + 'static,
    program: OsString,
    args: Vec<OsString>,
    mut options: SubprocessOptions,
) -> io::Result<(SubprocessTransport, ProtocolHandle<P>)> {
    if lp.is_closed() {
        return Err(LoopError::closed().into());
    }
    let watcher = child_watcher::choose(&lp);
    if watcher == Watcher::Sigchld {
        child_watcher::prepare_sigchld(&lp)?;
    }
    let (mut cmd, ends) = options.command(&program, &args)?;
    let child = cmd.spawn()?;
    // The child's ends of the pipes are in `cmd`: close them in the parent
    // now, or the parent would never see end of file.
    drop(cmd);
    let pid = Pid::from_raw(child.id() as i32).ok_or_else(|| {
        io::Error::from(LoopError::new(
            ErrorKind::InvalidState,
            "spawn returned pid 0",
        ))
    })?;
    // `Child` does not wait or kill on drop; its stdio handles are empty
    // (the pipes are ours).
    drop(child);

    let mut exited_early = None;
    let pidfd = if watcher == Watcher::Pidfd {
        match crate::pidfd::open(pid) {
            Ok(fd) => Some(fd),
            // Reaped already, by someone else (SIGCHLD ignored: the kernel
            // reaps at once): exited, status unknown.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error()) => {
                exited_early = Some(UNKNOWN_STATUS);
                None
            }
            Err(e) => {
                // No way to watch it (out of fds, say): do not leave it.
                let _ = rustix::process::kill_process(pid, Signal::KILL);
                let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
                return Err(e);
            }
        }
    } else {
        None
    };

    let mut argv = Vec::with_capacity(args.len() + 1);
    argv.push(program);
    argv.extend(args);
    let handle = ProtocolHandle::new(factory());
    let erased: ProtocolHandle<dyn SubprocessProtocol> =
        ProtocolHandle::from_cell(handle.cell().clone());
    let inner = Inner::new(&lp, pid, argv, pidfd, erased);
    let mut guard = KillOnDrop(Some(inner.clone()));

    if let Some(code) = exited_early {
        inner.process_exited(code);
    } else {
        let watch = WatchGuard::new(inner.clone());
        let on_exit = Box::new(move |code| watch.exited(code));
        match watcher {
            Watcher::Pidfd => {
                let raw = inner.pidfd_raw().ok_or_else(|| {
                    io::Error::from(LoopError::new(ErrorKind::InvalidState, "no pidfd"))
                })?;
                child_watcher::watch_pidfd(&lp, raw, on_exit)?;
            }
            Watcher::Sigchld => child_watcher::watch_sigchld(&lp, pid, on_exit)?,
        }
    }

    // asyncio's order: stdin, stdout, stderr.
    for (fd, end) in [(0, ends.stdin), (1, ends.stdout), (2, ends.stderr)] {
        if let Some(end) = end {
            let adapter = PipeAdapter {
                fd,
                inner: Rc::downgrade(&inner),
            };
            let (t, _) = if fd == 0 {
                lp.connect_write_pipe(move || adapter, end).await?
            } else {
                lp.connect_read_pipe(move || adapter, end).await?
            };
            inner.add_pipe(fd, t);
        }
    }
    inner.start();
    inner.made().await;
    guard.0 = None;
    Ok((SubprocessTransport { inner }, handle))
}
