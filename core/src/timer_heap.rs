//! A deadline heap whose entries can be cancelled: each CPU's sleepers.
//!
//! The scheduler keeps every thread that waits with a deadline (`sleep`,
//! and waits with a timeout: `recv_timeout`, `Condvar::wait_timeout`, a
//! socket read timeout, `park_timeout`) in its CPU's [`TimerHeap`], and
//! pops the entries whose deadline passed at every scheduling point. A
//! wait with a timeout usually ends early (the data came): its entry is
//! then [`cancel`](TimerHeap::cancel)led, in O(log n), so the heap holds
//! only the waits that are still on. (A plain binary heap cannot remove an
//! entry; with one, every early wake-up left its entry until the deadline
//! passed: a web server with 15 s timeouts kept one per request served in
//! the last 15 s.)
//!
//! Entries live in slots; the heap orders slot numbers by (deadline,
//! insertion order) and each slot knows its place in the heap, so a
//! cancel finds its entry at once. A [`TimerId`] names a slot and the
//! slot's generation (advanced when the slot is freed): cancelling an entry
//! that was already popped or cancelled does nothing, even once the slot
//! holds another entry. Freed slots are reused, so the memory is that of
//! the most entries ever live at once.
//!
//! Growth: `push` may allocate (the slot table and the heap grow);
//! `cancel`, `pop_expired` and `peek_deadline` never do.

use alloc::vec::Vec;

/// Names one entry of a [`TimerHeap`] (see the module's text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerId {
    slot: u32,
    generation: u32,
}

struct Slot<T> {
    deadline: u64,
    /// Insertion order: entries with one deadline pop first in, first out.
    order: u64,
    /// The place of this slot in `heap` while it holds an entry.
    place: u32,
    generation: u32,
    value: Option<T>,
}

/// A min-heap of deadlines with cancellable entries.
pub struct TimerHeap<T> {
    slots: Vec<Slot<T>>,
    /// Free slot numbers.
    free: Vec<u32>,
    /// Slot numbers, a binary min-heap by (deadline, order).
    heap: Vec<u32>,
    next_order: u64,
}

impl<T> Default for TimerHeap<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerHeap<T> {
    /// An empty heap (allocates nothing until the first push).
    pub const fn new() -> Self {
        Self { slots: Vec::new(), free: Vec::new(), heap: Vec::new(), next_order: 0 }
    }

    /// Entries waiting (every one live: cancelled entries are gone).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no entry waits.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Slots allocated: the most entries ever live at once.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// The earliest deadline.
    pub fn peek_deadline(&self) -> Option<u64> {
        self.heap.first().map(|&slot| self.slots[slot as usize].deadline)
    }

    /// Adds an entry ending at `deadline`.
    pub fn push(&mut self, deadline: u64, value: T) -> TimerId {
        let order = self.next_order;
        self.next_order += 1;
        let place = self.heap.len() as u32;
        let slot = match self.free.pop() {
            Some(slot) => {
                let entry = &mut self.slots[slot as usize];
                entry.deadline = deadline;
                entry.order = order;
                entry.place = place;
                entry.value = Some(value);
                slot
            }
            None => {
                let slot = u32::try_from(self.slots.len()).expect("fewer than 2^32 timers");
                self.slots.push(Slot { deadline, order, place, generation: 0, value: Some(value) });
                // Room in `free` for every slot, so that cancel and pop
                // never allocate.
                if self.free.capacity() < self.slots.len() {
                    self.free.reserve_exact(self.slots.len() - self.free.len());
                }
                slot
            }
        };
        self.heap.push(slot);
        self.sift_up(place as usize);
        TimerId { slot, generation: self.slots[slot as usize].generation }
    }

    /// Removes entry `id` and returns its value; `None` if it was already
    /// popped or cancelled.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let entry = self.slots.get(id.slot as usize)?;
        if entry.generation != id.generation || entry.value.is_none() {
            return None;
        }
        let place = entry.place as usize;
        Some(self.remove_at(place))
    }

    /// Removes and returns the earliest entry if its deadline is at or
    /// before `now`.
    pub fn pop_expired(&mut self, now: u64) -> Option<T> {
        let first = *self.heap.first()?;
        if self.slots[first as usize].deadline > now {
            return None;
        }
        Some(self.remove_at(0))
    }

    fn key(&self, place: usize) -> (u64, u64) {
        let slot = &self.slots[self.heap[place] as usize];
        (slot.deadline, slot.order)
    }

    fn set(&mut self, place: usize, slot: u32) {
        self.heap[place] = slot;
        self.slots[slot as usize].place = place as u32;
    }

    fn remove_at(&mut self, place: usize) -> T {
        let slot = self.heap[place];
        let last = self.heap.pop().expect("a heap entry is being removed");
        if place < self.heap.len() {
            self.set(place, last);
            self.sift_down(place);
            self.sift_up(place);
        }
        let entry = &mut self.slots[slot as usize];
        entry.generation = entry.generation.wrapping_add(1);
        let value = entry.value.take().expect("a heap entry holds a value");
        debug_assert!(self.free.len() < self.free.capacity());
        // No allocation: `free` has room for every slot (`push`).
        self.free.push(slot);
        value
    }

    fn sift_up(&mut self, mut place: usize) {
        while place > 0 {
            let parent = (place - 1) / 2;
            if self.key(place) >= self.key(parent) {
                break;
            }
            let (a, b) = (self.heap[place], self.heap[parent]);
            self.set(place, b);
            self.set(parent, a);
            place = parent;
        }
    }

    fn sift_down(&mut self, mut place: usize) {
        let len = self.heap.len();
        loop {
            let (left, right) = (2 * place + 1, 2 * place + 2);
            let mut least = place;
            if left < len && self.key(left) < self.key(least) {
                least = left;
            }
            if right < len && self.key(right) < self.key(least) {
                least = right;
            }
            if least == place {
                break;
            }
            let (a, b) = (self.heap[place], self.heap[least]);
            self.set(place, b);
            self.set(least, a);
            place = least;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn pops_in_deadline_order_then_insertion_order() {
        let mut heap = TimerHeap::new();
        heap.push(30, 'c');
        heap.push(10, 'a');
        heap.push(20, 'b');
        heap.push(10, 'a');
        assert_eq!(heap.peek_deadline(), Some(10));
        assert_eq!(heap.pop_expired(9), None);
        let popped: Vec<char> = core::iter::from_fn(|| heap.pop_expired(25)).collect();
        assert_eq!(popped, ['a', 'a', 'b']);
        assert_eq!(heap.len(), 1);
    }

    /// The defect this replaces: waits that end early must not stay in the
    /// heap. 1000 waits of 15 s, each ended early, leave nothing behind.
    #[test]
    fn entries_cancelled_early_leave_nothing_behind() {
        let mut heap = TimerHeap::<u64>::new();
        for now in 0..1000u64 {
            let id = heap.push(now + 15_000, now);
            assert_eq!(heap.cancel(id), Some(now));
        }
        assert_eq!(heap.len(), 0);
        assert_eq!(heap.slots(), 1, "slots are reused");
        assert_eq!(heap.peek_deadline(), None);
    }

    #[test]
    fn an_old_id_cancels_nothing_once_its_slot_is_reused() {
        let mut heap = TimerHeap::<i32>::new();
        let old = heap.push(5, 1);
        assert_eq!(heap.pop_expired(5), Some(1));
        let new = heap.push(7, 2);
        assert_eq!(heap.cancel(old), None);
        assert_eq!(heap.len(), 1);
        assert_eq!(heap.cancel(new), Some(2));
        assert_eq!(heap.cancel(new), None);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push(u8),
        /// Cancel the k-th id handed out (mod how many), live or not.
        Cancel(usize),
        /// Pop everything due at this time.
        Pop(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => any::<u8>().prop_map(Op::Push),
            2 => any::<usize>().prop_map(Op::Cancel),
            1 => any::<u8>().prop_map(Op::Pop),
        ]
    }

    proptest! {
        /// Against a model (a sorted map of (deadline, order) to value):
        /// same pops in the same order, same cancels, same earliest
        /// deadline, same length, and never more slots than entries were
        /// live at once.
        #[test]
        fn behaves_like_a_sorted_map(ops in proptest::collection::vec(op(), 0..300)) {
            let mut heap = TimerHeap::new();
            let mut model: BTreeMap<(u64, u64), u32> = BTreeMap::new();
            let mut ids: Vec<(TimerId, (u64, u64))> = Vec::new();
            let mut order = 0u64;
            let mut peak = 0usize;
            for (n, op) in ops.into_iter().enumerate() {
                let value = n as u32;
                match op {
                    Op::Push(deadline) => {
                        let id = heap.push(u64::from(deadline), value);
                        model.insert((u64::from(deadline), order), value);
                        ids.push((id, (u64::from(deadline), order)));
                        order += 1;
                    }
                    Op::Cancel(k) => {
                        if !ids.is_empty() {
                            let (id, key) = ids[k % ids.len()];
                            prop_assert_eq!(heap.cancel(id), model.remove(&key));
                        }
                    }
                    Op::Pop(now) => loop {
                        let due = model.first_key_value().filter(|((d, _), _)| *d <= u64::from(now)).map(|(k, v)| (*k, *v));
                        let popped = heap.pop_expired(u64::from(now));
                        prop_assert_eq!(popped, due.map(|(_, v)| v));
                        match due {
                            Some((key, _)) => { model.remove(&key); }
                            None => break,
                        }
                    },
                }
                peak = peak.max(model.len());
                prop_assert_eq!(heap.len(), model.len());
                prop_assert_eq!(heap.peek_deadline(), model.keys().next().map(|(d, _)| *d));
                prop_assert!(heap.slots() <= peak);
            }
        }
    }
}
