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
//!
//! # The free-block cache
//!
//! A small block freed on its own CPU with its layout known
//! ([`CpuAllocator::free_local_sized`], what `GlobalAlloc::dealloc` gives)
//! goes first into a per-class cache: a list threaded through the freed
//! blocks, at most [`CACHE_BLOCKS`] per class and [`CACHE_BYTES`] in all.
//! The next allocation of that class pops it: no span descriptor, no page
//! table word is read on either side, the way glibc's tcache and mimalloc's
//! local free lists work. The heap counts cached blocks as in use (their
//! spans stay), so [`CpuAllocator::usage`] moves them to free; the cache is
//! emptied into the heap when the CPU idles, on [`CpuAllocator::trim`], and
//! before a request fails, so it never causes a failure. The layout given
//! to the free must be the allocation's (Rust's `GlobalAlloc` contract):
//! the class is computed from it, not read from the heap's metadata, and a
//! block freed twice would be handed out twice (the heap's own checks see
//! only blocks that reach it).

use super::{
    CpuHeap, FreeError, HeapUsage, RemoteCounters, RemoteError, RemoteInbox, RemoteOutbox, SizeClass, WordMemory,
    CLASS_COUNT,
};
use super::{RemoteConsumer, RemoteProducer};

/// Allocations between two drains of the inbox (and flushes of the outbox).
pub const DRAIN_INTERVAL: u32 = 256;

/// Freed blocks the cache keeps per class, at most.
pub const CACHE_BLOCKS: u32 = 16;
/// Bytes the cache keeps in all, at most.
pub const CACHE_BYTES: u64 = 128 * 1024;

/// Where a block freed on another CPU carries its size class (index + 1; 0:
/// not a small block): its second word (every block has two).
const CLASS_HINT_OFFSET: u64 = 8;

/// Puts `address` (a free block of `class`) in the cache if that has room;
/// whether it did.
#[inline(always)]
fn cache_block(
    cache: &mut [Cached; CLASS_COUNT],
    cached_bytes: &mut u64,
    memory: &mut impl WordMemory,
    address: u64,
    class: SizeClass,
) -> bool {
    let cached = &mut cache[class.index()];
    let bytes = class.block_size();
    // The room test first, the way it reads: the caching path is the
    // straight line through the compiled code.
    if cached.blocks < CACHE_BLOCKS && *cached_bytes + bytes <= CACHE_BYTES && address != 0 {
        memory.store(address, cached.head);
        cached.head = address;
        cached.blocks += 1;
        *cached_bytes += bytes;
        return true;
    }
    false
}

/// One class's cached blocks: a list through their first words.
#[derive(Clone, Copy, Debug)]
struct Cached {
    /// The first block (0: none).
    head: u64,
    blocks: u32,
}

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

/// The byte figures of [`Usage`] that other CPUs read (`toro::memory`
/// publishes them at every idle pass): no block counts, which sum over
/// every size class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bytes {
    /// `Usage::heap.bytes_in_use`.
    pub in_use: u64,
    /// `Usage::heap.bytes_free`.
    pub free: u64,
    /// `Usage::heap.capacity_bytes`.
    pub capacity: u64,
    /// `Usage::remote_sent.bytes`.
    pub remote_sent: u64,
    /// `Usage::remote_pending.bytes`.
    pub remote_pending: u64,
    /// `Usage::remote_received.bytes`.
    pub remote_received: u64,
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
    /// Freed blocks kept for the next allocation of their class.
    cache: [Cached; CLASS_COUNT],
    cached_bytes: u64,
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
            cache: [Cached { head: 0, blocks: 0 }; CLASS_COUNT],
            cached_bytes: 0,
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
    #[inline(always)]
    pub fn allocate(&mut self, memory: &mut impl WordMemory, size: usize, align: usize) -> Option<u64> {
        self.allocations_until_drain -= 1;
        if self.allocations_until_drain == 0 {
            self.periodic_drain(memory);
        }
        match SizeClass::of_layout(size, align) {
            Some(class) => self.take_cached(memory, class).or_else(|| self.allocate_uncached(memory, class)),
            None => self.allocate_large(memory, size, align),
        }
    }

    /// The short path of [`CpuAllocator::allocate`]: a cached block of the
    /// layout's class, when there is one and no drain is due; `None` sends
    /// the caller to `allocate` (which counts the allocation then). It calls
    /// nothing, so a kernel's allocation entry point built on it needs no
    /// saved registers on that path.
    #[inline(always)]
    pub fn allocate_cached(&mut self, memory: &mut impl WordMemory, size: usize, align: usize) -> Option<u64> {
        if self.allocations_until_drain <= 1 {
            return None;
        }
        let address = self.take_cached(memory, SizeClass::of_layout(size, align)?)?;
        self.allocations_until_drain -= 1;
        Some(address)
    }

    /// The short path of [`CpuAllocator::free_local_sized`]: caches a block
    /// this CPU owns when its class's cache has room; false sends the
    /// caller to the full path (a block of another CPU, a large one, or a
    /// full cache). Calls nothing.
    #[inline(always)]
    pub fn free_cached(&mut self, memory: &mut impl WordMemory, address: u64, size: usize, align: usize) -> bool {
        if !self.owns(address) {
            return false;
        }
        match SizeClass::of_layout(size, align) {
            Some(class) => cache_block(&mut self.cache, &mut self.cached_bytes, memory, address, class),
            None => false,
        }
    }

    /// A cached block of `class`, if there is one.
    #[inline(always)]
    fn take_cached(&mut self, memory: &mut impl WordMemory, class: SizeClass) -> Option<u64> {
        let cached = &mut self.cache[class.index()];
        if cached.head == 0 {
            return None;
        }
        let address = cached.head;
        cached.head = memory.load(address);
        cached.blocks -= 1;
        self.cached_bytes -= class.block_size();
        Some(address)
    }

    /// Whether the last [`CpuAllocator::allocate`] drained the inbox and
    /// flushed the outbox (every [`DRAIN_INTERVAL`] allocations): the
    /// kernel publishes its figures then.
    pub fn just_drained(&self) -> bool {
        self.allocations_until_drain == DRAIN_INTERVAL
    }

    #[cold]
    #[inline(never)]
    fn periodic_drain(&mut self, memory: &mut impl WordMemory) {
        self.allocations_until_drain = DRAIN_INTERVAL;
        self.drain(memory);
        self.outbox.flush();
    }

    /// Takes back the blocks freed elsewhere: a small one into its class's
    /// cache if that has room (its class came with it, see `free_remote`),
    /// the others into the heap.
    fn drain(&mut self, memory: &mut impl WordMemory) -> RemoteCounters {
        let (cache, cached_bytes, heap) = (&mut self.cache, &mut self.cached_bytes, &mut self.heap);
        self.inbox.drain_with(memory, |memory, block| {
            let class = SizeClass::from_index((memory.load(block + CLASS_HINT_OFFSET) as usize).wrapping_sub(1));
            match class {
                Some(class) if cache_block(cache, cached_bytes, memory, block, class) => Ok(class.block_size()),
                _ => heap.free(memory, block),
            }
        })
    }

    /// A block of `class` when its cache is empty.
    #[inline(never)]
    fn allocate_uncached(&mut self, memory: &mut impl WordMemory, class: SizeClass) -> Option<u64> {
        if let Some(address) = self.heap.allocate_from_spans(memory, class) {
            return Some(address);
        }
        // The class ran dry: blocks of it may be waiting in the rings.
        if self.drain(memory).blocks > 0 {
            if let Some(address) =
                self.take_cached(memory, class).or_else(|| self.heap.allocate_from_spans(memory, class))
            {
                return Some(address);
            }
        }
        self.heap.allocate_small(memory, class).or_else(|| {
            // No pages for a new span: the cache may hold the last ones.
            if self.empty_cache(memory) > 0 {
                self.heap.allocate_small(memory, class)
            } else {
                None
            }
        })
    }

    #[inline(never)]
    fn allocate_large(&mut self, memory: &mut impl WordMemory, size: usize, align: usize) -> Option<u64> {
        self.heap.allocate(memory, size, align).or_else(|| {
            let drained = self.drain(memory).blocks;
            if drained + self.empty_cache(memory) > 0 {
                self.heap.allocate(memory, size, align)
            } else {
                None
            }
        })
    }

    /// Frees a block this CPU owns ([`CpuAllocator::owns`]), straight into
    /// the heap.
    pub fn free_local(&mut self, memory: &mut impl WordMemory, address: u64) -> Result<u64, FreeError> {
        self.heap.free(memory, address)
    }

    /// Frees a block this CPU owns, allocated with this `size` and `align`:
    /// into its class's cache if that has room (see the module docs; the
    /// layout must be the allocation's), else into the heap.
    #[inline(always)]
    pub fn free_local_sized(
        &mut self,
        memory: &mut impl WordMemory,
        address: u64,
        size: usize,
        align: usize,
    ) -> Result<(), FreeError> {
        match SizeClass::of_layout(size, align) {
            Some(class) if cache_block(&mut self.cache, &mut self.cached_bytes, memory, address, class) => Ok(()),
            _ => self.heap.free(memory, address).map(|_| ()),
        }
    }

    /// Frees every cached block into the heap; gives how many there were.
    /// A block the heap refuses (only after a caller's bad free) is dropped.
    pub fn empty_cache(&mut self, memory: &mut impl WordMemory) -> u64 {
        if self.cached_bytes == 0 {
            return 0;
        }
        let emptied = self.cached_blocks();
        for cached in &mut self.cache {
            let mut block = cached.head;
            while block != 0 {
                // Read the link before the free reuses the word.
                let next = memory.load(block);
                let _ = self.heap.free(memory, block);
                block = next;
            }
            *cached = Cached { head: 0, blocks: 0 };
        }
        self.cached_bytes = 0;
        emptied
    }

    /// Blocks in the cache (counted when asked: the fast paths keep only
    /// the bytes, which the cache's limit needs).
    fn cached_blocks(&self) -> u64 {
        self.cache.iter().map(|cached| u64::from(cached.blocks)).sum()
    }

    /// Frees a block owned by CPU `owner` (not this one), allocated with
    /// this `size` and `align`: queues it for its owner. Its second word
    /// carries its size class (from the layout, as for the cache: it must
    /// be the allocation's), so that the owner can put it in its cache
    /// without reading the heap's metadata; the first word is the outbox's
    /// link.
    pub fn free_remote(
        &mut self,
        memory: &mut impl WordMemory,
        owner: usize,
        address: u64,
        size: usize,
        align: usize,
    ) -> Result<(), RemoteError> {
        let hint = SizeClass::of_layout(size, align).map_or(0, |class| class.index() as u64 + 1);
        memory.store(address + CLASS_HINT_OFFSET, hint);
        self.outbox.free(memory, owner, address, size as u64)
    }

    /// What to do when the CPU has nothing to run: take back blocks freed
    /// elsewhere, and hand over blocks freed here. Gives the blocks taken back.
    pub fn idle(&mut self, memory: &mut impl WordMemory) -> RemoteCounters {
        self.empty_cache(memory);
        // Straight into the heap: an idle CPU leaves its cache empty.
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
        self.empty_cache(memory);
        self.heap.trim(memory)
    }

    /// Pages this CPU's heap has handed out as runs or spans so far
    /// (`CpuHeap::pages_taken`).
    pub fn pages_taken(&self) -> u64 {
        self.heap.pages_taken()
    }

    /// The byte figures of `usage`, without its sums over the size
    /// classes (cached blocks count as free): what an idle pass publishes.
    pub fn bytes(&self) -> Bytes {
        let heap = self.heap.usage();
        Bytes {
            in_use: heap.bytes_in_use - self.cached_bytes,
            free: heap.bytes_free + self.cached_bytes,
            capacity: heap.capacity_bytes,
            remote_sent: self.outbox.sent().bytes,
            remote_pending: self.outbox.pending().bytes,
            remote_received: self.inbox.received().bytes,
        }
    }

    /// This CPU's figures (cached blocks count as free).
    pub fn usage(&self) -> Usage {
        let mut heap = self.heap.usage();
        heap.bytes_in_use -= self.cached_bytes;
        heap.bytes_free += self.cached_bytes;
        heap.small_blocks -= self.cached_blocks();
        Usage {
            cpu: self.cpu,
            heap,
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

    /// CPUs 0 and 1 with a share each of `memory`, CPU 1 freeing for CPU 0
    /// through `to_zero`, publishing every `batch_blocks` blocks.
    fn two_cpus<'ring>(
        memory: &mut ShadowMemory,
        to_zero: &'ring mut RemoteRing,
        batch_blocks: u32,
    ) -> (CpuAllocator<'ring, 2>, CpuAllocator<'ring, 2>) {
        let (producer, consumer) = to_zero.split();
        let mut zero = CpuAllocator::<2>::new(0, CpuHeap::new(memory, BASE, SHARE).unwrap(), batch_blocks);
        let mut one = CpuAllocator::<2>::new(1, CpuHeap::new(memory, BASE + SHARE, SHARE).unwrap(), batch_blocks);
        zero.connect_inbound(1, consumer).unwrap();
        one.connect_outbound(0, producer).unwrap();
        (zero, one)
    }

    /// Two CPUs with a region each in one memory; CPU 1 frees what CPU 0 allocated.
    #[test]
    fn blocks_freed_elsewhere_come_back_when_the_class_runs_dry() {
        let mut memory = ShadowMemory::new(BASE, 2 * SHARE);
        let mut to_zero = RemoteRing::new();
        let (mut zero, mut one) = two_cpus(&mut memory, &mut to_zero, 8);
        assert_eq!((zero.cpu(), one.cpu()), (0, 1));

        let class = SizeClass::of_size(2048).unwrap();
        let per_span = class.blocks_per_span() as usize;
        let blocks: Vec<u64> = (0..per_span).map(|_| zero.allocate(&mut memory, 2048, 8).unwrap()).collect();
        assert_eq!(zero.usage().heap.spans, 1);
        for block in &blocks {
            assert!(zero.owns(*block) && !one.owns(*block));
            one.free_remote(&mut memory, 0, *block, 2048, 8).unwrap();
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

    /// Small blocks freed elsewhere carry their class home: the drain puts
    /// them in the cache (no heap metadata read), up to its limits.
    #[test]
    fn blocks_freed_elsewhere_refill_the_cache() {
        let mut memory = ShadowMemory::new(BASE, 2 * SHARE);
        let mut to_zero = RemoteRing::new();
        let (mut zero, mut one) = two_cpus(&mut memory, &mut to_zero, 8);
        let class = SizeClass::of_size(1000).unwrap();
        let per_span = class.blocks_per_span() as usize;
        let blocks: Vec<u64> = (0..per_span).map(|_| zero.allocate(&mut memory, 1000, 8).unwrap()).collect();
        for block in &blocks {
            one.free_remote(&mut memory, 0, *block, 1000, 8).unwrap();
        }
        one.flush_outbox();
        // The span is full: the allocation drains, and takes a cached block.
        let again = zero.allocate(&mut memory, 1000, 8).unwrap();
        assert!(blocks.contains(&again));
        let cached = (CACHE_BLOCKS as u64).min(CACHE_BYTES / class.block_size()).min(per_span as u64);
        assert_eq!(
            zero.heap().usage().bytes_in_use,
            cached * class.block_size(),
            "cached blocks stay in use in the heap"
        );
        assert_eq!(zero.usage().heap.bytes_in_use, class.block_size(), "and count as free");
        assert_eq!(zero.usage().remote_received.blocks, per_span as u64);
        // The next ones come from the cache too, not from a new span.
        for _ in 1..cached {
            assert!(blocks.contains(&zero.allocate(&mut memory, 1000, 8).unwrap()));
        }
        assert_eq!(zero.usage().heap.spans, 1);
        zero.idle(&mut memory);
        zero.heap().check(&memory);
    }

    /// The short paths take only what they can finish without a call, and
    /// leave the drain's count to `allocate`.
    #[test]
    fn the_short_paths_hand_everything_else_on() {
        let mut memory = ShadowMemory::new(BASE, 2 * SHARE);
        let mut zero = CpuAllocator::<2>::new(0, CpuHeap::new(&mut memory, BASE, SHARE).unwrap(), 8);
        let other = CpuAllocator::<2>::new(1, CpuHeap::new(&mut memory, BASE + SHARE, SHARE).unwrap(), 8);
        assert_eq!(zero.allocate_cached(&mut memory, 100, 8), None, "an empty cache");
        let block = zero.allocate(&mut memory, 100, 8).unwrap();
        assert!(zero.free_cached(&mut memory, block, 100, 8));
        assert_eq!(zero.allocate_cached(&mut memory, 100, 8), Some(block));
        let large = zero.allocate(&mut memory, 100_000, 8).unwrap();
        assert!(!zero.free_cached(&mut memory, large, 100_000, 8), "a large block");
        assert!(!zero.free_cached(&mut memory, BASE + SHARE + 4096, 100, 8), "another CPU's block");
        assert!(!other.owns(block));
        // A drain due: the short path declines, `allocate` drains.
        assert!(zero.free_cached(&mut memory, block, 100, 8));
        while zero.allocations_until_drain > 1 {
            zero.allocate(&mut memory, 64, 8).unwrap();
        }
        assert_eq!(zero.allocate_cached(&mut memory, 100, 8), None);
        assert_eq!(zero.allocate(&mut memory, 100, 8), Some(block));
        assert!(zero.just_drained());
    }

    #[test]
    fn idle_and_the_drain_interval_move_blocks_both_ways() {
        let mut memory = ShadowMemory::new(BASE, 2 * SHARE);
        let mut to_zero = RemoteRing::new();
        let (mut zero, mut one) = two_cpus(&mut memory, &mut to_zero, 1000);
        let large = zero.allocate(&mut memory, 100_000, 8).unwrap();
        let small = zero.allocate(&mut memory, 10, 8).unwrap();
        one.free_remote(&mut memory, 0, large, 100_000, 8).unwrap();
        one.free_remote(&mut memory, 0, small, 10, 8).unwrap();
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
    fn freed_blocks_are_cached_reused_and_counted_as_free() {
        let mut memory = ShadowMemory::new(BASE, SHARE);
        let mut zero = CpuAllocator::<1>::new(0, CpuHeap::new(&mut memory, BASE, SHARE).unwrap(), 8);
        let initial = zero.heap().usage();
        let first = zero.allocate(&mut memory, 100, 8).unwrap();
        zero.free_local_sized(&mut memory, first, 100, 8).unwrap();
        let usage = zero.usage().heap;
        assert_eq!((usage.bytes_in_use, usage.small_blocks, usage.bytes_free), (0, 0, initial.bytes_free));
        assert_eq!(zero.heap().usage().bytes_in_use, 112, "the heap still counts the cached block");
        // Same class (97-112 bytes): the cached block comes back.
        assert_eq!(zero.allocate(&mut memory, 112, 16), Some(first));
        assert_eq!(zero.usage().heap.bytes_in_use, 112);
        // At most CACHE_BLOCKS per class; the rest go to the heap.
        let blocks: Vec<u64> = (0..2 * CACHE_BLOCKS).map(|_| zero.allocate(&mut memory, 100, 8).unwrap()).collect();
        for &block in &blocks {
            zero.free_local_sized(&mut memory, block, 100, 8).unwrap();
        }
        assert_eq!(zero.heap().usage().bytes_in_use, 112 * (1 + u64::from(CACHE_BLOCKS)));
        zero.free_local_sized(&mut memory, first, 112, 16).unwrap();
        // Idle empties the cache into the heap.
        zero.idle(&mut memory);
        assert_eq!(zero.heap().usage().bytes_in_use, 0);
        zero.trim(&mut memory);
        zero.heap().check(&memory);
        assert_eq!(zero.heap().usage(), initial);
    }

    #[test]
    fn cached_blocks_of_every_class_are_counted_as_free() {
        // The fast paths keep only the cache's bytes; the block count is
        // summed over the classes when asked: blocks cached in several
        // classes must all count.
        let mut memory = ShadowMemory::new(BASE, SHARE);
        let mut zero = CpuAllocator::<1>::new(0, CpuHeap::new(&mut memory, BASE, SHARE).unwrap(), 8);
        let sizes = [16, 100, 500, 1000, 3000, 4096];
        let blocks: Vec<(u64, usize)> = sizes
            .iter()
            .flat_map(|&size| (0..3).map(move |_| size))
            .map(|size| (zero.allocate(&mut memory, size, 8).unwrap(), size))
            .collect();
        assert_eq!(zero.usage().heap.small_blocks, blocks.len() as u64);
        for (count, &(block, size)) in blocks.iter().enumerate() {
            zero.free_local_sized(&mut memory, block, size, 8).unwrap();
            assert_eq!(zero.usage().heap.small_blocks, (blocks.len() - count - 1) as u64);
        }
        assert_eq!(zero.usage().heap.bytes_in_use, 0);
        assert_eq!(zero.heap().usage().small_blocks, blocks.len() as u64, "all of them are cached");
        assert_eq!(zero.empty_cache(&mut memory), blocks.len() as u64);
        assert_eq!(zero.empty_cache(&mut memory), 0);
        assert_eq!(zero.heap().usage().small_blocks, 0);
        zero.heap().check(&memory);
    }

    #[test]
    fn bytes_are_the_byte_figures_of_usage() {
        // `bytes` skips `usage`'s sums over the classes: it must still give
        // the same bytes, with blocks cached, handed out and given back.
        let mut memory = ShadowMemory::new(BASE, SHARE);
        let mut zero = CpuAllocator::<1>::new(0, CpuHeap::new(&mut memory, BASE, SHARE).unwrap(), 8);
        let same = |zero: &CpuAllocator<'_, 1>| {
            let usage = zero.usage();
            let bytes = zero.bytes();
            assert_eq!(
                (bytes.in_use, bytes.free, bytes.capacity),
                (usage.heap.bytes_in_use, usage.heap.bytes_free, usage.heap.capacity_bytes)
            );
            assert_eq!(
                (bytes.remote_sent, bytes.remote_pending, bytes.remote_received),
                (usage.remote_sent.bytes, usage.remote_pending.bytes, usage.remote_received.bytes)
            );
        };
        same(&zero);
        let sizes = [16, 100, 500, 3000, 20_000, 300_000];
        let blocks: Vec<(u64, usize)> =
            sizes.iter().map(|&size| (zero.allocate(&mut memory, size, 8).unwrap(), size)).collect();
        same(&zero);
        assert!(zero.bytes().in_use > 0);
        for &(block, size) in &blocks {
            zero.free_local_sized(&mut memory, block, size, 8).unwrap();
            same(&zero);
        }
        assert_eq!(zero.bytes().in_use, 0, "cached blocks count as free");
        zero.idle(&mut memory);
        same(&zero);
    }

    #[test]
    fn the_cache_is_emptied_before_a_request_fails() {
        let mut memory = ShadowMemory::new(BASE, SHARE);
        let mut zero = CpuAllocator::<1>::new(0, CpuHeap::new(&mut memory, BASE, SHARE).unwrap(), 8);
        // Fill the heap with 8 KiB blocks (a span of 2-4 per class), free
        // them with their layout: 16 stay cached, holding their spans.
        let mut blocks = Vec::new();
        while let Some(block) = zero.allocate(&mut memory, 8192, 8) {
            blocks.push(block);
        }
        for &block in &blocks {
            zero.free_local_sized(&mut memory, block, 8192, 8).unwrap();
        }
        assert!(zero.heap().usage().bytes_in_use > 0, "some blocks are cached");
        // Every page is needed for this one: the cache must give its
        // blocks (and so their spans) back first.
        let all = zero.heap().usage().capacity_bytes as usize;
        assert!(zero.allocate(&mut memory, all, 8).is_some());
    }

    #[test]
    fn a_large_request_drains_before_failing() {
        let mut memory = ShadowMemory::new(BASE, 2 * SHARE);
        let mut to_zero = RemoteRing::new();
        let (mut zero, mut one) = two_cpus(&mut memory, &mut to_zero, 1);
        let most = (SHARE / 2) as usize;
        let first = zero.allocate(&mut memory, most, 8).unwrap();
        assert_eq!(zero.allocate(&mut memory, most, 8), None, "half plus metadata does not fit twice");
        one.free_remote(&mut memory, 0, first, most, 8).unwrap();
        assert!(zero.allocate(&mut memory, most, 8).is_some(), "the remote free came back in time");
    }
}
