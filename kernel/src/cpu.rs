//! Messages between CPUs, and waking a halted CPU.
//!
//! Every cross-CPU action (starting a thread on another CPU, moving one,
//! waking one) is a `Job` sent through the single-producer, single-consumer
//! ring of that CPU pair (one ring per ordered pair, so each ring has
//! exactly one writer CPU and one reader CPU): no lock and no locked
//! instruction on the way. The receiving CPU runs its jobs at its next
//! scheduling point or when idle; a sender wakes it with an IPI only when
//! it is halted.
//!
//! # A full ring
//!
//! A full ring is back-pressure, and no job ever runs inside [`send`]:
//!
//! - A thread that may block (not the idle thread, not scheduler or job
//!   context) waits: it yields until the ring has room, so its CPU keeps
//!   running its other threads and its own incoming jobs at each
//!   scheduling point.
//! - Scheduler and job context cannot wait (they may be what the other CPU
//!   waits for). There the job goes to this CPU's overflow queue for that
//!   destination, which the scheduler moves into the ring at every
//!   scheduling point (`drain_overflow`); an idle CPU with overflow left
//!   keeps polling instead of halting. Each job in it costs 24 bytes of
//!   heap: the queue is bounded by memory, never by recursion. Jobs of one
//!   pair keep their order: once a destination has overflow, every job for
//!   it waits behind (a thread waits until the overflow is gone).
//!
//! Each CPU counts the full rings it met ([`stats`]).
//!
//! The sleep/wake hand-shake is Dekker-style: the sleeper stores "sleeping"
//! then checks its rings; the sender pushes then checks "sleeping". Each
//! side puts an `mfence` between its store and its load (x86 may reorder a
//! store with a later load), so at least one of them sees the other: no
//! lost wake-up. `mfence` is a fence, not a locked instruction.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use toro_core::spsc::{Consumer, Producer, Ring};

use crate::arch::apic;
use crate::arch::percpu::{self, PerCpuCell, MAX_CPUS};

/// Jobs in flight per CPU pair.
const JOB_SLOTS: usize = 64;
/// The IPI vector that wakes a halted CPU.
pub(crate) use crate::arch::apic::WAKE_VECTOR;

/// A message's value, as it travels: up to 16 bytes, 8-aligned.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Payload([MaybeUninit<u64>; 2]);

impl Payload {
    fn new<T: Copy>(value: T) -> Self {
        const {
            assert!(
                core::mem::size_of::<T>() <= core::mem::size_of::<Payload>()
                    && core::mem::align_of::<T>() <= core::mem::align_of::<Payload>(),
                "a message's value is at most 16 bytes, 8-aligned"
            )
        };
        let mut payload = Payload([MaybeUninit::uninit(); 2]);
        // SAFETY: `T` fits (checked above); `payload` is ours.
        unsafe { (payload.0.as_mut_ptr() as *mut T).write(value) };
        payload
    }

    /// # Safety
    /// Made by `Payload::new::<T>`.
    unsafe fn read<T: Copy>(&self) -> T {
        // SAFETY: the caller's promise: a `T` was written here.
        unsafe { (self.0.as_ptr() as *const T).read() }
    }
}

/// A message in a ring: `run(function, payload)` is `message_job::<T>`,
/// which calls `function` (an `unsafe fn(T)`) with the `T` in `payload`.
/// Made only by [`send_to`], [`on_cpu`] and [`send_if_room`], from a typed
/// value and a function of that type.
#[derive(Clone, Copy)]
struct Job {
    run: unsafe fn(*const (), Payload),
    function: *const (),
    payload: Payload,
}

// SAFETY: whoever sends a message promises (`send_to`'s contract) that its
// function may run with its value on the receiving CPU.
unsafe impl Send for Job {}

impl Job {
    fn new<T: Copy>(message: T, run: unsafe fn(T)) -> Self {
        Job { run: message_job::<T>, function: run as *const (), payload: Payload::new(message) }
    }
}

/// Every message's first code on its CPU (job context): the typed call.
///
/// # Safety
/// `function` is an `unsafe fn(T)` and `payload` holds a `T` (`Job::new`),
/// sent under `send_to`'s contract.
unsafe fn message_job<T: Copy>(function: *const (), payload: Payload) {
    // SAFETY: `function` came from an `unsafe fn(T)` (`Job::new`).
    let run: unsafe fn(T) = unsafe { core::mem::transmute::<*const (), unsafe fn(T)>(function) };
    // SAFETY: the payload holds a `T`; the sender's contract covers the call.
    unsafe { run(payload.read::<T>()) }
}

type JobRing = Ring<Job, JOB_SLOTS>;

/// One CPU's ends of the job rings: producer ends towards every other CPU,
/// consumer ends from every other CPU, and the jobs waiting for room in a
/// full ring. Used by its CPU only.
struct Mailboxes {
    outgoing: Vec<Option<Producer<'static, Job, JOB_SLOTS>>>,
    incoming: Vec<Option<Consumer<'static, Job, JOB_SLOTS>>>,
    /// By destination: jobs sent from scheduler context that found the
    /// ring full, oldest first.
    overflow: Vec<VecDeque<Job>>,
    /// Jobs in all of `overflow`.
    overflowing: usize,
}

// SAFETY: the ring ends and queued jobs move with the mailboxes to the CPU
// they are made for (set up by the boot CPU, then used only there).
unsafe impl Send for Mailboxes {}

/// Each CPU's mailboxes; set up by the boot CPU, then used by that CPU.
static MAILBOXES: PerCpuCell<Mailboxes> = PerCpuCell::new();

/// Whether a CPU is halted (or about to); written only by that CPU.
#[repr(align(64))]
struct Sleeping(AtomicBool);
static SLEEPING: [Sleeping; MAX_CPUS] = [const { Sleeping(AtomicBool::new(false)) }; MAX_CPUS];

/// A CPU's message counters and context flag. Written only by that CPU
/// (a load and a store: no read-modify-write), read by any.
#[repr(align(64))]
struct Counters {
    /// Times a job met a full ring.
    ring_full: AtomicU64,
    /// Times a thread waited (yielded) for room in a ring.
    thread_waits: AtomicU64,
    /// Jobs put in the overflow queue (scheduler or job context).
    overflowed: AtomicU64,
    /// Most jobs ever in the overflow queue at once.
    overflow_peak: AtomicU64,
    /// Jobs sent and jobs run.
    sent: AtomicU64,
    ran: AtomicU64,
    /// Running jobs (job context): a send there must not wait.
    in_job: AtomicBool,
}

static COUNTERS: [Counters; MAX_CPUS] = [const {
    Counters {
        ring_full: AtomicU64::new(0),
        thread_waits: AtomicU64::new(0),
        overflowed: AtomicU64::new(0),
        overflow_peak: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        ran: AtomicU64::new(0),
        in_job: AtomicBool::new(false),
    }
}; MAX_CPUS];

/// Adds `amount` to an owner-only counter without a locked instruction.
#[inline(always)]
fn bump(counter: &AtomicU64, amount: u64) {
    counter.store(counter.load(Ordering::Relaxed) + amount, Ordering::Relaxed);
}

/// One CPU's message figures (`stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuStats {
    /// Times a job this CPU sent found its ring full.
    pub ring_full: u64,
    /// Times a thread of this CPU waited for room in a full ring.
    pub thread_waits: u64,
    /// Jobs sent from scheduler or job context that waited in the overflow
    /// queue instead.
    pub overflowed: u64,
    /// Most jobs in the overflow queue at once.
    pub overflow_peak: u64,
    /// Jobs sent to other CPUs.
    pub sent: u64,
    /// Jobs from other CPUs run here.
    pub ran: u64,
}

impl core::fmt::Display for CpuStats {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} jobs sent, {} run; ring full {} times ({} thread waits, {} jobs overflowed, overflow peak {})",
            self.sent, self.ran, self.ring_full, self.thread_waits, self.overflowed, self.overflow_peak
        )
    }
}

/// CPU `cpu`'s message figures (as of now; each CPU updates its own).
pub fn stats(cpu: usize) -> Option<CpuStats> {
    if cpu >= count() {
        return None;
    }
    let counters = &COUNTERS[cpu];
    let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    Some(CpuStats {
        ring_full: read(&counters.ring_full),
        thread_waits: read(&counters.thread_waits),
        overflowed: read(&counters.overflowed),
        overflow_peak: read(&counters.overflow_peak),
        sent: read(&counters.sent),
        ran: read(&counters.ran),
    })
}

pub(crate) use crate::arch::cpu::full_fence;

/// Bytes the boot CPU allocates in [`init`] for `cpus` CPUs: a ring per
/// ordered pair and each CPU's mailboxes (grows with the square of the
/// count: 128 CPUs need about 35 MiB).
pub(crate) fn rings_bytes(cpus: usize) -> u64 {
    let slots = MAX_CPUS.min(cpus.max(1));
    let pair = core::mem::size_of::<JobRing>() as u64;
    let mailboxes = core::mem::size_of::<Mailboxes>()
        + slots
            * (core::mem::size_of::<Option<Producer<'static, Job, JOB_SLOTS>>>()
                + core::mem::size_of::<Option<Consumer<'static, Job, JOB_SLOTS>>>()
                + core::mem::size_of::<VecDeque<Job>>());
    let cpus = cpus as u64;
    cpus * cpus.saturating_sub(1) * pair + cpus * mailboxes as u64
}

/// Sets up the job rings between every pair of running CPUs. Boot CPU,
/// once, after memory is up and before any job is sent.
pub(crate) fn init(cpus: &[usize]) {
    let slots = MAX_CPUS.min(cpus.iter().max().map_or(1, |m| m + 1));
    let mut boxes: Vec<Mailboxes> = cpus
        .iter()
        .map(|_| Mailboxes {
            outgoing: (0..slots).map(|_| None).collect(),
            incoming: (0..slots).map(|_| None).collect(),
            overflow: (0..slots).map(|_| VecDeque::new()).collect(),
            overflowing: 0,
        })
        .collect();
    for (source_position, &source) in cpus.iter().enumerate() {
        for (destination_position, &destination) in cpus.iter().enumerate() {
            if source == destination {
                continue;
            }
            let ring: &'static mut JobRing = Box::leak(Box::new(JobRing::new()));
            let (producer, consumer) = ring.split();
            boxes[source_position].outgoing[destination] = Some(producer);
            boxes[destination_position].incoming[source] = Some(consumer);
        }
    }
    for (position, mailboxes) in boxes.into_iter().enumerate() {
        MAILBOXES.set(cpus[position], Box::leak(Box::new(mailboxes)));
    }
}

/// Runs `f` in scheduler context: what it sends never waits (the
/// scheduler finishing a switch, which a thread's wait must not re-enter).
pub(crate) fn in_scheduler_context<R>(f: impl FnOnce() -> R) -> R {
    let counters = &COUNTERS[percpu::current_index()];
    let outer = counters.in_job.load(Ordering::Relaxed);
    counters.in_job.store(true, Ordering::Relaxed);
    let result = f();
    counters.in_job.store(outer, Ordering::Relaxed);
    result
}

/// Runs every job waiting for this CPU; returns how many ran. Jobs run in
/// job context: what they send never waits (see the module docs).
#[inline(never)]
pub(crate) fn run_incoming() -> usize {
    let counters = &COUNTERS[percpu::current_index()];
    let outer = counters.in_job.load(Ordering::Relaxed);
    counters.in_job.store(true, Ordering::Relaxed);
    let mut ran = 0;
    loop {
        // The borrow ends before the job runs (a job may send jobs itself).
        let found = MAILBOXES
            .try_with(|mailboxes| mailboxes.incoming.iter_mut().flatten().find_map(|consumer| consumer.pop()))
            .ok()
            .flatten();
        let Some(job) = found else { break };
        // SAFETY: each job is made for exactly one run on this CPU (its
        // sender promised that it may run here: `send_to`).
        unsafe { (job.run)(job.function, job.payload) };
        ran += 1;
    }
    counters.in_job.store(outer, Ordering::Relaxed);
    bump(&counters.ran, ran as u64);
    ran
}

/// Moves jobs waiting in this CPU's overflow queue into their rings as far
/// as there is room, waking their destinations; true if some are left.
/// Called at every scheduling point.
#[inline(never)]
pub(crate) fn drain_overflow() -> bool {
    MAILBOXES
        .try_with(|mailboxes| {
            if mailboxes.overflowing == 0 {
                return false;
            }
            for (destination, queue) in mailboxes.overflow.iter_mut().enumerate() {
                let Some(producer) = mailboxes.outgoing.get_mut(destination).and_then(Option::as_mut) else {
                    continue;
                };
                let mut moved = 0;
                while let Some(&job) = queue.front() {
                    if producer.push(job).is_err() {
                        break;
                    }
                    queue.pop_front();
                    moved += 1;
                }
                if moved > 0 {
                    mailboxes.overflowing -= moved;
                    wake(destination);
                }
            }
            mailboxes.overflowing != 0
        })
        .unwrap_or(false)
}

/// Whether jobs wait in this CPU's overflow queue.
pub(crate) fn overflow_pending() -> bool {
    MAILBOXES.try_with(|mailboxes| mailboxes.overflowing != 0).unwrap_or(false)
}

/// What a scheduling point finds waiting for this CPU's messaging.
#[derive(Clone, Copy)]
pub(crate) struct Waiting {
    /// Jobs wait in the overflow queue (`drain_overflow`).
    pub overflow: bool,
    /// Some incoming ring holds a job (`run_incoming`).
    pub incoming: bool,
}

/// Looks, without running anything, at what waits: one borrow, one load
/// of each incoming ring's tail. Inlined into every scheduling point so
/// that the common case (nothing waits) makes no call: under TCG each
/// call's return is a look-up of translated code (see
/// `arch::irq::work_marked`). A job that arrives after the look is run at
/// the next scheduling point, as one that arrived after `run_incoming`'s
/// last pop would be.
#[inline(always)]
pub(crate) fn waiting() -> Waiting {
    MAILBOXES
        .try_with(|mailboxes| Waiting { overflow: mailboxes.overflowing != 0, incoming: any_incoming(mailboxes) })
        .unwrap_or(Waiting { overflow: false, incoming: false })
}

/// Polls this CPU's rings for up to `ticks` TSC ticks; true if a message
/// arrived (or, on a CPU that owns devices, a handler marked work).
#[inline(never)]
pub(crate) fn poll_for_work(ticks: u64) -> bool {
    // A CPU that owns devices takes their interrupts while it polls, and
    // stops polling when a handler marked work: device work does not wait
    // for the poll to end (docs/interrupts.md).
    let devices = crate::arch::irq::devices_here();
    let start = crate::arch::cpu::rdtsc();
    while crate::arch::cpu::rdtsc() - start < ticks {
        if has_incoming() {
            return true;
        }
        if devices {
            crate::arch::cpu::interrupt_window();
            if crate::arch::irq::work_marked() {
                return true;
            }
        }
        core::hint::spin_loop();
    }
    false
}

/// One turn of a polling loop (a receiver, a join or a service call that
/// spins before it blocks): runs the jobs waiting for this CPU, since other
/// CPUs may wait on them, or else gives the spin-loop hint. The look at
/// the rings is inline: a turn that finds nothing makes no call (see
/// `waiting`).
#[inline(always)]
pub(crate) fn poll_turn() {
    if has_incoming() {
        run_incoming();
    } else {
        core::hint::spin_loop();
    }
}

#[inline(always)]
fn has_incoming() -> bool {
    MAILBOXES.try_with(any_incoming).unwrap_or(false)
}

/// Whether some incoming ring holds a job (re-reads each producer's index).
#[inline(always)]
fn any_incoming(mailboxes: &mut Mailboxes) -> bool {
    mailboxes.incoming.iter_mut().flatten().any(|consumer| !consumer.is_empty())
}

/// Halts this CPU until an interrupt, unless a job arrived: the sleeping
/// half of the wake-up hand-shake (see the module docs). Called with
/// interrupts off, by the idle thread.
#[inline(never)]
pub(crate) fn halt_unless_work() {
    let me = percpu::current_index();
    SLEEPING[me].0.store(true, Ordering::Relaxed);
    full_fence();
    if !has_incoming() {
        // A wake-up IPI or timer interrupt arriving after the check above
        // ends the HLT (see `halt_until_interrupt`).
        crate::arch::cpu::halt_until_interrupt();
    }
    SLEEPING[me].0.store(false, Ordering::Relaxed);
}

/// Why a message could not be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunError {
    /// No running CPU has this index.
    NoSuchCpu(usize),
    /// The CPUs' mailboxes are not set up (called before `main`).
    NotReady,
}

impl core::fmt::Display for RunError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoSuchCpu(cpu) => write!(f, "no running CPU {cpu}"),
            Self::NotReady => write!(f, "CPU mailboxes not set up yet"),
        }
    }
}

/// What one try to send found.
enum Attempt {
    /// In the ring (or, from scheduler or job context, in the overflow queue).
    Sent,
    /// The ring is full (or overflow waits before it); the thread waits.
    Full,
}

/// Sends `run(message)` to CPU `cpu` (another CPU): it runs there in job
/// context (short, never blocking) at that CPU's next scheduling point or
/// when it idles; the messages of one CPU pair run in the order sent. The
/// message is typed: up to 16 bytes of value (checked when compiled) and a
/// function of that type, no casts. Never runs it here; a full ring is
/// back-pressure (see the module docs).
///
/// # Safety
/// `run(message)` must be sound on `cpu`, in job context, whenever it
/// arrives: what `message` points to lives until then (docs/sync.md, "No
/// message outlives what it points to") and is used there only as that CPU
/// may.
#[inline(always)]
pub(crate) unsafe fn send_to<T: Copy>(cpu: usize, message: T, run: unsafe fn(T)) -> Result<(), RunError> {
    send(cpu, Job::new(message, run))
}

/// Runs `run(message)` on CPU `cpu`: directly, in the caller's context, if
/// that is this CPU, else as a message ([`send_to`]). The kernel's one way
/// to do "here if this is the home CPU, else send it there": the scheduler
/// (hand-over, wake-up, release), mutexes, condition variables, channels
/// and services all use it.
///
/// # Safety
/// As for [`send_to`]; and `run(message)` must be sound in the caller's
/// context too when `cpu` is this CPU.
#[inline(always)]
pub(crate) unsafe fn on_cpu<T: Copy>(cpu: usize, message: T, run: unsafe fn(T)) -> Result<(), RunError> {
    if cpu == percpu::current_index() {
        // SAFETY: the caller's promise, on its CPU.
        unsafe { run(message) };
        Ok(())
    } else {
        // SAFETY: the caller's promise.
        unsafe { send_to(cpu, message, run) }
    }
}

/// Puts `job` in the ring from this CPU to `cpu` and wakes `cpu` if it
/// sleeps. When the ring is full, a thread that may block yields until it
/// has room; scheduler and job context queue the job in the overflow queue
/// instead (see the module docs). Never runs a job.
#[inline(never)]
fn send(cpu: usize, job: Job) -> Result<(), RunError> {
    #[cfg(feature = "lockcheck-mutation-1")]
    crate::lockcheck_mutation::plant();
    let me = percpu::current_index();
    let counters = &COUNTERS[me];
    let may_wait = !counters.in_job.load(Ordering::Relaxed) && crate::thread::scheduler::may_block();
    let mut counted = false;
    loop {
        let attempt = MAILBOXES
            .try_with(|mailboxes| {
                let producer =
                    mailboxes.outgoing.get_mut(cpu).and_then(Option::as_mut).ok_or(RunError::NoSuchCpu(cpu))?;
                let queue = &mut mailboxes.overflow[cpu];
                if queue.is_empty() && producer.push(job).is_ok() {
                    return Ok(Attempt::Sent);
                }
                if !counted {
                    bump(&counters.ring_full, 1);
                }
                if may_wait {
                    return Ok(Attempt::Full);
                }
                if queue.try_reserve(1).is_err() {
                    overflow_out_of_memory(cpu);
                }
                queue.push_back(job);
                mailboxes.overflowing += 1;
                bump(&counters.overflowed, 1);
                if mailboxes.overflowing as u64 > counters.overflow_peak.load(Ordering::Relaxed) {
                    counters.overflow_peak.store(mailboxes.overflowing as u64, Ordering::Relaxed);
                }
                Ok(Attempt::Sent)
            })
            .map_err(|_| RunError::NotReady)??;
        match attempt {
            Attempt::Sent => break,
            Attempt::Full => {
                if !counted {
                    bump(&counters.thread_waits, 1);
                }
                counted = true;
                // Back-pressure: let this CPU run its other threads and
                // its incoming jobs (and drain its overflow) meanwhile.
                crate::thread::scheduler::yield_now();
            }
        }
    }
    bump(&counters.sent, 1);
    wake(cpu);
    Ok(())
}

/// Sends `run(message)` to `cpu` only if its ring has room right now (and
/// no overflow waits for that ring): no wait, no overflow, no allocation.
/// For the allocator, which may run anywhere (even inside a mailbox
/// borrow: then nothing is sent). True if sent.
///
/// # Safety
/// As for [`send_to`].
#[inline(always)]
pub(crate) unsafe fn send_if_room<T: Copy>(cpu: usize, message: T, run: unsafe fn(T)) -> bool {
    push_if_room(cpu, Job::new(message, run))
}

/// `send_if_room`'s untyped part.
#[inline(never)]
fn push_if_room(cpu: usize, job: Job) -> bool {
    let counters = &COUNTERS[percpu::current_index()];
    let sent = MAILBOXES
        .try_with(|mailboxes| {
            let Some(producer) = mailboxes.outgoing.get_mut(cpu).and_then(Option::as_mut) else { return false };
            if !mailboxes.overflow[cpu].is_empty() || producer.push(job).is_err() {
                bump(&counters.ring_full, 1);
                return false;
            }
            true
        })
        .unwrap_or(false);
    if sent {
        bump(&counters.sent, 1);
        wake(cpu);
    }
    sent
}

/// Whether this CPU is running jobs or finishing a switch (where a send
/// must not wait).
pub(crate) fn in_job() -> bool {
    COUNTERS[percpu::current_index()].in_job.load(Ordering::Relaxed)
}

#[cold]
#[inline(never)]
fn overflow_out_of_memory(cpu: usize) -> ! {
    panic!("out of memory for a job waiting for room in the full ring to cpu {cpu}");
}

/// Wakes CPU `cpu` if it is halted.
fn wake(cpu: usize) {
    full_fence();
    if SLEEPING[cpu].0.load(Ordering::Relaxed) {
        if let Some(block) = percpu::by_index(cpu) {
            apic::send_fixed(block.apic_id, WAKE_VECTOR);
        }
    }
}

/// CPUs running.
pub fn count() -> usize {
    percpu::online()
}

/// The index of the running CPU (0 = boot CPU).
pub fn current() -> usize {
    percpu::current_index()
}
