//! Interrupt vectors: the one list of fixed vectors, each CPU's handler
//! table and vector allocator, the end of interrupt, and storm control.
//!
//! Every CPU has its own table of 256 slots (allocated from its own memory
//! by `init_cpu`) and allocates the device vectors
//! [`FIRST_DEVICE_VECTOR`]..=[`LAST_DEVICE_VECTOR`] from it: vector 0x41 on
//! CPU 2 and vector 0x41 on CPU 3 are different interrupts. A table is
//! touched only by its CPU: by threads with interrupts off (register,
//! free) and by the handlers, which run only inside the interrupt windows
//! of `arch::cpu::interrupt_window` and the idle `hlt` (docs/interrupts.md),
//! so the two never overlap and no lock is needed. Registering for another
//! CPU is a message to it (`crate::interrupts::register_on`).
//!
//! Handlers run in interrupt context and must only acknowledge and mark
//! work (set a flag, then [`mark_work`]); the work itself is done at the
//! CPU's next scheduling point by [`run_marked_work`], which runs the
//! CPU's deferred functions (a service's wake-up, a storm report).
//!
//! End of interrupt: every vector at or above 32 gets one, except the
//! spurious vector (Intel SDM vol. 3, 11.9: a spurious interrupt sets no
//! in-service bit and must not be acknowledged). Edge-triggered sources
//! are acknowledged before their handler runs; level-triggered ones
//! ([`Trigger::Level`], an IOAPIC line shared with a device that keeps it
//! asserted until the driver acknowledges the device) only when the driver
//! calls [`end_level_interrupt`], so the IOAPIC does not deliver the line
//! again before the device is quiet. The local APIC ends the highest
//! in-service vector on each EOI, so deferred ends are issued highest
//! first (see `end_level_interrupt`).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use super::percpu::{self, MAX_CPUS};

/// Vectors 0-31 are the CPU's exceptions (Intel SDM vol. 3, table 6-1).
pub const EXCEPTION_VECTORS: u8 = 32;
/// The first vector handed out to devices.
pub const FIRST_DEVICE_VECTOR: u8 = 0x30;
/// The last vector handed out to devices (those above are the fixed ones
/// below, at a higher priority class than any device).
pub const LAST_DEVICE_VECTOR: u8 = 0xdf;
/// The local APIC timer (`thread::scheduler`'s sleeps).
pub const TIMER_VECTOR: u8 = 0xef;
/// The IPI that wakes a halted CPU when a message arrives (`crate::cpu`).
pub const WAKE_VECTOR: u8 = 0xf0;
/// The local APIC's spurious-interrupt vector (its low 4 bits must be 1 on
/// older APICs; SDM vol. 3, 11.9).
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// More than this many interrupts from one vector within
/// [`STORM_WINDOW_MICROSECONDS`] is a storm: the vector is silenced (the
/// default; `set_storm_threshold`, `toro.irq_storm=`).
pub const STORM_THRESHOLD: u32 = 1_000;
static THRESHOLD: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(STORM_THRESHOLD);

/// Sets the storm threshold (boot CPU, before any scheduler starts).
pub fn set_storm_threshold(threshold: u32) {
    THRESHOLD.store(threshold, Ordering::Relaxed);
}

fn storm_threshold() -> u32 {
    THRESHOLD.load(Ordering::Relaxed)
}
/// The window over which [`STORM_THRESHOLD`] is counted.
pub const STORM_WINDOW_MICROSECONDS: u64 = 10_000;

/// A handler: runs in interrupt context on the CPU whose table holds it,
/// with `data` as registered. Acknowledge and mark work only.
pub type Handler = fn(data: usize);

/// How a source signals (ACPI 6.5, 5.2.12.5 "Interrupt Source Override",
/// flags: trigger mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// MSI, MSI-X, IPIs, ISA lines: acknowledged before the handler runs.
    Edge,
    /// A level-triggered IOAPIC line: acknowledged by the driver through
    /// [`end_level_interrupt`] once the device is quiet.
    Level,
}

/// What a driver registers for a vector.
#[derive(Clone, Copy)]
pub struct Registration {
    /// Shown in reports (storms, the boot report).
    pub name: &'static str,
    pub handler: Handler,
    pub data: usize,
    pub trigger: Trigger,
    /// Called (in scheduler context, on this CPU) after the vector was
    /// silenced for a storm: mask the source at the device or IOAPIC.
    pub on_storm: Option<fn(usize)>,
}

/// Why a vector could not be had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqError {
    /// Every device vector of this CPU is taken.
    NoFreeVector,
    /// The vector is not a device vector, or not registered.
    NotADeviceVector(u8),
    /// The vector is already registered.
    InUse(u8),
    /// This CPU's table is not set up (before its scheduler started).
    NotReady,
}

impl core::fmt::Display for IrqError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoFreeVector => write!(f, "no free interrupt vector on this CPU"),
            Self::NotADeviceVector(vector) => write!(f, "vector {vector:#x} is not a registered device vector"),
            Self::InUse(vector) => write!(f, "vector {vector:#x} is already registered"),
            Self::NotReady => write!(f, "this CPU's interrupt table is not set up yet"),
        }
    }
}

#[derive(Clone, Copy)]
struct Slot {
    registration: Option<Registration>,
    /// Interrupts taken on this vector.
    count: u64,
    /// Storm control: the start of the current window and its count.
    window_start: u64,
    window_count: u32,
    /// Silenced after a storm: still acknowledged, the handler no longer runs.
    silenced: bool,
    /// Level-triggered and taken: its EOI waits for `end_level_interrupt`.
    deferred: bool,
    /// `end_level_interrupt` was called, but a higher deferred vector is
    /// still in service, so the EOI waits for that one.
    ended: bool,
    /// How to stop the source itself after a storm (`set_source_mask`): a
    /// PCI function's MSI or MSI-X, recorded when it was programmed.
    source_mask: Option<(fn(usize), usize)>,
}

const EMPTY_SLOT: Slot = Slot {
    registration: None,
    count: 0,
    window_start: 0,
    window_count: 0,
    silenced: false,
    deferred: false,
    ended: false,
    source_mask: None,
};

/// A deferred function run at the next scheduling point.
#[derive(Clone, Copy)]
struct Deferred {
    run: fn(usize),
    data: usize,
    marked: bool,
}

/// One CPU's interrupt state. Used by its CPU only (see the module docs).
struct Table {
    slots: [Slot; 256],
    /// Spurious interrupts (the APIC's spurious vector).
    spurious: u64,
    /// Interrupts on a vector with no handler (acknowledged and counted).
    unexpected: u64,
    /// Vectors that stormed, to report at the next scheduling point.
    storms: Vec<u8>,
    /// Silenced vectors taken again, whose EOI waits for the next
    /// scheduling point.
    to_end: Vec<u8>,
    /// An unexpected vector to report (the first one since the last report).
    unexpected_to_report: Option<u8>,
    /// Whether some handler marked work since the last `run_marked_work`.
    work_marked: bool,
    /// Device vectors registered on this CPU: while there are any, every
    /// scheduling point opens the interrupt window
    /// (`thread::scheduler::interrupt_window_if_due`).
    registered: u16,
    deferred: Vec<Deferred>,
}

/// Each CPU's table, published by `init_cpu` on that CPU.
static TABLES: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// # Safety
/// Interrupt context or thread context with interrupts off, not holding
/// another reference from an earlier call (see the module docs).
unsafe fn mine() -> Option<&'static mut Table> {
    let address = TABLES[percpu::current_index()].load(Ordering::Acquire);
    // SAFETY: published by `init_cpu`, used by this CPU only; see above.
    (address != 0).then(|| unsafe { &mut *(address as *mut Table) })
}

/// Whether an interrupt handler marked work on this CPU since
/// `run_marked_work` last ran: one load, inlined into every scheduling
/// point so that the common case (nothing marked) makes no call. Under
/// TCG each call's return is a look-up of translated code, and the two
/// calls a scheduling point made for nothing cost about 110 ns of a 280 ns
/// yield. Thread context with interrupts off (the only writer, this CPU's
/// handler, cannot run meanwhile).
#[inline(always)]
pub fn work_marked() -> bool {
    read_table(|table| table.work_marked)
}

/// Whether this CPU has device vectors registered (it owns a device that
/// interrupts). Inlined like `work_marked`; same context.
#[inline(always)]
pub fn devices_here() -> bool {
    read_table(|table| table.registered != 0)
}

/// `read(this CPU's table)`, false before the table exists. Thread context
/// with interrupts off (see `work_marked`).
#[inline(always)]
fn read_table(read: impl FnOnce(&Table) -> bool) -> bool {
    let address = TABLES[percpu::current_index()].load(Ordering::Acquire);
    // SAFETY: published by `init_cpu`, never freed, this CPU's; plain reads
    // of its fields, and the reference ends with `read`, before any handler
    // (the only writer meanwhile) can run.
    address != 0 && read(unsafe { &*(address as *const Table) })
}

/// Sets up this CPU's table (from its own memory). Once per CPU, when its
/// scheduler starts.
pub fn init_cpu() {
    let table = Box::new(Table {
        slots: [EMPTY_SLOT; 256],
        spurious: 0,
        unexpected: 0,
        storms: Vec::with_capacity(8),
        to_end: Vec::with_capacity(256),
        unexpected_to_report: None,
        work_marked: false,
        registered: 0,
        deferred: Vec::new(),
    });
    TABLES[percpu::current_index()].store(Box::into_raw(table) as u64, Ordering::Release);
}

/// Registers `registration` for a free device vector of this CPU; returns
/// the vector.
pub fn allocate(registration: Registration) -> Result<u8, IrqError> {
    // SAFETY: thread context, interrupts off, no other reference held.
    let table = unsafe { mine() }.ok_or(IrqError::NotReady)?;
    let vector = (FIRST_DEVICE_VECTOR..=LAST_DEVICE_VECTOR)
        .find(|&vector| table.slots[vector as usize].registration.is_none())
        .ok_or(IrqError::NoFreeVector)?;
    table.slots[vector as usize] = Slot { registration: Some(registration), ..EMPTY_SLOT };
    table.registered += 1;
    Ok(vector)
}

/// Registers `registration` for the given device vector of this CPU.
pub fn register(vector: u8, registration: Registration) -> Result<(), IrqError> {
    if !(FIRST_DEVICE_VECTOR..=LAST_DEVICE_VECTOR).contains(&vector) {
        return Err(IrqError::NotADeviceVector(vector));
    }
    // SAFETY: as in `allocate`.
    let table = unsafe { mine() }.ok_or(IrqError::NotReady)?;
    let slot = &mut table.slots[vector as usize];
    if slot.registration.is_some() {
        return Err(IrqError::InUse(vector));
    }
    *slot = Slot { registration: Some(registration), ..EMPTY_SLOT };
    table.registered += 1;
    Ok(())
}

/// Frees a device vector of this CPU (its interrupts count as unexpected
/// afterwards).
pub fn free(vector: u8) -> Result<(), IrqError> {
    // SAFETY: as in `allocate`.
    let table = unsafe { mine() }.ok_or(IrqError::NotReady)?;
    let slot = table.slots.get_mut(vector as usize).filter(|s| s.registration.is_some());
    let Some(slot) = slot.filter(|_| (FIRST_DEVICE_VECTOR..=LAST_DEVICE_VECTOR).contains(&vector)) else {
        return Err(IrqError::NotADeviceVector(vector));
    };
    *slot = EMPTY_SLOT;
    table.registered -= 1;
    Ok(())
}

/// Says how to stop the source of this CPU's `vector` after a storm:
/// `mask(data)` runs in scheduler context on this CPU, after the
/// registration's `on_storm` (the PCI layer records a function's MSI or
/// MSI-X here when it is programmed to this CPU). Freeing the vector
/// forgets it.
pub fn set_source_mask(vector: u8, mask: fn(usize), data: usize) -> Result<(), IrqError> {
    // SAFETY: as in `allocate`.
    let table = unsafe { mine() }.ok_or(IrqError::NotReady)?;
    let slot = &mut table.slots[vector as usize];
    if slot.registration.is_none() || !(FIRST_DEVICE_VECTOR..=LAST_DEVICE_VECTOR).contains(&vector) {
        return Err(IrqError::NotADeviceVector(vector));
    }
    slot.source_mask = Some((mask, data));
    Ok(())
}

/// Interrupts taken on `vector` by this CPU so far.
pub fn count(vector: u8) -> u64 {
    // SAFETY: as in `allocate` (a read).
    unsafe { mine() }.map_or(0, |table| table.slots[vector as usize].count)
}

/// Spurious interrupts taken by this CPU.
pub fn spurious_count() -> u64 {
    // SAFETY: as in `allocate` (a read).
    unsafe { mine() }.map_or(0, |table| table.spurious)
}

/// Interrupts on vectors with no handler, taken by this CPU.
pub fn unexpected_count() -> u64 {
    // SAFETY: as in `allocate` (a read).
    unsafe { mine() }.map_or(0, |table| table.unexpected)
}

/// Whether `vector` was silenced on this CPU after a storm.
pub fn is_silenced(vector: u8) -> bool {
    // SAFETY: as in `allocate` (a read).
    unsafe { mine() }.is_some_and(|table| table.slots[vector as usize].silenced)
}

/// Adds a function to run at this CPU's next scheduling point after a
/// handler called `mark_deferred(index)`; returns its index. Thread
/// context, interrupts off.
pub fn add_deferred(run: fn(usize), data: usize) -> Result<usize, IrqError> {
    // SAFETY: as in `allocate`.
    let table = unsafe { mine() }.ok_or(IrqError::NotReady)?;
    table.deferred.push(Deferred { run, data, marked: false });
    Ok(table.deferred.len() - 1)
}

/// Handler side: asks for deferred function `index` (from `add_deferred`
/// on this CPU) to run at the next scheduling point.
#[inline]
pub fn mark_deferred(index: usize) {
    // SAFETY: interrupt context on this CPU; nothing else holds the table.
    if let Some(table) = unsafe { mine() } {
        if let Some(deferred) = table.deferred.get_mut(index) {
            deferred.marked = true;
            table.work_marked = true;
        }
    }
}

/// Runs the work handlers marked since the last call: deferred functions,
/// storm and unexpected-vector reports. Scheduler context, this CPU.
#[inline(never)]
pub fn run_marked_work() {
    let mut index = 0;
    loop {
        // SAFETY: thread context, interrupts off; the reference ends before
        // the deferred function runs (it may register vectors itself).
        let Some(table) = (unsafe { mine() }) else { return };
        if !table.work_marked {
            return;
        }
        let Some(deferred) = table.deferred.get_mut(index) else {
            table.work_marked = false;
            report_storms();
            return;
        };
        index += 1;
        if deferred.marked {
            deferred.marked = false;
            let (run, data) = (deferred.run, deferred.data);
            run(data);
        }
    }
}

/// Logs storms and unexpected vectors, and silences stormy sources at
/// their origin (`on_storm`). Cold.
#[inline(never)]
#[cold]
fn report_storms() {
    loop {
        // SAFETY: as in `run_marked_work`.
        let Some(table) = (unsafe { mine() }) else { return };
        if let Some(vector) = table.unexpected_to_report.take() {
            log::warn!(
                "interrupt on vector {vector:#x} with no handler on cpu {} (acknowledged; {} so far)",
                percpu::current_index(),
                table.unexpected
            );
        }
        if let Some(vector) = table.to_end.pop() {
            end_level_interrupt(vector);
            continue;
        }
        let Some(vector) = table.storms.pop() else { return };
        let slot = table.slots[vector as usize];
        let Some(registration) = slot.registration else { continue };
        log::warn!(
            "interrupt storm: vector {vector:#x} ({}) on cpu {}: over {} interrupts in \
             {STORM_WINDOW_MICROSECONDS} us; silenced (its handler no longer runs)",
            registration.name,
            percpu::current_index(),
            storm_threshold()
        );
        if let Some(on_storm) = registration.on_storm {
            on_storm(registration.data);
        }
        if let Some((mask, data)) = slot.source_mask {
            mask(data);
        }
        end_level_interrupt(vector);
    }
}

/// Ends the level-triggered interrupt `vector` taken by this CPU (the
/// driver has quieted the device). EOIs go out highest vector first, as
/// the local APIC ends the highest in-service vector on each.
pub fn end_level_interrupt(vector: u8) {
    // SAFETY: thread context, interrupts off.
    let Some(table) = (unsafe { mine() }) else { return };
    let slot = &mut table.slots[vector as usize];
    if !slot.deferred {
        return;
    }
    slot.ended = true;
    // Invariant: the deferred slots are exactly this CPU's in-service
    // vectors (no handler runs in thread context), so the highest deferred
    // one is what the next EOI ends.
    while let Some(highest) = (0..=255u8).rev().find(|&v| table.slots[v as usize].deferred) {
        let slot = &mut table.slots[highest as usize];
        if !slot.ended {
            break;
        }
        slot.deferred = false;
        slot.ended = false;
        super::apic::end_of_interrupt();
    }
}

/// TSC ticks in a storm window (0 until the TSC is calibrated: no storm
/// control before that).
static STORM_WINDOW_TICKS: AtomicU64 = AtomicU64::new(0);

/// Tells storm control the TSC frequency (boot, after calibration).
pub fn set_tsc_hz(hz: u64) {
    STORM_WINDOW_TICKS.store(hz / 1_000_000 * STORM_WINDOW_MICROSECONDS, Ordering::Relaxed);
}

fn storm_window_ticks() -> u64 {
    STORM_WINDOW_TICKS.load(Ordering::Relaxed)
}

/// Every vector from 32 up comes here from `interrupts::interrupt_dispatch`.
#[inline(never)]
pub fn dispatch(vector: u8) {
    if vector == SPURIOUS_VECTOR {
        // SAFETY: interrupt context on this CPU.
        if let Some(table) = unsafe { mine() } {
            table.spurious += 1;
        }
        // A true spurious interrupt sets no in-service bit and takes no
        // EOI; the same vector sent as a fixed interrupt (an IPI, a device
        // programmed with it) sets one, and without an EOI the APIC would
        // hold back every other vector on this CPU from then on.
        if super::apic::in_service(SPURIOUS_VECTOR) {
            super::apic::end_of_interrupt();
        }
        return;
    }
    // SAFETY: interrupt context on this CPU; nothing else holds the table.
    let Some(table) = (unsafe { mine() }) else {
        // Before this CPU's table exists (early boot): the wake-up IPI and
        // timer need nothing but the EOI.
        super::apic::end_of_interrupt();
        return;
    };
    let slot = &mut table.slots[vector as usize];
    slot.count += 1;
    let Some(registration) = slot.registration else {
        super::apic::end_of_interrupt();
        if vector == TIMER_VECTOR {
            // A deadline passed: the scheduler has sleepers to wake. Marked
            // so that a poll which took this interrupt in its window stops
            // (`cpu::poll_for_work`) instead of halting with the timer
            // spent, which lost the wake-up.
            table.work_marked = true;
        } else if vector != WAKE_VECTOR {
            table.unexpected += 1;
            table.unexpected_to_report.get_or_insert(vector);
            table.work_marked = true;
        }
        return;
    };
    if slot.silenced {
        // Rate limit: the EOI waits for the next scheduling point, so a
        // source that goes on costs one interrupt per scheduling point.
        if !slot.deferred {
            slot.deferred = true;
            if table.to_end.len() < table.to_end.capacity() {
                table.to_end.push(vector);
            }
            table.work_marked = true;
        }
        return;
    }
    if registration.trigger == Trigger::Level {
        slot.deferred = true;
    } else {
        super::apic::end_of_interrupt();
    }
    let now = super::cpu::rdtsc();
    let window = storm_window_ticks();
    if now.wrapping_sub(slot.window_start) > window {
        slot.window_start = now;
        slot.window_count = 0;
    }
    slot.window_count += 1;
    if window != 0 && slot.window_count > storm_threshold() {
        // Silenced. The EOI waits until `on_storm` (scheduler context) had
        // the chance to mask the source: ending it here would let a level
        // line or an MSI flood come straight back inside this window.
        slot.silenced = true;
        if !slot.deferred {
            slot.deferred = true;
        }
        if table.storms.len() < table.storms.capacity() {
            table.storms.push(vector);
        }
        table.work_marked = true;
        return;
    }
    (registration.handler)(registration.data);
}
