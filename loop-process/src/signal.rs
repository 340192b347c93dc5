//! Signal numbers by name, as Python's `signal` module has them, so that
//! `lp.add_signal_handler(SIGINT, ...)` and `process.send_signal(SIGTERM)`
//! need no `libc`. The values are the platform's (`libc`'s).

macro_rules! signals {
    ($($name:ident = $alias:literal: $what:literal,)*) => {
        $(
            #[doc = concat!("`", stringify!($name), "`: ", $what, " (Python's `signal.", stringify!($name), "`).")]
            #[doc(alias = $alias)]
            pub const $name: i32 = libc::$name;
        )*
    };
}

signals! {
    SIGHUP = "signal.SIGHUP": "hang-up of the controlling terminal, or a reload request to a daemon",
    SIGINT = "signal.SIGINT": "interrupt from the keyboard (Ctrl-C)",
    SIGQUIT = "signal.SIGQUIT": "quit from the keyboard (Ctrl-\\)",
    SIGKILL = "signal.SIGKILL": "kill; cannot be caught or ignored (for `send_signal` only)",
    SIGUSR1 = "signal.SIGUSR1": "user-defined signal 1",
    SIGUSR2 = "signal.SIGUSR2": "user-defined signal 2",
    SIGPIPE = "signal.SIGPIPE": "write to a pipe with no reader",
    SIGALRM = "signal.SIGALRM": "timer signal from `alarm`",
    SIGTERM = "signal.SIGTERM": "termination request (what `terminate()` sends)",
    SIGCHLD = "signal.SIGCHLD": "a child stopped or exited",
    SIGCONT = "signal.SIGCONT": "continue if stopped",
    SIGSTOP = "signal.SIGSTOP": "stop the process; cannot be caught or ignored (for `send_signal` only)",
    SIGTSTP = "signal.SIGTSTP": "stop typed at the terminal (Ctrl-Z)",
    SIGWINCH = "signal.SIGWINCH": "the terminal window changed size",
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_numbers_are_the_platforms() {
        assert_eq!(super::SIGINT, rustix::process::Signal::INT.as_raw());
        assert_eq!(super::SIGTERM, rustix::process::Signal::TERM.as_raw());
        assert_eq!(super::SIGUSR1, rustix::process::Signal::USR1.as_raw());
        assert_eq!(super::SIGKILL, 9);
    }
}
