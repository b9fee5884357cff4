//! The local APIC: this CPU's id, inter-processor interrupts, EOI.
//!
//! x2APIC (MSR access, 32-bit ids) when CPUID says the CPU has it, otherwise
//! xAPIC through its MMIO page. Register offsets: Intel SDM vol. 3, table
//! 11-1 (xAPIC MMIO offset = x2APIC MSR index - 0x800, times 16).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use x86_64::registers::model_specific::Msr;

use super::cpu::cpuid;

/// IA32_APIC_BASE.
const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
/// The architectural default xAPIC MMIO base.
pub const DEFAULT_XAPIC_BASE: u64 = 0xfee0_0000;

/// x2APIC MSR numbers; the xAPIC MMIO offset is `(msr - 0x800) << 4`.
const REGISTER_EOI: u32 = 0x80b;
const REGISTER_SPURIOUS: u32 = 0x80f;
const REGISTER_ICR: u32 = 0x830;
/// xAPIC only: the ICR's destination half (offset 0x310).
const XAPIC_ICR_HIGH_OFFSET: u64 = 0x310;

/// Spurious-interrupt vector register: software enable.
const SPURIOUS_ENABLE: u32 = 1 << 8;
/// The fixed vectors, defined once in `irq` (spurious: counted, never
/// acknowledged; wake-up IPI; local APIC timer).
pub use super::irq::{SPURIOUS_VECTOR, TIMER_VECTOR, WAKE_VECTOR};

/// ICR delivery modes and flags (SDM vol. 3, 11.6.1).
const DELIVERY_INIT: u32 = 0b101 << 8;
const DELIVERY_STARTUP: u32 = 0b110 << 8;
const LEVEL_ASSERT: u32 = 1 << 14;
const DELIVERY_PENDING: u32 = 1 << 12;

/// Chosen once by the boot CPU (`init_boot_cpu`), read by all.
static X2APIC: AtomicBool = AtomicBool::new(false);
static XAPIC_BASE: AtomicU64 = AtomicU64::new(DEFAULT_XAPIC_BASE);

/// Whether this CPU has an x2APIC (CPUID.01h:ECX bit 21).
pub fn has_x2apic() -> bool {
    cpuid(1).2 & (1 << 21) != 0
}

/// Picks the mode for all CPUs (x2APIC if the boot CPU has it) and enables
/// the boot CPU's APIC.
pub fn init_boot_cpu(xapic_base: u64) {
    X2APIC.store(has_x2apic(), Ordering::Relaxed);
    XAPIC_BASE.store(xapic_base, Ordering::Relaxed);
    enable();
}

/// Whether the APICs run in x2APIC mode.
pub fn x2apic_mode() -> bool {
    X2APIC.load(Ordering::Relaxed)
}

/// Enables this CPU's local APIC in the chosen mode, with the spurious
/// vector set.
pub fn enable() {
    let mut base = Msr::new(IA32_APIC_BASE);
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; setting the enable
    // bits (and x2APIC mode, which the CPU supports when chosen) keeps the
    // base address.
    unsafe {
        let mut value = base.read() | APIC_BASE_ENABLE;
        if x2apic_mode() {
            value |= APIC_BASE_X2APIC;
        }
        base.write(value);
    }
    write(REGISTER_SPURIOUS, SPURIOUS_ENABLE | SPURIOUS_VECTOR as u32);
}

fn read(register: u32) -> u32 {
    if x2apic_mode() {
        // SAFETY: an x2APIC register MSR, readable in x2APIC mode.
        unsafe { Msr::new(register).read() as u32 }
    } else {
        let address = XAPIC_BASE.load(Ordering::Relaxed) + (((register - 0x800) as u64) << 4);
        // SAFETY: the xAPIC page is identity-mapped uncached (paging.rs maps
        // the 3-4 GiB hole); registers are 32-bit aligned.
        unsafe { core::ptr::read_volatile(address as *const u32) }
    }
}

fn write(register: u32, value: u32) {
    if x2apic_mode() {
        // SAFETY: an x2APIC register MSR, writable in x2APIC mode.
        unsafe { Msr::new(register).write(value as u64) }
    } else {
        let address = XAPIC_BASE.load(Ordering::Relaxed) + (((register - 0x800) as u64) << 4);
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile(address as *mut u32, value) }
    }
}

/// The in-service registers (ISR, 8 x 32 bits from here).
const REGISTER_ISR: u32 = 0x810;

/// Whether `vector` is in service on this CPU (its ISR bit is set: it was
/// delivered and has had no EOI yet).
pub fn in_service(vector: u8) -> bool {
    read(REGISTER_ISR + u32::from(vector / 32)) & (1 << (vector % 32)) != 0
}

/// Signals the end of an interrupt.
pub fn end_of_interrupt() {
    write(REGISTER_EOI, 0);
}

/// Sends an IPI with `command` (vector and delivery mode) to `apic_id`.
fn send(apic_id: u32, command: u32) {
    if x2apic_mode() {
        // SAFETY: writing the x2APIC ICR sends the IPI described; the
        // destination goes in the high half.
        unsafe { Msr::new(REGISTER_ICR).write(((apic_id as u64) << 32) | command as u64) }
    } else {
        let base = XAPIC_BASE.load(Ordering::Relaxed);
        // SAFETY: as in `read`; the destination half is written first, the
        // low half's write sends.
        unsafe {
            core::ptr::write_volatile((base + XAPIC_ICR_HIGH_OFFSET) as *mut u32, apic_id << 24);
        }
        write(REGISTER_ICR, command);
        while read(REGISTER_ICR) & DELIVERY_PENDING != 0 {
            core::hint::spin_loop();
        }
    }
}

/// INIT IPI: puts the target into wait-for-SIPI.
pub fn send_init(apic_id: u32) {
    send(apic_id, DELIVERY_INIT | LEVEL_ASSERT);
}

/// Start-up IPI: the target starts in real mode at `page << 12`.
pub fn send_startup(apic_id: u32, page: u8) {
    send(apic_id, DELIVERY_STARTUP | LEVEL_ASSERT | page as u32);
}

/// ICR destination shorthand "all excluding self" (bits 19:18 = 11).
const ALL_EXCLUDING_SELF: u32 = 0b11 << 18;
const DELIVERY_NMI: u32 = 0b100 << 8;

/// An NMI to every other CPU (used to stop them after a fatal error).
pub fn send_nmi_to_others() {
    send(0, ALL_EXCLUDING_SELF | DELIVERY_NMI | LEVEL_ASSERT);
}

/// An NMI to `apic_id` (the watchdog's, to get a stuck CPU's backtrace).
pub fn send_nmi(apic_id: u32) {
    send(apic_id, DELIVERY_NMI | LEVEL_ASSERT);
}

/// A fixed interrupt with `vector` to `apic_id`.
pub fn send_fixed(apic_id: u32, vector: u8) {
    send(apic_id, LEVEL_ASSERT | vector as u32);
}

/// LVT timer register, divide configuration, initial count (x2APIC MSR
/// numbers; SDM vol. 3, 11.5.4).
const REGISTER_LVT_TIMER: u32 = 0x832;
const REGISTER_TIMER_INITIAL_COUNT: u32 = 0x838;
const REGISTER_TIMER_CURRENT_COUNT: u32 = 0x839;
const REGISTER_TIMER_DIVIDE: u32 = 0x83e;
/// LVT timer mode bits 18:17: 00 one-shot, 10 TSC-deadline.
const TIMER_MODE_TSC_DEADLINE: u32 = 0b10 << 17;
/// Divide configuration 1011b: divide by 1.
const TIMER_DIVIDE_BY_1: u32 = 0b1011;
/// IA32_TSC_DEADLINE.
const IA32_TSC_DEADLINE: u32 = 0x6e0;

/// Whether the local APIC timer has TSC-deadline mode (CPUID.01h:ECX[24]),
/// as found by the boot CPU's `timer_init` (CPUID is a VM exit under KVM:
/// not something to ask on every arm).
static TSC_DEADLINE: AtomicBool = AtomicBool::new(false);

pub fn has_tsc_deadline() -> bool {
    TSC_DEADLINE.load(Ordering::Relaxed)
}

/// APIC timer ticks per TSC tick, as a 32.32 fixed-point fraction; used
/// only without TSC-deadline mode. Measured once by the boot CPU.
static TIMER_PER_TSC: AtomicU64 = AtomicU64::new(0);

/// Programs this CPU's timer to raise `vector` when armed: TSC-deadline
/// mode where the CPU has it, else one-shot mode (calibrated against the
/// TSC on the boot CPU, about 1 ms, the first time).
pub fn timer_init(vector: u8) {
    if cpuid(1).2 & (1 << 24) != 0 {
        TSC_DEADLINE.store(true, Ordering::Relaxed);
        write(REGISTER_LVT_TIMER, vector as u32 | TIMER_MODE_TSC_DEADLINE);
        return;
    }
    write(REGISTER_TIMER_DIVIDE, TIMER_DIVIDE_BY_1);
    write(REGISTER_LVT_TIMER, vector as u32);
    if TIMER_PER_TSC.load(Ordering::Relaxed) == 0 {
        // Count down from the top for about a million TSC ticks.
        let start = super::cpu::rdtsc();
        write(REGISTER_TIMER_INITIAL_COUNT, u32::MAX);
        while super::cpu::rdtsc() - start < 1_000_000 {
            core::hint::spin_loop();
        }
        let counted = u32::MAX - read(REGISTER_TIMER_CURRENT_COUNT);
        let elapsed = super::cpu::rdtsc() - start;
        write(REGISTER_TIMER_INITIAL_COUNT, 0);
        TIMER_PER_TSC.store(((counted as u64) << 32) / elapsed.max(1), Ordering::Relaxed);
    }
}

/// Raises the timer interrupt at TSC value `deadline` (at once if past).
pub fn timer_arm(deadline: u64) {
    if has_tsc_deadline() {
        // SAFETY: IA32_TSC_DEADLINE exists in TSC-deadline mode; writing it
        // arms the timer.
        unsafe { Msr::new(IA32_TSC_DEADLINE).write(deadline.max(1)) };
        return;
    }
    let now = super::cpu::rdtsc();
    let ticks = ((deadline.saturating_sub(now) as u128 * TIMER_PER_TSC.load(Ordering::Relaxed) as u128) >> 32) as u64;
    write(REGISTER_TIMER_INITIAL_COUNT, ticks.clamp(1, u32::MAX as u64) as u32);
}

/// Stops this CPU's timer.
pub fn timer_disarm() {
    if has_tsc_deadline() {
        // SAFETY: writing 0 to IA32_TSC_DEADLINE disarms the timer.
        unsafe { Msr::new(IA32_TSC_DEADLINE).write(0) };
    } else {
        write(REGISTER_TIMER_INITIAL_COUNT, 0);
    }
}
