//! The write pipe's buffer (a child module of `pipe`): the bytes of borrowed
//! writes, copied into a [`WriteBuffer`] ring, followed by the buffers of
//! [`Transport::write_owned`](crate::Transport::write_owned), kept as they
//! are (no copy: as uvloop keeps the `bytes` objects it was given).
//!
//! # Invariants
//! - Bytes leave in the order they were written. Every byte in the ring was
//!   written before every byte of an owned segment: while a segment is
//!   queued, a borrowed write is copied into a new segment behind it, and
//!   the ring is used again once the segments are gone.
//! - [`len`](WriteQueue::len) counts the unsent bytes of both parts (what
//!   flow control and `get_write_buffer_size` see).
//! - An owned buffer whose unsent rest is shorter than [`COPY_BELOW`] is
//!   copied into the ring when no segment is queued: small rests coalesce
//!   into one slice of the next write, and no box is kept for them.
//! - A segment is dropped as soon as its last byte is sent.

use std::collections::VecDeque;

use crate::transport::OwnedBuf;
use crate::write_buffer::WriteBuffer;

/// An owned rest shorter than this is copied into the ring.
pub(super) const COPY_BELOW: usize = 4096;

/// At most this many slices go to one vectored write (enough to fill a
/// pipe: each is non-empty, and a pipe takes 64 KiB by default).
pub(super) const MAX_SLICES: usize = 8;

/// The bytes of `buf`.
fn bytes(buf: &OwnedBuf) -> &[u8] {
    AsRef::<[u8]>::as_ref(&**buf)
}

/// One owned buffer and how many of its bytes already went out.
struct Segment {
    buf: OwnedBuf,
    sent: usize,
}

impl Segment {
    fn unsent(&self) -> &[u8] {
        &bytes(&self.buf)[self.sent..]
    }
}

/// See the module docs.
#[derive(Default)]
pub(super) struct WriteQueue {
    ring: WriteBuffer,
    owned: VecDeque<Segment>,
    /// The unsent bytes of `owned`.
    owned_len: usize,
}

impl WriteQueue {
    /// The unsent bytes.
    pub(super) fn len(&self) -> usize {
        self.ring.len() + self.owned_len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues what is left of `chunks` once their first `sent` bytes went
    /// out (copied).
    pub(super) fn extend_unsent(&mut self, chunks: &[&[u8]], sent: usize) {
        if self.owned.is_empty() {
            self.ring.extend_unsent(chunks, sent);
            return;
        }
        let mut rest = WriteBuffer::default();
        rest.extend_unsent(chunks, sent);
        let (a, b) = rest.as_slices();
        if !a.is_empty() {
            self.push_segment(Box::new([a, b].concat()), 0);
        }
    }

    /// Queues `buf` from its byte `sent` on, without copying it (but for a
    /// short rest, see the module docs).
    pub(super) fn push_owned(&mut self, buf: OwnedBuf, sent: usize) {
        let rest = bytes(&buf).len().saturating_sub(sent);
        if rest == 0 {
            return;
        }
        if rest < COPY_BELOW && self.owned.is_empty() {
            self.ring.extend(&bytes(&buf)[sent..]);
            return;
        }
        self.push_segment(buf, sent);
    }

    fn push_segment(&mut self, buf: OwnedBuf, sent: usize) {
        let segment = Segment { buf, sent };
        self.owned_len += segment.unsent().len();
        self.owned.push_back(segment);
    }

    /// Fills `out` with the first unsent slices, in order (each non-empty);
    /// returns how many.
    pub(super) fn slices<'a>(&'a self, out: &mut [&'a [u8]; MAX_SLICES]) -> usize {
        let (a, b) = self.ring.as_slices();
        let owned = self.owned.iter().map(Segment::unsent);
        let mut n = 0;
        for s in [a, b].into_iter().chain(owned) {
            if n == MAX_SLICES {
                break;
            }
            if !s.is_empty() {
                out[n] = s;
                n += 1;
            }
        }
        n
    }

    /// Drops the first `n` unsent bytes (those the kernel took).
    pub(super) fn consume(&mut self, n: usize) {
        let from_ring = n.min(self.ring.len());
        self.ring.consume(from_ring);
        let mut left = n - from_ring;
        while left > 0 {
            let Some(front) = self.owned.front_mut() else {
                break;
            };
            let take = left.min(front.unsent().len());
            front.sent += take;
            self.owned_len -= take;
            left -= take;
            if front.unsent().is_empty() {
                self.owned.pop_front();
            }
        }
    }

    /// Drops everything, allocations included.
    pub(super) fn clear(&mut self) {
        self.ring.clear();
        self.owned.clear();
        self.owned_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;

    fn contents(q: &WriteQueue) -> Vec<u8> {
        let mut out = [&[][..]; MAX_SLICES];
        let n = q.slices(&mut out);
        out[..n].concat()
    }

    #[test]
    fn borrowed_and_owned_bytes_leave_in_write_order() {
        let mut q = WriteQueue::default();
        q.extend_unsent(&[b"ab"], 0);
        let big: Rc<[u8]> = vec![b'x'; COPY_BELOW].into();
        q.push_owned(Box::new(big.clone()), 0);
        q.extend_unsent(&[b"cd", b"ef"], 1);
        q.push_owned(Box::new(b"gh".to_vec()), 0);
        let expected = [&b"ab"[..], &big, b"def", b"gh"].concat();
        assert_eq!(q.len(), expected.len());
        assert_eq!(contents(&q), expected);
        q.consume(3);
        assert_eq!(contents(&q), expected[3..]);
        q.consume(COPY_BELOW);
        assert_eq!(contents(&q), b"efgh");
        q.consume(100);
        assert!(q.is_empty() && contents(&q).is_empty());
        assert_eq!(Rc::strong_count(&big), 1, "a sent segment is dropped");
    }

    #[test]
    fn a_large_owned_rest_is_kept_not_copied_and_a_short_one_is_copied() {
        let mut q = WriteQueue::default();
        let big: Rc<[u8]> = vec![7u8; 3 * COPY_BELOW].into();
        q.push_owned(Box::new(big.clone()), COPY_BELOW);
        assert_eq!(Rc::strong_count(&big), 2, "kept");
        let mut out = [&[][..]; MAX_SLICES];
        assert_eq!(q.slices(&mut out), 1);
        assert_eq!(out[0].as_ptr(), big[COPY_BELOW..].as_ptr(), "not copied");
        q.clear();
        assert_eq!(Rc::strong_count(&big), 1);
        q.push_owned(Box::new(big.clone()), big.len() - 10);
        assert_eq!(Rc::strong_count(&big), 1, "a short rest is copied");
        assert_eq!(contents(&q), [7u8; 10]);
    }

    #[test]
    fn slices_stop_at_the_vectored_write_limit() {
        let mut q = WriteQueue::default();
        for i in 0..(MAX_SLICES + 3) {
            q.push_owned(Box::new(vec![i as u8; COPY_BELOW]), 0);
        }
        let mut out = [&[][..]; MAX_SLICES];
        assert_eq!(q.slices(&mut out), MAX_SLICES);
        assert_eq!(q.len(), (MAX_SLICES + 3) * COPY_BELOW);
        q.consume(COPY_BELOW + 1);
        let mut out = [&[][..]; MAX_SLICES];
        assert_eq!(q.slices(&mut out), MAX_SLICES);
        assert_eq!(out[0], vec![1u8; COPY_BELOW - 1]);
    }
}
