//! The protocol that feeds a [`StreamReader`] straight from a transport's
//! reads ([`StreamReader::feed_directly_from`]), a child module of
//! `stream_reader`.
//!
//! It is a [`BufferedProtocol`] whose
//! [`get_vec_buffer`](BufferedProtocol::get_vec_buffer) lends the reader's
//! own storage: the transport appends its read to it, and
//! `buffer_updated` (which the transport always calls after
//! `get_vec_buffer`, 0 when nothing was read) gives it back to the reader
//! with `feed_data`'s bookkeeping. Only the read syscall runs in between,
//! so nobody sees the reader without its bytes. A transport that uses
//! `get_buffer` instead gets a scratch buffer, copied as `feed_data`
//! copies. The end of the stream is the reader's too, as asyncio's
//! `StreamReaderProtocol` gives it: `feed_eof` at `eof_received` and at
//! `connection_lost(None)`, `set_exception` at `connection_lost(Some(e))`
//! (the reader takes a second `feed_eof` as the first). Everything is also
//! handed on to the protocol it replaced (`next`): `connection_made`,
//! `connection_lost`, `eof_received`, the write notices.

use std::io;

use super::StreamReader;
use crate::protocol::{AnyProtocol, BaseProtocol, BufferedProtocol};
use crate::streams::error::clone_io_error;
use crate::transport::Transport;

pub(super) struct DirectFeed {
    reader: StreamReader,
    /// The reader's storage while a read appends to it.
    lent: Option<(Vec<u8>, usize)>,
    /// What `get_buffer` hands out (transports that do not honour
    /// `get_vec_buffer`).
    scratch: Vec<u8>,
    next: AnyProtocol,
}

impl DirectFeed {
    pub(super) fn new(reader: StreamReader, next: AnyProtocol) -> DirectFeed {
        DirectFeed {
            reader,
            lent: None,
            scratch: Vec::new(),
            next,
        }
    }
}

impl BaseProtocol for DirectFeed {
    fn connection_made(&mut self, transport: Transport) {
        self.next.try_base(|p| p.connection_made(transport));
    }

    fn connection_lost(&mut self, error: Option<io::Error>) {
        match &error {
            None => self.reader.feed_eof(),
            Some(e) => self.reader.set_exception(clone_io_error(e)),
        }
        self.next.try_base(|p| p.connection_lost(error));
    }

    fn pause_writing(&mut self) {
        self.next.try_base(|p| p.pause_writing());
    }

    fn resume_writing(&mut self) {
        self.next.try_base(|p| p.resume_writing());
    }
}

impl BufferedProtocol for DirectFeed {
    fn get_buffer(&mut self, size_hint: usize) -> &mut [u8] {
        self.scratch.resize(size_hint.max(1), 0);
        &mut self.scratch
    }

    fn buffer_updated(&mut self, n: usize) {
        match self.lent.take() {
            Some(storage) => self.reader.restore_storage(storage, n),
            None => {
                // Refused only after feed_eof, which no read follows.
                let _ = self.reader.feed_data(&self.scratch[..n]);
            }
        }
    }

    fn get_vec_buffer(&mut self, _size_hint: usize) -> Option<&mut Vec<u8>> {
        if let Some(storage) = self.lent.take() {
            // A read that never reported back (it cannot happen: the
            // transport always calls buffer_updated); give it back first.
            self.reader.restore_storage(storage, 0);
        }
        let lent = self.lent.insert(self.reader.lend_storage());
        Some(&mut lent.0)
    }

    fn eof_received(&mut self) -> bool {
        self.reader.feed_eof();
        self.next.try_eof_received().unwrap_or(false)
    }
}
