//! The provided-buffer rings of the io_uring backend: where the kernel puts
//! the bytes of the multishot receives (streams.rs; the datagrams have a
//! ring of their own, group 1, with larger buffers: datagrams.rs says why).
//! What follows describes the streams' ring; the datagrams' keeps the same
//! rules.
//!
//! # Layout
//! Two anonymous private mappings, made once per loop (at its first
//! completion stream) and unmapped when the last [`BufRing`] `Rc` goes:
//! the ring of [`COUNT`] 16-byte entries (`struct io_uring_buf`, the
//! ring's tail overlaid on entry 0's reserved field, as the kernel
//! defines it) and [`COUNT`] buffers of [`BUF_SIZE`] bytes each (1 MiB).
//! Untouched pages of an anonymous mapping take no memory, so a loop whose
//! reads are small pays for the first pages of each buffer only.
//!
//! # Ownership of a buffer (the safety argument)
//! A buffer is either *in the ring* (between the kernel's private head and
//! our tail: the kernel may pick it and write into it at any time) or
//! *ours* (picked by the kernel for one receive, named by the `bid` of that
//! receive's completion, and not given back yet). Only an *ours* buffer is
//! ever read here ([`slice`](BufRing::slice)), and only between its
//! completion and [`give_back`](BufRing::give_back), which writes its entry
//! at the tail and publishes the tail with release ordering (the kernel
//! reads the tail with acquire ordering before it reads the entry). Each
//! `bid` is given back exactly once per completion that named it, so the
//! ring never holds an entry twice (it has room for all [`COUNT`]).
//! The mappings outlive every kernel reference: the reactor unregisters
//! nothing and keeps its `Rc` until after the ring itself is dropped, and
//! the loop's close waits for the final completion of every receive
//! before it drops the ring (streams.rs); should that wait time out, the
//! mappings are leaked rather than unmapped.

use std::cell::Cell;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;
use rustix::mm::{MapFlags, ProtFlags};

/// The bytes one receive may take: one buffer (uvloop and the readiness
/// path read 64 KiB at a time too; a smaller buffer splits a large message
/// over several completions, each echoed by its own send).
pub(crate) const BUF_SIZE: usize = 64 * 1024;
/// Buffers in the ring (a power of two). The kernel takes them in ring
/// order, so every buffer of the ring is written in turn: their total (1
/// MiB here) is the receive path's cache footprint. With 64 buffers (4 MiB)
/// a 64 KiB echo cost ~15% more server CPU per message than epoll's one
/// reused buffer; with 16 it costs the same (`cargo xtask bench net`,
/// 64k_x10). A receive that finds no buffer ends with `ENOBUFS` and is
/// re-armed by the next wait, after step 4 gave back the buffers it
/// delivered (every buffer goes back within the iteration that got it), so
/// more streams than buffers only means some wait an iteration.
pub(crate) const COUNT: u16 = 16;
/// The buffer group id of a loop's ring (one ring per io_uring instance).
pub(crate) const GROUP: u16 = 0;

/// The provided-buffer ring (see the module docs).
pub(crate) struct BufRing {
    entries: NonNull<BufRingEntry>,
    entries_len: usize,
    bufs: NonNull<u8>,
    bufs_len: usize,
    /// The buffers' size ([`BUF_SIZE`] for the streams' ring).
    size: usize,
    /// The number of buffers (a power of two).
    count: u16,
    /// Our copy of the tail (the kernel's copy is in entry 0).
    tail: Cell<u16>,
}

impl BufRing {
    /// Maps the ring and its buffers, fills the ring and registers it with
    /// `ring` as group [`GROUP`].
    pub(crate) fn register(ring: &IoUring) -> io::Result<BufRing> {
        BufRing::register_group(ring, GROUP, COUNT, BUF_SIZE)
    }

    /// [`register`](Self::register) for another group: `count` buffers (a
    /// power of two) of `size` bytes (the datagrams' ring,
    /// uring/datagrams.rs).
    pub(crate) fn register_group(
        ring: &IoUring,
        group: u16,
        count: u16,
        size: usize,
    ) -> io::Result<BufRing> {
        debug_assert!(count.is_power_of_two() && size <= u32::MAX as usize);
        let entries_len = usize::from(count) * std::mem::size_of::<BufRingEntry>();
        let bufs_len = usize::from(count) * size;
        let entries = map(entries_len)?;
        let bufs = match map(bufs_len) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: `entries` was mapped just above with this length
                // and nothing refers to it.
                unsafe { unmap(entries, entries_len) };
                return Err(e);
            }
        };
        let me = BufRing {
            entries: entries.cast(),
            entries_len,
            bufs,
            bufs_len,
            size,
            count,
            tail: Cell::new(0),
        };
        for bid in 0..count {
            me.push(bid);
        }
        me.publish();
        // SAFETY: the ring's memory is page-aligned (a fresh mapping), holds
        // `count` entries, and lives until the last `Rc<BufRing>` drops,
        // which the reactor keeps until after `ring` is dropped (see the
        // module docs): it stays valid as long as the registration.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                me.entries.as_ptr() as u64,
                count,
                group,
                0,
            )?;
        }
        Ok(me)
    }

    /// The first `len` bytes of buffer `bid`, which a completion just
    /// handed us. The caller keeps to the module's rule: `bid` is ours (not
    /// given back) for as long as the slice lives.
    pub(crate) fn slice(&self, bid: u16, len: usize) -> &[u8] {
        assert!(
            bid < self.count && len <= self.size,
            "bad buffer {bid}/{len}"
        );
        // SAFETY: in bounds (checked above) of a mapping that lives as long
        // as `self`; the kernel does not write into a buffer that is not in
        // the ring (the caller's rule), so nothing mutates these bytes
        // while the shared slice lives.
        unsafe {
            std::slice::from_raw_parts(self.bufs.as_ptr().add(usize::from(bid) * self.size), len)
        }
    }

    /// Puts buffer `bid` back into the ring for the kernel to fill again.
    pub(crate) fn give_back(&self, bid: u16) {
        debug_assert!(bid < self.count);
        self.push(bid);
        self.publish();
    }

    /// Writes `bid`'s entry at the tail (not yet visible to the kernel).
    fn push(&self, bid: u16) {
        let tail = self.tail.get();
        let index = usize::from(tail & (self.count - 1));
        // SAFETY: `index < count`, within the entries mapping; the entry at
        // the tail is not between the kernel's head and the published tail
        // (the ring holds at most `count` buffers and this one was not in it),
        // so the kernel does not read it until `publish`.
        unsafe {
            let entry = &mut *self.entries.as_ptr().add(index);
            entry.set_addr(self.bufs.as_ptr().add(usize::from(bid) * self.size) as u64);
            entry.set_len(self.size as u32);
            entry.set_bid(bid);
        }
        self.tail.set(tail.wrapping_add(1));
    }

    /// Publishes the tail with release ordering: the entries written before
    /// are visible to the kernel once it sees the new tail.
    fn publish(&self) {
        // SAFETY: `BufRingEntry::tail` gives the address of the tail field
        // overlaid on entry 0, inside the mapping; it is 2-byte aligned and
        // the kernel accesses it atomically, so an `AtomicU16` view is sound.
        unsafe {
            let tail = BufRingEntry::tail(self.entries.as_ptr()) as *const AtomicU16;
            (*tail).store(self.tail.get(), Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both mappings were made in `register` with these lengths;
        // the kernel no longer refers to them (module docs: the ring was
        // dropped and every receive ended before the last `Rc` went).
        unsafe {
            unmap(self.entries.cast(), self.entries_len);
            unmap(self.bufs, self.bufs_len);
        }
    }
}

fn map(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: a fresh anonymous private mapping at an address the kernel
    // chooses: it aliases nothing.
    let p = unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )?
    };
    NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// # Safety
/// `p` and `len` are a mapping made by [`map`] that nothing refers to.
unsafe fn unmap(p: NonNull<u8>, len: usize) {
    // SAFETY: the caller's contract.
    let _ = unsafe { rustix::mm::munmap(p.as_ptr().cast(), len) };
}
