//! Single instructions the rest of the kernel needs: TSC, CPUID, halting.

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
