//! Memory: each CPU's share of RAM, and the per-CPU allocator behind
//! `#[global_allocator]`.
//!
//! At boot, usable RAM is split into one contiguous share per CPU (per NUMA
//! node when the firmware's SRAT describes nodes; `toro_core::memory_split`).
//! Each share starts with that CPU's `CpuAllocator` and the rings through
//! which other CPUs return its blocks; the rest is its heap. A thread's
//! allocation comes from the heap of the CPU it runs on. A block freed on
//! another CPU goes back to its owner through the single-producer,
//! single-consumer ring of that CPU pair; the owner takes such blocks back
//! when it allocates or idles. No path here takes a lock or executes a
//! locked instruction (`cargo xtask test` checks the disassembly).
//!
//! Running low: a CPU allocates only from its own share; when it is full,
//! the allocation fails (`GlobalAlloc` returns null) instead of taking
//! memory behind another CPU's back. Fallible paths (`Vec::try_reserve`,
//! `toro::memory::try_allocate`) see the failure quietly; an infallible
//! allocation panics, and the panic report lists every CPU's usage.
//!
//! Interrupt handlers must not allocate: the allocator of a CPU is used by
//! that CPU's running code only, and Toro's scheduling is cooperative.

use core::alloc::{GlobalAlloc, Layout};
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use toro_core::allocator::{CpuAllocator, CpuHeap, RemoteRing, Usage, WordMemory, DEFAULT_BATCH_BLOCKS};
use toro_core::memory_split::CpuShare;

use crate::arch::paging::PAGE_SIZE;
use crate::arch::percpu::{self, CellError, PerCpuCell, MAX_CPUS};
use crate::once::BootCell;

type Allocator = CpuAllocator<'static, MAX_CPUS>;

/// The allocator's view of memory: physical = virtual, plain loads and
/// stores.
struct Words;

impl WordMemory for Words {
    #[inline(always)]
    fn load(&self, address: u64) -> u64 {
        // SAFETY: the bookkeeping only names 8-aligned words inside CPU
        // shares (identity-mapped RAM given to the allocator at boot) that
        // belong to its metadata or to free blocks, never to live data.
        unsafe { (address as *const u64).read() }
    }

    #[inline(always)]
    fn store(&mut self, address: u64, value: u64) {
        // SAFETY: as in `load`.
        unsafe { (address as *mut u64).write(value) }
    }
}

/// Each CPU's allocator (inside its share); set up by the boot CPU, then
/// used by its CPU only, through `PerCpuCell::with` (an allocation inside
/// an allocation, which only an interrupt handler could make, panics).
static ALLOCATORS: PerCpuCell<Allocator> = PerCpuCell::new();

/// Which CPU owns an address: shares sorted by start. Read-only after boot.
struct Owners {
    shares: [(u64, u64, u16); MAX_CPUS],
    count: usize,
    /// Each CPU's NUMA node (its share's proximity domain; 0 if unknown),
    /// by CPU index.
    nodes: [u32; MAX_CPUS],
}

static OWNERS: BootCell<Owners> = BootCell::new();

/// The last usage each CPU published (every `DRAIN_INTERVAL`
/// allocations and when it idles), for other CPUs to read.
struct PublishedUsage {
    in_use: AtomicU64,
    free: AtomicU64,
    capacity: AtomicU64,
    remote_sent: AtomicU64,
    remote_received: AtomicU64,
    remote_pending: AtomicU64,
    /// Bytes this CPU lent to others, and borrowed from others (so far;
    /// written by this CPU only when it lends or borrows).
    lent: AtomicU64,
    borrowed: AtomicU64,
}

static PUBLISHED: [PublishedUsage; MAX_CPUS] = [const {
    PublishedUsage {
        in_use: AtomicU64::new(0),
        free: AtomicU64::new(0),
        capacity: AtomicU64::new(0),
        remote_sent: AtomicU64::new(0),
        remote_received: AtomicU64::new(0),
        remote_pending: AtomicU64::new(0),
        lent: AtomicU64::new(0),
        borrowed: AtomicU64::new(0),
    }
}; MAX_CPUS];

// Out of line: the allocation fast path calls it once in DRAIN_INTERVAL
// and should not carry its registers.
#[cold]
#[inline(never)]
fn publish(allocator: &Allocator) {
    // `bytes`, not `usage`: the block counts `usage` sums over every size
    // class cost about 200 instructions, at every idle pass.
    let bytes = allocator.bytes();
    let published = &PUBLISHED[allocator.cpu()];
    published.in_use.store(bytes.in_use, Ordering::Relaxed);
    published.free.store(bytes.free, Ordering::Relaxed);
    published.capacity.store(bytes.capacity, Ordering::Relaxed);
    published.remote_sent.store(bytes.remote_sent, Ordering::Relaxed);
    published.remote_received.store(bytes.remote_received, Ordering::Relaxed);
    published.remote_pending.store(bytes.remote_pending, Ordering::Relaxed);
}

/// Mutation 4 of the lock check's test: a name that contains an excluded
/// one (`allocation_failure`) is not excluded.
#[cfg(feature = "lockcheck-mutation-4")]
#[inline(never)]
fn allocation_failure_count() {
    crate::lockcheck_mutation::plant();
}

/// Allocates from the running CPU's share. Null when it is full.
///
/// The entry point is only the short path, a cached block
/// (`CpuAllocator::allocate_cached`), which calls nothing: under TCG the
/// saved registers of a function with calls in it cost about a sixth of a
/// cached allocation. Everything else is `allocate_full`.
#[inline(never)]
pub fn allocate(size: usize, align: usize) -> *mut u8 {
    #[cfg(feature = "lockcheck-mutation-4")]
    allocation_failure_count();
    match lend(|allocator| allocator.allocate_cached(&mut Words, size.max(1), align)) {
        Some(Some(address)) => address as *mut u8,
        _ => allocate_full(size, align),
    }
}

/// `allocate` past its short path.
#[inline(never)]
fn allocate_full(size: usize, align: usize) -> *mut u8 {
    match lend(|allocator| allocate_here(allocator, size, align)) {
        Some(Some(address)) => address as *mut u8,
        Some(None) => allocate_after_reclaim(size, align),
        None => core::ptr::null_mut(),
    }
}

/// Runs `f` with this CPU's allocator; `None` before memory is set up.
#[inline(always)]
fn lend<R>(f: impl FnOnce(&mut Allocator) -> R) -> Option<R> {
    match ALLOCATORS.try_with(f) {
        Ok(result) => Some(result),
        Err(CellError::NotSet) => None,
        Err(CellError::Borrowed) => reentrant_allocation(),
    }
}

#[cold]
#[inline(never)]
fn reentrant_allocation() -> ! {
    panic!("allocation inside an allocation on cpu {} (an interrupt handler allocating?)", percpu::current_index());
}

#[inline(always)]
fn allocate_here(allocator: &mut Allocator, size: usize, align: usize) -> Option<u64> {
    let address = allocator.allocate(&mut Words, size.max(1), align);
    // Every DRAIN_INTERVAL allocations, when the allocator has just taken
    // back remote frees: publish the figures too.
    if allocator.just_drained() {
        publish(allocator);
    }
    address
}

/// How long, at most, an allocation that found its share full waits for the
/// other CPUs to answer its flush requests (it stops as soon as all have).
/// A CPU answers at its next scheduling point: within microseconds unless a
/// thread there runs without yielding, or the host does not run that vCPU
/// (emulation on a loaded host: several milliseconds).
const RECLAIM_WAIT: core::time::Duration = core::time::Duration::from_millis(50);

/// Flush requests each CPU has served (`flush_owed_job`); written only by
/// that CPU, read by the CPUs that asked.
#[repr(align(64))]
struct Served(AtomicU64);
static FLUSHES_SERVED: [Served; MAX_CPUS] = [const { Served(AtomicU64::new(0)) }; MAX_CPUS];

/// The slow path of an allocation that found this CPU's share full: take
/// back what other CPUs owe it before failing. Hands over this CPU's own
/// outbox, asks every other CPU (by a job, only where its ring has room) to
/// flush its outbox, then drains the inbox and retries until the request
/// fits, every asked CPU has answered, or `RECLAIM_WAIT` passed. A thread
/// yields while it waits (its CPU keeps running); scheduler and job context
/// spin, never running jobs. Reports the failure if it still does not fit.
#[cold]
#[inline(never)]
fn allocate_after_reclaim(size: usize, align: usize) -> *mut u8 {
    let me = percpu::current_index();
    let cpus = percpu::online();
    // Hand over what this CPU freed for the others first: each CPU asked
    // below then finds those blocks in its inbox when it answers, and
    // publishes its free memory with them (a block borrowed from it and
    // freed here counts as its free memory before `borrow` looks).
    lend(|allocator| allocator.flush_outbox());
    let mut served_before = [u64::MAX; MAX_CPUS];
    for (cpu, before) in served_before.iter_mut().enumerate().take(cpus) {
        if cpu == me {
            continue;
        }
        let count = FLUSHES_SERVED[cpu].0.load(Ordering::Acquire);
        // SAFETY: the message points to nothing.
        if unsafe { crate::cpu::send_if_room(cpu, (), flush_owed_job) } {
            *before = count;
        }
    }
    let may_yield = !crate::cpu::in_job() && crate::thread::scheduler::may_block();
    // A large request from a thread also asks the best lender at once,
    // beside the flush requests: when nothing is owed here (the usual
    // case for a block larger than what this CPU frees for others), the
    // answer comes after one round trip, not two (flush, then loan).
    let mut tried = [0u64; MAX_CPUS / 64];
    let early = LoanRequest::new(size, align);
    let early_sent = may_yield && size >= EARLY_LOAN_AT && ask_lender(&early, &mut tried);
    let start = crate::time::Instant::now();
    loop {
        if early_sent && early.done.load(Ordering::Acquire) {
            if let Some(address) = early.take(me, size) {
                return address as *mut u8;
            }
        }
        let answered = (0..cpus).all(|cpu| {
            served_before[cpu] == u64::MAX || FLUSHES_SERVED[cpu].0.load(Ordering::Acquire) > served_before[cpu]
        });
        let retry = lend(|allocator| {
            allocator.idle(&mut Words);
            allocator.allocate(&mut Words, size.max(1), align)
        })
        .flatten();
        if let Some(address) = retry {
            if early_sent {
                // `early` lives on this stack: wait for its answer, and
                // give back a block lent meanwhile (it goes home).
                early.wait();
                if let Some(lent) = early.take(me, size) {
                    free(lent, size, align);
                }
            }
            return address as *mut u8;
        }
        let early_over = !early_sent || early.done.load(Ordering::Acquire);
        if (answered && early_over) || start.elapsed() > RECLAIM_WAIT {
            break;
        }
        if may_yield {
            crate::thread::scheduler::yield_now();
        } else {
            core::hint::spin_loop();
        }
    }
    if early_sent {
        early.wait();
        if let Some(address) = early.take(me, size) {
            return address as *mut u8;
        }
    }
    if may_yield {
        if let Some(address) = borrow(size, align, &mut tried) {
            return address as *mut u8;
        }
    }
    lend(|allocator| allocation_failure_record(allocator, size, align));
    core::ptr::null_mut()
}

/// Requests at least this large ask a lender at once, beside the flush
/// requests (`allocate_after_reclaim`); smaller ones wait for what is owed
/// first (a small block is more likely among the frees other CPUs hold).
const EARLY_LOAN_AT: usize = 1 << 20;

/// A request to another CPU: "allocate this from your share for me". It
/// lives on the borrowing thread's stack, and that thread waits until
/// `done`, so the job never outlives it.
struct LoanRequest {
    size: usize,
    align: usize,
    /// The block (0: the lender could not serve it); valid once `done`.
    address: AtomicU64,
    done: core::sync::atomic::AtomicBool,
}

impl LoanRequest {
    fn new(size: usize, align: usize) -> Self {
        LoanRequest { size, align, address: AtomicU64::new(0), done: core::sync::atomic::AtomicBool::new(false) }
    }

    /// Waits (yielding: thread context) for the lender's answer.
    fn wait(&self) {
        while !self.done.load(Ordering::Acquire) {
            crate::thread::scheduler::yield_now();
        }
    }

    /// The lent block once answered (counted as borrowed by CPU `me`), or
    /// `None` if the lender could not serve it. Takes it once.
    fn take(&self, me: usize, size: usize) -> Option<u64> {
        // Plain load and store (no `xchg`, which locks): after `done` only
        // the borrower touches the request.
        let address = self.address.load(Ordering::Relaxed);
        self.address.store(0, Ordering::Relaxed);
        if address == 0 {
            return None;
        }
        let borrowed = &PUBLISHED[me].borrowed;
        borrowed.store(borrowed.load(Ordering::Relaxed) + size as u64, Ordering::Relaxed);
        Some(address)
    }
}

/// Sends `request` to the best CPU not yet in `tried` (see [`borrow`]) and
/// marks it tried; false when no CPU published enough free memory or its
/// ring is full. The caller must wait for `done` before `request` goes.
fn ask_lender(request: &LoanRequest, tried: &mut [u64; MAX_CPUS / 64]) -> bool {
    let me = percpu::current_index();
    let Some(owners) = OWNERS.get() else { return false };
    loop {
        let mut best: Option<(bool, u64, usize)> = None;
        for cpu in (0..percpu::online()).filter(|&cpu| cpu != me && tried[cpu / 64] & (1 << (cpu % 64)) == 0) {
            let free = PUBLISHED[cpu].free.load(Ordering::Relaxed);
            let key = (owners.nodes[cpu] != owners.nodes[me], u64::MAX - free, cpu);
            if free >= request.size as u64 && best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
        let Some((_, _, cpu)) = best else { return false };
        tried[cpu / 64] |= 1 << (cpu % 64);
        // SAFETY: the caller keeps `request` alive until the lender's
        // answer (it waits for `done`).
        if unsafe { crate::cpu::send_to(cpu, request as *const LoanRequest, lend_job) }.is_ok() {
            return true;
        }
    }
}

/// Borrows a block from another CPU's share (thread context only: it waits
/// for each answer, yielding): CPUs of this CPU's NUMA node first, then the
/// others, each by most free memory as last published, skipping those
/// that published less free memory than the request. The block belongs to
/// the lender: freeing it anywhere returns it there (the remote-free path).
/// A block must be contiguous, so one request is served by one share.
fn borrow(size: usize, align: usize, tried: &mut [u64; MAX_CPUS / 64]) -> Option<u64> {
    let me = percpu::current_index();
    loop {
        let request = LoanRequest::new(size, align);
        if !ask_lender(&request, tried) {
            return None;
        }
        // The lender answers at its next scheduling point; `request` must
        // outlive the job, so wait for the answer however long it takes.
        request.wait();
        if let Some(address) = request.take(me, size) {
            return Some(address);
        }
    }
}

/// Job: another CPU asks for a block of this CPU's share (`LoanRequest`).
/// Allocates it here (no reclaim, no borrowing: job context) and answers;
/// after `done` the request is not touched again.
unsafe fn lend_job(request: *const LoanRequest) {
    // SAFETY: the borrower keeps the request alive until it sees `done`.
    let request = unsafe { &*request };
    let me = percpu::current_index();
    let address = lend(|allocator| {
        let address = allocator.allocate(&mut Words, request.size.max(1), request.align);
        publish(allocator);
        address
    })
    .flatten();
    if address.is_some() {
        let lent = &PUBLISHED[me].lent;
        lent.store(lent.load(Ordering::Relaxed) + request.size as u64, Ordering::Relaxed);
    }
    request.address.store(address.unwrap_or(0), Ordering::Relaxed);
    request.done.store(true, Ordering::Release);
}

/// Job: another CPU found its share full; hand over every block freed here
/// for other CPUs (this CPU's outbox), then count the request as served.
unsafe fn flush_owed_job((): ()) {
    lend(|allocator| {
        allocator.idle(&mut Words);
        publish(allocator);
    });
    let served = &FLUSHES_SERVED[percpu::current_index()].0;
    served.store(served.load(Ordering::Relaxed) + 1, Ordering::Release);
}

/// Frees a block allocated with `size` and `align` (the allocation's
/// layout, as `GlobalAlloc::dealloc` has it): locally if this CPU owns it
/// (into the per-class cache when it has room), else through the ring to
/// its owner.
///
/// Like `allocate`, the entry point is only the short path (a block of this
/// CPU into its class's cache, `CpuAllocator::free_cached`); the rest is
/// `free_full`.
#[inline(never)]
pub fn free(address: u64, size: usize, align: usize) {
    if lend(|allocator| allocator.free_cached(&mut Words, address, size.max(1), align)) != Some(true) {
        free_full(address, size, align);
    }
}

/// `free` past its short path.
#[inline(never)]
fn free_full(address: u64, size: usize, align: usize) {
    lend(|allocator| free_here(allocator, address, size, align));
}

#[inline(always)]
fn free_here(allocator: &mut Allocator, address: u64, size: usize, align: usize) {
    if allocator.owns(address) {
        if let Err(error) = allocator.free_local_sized(&mut Words, address, size.max(1), align) {
            allocation_failure_bad_free(address, size, error);
        }
        return;
    }
    free_elsewhere(allocator, address, size.max(1), align);
}

/// Frees a block another CPU owns: into the outbox for its owner (out of
/// line, so the local fast path carries none of this).
#[inline(never)]
fn free_elsewhere(allocator: &mut Allocator, address: u64, size: usize, align: usize) {
    match owner_of(address) {
        Some(owner) => {
            if let Err(error) = allocator.free_remote(&mut Words, owner, address, size, align) {
                allocation_failure_bad_remote_free(address, owner, error);
            }
            // A large block (a borrowed one, typically) goes back at once
            // rather than waiting in a batch: its owner may need it soon.
            if size >= PROMPT_RETURN_BYTES {
                allocator.flush_outbox();
            }
        }
        None => allocation_failure_not_heap(address, size),
    }
}

/// A block freed on another CPU than its owner's at least this large is
/// handed back at once, not kept for a full batch.
const PROMPT_RETURN_BYTES: usize = 1 << 20;

/// The CPU whose share holds `address`.
#[inline]
fn owner_of(address: u64) -> Option<usize> {
    let owners = OWNERS.get()?;
    let shares = &owners.shares[..owners.count];
    let index = shares.partition_point(|&(start, _, _)| start <= address).checked_sub(1)?;
    let (start, end, cpu) = shares[index];
    (start <= address && address < end).then_some(cpu as usize)
}

/// Takes back this CPU's blocks freed elsewhere and hands over blocks freed
/// here; called before a CPU halts.
#[inline(never)]
pub(crate) fn idle() {
    lend(|allocator| {
        allocator.idle(&mut Words);
        publish(allocator);
    });
}

/// The per-CPU allocator as Rust's global allocator.
pub struct Global;

// SAFETY: `allocate` returns blocks of at least `size` bytes aligned to
// `align` that no one else uses until `free`; `free` takes them back.
unsafe impl GlobalAlloc for Global {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        allocate(layout.size(), layout.align())
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        free(pointer as u64, layout.size(), layout.align())
    }
}

#[global_allocator]
static GLOBAL: Global = Global;

/// Allocates `layout` from the running CPU's memory, or `None` when it is
/// full: the fallible path (no report, no panic).
pub fn try_allocate(layout: Layout) -> Option<core::ptr::NonNull<u8>> {
    core::ptr::NonNull::new(allocate(layout.size(), layout.align()))
}

/// One CPU's memory figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuUsage {
    pub cpu: usize,
    /// Bytes the heap can hand out (its share less its metadata).
    pub capacity: u64,
    /// Bytes of blocks handed out and not freed.
    pub in_use: u64,
    /// Bytes free.
    pub free: u64,
    /// Bytes of other CPUs' blocks freed here and handed back to them.
    pub remote_sent: u64,
    /// Bytes of other CPUs' blocks freed here, not yet handed back.
    pub remote_pending: u64,
    /// Bytes of this CPU's blocks freed elsewhere and taken back.
    pub remote_received: u64,
    /// Bytes of this CPU's share lent to other CPUs so far (requests their
    /// own shares could not serve; the blocks come back when freed).
    pub lent: u64,
    /// Bytes this CPU borrowed from other CPUs' shares so far.
    pub borrowed: u64,
}

fn exact(usage: Usage) -> CpuUsage {
    CpuUsage {
        cpu: usage.cpu,
        capacity: usage.heap.capacity_bytes,
        in_use: usage.heap.bytes_in_use,
        free: usage.heap.bytes_free,
        remote_sent: usage.remote_sent.bytes,
        remote_pending: usage.remote_pending.bytes,
        remote_received: usage.remote_received.bytes,
        lent: PUBLISHED[usage.cpu].lent.load(Ordering::Relaxed),
        borrowed: PUBLISHED[usage.cpu].borrowed.load(Ordering::Relaxed),
    }
}

/// Pages the running CPU has put to use so far: runs and spans its heap
/// handed out plus what it borrowed (wrapping; only differences count).
/// For the scheduler's TLB pacing (`toro_core::tlb_pacing`); `None` when
/// the allocator is not set up or is in use right now.
pub(crate) fn pages_taken_here() -> Option<u64> {
    let heap = ALLOCATORS.try_with(|allocator| allocator.pages_taken()).ok()?;
    let borrowed = PUBLISHED[percpu::current_index()].borrowed.load(Ordering::Relaxed);
    Some(heap.wrapping_add(borrowed / toro_core::allocator::PAGE_SIZE))
}

/// The running CPU's figures, exact. Takes back blocks freed for it
/// elsewhere first, so a quiet system shows what is really in use.
pub fn usage_here() -> CpuUsage {
    lend(|allocator| {
        allocator.idle(&mut Words);
        publish(allocator);
        exact(allocator.usage())
    })
    .unwrap_or_default()
}

/// CPU `cpu`'s figures as it last published them (when it last idled, or
/// within its last 256 allocations); exact for the running CPU.
pub fn usage(cpu: usize) -> Option<CpuUsage> {
    if cpu == percpu::current_index() {
        return Some(usage_here());
    }
    if !ALLOCATORS.is_set(cpu) {
        return None;
    }
    let published = &PUBLISHED[cpu];
    Some(CpuUsage {
        cpu,
        capacity: published.capacity.load(Ordering::Relaxed),
        in_use: published.in_use.load(Ordering::Relaxed),
        free: published.free.load(Ordering::Relaxed),
        remote_sent: published.remote_sent.load(Ordering::Relaxed),
        remote_pending: published.remote_pending.load(Ordering::Relaxed),
        remote_received: published.remote_received.load(Ordering::Relaxed),
        lent: published.lent.load(Ordering::Relaxed),
        borrowed: published.borrowed.load(Ordering::Relaxed),
    })
}

/// Where the failing CPU keeps its last failure, for the panic report.
static LAST_FAILURE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

#[cold]
#[inline(never)]
fn allocation_failure_record(allocator: &Allocator, size: usize, _align: usize) {
    LAST_FAILURE[allocator.cpu()].store(size as u64, Ordering::Relaxed);
    publish(allocator);
}

#[cold]
#[inline(never)]
fn allocation_failure_bad_free(address: u64, size: usize, error: toro_core::allocator::FreeError) {
    log::error!("bad free of {size} bytes at {address:#x} on cpu {}: {error}; block leaked", percpu::current_index());
}

#[cold]
#[inline(never)]
fn allocation_failure_bad_remote_free(address: u64, owner: usize, error: toro_core::allocator::RemoteError) {
    log::error!("cannot return block {address:#x} to cpu {owner}: {error}; block leaked");
}

#[cold]
#[inline(never)]
fn allocation_failure_not_heap(address: u64, size: usize) {
    log::error!("free of {size} bytes at {address:#x}, which no CPU's heap holds; ignored");
}

/// After an allocation failed on this CPU: which size, and every CPU's
/// usage (for the panic report of an infallible allocation).
pub(crate) fn write_failure_report(out: &mut impl Write) {
    let here = percpu::current_index();
    let failed = LAST_FAILURE[here].load(Ordering::Relaxed);
    if failed == 0 {
        return;
    }
    let _ = writeln!(out, "out of memory: cpu {here} could not allocate {failed} bytes from its share");
    let _ = writeln!(out, "memory by cpu (capacity / in use / free / remote frees sent, pending, received; KiB):");
    for (cpu, published) in PUBLISHED.iter().enumerate().take(percpu::online()) {
        let kib = |value: &AtomicU64| value.load(Ordering::Relaxed) >> 10;
        let _ = writeln!(
            out,
            "    cpu {cpu:<3} {:>9} / {:>9} / {:>9} / {} {} {}",
            kib(&published.capacity),
            kib(&published.in_use),
            kib(&published.free),
            kib(&published.remote_sent),
            kib(&published.remote_pending),
            kib(&published.remote_received)
        );
    }
}

/// Sets up every CPU's allocator over its share; the boot CPU calls this
/// once, while the other CPUs wait, before anything allocates.
///
/// `shares[i]` belongs to CPU index `cpus[i]`.
pub(crate) fn init(shares: &[CpuShare], cpus: &[usize]) -> Result<(), &'static str> {
    let count = shares.len();
    let ring_bytes = core::mem::size_of::<RemoteRing>() as u64;
    let ring_align = core::mem::align_of::<RemoteRing>() as u64;
    let allocator_bytes = core::mem::size_of::<Allocator>() as u64;
    let rings_offset = allocator_bytes.next_multiple_of(ring_align);
    let header = (rings_offset + count as u64 * ring_bytes).next_multiple_of(PAGE_SIZE as u64);
    let mut owners = Owners { shares: [(0, 0, 0); MAX_CPUS], count: 0, nodes: [0; MAX_CPUS] };
    // First every CPU's allocator and inbound rings, at its share's start.
    for (position, share) in shares.iter().enumerate() {
        let cpu = cpus[position];
        if share.end - share.start < header + CpuHeap::MIN_REGION_BYTES {
            return Err("a CPU's share of memory is too small for its allocator");
        }
        let heap = match CpuHeap::new(&mut Words, share.start + header, share.end - share.start - header) {
            Ok(heap) => heap,
            Err(_) => return Err("a CPU's share of memory cannot hold a heap"),
        };
        let allocator = share.start as *mut Allocator;
        // SAFETY: the share is usable RAM given to this CPU alone, mapped,
        // page-aligned (so aligned for Allocator and the rings); nothing
        // uses it yet.
        unsafe {
            allocator.write(CpuAllocator::new(cpu, heap, DEFAULT_BATCH_BLOCKS));
            for source in 0..count {
                let ring = (share.start + rings_offset + source as u64 * ring_bytes) as *mut RemoteRing;
                ring.write(RemoteRing::new());
            }
        }
        owners.shares[position] = (share.start, share.end, cpu as u16);
        owners.nodes[cpu] = share.domain.or(share.cpu_domain).unwrap_or(0);
    }
    // Then connect each ring: producer end to the source, consumer end to
    // the destination (the share holding the ring).
    for (destination_position, destination_share) in shares.iter().enumerate() {
        for source_position in 0..count {
            if source_position == destination_position {
                continue;
            }
            let ring =
                (destination_share.start + rings_offset + source_position as u64 * ring_bytes) as *mut RemoteRing;
            // SAFETY: each ring is split once, here, and lives as long as
            // the kernel; its ends go to one CPU each.
            let (producer, consumer) = unsafe { (*ring).split() };
            let source = shares[source_position].start as *mut Allocator;
            let destination = destination_share.start as *mut Allocator;
            // SAFETY: the allocators were written above and are not yet
            // published, so these are the only references.
            unsafe {
                let _ = (*source).connect_outbound(cpus[destination_position], producer);
                let _ = (*destination).connect_inbound(cpus[source_position], consumer);
            }
        }
    }
    owners.count = count;
    owners.shares[..count].sort_unstable_by_key(|&(start, _, _)| start);
    OWNERS.set(owners);
    for (position, share) in shares.iter().enumerate() {
        let allocator = share.start as *mut Allocator;
        // SAFETY: set up above, in the CPU's share, which nothing else
        // uses; publishing hands it to its CPU for good.
        let allocator = unsafe { &mut *allocator };
        publish(allocator);
        ALLOCATORS.set(cpus[position], allocator);
    }
    Ok(())
}
