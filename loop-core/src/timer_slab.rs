//! The timer slab: a loop's timer callbacks, in fixed-size slots carved from
//! large chunks (issue 16).
//!
//! # Why
//! A timer used to cost three allocations' worth of fresh memory: a 48-byte
//! `Rc` cell from `malloc`, a 40-byte `TimerHandle` and a 32-byte heap entry.
//! Scheduling a million timers spent ~190 instructions per timer in glibc's
//! `malloc` (every chunk split off the top) and ~50 ns in page faults.
//! Here a timer is one 64-byte [`Slot`], taken from a free list or bumped off
//! the current chunk (a few instructions), a thin [`SlotRef`] in the user's
//! [`TimerHandle`](crate::TimerHandle) (8 bytes) and a 24-byte heap entry
//! (`timers.rs`).
//!
//! # Layout
//! - A **slot** (64 bytes, one cache line) holds the state word (flags and
//!   the heap's sequence number), the reference count, the deadline, the
//!   scheduling site, and the closure: inline when it fits
//!   ([`INLINE_BYTES`] = 16, alignment at most 8: two `Rc`s, say), else a
//!   `Box` of it, behind a per-type table of two functions (call, drop).
//!   80-byte slots with 32 bytes inline were measured too: the `timers`
//!   case (24-byte closures, boxed here) ran 23% fewer instructions, but
//!   `timer_cancel` (8-byte closures) took ~10 ns more per timer (16 MB
//!   more memory to fault in and to sweep three times per million timers),
//!   and the boxed path costs what the `Rc` cell cost before.
//! - Slots live in **segments** of [`SEGMENT_BYTES`], aligned to their size;
//!   the first slot of each segment holds the segment's header instead: a
//!   pointer to the slab's shared state. So a slot finds its slab by masking
//!   its own address, and needs no pointer of its own.
//! - Segments come in **chunks** that double from one segment up to
//!   [`HUGE_CHUNK`] (2 MiB). On Linux the 2 MiB chunks are mapped with
//!   `mmap`, aligned to 2 MiB and advised `MADV_HUGEPAGE` (our own mapping,
//!   unmapped when the slab goes): where transparent huge pages are enabled
//!   (`always` or `madvise`), a million timers fault in ~30 huge pages
//!   instead of ~16,000 small ones. Smaller chunks (and every chunk
//!   elsewhere) come from the global allocator.
//! - Freed slots go on a free list (its link stored in the free slot's
//!   payload) and are reused first, most recently freed first. Chunks are
//!   not given back while the loop lives: a loop keeps the slots of its
//!   largest number of timers pending at once (64 bytes each), and reuses
//!   them; schedule/cancel churn does not grow it.
//!
//! # Measured (`bench-core --case timer_cancel`: 1,000,000 timers 1-10 s
//! out, all cancelled, then one iteration; pinned, interleaved runs,
//! medians of 11-15, on a 2-CPU VM with THP in `madvise` mode, shared with
//! other builds and benchmarks)
//! - ns per timer, before the slab / with it / with it but no huge-page
//!   advice / tokio: 156 / 84 / 113 / 586 in a quiet spell, 190 / 104 /
//!   122 / 647 with another benchmark running.
//! - Instructions (callgrind, 100,000 timers, the whole run): 877 -> 341
//!   per timer. Page faults per run: 33,300 -> 10,400 (25,600 without the
//!   advice); what is left is the heap's array and the caller's handles.
//!
//! The advice matters only past ~32,000 pending timers (the first 2 MiB
//! chunk), so small loops never pay a huge page's first-touch cost (zeroing
//! 2 MiB, or a compaction where the kernel's `defrag` setting asks for
//! one). In alternating runs the advised slab was faster in 13 of 15 pairs.
//!
//! # Invariants (the safety argument)
//! - **A slot is reached only through a [`SlotRef`]**, which counts: the
//!   heap entry, each `TimerHandle` (and its clones), the ready-queue entry
//!   of a due timer, and the thread-safe timers' map hold one each. A slot is
//!   written whole when it is handed out (count 1) and goes back to the free
//!   list only when its count drops to zero, so no `SlotRef` ever points at a
//!   free or reused slot.
//! - **The closure is present iff the state has `PAYLOAD`.** The flag is
//!   cleared *before* the closure is moved out to be called (`run`) or
//!   dropped (`cancel`, the last reference going): user code that runs in
//!   the call or the drop (and may cancel this timer, drop its handles,
//!   schedule or cancel others, or panic) never sees a closure that is
//!   being consumed, and the closure is consumed at most once.
//! - **The slab's memory lives while any slot is in use.** The loop owns the
//!   slab ([`Slab`]); dropping it only marks the shared state unowned. The
//!   chunks and the shared state are freed when the slab is unowned *and*
//!   no slot is in use, by whichever comes last: the loop's drop or the
//!   release of the last slot (a `TimerHandle` kept after the loop is gone).
//!   So every `SlotRef`, and the segment header it reaches, stays valid.
//! - **No `&mut` to shared state.** Slots and the shared state are read and
//!   written through `&` and `Cell`s only, never while user code holds a
//!   reference into them; user code (a closure's call or drop) runs with no
//!   borrow of the slab's free list or bump pointer outstanding. All of this
//!   is `!Send`: a slab belongs to its loop's thread.

use std::alloc::{self, Layout};
use std::cell::{Cell, RefCell, UnsafeCell};
use std::marker::PhantomData;
use std::mem::{self, MaybeUninit};
use std::panic::Location;
use std::ptr::{self, NonNull};
use std::time::Instant;

/// The size (and alignment) of a slot.
pub(crate) const SLOT_BYTES: usize = 64;

/// The size and alignment of a segment; its first slot is its header.
pub(crate) const SEGMENT_BYTES: usize = 16 * 1024;

/// Slots per segment, its header included (what is left at its end, less
/// than a slot, stays unused).
const SLOTS_PER_SEGMENT: usize = SEGMENT_BYTES / SLOT_BYTES;

/// The largest chunk, mapped for huge pages on Linux.
pub(crate) const HUGE_CHUNK: usize = 2 * 1024 * 1024;

/// The largest closure stored in the slot itself; larger ones are boxed.
pub(crate) const INLINE_BYTES: usize = 16;

/// `cancel` was called.
const CANCELLED: u64 = 1;
/// The slot is referenced by the timer heap: cancelling it is counted in the
/// slab's `cancelled_in_heap`.
const IN_HEAP: u64 = 2;
/// The closure is present (neither run nor dropped).
const PAYLOAD: u64 = 4;
/// The heap's sequence number sits above the flags.
const SEQ_SHIFT: u32 = 3;

/// The two things the loop does with a stored closure of one type.
struct PayloadVTable {
    /// Moves the closure out of the payload and calls it.
    call: unsafe fn(*mut u8),
    /// Drops the closure in place.
    drop: unsafe fn(*mut u8),
}

/// The table of a stored type `S` (the closure, or a `Box` of it).
struct VTableOf<S>(PhantomData<S>);

impl<S: FnOnce()> VTableOf<S> {
    const VTABLE: PayloadVTable = PayloadVTable {
        call: call_payload::<S>,
        drop: drop_payload::<S>,
    };
}

/// # Safety
/// `p` points at a live, properly aligned `S` that nothing uses afterwards.
unsafe fn call_payload<S: FnOnce()>(p: *mut u8) {
    // SAFETY: per the contract, `p` holds an `S` that is moved out here once.
    let f = unsafe { p.cast::<S>().read() };
    f();
}

/// # Safety
/// As [`call_payload`].
unsafe fn drop_payload<S>(p: *mut u8) {
    // SAFETY: per the contract, `p` holds an `S` that is dropped here once.
    unsafe { ptr::drop_in_place(p.cast::<S>()) }
}

/// Whether a closure of type `F` is stored in the slot itself.
const fn fits_inline<F>() -> bool {
    mem::size_of::<F>() <= INLINE_BYTES && mem::align_of::<F>() <= mem::align_of::<usize>()
}

/// One timer: see the module docs for the layout.
#[repr(C, align(64))]
pub(crate) struct Slot {
    /// Flags and the sequence number above [`SEQ_SHIFT`].
    state: Cell<u64>,
    refs: Cell<u32>,
    vtable: &'static PayloadVTable,
    location: &'static Location<'static>,
    when: Instant,
    /// The closure, a `Box` of it, or (in a free slot) the free list's link.
    payload: UnsafeCell<MaybeUninit<[usize; INLINE_BYTES / mem::size_of::<usize>()]>>,
}

const _: () = assert!(mem::size_of::<Slot>() == SLOT_BYTES);
const _: () = assert!(SEGMENT_BYTES.is_power_of_two() && SEGMENT_BYTES >= 64 * SLOT_BYTES);
const _: () = assert!(HUGE_CHUNK % SEGMENT_BYTES == 0);
const _: () = assert!(mem::size_of::<SegmentHeader>() <= SLOT_BYTES);

impl Slot {
    #[inline]
    fn payload_ptr(&self) -> *mut u8 {
        self.payload.get().cast()
    }

    /// Runs the closure unless it was cancelled or already ran.
    #[inline]
    pub(crate) fn run(&self) {
        let s = self.state.get();
        if s & PAYLOAD == 0 {
            return;
        }
        self.state.set(s & !PAYLOAD);
        // SAFETY: `PAYLOAD` was set, so the payload holds the closure of
        // `vtable`'s type; clearing the flag first means it is moved out once.
        unsafe { (self.vtable.call)(self.payload_ptr()) }
    }

    #[inline]
    pub(crate) fn is_cancelled(&self) -> bool {
        self.state.get() & CANCELLED != 0
    }

    /// Marks the slot as held by the heap with sequence number `seq` (below
    /// 2^61).
    #[inline]
    pub(crate) fn enter_heap(&self, seq: u64) {
        let low = self.state.get() & ((1 << SEQ_SHIFT) - 1);
        self.state.set(seq << SEQ_SHIFT | low | IN_HEAP);
    }

    #[inline]
    pub(crate) fn leave_heap(&self) {
        self.state.set(self.state.get() & !IN_HEAP);
    }

    #[inline]
    pub(crate) fn seq(&self) -> u64 {
        self.state.get() >> SEQ_SHIFT
    }

    #[inline]
    pub(crate) fn when(&self) -> Instant {
        self.when
    }

    pub(crate) fn location(&self) -> &'static Location<'static> {
        self.location
    }
}

/// The slab of the slot at `p`, read from its segment's header.
///
/// # Safety
/// `p` is a slot in use (its segment's header is written and its slab live).
#[inline]
unsafe fn slab_of(p: NonNull<Slot>) -> *const SlabShared {
    let p = p.as_ptr().cast::<u8>();
    let header = p
        .wrapping_sub(p.addr() & (SEGMENT_BYTES - 1))
        .cast::<SegmentHeader>();
    // SAFETY: a slot lives in a segment whose first bytes are its header,
    // written before any of its slots was handed out; the pointer keeps the
    // chunk's provenance (it comes from the chunk's base by offsets).
    unsafe { (*header).slab }
}

/// The first slot of every segment: which slab the segment belongs to.
#[repr(C)]
struct SegmentHeader {
    slab: *const SlabShared,
}

/// A chunk of segments and how to give it back.
struct Chunk {
    base: NonNull<u8>,
    bytes: usize,
    /// Mapped with `mmap` (else from the global allocator).
    mapped: bool,
}

/// The slab's state, shared by the loop's [`Slab`] and every slot.
pub(crate) struct SlabShared {
    /// The most recently freed slot (null: none).
    free: Cell<*mut Slot>,
    /// The next never-used slot of the current segment.
    bump: Cell<*mut Slot>,
    /// The end of the current segment.
    segment_end: Cell<*mut Slot>,
    /// The end of the current chunk.
    chunk_end: Cell<*mut u8>,
    chunks: RefCell<Vec<Chunk>>,
    next_chunk_bytes: Cell<usize>,
    /// Slots handed out and not yet freed.
    live: Cell<usize>,
    /// The loop still holds the slab.
    owned: Cell<bool>,
    /// Cancelled slots still held by the heap (the heap's purge rule).
    pub(crate) cancelled_in_heap: Cell<usize>,
    /// This state's own address, as the box was leaked (what segment
    /// headers hold, and what `destroy` frees).
    this: Cell<*const SlabShared>,
}

impl SlabShared {
    /// Stores `f` in a fresh slot; the returned reference is its only one.
    #[inline]
    pub(crate) fn insert<F: FnOnce() + 'static>(
        &self,
        when: Instant,
        location: &'static Location<'static>,
        f: F,
    ) -> SlotRef {
        let p = self.alloc();
        let vtable: &'static PayloadVTable = if fits_inline::<F>() {
            &VTableOf::<F>::VTABLE
        } else {
            &VTableOf::<Box<F>>::VTABLE
        };
        // SAFETY: `alloc` hands out a slot that no `SlotRef` points at, in a
        // segment of a live chunk, aligned to 64; it is written whole here,
        // then its payload gets the closure matching `vtable` (inline only if
        // it fits the payload's size and alignment).
        unsafe {
            p.as_ptr().write(Slot {
                state: Cell::new(PAYLOAD),
                refs: Cell::new(1),
                vtable,
                location,
                when,
                payload: UnsafeCell::new(MaybeUninit::uninit()),
            });
            let payload = p.as_ref().payload_ptr();
            if fits_inline::<F>() {
                payload.cast::<F>().write(f);
            } else {
                payload.cast::<Box<F>>().write(Box::new(f));
            }
        }
        SlotRef { ptr: p }
    }

    /// A slot to write: the free list's head, else the next one bumped off
    /// the current segment.
    #[inline]
    fn alloc(&self) -> NonNull<Slot> {
        self.live.set(self.live.get() + 1);
        let head = self.free.get();
        if let Some(p) = NonNull::new(head) {
            // SAFETY: a free slot's payload holds the next free slot.
            self.free.set(unsafe { read_link(p) });
            return p;
        }
        let b = self.bump.get();
        if b != self.segment_end.get() {
            self.bump.set(b.wrapping_add(1));
            // SAFETY: `b` is below the current segment's end, so in a chunk.
            return unsafe { NonNull::new_unchecked(b) };
        }
        self.alloc_slow()
    }

    /// Starts the next segment, in the current chunk or a new one.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self) -> NonNull<Slot> {
        // The next segment starts at the first segment boundary at or after
        // the current segment's last slot.
        let end = self.segment_end.get().cast::<u8>();
        let mut segment = end.wrapping_add(end.addr().wrapping_neg() & (SEGMENT_BYTES - 1));
        if end.is_null() || segment == self.chunk_end.get() {
            segment = self.new_chunk();
        }
        let header = segment.cast::<SegmentHeader>();
        // SAFETY: `segment` is the start of an unused segment of a live
        // chunk, aligned to `SEGMENT_BYTES`; its first slot is the header.
        unsafe {
            header.write(SegmentHeader {
                slab: self.this.get(),
            });
            let first = segment.add(SLOT_BYTES).cast::<Slot>();
            self.bump.set(first.add(1));
            self.segment_end
                .set(segment.add(SLOTS_PER_SEGMENT * SLOT_BYTES).cast());
            NonNull::new_unchecked(first)
        }
    }

    /// Allocates the next chunk; returns its start.
    fn new_chunk(&self) -> *mut u8 {
        let bytes = self.next_chunk_bytes.get();
        self.next_chunk_bytes.set((bytes * 2).min(HUGE_CHUNK));
        let chunk = match map_huge(bytes) {
            Some(base) => Chunk {
                base,
                bytes,
                mapped: true,
            },
            None => {
                let layout = chunk_layout(bytes);
                // SAFETY: the layout's size is not zero.
                let base = unsafe { alloc::alloc(layout) };
                let Some(base) = NonNull::new(base) else {
                    alloc::handle_alloc_error(layout)
                };
                Chunk {
                    base,
                    bytes,
                    mapped: false,
                }
            }
        };
        let base = chunk.base.as_ptr();
        // SAFETY: the chunk is `bytes` long.
        self.chunk_end.set(unsafe { base.add(bytes) });
        self.chunks.borrow_mut().push(chunk);
        base
    }

    /// Returns `p` to the free list; frees the whole slab if it was the last
    /// slot in use of a slab the loop let go of.
    ///
    /// # Safety
    /// `slab` is live, `p` one of its slots that nothing references any
    /// more, with its closure gone.
    unsafe fn free(slab: *const SlabShared, p: NonNull<Slot>) {
        // SAFETY: per the contract; no reference into `*slab` outlives this
        // block, so `destroy` below may free it.
        let last = unsafe {
            let s = &*slab;
            write_link(p, s.free.get());
            s.free.set(p.as_ptr());
            let live = s.live.get() - 1;
            s.live.set(live);
            live == 0 && !s.owned.get()
        };
        if last {
            // SAFETY: unowned and nothing in use: nothing can reach it.
            unsafe { destroy(slab) }
        }
    }

    /// Chunks held (for tests).
    #[cfg(test)]
    pub(crate) fn chunk_count(&self) -> usize {
        self.chunks.borrow().len()
    }

    /// Slots in use (for tests).
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.live.get()
    }
}

/// The layout of a chunk from the global allocator: aligned to a segment,
/// so that its slots find their segment's header.
fn chunk_layout(bytes: usize) -> Layout {
    match Layout::from_size_align(bytes, SEGMENT_BYTES) {
        Ok(l) => l,
        // Sizes are multiples of the alignment, a power of two, up to 2 MiB:
        // always valid.
        Err(_) => unreachable!("chunk layout of {bytes} bytes"),
    }
}

/// Maps a 2 MiB-aligned huge chunk advised for huge pages (Linux, chunks of
/// [`HUGE_CHUNK`] only); `None` to use the global allocator instead.
#[cfg(target_os = "linux")]
fn map_huge(bytes: usize) -> Option<NonNull<u8>> {
    use rustix::mm::{madvise, mmap_anonymous, munmap, Advice, MapFlags, ProtFlags};
    if bytes != HUGE_CHUNK {
        return None;
    }
    let span = 2 * HUGE_CHUNK;
    // SAFETY: a fresh private anonymous mapping aliases nothing.
    let raw = unsafe {
        mmap_anonymous(
            ptr::null_mut(),
            span,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
    }
    .ok()?
    .cast::<u8>();
    let head = raw.align_offset(HUGE_CHUNK);
    // SAFETY: `head < HUGE_CHUNK`, so the aligned chunk is inside the span;
    // the parts before and after it are ours to unmap (nothing uses them).
    unsafe {
        let base = raw.add(head);
        if head > 0 {
            let _ = munmap(raw.cast(), head);
        }
        let tail = span - head - HUGE_CHUNK;
        if tail > 0 {
            let _ = munmap(base.add(HUGE_CHUNK).cast(), tail);
        }
        // Only advice: without huge pages the chunk works all the same.
        let _ = madvise(base.cast(), HUGE_CHUNK, Advice::LinuxHugepage);
        NonNull::new(base)
    }
}

#[cfg(not(target_os = "linux"))]
fn map_huge(_bytes: usize) -> Option<NonNull<u8>> {
    None
}

/// Frees every chunk and the shared state.
///
/// # Safety
/// The slab is unowned and no slot is in use: nothing references it.
unsafe fn destroy(slab: *const SlabShared) {
    // SAFETY: per the contract this is the last use of the box made by
    // `Slab::new`.
    let shared = unsafe { Box::from_raw(slab.cast_mut()) };
    for chunk in shared.chunks.take() {
        if chunk.mapped {
            #[cfg(target_os = "linux")]
            // SAFETY: mapped by `map_huge` with this length, unused now.
            unsafe {
                let _ = rustix::mm::munmap(chunk.base.as_ptr().cast(), chunk.bytes);
            }
        } else {
            // SAFETY: allocated by `new_chunk` with this layout, unused now.
            unsafe { alloc::dealloc(chunk.base.as_ptr(), chunk_layout(chunk.bytes)) }
        }
    }
}

/// # Safety
/// `p` is a free slot (its payload holds the link).
unsafe fn read_link(p: NonNull<Slot>) -> *mut Slot {
    // SAFETY: per the contract.
    unsafe { p.as_ref().payload_ptr().cast::<*mut Slot>().read() }
}

/// # Safety
/// `p` is a slot nothing references, becoming free.
unsafe fn write_link(p: NonNull<Slot>, next: *mut Slot) {
    // SAFETY: per the contract.
    unsafe { p.as_ref().payload_ptr().cast::<*mut Slot>().write(next) }
}

/// The loop's ownership of its slab (see the module docs).
pub(crate) struct Slab {
    shared: NonNull<SlabShared>,
}

impl Slab {
    pub(crate) fn new() -> Slab {
        let shared = Box::new(SlabShared {
            free: Cell::new(ptr::null_mut()),
            bump: Cell::new(ptr::null_mut()),
            segment_end: Cell::new(ptr::null_mut()),
            chunk_end: Cell::new(ptr::null_mut()),
            chunks: RefCell::new(Vec::new()),
            next_chunk_bytes: Cell::new(SEGMENT_BYTES),
            live: Cell::new(0),
            owned: Cell::new(true),
            cancelled_in_heap: Cell::new(0),
            this: Cell::new(ptr::null()),
        });
        let shared = NonNull::from(Box::leak(shared));
        // SAFETY: just leaked, so live and unaliased.
        unsafe { shared.as_ref().this.set(shared.as_ptr()) };
        Slab { shared }
    }

    #[inline]
    pub(crate) fn shared(&self) -> &SlabShared {
        // SAFETY: an owned slab is never destroyed.
        unsafe { self.shared.as_ref() }
    }
}

impl Default for Slab {
    fn default() -> Self {
        Slab::new()
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        let shared = self.shared.as_ptr();
        // SAFETY: owned until this line, so live; destroyed here only if no
        // slot is in use (else by the last slot's release).
        unsafe {
            (*shared).owned.set(false);
            if (*shared).live.get() == 0 {
                destroy(shared);
            }
        }
    }
}

/// A counted reference to a slot (see the module docs); `!Send`.
pub(crate) struct SlotRef {
    ptr: NonNull<Slot>,
}

impl SlotRef {
    #[inline]
    pub(crate) fn slot(&self) -> &Slot {
        // SAFETY: a counted reference keeps its slot in use.
        unsafe { self.ptr.as_ref() }
    }
}

impl SlotRef {
    /// Cancels: the closure is dropped now, and the cancellation counted if
    /// the heap holds the slot. Returns whether this call cancelled it.
    pub(crate) fn cancel(&self) -> bool {
        let slot = self.slot();
        let s = slot.state.get();
        if s & CANCELLED != 0 {
            return false;
        }
        slot.state.set((s | CANCELLED) & !PAYLOAD);
        if s & IN_HEAP != 0 {
            // SAFETY: the slot is in use, so its slab is live (module docs).
            let slab = unsafe { &*slab_of(self.ptr) };
            slab.cancelled_in_heap.set(slab.cancelled_in_heap.get() + 1);
        }
        if s & PAYLOAD != 0 {
            // SAFETY: as in `Slot::run`; the flag is already cleared, so a
            // re-entrant cancel or run from the closure's drop does nothing.
            unsafe { (slot.vtable.drop)(slot.payload_ptr()) }
        }
        true
    }
}

impl std::ops::Deref for SlotRef {
    type Target = Slot;

    #[inline]
    fn deref(&self) -> &Slot {
        self.slot()
    }
}

impl Clone for SlotRef {
    #[inline]
    fn clone(&self) -> Self {
        let refs = &self.slot().refs;
        let n = refs.get();
        if n == u32::MAX {
            // As `Rc` does on overflow.
            std::process::abort();
        }
        refs.set(n + 1);
        SlotRef { ptr: self.ptr }
    }
}

impl Drop for SlotRef {
    #[inline]
    fn drop(&mut self) {
        let refs = &self.slot().refs;
        let n = refs.get() - 1;
        refs.set(n);
        if n == 0 {
            // SAFETY: that was the last reference.
            unsafe { release(self.ptr) }
        }
    }
}

/// Drops the closure still held by a slot nothing references (a timer
/// dropped with its loop unclosed), then frees the slot, even if the drop
/// panics.
///
/// # Safety
/// No `SlotRef` points at `p` any more.
#[inline(never)]
unsafe fn release(p: NonNull<Slot>) {
    struct FreeOnExit(NonNull<Slot>, *const SlabShared);
    impl Drop for FreeOnExit {
        fn drop(&mut self) {
            // SAFETY: unreferenced, closure gone (or being unwound from).
            unsafe { SlabShared::free(self.1, self.0) }
        }
    }
    // SAFETY: the slot is still in use until `free`.
    let slot = unsafe { p.as_ref() };
    // SAFETY: in use until `free`.
    let _free = FreeOnExit(p, unsafe { slab_of(p) });
    let s = slot.state.get();
    if s & PAYLOAD != 0 {
        slot.state.set(s & !PAYLOAD);
        // SAFETY: as in `Slot::run`.
        unsafe { (slot.vtable.drop)(slot.payload_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    fn now() -> Instant {
        Instant::now()
    }

    #[test]
    fn slots_are_reused_after_their_last_reference_goes() {
        let slab = Slab::new();
        let s = slab.shared();
        let a = s.insert(now(), Location::caller(), || {});
        let a2 = a.clone();
        let addr = a.ptr;
        drop(a);
        assert_eq!(s.live(), 1, "a clone keeps the slot");
        drop(a2);
        assert_eq!(s.live(), 0);
        let b = s.insert(now(), Location::caller(), || {});
        assert_eq!(b.ptr, addr, "the freed slot is reused first");
        // Many more: whole segments and chunks, then all freed and reused
        // without a new chunk.
        let n = 3 * SEGMENT_BYTES / SLOT_BYTES;
        let v: Vec<_> = (0..n)
            .map(|_| s.insert(now(), Location::caller(), || {}))
            .collect();
        let chunks = s.chunk_count();
        assert!(chunks >= 2);
        drop(v);
        let v: Vec<_> = (0..n)
            .map(|_| s.insert(now(), Location::caller(), || {}))
            .collect();
        assert_eq!(s.chunk_count(), chunks);
        assert_eq!(s.live(), n + 1);
        drop((v, b));
        assert_eq!(s.live(), 0);
    }

    #[test]
    fn closures_run_once_inline_boxed_or_zero_sized() {
        let slab = Slab::new();
        let s = slab.shared();
        let count = Rc::new(Cell::new(0u64));
        // Zero-sized.
        let z = s.insert(now(), Location::caller(), || {});
        z.run();
        // Inline (8 bytes).
        let c = count.clone();
        let small = s.insert(now(), Location::caller(), move || c.set(c.get() + 1));
        // Boxed: 64 bytes of captures, and an over-aligned one.
        let c = count.clone();
        let big = [7u64; 7];
        let large = s.insert(now(), Location::caller(), move || {
            c.set(c.get() + big.iter().sum::<u64>())
        });
        #[repr(align(32))]
        struct Aligned(u64);
        let c = count.clone();
        let aligned = Aligned(1000);
        let over = s.insert(now(), Location::caller(), move || {
            let a = &aligned;
            assert_eq!(a as *const Aligned as usize % 32, 0);
            c.set(c.get() + a.0)
        });
        for r in [&small, &large, &over] {
            r.run();
            r.run();
        }
        assert_eq!(count.get(), 1 + 49 + 1000);
        assert_eq!(Rc::strong_count(&count), 1, "run consumes the closures");
        assert!(!small.is_cancelled());
        assert!(small.cancel(), "cancel after run is still recorded");
        assert!(small.is_cancelled());
    }

    #[test]
    fn a_closure_never_run_is_dropped_with_its_last_reference() {
        let slab = Slab::new();
        let s = slab.shared();
        let token = Rc::new(());
        for boxed in [false, true] {
            let t = token.clone();
            let r = if boxed {
                let pad = [0u8; 100];
                s.insert(now(), Location::caller(), move || drop((t, pad)))
            } else {
                s.insert(now(), Location::caller(), move || drop(t))
            };
            assert_eq!(Rc::strong_count(&token), 2);
            drop(r);
            assert_eq!(Rc::strong_count(&token), 1);
        }
        assert_eq!(s.live(), 0);
    }

    /// A slab whose loop is gone stays valid for the slots still referenced,
    /// and is freed with the last of them.
    #[test]
    fn slots_outlive_their_slab_owner() {
        let slab = Slab::new();
        let token = Rc::new(());
        let t = token.clone();
        let r = slab
            .shared()
            .insert(now(), Location::caller(), move || drop(t));
        drop(slab);
        assert!(!r.is_cancelled());
        assert!(r.cancel());
        assert_eq!(Rc::strong_count(&token), 1);
        drop(r); // frees the slab
    }

    /// A closure whose drop panics: the slot is freed all the same, and a
    /// closure whose drop frees other slots (its own captured references)
    /// leaves the slab consistent.
    #[test]
    fn panicking_and_reentrant_drops_leave_the_slab_consistent() {
        struct PanicOnDrop;
        impl Drop for PanicOnDrop {
            fn drop(&mut self) {
                panic!("drop");
            }
        }
        let slab = Slab::new();
        let s = slab.shared();
        let p = PanicOnDrop;
        let r = s.insert(now(), Location::caller(), move || drop(p));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(r)));
        assert!(caught.is_err());
        assert_eq!(s.live(), 0, "freed despite the panic");

        let p = PanicOnDrop;
        let r = s.insert(now(), Location::caller(), move || drop(p));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.cancel()));
        assert!(caught.is_err());
        assert!(r.is_cancelled());
        assert!(
            !r.cancel(),
            "the closure is gone; a second cancel does nothing"
        );
        drop(r);
        assert_eq!(s.live(), 0);

        // A closure holding the only reference to another slot.
        let inner = s.insert(now(), Location::caller(), || {});
        let outer = s.insert(now(), Location::caller(), move || drop(inner));
        assert_eq!(s.live(), 2);
        drop(outer);
        assert_eq!(s.live(), 0);
        let again = s.insert(now(), Location::caller(), || {});
        assert_eq!(s.live(), 1);
        drop(again);
    }
}
