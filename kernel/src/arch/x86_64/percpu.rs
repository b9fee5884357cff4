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
const _: () = assert!(MAX_CPUS.is_power_of_two());
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
    // `install` indexed `BLOCKS` (`MAX_CPUS` long) with it, so it is below
    // `MAX_CPUS`, a power of two: the mask changes nothing and tells the
    // compiler so, which spares every per-CPU array indexed with it a
    // bounds check (a compare and a branch, which ends a translation block
    // under TCG: a scheduling point made six of them).
    index as usize % MAX_CPUS
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

/// A value of each CPU that only its CPU uses (a scheduler, the job
/// mailboxes, an allocator). [`PerCpuCell::with`] lends the running CPU's
/// value to a closure; a second `with` on the same cell and CPU while the
/// first is running (reentrancy) fails, so no two `&mut` to one value are
/// ever live. The borrow cannot outlive the closure, so it cannot be held
/// across a context switch either (the next thread's `with` would fail).
/// Not for interrupt handlers: they may interrupt a borrow.
pub struct PerCpuCell<T> {
    slots: [CellSlot<T>; MAX_CPUS],
}

/// One CPU's value and its borrow flag, on a cache line of its own so that
/// CPUs do not share lines through their flags.
#[repr(align(64))]
struct CellSlot<T> {
    value: core::sync::atomic::AtomicPtr<T>,
    /// Written and read by the slot's CPU only (plain load and store).
    borrowed: core::sync::atomic::AtomicBool,
}

/// Why a per-CPU value could not be lent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellError {
    /// The running CPU's value is not set up yet.
    NotSet,
    /// The running CPU's value is already lent (a nested `with`).
    Borrowed,
}

// SAFETY: each slot's value is reached only by its own CPU, through `with`,
// which allows one borrow at a time; the value moved there from the CPU
// that set it up (hence `T: Send`).
unsafe impl<T: Send> Sync for PerCpuCell<T> {}

impl<T> Default for PerCpuCell<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> PerCpuCell<T> {
    pub const fn new() -> Self {
        Self {
            slots: [const {
                CellSlot {
                    value: core::sync::atomic::AtomicPtr::new(core::ptr::null_mut()),
                    borrowed: core::sync::atomic::AtomicBool::new(false),
                }
            }; MAX_CPUS],
        }
    }

    /// Hands `value` to CPU `cpu` (from then on used by that CPU only).
    /// Panics if that CPU's value is already set.
    pub fn set(&self, cpu: usize, value: &'static mut T) {
        let slot = &self.slots[cpu];
        assert!(slot.value.load(Ordering::Relaxed).is_null(), "per-CPU value set twice");
        slot.value.store(value, Ordering::Release);
    }

    /// Whether CPU `cpu`'s value is set.
    pub fn is_set(&self, cpu: usize) -> bool {
        self.slots.get(cpu).is_some_and(|slot| !slot.value.load(Ordering::Acquire).is_null())
    }

    /// Runs `f` with the running CPU's value, or says why it cannot.
    #[inline(always)]
    pub fn try_with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R, CellError> {
        let slot = &self.slots[current_index()];
        let value = slot.value.load(Ordering::Acquire);
        if value.is_null() {
            return Err(CellError::NotSet);
        }
        if slot.borrowed.load(Ordering::Relaxed) {
            return Err(CellError::Borrowed);
        }
        slot.borrowed.store(true, Ordering::Relaxed);
        // SAFETY: the value is this CPU's (published by `set`, never freed)
        // and the flag above says no other borrow of it is live on this
        // CPU; no other CPU touches it.
        let result = f(unsafe { &mut *value });
        slot.borrowed.store(false, Ordering::Relaxed);
        Ok(result)
    }

    /// Runs `f` with the running CPU's value. Panics if it is not set or
    /// already lent: both are kernel bugs.
    #[inline(always)]
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        match self.try_with(f) {
            Ok(result) => result,
            Err(error) => cell_failure(error),
        }
    }

    /// The running CPU's value for a fault or panic report, which may have
    /// interrupted a borrow: only for reading plain fields, and only when
    /// the system is stopping.
    pub fn for_report(&self) -> Option<*const T> {
        let value = self.slots[current_index()].value.load(Ordering::Acquire);
        (!value.is_null()).then_some(value as *const T)
    }
}

#[cold]
#[inline(never)]
fn cell_failure(error: CellError) -> ! {
    match error {
        CellError::NotSet => panic!("per-CPU value used before it was set up"),
        CellError::Borrowed => panic!("per-CPU value borrowed twice (reentrant use)"),
    }
}
