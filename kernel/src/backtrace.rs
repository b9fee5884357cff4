//! Frame-pointer backtraces for fault and panic reports.
//!
//! Images are built with frame pointers (`.cargo/config.toml`), so each frame
//! starts with the caller's RBP followed by the return address. The walk only
//! follows frame pointers that lie inside a known kernel stack and move
//! upward, so a corrupt chain ends the trace instead of faulting again.
//! Addresses are printed raw; the host tool (`cargo xtask run/test`) adds
//! function names from the image's symbols.

use core::fmt::Write;

/// Frames printed at most.
const MAX_FRAMES: usize = 32;

/// Writes `backtrace:` and one `#N 0x...` line per frame, starting at `rip`.
pub fn write(out: &mut impl Write, rip: u64, mut rbp: u64) {
    let _ = writeln!(out, "backtrace:");
    let _ = writeln!(out, "    #0  {rip:#018x}");
    // The CPU's own stacks and the running thread's (no allocation: this
    // runs in fault reports).
    let cpu_stacks = crate::arch::gdt::stacks();
    let thread_stack = crate::thread::scheduler::current_stack().map(|(guard, top)| crate::arch::percpu::StackInfo {
        name: "thread stack",
        guard,
        start: guard + crate::arch::paging::PAGE_SIZE as u64,
        end: top,
    });
    let stack = cpu_stacks.iter().copied().chain(thread_stack).find(|s| s.contains(rbp));
    let Some(stack) = stack else { return };
    for index in 1..MAX_FRAMES {
        if !rbp.is_multiple_of(8) || !stack.contains(rbp) || !stack.contains(rbp + 15) {
            break;
        }
        // SAFETY: rbp and rbp + 8 lie inside a mapped kernel stack (checked).
        let (next, return_address) = unsafe { (*(rbp as *const u64), *((rbp + 8) as *const u64)) };
        if return_address == 0 {
            break;
        }
        let _ = writeln!(out, "    #{index:<2} {return_address:#018x}");
        if next <= rbp {
            break;
        }
        rbp = next;
    }
}
