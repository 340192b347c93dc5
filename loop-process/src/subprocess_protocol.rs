//! [`SubprocessProtocol`]: the callbacks of a child process's transport.

use std::io;

use crate::subprocess_transport::SubprocessTransport;

/// What a subprocess transport tells its protocol (asyncio's
/// `SubprocessProtocol`): the child's output, its pipes closing, its exit.
///
/// Every method has a default that does nothing. The order is asyncio's:
/// `connection_made` first; then, in the order they happened,
/// `pipe_data_received` / `pipe_connection_lost` for each pipe,
/// `process_exited` once, `pause_writing` / `resume_writing` for stdin; and
/// `connection_lost` exactly once, last, when the process has exited **and**
/// every pipe has closed. No method is ever re-entered; a notice that
/// arrives while the protocol is inside one of its own methods (a write to
/// stdin that crosses the high-water mark, say) is delivered right after it.
///
/// `fd` is the child's file descriptor number: 0 (stdin), 1 (stdout) or
/// 2 (stderr). With `stderr(Stdio::Stdout)` both streams arrive as 1.
///
/// ```
/// use loop_process::{SubprocessProtocol, SubprocessTransport};
/// /// Collects what the child prints; answers a prompt on stdin.
/// #[derive(Default)]
/// struct Collect {
///     out: Vec<u8>,
///     transport: Option<SubprocessTransport>,
/// }
/// impl SubprocessProtocol for Collect {
///     fn connection_made(&mut self, t: SubprocessTransport) {
///         self.transport = Some(t);
///     }
///     fn pipe_data_received(&mut self, fd: i32, data: &[u8]) {
///         if fd == 1 {
///             self.out.extend_from_slice(data);
///             if self.out.ends_with(b"? ") {
///                 if let Some(stdin) = self.transport.as_ref().and_then(|t| t.get_pipe_transport(0)) {
///                     let _ = stdin.write(b"yes\n");
///                 }
///             }
///         }
///     }
/// }
/// let _factory = Collect::default;
/// ```
#[doc(alias = "asyncio.SubprocessProtocol")]
pub trait SubprocessProtocol: 'static {
    /// The child runs and its pipes are connected; keep `transport` to
    /// signal the child or reach its pipes.
    #[doc(alias = "BaseProtocol.connection_made")]
    fn connection_made(&mut self, transport: SubprocessTransport) {
        let _ = transport;
    }

    /// The child wrote `data` to its stdout (`fd` 1) or stderr (`fd` 2).
    /// The slice is valid only during the call.
    #[doc(alias = "SubprocessProtocol.pipe_data_received")]
    fn pipe_data_received(&mut self, fd: i32, data: &[u8]) {
        let _ = (fd, data);
    }

    /// One of the pipes closed: `None` at end of file (or a normal close of
    /// stdin), the error otherwise (a child that exits while stdin still
    /// has bytes to write gives [`BrokenPipe`](io::ErrorKind::BrokenPipe)).
    #[doc(alias = "SubprocessProtocol.pipe_connection_lost")]
    fn pipe_connection_lost(&mut self, fd: i32, error: Option<io::Error>) {
        let _ = (fd, error);
    }

    /// The child exited; its return code is in
    /// [`SubprocessTransport::get_returncode`].
    #[doc(alias = "SubprocessProtocol.process_exited")]
    fn process_exited(&mut self) {}

    /// The child's stdin pipe went above its high-water mark.
    #[doc(alias = "BaseProtocol.pause_writing")]
    fn pause_writing(&mut self) {}

    /// The child's stdin pipe drained to its low-water mark.
    #[doc(alias = "BaseProtocol.resume_writing")]
    fn resume_writing(&mut self) {}

    /// The end: the child exited and every pipe closed. Called once, last;
    /// `error` is always `None` (as asyncio's subprocess transports).
    #[doc(alias = "BaseProtocol.connection_lost")]
    fn connection_lost(&mut self, error: Option<io::Error>) {
        let _ = error;
    }
}
