//! The per-CPU block: one `PerCpu` per CPU, reached through the GS base.
//!
//! `gs:[0]` holds the block's own address and `gs:[8]` the CPU's index, so
//! finding "my" data is one load with no lock and no shared cache line.
//! Each block is written by the boot CPU while setting the CPU up, and
//! afterwards only by its own CPU; other CPUs read only the immutable
//! fields (index, APIC id, stacks) through `by_index`.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use x86_64::registers::model_specific::Msr;
use x86_64::structures::gdt::GlobalDescriptorTable;
use x86_64::structures::tss::TaskStateSegment;

/// CPUs supported (APIC ids up to 255, the xAPIC limit).
pub const MAX_CPUS: usize = 256;
/// IA32_GS_BASE.
const IA32_GS_BASE: u32 = 0xc000_0101;

/// A kernel stack of this CPU, for fault reports and backtraces.
#[derive(Clone, Copy, Debug)]
pub struct StackInfo {
    pub name: &'static str,
    /// The unmapped page below the stack.
    pub guard: u64,
    pub start: u64,
    pub end: u64,
}

impl StackInfo {
    pub const EMPTY: Self = Self { name: "", guard: 0, start: 0, end: 0 };

    pub fn contains(&self, address: u64) -> bool {
        (self.start..self.end).contains(&address)
    }

    pub fn guard_contains(&self, address: u64) -> bool {
        self.guard != 0 && (self.guard..self.guard + super::paging::PAGE_SIZE as u64).contains(&address)
    }
}

/// The main stack and the three IST stacks (double fault, NMI, machine check).
pub const STACKS: usize = 4;

#[repr(C, align(64))]
pub struct PerCpu {
    /// Address of this block (`gs:[0]`).
    self_address: u64,
    /// 0 is the boot CPU; then MADT order (`gs:[8]`).
    pub index: u32,
    pub apic_id: u32,
    pub stacks: [StackInfo; STACKS],
    pub gdt: GlobalDescriptorTable,
    pub tss: TaskStateSegment,
}

impl PerCpu {
    pub const fn new(index: u32, apic_id: u32) -> Self {
        Self {
            self_address: 0,
            index,
            apic_id,
            stacks: [StackInfo::EMPTY; STACKS],
            gdt: GlobalDescriptorTable::new(),
            tss: TaskStateSegment::new(),
        }
    }
}

/// The boot CPU's block (the others are carved from memory at boot).
static mut BOOT_CPU: PerCpu = PerCpu::new(0, 0);
/// Addresses of the blocks by CPU index; written by the boot CPU before
/// the CPU starts, read-only afterwards.
static BLOCKS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// CPUs running.
static ONLINE: AtomicUsize = AtomicUsize::new(1);

/// Points GS at `block` on this CPU.
///
/// # Safety
/// `block` must be valid for the rest of the kernel's life and used by this
/// CPU only (apart from other CPUs reading its immutable fields).
pub unsafe fn install(block: *mut PerCpu) {
    // SAFETY: the caller guarantees `block` is valid and ours.
    unsafe {
        (*block).self_address = block as u64;
        BLOCKS[(*block).index as usize].store(block as u64, Ordering::Release);
        Msr::new(IA32_GS_BASE).write(block as u64);
    }
}

/// Sets up the boot CPU's block; the first thing `kernel_entry` does, so
/// everything after it may ask which CPU it runs on.
pub fn init_boot_cpu(apic_id: u32) {
    let block = &raw mut BOOT_CPU;
    // SAFETY: runs once, on the boot CPU, before anything else uses
    // BOOT_CPU; the static lives forever.
    unsafe {
        (*block).apic_id = apic_id;
        install(block);
    }
}

/// The index of the running CPU (0 = boot CPU).
#[inline(always)]
pub fn current_index() -> usize {
    let index: u32;
    // SAFETY: GS points at this CPU's PerCpu from the first instruction of
    // `kernel_entry` / `ap_main`; offset 8 is `index`.
    unsafe { core::arch::asm!("mov {0:e}, gs:[8]", out(reg) index, options(nostack, preserves_flags, readonly)) };
    index as usize
}

/// The running CPU's block.
pub fn current() -> &'static PerCpu {
    let address: u64;
    // SAFETY: as in `current_index`; offset 0 is the block's own address.
    unsafe { core::arch::asm!("mov {}, gs:[0]", out(reg) address, options(nostack, preserves_flags, readonly)) };
    // SAFETY: the block lives forever; callers only read through this.
    unsafe { &*(address as *const PerCpu) }
}

/// The running CPU's block, for setting it up.
///
/// # Safety
/// Only while this CPU sets itself up (GDT, TSS); no other reference to the
/// block may be in use.
pub unsafe fn current_mut() -> &'static mut PerCpu {
    let address: u64;
    // SAFETY: as in `current`.
    unsafe { core::arch::asm!("mov {}, gs:[0]", out(reg) address, options(nostack, preserves_flags, readonly)) };
    // SAFETY: the caller guarantees exclusive use.
    unsafe { &mut *(address as *mut PerCpu) }
}

/// The block of CPU `index`, if that CPU was set up.
pub fn by_index(index: usize) -> Option<&'static PerCpu> {
    let address = BLOCKS.get(index)?.load(Ordering::Acquire);
    // SAFETY: published by `install`; blocks live forever; only immutable
    // fields are read through shared references from other CPUs.
    (address != 0).then(|| unsafe { &*(address as *const PerCpu) })
}

/// CPUs running.
pub fn online() -> usize {
    ONLINE.load(Ordering::Acquire)
}

/// Records the number of CPUs running (boot CPU, after start-up).
pub fn set_online(count: usize) {
    ONLINE.store(count, Ordering::Release);
}
