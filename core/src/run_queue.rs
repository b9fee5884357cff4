//! An intrusive O(1) FIFO of nodes linked through their own `next` field: each CPU's run queue.
//!
//! The scheduler keeps the threads ready to run on a CPU in a [`RunQueue`]
//! of thread control blocks: `push_back` when a thread becomes ready,
//! `pop_front` to pick the next one. Both are O(1) and allocate nothing,
//! because the link lives in the node (the control block's `next` field).
//!
//! # Ownership
//!
//! - A node is in at most one queue at a time, and at most once in it.
//! - A queue and every node in it are touched only by the CPU that owns the
//!   queue. The queue holds raw pointers, so it is neither `Send` nor
//!   `Sync`: the compiler keeps it on one thread. A node moves to another
//!   CPU's queue only after it has been popped from this one, through a
//!   hand-over that orders the accesses (the kernel's CPU-pair rings:
//!   release on push, acquire on pop).
//! - The queue does not own its nodes: dropping it forgets the nodes still
//!   queued, it does not free them. The kernel's control blocks are never
//!   freed, so a node outlives every queue it is in.
//!
//! These are the rules of [`RunQueue::push_back`]'s `# Safety` section;
//! everything else is safe.
//!
//! # Why raw pointers and not indexes
//!
//! A queue of indexes into a table would need no `unsafe`, but the kernel's
//! control blocks are not in one table: each is its own allocation, made by
//! whichever CPU first needed it and recycled through that CPU's pool, and
//! the messages between CPUs (spawn, hand-over, wake-up) name a thread by
//! its address. Indexes would need a global table from index to block (a
//! second allocation and an indirection on every pick) or a per-CPU link
//! array sized for every thread of every CPU. The intrusive list costs one
//! pointer in the block and nothing else.
//!
//! # Invariant
//!
//! `len == 0` ⇔ `head` is null ⇔ `tail` is null; otherwise following `next`
//! from `head` visits exactly `len` nodes, the last being `tail`, whose
//! `next` is null.

// The links are raw pointers into nodes the queue does not own; that they
// are live and in no other queue is the caller's promise (see
// `push_back`), which the compiler cannot check.
#![allow(unsafe_code)]

use core::fmt;
use core::ptr;

/// A node that carries its own queue link.
///
/// The functions take raw pointers, not `&self`/`&mut self`: a kernel
/// control block is read by other CPUs (through its atomics) while it is
/// queued, so making a `&mut` to the whole node to set its link would
/// assert an exclusive access that does not hold. Reading or writing the
/// one field through the pointer asserts nothing about the rest.
///
/// # Safety
///
/// Implementers promise that, for a live node, [`Linked::next`] returns
/// the pointer last stored by [`Linked::set_next`] (the link is a plain
/// field of the node, written by nothing else while the node is in a
/// [`RunQueue`]), and that neither function touches anything else. The
/// queue dereferences what `next` returns.
pub unsafe trait Linked {
    /// The node after `node` (null: none).
    ///
    /// # Safety
    ///
    /// `node` points to a live node, and no other thread writes its link.
    unsafe fn next(node: *mut Self) -> *mut Self;

    /// Sets the node after `node`.
    ///
    /// # Safety
    ///
    /// `node` points to a live node, and no other thread reads or writes
    /// its link.
    unsafe fn set_next(node: *mut Self, next: *mut Self);
}

/// A FIFO of nodes linked through [`Linked`]; owned by one CPU.
pub struct RunQueue<T: Linked> {
    /// The node `pop_front` returns next; null when empty.
    head: *mut T,
    /// The node pushed last; its link is null. Null when empty.
    tail: *mut T,
    /// Nodes queued.
    len: usize,
}

impl<T: Linked> RunQueue<T> {
    /// An empty queue.
    pub const fn new() -> Self {
        Self { head: ptr::null_mut(), tail: ptr::null_mut(), len: 0 }
    }

    /// Appends `node`.
    ///
    /// Postcondition: `len` is one more, and `node` comes out of
    /// `pop_front` after every node queued before it.
    ///
    /// # Safety
    ///
    /// - `node` is non-null and points to a live `T`, which stays live and
    ///   in place until it is popped (or the queue is dropped);
    /// - `node` is in no queue (this one included) until it is popped;
    /// - while it is queued, only this queue reads or writes its link, and
    ///   only on the thread (CPU) that uses the queue.
    #[inline]
    pub unsafe fn push_back(&mut self, node: *mut T) {
        debug_assert!(!node.is_null(), "a null node pushed");
        debug_assert!(node != self.tail, "the last node pushed again while queued");
        // SAFETY: `node` is live and ours (the caller's promise); the new
        // last node's link must be null whatever it held before.
        unsafe { T::set_next(node, ptr::null_mut()) };
        if self.tail.is_null() {
            self.head = node;
        } else {
            // SAFETY: `tail` is a queued node: live and touched only by this
            // queue (promised when it was pushed).
            unsafe { T::set_next(self.tail, node) };
        }
        self.tail = node;
        self.len += 1;
    }

    /// Removes and returns the node queued first; `None` when empty.
    ///
    /// The returned node's link is null again: it is in no queue and may be
    /// pushed on this one or, after a hand-over, another CPU's.
    #[inline]
    pub fn pop_front(&mut self) -> Option<*mut T> {
        let node = self.head;
        if node.is_null() {
            debug_assert_eq!(self.len, 0);
            return None;
        }
        // SAFETY: `head` is a queued node: live and touched only by this
        // queue (promised when it was pushed).
        self.head = unsafe { T::next(node) };
        // SAFETY: as above; clearing the link leaves no stale pointer
        // into this queue in a node that is no longer in it.
        unsafe { T::set_next(node, ptr::null_mut()) };
        if self.head.is_null() {
            self.tail = ptr::null_mut();
        }
        self.len -= 1;
        debug_assert_eq!(self.head.is_null(), self.len == 0);
        Some(node)
    }

    /// Whether no node is queued.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// How many nodes are queued (kept as a counter: O(1)).
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }
}

impl<T: Linked> Default for RunQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Linked> fmt::Debug for RunQueue<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("RunQueue").field("len", &self.len).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    /// A test node: a number and the link.
    struct Node {
        value: usize,
        next: *mut Node,
    }

    // SAFETY: `next` is a plain field, read and written only here.
    unsafe impl Linked for Node {
        unsafe fn next(node: *mut Self) -> *mut Self {
            // SAFETY: the caller promises `node` is live.
            unsafe { (*node).next }
        }

        unsafe fn set_next(node: *mut Self, next: *mut Self) {
            // SAFETY: as above.
            unsafe { (*node).next = next }
        }
    }

    /// `count` nodes numbered from 0, at stable addresses for the test's
    /// length (the vector is never grown after `pointers` is taken).
    struct Nodes {
        storage: Vec<Node>,
    }

    impl Nodes {
        fn new(count: usize) -> Self {
            Self { storage: (0..count).map(|value| Node { value, next: ptr::null_mut() }).collect() }
        }

        /// Pointers to every node, all derived from one mutable borrow so
        /// they may be used side by side.
        fn pointers(&mut self) -> Vec<*mut Node> {
            let base = self.storage.as_mut_ptr();
            // SAFETY: `index < len`: inside the allocation.
            (0..self.storage.len()).map(|index| unsafe { base.add(index) }).collect()
        }
    }

    /// The value of a popped node.
    fn value(node: *mut Node) -> usize {
        // SAFETY: test nodes live as long as their `Nodes`, which outlives
        // every use here.
        unsafe { (*node).value }
    }

    /// The link of a node (null unless queued behind another).
    fn link(node: *mut Node) -> *mut Node {
        // SAFETY: as in `value`.
        unsafe { (*node).next }
    }

    #[test]
    fn an_empty_queue_pops_nothing() {
        let mut queue = RunQueue::<Node>::new();
        assert!(queue.is_empty());
        assert_eq!(queue.len(), 0);
        assert_eq!(queue.pop_front(), None);
        assert!(queue.is_empty());
        assert_eq!(format!("{queue:?}"), "RunQueue { len: 0 }");
    }

    #[test]
    fn nodes_come_out_in_the_order_they_went_in() {
        let mut nodes = Nodes::new(5);
        let pointers = nodes.pointers();
        let mut queue = RunQueue::new();
        for (count, node) in pointers.iter().enumerate() {
            // SAFETY: live nodes, each pushed once.
            unsafe { queue.push_back(*node) };
            assert_eq!(queue.len(), count + 1);
            assert!(!queue.is_empty());
        }
        for expected in 0..5 {
            let node = queue.pop_front().expect("five queued");
            assert_eq!(value(node), expected);
            assert!(link(node).is_null(), "a popped node is unlinked");
            assert_eq!(queue.len(), 4 - expected);
        }
        assert!(queue.is_empty());
        assert_eq!(queue.pop_front(), None);
    }

    #[test]
    fn interleaved_pushes_and_pops_keep_fifo_order() {
        let mut nodes = Nodes::new(4);
        let pointers = nodes.pointers();
        let mut queue = RunQueue::new();
        // SAFETY: live nodes, none pushed while queued (and so below).
        unsafe {
            queue.push_back(pointers[0]);
            queue.push_back(pointers[1]);
        }
        assert_eq!(queue.pop_front().map(value), Some(0));
        // SAFETY: see above.
        unsafe { queue.push_back(pointers[2]) };
        assert_eq!(queue.pop_front().map(value), Some(1));
        assert_eq!(queue.pop_front().map(value), Some(2));
        assert!(queue.is_empty(), "head and tail both reset after the last pop");
        // SAFETY: see above; node 0 was popped, so it may go in again.
        unsafe {
            queue.push_back(pointers[3]);
            queue.push_back(pointers[0]);
        }
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.pop_front().map(value), Some(3));
        assert_eq!(queue.pop_front().map(value), Some(0));
        assert_eq!(queue.pop_front(), None);
    }

    /// What the scheduler does on `yield_now`: pop the next thread, push
    /// the current one back; the same few nodes go round and round.
    #[test]
    fn the_same_nodes_go_round_many_times() {
        let mut nodes = Nodes::new(3);
        let pointers = nodes.pointers();
        let mut queue = RunQueue::new();
        for node in &pointers {
            // SAFETY: live nodes, each pushed once.
            unsafe { queue.push_back(*node) };
        }
        for round in 0..1000 {
            let node = queue.pop_front().expect("never empty");
            assert_eq!(value(node), round % 3);
            // SAFETY: just popped: in no queue.
            unsafe { queue.push_back(node) };
            assert_eq!(queue.len(), 3);
        }
    }

    #[test]
    fn a_stale_link_in_a_pushed_node_is_overwritten() {
        let mut nodes = Nodes::new(2);
        let pointers = nodes.pointers();
        let first = pointers[0];
        // SAFETY: test setup; node 0 is in no queue, its link is just junk.
        unsafe { (*first).next = pointers[1] };
        let mut queue = RunQueue::new();
        // SAFETY: a live node in no queue.
        unsafe { queue.push_back(pointers[0]) };
        assert_eq!(queue.pop_front().map(value), Some(0));
        assert_eq!(queue.pop_front(), None, "the junk link was not followed");
    }

    /// One step of the property test.
    #[derive(Debug, Clone)]
    enum Step {
        /// Pushes node `pick` if it is not queued (pushing a queued
        /// node breaks `push_back`'s contract).
        Push {
            pick: usize,
        },
        Pop,
    }

    const NODES: usize = 16;

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0..NODES).prop_map(|pick| Step::Push { pick }),
            2 => Just(Step::Pop),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any sequence of pushes and pops behaves like a `VecDeque`.
        #[test]
        fn behaves_like_a_vecdeque(steps in prop::collection::vec(step(), 0..200)) {
            let mut nodes = Nodes::new(NODES);
            let pointers = nodes.pointers();
            let mut queue = RunQueue::new();
            let mut model = VecDeque::new();
            let mut queued = [false; NODES];
            for step in steps {
                match step {
                    Step::Push { pick } => {
                        if !queued[pick] {
                            // SAFETY: a live node, not queued (checked above).
                            unsafe { queue.push_back(pointers[pick]) };
                            queued[pick] = true;
                            model.push_back(pick);
                        }
                    }
                    Step::Pop => {
                        let popped = queue.pop_front().map(value);
                        prop_assert_eq!(popped, model.pop_front());
                        if let Some(pick) = popped {
                            queued[pick] = false;
                            prop_assert!(link(pointers[pick]).is_null());
                        }
                    }
                }
                prop_assert_eq!(queue.len(), model.len());
                prop_assert_eq!(queue.is_empty(), model.is_empty());
            }
            while let Some(node) = queue.pop_front() {
                prop_assert_eq!(Some(value(node)), model.pop_front());
            }
            prop_assert!(model.is_empty());
        }
    }
}
