//! The workload code both sides of the benchmark compile: Toro's `bench`
//! application and the Linux yardstick (`bench/linux`, which includes this
//! file by path). What only differs between the systems (threads, pinning,
//! clocks, printing) stays in each program; the allocation loops, the size
//! sequence and the remote-free hand-off are this one text, so the two sides
//! run the same instructions around their allocators.
//!
//! Needs only `core` and `alloc` (Toro has no `std`), no floating point
//! (Toro's target is soft-float), and from its includer: `crate::spsc` (the
//! `toro-core` ring, `toro::spsc` in Toro) and a clock handed in as
//! [`Clock`].

use alloc::alloc::{alloc, dealloc};
use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;

use crate::spsc::{Consumer, Producer};

/// Nanoseconds from an arbitrary origin; monotonic, comparable across CPUs.
pub type Clock = fn() -> u64;

/// Blocks a program keeps alive at once in the alloc+free loop, like the
/// live objects of a real program: each step frees one of them at random and
/// allocates its replacement.
pub const LIVE_BLOCKS: usize = 64;
/// The smallest and largest block (bytes). Sizes are spread evenly over the
/// octaves 16–31, 32–63, ..., 2048–4095 plus 4096 itself, so small blocks are
/// as common as in most programs and every size class is visited.
pub const SMALLEST_BLOCK: usize = 16;
pub const LARGEST_BLOCK: usize = 4096;
/// Alignment asked for every block: what `Box<u64>` or a `Vec<u64>` asks.
const BLOCK_ALIGN: usize = 8;
/// Work between two looks at the clock, so reading it costs nothing worth
/// counting.
pub const ALLOC_BATCH: u64 = 1024;
/// Slots of the producer/consumer ring in the remote-free workload.
pub const RING_SLOTS: usize = 1024;

/// The large block of the borrowed-allocation workload: more than Toro's
/// CPU 0 is left with (the workload fills its share to below this first),
/// less than CPU 1's share holds, so every allocation borrows from CPU 1.
pub const LARGE_BLOCK: usize = 24 << 20;
/// The stride of the large block's touch: one write per 4 KiB page.
const TOUCH_STRIDE: usize = 4096;
/// Alloc+free pairs before the clock starts, so the measurement starts from
/// a warm heap on both sides: every size class has its pages (on Linux the
/// first touch of each page is a page fault), and the emulator has
/// translated the loop. 64 Ki pairs visit every class many times over.
pub const WARM_UP_PAIRS: u64 = 64 * 1024;

/// Which workloads a run does: all of them, or those named in a
/// comma-separated list (`bench.only=` on Toro's command line, the second
/// argument of the Linux programs; `cargo xtask bench --only` sets both).
#[derive(Clone, Copy, Debug)]
pub struct Selection<'a>(Option<&'a str>);

impl<'a> Selection<'a> {
    /// `None`, an empty list or `all`: every workload.
    pub fn new(list: Option<&'a str>) -> Self {
        Self(list.filter(|list| !list.is_empty() && *list != "all"))
    }

    pub fn wants(&self, name: &str) -> bool {
        self.0.is_none_or(|list| list.split(',').any(|item| item == name))
    }

    /// Whether any of `names` is wanted.
    pub fn wants_any(&self, names: &[&str]) -> bool {
        names.iter().any(|name| self.wants(name))
    }
}

/// Senders in the multi-producer channel workload.
pub const PRODUCERS: usize = 4;
/// The CPU sender `k` of the multi-producer workload runs on, of `cpus`:
/// spread over all of them, the receiver's CPU (0) last.
pub fn producer_cpu(k: usize, cpus: usize) -> usize {
    (k + 1) % cpus
}

/// The most values the channel-throughput sender may be ahead of its
/// receiver: the channel is unbounded, and a sender that runs on while the
/// receiver's vCPU is descheduled by a loaded host would fill the guest's
/// memory (seen: the Linux guest's 128 MiB, its benchmark program killed by
/// the OOM killer in 1 of 5 full runs at load 5). 256 Ki `u64`s are a few
/// MiB in either channel, tens of milliseconds of a stalled receiver; in a
/// steady state the receiver's rate is what is measured either way. The
/// multi-producer workload bounds its senders the same way (each counts
/// its own sent values times the number of senders), though its count is
/// fixed: its 2 M values were still too many for the Linux guest after the
/// other workloads (killed there too).
pub const MAX_LEAD: u64 = 1 << 18;

/// How far the receiver of a channel workload has got, told
/// to its sender every `SEND_BATCH`-ish values (one plain store, no lock
/// instruction): the sender waits while it is `MAX_LEAD` ahead.
pub struct Progress(core::sync::atomic::AtomicU64);

impl Progress {
    pub const fn new() -> Self {
        Self(core::sync::atomic::AtomicU64::new(0))
    }

    /// The receiver has taken `received` values.
    pub fn received(&self, received: u64) {
        self.0.store(received, core::sync::atomic::Ordering::Release);
    }

    /// Whether the sender, having sent `sent` values, may send more.
    pub fn room(&self, sent: u64) -> bool {
        sent.saturating_sub(self.0.load(core::sync::atomic::Ordering::Acquire)) < MAX_LEAD
    }
}

/// Values each sender of the multi-producer workload sends: a count, not a
/// time, so the values waiting in the (unbounded) channel stay bounded
/// whatever the receiver's speed: 2 M in all at 300 ms per workload.
pub fn values_per_producer(plan: Plan) -> u64 {
    plan.target_ns / 600
}

/// How long each timed workload runs, and how many sleeps are measured.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Nanoseconds each timed workload runs for (at least).
    pub target_ns: u64,
    /// `sleep(1 ms)` calls measured.
    pub sleeps: usize,
}

impl Plan {
    /// The full benchmark: 300 ms per workload, 200 sleeps.
    pub const FULL: Self = Self { target_ns: 300_000_000, sleeps: 200 };
    /// The test suite's quick mode: it checks the workloads work, not their
    /// speed.
    pub const QUICK: Self = Self { target_ns: 15_000_000, sleeps: 10 };
}

/// A deterministic sequence (xorshift64) of block sizes and slot indexes:
/// both systems see the same sequence.
pub struct Sequence {
    state: u64,
}

impl Sequence {
    pub fn new(seed: u64) -> Self {
        Self { state: seed | 1 }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    /// A size in `SMALLEST_BLOCK..=LARGEST_BLOCK`: an octave chosen evenly,
    /// then a size evenly within it.
    pub fn size(&mut self) -> usize {
        let random = self.next();
        let octaves = (LARGEST_BLOCK / SMALLEST_BLOCK).trailing_zeros() as u64 + 1;
        let base = SMALLEST_BLOCK << (random % octaves);
        (base + (random >> 8) as usize % base).min(LARGEST_BLOCK)
    }

    /// A slot index in `0..LIVE_BLOCKS`.
    pub fn slot(&mut self) -> usize {
        (self.next() >> 16) as usize % LIVE_BLOCKS
    }
}

/// A heap block of `size` bytes, freed when dropped (on whichever CPU or
/// thread drops it: that is the remote free).
pub struct Block {
    address: NonNull<u8>,
    size: usize,
}

// SAFETY: a block is plain memory owned by this value alone; the global
// allocator accepts a free from any thread (that is what is measured).
unsafe impl Send for Block {}

impl Block {
    pub fn new(size: usize) -> Self {
        let layout = Self::layout(size);
        // SAFETY: `layout` has a non-zero size.
        let address = unsafe { alloc(layout) };
        let Some(address) = NonNull::new(address) else { alloc::alloc::handle_alloc_error(layout) };
        // Touch the block as a program would, so neither the allocator nor
        // the compiler gets away with less than a real allocation.
        // SAFETY: the block is at least one byte and ours.
        unsafe { address.as_ptr().write(size as u8) };
        Self { address, size }
    }

    /// Writes one byte in every 4 KiB page of the block.
    pub fn touch_pages(&self) {
        for offset in (0..self.size).step_by(TOUCH_STRIDE) {
            // SAFETY: `offset` is inside the block, which is ours.
            unsafe { self.address.as_ptr().add(offset).write_volatile(offset as u8) };
        }
    }

    fn layout(size: usize) -> Layout {
        match Layout::from_size_align(size, BLOCK_ALIGN) {
            Ok(layout) => layout,
            Err(_) => unreachable!("sizes are at most LARGE_BLOCK"),
        }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.address.as_ptr(), Self::layout(self.size)) };
    }
}

/// The alloc+free loop on one thread: [`LIVE_BLOCKS`] live blocks; each
/// step frees a random one and allocates a block of the next size in its
/// place (one alloc+free pair). Runs for at least `target_ns`; returns
/// (pairs, nanoseconds).
pub fn alloc_free_pairs(clock: Clock, target_ns: u64, seed: u64) -> (u64, u64) {
    let mut sequence = Sequence::new(seed);
    let mut live: alloc::vec::Vec<Option<Block>> =
        (0..LIVE_BLOCKS).map(|_| Some(Block::new(sequence.size()))).collect();
    for _ in 0..WARM_UP_PAIRS {
        let slot = sequence.slot();
        live[slot] = None;
        live[slot] = Some(Block::new(sequence.size()));
    }
    let start = clock();
    let mut pairs = 0;
    let elapsed = loop {
        for _ in 0..ALLOC_BATCH {
            let slot = sequence.slot();
            // Free first, then allocate: an allocator may hand the freed
            // block straight back when the size class matches, as in a
            // real program.
            live[slot] = None;
            live[slot] = Some(Block::new(sequence.size()));
        }
        pairs += ALLOC_BATCH;
        let elapsed = clock().saturating_sub(start);
        if elapsed >= target_ns {
            break elapsed;
        }
    };
    drop(live);
    (pairs, elapsed)
}

/// Untimed cycles of the borrowed-allocation loop before the clock starts.
/// The first write to guest RAM that was never written makes the host
/// give QEMU that memory: under emulation on a loaded host, 24 MiB of it
/// took 460-490 ms on Toro (the allocation itself 40-70 ms), which in a
/// 300 ms window made the row one cycle long and measured the host. The
/// alloc+free loops warm up for the same reason ([`WARM_UP_PAIRS`]).
pub const LARGE_WARM_UP_CYCLES: u64 = 1;

/// The borrowed-allocation loop: a [`LARGE_BLOCK`] allocated, written once
/// per 4 KiB page (on Linux each first write is a page fault, on Toro
/// memory is mapped), and freed, [`LARGE_WARM_UP_CYCLES`] times untimed,
/// then until `target_ns` has passed (at least once); returns the timed
/// (cycles, nanoseconds).
pub fn large_block_cycles(clock: Clock, target_ns: u64) -> (u64, u64) {
    for _ in 0..LARGE_WARM_UP_CYCLES {
        let block = Block::new(LARGE_BLOCK);
        block.touch_pages();
        drop(block);
    }
    let start = clock();
    let mut cycles = 0;
    loop {
        let block = Block::new(LARGE_BLOCK);
        block.touch_pages();
        drop(block);
        cycles += 1;
        let elapsed = clock().saturating_sub(start);
        if elapsed >= target_ns {
            return (cycles, elapsed);
        }
    }
}

/// The remote-free producer: allocates blocks of the size sequence and
/// pushes them into the ring until `target_ns` has passed, then pushes
/// `None` to say it is done. Spins while the ring is full.
pub fn produce_blocks(producer: &mut Producer<'_, Option<Block>, RING_SLOTS>, clock: Clock, target_ns: u64) {
    let mut sequence = Sequence::new(0x5eed_0002);
    let start = clock();
    loop {
        for _ in 0..ALLOC_BATCH {
            let mut item = Some(Block::new(sequence.size()));
            while let Err(back) = producer.push(item) {
                item = back;
                core::hint::spin_loop();
            }
        }
        if clock().saturating_sub(start) >= target_ns {
            break;
        }
    }
    let mut done = None;
    while let Err(back) = producer.push(done) {
        done = back;
        core::hint::spin_loop();
    }
}

/// The remote-free consumer: frees every block that arrives until the
/// producer says it is done; returns (blocks, nanoseconds from the first
/// block to the end).
pub fn consume_blocks(consumer: &mut Consumer<'_, Option<Block>, RING_SLOTS>, clock: Clock) -> (u64, u64) {
    let mut start = None;
    let mut blocks = 0;
    loop {
        match consumer.pop() {
            Some(Some(block)) => {
                start.get_or_insert_with(clock);
                drop(block);
                blocks += 1;
            }
            Some(None) => break,
            None => core::hint::spin_loop(),
        }
    }
    let elapsed = start.map_or(0, |start| clock().saturating_sub(start));
    (blocks, elapsed)
}

/// Events per second from a count over nanoseconds.
pub fn per_second(count: u64, nanoseconds: u64) -> u64 {
    (count as u128 * 1_000_000_000 / nanoseconds.max(1) as u128) as u64
}

/// `total / count` with one decimal, printed as `12.3`, without floating
/// point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tenths(pub u64);

impl Tenths {
    pub fn ratio(total: u64, count: u64) -> Self {
        Self(((total as u128 * 10 + count.max(1) as u128 / 2) / count.max(1) as u128) as u64)
    }
}

impl fmt::Display for Tenths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0 / 10, self.0 % 10)
    }
}

/// The `percent`th percentile (nearest rank) of sorted values; 0 for none.
pub fn percentile(sorted: &[u64], percent: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// The lines the host reads: `BENCH <name> <value> <unit>`, where the unit
/// is `ns`, `us` or `per_s`, and a Linux figure's name carries its
/// yardstick after a colon (`message-latency:crossbeam`). `xtask` parses
/// these (`xtask/src/bench/workloads.rs`).
pub struct Line<'a> {
    pub name: &'a str,
    pub variant: Option<&'a str>,
    pub value: Value,
}

/// A figure with its unit.
#[derive(Clone, Copy, Debug)]
pub enum Value {
    Nanoseconds(Tenths),
    Microseconds(Tenths),
    PerSecond(u64),
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BENCH {}", self.name)?;
        if let Some(variant) = self.variant {
            write!(f, ":{variant}")?;
        }
        match self.value {
            Value::Nanoseconds(value) => write!(f, " {value} ns"),
            Value::Microseconds(value) => write!(f, " {value} us"),
            Value::PerSecond(value) => write!(f, " {value} per_s"),
        }
    }
}
