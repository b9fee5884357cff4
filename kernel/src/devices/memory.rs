//! Device memory: an MMIO range mapped uncached at run time, as an owning
//! value. Holding a [`DeviceMemory`] is the right to touch those registers;
//! dropping it unmaps them (each page gets back what it held before).
//!
//! Mapping refuses RAM, firmware memory, low memory and the kernel image
//! (so W^X and the guard pages stay as they are), works above 4 GiB (a
//! 64-bit PCI BAR), and flushes every CPU's TLB. A driver maps its device
//! on its owner CPU, inside its service, and keeps the value there.

use toro_core::memory_map::{DeviceMemoryRules, DeviceRangeError, MemoryMap};

use crate::arch::{paging, percpu, sections, smp};
use crate::once::BootCell;
use crate::sync::spin::SpinLock;

pub use crate::arch::paging::MapError;

/// Below this lie the real-mode area, firmware tables and the AP trampoline.
const LOW_MEMORY_END: u64 = 1 << 20;

/// The memory map paging was built from, for refusing RAM.
static MEMORY_MAP: BootCell<MemoryMap> = BootCell::new();

/// Keeps the memory map (boot CPU, once, after paging).
pub(crate) fn remember_memory_map(map: &MemoryMap) {
    MEMORY_MAP.set(map.clone());
}

/// Serialises page-table changes after boot. A device-setup path (mapping
/// a BAR), never a data path: the only lock on paging, outside the lock
/// check's roots.
static PAGE_TABLE_LOCK: SpinLock<()> = SpinLock::new(());

/// Whether `[start, start + size)` may be device-mapped: not RAM, firmware
/// memory, low memory or the kernel image, and inside the address space.
pub fn check_range(start: u64, size: u64) -> Result<(), MapError> {
    let image = sections::layout().image;
    let rules = DeviceMemoryRules {
        low_end: LOW_MEMORY_END,
        image: (image.start, image.end),
        map: MEMORY_MAP.get(),
        limit: paging::MAX_DEVICE_ADDRESS,
    };
    rules.check(start, size).map_err(|error| match error {
        DeviceRangeError::Empty => MapError::Empty,
        DeviceRangeError::TooHigh => MapError::TooHigh { start, size },
        DeviceRangeError::Overlaps(region) => MapError::OverlapsMemory { start, size, region },
    })
}

unsafe fn flush_job((): ()) {
    paging::flush_tlb();
}

/// Flushes the other CPUs' TLBs (at their next scheduling point; until
/// then they can only hold translations for pages no code of theirs uses).
fn flush_other_cpus() {
    let me = percpu::current_index();
    for cpu in 0..percpu::online() {
        if cpu != me && smp::is_up(cpu) {
            // SAFETY: the message points to nothing.
            let _ = unsafe { crate::cpu::send_to(cpu, (), flush_job) };
        }
    }
}

/// An uncached, identity-mapped MMIO range. Not `Clone`: one owner.
pub struct DeviceMemory {
    start: u64,
    size: u64,
    previous: alloc::vec::Vec<u64>,
}

/// The usual name in drivers.
pub type Mmio = DeviceMemory;

impl DeviceMemory {
    /// Maps `[start, start + size)` (whole pages around it) uncached.
    pub fn map(start: u64, size: u64) -> Result<Self, MapError> {
        check_range(start, size)?;
        let end = start + size;
        let page = paging::PAGE_SIZE as u64;
        let first = start & !(page - 1);
        let pages = (end - first).div_ceil(page);
        let previous = {
            let _guard = PAGE_TABLE_LOCK.lock();
            // SAFETY: serialised by the lock; the pages hold no RAM,
            // firmware memory or image (checked above).
            unsafe { paging::map_device_pages(first, pages)? }
        };
        flush_other_cpus();
        Ok(Self { start, size, previous })
    }

    /// The physical (= virtual) address of the first byte.
    pub fn address(&self) -> u64 {
        self.start
    }

    /// Bytes in the range.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn check<T>(&self, offset: u64) -> u64 {
        let width = core::mem::size_of::<T>() as u64;
        assert!(
            offset.checked_add(width).is_some_and(|end| end <= self.size) && offset.is_multiple_of(width),
            "device register access at {offset:#x} (width {width}) outside or misaligned in {:#x}+{:#x}",
            self.start,
            self.size
        );
        self.start + offset
    }

    /// Reads the register at `offset` (naturally aligned, inside the range;
    /// otherwise a panic: a driver bug, not bad input).
    pub fn read<T: Register>(&self, offset: u64) -> T {
        let address = self.check::<T>(offset);
        // SAFETY: inside the mapped, uncached range, aligned; device
        // registers are read with one volatile access of their width.
        unsafe { core::ptr::read_volatile(address as *const T) }
    }

    /// Writes the register at `offset` (as `read`).
    pub fn write<T: Register>(&mut self, offset: u64, value: T) {
        let address = self.check::<T>(offset);
        // SAFETY: as in `read`; `&mut self`: one writer.
        unsafe { core::ptr::write_volatile(address as *mut T, value) }
    }
}

impl Drop for DeviceMemory {
    fn drop(&mut self) {
        let first = self.start & !(paging::PAGE_SIZE as u64 - 1);
        {
            let _guard = PAGE_TABLE_LOCK.lock();
            // SAFETY: serialised by the lock; `previous` came from
            // `map_device_pages` for `first`.
            unsafe { paging::restore_pages(first, &self.previous) };
        }
        flush_other_cpus();
    }
}

impl core::fmt::Debug for DeviceMemory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "DeviceMemory({:#x}+{:#x})", self.start, self.size)
    }
}

/// Register widths a device can be accessed with.
pub trait Register: Copy + sealed::Sealed {}
impl Register for u8 {}
impl Register for u16 {}
impl Register for u32 {}
impl Register for u64 {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for u16 {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
}
