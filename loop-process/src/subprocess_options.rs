//! [`SubprocessOptions`] and [`Stdio`]: what `subprocess_exec` and
//! `subprocess_shell` take besides the program, and how they become a
//! `std::process::Command` plus the parent's ends of the pipes.
//!
//! Every pipe is made here with `O_CLOEXEC` (`pipe2`), so no other child,
//! started by any thread, inherits an end; the child's end is handed to
//! `Command`, which `dup2`s it onto 0, 1 or 2 in the child and closes its own
//! copy in the parent when the `Command` is dropped right after the spawn
//! (which is what lets the parent see end of file when the child exits).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use crate::fd_inheritance::{self, is_open};

/// Where one of the child's standard streams goes (asyncio's `stdin=`,
/// `stdout=`, `stderr=` arguments).
#[derive(Default)]
pub enum Stdio {
    /// A new pipe, connected to the subprocess transport
    /// (`asyncio.subprocess.PIPE`). The default for all three streams, as in
    /// `loop.subprocess_exec`.
    #[doc(alias = "asyncio.subprocess.PIPE")]
    #[default]
    Pipe,
    /// `/dev/null` (`asyncio.subprocess.DEVNULL`).
    #[doc(alias = "asyncio.subprocess.DEVNULL")]
    DevNull,
    /// The parent's own stream (asyncio's `None`).
    Inherit,
    /// A file descriptor the caller owns (a file, a socket, a pipe end); the
    /// child gets a copy and the parent's is closed after the spawn.
    Fd(OwnedFd),
    /// For `stderr` only: the same destination as `stdout`
    /// (`asyncio.subprocess.STDOUT`). With `stdout` a pipe, both streams
    /// arrive as fd 1 on the protocol.
    #[doc(alias = "asyncio.subprocess.STDOUT")]
    Stdout,
}

impl fmt::Debug for Stdio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stdio::Pipe => f.write_str("Pipe"),
            Stdio::DevNull => f.write_str("DevNull"),
            Stdio::Inherit => f.write_str("Inherit"),
            Stdio::Fd(fd) => write!(f, "Fd({fd:?})"),
            Stdio::Stdout => f.write_str("Stdout"),
        }
    }
}

impl From<OwnedFd> for Stdio {
    fn from(fd: OwnedFd) -> Self {
        Stdio::Fd(fd)
    }
}

impl From<File> for Stdio {
    fn from(file: File) -> Self {
        Stdio::Fd(file.into())
    }
}

/// The options of `subprocess_exec` and `subprocess_shell`: the three
/// standard streams, the environment, the working directory, the process
/// group or session. A builder, as `std::process::Command`:
///
/// ```
/// use loop_process::{Stdio, SubprocessOptions};
/// let opts = SubprocessOptions::new()
///     .stdin(Stdio::DevNull)
///     .stderr(Stdio::Stdout)
///     .env("LANG", "C")
///     .cwd("/tmp")
///     .start_new_session(true);
/// # let _ = opts;
/// ```
///
/// Not offered (asyncio passes them to `subprocess.Popen`): `preexec_fn`,
/// `user`/`group`/`umask`, `executable`, `bufsize` (there is no
/// buffering between the pipe and the protocol), `close_fds=False`.
///
/// Other fds: the child inherits 0, 1, 2 and the [`pass_fds`](Self::pass_fds),
/// nothing else, as with Popen's default `close_fds=True`, even an fd the
/// parent opened without `O_CLOEXEC`. Every fd that aioloop and Rust's
/// standard library open is close-on-exec already, so this costs nothing
/// in the common case: the child's other fds are marked close-on-exec
/// (`close_range`) only when `pass_fds` is set or the parent has an
/// inheritable fd above 2 at the spawn, which turns the cheap
/// `posix_spawn` into `fork` + `exec` for that spawn. The check cannot see
/// an inheritable fd that another thread opens while the spawn starts
/// (see `fd_inheritance.rs` for the details).
#[derive(Debug, Default)]
pub struct SubprocessOptions {
    pub(crate) stdin: Stdio,
    pub(crate) stdout: Stdio,
    pub(crate) stderr: Stdio,
    env_clear: bool,
    env: Vec<(OsString, Option<OsString>)>,
    cwd: Option<PathBuf>,
    process_group: Option<i32>,
    new_session: bool,
    limit: Option<usize>,
    pass_fds: Vec<RawFd>,
}

impl SubprocessOptions {
    /// Pipes for all three streams, the parent's environment and directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where the child's standard input comes from ([`Stdio::Stdout`] is
    /// refused at spawn time).
    pub fn stdin(mut self, stdio: impl Into<Stdio>) -> Self {
        self.stdin = stdio.into();
        self
    }

    /// Where the child's standard output goes ([`Stdio::Stdout`] is refused
    /// at spawn time).
    pub fn stdout(mut self, stdio: impl Into<Stdio>) -> Self {
        self.stdout = stdio.into();
        self
    }

    /// Where the child's standard error goes; [`Stdio::Stdout`] merges it
    /// into standard output.
    pub fn stderr(mut self, stdio: impl Into<Stdio>) -> Self {
        self.stderr = stdio.into();
        self
    }

    /// Sets one environment variable for the child.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Sets several environment variables.
    pub fn envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    /// Removes one variable from the child's environment.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Starts the child with an empty environment (plus what
    /// [`env`](Self::env) sets): asyncio's `env={...}` replaces the whole
    /// environment, which is `env_clear().envs(..)` here.
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self.env.clear();
        self
    }

    /// The child's working directory (asyncio's `cwd=`).
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Puts the child in process group `pgid` (0: a new group whose id is
    /// the child's pid), asyncio's `process_group=`.
    pub fn process_group(mut self, pgid: i32) -> Self {
        self.process_group = Some(pgid);
        self
    }

    /// Runs the child in a new session (`setsid()`), asyncio's
    /// `start_new_session=True`: it gets no controlling terminal and leads a
    /// new process group, so a terminal's Ctrl-C does not reach it.
    pub fn start_new_session(mut self, yes: bool) -> Self {
        self.new_session = yes;
        self
    }

    /// The buffer limit of the stdout and stderr [`StreamReader`]s of a
    /// [`Process`](crate::Process) (asyncio's `limit=` of
    /// `create_subprocess_exec`; 64 KiB by default). Ignored by
    /// `subprocess_exec`, whose protocol gets the bytes as they come.
    ///
    /// [`StreamReader`]: loop_net::StreamReader
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// File descriptors the child keeps open, at the same numbers
    /// (asyncio's, that is Popen's, `pass_fds=`): the child inherits 0, 1,
    /// 2 and these, nothing else. Each must be open in the parent when the
    /// child is spawned ([`InvalidInput`](io::ErrorKind::InvalidInput)
    /// otherwise); the parent keeps its own. Numbers 0 to 2 change
    /// nothing. Adds to the fds given before.
    #[doc(alias = "Popen.pass_fds")]
    pub fn pass_fds(mut self, fds: impl IntoIterator<Item = RawFd>) -> Self {
        self.pass_fds.extend(fds);
        self
    }

    pub(crate) fn stream_limit(&self) -> Option<usize> {
        self.limit
    }

    pub(crate) fn stdout_is_pipe(&self) -> bool {
        matches!(self.stdout, Stdio::Pipe)
    }

    pub(crate) fn stderr_is_pipe(&self) -> bool {
        matches!(self.stderr, Stdio::Pipe)
    }

    /// Builds the command for `program` with `args`, and takes the standard
    /// streams: the returned [`ParentEnds`] hold the parent's side of every
    /// pipe.
    pub(crate) fn command(
        &mut self,
        program: &OsStr,
        args: &[OsString],
    ) -> io::Result<(Command, ParentEnds)> {
        let mut cmd = Command::new(program);
        cmd.args(args);
        if self.env_clear {
            cmd.env_clear();
        }
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        if let Some(pgid) = self.process_group {
            if pgid < 0 {
                return Err(invalid("process_group must be 0 or a process group id"));
            }
            cmd.process_group(pgid);
        }
        if self.new_session {
            if self.process_group.is_some() {
                return Err(invalid(
                    "start_new_session and process_group cannot be combined",
                ));
            }
            // SAFETY: the closure runs in the child between fork and exec,
            // where only async-signal-safe calls are allowed; it makes one
            // `setsid` system call (rustix calls the kernel directly: no
            // allocation, no lock) and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(|| rustix::process::setsid().map(drop).map_err(io::Error::from));
            }
        }

        if let Some(fd) = self.pass_fds.iter().find(|&&fd| !is_open(fd)) {
            return Err(invalid(&format!("pass_fds: fd {fd} is not open")));
        }
        fd_inheritance::restrict(&mut cmd, &self.pass_fds);

        let mut ends = ParentEnds::default();
        let stdin = std::mem::take(&mut self.stdin);
        let stdout = std::mem::take(&mut self.stdout);
        let stderr = std::mem::take(&mut self.stderr);
        match stdin {
            Stdio::Pipe => {
                let (read, write) = cloexec_pipe()?;
                cmd.stdin(read);
                ends.stdin = Some(write);
            }
            Stdio::Stdout => return Err(invalid("stdin cannot be Stdio::Stdout")),
            other => {
                cmd.stdin(simple(other)?);
            }
        }
        // What stderr=Stdout copies: a duplicate of stdout's destination.
        let stdout_copy: Option<std::process::Stdio>;
        match stdout {
            Stdio::Pipe => {
                let (read, write) = cloexec_pipe()?;
                stdout_copy = Some(write.try_clone()?.into());
                cmd.stdout(write);
                ends.stdout = Some(read);
            }
            Stdio::Stdout => return Err(invalid("stdout cannot be Stdio::Stdout")),
            Stdio::Fd(fd) => {
                stdout_copy = Some(fd.try_clone()?.into());
                cmd.stdout(fd);
            }
            Stdio::DevNull => {
                stdout_copy = Some(std::process::Stdio::null());
                cmd.stdout(std::process::Stdio::null());
            }
            Stdio::Inherit => {
                // The parent's own fd 1, duplicated (`Stdio::inherit` for
                // stderr would mean the parent's fd 2).
                stdout_copy = Some(
                    rustix::io::fcntl_dupfd_cloexec(std::os::fd::AsFd::as_fd(&io::stdout()), 3)
                        .map(std::process::Stdio::from)
                        .unwrap_or_else(|_| std::process::Stdio::inherit()),
                );
                cmd.stdout(std::process::Stdio::inherit());
            }
        }
        match stderr {
            Stdio::Pipe => {
                let (read, write) = cloexec_pipe()?;
                cmd.stderr(write);
                ends.stderr = Some(read);
            }
            Stdio::Stdout => {
                if let Some(copy) = stdout_copy {
                    cmd.stderr(copy);
                }
            }
            other => {
                cmd.stderr(simple(other)?);
            }
        }
        Ok((cmd, ends))
    }
}

/// The parent's ends of the pipes made for a child.
#[derive(Debug, Default)]
pub(crate) struct ParentEnds {
    pub(crate) stdin: Option<OwnedFd>,
    pub(crate) stdout: Option<OwnedFd>,
    pub(crate) stderr: Option<OwnedFd>,
}

fn simple(stdio: Stdio) -> io::Result<std::process::Stdio> {
    Ok(match stdio {
        Stdio::DevNull => std::process::Stdio::null(),
        Stdio::Inherit => std::process::Stdio::inherit(),
        Stdio::Fd(fd) => fd.into(),
        // Handled by the caller before it gets here.
        Stdio::Pipe | Stdio::Stdout => return Err(invalid("unexpected stdio kind")),
    })
}

fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        loop_core::LoopError::new(loop_core::ErrorKind::InvalidArgument, msg),
    )
}
