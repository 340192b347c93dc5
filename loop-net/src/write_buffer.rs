//! The write buffer of a stream transport, and its water marks.
//!
//! # Invariants
//! - Bytes leave in the order they were written; `len()` is the number of
//!   bytes written by the user and not yet accepted by the kernel (asyncio's
//!   `get_write_buffer_size()`: user-space bytes only, not the kernel's
//!   socket buffer).
//! - The buffer is a ring (`VecDeque<u8>`): appending copies the bytes in
//!   once (the transport writes to the socket first and buffers only the
//!   remainder), sending advances the head, and nothing is ever moved
//!   inside the buffer. [`send_to`](WriteBuffer::send_to) sends both
//!   contiguous parts of a wrapped ring with one vectored call. No allocation per write
//!   once the buffer has grown; a large allocation is given back when the
//!   buffer empties.

/// asyncio's default high-water mark: 64 KiB.
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024;

#[derive(Debug, Default)]
pub(crate) struct WriteBuffer {
    data: std::collections::VecDeque<u8>,
}

impl WriteBuffer {
    /// The buffered bytes.
    pub(crate) fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether nothing is buffered.
    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Appends `bytes` (one copy).
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.data.extend(bytes);
    }

    /// Appends what is left of `chunks` once their first `sent` bytes went
    /// out (write first, buffer only the rest).
    pub(crate) fn extend_unsent<B: std::ops::Deref<Target = [u8]>>(
        &mut self,
        chunks: &[B],
        mut sent: usize,
    ) {
        for c in chunks {
            if sent >= c.len() {
                sent -= c.len();
                continue;
            }
            self.extend(&c[sent..]);
            sent = 0;
        }
    }

    /// The first contiguous part of the buffered bytes (all of them unless
    /// the ring wraps).
    #[cfg(test)]
    pub(crate) fn as_slice(&self) -> &[u8] {
        self.data.as_slices().0
    }

    /// Both contiguous parts, in order, for a vectored write.
    pub(crate) fn as_slices(&self) -> (&[u8], &[u8]) {
        self.data.as_slices()
    }

    /// Sends the buffered bytes to the stream socket `fd` (without
    /// SIGPIPE), as many as it takes now, both parts of a wrapped ring in
    /// one vectored call; the caller `consume`s them.
    pub(crate) fn send_to(&self, fd: std::os::fd::BorrowedFd<'_>) -> rustix::io::Result<usize> {
        use rustix::net::SendFlags;
        match self.data.as_slices() {
            (front, []) => rustix::net::send(fd, front, SendFlags::NOSIGNAL),
            (front, back) => rustix::net::sendmsg(
                fd,
                &[std::io::IoSlice::new(front), std::io::IoSlice::new(back)],
                &mut rustix::net::SendAncillaryBuffer::default(),
                SendFlags::NOSIGNAL,
            ),
        }
    }

    /// Sends what is buffered with `send` (given the buffer); `Ok(0)`
    /// without calling it when nothing is.
    pub(crate) fn send_pending<E>(
        &self,
        send: impl FnOnce(&Self) -> Result<usize, E>,
    ) -> Result<usize, E> {
        if self.is_empty() {
            Ok(0)
        } else {
            send(self)
        }
    }

    /// Drops the first `n` bytes (those the kernel accepted).
    pub(crate) fn consume(&mut self, n: usize) {
        let n = n.min(self.len());
        self.data.drain(..n);
        if self.data.is_empty() && self.data.capacity() > 4 * DEFAULT_HIGH_WATER {
            // Keep a modest allocation; give back a large one.
            self.data = std::collections::VecDeque::new();
        }
    }

    /// Drops everything and the allocation.
    pub(crate) fn clear(&mut self) {
        self.data = std::collections::VecDeque::new();
    }
}

/// High- and low-water marks of a write buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteBufferLimits {
    /// Above this many buffered bytes the protocol gets `pause_writing`.
    pub high: usize,
    /// At or below this many the protocol gets `resume_writing`.
    pub low: usize,
}

impl Default for WriteBufferLimits {
    fn default() -> Self {
        WriteBufferLimits {
            high: DEFAULT_HIGH_WATER,
            low: DEFAULT_HIGH_WATER / 4,
        }
    }
}

impl WriteBufferLimits {
    /// asyncio's rules for `set_write_buffer_limits(high, low)`: a missing
    /// `high` is 64 KiB, or 4 × `low` when `low` is given; a missing `low` is
    /// `high / 4`. `high` must not be below `low`.
    pub fn new(high: Option<usize>, low: Option<usize>) -> Result<Self, String> {
        let high = match (high, low) {
            (Some(h), _) => h,
            (None, Some(l)) => l.saturating_mul(4),
            (None, None) => DEFAULT_HIGH_WATER,
        };
        let low = low.unwrap_or(high / 4);
        if high < low {
            return Err(format!("high ({high}) must be >= low ({low}) must be >= 0"));
        }
        Ok(WriteBufferLimits { high, low })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(b: &WriteBuffer) -> Vec<u8> {
        let (x, y) = b.as_slices();
        [x, y].concat()
    }

    #[test]
    fn bytes_leave_in_order() {
        let mut b = WriteBuffer::default();
        b.extend(b"hello ");
        b.extend(b"world");
        assert_eq!(b.len(), 11);
        b.consume(3);
        assert_eq!(contents(&b), b"lo world");
        b.consume(5);
        assert_eq!(contents(&b), b"rld");
        b.consume(10);
        assert!(b.is_empty());
    }

    #[test]
    fn the_ring_wraps_without_losing_order() {
        let mut b = WriteBuffer::default();
        let mut expected = std::collections::VecDeque::new();
        for round in 0..200u32 {
            let chunk: Vec<u8> = (0..(round % 37 + 1)).map(|i| (round + i) as u8).collect();
            b.extend(&chunk);
            expected.extend(chunk.iter().copied());
            let n = (round as usize * 7) % (b.len() + 1);
            b.consume(n);
            expected.drain(..n);
            assert_eq!(contents(&b), expected.iter().copied().collect::<Vec<_>>());
            assert!(b.as_slice().len() <= b.len());
            assert_eq!(b.as_slice().is_empty(), b.is_empty());
        }
    }

    #[test]
    fn only_what_was_not_sent_is_buffered() {
        let mut b = WriteBuffer::default();
        b.extend_unsent(&[&b"abc"[..], b"", b"defg"], 4);
        assert_eq!(b.as_slice(), b"efg");
        b.extend_unsent(&[&b"xy"[..]], 2);
        assert_eq!(b.as_slice(), b"efg", "all sent: nothing buffered");
        b.extend_unsent(&[std::io::IoSlice::new(b"hi")], 0);
        assert_eq!(b.as_slice(), b"efghi");
    }

    #[test]
    fn a_wrapped_ring_is_sent_whole_in_one_call() {
        use std::io::Read;
        use std::os::fd::AsFd;
        let (ours, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut b = WriteBuffer::default();
        // Make the ring wrap: fill, consume the front, append again.
        b.extend(&[1u8; 100]);
        b.consume(90);
        b.extend(&vec![2u8; b.data.capacity() - 20]);
        let (front, back) = b.as_slices();
        assert!(!front.is_empty() && !back.is_empty(), "the ring wraps");
        let expected = contents(&b);
        let n = b.send_to(ours.as_fd()).unwrap();
        assert_eq!(n, expected.len(), "one call sends both parts");
        let mut got = vec![0u8; n];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(got, expected);
    }

    #[test]
    fn limits_follow_asyncio() {
        assert_eq!(
            WriteBufferLimits::new(None, None).unwrap(),
            WriteBufferLimits {
                high: 65536,
                low: 16384
            }
        );
        assert_eq!(
            WriteBufferLimits::new(None, Some(100)).unwrap(),
            WriteBufferLimits {
                high: 400,
                low: 100
            }
        );
        assert_eq!(
            WriteBufferLimits::new(Some(1000), None).unwrap(),
            WriteBufferLimits {
                high: 1000,
                low: 250
            }
        );
        assert_eq!(
            WriteBufferLimits::new(Some(0), None).unwrap(),
            WriteBufferLimits { high: 0, low: 0 }
        );
        assert!(WriteBufferLimits::new(Some(10), Some(20)).is_err());
    }
}
