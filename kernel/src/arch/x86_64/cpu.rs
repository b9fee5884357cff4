//! Single instructions the rest of the kernel needs: TSC, CPUID, halting,
//! fences.

use core::arch::x86_64::{__cpuid, _rdtsc};

/// The time-stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects; CR4.TSD is clear at ring 0 anyway.
    unsafe { _rdtsc() }
}

/// CPUID leaf `leaf`, sub-leaf 0: (eax, ebx, ecx, edx).
pub fn cpuid(leaf: u32) -> (u32, u32, u32, u32) {
    let r = __cpuid(leaf);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// The page-fault linear address (CR2).
pub fn cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 at ring 0 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Stops this CPU for good: interrupts off, `hlt` forever.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: disabling interrupts and halting only stops this CPU.
        unsafe { core::arch::asm!("cli; hlt", options(nomem, nostack)) };
    }
}

/// Halts this CPU until the next interrupt, which is taken before this
/// returns with interrupts off again. Call with interrupts off: STI's
/// one-instruction delay makes `sti; hlt` atomic, so an interrupt that
/// arrives after the caller's last check still ends the HLT.
#[inline(always)]
pub fn halt_until_interrupt() {
    // SAFETY: enabling interrupts for the duration of one HLT; the kernel's
    // handlers run on their own stacks and return here.
    unsafe { core::arch::asm!("sti; hlt; cli", options(nomem, nostack)) };
}

/// A full memory fence (MFENCE): orders this CPU's earlier stores before its
/// later loads (x86 may otherwise reorder them). A fence, not a locked
/// instruction.
#[inline(always)]
pub fn full_fence() {
    // SAFETY: a memory fence only orders this CPU's loads and stores.
    unsafe { core::arch::asm!("mfence", options(nostack, preserves_flags)) };
}

/// The address of this instruction (RIP), for backtraces.
#[inline(always)]
pub fn instruction_pointer() -> u64 {
    let here: u64;
    // SAFETY: reading RIP through a RIP-relative LEA has no side effects.
    unsafe { core::arch::asm!("lea {}, [rip]", out(reg) here, options(nomem, nostack, preserves_flags)) };
    here
}

/// The frame pointer of the caller, for backtraces.
#[inline(always)]
pub fn frame_pointer() -> u64 {
    let value: u64;
    // SAFETY: reading RBP has no side effects; the kernel is built with
    // frame pointers, so it holds the current frame.
    unsafe { core::arch::asm!("mov {}, rbp", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// This CPU's initial APIC id (CPUID.01h:EBX[31:24]).
pub fn initial_apic_id() -> u32 {
    cpuid(1).1 >> 24
}

/// Lets pending interrupts in for one instruction, then turns them off
/// again: the scheduling-point window of docs/interrupts.md. Threads run
/// with interrupts off; this is where (besides the idle `hlt`) they are
/// taken.
#[inline(always)]
pub fn interrupt_window() {
    // SAFETY: STI takes effect after the next instruction, so pending
    // interrupts are delivered between the NOP and the CLI; their handlers
    // only acknowledge and mark work (arch::irq), and the compiler treats
    // the block as a memory clobber, so nothing is cached across it.
    unsafe { core::arch::asm!("sti; nop; cli", options(nostack)) };
}
