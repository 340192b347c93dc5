//! A recording stream protocol for the crate's unit tests (the read paths'
//! in-use tests of stream/input.rs and pipe/read_pipe.rs share it).

use crate::protocol::{BaseProtocol, Protocol};
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
