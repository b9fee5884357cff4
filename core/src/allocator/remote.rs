//! Remote frees: a block freed on another CPU goes back to its owner in batches, through an SPSC ring.
//!
//! The original TORO pushed such a block straight onto the owner's free
//! list, racing with the owner. Here the freeing CPU never touches the
//! owner's heap:
//!
//! 1. **Outbox** (freeing CPU, private): per destination CPU, a list of
//!    freed blocks threaded through the blocks themselves (each block's first
//!    word holds the previous block's address), with a count.
//! 2. **Publish**: every [`RemoteOutbox::batch_blocks`] blocks, and on
//!    [`RemoteOutbox::flush`] (idle), the whole list goes into the ring for
//!    that (source, destination) pair as one [`RemoteBatch`] (first block,
//!    count). The ring's `Release` store of its tail publishes the link
//!    words written before it. If the ring is full, the list simply keeps
//!    growing and the next free or flush tries again: nothing is lost,
//!    nothing waits.
//! 3. **Inbox** (owner CPU): [`RemoteInbox::drain`] pops each source's ring
//!    (`Acquire`) and frees every block of every batch into the owner's
//!    [`CpuHeap`], reading each block's link before the free overwrites it.
//!
//! Between steps 1 and 3 a block is owned by the freeing CPU, then by the
//! ring, then by the owner: exactly one CPU touches its words at any time,
//! and the ring orders the hand-over. No atomic read-modify-write anywhere.
//!
//! The hand-off is model-checked with loom (`core/tests/loom.rs`, see
//! [`crate::spsc`] for the command).

use core::fmt;

use super::{CpuHeap, FreeError, WordMemory};
use crate::spsc::{Consumer, Producer, Ring};

/// Slots in each remote-free ring. Each slot carries a whole batch, and a
/// full ring only delays publication, so a few slots are enough; 16 slots
/// make a ring 384 bytes (64 CPUs: 4096 rings, 1.5 MiB in all).
pub const REMOTE_RING_SLOTS: usize = 16;

/// Blocks per batch unless the kernel picks otherwise: one ring push per 64
/// remote frees.
pub const DEFAULT_BATCH_BLOCKS: u32 = 64;

/// A list of freed blocks handed to their owner: `blocks` blocks starting at
/// `first`, each block's first word holding the next one's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteBatch {
    /// Address of the most recently freed block of the batch.
    pub first: u64,
    /// Number of blocks in the list.
    pub blocks: u64,
}

/// The ring from one CPU to another for remote frees (`SLOTS` other than
/// the default only in tests, to reach the full ring quickly).
pub type RemoteRing<const SLOTS: usize = REMOTE_RING_SLOTS> = Ring<RemoteBatch, SLOTS>;
/// The freeing CPU's end of a [`RemoteRing`].
pub type RemoteProducer<'ring, const SLOTS: usize = REMOTE_RING_SLOTS> = Producer<'ring, RemoteBatch, SLOTS>;
/// The owner CPU's end of a [`RemoteRing`].
pub type RemoteConsumer<'ring, const SLOTS: usize = REMOTE_RING_SLOTS> = Consumer<'ring, RemoteBatch, SLOTS>;

/// Batches, blocks and bytes of remote frees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RemoteCounters {
    /// Batches.
    pub batches: u64,
    /// Blocks.
    pub blocks: u64,
    /// Bytes: on the sending side the sizes the freeing code gave (its
    /// layouts), on the receiving side the block sizes the heap freed.
    pub bytes: u64,
}

impl RemoteCounters {
    fn add(&mut self, other: Self) {
        self.batches += other.batches;
        self.blocks += other.blocks;
        self.bytes += other.bytes;
    }
}

/// A CPU number out of range for the outbox or inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteError {
    /// There is no lane for this CPU (it is not below the `CPUS` parameter).
    NoSuchCpu {
        /// The CPU number given.
        cpu: usize,
    },
}

impl fmt::Display for RemoteError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchCpu { cpu } => write!(formatter, "no remote-free lane for CPU {cpu}"),
        }
    }
}

/// The freeing CPU's list of blocks for one destination.
struct Lane<'ring, const SLOTS: usize> {
    producer: Option<RemoteProducer<'ring, SLOTS>>,
    /// First block of the list not yet published (0: none).
    first: u64,
    blocks: u64,
    bytes: u64,
}

impl<const SLOTS: usize> Lane<'_, SLOTS> {
    const EMPTY: Self = Self { producer: None, first: 0, blocks: 0, bytes: 0 };

    /// Hands the list to the ring if there is one with room.
    fn publish(&mut self, sent: &mut RemoteCounters) {
        let Some(producer) = self.producer.as_mut() else {
            return;
        };
        if self.blocks == 0 {
            return;
        }
        let batch = RemoteBatch { first: self.first, blocks: self.blocks };
        if producer.push(batch).is_ok() {
            sent.add(RemoteCounters { batches: 1, blocks: self.blocks, bytes: self.bytes });
            self.first = 0;
            self.blocks = 0;
            self.bytes = 0;
        }
    }
}

/// One CPU's outgoing remote frees, one lane per destination CPU `0..CPUS`.
///
/// Owned by the freeing CPU (it lives in that CPU's per-CPU block); it holds
/// the producer ends of the rings from this CPU to every other.
pub struct RemoteOutbox<'ring, const CPUS: usize, const SLOTS: usize = REMOTE_RING_SLOTS> {
    lanes: [Lane<'ring, SLOTS>; CPUS],
    /// Lanes `0..used` may hold blocks or a ring (one past the highest
    /// destination connected or freed for): flushes and counts look at
    /// those only, not at all `CPUS`.
    used: usize,
    batch_blocks: u64,
    sent: RemoteCounters,
}

impl<'ring, const CPUS: usize, const SLOTS: usize> RemoteOutbox<'ring, CPUS, SLOTS> {
    /// An outbox with no ring connected, publishing every `batch_blocks`
    /// blocks (at least 1).
    pub const fn new(batch_blocks: u32) -> Self {
        Self {
            lanes: [const { Lane::EMPTY }; CPUS],
            used: 0,
            batch_blocks: if batch_blocks == 0 { 1 } else { batch_blocks as u64 },
            sent: RemoteCounters { batches: 0, blocks: 0, bytes: 0 },
        }
    }

    /// Uses `producer` for blocks owned by CPU `destination`. Blocks freed for
    /// a destination with no ring yet wait in its lane.
    pub fn connect(&mut self, destination: usize, producer: RemoteProducer<'ring, SLOTS>) -> Result<(), RemoteError> {
        let lane = self.lanes.get_mut(destination).ok_or(RemoteError::NoSuchCpu { cpu: destination })?;
        lane.producer = Some(producer);
        self.used = self.used.max(destination + 1);
        Ok(())
    }

    /// Blocks per batch.
    pub fn batch_blocks(&self) -> u64 {
        self.batch_blocks
    }

    /// Queues the block at `address` (`bytes` long, as the freeing code
    /// knows it) for its owner, CPU `destination`, and publishes the lane
    /// when it holds another whole batch. Writes the block's first word.
    ///
    /// The block must be one the destination handed out and nobody uses any
    /// more: from here on it belongs to the outbox.
    pub fn free(
        &mut self,
        memory: &mut impl WordMemory,
        destination: usize,
        address: u64,
        bytes: u64,
    ) -> Result<(), RemoteError> {
        let lane = self.lanes.get_mut(destination).ok_or(RemoteError::NoSuchCpu { cpu: destination })?;
        self.used = self.used.max(destination + 1);
        memory.store(address, lane.first);
        lane.first = address;
        lane.blocks += 1;
        lane.bytes += bytes;
        // Try at each whole batch: a full ring costs one failed push per
        // `batch_blocks` frees, not one per free.
        if lane.blocks % self.batch_blocks == 0 {
            lane.publish(&mut self.sent);
        }
        Ok(())
    }

    /// Publishes every lane that has blocks waiting (called when the CPU
    /// idles, and by the allocator every few hundred allocations); gives the
    /// blocks still waiting because their ring was full or not connected.
    pub fn flush(&mut self) -> u64 {
        let mut waiting = 0;
        for lane in &mut self.lanes[..self.used] {
            lane.publish(&mut self.sent);
            waiting += lane.blocks;
        }
        waiting
    }

    /// Blocks published so far.
    pub fn sent(&self) -> RemoteCounters {
        self.sent
    }

    /// Blocks freed but not yet published (`batches`: lanes holding some).
    pub fn pending(&self) -> RemoteCounters {
        let mut pending = RemoteCounters::default();
        for lane in self.lanes[..self.used].iter().filter(|lane| lane.blocks > 0) {
            pending.add(RemoteCounters { batches: 1, blocks: lane.blocks, bytes: lane.bytes });
        }
        pending
    }
}

impl<const CPUS: usize, const SLOTS: usize> fmt::Debug for RemoteOutbox<'_, CPUS, SLOTS> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("RemoteOutbox")
            .field("batch_blocks", &self.batch_blocks)
            .field("sent", &self.sent)
            .field("pending", &self.pending())
            .finish()
    }
}

/// One CPU's incoming remote frees: the consumer ends of the rings from every
/// CPU `0..CPUS` to this one.
///
/// Owned by the owner CPU, which drains it into its own heap.
pub struct RemoteInbox<'ring, const CPUS: usize, const SLOTS: usize = REMOTE_RING_SLOTS> {
    sources: [Option<RemoteConsumer<'ring, SLOTS>>; CPUS],
    /// One past the highest source connected: drains look at `0..used`.
    used: usize,
    received: RemoteCounters,
    refused: u64,
}

impl<'ring, const CPUS: usize, const SLOTS: usize> RemoteInbox<'ring, CPUS, SLOTS> {
    /// An inbox with no ring connected.
    pub const fn new() -> Self {
        Self {
            sources: [const { None }; CPUS],
            used: 0,
            received: RemoteCounters { batches: 0, blocks: 0, bytes: 0 },
            refused: 0,
        }
    }

    /// Drains `consumer` for blocks freed on CPU `source`.
    pub fn connect(&mut self, source: usize, consumer: RemoteConsumer<'ring, SLOTS>) -> Result<(), RemoteError> {
        let slot = self.sources.get_mut(source).ok_or(RemoteError::NoSuchCpu { cpu: source })?;
        *slot = Some(consumer);
        self.used = self.used.max(source + 1);
        Ok(())
    }

    /// Frees into `heap` every block that has arrived, and counts them.
    ///
    /// O(blocks received). A block the heap refuses (a caller's double free
    /// on another CPU, say) is counted in [`RemoteInbox::refused`], not lost
    /// silently.
    pub fn drain(&mut self, memory: &mut impl WordMemory, heap: &mut CpuHeap) -> RemoteCounters {
        self.drain_with(memory, |memory, block| heap.free(memory, block))
    }

    /// [`RemoteInbox::drain`] with `free` doing each block's free (given
    /// the block, after its link is read; it gives the bytes freed): the
    /// allocator front end keeps some in its cache.
    pub fn drain_with<M: WordMemory>(
        &mut self,
        memory: &mut M,
        mut free: impl FnMut(&mut M, u64) -> Result<u64, FreeError>,
    ) -> RemoteCounters {
        let mut drained = RemoteCounters::default();
        for consumer in self.sources[..self.used].iter_mut().flatten() {
            while let Some(batch) = consumer.pop() {
                drained.batches += 1;
                let mut block = batch.first;
                let mut left = batch.blocks;
                while left > 0 && block != 0 {
                    // Read the link before the free reuses the word.
                    let next = memory.load(block);
                    match free(memory, block) {
                        Ok(bytes) => {
                            drained.blocks += 1;
                            drained.bytes += bytes;
                        }
                        Err(_) => self.refused += 1,
                    }
                    block = next;
                    left -= 1;
                }
                // A list shorter than its count: those blocks are lost to
                // the heap; count them so a report shows it.
                self.refused += left;
            }
        }
        self.received.add(drained);
        drained
    }

    /// Blocks received and freed so far.
    pub fn received(&self) -> RemoteCounters {
        self.received
    }

    /// Blocks received that the heap refused to free.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

impl<const CPUS: usize, const SLOTS: usize> Default for RemoteInbox<'_, CPUS, SLOTS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const CPUS: usize, const SLOTS: usize> fmt::Debug for RemoteInbox<'_, CPUS, SLOTS> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("RemoteInbox").field("received", &self.received).field("refused", &self.refused).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::super::shadow::ShadowMemory;
    use super::*;

    const BASE: u64 = 0x2000_0000;
    const LENGTH: u64 = 4 << 20;

    #[test]
    fn batches_reach_the_owner_and_every_block_is_freed_once() {
        let mut memory = ShadowMemory::new(BASE, LENGTH);
        let mut heap = CpuHeap::new(&mut memory, BASE, LENGTH).unwrap();
        let blocks: Vec<u64> = (0..10).map(|_| heap.allocate(&mut memory, 100, 8).unwrap()).collect();
        let mut ring = RemoteRing::new();
        let (producer, consumer) = ring.split();
        let mut outbox = RemoteOutbox::<4>::new(4);
        let mut inbox = RemoteInbox::<4>::new();
        outbox.connect(1, producer).unwrap();
        inbox.connect(0, consumer).unwrap();
        for block in &blocks {
            outbox.free(&mut memory, 1, *block, 100).unwrap();
        }
        // Two batches of four published, two blocks waiting.
        assert_eq!(outbox.sent(), RemoteCounters { batches: 2, blocks: 8, bytes: 800 });
        assert_eq!(outbox.pending(), RemoteCounters { batches: 1, blocks: 2, bytes: 200 });
        let drained = inbox.drain(&mut memory, &mut heap);
        assert_eq!(drained, RemoteCounters { batches: 2, blocks: 8, bytes: 8 * 112 });
        assert_eq!(outbox.flush(), 0);
        inbox.drain(&mut memory, &mut heap);
        assert_eq!(inbox.received(), RemoteCounters { batches: 3, blocks: 10, bytes: 10 * 112 });
        assert_eq!(inbox.refused(), 0);
        assert_eq!(heap.usage().bytes_in_use, 0);
        heap.check(&memory);
    }

    #[test]
    fn a_full_ring_makes_the_list_grow_and_nothing_is_lost() {
        let mut memory = ShadowMemory::new(BASE, LENGTH);
        let mut heap = CpuHeap::new(&mut memory, BASE, LENGTH).unwrap();
        let count = REMOTE_RING_SLOTS * 3 + 5;
        let blocks: Vec<u64> = (0..count).map(|_| heap.allocate(&mut memory, 16, 8).unwrap()).collect();
        let mut ring = RemoteRing::new();
        let (producer, consumer) = ring.split();
        let mut outbox = RemoteOutbox::<2>::new(1);
        let mut inbox = RemoteInbox::<2>::new();
        outbox.connect(0, producer).unwrap();
        inbox.connect(1, consumer).unwrap();
        for block in &blocks {
            outbox.free(&mut memory, 0, *block, 16).unwrap();
        }
        // The ring took one block per batch until it was full; the rest wait.
        assert_eq!(outbox.sent().batches, REMOTE_RING_SLOTS as u64);
        assert_eq!(outbox.pending().blocks, (count - REMOTE_RING_SLOTS) as u64);
        assert_eq!(outbox.flush(), (count - REMOTE_RING_SLOTS) as u64, "still full");
        inbox.drain(&mut memory, &mut heap);
        assert_eq!(outbox.flush(), 0, "one batch holds everything that waited");
        inbox.drain(&mut memory, &mut heap);
        assert_eq!(inbox.received().blocks, count as u64);
        assert_eq!(outbox.sent().blocks, count as u64);
        assert_eq!(heap.usage().small_blocks, 0);
        heap.check(&memory);
    }

    #[test]
    fn unconnected_and_unknown_lanes() {
        let mut memory = ShadowMemory::new(BASE, LENGTH);
        let mut heap = CpuHeap::new(&mut memory, BASE, LENGTH).unwrap();
        let block = heap.allocate(&mut memory, 16, 8).unwrap();
        let mut outbox = RemoteOutbox::<2>::new(0);
        assert_eq!(outbox.batch_blocks(), 1);
        assert_eq!(outbox.free(&mut memory, 2, block, 16), Err(RemoteError::NoSuchCpu { cpu: 2 }));
        outbox.free(&mut memory, 1, block, 16).unwrap();
        assert_eq!(outbox.flush(), 1, "no ring connected yet: the block waits");
        let mut ring = RemoteRing::new();
        let (producer, consumer) = ring.split();
        outbox.connect(1, producer).unwrap();
        assert_eq!(outbox.flush(), 0);
        let mut inbox = RemoteInbox::<2>::default();
        assert_eq!(inbox.connect(5, consumer).unwrap_err().to_string(), "no remote-free lane for CPU 5");
        assert!(format!("{outbox:?} {inbox:?}").contains("RemoteOutbox"));
    }

    #[test]
    fn a_ring_is_as_small_as_the_docs_say() {
        assert_eq!(core::mem::size_of::<RemoteRing>(), 384);
        println!(
            "per CPU, 64 CPUs: outbox {} bytes, inbox {} bytes",
            core::mem::size_of::<RemoteOutbox<'_, 64>>(),
            core::mem::size_of::<RemoteInbox<'_, 64>>()
        );
    }

    #[test]
    fn refused_blocks_are_counted() {
        let mut memory = ShadowMemory::new(BASE, LENGTH);
        let mut heap = CpuHeap::new(&mut memory, BASE, LENGTH).unwrap();
        let block = heap.allocate(&mut memory, 16, 8).unwrap();
        heap.free(&mut memory, block).unwrap();
        let mut ring = RemoteRing::new();
        let (mut producer, consumer) = ring.split();
        let mut inbox = RemoteInbox::<1>::new();
        inbox.connect(0, consumer).unwrap();
        // A double free sent from elsewhere, and a batch claiming more blocks
        // than its list holds.
        memory.store(block + 16, 0);
        producer.push(RemoteBatch { first: block + 16, blocks: 3 }).unwrap();
        let drained = inbox.drain(&mut memory, &mut heap);
        assert_eq!((drained.batches, drained.blocks), (1, 0));
        assert_eq!(inbox.refused(), 3);
        heap.check(&memory);
    }
}
