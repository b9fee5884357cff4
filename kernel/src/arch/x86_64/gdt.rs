//! Each CPU's GDT and TSS, with separate stacks for faults that must not
//! run on a possibly broken stack.
//!
//! Interrupt stack table (IST) use: a double fault (what a kernel stack
//! overflow becomes, since the CPU cannot push the page-fault frame onto the
//! guard page), an NMI and a machine check each switch to a stack of their
//! own. Every stack has an unmapped guard page below it. The GDT and TSS
//! live in the CPU's `PerCpu` block.

use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::Descriptor;
use x86_64::VirtAddr;

use super::boot::{BOOT_STACK, BOOT_STACK_SIZE};
use super::paging::PAGE_SIZE;
use super::percpu::{self, PerCpu, StackInfo, STACKS};

/// IST slot (1-based, as in the IDT gate) of the double-fault stack.
pub const DOUBLE_FAULT_IST: u8 = 1;
/// IST slot of the NMI stack.
pub const NMI_IST: u8 = 2;
/// IST slot of the machine-check stack.
pub const MACHINE_CHECK_IST: u8 = 3;
const IST_COUNT: usize = 3;
/// Bytes of each IST stack.
pub const IST_STACK_SIZE: usize = 16 * 1024;
/// Names of a CPU's stacks, in `PerCpu::stacks` order.
pub const STACK_NAMES: [&str; STACKS] = ["kernel stack", "double-fault stack", "NMI stack", "machine-check stack"];

#[repr(C, align(4096))]
struct GuardedStack {
    guard: [u8; PAGE_SIZE],
    stack: [u8; IST_STACK_SIZE],
}

/// The boot CPU's fault stacks (other CPUs get theirs from `smp`). Used
/// only as stacks by the boot CPU.
#[unsafe(link_section = ".stacks.interrupt")]
static mut IST_STACKS: [GuardedStack; IST_COUNT] =
    [const { GuardedStack { guard: [0; PAGE_SIZE], stack: [0; IST_STACK_SIZE] } }; IST_COUNT];

/// The running CPU's stacks: kernel stack first, then the IST stacks.
pub fn stacks() -> [StackInfo; STACKS] {
    percpu::current().stacks
}

/// The boot CPU's stacks (statics in the image).
pub fn boot_cpu_stacks() -> [StackInfo; STACKS] {
    let boot = (&raw const BOOT_STACK) as u64;
    // Only addresses are taken.
    let ist = |index: usize| (&raw const IST_STACKS) as u64 + (index * core::mem::size_of::<GuardedStack>()) as u64;
    let page = PAGE_SIZE as u64;
    let mut stacks = [StackInfo::EMPTY; STACKS];
    stacks[0] =
        StackInfo { name: "boot stack", guard: boot, start: boot + page, end: boot + page + BOOT_STACK_SIZE as u64 };
    for slot in 0..IST_COUNT {
        let base = ist(slot);
        stacks[1 + slot] = StackInfo {
            name: STACK_NAMES[1 + slot],
            guard: base,
            start: base + page,
            end: base + page + IST_STACK_SIZE as u64,
        };
    }
    stacks
}

/// Fills the CPU's TSS (IST entries from `cpu.stacks`) and GDT (kernel code,
/// data, TSS), and loads them on this CPU.
///
/// # Safety
/// `cpu` must be the running CPU's block, set up once, before interrupts
/// can happen; its stacks must be mapped.
pub unsafe fn load(cpu: &'static mut PerCpu) {
    for slot in 0..IST_COUNT {
        // Stacks grow down: the IST entry is the top (16-byte aligned).
        cpu.tss.interrupt_stack_table[slot] = VirtAddr::new(cpu.stacks[1 + slot].end);
    }
    let code = cpu.gdt.append(Descriptor::kernel_code_segment());
    let data = cpu.gdt.append(Descriptor::kernel_data_segment());
    // SAFETY: the TSS lives in the PerCpu block, which lives forever.
    let tss: &'static x86_64::structures::tss::TaskStateSegment = unsafe { &*(&raw const cpu.tss) };
    let tss_selector = cpu.gdt.append(Descriptor::tss_segment(tss));
    // SAFETY: as above for the GDT; the selectors were just appended to it.
    unsafe {
        let gdt: &'static x86_64::structures::gdt::GlobalDescriptorTable = &*(&raw const cpu.gdt);
        gdt.load();
        CS::set_reg(code);
        SS::set_reg(data);
        DS::set_reg(data);
        ES::set_reg(data);
        load_tss(tss_selector);
    }
}

/// Sets up the boot CPU's stacks record, GDT and TSS.
///
/// # Safety
/// Once, on the boot CPU, after `percpu::init_boot_cpu`, interrupts off.
pub unsafe fn init_boot_cpu() {
    // SAFETY: the boot CPU sets itself up; nothing else holds its block.
    let cpu = unsafe { percpu::current_mut() };
    cpu.stacks = boot_cpu_stacks();
    // SAFETY: as the caller guarantees.
    unsafe { load(cpu) };
}
