//! Loom models of the cross-CPU paths: the SPSC ring, and remote frees handed to their owner.
//!
//! Loom runs each model under every interleaving (and every reordering the
//! C++/Rust memory model allows for the `Acquire`/`Release` accesses) and
//! checks every access to a `loom::cell::UnsafeCell` against the
//! happens-before order, so a missing ordering shows up as a failed model,
//! not as a once-a-week corruption. Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p toro-core --release --test loom
//! ```
//!
//! The models are kept small (a few items, rings of 1 and 2 slots) so the
//! whole file runs in seconds.

#![cfg(loom)]

use std::collections::HashMap;

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use toro_core::allocator::{CpuHeap, RemoteInbox, RemoteOutbox, RemoteRing, WordMemory};
use toro_core::spsc::Ring;

/// Pushes `0..items` through a ring of `N` slots from one thread to another,
/// retrying on full and empty; checks order and that each item arrives once.
fn pass_items<const N: usize>(items: u32) {
    loom::model(move || {
        let ring = Arc::new(Ring::<u32, N>::new());
        let producer_ring = Arc::clone(&ring);
        let producer = thread::spawn(move || {
            // SAFETY: the only producer of this ring.
            let mut producer = unsafe { producer_ring.producer() };
            for item in 0..items {
                let mut item = item;
                while let Err(back) = producer.push(item) {
                    item = back;
                    thread::yield_now();
                }
            }
        });
        // SAFETY: the only consumer of this ring.
        let mut consumer = unsafe { ring.consumer() };
        let mut expected = 0;
        while expected < items {
            match consumer.pop() {
                Some(item) => {
                    assert_eq!(item, expected, "in order, once each");
                    expected += 1;
                }
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert_eq!(consumer.pop(), None);
        assert!(ring.is_empty());
    });
}

#[test]
fn ring_of_one_slot_is_full_after_every_push() {
    pass_items::<1>(3);
}

#[test]
fn ring_of_two_slots_wraps_around() {
    pass_items::<2>(3);
}

/// Items still in the ring when it is dropped are dropped once, whichever
/// thread pushed them.
#[test]
fn ring_drops_what_is_left() {
    loom::model(|| {
        let item = Arc::new(());
        let ring = Arc::new(Ring::<Arc<()>, 2>::new());
        let producer_ring = Arc::clone(&ring);
        let producer_item = Arc::clone(&item);
        thread::spawn(move || {
            // SAFETY: the only producer of this ring.
            let mut producer = unsafe { producer_ring.producer() };
            assert!(producer.push(Arc::clone(&producer_item)).is_ok());
            assert!(producer.push(producer_item).is_ok());
        })
        .join()
        .unwrap();
        // SAFETY: the only consumer of this ring.
        let popped = unsafe { ring.consumer() }.pop();
        assert!(popped.is_some());
        drop(popped);
        assert_eq!(Arc::strong_count(&item), 2);
        drop(ring);
        assert_eq!(Arc::strong_count(&item), 1);
    });
}

/// The first word of each block in flight, as loom cells: the words the
/// freeing CPU writes (list links) and the owner reads, so loom checks that
/// the ring orders them.
struct BlockWords {
    cells: Vec<(u64, UnsafeCell<u64>)>,
}

/// One CPU's view of memory: the shared block words, and everything else
/// (the owner's heap metadata, which no other CPU touches) in a private map.
struct CpuMemory {
    shared: Arc<BlockWords>,
    private: HashMap<u64, u64>,
}

impl CpuMemory {
    fn cell(&self, address: u64) -> Option<&UnsafeCell<u64>> {
        self.shared.cells.iter().find(|(block, _)| *block == address).map(|(_, cell)| cell)
    }
}

impl WordMemory for CpuMemory {
    fn load(&self, address: u64) -> u64 {
        match self.cell(address) {
            // SAFETY: loom checks that no write to the cell is concurrent
            // with this read, and fails the model if one is.
            Some(cell) => cell.with(|word| unsafe { *word }),
            None => self.private.get(&address).copied().unwrap_or(0),
        }
    }

    fn store(&mut self, address: u64, value: u64) {
        match self.cell(address) {
            // SAFETY: loom checks that no other access to the cell is
            // concurrent with this write, and fails the model if one is.
            Some(cell) => cell.with_mut(|word| unsafe { *word = value }),
            None => {
                self.private.insert(address, value);
            }
        }
    }
}

/// CPU 0 allocates `blocks` blocks; CPU 1 frees them through an outbox that
/// publishes every `batch_blocks` blocks into a ring of `SLOTS` slots to CPU
/// 0, then flushes until everything is out; CPU 0 drains until it has them
/// back. Each block must come back exactly once, CPU 0's heap must end with
/// nothing in use, and no access to a block word may race.
fn hand_off<const SLOTS: usize>(blocks: u64, batch_blocks: u32) {
    const BASE: u64 = 0x10_0000;
    const LENGTH: u64 = 64 * 4096;
    loom::model(move || {
        let mut owner_memory =
            CpuMemory { shared: Arc::new(BlockWords { cells: Vec::new() }), private: HashMap::new() };
        let mut heap = CpuHeap::new(&mut owner_memory, BASE, LENGTH).unwrap();
        let addresses: Vec<u64> = (0..blocks).map(|_| heap.allocate(&mut owner_memory, 64, 8).unwrap()).collect();
        let shared = Arc::new(BlockWords {
            cells: addresses.iter().map(|block| (*block, UnsafeCell::new(owner_memory.load(*block)))).collect(),
        });
        owner_memory.shared = Arc::clone(&shared);
        let ring = Arc::new(RemoteRing::<SLOTS>::new());

        let producer_ring = Arc::clone(&ring);
        let freeing_cpu = thread::spawn(move || {
            let mut memory = CpuMemory { shared, private: HashMap::new() };
            let mut outbox = RemoteOutbox::<2, SLOTS>::new(batch_blocks);
            // SAFETY: the only producer of the ring from CPU 1 to CPU 0.
            outbox.connect(0, unsafe { producer_ring.producer() }).unwrap();
            for block in addresses {
                outbox.free(&mut memory, 0, block, 64).unwrap();
            }
            while outbox.flush() > 0 {
                thread::yield_now();
            }
            assert_eq!(outbox.sent().blocks, blocks);
        });

        let mut inbox = RemoteInbox::<2, SLOTS>::new();
        // SAFETY: the only consumer of the ring from CPU 1 to CPU 0.
        inbox.connect(1, unsafe { ring.consumer() }).unwrap();
        while inbox.received().blocks < blocks {
            if inbox.drain(&mut owner_memory, &mut heap).blocks == 0 {
                thread::yield_now();
            }
        }
        freeing_cpu.join().unwrap();
        inbox.drain(&mut owner_memory, &mut heap);
        assert_eq!(inbox.received().blocks, blocks, "each block once");
        assert_eq!(inbox.refused(), 0);
        let usage = heap.usage();
        assert_eq!((usage.small_blocks, usage.bytes_in_use), (0, 0));
    });
}

/// The kernel's ring size: batches of two, the last one flushed.
#[test]
fn remote_frees_come_back_to_their_owner_exactly_once() {
    hand_off::<{ toro_core::allocator::REMOTE_RING_SLOTS }>(3, 2);
}

/// A one-slot ring, one block per batch: the ring is full at once, blocks
/// pile up in the outbox and go out as one batch when the owner has drained.
#[test]
fn remote_frees_wait_out_a_full_ring() {
    hand_off::<1>(3, 1);
}
