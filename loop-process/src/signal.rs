//! Signal numbers by name, as Python's `signal` module has them, so that
//! `lp.add_signal_handler(SIGINT, ...)` and `process.send_signal(SIGTERM)`
//! need no `libc`. The values are the platform's (`libc`'s).

macro_rules! signals {
    ($($name:ident: $what:literal,)*) => {
        $(
            #[doc = concat!("`", stringify!($name), "`: ", $what, " (Python's `signal.", stringify!($name), "`).")]
            pub const $name: i32 = libc::$name;
        )*
    };
}

signals! {
    SIGHUP: "hang-up of the controlling terminal, or a reload request to a daemon",
    SIGINT: "interrupt from the keyboard (Ctrl-C)",
    SIGQUIT: "quit from the keyboard (Ctrl-\\)",
    SIGKILL: "kill; cannot be caught or ignored (for `send_signal` only)",
    SIGUSR1: "user-defined signal 1",
    SIGUSR2: "user-defined signal 2",
    SIGPIPE: "write to a pipe with no reader",
    SIGALRM: "timer signal from `alarm`",
    SIGTERM: "termination request (what `terminate()` sends)",
    SIGCHLD: "a child stopped or exited",
    SIGCONT: "continue if stopped",
    SIGSTOP: "stop the process; cannot be caught or ignored (for `send_signal` only)",
    SIGTSTP: "stop typed at the terminal (Ctrl-Z)",
    SIGWINCH: "the terminal window changed size",
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
