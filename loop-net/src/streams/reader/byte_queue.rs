//! The buffer of a [`StreamReader`](super::StreamReader) (a child module
//! of `stream_reader`): a byte queue read from its front.

/// A byte queue that reads from its front without moving the rest each
/// time: the consumed prefix is dropped once it is at least half the
/// storage (amortised O(1) per byte).
#[derive(Default)]
pub(super) struct ByteQueue {
    data: Vec<u8>,
    head: usize,
}

impl ByteQueue {
    pub(super) fn bytes(&self) -> &[u8] {
        &self.data[self.head..]
    }

    pub(super) fn len(&self) -> usize {
        self.data.len() - self.head
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn extend(&mut self, more: &[u8]) {
        self.data.extend_from_slice(more);
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.head += n.min(self.len());
        if self.head == self.data.len() {
            self.data.clear();
            self.head = 0;
        } else if self.head >= 4096 && self.head * 2 >= self.data.len() {
            self.data.drain(..self.head);
            self.head = 0;
        }
    }

    /// Removes and returns the first `n` bytes (fewer if there are fewer).
    pub(super) fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.len());
        if self.head == 0 && n == self.data.len() {
            return std::mem::take(&mut self.data);
        }
        let out = self.data[self.head..self.head + n].to_vec();
        self.consume(n);
        out
    }

    /// Lends the storage (the unread bytes are `storage[head..]`) to be
    /// appended to; the queue is empty until [`restore`](Self::restore).
    pub(super) fn lend(&mut self) -> (Vec<u8>, usize) {
        (
            std::mem::take(&mut self.data),
            std::mem::take(&mut self.head),
        )
    }

    /// Takes back the storage lent by [`lend`](Self::lend), with whatever
    /// was appended to it.
    pub(super) fn restore(&mut self, (data, head): (Vec<u8>, usize)) {
        debug_assert!(self.data.is_empty() && head <= data.len());
        self.data = data;
        self.head = head;
    }

    pub(super) fn clear(&mut self) {
        self.data.clear();
        self.head = 0;
    }
}
