//! A recording stream protocol for the crate's unit tests (the read paths'
//! in-use tests of stream/input.rs and pipe/read_pipe.rs share it).

use loop_core::EventLoop;

use crate::protocol::{BaseProtocol, Protocol, ProtocolHandle};
use crate::transport::Transport;

/// Records whether `connection_made` ran and every byte received.
#[derive(Default)]
pub(crate) struct Rec {
    pub(crate) made: bool,
    pub(crate) got: Vec<u8>,
}

impl BaseProtocol for Rec {
    fn connection_made(&mut self, _t: Transport) {
        self.made = true;
    }
}

impl Protocol for Rec {
    fn data_received(&mut self, data: &[u8]) {
        self.got.extend_from_slice(data);
    }
}

/// The read paths' in-use check (stream/input.rs, pipe/read_pipe.rs). The
/// loop never dispatches while a protocol is in use; this runs the read
/// path (`ready`) from inside a `with_mut` closure to see what it would do:
/// read nothing, stop watching the fd (`watched`; a level-triggered reader
/// left registered would spin the loop), and read again once it is free.
/// `send` writes to the transport's peer once `connection_made` ran.
pub(crate) fn check_in_use_read(
    lp: &EventLoop,
    h: &ProtocolHandle<Rec>,
    send: impl FnOnce(&[u8]),
    ready: impl Fn(),
    watched: impl Fn() -> bool,
) {
    let h2 = h.clone();
    lp.run_until_complete(async move { h2.wait_until(|p: &Rec| p.made).await })
        .unwrap();
    assert!(watched());
    send(b"hello");
    h.with_mut(|p| {
        ready();
        assert!(p.got.is_empty(), "re-entered");
        assert!(!watched(), "still watched while in use");
    });
    assert!(watched(), "not watched again once free");
    let h2 = h.clone();
    let got = lp
        .run_until_complete(async move {
            h2.wait_until(|p: &Rec| (p.got.len() >= 5).then(|| p.got.clone()))
                .await
        })
        .unwrap();
    assert_eq!(got, b"hello");
}
