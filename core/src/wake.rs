//! The lock-free wake-up hand-shake between a thread about to block and whoever will wake it.
//!
//! A thread waits for a condition another CPU will make true (a value in a
//! channel, a thread's exit). Neither side may take a lock or use a
//! read-modify-write instruction, yet the wake-up must not be lost:
//!
//! - the **waiter** publishes itself in a [`WaiterSlot`] (its thread and
//!   the epoch of this wait), issues a full fence, re-checks the condition,
//!   and blocks only if it is still false;
//! - the **waker** makes the condition true, issues a full fence, then
//!   reads the slot and wakes the thread named there, if any.
//!
//! Each side stores, fences, then loads. Full fences are totally ordered,
//! so one of the two fences comes first, and the side whose fence comes
//! second sees the other side's store: either the waiter sees the
//! condition (and does not block) or the waker sees the waiter (and wakes
//! it), or both (a wake-up for a wait that did not block, which the
//! scheduler keeps as "pending" or drops by epoch). Without a fence on
//! either side, both loads can be served before the other CPU's store
//! leaves its store buffer (x86 allows exactly this reordering), both
//! sides miss each other, and the waiter sleeps forever; the loom models
//! in `core/tests/loom.rs` find that lost wake-up when either fence is
//! left out.
//!
//! # Epochs
//!
//! A thread waits many times, and a wake-up may arrive late (it travels
//! between CPUs as a message). Each wait gets a new number from the
//! thread's [`WaitEpoch`]; the waker's wake-up names the epoch it read in
//! the slot, and the waiting thread's CPU drops a wake-up whose epoch is no
//! longer the current one ([`WaitEpoch::is_current`]), so a late wake-up
//! never ends a later, unrelated wait.
//!
//! # Why the fence is a parameter
//!
//! `core::sync::atomic::fence(SeqCst)` compiles to `lock or [rsp], 0` for
//! `x86_64-unknown-none` (no SSE2, so LLVM does not pick `mfence`; seen
//! with rustc 1.95), and the kernel's disassembly check forbids locked
//! instructions on these paths. So the caller passes its full fence: the
//! kernel an inline-asm `mfence`, the host tests `fence(SeqCst)`, the loom
//! models loom's `fence(SeqCst)`. It is a generic closure, not a `fn()`
//! pointer, so it is inlined at each use: the check cannot follow indirect
//! calls.
//!
//! # Who writes what
//!
//! A slot has at most one waiter at a time (one receiver per channel, one
//! joiner per thread): it alone writes the slot, so plain `Release` and
//! `Relaxed` stores suffice. Any number of wakers may read it. A thread's
//! epoch is written only by the CPU the thread is on.

#[cfg(not(loom))]
use core::sync::atomic::{AtomicU64, Ordering};
#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering};

/// The slot value meaning "no one waits".
const NO_THREAD: u64 = 0;

/// A waiting thread and the epoch of its wait, as a waker reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiter {
    /// The waiting thread (in the kernel, its control block's address);
    /// never 0.
    pub thread: u64,
    /// The epoch of the wait (see [`WaitEpoch`]).
    pub epoch: u64,
}

/// Where a thread about to block publishes itself for its waker.
#[derive(Debug)]
pub struct WaiterSlot {
    /// The waiting thread, or [`NO_THREAD`]. Stored `Release` after
    /// `epoch`, loaded `Acquire` before it: a waker that sees a thread sees
    /// the epoch stored with it (or a later one), never a stale pairing.
    thread: AtomicU64,
    /// The epoch of the waiting thread's wait; meaningful only while
    /// `thread` is set.
    epoch: AtomicU64,
}

impl WaiterSlot {
    /// An empty slot.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self { thread: AtomicU64::new(NO_THREAD), epoch: AtomicU64::new(0) }
    }

    /// An empty slot (loom's atomics cannot be built in a `const fn`).
    #[cfg(loom)]
    pub fn new() -> Self {
        Self { thread: AtomicU64::new(NO_THREAD), epoch: AtomicU64::new(0) }
    }

    /// Waiter side: publishes `thread` as waiting in wait `epoch`, then
    /// runs `full_fence`.
    ///
    /// After this, re-check the condition and block only if it is still
    /// false: a waker that makes it true after the check will see this
    /// publication. `thread` must not be 0 (0 means "no one"). Only one
    /// thread may wait on a slot at a time.
    #[inline]
    pub fn publish(&self, thread: u64, epoch: u64, full_fence: impl FnOnce()) {
        debug_assert_ne!(thread, NO_THREAD, "thread 0 means no waiter");
        self.epoch.store(epoch, Ordering::Relaxed);
        // `Release`: the epoch above is visible to whoever sees the thread.
        self.thread.store(thread, Ordering::Release);
        // Store-load ordering: the caller's re-check of the condition must
        // not be served before this publication is visible.
        full_fence();
    }

    /// Waiter side: no one waits any more (the wait ended). A waker that
    /// still read the old waiter sends a wake-up its epoch makes stale.
    #[inline]
    pub fn clear(&self) {
        self.thread.store(NO_THREAD, Ordering::Relaxed);
    }

    /// Waker side, after making the condition true: runs `full_fence`,
    /// then returns the waiting thread and its epoch, if one waits.
    #[inline]
    pub fn waiter(&self, full_fence: impl FnOnce()) -> Option<Waiter> {
        // Store-load ordering: the caller's change must be visible before
        // the slot is read, or a waiter could miss it while we miss them.
        full_fence();
        let thread = self.thread.load(Ordering::Acquire);
        if thread == NO_THREAD {
            return None;
        }
        Some(Waiter { thread, epoch: self.epoch.load(Ordering::Relaxed) })
    }
}

impl Default for WaiterSlot {
    fn default() -> Self {
        Self::new()
    }
}

/// The number of a thread's current wait; a wake-up for any other number
/// is stale.
///
/// Advanced only by the CPU the thread is on, with a load and a store (no
/// read-modify-write: there is one writer). Epoch 0 is "no wait yet".
#[derive(Debug)]
pub struct WaitEpoch(AtomicU64);

impl WaitEpoch {
    /// Epoch 0: no wait yet.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Epoch 0: no wait yet (loom's atomics cannot be built in a `const fn`).
    #[cfg(loom)]
    pub fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Owner only: ends the current wait (a wake-up for it is stale from
    /// now on) and returns the number of the next one.
    #[inline]
    pub fn advance(&self) -> u64 {
        // The owner is the only writer, so its own last store is what this
        // load returns.
        let next = self.0.load(Ordering::Relaxed).wrapping_add(1);
        // `Release`: a CPU the thread moves to later sees this epoch (the
        // hand-over between CPUs orders it too).
        self.0.store(next, Ordering::Release);
        next
    }

    /// Owner only: whether a wake-up naming `epoch` is for the current wait
    /// (`false`: a late wake-up for a wait that has ended; drop it).
    #[inline]
    pub fn is_current(&self, epoch: u64) -> bool {
        self.0.load(Ordering::Relaxed) == epoch
    }
}

impl Default for WaitEpoch {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::atomic::{fence, AtomicBool};

    fn full_fence() {
        fence(Ordering::SeqCst);
    }

    #[test]
    fn an_empty_slot_has_no_waiter() {
        let slot = WaiterSlot::new();
        assert_eq!(slot.waiter(full_fence), None);
        assert_eq!(WaiterSlot::default().waiter(full_fence), None);
    }

    #[test]
    fn a_published_waiter_is_seen_until_cleared() {
        let slot = WaiterSlot::new();
        slot.publish(0x1000, 7, full_fence);
        assert_eq!(slot.waiter(full_fence), Some(Waiter { thread: 0x1000, epoch: 7 }));
        assert_eq!(slot.waiter(full_fence), Some(Waiter { thread: 0x1000, epoch: 7 }), "reading does not take it");
        slot.publish(0x1000, 8, full_fence);
        assert_eq!(slot.waiter(full_fence), Some(Waiter { thread: 0x1000, epoch: 8 }), "the next wait replaces it");
        slot.clear();
        assert_eq!(slot.waiter(full_fence), None);
    }

    #[test]
    fn each_side_fences_exactly_once() {
        let fences = Cell::new(0);
        let count = || fences.set(fences.get() + 1);
        let slot = WaiterSlot::new();
        slot.publish(1, 1, count);
        assert_eq!(fences.get(), 1);
        let _ = slot.waiter(count);
        assert_eq!(fences.get(), 2);
        slot.clear();
        let _ = slot.waiter(count);
        assert_eq!(fences.get(), 3, "the waker fences even when no one waits");
    }

    #[test]
    fn epochs_count_up_and_only_the_current_one_is_accepted() {
        let epoch = WaitEpoch::new();
        assert!(epoch.is_current(0));
        let first = epoch.advance();
        let second = epoch.advance();
        assert_eq!((first, second), (1, 2));
        assert!(!epoch.is_current(first), "a wake-up for an ended wait is stale");
        assert!(epoch.is_current(second));
        assert!(WaitEpoch::default().is_current(0));
    }

    #[test]
    fn epochs_wrap_instead_of_overflowing() {
        let epoch = WaitEpoch::new();
        epoch.0.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(epoch.advance(), 0);
        assert!(!epoch.is_current(u64::MAX));
    }

    /// Spins until `counter` reaches `round`, yielding the CPU now and then
    /// (tests run in parallel; the other side may be waiting for a CPU).
    fn wait_for(counter: &AtomicU64, round: u64) {
        let mut spins = 0_u32;
        while counter.load(Ordering::Acquire) != round {
            spins += 1;
            if spins.is_multiple_of(1024) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// The hand-shake on real CPUs, many rounds: whenever the waiter would
    /// block (it did not see the flag), the waker saw it registered, with
    /// this round's epoch.
    ///
    /// The two threads start each round by spinning on a shared counter,
    /// and the waiter waits a little longer each round (0 to 63 spins), so
    /// over the rounds the two sides' accesses overlap every way the
    /// hardware allows. With either fence replaced by `|| {}` this test
    /// fails on an x86 host within a few thousand rounds: the store buffer
    /// lets both loads pass both stores.
    #[test]
    fn real_threads_never_lose_a_wake_up() {
        const ROUNDS: u64 = 20_000;
        const MAX_DELAY_SPINS: u64 = 64;
        let slot = WaiterSlot::new();
        let epoch = WaitEpoch::new();
        let flag = AtomicBool::new(false);
        // The round the waker may start, and the last one it finished.
        let go = AtomicU64::new(0);
        let finished = AtomicU64::new(0);
        // The epoch of the waiter the waker saw in its last round (0: none).
        let waker_saw = AtomicU64::new(0);
        let mut blocked_rounds = 0;
        let mut lost_wake_ups = Vec::new();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for round in 1..=ROUNDS {
                    wait_for(&go, round);
                    flag.store(true, Ordering::Relaxed);
                    let seen = slot.waiter(full_fence).map_or(0, |waiter| waiter.epoch);
                    waker_saw.store(seen, Ordering::Relaxed);
                    finished.store(round, Ordering::Release);
                }
            });
            for round in 1..=ROUNDS {
                let this_wait = epoch.advance();
                go.store(round, Ordering::Release);
                for _ in 0..round % MAX_DELAY_SPINS {
                    std::hint::spin_loop();
                }
                slot.publish(1, this_wait, full_fence);
                let would_block = !flag.load(Ordering::Relaxed);
                wait_for(&finished, round);
                if would_block {
                    blocked_rounds += 1;
                    // Not asserted here: a panic would leave the waker
                    // spinning for a `go` that never comes.
                    if waker_saw.load(Ordering::Relaxed) != this_wait {
                        lost_wake_ups.push(round);
                    }
                }
                // Reset for the next round; the waker waits for `go`.
                slot.clear();
                flag.store(false, Ordering::Relaxed);
            }
        });
        assert!(lost_wake_ups.is_empty(), "lost wake-ups in rounds {lost_wake_ups:?}");
        // Not asserted (it depends on the host's timing), shown with
        // `--nocapture`: how often the waiter got in first.
        println!("{blocked_rounds} of {ROUNDS} rounds would have blocked");
    }
}
