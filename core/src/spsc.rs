//! A bounded single-producer single-consumer ring: the one way data crosses between two CPUs.
//!
//! Each ordered pair of CPUs (source, destination) gets one [`Ring`]; the
//! source CPU is its only producer and the destination CPU its only
//! consumer. With one writer per index, the hand-off needs nothing stronger
//! than a `Release` store matched by an `Acquire` load: no `lock`-prefixed
//! instruction, no `xchg` with memory, no read-modify-write of any kind
//! (on x86-64 both compile to a plain `mov`). This is the rule the original
//! TORO's `CpuMxSlots` followed without fences; here the orderings are
//! explicit, so the compiler cannot reorder the slot write past the index
//! store either.
//!
//! # How the indexes work
//!
//! `head` (next slot to read) is written only by the consumer, `tail` (next
//! slot to write) only by the producer. Both count up forever and wrap at
//! `usize::MAX`; the slot is `index % N`, and `tail - head` (wrapping) is the
//! number of items in the ring, from 0 to `N`. Each index sits on its own
//! 64-byte cache line so the two CPUs do not false-share. The handles keep a
//! private copy of the other side's index and re-read the shared one only
//! when the copy says "full" (producer) or "empty" (consumer), so in the
//! steady state each side touches the other's cache line once per `N`
//! items, not once per item (the trick of Rigtorp's `SPSCQueue`).
//!
//! # Who may call what
//!
//! The contract, exactly one producer and one consumer, is carried by two
//! handles, [`Producer`] and [`Consumer`], whose methods take `&mut self`:
//! - [`Ring::split`] borrows the ring mutably and returns both handles, so
//!   the borrow checker proves there is one of each (tests, local use);
//! - [`Ring::producer`] and [`Ring::consumer`] make one handle from a shared
//!   `&Ring`, for rings the kernel carves at boot in an n×n matrix and reaches
//!   through `&'static`. They are `unsafe`: the caller promises to make only
//!   one of each per ring (the kernel makes them once, at boot, and keeps
//!   them in the source's and the destination's per-CPU blocks).
//!
//! # Model checking
//!
//! Under `--cfg loom` the atomics and cells come from `loom`, which explores
//! every interleaving allowed by the memory model and checks each cell access
//! against the happens-before order. The models live in `core/tests/loom.rs`:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p toro-core --release --test loom
//! ```

// The slots are `UnsafeCell`s written by one CPU and read by another; that
// they are never touched by both at once is what the indexes prove, and
// what the compiler cannot see. This is the crate's one `unsafe` module.
#![allow(unsafe_code)]

use core::fmt;
use core::mem::MaybeUninit;

use self::sync::{AtomicUsize, Ordering, SlotCell};

/// Atomics and cells: `core`'s normally, `loom`'s under `--cfg loom`.
///
/// `loom::cell::UnsafeCell` has no `get()`; both versions expose the same
/// closure-based `with`/`with_mut` so the ring is written once.
pub(crate) mod sync {
    #[cfg(not(loom))]
    pub(crate) use core::sync::atomic::{AtomicUsize, Ordering};
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};

    /// A cell whose accesses are checked by loom under `--cfg loom`.
    #[cfg(loom)]
    pub(crate) type SlotCell<T> = loom::cell::UnsafeCell<T>;

    /// `core::cell::UnsafeCell` with loom's access API.
    #[cfg(not(loom))]
    #[derive(Debug)]
    pub(crate) struct SlotCell<T>(core::cell::UnsafeCell<T>);

    #[cfg(not(loom))]
    impl<T> SlotCell<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(core::cell::UnsafeCell::new(value))
        }

        /// Calls `reader` with a pointer to the contents.
        pub(crate) fn with<R>(&self, reader: impl FnOnce(*const T) -> R) -> R {
            reader(self.0.get())
        }

        /// Calls `writer` with a mutable pointer to the contents.
        pub(crate) fn with_mut<R>(&self, writer: impl FnOnce(*mut T) -> R) -> R {
            writer(self.0.get())
        }
    }
}

/// Bytes in a cache line on every x86-64 CPU Toro runs on.
const CACHE_LINE_BYTES: usize = 64;

/// A value alone on its own cache line, so a write to it by one CPU does not
/// invalidate the line holding the other CPU's index.
#[repr(align(64))]
struct CacheLine<T>(T);

// The `repr(align)` literal above cannot name the constant; keep them equal.
const _: () = assert!(core::mem::align_of::<CacheLine<u8>>() == CACHE_LINE_BYTES);

/// A bounded single-producer single-consumer ring of `N` slots (`N` a power of two).
///
/// Owned by no CPU: its producer side belongs to the source CPU (through a
/// [`Producer`]) and its consumer side to the destination CPU (through a
/// [`Consumer`]). Items left in the ring are dropped with it.
pub struct Ring<T, const N: usize> {
    /// Next index to read. Written by the consumer only (`Release`, after it
    /// has read the slot); read by the producer (`Acquire`, before it
    /// overwrites the slot).
    head: CacheLine<AtomicUsize>,
    /// Next index to write. Written by the producer only (`Release`, after it
    /// has written the slot); read by the consumer (`Acquire`, before it reads
    /// the slot).
    tail: CacheLine<AtomicUsize>,
    /// Slot `i % N` holds an initialised item exactly when
    /// `head <= i < tail` (in wrapping order).
    slots: [SlotCell<MaybeUninit<T>>; N],
}

// SAFETY: a `Ring` moves `T`s from one thread to another, so `T: Send` is
// needed and enough. Shared access is sound because every slot is accessed by
// at most one side at a time: the producer writes slot `tail % N` only while
// `tail - head < N` (the consumer is done with it: its `Release` store of
// `head` past it was seen by the producer's `Acquire` load), and the consumer
// reads slot `head % N` only while `head < tail` (the producer's `Release`
// store of `tail` past it was seen by the consumer's `Acquire` load). The
// handle constructors make sure there is one producer and one consumer.
unsafe impl<T: Send, const N: usize> Sync for Ring<T, N> {}

impl<T, const N: usize> Ring<T, N> {
    /// How many items the ring holds at most.
    pub const CAPACITY: usize = N;

    /// Checked at compile time when `new` is instantiated: masking the index
    /// with `N - 1` needs a power of two (which also rules out 0).
    const VALID_CAPACITY: () = assert!(N.is_power_of_two(), "a Ring's capacity must be a power of two");

    /// An empty ring; `const`, so the kernel can build rings in place in memory it carves at boot.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)] // forces the compile-time check
        let () = Self::VALID_CAPACITY;
        Self {
            head: CacheLine(AtomicUsize::new(0)),
            tail: CacheLine(AtomicUsize::new(0)),
            slots: [const { SlotCell::new(MaybeUninit::uninit()) }; N],
        }
    }

    /// An empty ring (loom's atomics cannot be built in a `const fn`).
    #[cfg(loom)]
    pub fn new() -> Self {
        #[allow(clippy::let_unit_value)] // forces the compile-time check
        let () = Self::VALID_CAPACITY;
        Self {
            head: CacheLine(AtomicUsize::new(0)),
            tail: CacheLine(AtomicUsize::new(0)),
            slots: core::array::from_fn(|_| SlotCell::new(MaybeUninit::uninit())),
        }
    }

    /// The producer and the consumer of a ring held exclusively.
    ///
    /// The mutable borrow is the proof that no other handle exists, so this
    /// is safe; both handles borrow the ring and may go to different threads.
    pub fn split(&mut self) -> (Producer<'_, T, N>, Consumer<'_, T, N>) {
        let ring: &Self = self;
        // SAFETY: `ring` is derived from `&mut self` and the two handles
        // borrow it for their whole life, so no other producer or consumer
        // can be made while they exist; earlier handles, if any, ended
        // before the `&mut` borrow began.
        unsafe { (ring.producer(), ring.consumer()) }
    }

    /// The producer side of a shared ring.
    ///
    /// # Safety
    ///
    /// While the returned handle is in use, no other [`Producer`] of this ring
    /// may be used: at any moment the ring has at most one producer. If an
    /// earlier producer of this ring was used on another CPU, its last push
    /// must happen-before this call (the kernel makes each handle once, at
    /// boot, before the CPUs start using rings).
    pub unsafe fn producer(&self) -> Producer<'_, T, N> {
        Producer {
            ring: self,
            // The producer's own index: only it writes `tail`, so the value
            // it last stored is current (the `# Safety` rule orders earlier
            // producers before this load).
            tail: self.tail.0.load(Ordering::Acquire),
            cached_head: self.head.0.load(Ordering::Acquire),
        }
    }

    /// The consumer side of a shared ring.
    ///
    /// # Safety
    ///
    /// While the returned handle is in use, no other [`Consumer`] of this ring
    /// may be used: at any moment the ring has at most one consumer. If an
    /// earlier consumer of this ring was used on another CPU, its last pop
    /// must happen-before this call.
    pub unsafe fn consumer(&self) -> Consumer<'_, T, N> {
        Consumer {
            ring: self,
            head: self.head.0.load(Ordering::Acquire),
            cached_tail: self.tail.0.load(Ordering::Acquire),
        }
    }

    /// How many items the ring holds; approximate while either side is
    /// running (each index is read at a different instant), exact otherwise.
    pub fn len(&self) -> usize {
        // Read `head` first: it only grows, so a `tail` read afterwards is at
        // least as new, and the difference cannot go negative unless the
        // reads straddle a wrap of the whole counter.
        let head = self.head.0.load(Ordering::Acquire);
        let tail = self.tail.0.load(Ordering::Acquire);
        tail.wrapping_sub(head).min(N)
    }

    /// Whether the ring holds no item (approximate while either side is running).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T, const N: usize> Default for Ring<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> fmt::Debug for Ring<T, N> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Ring").field("capacity", &N).field("len", &self.len()).finish()
    }
}

impl<T, const N: usize> Drop for Ring<T, N> {
    fn drop(&mut self) {
        // `&mut self`: no handle is alive and every earlier access
        // happened-before this drop, so these loads see the final indexes.
        let tail = self.tail.0.load(Ordering::Acquire);
        let mut head = self.head.0.load(Ordering::Acquire);
        while head != tail {
            // SAFETY: `head < tail`, so the slot holds an initialised item
            // that was never read; it is dropped exactly once here and the
            // ring is never used again.
            self.slots[head & (N - 1)].with_mut(|item| unsafe { (*item).assume_init_drop() });
            head = head.wrapping_add(1);
        }
    }
}

/// The producer side of a [`Ring`]: the only writer of its `tail`.
pub struct Producer<'ring, T, const N: usize> {
    ring: &'ring Ring<T, N>,
    /// The next index to write; the producer's own copy of `ring.tail`.
    tail: usize,
    /// The consumer's `head` as last read; never ahead of the real one, so
    /// "full" by this copy may be stale but "not full" is always true.
    cached_head: usize,
}

impl<T, const N: usize> Producer<'_, T, N> {
    /// Appends `value`, or gives it back if the ring is full.
    ///
    /// Never blocks and never spins: a full ring is the caller's to handle
    /// (the remote-free outbox keeps the batch and retries later).
    pub fn push(&mut self, value: T) -> Result<(), T> {
        let tail = self.tail;
        if tail.wrapping_sub(self.cached_head) >= N {
            // `Acquire` pairs with the consumer's `Release` store of `head`:
            // its read of the slot we are about to reuse happened-before our
            // write below.
            self.cached_head = self.ring.head.0.load(Ordering::Acquire);
            if tail.wrapping_sub(self.cached_head) >= N {
                return Err(value);
            }
        }
        // The mask keeps the index below `N`: this indexing cannot panic.
        let slot = &self.ring.slots[tail & (N - 1)];
        // SAFETY: `tail - head < N`, so the slot is outside the initialised
        // range `head..tail`: the consumer is not reading it and will not
        // until the `Release` store below publishes it. We are the only
        // producer (handle contract), so no one else writes it. Overwriting
        // without drop is right: its old item, if any, was moved out by `pop`.
        slot.with_mut(|item| unsafe { item.write(MaybeUninit::new(value)) });
        self.tail = tail.wrapping_add(1);
        // `Release` publishes the slot write above to the consumer's
        // `Acquire` load of `tail`.
        self.ring.tail.0.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Whether a push would fail now (re-reads the consumer's index).
    pub fn is_full(&mut self) -> bool {
        self.cached_head = self.ring.head.0.load(Ordering::Acquire);
        self.tail.wrapping_sub(self.cached_head) >= N
    }

    /// The ring this handle writes to.
    pub fn ring(&self) -> &Ring<T, N> {
        self.ring
    }
}

impl<T, const N: usize> fmt::Debug for Producer<'_, T, N> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Producer").field("tail", &self.tail).field("cached_head", &self.cached_head).finish()
    }
}

/// The consumer side of a [`Ring`]: the only writer of its `head`.
pub struct Consumer<'ring, T, const N: usize> {
    ring: &'ring Ring<T, N>,
    /// The next index to read; the consumer's own copy of `ring.head`.
    head: usize,
    /// The producer's `tail` as last read; never ahead of the real one, so
    /// "empty" by this copy may be stale but "not empty" is always true.
    cached_tail: usize,
}

impl<T, const N: usize> Consumer<'_, T, N> {
    /// Takes the oldest item, if any. Never blocks.
    pub fn pop(&mut self) -> Option<T> {
        let head = self.head;
        if head == self.cached_tail {
            // `Acquire` pairs with the producer's `Release` store of `tail`:
            // its write of the slot happened-before our read below.
            self.cached_tail = self.ring.tail.0.load(Ordering::Acquire);
            if head == self.cached_tail {
                return None;
            }
        }
        // The mask keeps the index below `N`: this indexing cannot panic.
        let slot = &self.ring.slots[head & (N - 1)];
        // SAFETY: `head < tail`, so the producer initialised this slot and
        // published it (see above); it will not write it again until our
        // `Release` store below moves `head` past it. We are the only
        // consumer (handle contract), so the item is moved out exactly once.
        let value = slot.with(|item| unsafe { (*item).assume_init_read() });
        self.head = head.wrapping_add(1);
        // `Release` orders our read of the slot before the producer's reuse
        // of it (it loads `head` with `Acquire`).
        self.ring.head.0.store(self.head, Ordering::Release);
        Some(value)
    }

    /// Whether a pop would find nothing now (re-reads the producer's index).
    pub fn is_empty(&mut self) -> bool {
        self.cached_tail = self.ring.tail.0.load(Ordering::Acquire);
        self.head == self.cached_tail
    }

    /// The ring this handle reads from.
    pub fn ring(&self) -> &Ring<T, N> {
        self.ring
    }
}

impl<T, const N: usize> fmt::Debug for Consumer<'_, T, N> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Consumer").field("head", &self.head).field("cached_tail", &self.cached_tail).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn fills_to_capacity_then_refuses() {
        let mut ring = Ring::<u32, 4>::new();
        let (mut producer, mut consumer) = ring.split();
        assert_eq!(consumer.pop(), None);
        for value in 0..4 {
            assert_eq!(producer.push(value), Ok(()));
        }
        assert!(producer.is_full());
        assert_eq!(producer.push(99), Err(99), "a full ring gives the value back");
        assert_eq!(producer.ring().len(), 4);
        assert_eq!(consumer.pop(), Some(0));
        assert_eq!(producer.push(4), Ok(()), "one slot freed, one push fits");
        assert_eq!(producer.push(5), Err(5));
        for expected in 1..=4 {
            assert_eq!(consumer.pop(), Some(expected));
        }
        assert!(consumer.is_empty());
        assert_eq!(consumer.pop(), None);
        assert!(consumer.ring().is_empty());
    }

    #[test]
    fn wraps_around_many_times_in_order() {
        let mut ring = Ring::<u64, 8>::new();
        let (mut producer, mut consumer) = ring.split();
        let mut next_in = 0_u64;
        let mut next_out = 0_u64;
        for round in 0..1000 {
            for _ in 0..(round % 9) {
                if producer.push(next_in).is_ok() {
                    next_in += 1;
                }
            }
            for _ in 0..(round % 7) {
                if let Some(value) = consumer.pop() {
                    assert_eq!(value, next_out);
                    next_out += 1;
                }
            }
        }
        while let Some(value) = consumer.pop() {
            assert_eq!(value, next_out);
            next_out += 1;
        }
        assert_eq!(next_in, next_out);
    }

    #[test]
    fn indexes_wrap_at_usize_max() {
        let ring = Ring::<u8, 4>::new();
        ring.head.0.store(usize::MAX - 2, Ordering::Relaxed);
        ring.tail.0.store(usize::MAX - 2, Ordering::Relaxed);
        // SAFETY: the only handles of this ring, used on this thread.
        let (mut producer, mut consumer) = unsafe { (ring.producer(), ring.consumer()) };
        for value in 0..4 {
            assert_eq!(producer.push(value), Ok(()));
        }
        assert_eq!(producer.push(4), Err(4));
        assert_eq!(ring.len(), 4);
        for value in 0..4 {
            assert_eq!(consumer.pop(), Some(value));
        }
        assert_eq!(consumer.pop(), None);
    }

    #[test]
    fn drops_items_left_in_the_ring_once() {
        let counter = Rc::new(());
        {
            let mut ring = Ring::<Rc<()>, 4>::new();
            let (mut producer, mut consumer) = ring.split();
            for _ in 0..4 {
                assert!(producer.push(Rc::clone(&counter)).is_ok());
            }
            drop(consumer.pop());
            assert!(producer.push(Rc::clone(&counter)).is_ok());
            assert_eq!(Rc::strong_count(&counter), 5);
        }
        assert_eq!(Rc::strong_count(&counter), 1, "the ring dropped its four items");
    }

    #[test]
    fn handles_made_again_resume_where_the_old_ones_stopped() {
        let ring = Ring::<u32, 2>::new();
        {
            // SAFETY: the only producer while it lives.
            let mut producer = unsafe { ring.producer() };
            assert!(producer.push(1).is_ok());
        }
        {
            // SAFETY: the only producer and consumer while they live; the
            // previous producer is gone.
            let (mut producer, mut consumer) = unsafe { (ring.producer(), ring.consumer()) };
            assert!(producer.push(2).is_ok());
            assert_eq!(producer.push(3), Err(3));
            assert_eq!(consumer.pop(), Some(1));
        }
        // SAFETY: as above.
        let mut consumer = unsafe { ring.consumer() };
        assert_eq!(consumer.pop(), Some(2));
        assert_eq!(consumer.pop(), None);
    }

    #[test]
    fn a_static_ring_is_built_at_compile_time() {
        static RING: Ring<u64, 16> = Ring::new();
        assert!(RING.is_empty());
        assert_eq!(Ring::<u64, 16>::CAPACITY, 16);
        assert!(format!("{RING:?}").contains("capacity: 16"));
    }

    #[test]
    fn head_and_tail_sit_on_different_cache_lines() {
        let ring = Ring::<u8, 2>::new();
        let head = core::ptr::addr_of!(ring.head) as usize;
        let tail = core::ptr::addr_of!(ring.tail) as usize;
        assert!(head.abs_diff(tail) >= CACHE_LINE_BYTES);
        assert_eq!(head % CACHE_LINE_BYTES, 0);
        assert_eq!(tail % CACHE_LINE_BYTES, 0);
    }

    /// Two threads, millions of items: each arrives exactly once, in order.
    #[test]
    fn two_threads_pass_millions_of_items_in_order() {
        const ITEMS: u64 = 4_000_000;
        let mut ring = Ring::<u64, 256>::new();
        let (mut producer, mut consumer) = ring.split();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut next = 0;
                while next < ITEMS {
                    match producer.push(next) {
                        Ok(()) => next += 1,
                        Err(_) => std::hint::spin_loop(),
                    }
                }
            });
            let mut expected = 0;
            let mut sum = 0_u64;
            while expected < ITEMS {
                match consumer.pop() {
                    Some(value) => {
                        assert_eq!(value, expected, "items arrive in order, none lost or repeated");
                        sum = sum.wrapping_add(value);
                        expected += 1;
                    }
                    None => std::hint::spin_loop(),
                }
            }
            assert_eq!(sum, ITEMS * (ITEMS - 1) / 2);
            assert_eq!(consumer.pop(), None);
        });
    }
}
