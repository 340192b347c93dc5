//! asyncio's reads of a [`StreamReader`] (a child module of
//! `stream_reader`): `read`, `read_to_end`, `readexactly`, `readuntil`,
//! `readline`. Each checks the reader's exception first, waits for data
//! through [`wait_for_data`](StreamReader::wait_for_data) while it must, and
//! resumes a transport the reader paused once the buffer is down to the
//! limit.

use super::StreamReader;
use crate::streams::error::{LimitOverrunError, StreamError};

impl StreamReader {
    /// Reads up to `n` bytes (asyncio's `read(n)` with `n >= 0`): as soon as
    /// at least one byte is buffered, at most `n` of them; an empty vector at
    /// the end of file, or at once when `n == 0`. Not bounded by the limit.
    #[doc(alias = "StreamReader.read")]
    pub async fn read(&self, n: usize) -> Result<Vec<u8>, StreamError> {
        self.check_exception()?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let must_wait = {
            let inner = self.state();
            inner.buffer.is_empty() && !inner.eof
        };
        if must_wait {
            self.wait_for_data("read").await?;
        }
        Ok(self.take_resuming(n))
    }

    /// Reads until the end of file and returns every byte (asyncio's
    /// `read()` / `read(-1)`): reads of at most the limit each, so a paused
    /// transport is resumed as the buffer drains.
    #[doc(alias = "StreamReader.read")]
    pub async fn read_to_end(&self) -> Result<Vec<u8>, StreamError> {
        self.check_exception()?;
        let limit = self.limit();
        let mut out = Vec::new();
        loop {
            let block = self.read(limit).await?;
            if block.is_empty() {
                return Ok(out);
            }
            if out.is_empty() {
                out = block;
            } else {
                out.extend_from_slice(&block);
            }
        }
    }

    /// Reads exactly `n` bytes (asyncio's `readexactly`). At the end of file
    /// before `n` bytes: [`StreamError::IncompleteRead`] with the bytes read
    /// (taken from the buffer) and `expected: Some(n)`. Not bounded by the
    /// limit.
    #[doc(alias = "StreamReader.readexactly")]
    pub async fn readexactly(&self, n: usize) -> Result<Vec<u8>, StreamError> {
        self.check_exception()?;
        if n == 0 {
            return Ok(Vec::new());
        }
        loop {
            {
                let mut inner = self.state();
                if inner.buffer.len() >= n {
                    break;
                }
                if inner.eof {
                    return Err(inner.incomplete_read(Some(n)));
                }
            }
            self.wait_for_data("readexactly").await?;
        }
        Ok(self.take_resuming(n))
    }

    /// Reads up to and including `separator` (asyncio's `readuntil`).
    ///
    /// - Found within the limit (not counting the separator): the bytes and
    ///   the separator are removed from the buffer and returned.
    /// - End of file first: [`StreamError::IncompleteRead`] with the whole
    ///   buffer (which is emptied; it may end with part of the separator)
    ///   and `expected: None`.
    /// - Not within the limit: [`StreamError::LimitOverrun`]; the data stays
    ///   in the buffer.
    /// - An empty separator: [`StreamError::InvalidArgument`].
    #[doc(alias = "StreamReader.readuntil")]
    pub async fn readuntil(&self, separator: &[u8]) -> Result<Vec<u8>, StreamError> {
        let seplen = separator.len();
        if seplen == 0 {
            return Err(StreamError::InvalidArgument(
                "Separator should be at least one-byte string",
            ));
        }
        self.check_exception()?;
        // Bytes from the start of the buffer known not to hold the
        // separator's start.
        let mut offset = 0;
        let isep = loop {
            {
                let mut inner = self.state();
                let buflen = inner.buffer.len();
                if buflen - offset >= seplen {
                    if let Some(i) = find(&inner.buffer.bytes()[offset..], separator) {
                        break offset + i;
                    }
                    offset = buflen + 1 - seplen;
                    if offset > inner.limit {
                        return Err(StreamError::LimitOverrun(LimitOverrunError {
                            consumed: offset,
                            message: "Separator is not found, and chunk exceed the limit",
                        }));
                    }
                }
                // A complete separator may have come with the last bytes, so
                // the end of file is checked after the search.
                if inner.eof {
                    return Err(inner.incomplete_read(None));
                }
            }
            self.wait_for_data("readuntil").await?;
        };
        if isep > self.limit() {
            return Err(StreamError::LimitOverrun(LimitOverrunError {
                consumed: isep,
                message: "Separator is found, but chunk is longer than limit",
            }));
        }
        Ok(self.take_resuming(isep + seplen))
    }

    /// Reads one line, through its `\n` (asyncio's `readline`). At the end
    /// of file: what is left, without a newline (empty once everything was
    /// read). A line longer than the limit is [`StreamError::LineTooLong`]
    /// and, as asyncio does, it is discarded: through its newline when that
    /// is buffered, else the whole buffer.
    #[doc(alias = "StreamReader.readline")]
    pub async fn readline(&self) -> Result<Vec<u8>, StreamError> {
        match self.readuntil(b"\n").await {
            Ok(line) => Ok(line),
            Err(StreamError::IncompleteRead(e)) => Ok(e.partial),
            Err(StreamError::LimitOverrun(e)) => {
                let resume = {
                    let mut inner = self.state();
                    if inner.buffer.bytes().get(e.consumed) == Some(&b'\n') {
                        inner.buffer.consume(e.consumed + 1);
                    } else {
                        inner.buffer.clear();
                    }
                    inner.maybe_resume()
                };
                Self::resume_if(resume);
                Err(StreamError::LineTooLong(e))
            }
            Err(other) => Err(other),
        }
    }
}

/// The first index of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if let [b] = needle {
        return hay.iter().position(|x| x == b);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}
