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
//! The sleep/wake hand-shake is Dekker-style: the sleeper stores "sleeping"
//! then checks its rings; the sender pushes then checks "sleeping". Each
//! side puts an `mfence` between its store and its load (x86 may reorder a
//! store with a later load), so at least one of them sees the other: no
//! lost wake-up. `mfence` is a fence, not a locked instruction.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use toro_core::spsc::{Consumer, Producer, Ring};

use crate::arch::apic;
use crate::arch::percpu::{self, MAX_CPUS};

/// Jobs in flight per CPU pair.
const JOB_SLOTS: usize = 64;
/// The IPI vector that wakes a halted CPU.
pub(crate) use crate::arch::apic::WAKE_VECTOR;

/// A message to a CPU: `run(data, extra)` runs there, in scheduler
/// context (short, never blocking): enqueue a thread, wake one, release
/// one, start a `run_on` closure.
#[derive(Clone, Copy)]
pub(crate) struct Job {
    pub run: unsafe fn(*mut u8, u64),
    pub data: *mut u8,
    pub extra: u64,
}

// SAFETY: a Job carries a `Task` whose closure and result are `Send`.
unsafe impl Send for Job {}

type JobRing = Ring<Job, JOB_SLOTS>;

/// One CPU's ends of the job rings: producer ends towards every other CPU,
/// consumer ends from every other CPU. Used by its CPU only.
struct Mailboxes {
    outgoing: Vec<Option<Producer<'static, Job, JOB_SLOTS>>>,
    incoming: Vec<Option<Consumer<'static, Job, JOB_SLOTS>>>,
}

/// Each CPU's mailboxes; published by the boot CPU, then used by that CPU.
static MAILBOXES: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Whether a CPU is halted (or about to); written only by that CPU.
#[repr(align(64))]
struct Sleeping(AtomicBool);
static SLEEPING: [Sleeping; MAX_CPUS] = [const { Sleeping(AtomicBool::new(false)) }; MAX_CPUS];

pub(crate) use crate::arch::cpu::full_fence;

/// # Safety
/// The caller must not hold another reference from an earlier call (the
/// mailboxes are used by their CPU only, not from interrupt handlers).
unsafe fn mine() -> Option<&'static mut Mailboxes> {
    let address = MAILBOXES[percpu::current_index()].load(Ordering::Acquire);
    // SAFETY: published by `init`, used by this CPU only; see above.
    (address != 0).then(|| unsafe { &mut *(address as *mut Mailboxes) })
}

/// Sets up the job rings between every pair of running CPUs. Boot CPU,
/// once, after memory is up and before any job is sent.
pub(crate) fn init(cpus: &[usize]) {
    let mut boxes: Vec<Mailboxes> = cpus
        .iter()
        .map(|_| Mailboxes {
            outgoing: (0..MAX_CPUS.min(cpus.iter().max().map_or(1, |m| m + 1))).map(|_| None).collect(),
            incoming: (0..MAX_CPUS.min(cpus.iter().max().map_or(1, |m| m + 1))).map(|_| None).collect(),
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
        let address = Box::leak(Box::new(mailboxes)) as *mut Mailboxes as u64;
        MAILBOXES[cpus[position]].store(address, Ordering::Release);
    }
}

/// Runs every job waiting for this CPU; returns how many ran.
#[inline(never)]
pub(crate) fn run_incoming() -> usize {
    let mut ran = 0;
    loop {
        let mut found = None;
        // SAFETY: one use of this CPU's mailboxes; released before the job
        // runs (a job may send jobs itself).
        if let Some(mailboxes) = unsafe { mine() } {
            found = mailboxes.incoming.iter_mut().flatten().find_map(|consumer| consumer.pop());
        }
        let Some(job) = found else { return ran };
        // SAFETY: each job is made for exactly one run on this CPU.
        unsafe { (job.run)(job.data, job.extra) };
        ran += 1;
    }
}

/// Polls this CPU's rings for up to `ticks` TSC ticks; true if a message
/// arrived.
#[inline(never)]
pub(crate) fn poll_for_work(ticks: u64) -> bool {
    let start = crate::arch::cpu::rdtsc();
    while crate::arch::cpu::rdtsc() - start < ticks {
        if has_incoming() {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

fn has_incoming() -> bool {
    // SAFETY: one use of this CPU's mailboxes.
    match unsafe { mine() } {
        Some(mailboxes) => mailboxes.incoming.iter_mut().flatten().any(|consumer| !consumer.is_empty()),
        None => false,
    }
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

/// Puts `job` in the ring from this CPU to `cpu` (waiting, while serving
/// this CPU's own jobs, if it is full) and wakes `cpu` if it sleeps.
#[inline(never)]
pub(crate) fn send(cpu: usize, job: Job) -> Result<(), RunError> {
    loop {
        // SAFETY: one use of this CPU's mailboxes, ended before jobs run.
        let Some(mailboxes) = (unsafe { mine() }) else { return Err(RunError::NotReady) };
        let Some(producer) = mailboxes.outgoing.get_mut(cpu).and_then(Option::as_mut) else {
            return Err(RunError::NoSuchCpu(cpu));
        };
        if producer.push(job).is_ok() {
            break;
        }
        // The ring is full: the other CPU is busy; serve our own meanwhile.
        run_incoming();
        core::hint::spin_loop();
    }
    wake(cpu);
    Ok(())
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
