//! One CPU's allocator front end: its heap, its remote-free outbox and inbox, and when to drain.
//!
//! The kernel keeps one [`CpuAllocator`] in each CPU's per-CPU block and
//! implements `GlobalAlloc` with it:
//!
//! - `alloc` → [`CpuAllocator::allocate`] on the current CPU;
//! - `dealloc` → [`CpuAllocator::free_local`] if [`CpuAllocator::owns`] the
//!   address, else [`CpuAllocator::free_remote`] with the owner CPU (found
//!   from the boot-time split of memory);
//! - the idle loop → [`CpuAllocator::idle`] before halting.
//!
//! # When remote frees are drained
//!
//! - every [`DRAIN_INTERVAL`] allocations (and then the outbox is flushed
//!   too, so blocks freed for CPUs that never idle still move);
//! - when a size class has no free block left in its spans, before a new
//!   span is cut: blocks of that class may be waiting in the rings;
//! - when a large request finds no page run, before giving up;
//! - on [`CpuAllocator::idle`].
//!
//! Draining with nothing to drain costs one load of each connected ring's
//! tail, so the interval keeps that under one load per allocation even
//! with 64 CPUs.

use super::{
    CpuHeap, FreeError, HeapUsage, RemoteCounters, RemoteError, RemoteInbox, RemoteOutbox, SizeClass, WordMemory,
};
use super::{RemoteConsumer, RemoteProducer};

/// Allocations between two drains of the inbox (and flushes of the outbox).
pub const DRAIN_INTERVAL: u32 = 256;

/// One CPU's figures: its heap and its remote frees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// The CPU.
    pub cpu: usize,
    /// Its heap.
    pub heap: HeapUsage,
    /// Blocks of other CPUs freed here and handed over.
    pub remote_sent: RemoteCounters,
    /// Blocks of other CPUs freed here, not yet handed over (ring full, or
    /// batch not complete).
    pub remote_pending: RemoteCounters,
    /// Blocks of this CPU freed elsewhere and returned to its heap.
    pub remote_received: RemoteCounters,
    /// Blocks received that the heap refused (double or bad frees elsewhere).
    pub remote_refused: u64,
}

/// One CPU's allocator: its heap and its ends of the remote-free rings.
///
/// Owned by its CPU; only that CPU calls its methods.
pub struct CpuAllocator<'ring, const CPUS: usize> {
    cpu: usize,
    heap: CpuHeap,
    outbox: RemoteOutbox<'ring, CPUS>,
    inbox: RemoteInbox<'ring, CPUS>,
    allocations_until_drain: u32,
}

impl<'ring, const CPUS: usize> CpuAllocator<'ring, CPUS> {
    /// The allocator of CPU `cpu` over `heap`, with no ring connected yet,
    /// publishing remote frees in batches of `batch_blocks`.
    pub fn new(cpu: usize, heap: CpuHeap, batch_blocks: u32) -> Self {
        Self {
            cpu,
            heap,
            outbox: RemoteOutbox::new(batch_blocks),
            inbox: RemoteInbox::new(),
            allocations_until_drain: DRAIN_INTERVAL,
        }
    }

    /// Sends blocks owned by `destination` through `producer` (the ring
    /// from this CPU to `destination`).
    pub fn connect_outbound(&mut self, destination: usize, producer: RemoteProducer<'ring>) -> Result<(), RemoteError> {
        self.outbox.connect(destination, producer)
    }

    /// Receives this CPU's blocks freed on `source` from `consumer` (the
    /// ring from `source` to this CPU).
    pub fn connect_inbound(&mut self, source: usize, consumer: RemoteConsumer<'ring>) -> Result<(), RemoteError> {
        self.inbox.connect(source, consumer)
    }

    /// The CPU this allocator belongs to.
    pub fn cpu(&self) -> usize {
        self.cpu
    }

    /// Whether this CPU's heap handed out (or could hand out) `address`.
    pub fn owns(&self, address: u64) -> bool {
        self.heap.contains(address)
    }

    /// The heap, for reports.
    pub fn heap(&self) -> &CpuHeap {
        &self.heap
    }

    /// A block of `size` bytes aligned to `align`, from this CPU's memory;
    /// `None` when it has none left even after taking back what other CPUs
    /// freed (the kernel then reports and fails the request).
    pub fn allocate(&mut self, memory: &mut impl WordMemory, size: usize, align: usize) -> Option<u64> {
        self.allocations_until_drain -= 1;
        if self.allocations_until_drain == 0 {
            self.allocations_until_drain = DRAIN_INTERVAL;
            self.inbox.drain(memory, &mut self.heap);
            self.outbox.flush();
        }
        match SizeClass::of_layout(size, align) {
            Some(class) => {
                if let Some(address) = self.heap.allocate_from_spans(memory, class) {
                    return Some(address);
                }
                // The class ran dry: blocks of it may be waiting in the rings.
                if self.inbox.drain(memory, &mut self.heap).blocks > 0 {
                    if let Some(address) = self.heap.allocate_from_spans(memory, class) {
                        return Some(address);
                    }
                }
                self.heap.allocate_small(memory, class)
            }
            None => self.heap.allocate(memory, size, align).or_else(|| {
                if self.inbox.drain(memory, &mut self.heap).blocks > 0 {
                    self.heap.allocate(memory, size, align)
                } else {
                    None
                }
            }),
        }
    }

    /// Frees a block this CPU owns ([`CpuAllocator::owns`]).
    pub fn free_local(&mut self, memory: &mut impl WordMemory, address: u64) -> Result<u64, FreeError> {
        self.heap.free(memory, address)
    }

    /// Frees a block owned by CPU `owner` (not this one): queues it for its
    /// owner. `bytes` is the size the caller knows (its layout), for the counters.
    pub fn free_remote(
        &mut self,
        memory: &mut impl WordMemory,
        owner: usize,
        address: u64,
        bytes: u64,
    ) -> Result<(), RemoteError> {
        self.outbox.free(memory, owner, address, bytes)
    }

    /// What to do when the CPU has nothing to run: take back blocks freed
    /// elsewhere, and hand over blocks freed here. Gives the blocks taken back.
    pub fn idle(&mut self, memory: &mut impl WordMemory) -> RemoteCounters {
        let drained = self.inbox.drain(memory, &mut self.heap);
        self.outbox.flush();
        drained
    }

    /// Hands over the blocks freed here for other CPUs (complete batches or
    /// not) to their rings; what a full ring cannot take stays pending.
    pub fn flush_outbox(&mut self) {
        self.outbox.flush();
    }

    /// Returns empty spans to the page runs (see [`CpuHeap::trim`]).
    pub fn trim(&mut self, memory: &mut impl WordMemory) -> u64 {
        self.heap.trim(memory)
    }

    /// This CPU's figures.
    pub fn usage(&self) -> Usage {
        Usage {
            cpu: self.cpu,
            heap: self.heap.usage(),
            remote_sent: self.outbox.sent(),
            remote_pending: self.outbox.pending(),
            remote_received: self.inbox.received(),
            remote_refused: self.inbox.refused(),
        }
    }
}

impl<const CPUS: usize> core::fmt::Debug for CpuAllocator<'_, CPUS> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter.debug_struct("CpuAllocator").field("usage", &self.usage()).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::super::shadow::ShadowMemory;
    use super::super::RemoteRing;
    use super::*;

    const BASE: u64 = 0x1_0000_0000;
    const SHARE: u64 = 2 << 20;

    /// Two CPUs with a region each in one memory; CPU 1 frees what CPU 0 allocated.
    #[test]
    fn blocks_freed_elsewhere_come_back_when_the_class_runs_dry() {
        let mut memory = ShadowMemory::new(BASE, 2 * SHARE);
        let mut to_zero = RemoteRing::new();
        let (producer, consumer) = to_zero.split();
        let mut zero = CpuAllocator::<2>::new(0, CpuHeap::new(&mut memory, BASE, SHARE).unwrap(), 8);
        let mut one = CpuAllocator::<2>::new(1, CpuHeap::new(&mut memory, BASE + SHARE, SHARE).unwrap(), 8);
        zero.connect_inbound(1, consumer).unwrap();
        one.connect_outbound(0, producer).unwrap();
        assert_eq!((zero.cpu(), one.cpu()), (0, 1));

        let class = SizeClass::of_size(2048).unwrap();
        let per_span = class.blocks_per_span() as usize;
        let blocks: Vec<u64> = (0..per_span).map(|_| zero.allocate(&mut memory, 2048, 8).unwrap()).collect();
        assert_eq!(zero.usage().heap.spans, 1);
        for block in &blocks {
            assert!(zero.owns(*block) && !one.owns(*block));
            one.free_remote(&mut memory, 0, *block, 2048).unwrap();
        }
        assert_eq!(one.usage().remote_sent.blocks, per_span as u64);
        // The span is full; the next allocation drains instead of cutting a new span.
        let again = zero.allocate(&mut memory, 2048, 8).unwrap();
        assert!(blocks.contains(&again));
        let usage = zero.usage();
        assert_eq!(usage.heap.spans, 1);
        assert_eq!(usage.remote_received.blocks, per_span as u64);
        assert_eq!(usage.heap.small_blocks, 1);
        zero.free_local(&mut memory, again).unwrap();
        assert_eq!(zero.trim(&mut memory), u64::from(class.span_pages()) * 4096);
        zero.heap().check(&memory);
        assert!(format!("{zero:?}").contains("remote_received"));
    }

    #[test]
    fn idle_and_the_drain_interval_move_blocks_both_ways() {
        let mut memory = ShadowMemory::new(BASE, 2 * SHARE);
        let mut to_zero = RemoteRing::new();
        let (producer, consumer) = to_zero.split();
        let mut zero = CpuAllocator::<2>::new(0, CpuHeap::new(&mut memory, BASE, SHARE).unwrap(), 1000);
        let mut one = CpuAllocator::<2>::new(1, CpuHeap::new(&mut memory, BASE + SHARE, SHARE).unwrap(), 1000);
        zero.connect_inbound(1, consumer).unwrap();
        one.connect_outbound(0, producer).unwrap();
        let large = zero.allocate(&mut memory, 100_000, 8).unwrap();
        let small = zero.allocate(&mut memory, 10, 8).unwrap();
        one.free_remote(&mut memory, 0, large, 100_000).unwrap();
        one.free_remote(&mut memory, 0, small, 10).unwrap();
        assert_eq!(one.usage().remote_pending.blocks, 2, "batch not complete");
        // CPU 1 allocating runs its outbox every DRAIN_INTERVAL allocations.
        let mut own = Vec::new();
        for _ in 0..DRAIN_INTERVAL {
            own.push(one.allocate(&mut memory, 64, 8).unwrap());
        }
        assert_eq!(one.usage().remote_pending.blocks, 0);
        assert_eq!(zero.idle(&mut memory).blocks, 2);
        assert_eq!(zero.usage().heap.bytes_in_use, 0);
        for block in own {
            one.free_local(&mut memory, block).unwrap();
        }
        one.heap().check(&memory);
    }

    #[test]
    fn a_large_request_drains_before_failing() {
        let mut memory = ShadowMemory::new(BASE, 2 * SHARE);
        let mut to_zero = RemoteRing::new();
        let (producer, consumer) = to_zero.split();
        let mut zero = CpuAllocator::<2>::new(0, CpuHeap::new(&mut memory, BASE, SHARE).unwrap(), 1);
        let mut one = CpuAllocator::<2>::new(1, CpuHeap::new(&mut memory, BASE + SHARE, SHARE).unwrap(), 1);
        zero.connect_inbound(1, consumer).unwrap();
        one.connect_outbound(0, producer).unwrap();
        let most = (SHARE / 2) as usize;
        let first = zero.allocate(&mut memory, most, 8).unwrap();
        assert_eq!(zero.allocate(&mut memory, most, 8), None, "half plus metadata does not fit twice");
        one.free_remote(&mut memory, 0, first, most as u64).unwrap();
        assert!(zero.allocate(&mut memory, most, 8).is_some(), "the remote free came back in time");
    }
}
