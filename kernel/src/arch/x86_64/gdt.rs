//! The boot CPU's GDT and TSS, with separate stacks for faults that must not
//! run on a possibly broken stack.
//!
//! Interrupt stack table (IST) use: a double fault (what a kernel stack
//! overflow becomes, since the CPU cannot push the page-fault frame onto the
//! guard page), an NMI and a machine check each switch to a stack of their
//! own. Every stack here has an unmapped guard page below it.

use core::ops::Range;

use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

use super::boot::{BOOT_STACK, BOOT_STACK_SIZE};
use super::paging::PAGE_SIZE;

/// IST slot (1-based, as in the IDT gate) of the double-fault stack.
pub const DOUBLE_FAULT_IST: u8 = 1;
/// IST slot of the NMI stack.
pub const NMI_IST: u8 = 2;
/// IST slot of the machine-check stack.
pub const MACHINE_CHECK_IST: u8 = 3;
const IST_COUNT: usize = 3;
/// Bytes of each IST stack.
pub const IST_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(4096))]
struct GuardedStack {
    guard: [u8; PAGE_SIZE],
    stack: [u8; IST_STACK_SIZE],
}

/// The boot CPU's fault stacks. Written only by the CPU itself (as stack).
#[unsafe(link_section = ".stacks.interrupt")]
static mut IST_STACKS: [GuardedStack; IST_COUNT] = [const {
    GuardedStack {
        guard: [0; PAGE_SIZE],
        stack: [0; IST_STACK_SIZE],
    }
}; IST_COUNT];
/// Set up once by `init` on the boot CPU, then only read by the CPU.
static mut TSS: TaskStateSegment = TaskStateSegment::new();
/// Set up once by `init` on the boot CPU, then only read by the CPU.
static mut GDT: GlobalDescriptorTable = GlobalDescriptorTable::new();

/// A stack the kernel runs on, with its name for fault reports.
pub struct KnownStack {
    pub name: &'static str,
    pub guard: u64,
    pub stack: Range<u64>,
}

/// The boot CPU's stacks: boot stack first, then the IST stacks.
pub fn stacks() -> [KnownStack; 1 + IST_COUNT] {
    let boot = (&raw const BOOT_STACK) as u64;
    let ist = |index: usize| {
        // SAFETY: only the address of the static is taken.
        let base = unsafe { (&raw const IST_STACKS[index]) as u64 };
        base + PAGE_SIZE as u64
    };
    let names = ["double-fault stack", "NMI stack", "machine-check stack"];
    let known = |index: usize| KnownStack {
        name: names[index],
        guard: ist(index) - PAGE_SIZE as u64,
        stack: ist(index)..ist(index) + IST_STACK_SIZE as u64,
    };
    [
        KnownStack {
            name: "boot stack",
            guard: boot,
            stack: boot + PAGE_SIZE as u64..boot + (PAGE_SIZE + BOOT_STACK_SIZE) as u64,
        },
        known(0),
        known(1),
        known(2),
    ]
}

/// Loads the GDT (kernel code and data, TSS) and the TSS on this CPU.
///
/// # Safety
/// Call once, on the boot CPU, before interrupts can happen.
pub unsafe fn init() {
    let stacks = stacks();
    // SAFETY: single-threaded boot: nothing else references TSS or GDT yet;
    // after this they are only read by the CPU.
    unsafe {
        let tss = &mut *(&raw mut TSS);
        for slot in 0..IST_COUNT {
            // Stacks grow down: the IST entry is the top, 16-byte aligned.
            tss.interrupt_stack_table[slot] = VirtAddr::new(stacks[1 + slot].stack.end);
        }
        let gdt = &mut *(&raw mut GDT);
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss_selector = gdt.append(Descriptor::tss_segment(&*(&raw const TSS)));
        (*(&raw const GDT)).load();
        CS::set_reg(code);
        SS::set_reg(data);
        DS::set_reg(data);
        ES::set_reg(data);
        load_tss(tss_selector);
    }
}
