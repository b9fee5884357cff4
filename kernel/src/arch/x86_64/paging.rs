//! The final page tables: identity mapping of all RAM with W^X for the image.
//!
//! Layout (physical = virtual everywhere; Toro never demand-pages):
//! - `0 .. 4 KiB`: not mapped, so a null dereference faults.
//! - `4 KiB .. KERNEL_MAP_LIMIT` (16 MiB): 4 KiB pages. Kernel text is
//!   read+execute, read-only data read-only, everything else read+write and
//!   no-execute; guard pages below every kernel stack are not mapped.
//! - The rest of RAM: 1 GiB pages where the CPU has them, else 2 MiB pages,
//!   read+write, no-execute. Only kernel text is executable.
//! - The 3-4 GiB hole (LAPIC, IOAPIC, virtio-mmio, firmware): 2 MiB pages;
//!   those not backed by RAM are uncached, since they hold device registers.
//!
//! Page-table frames come from `FrameBump`, right after the kernel image;
//! the caller removes them from the memory map before handing RAM out.

use toro_core::memory_map::{MemoryMap, RegionKind};

use super::cpu::cpuid;
use super::sections;

/// Bytes in a small page.
pub const PAGE_SIZE: usize = 4096;
const SIZE_2M: u64 = 2 << 20;
const SIZE_1G: u64 = 1 << 30;
/// Memory below this at least is mapped with 4 KiB pages: the image, boot
/// page tables and per-CPU stacks, whose guard pages must be unmappable one
/// page at a time. `init` extends it (in 2 MiB steps) when asked.
pub const KERNEL_MAP_LIMIT: u64 = 16 << 20;
/// The small-page limit chosen by `init`; below 1 GiB.
static SMALL_PAGE_LIMIT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// One PDPT: the identity map covers at most 512 GiB of physical addresses.
pub const MAX_MAPPED: u64 = 512 * SIZE_1G;
// `clamp(4 GiB, MAX_MAPPED)` below needs the bounds in order.
const _: () = assert!(4 * SIZE_1G <= MAX_MAPPED);

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const WRITE_THROUGH: u64 = 1 << 3;
const CACHE_DISABLE: u64 = 1 << 4;
const HUGE: u64 = 1 << 7;
const GLOBAL: u64 = 1 << 8;
const NO_EXECUTE: u64 = 1 << 63;

/// Data pages: read, write, never execute.
const DATA: u64 = PRESENT | WRITABLE | NO_EXECUTE | GLOBAL;
/// Table entries pointing at a lower-level table; permissions are decided at
/// the leaf.
const TABLE: u64 = PRESENT | WRITABLE;

/// Hands out zeroed 4 KiB frames from one range of usable RAM, bottom up.
pub struct FrameBump {
    next: u64,
    end: u64,
}

impl FrameBump {
    /// Frames from `[start, end)` (rounded inward to pages).
    pub fn new(start: u64, end: u64) -> Self {
        let page = PAGE_SIZE as u64;
        Self { next: start.div_ceil(page) * page, end: end / page * page }
    }

    /// The first byte not handed out.
    pub fn next_free(&self) -> u64 {
        self.next
    }

    /// The end of the range.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// `pages` contiguous frames, not zeroed; returns the first address.
    pub fn allocate_range(&mut self, pages: usize) -> u64 {
        let bytes = (pages * PAGE_SIZE) as u64;
        if self.next + bytes > self.end {
            panic!("out of low memory for boot structures at {:#x} (+{bytes:#x})", self.next);
        }
        let start = self.next;
        self.next += bytes;
        start
    }

    fn allocate(&mut self) -> &'static mut [u64; 512] {
        if self.next + PAGE_SIZE as u64 > self.end {
            panic!("out of memory for page tables at {:#x}", self.next);
        }
        let frame = self.next;
        self.next += PAGE_SIZE as u64;
        // SAFETY: the frame is usable RAM inside the boot identity map (the
        // caller takes it from the region holding the kernel, below 4 GiB),
        // handed out once, and never used for anything else afterwards.
        let table = unsafe { &mut *(frame as *mut [u64; 512]) };
        table.fill(0);
        table
    }
}

/// A range mapped with 4 KiB pages and cut into thread-stack slots, each
/// starting with an unmapped guard page. Guards are made once, here, so
/// no page table changes later (no TLB shoot-downs).
#[derive(Clone, Copy, Debug)]
pub struct StackZone {
    pub start: u64,
    pub end: u64,
    /// Bytes per slot (guard page included), a multiple of the page size.
    pub slot: u64,
}

impl StackZone {
    /// Whether `page` is the guard page of a slot.
    pub fn is_guard(&self, page: u64) -> bool {
        (self.start..self.end).contains(&page) && (page - self.start).is_multiple_of(self.slot)
    }

    /// Page-table frames needed to map a zone of `bytes` (one per 2 MiB
    /// it touches, plus one for an unaligned end).
    pub fn table_frames(bytes: u64) -> u64 {
        bytes.div_ceil(SIZE_2M) + 1
    }
}

/// What `init` built, for the boot log.
pub struct PagingReport {
    pub mapped_bytes: u64,
    pub gigabyte_pages: bool,
    pub table_frames: u64,
}

/// Whether the CPU supports 1 GiB pages (CPUID 8000_0001h EDX bit 26).
fn has_gigabyte_pages() -> bool {
    let (extended, ..) = cpuid(0x8000_0000);
    extended >= 0x8000_0001 && cpuid(0x8000_0001).3 & (1 << 26) != 0
}

/// Flags of the 4 KiB page at `address` below `KERNEL_MAP_LIMIT`, or `None`
/// if it must stay unmapped.
fn small_page_flags(address: u64, guard_pages: &[u64]) -> Option<u64> {
    let layout = sections::layout();
    if address < PAGE_SIZE as u64 || guard_pages.contains(&address) {
        None
    } else if layout.text.contains(&address) {
        Some(PRESENT | GLOBAL)
    } else if layout.rodata.contains(&address) {
        Some(PRESENT | NO_EXECUTE | GLOBAL)
    } else {
        Some(DATA)
    }
}

/// Whether `[start, start + size)` lies entirely in usable RAM.
fn is_ram(map: &MemoryMap, start: u64, size: u64) -> bool {
    map.regions().iter().any(|r| r.kind == RegionKind::Usable && r.start <= start && start + size <= r.end)
}

/// Builds the final page tables and switches to them.
///
/// `guard_pages` lists the addresses of pages to leave unmapped (stack
/// guards); 4 KiB pages are used up to `small_pages_up_to` (at least
/// `KERNEL_MAP_LIMIT`, at most 1 GiB).
pub fn init(
    map: &MemoryMap,
    frames: &mut FrameBump,
    guard_pages: &[u64],
    small_pages_up_to: u64,
    zones: &[StackZone],
) -> PagingReport {
    let first_frame = frames.next_free();
    let small_limit = small_pages_up_to.max(KERNEL_MAP_LIMIT).next_multiple_of(SIZE_2M).min(SIZE_1G);
    SMALL_PAGE_LIMIT.store(small_limit, core::sync::atomic::Ordering::Relaxed);
    let gigabyte_pages = has_gigabyte_pages();
    let top = map.highest_usable_address().clamp(4 * SIZE_1G, MAX_MAPPED);
    let gigabytes = top.div_ceil(SIZE_1G);

    let pml4 = frames.allocate();
    let pdpt = frames.allocate();
    pml4[0] = pdpt.as_ptr() as u64 | TABLE;

    for gigabyte in 0..gigabytes {
        let base = gigabyte * SIZE_1G;
        let in_zone = |start: u64, size: u64| zones.iter().any(|z| z.start < start + size && start < z.end);
        let needs_directory = gigabyte == 0 || gigabyte == 3 || !gigabyte_pages || in_zone(base, SIZE_1G);
        if !needs_directory {
            pdpt[gigabyte as usize] = base | DATA | HUGE;
            continue;
        }
        let directory = frames.allocate();
        for (index, entry) in directory.iter_mut().enumerate() {
            let address = base + index as u64 * SIZE_2M;
            if address < small_limit || in_zone(address, SIZE_2M) {
                let table = frames.allocate();
                for (page, small) in table.iter_mut().enumerate() {
                    let page_address = address + (page * PAGE_SIZE) as u64;
                    let guard = zones.iter().any(|z| z.is_guard(page_address));
                    *small = match small_page_flags(page_address, guard_pages).filter(|_| !guard) {
                        Some(flags) => page_address | flags,
                        None => 0,
                    };
                }
                *entry = table.as_ptr() as u64 | TABLE;
            } else if gigabyte == 3 && !is_ram(map, address, SIZE_2M) {
                *entry = address | DATA | HUGE | CACHE_DISABLE | WRITE_THROUGH;
            } else {
                *entry = address | DATA | HUGE;
            }
        }
        pdpt[gigabyte as usize] = directory.as_ptr() as u64 | TABLE;
    }

    // SAFETY: the new tables map the running code (text stays executable at
    // the same addresses), the stack and all data identically to the boot
    // tables, so execution continues unchanged; writing CR3 flushes the TLB
    // of non-global entries and the boot tables had no global ones.
    unsafe {
        core::arch::asm!("mov cr3, {}", in(reg) pml4.as_ptr() as u64, options(nostack, preserves_flags));
        // CR4.PGE (bit 7): keep kernel mappings across future CR3 loads.
        core::arch::asm!(
            "mov {tmp}, cr4", "or {tmp}, 0x80", "mov cr4, {tmp}",
            tmp = out(reg) _, options(nostack, preserves_flags)
        );
    }
    PagingReport {
        mapped_bytes: gigabytes * SIZE_1G,
        gigabyte_pages,
        table_frames: (frames.next_free() - first_frame) / PAGE_SIZE as u64,
    }
}

/// Loads CR3 with the tables it already holds. The CPU drops its
/// non-global TLB entries (Toro has none, so on hardware nothing is lost);
/// QEMU's TCG drops every entry and resizes its software TLB to the use it
/// saw (see the scheduler's `TLB_REFRESH_MS` for why Toro does this).
pub fn reload_root() {
    // SAFETY: the same tables are loaded again; no mapping changes.
    unsafe {
        core::arch::asm!("mov {root}, cr3", "mov cr3, {root}", root = out(reg) _, options(nostack, preserves_flags));
    }
}

/// Unmaps the 4 KiB page at `address` (a stack guard made after `init`).
/// Returns false if the address is not in the small-page range.
///
/// Only this CPU's TLB is flushed: call it before any other CPU could have
/// used the page (guards are made before their CPU starts).
pub fn unmap_small_page(address: u64) -> bool {
    let limit = SMALL_PAGE_LIMIT.load(core::sync::atomic::Ordering::Relaxed);
    if address < PAGE_SIZE as u64 || address >= limit || !address.is_multiple_of(PAGE_SIZE as u64) {
        return false;
    }
    // SAFETY: below `limit` the walk ends in a 4 KiB table built by `init`;
    // only this entry changes, and it maps a page no code uses (a guard).
    unsafe {
        let Some(entry) = small_page_entry(address) else { return false };
        entry.write_volatile(0);
        core::arch::asm!("invlpg [{}]", in(reg) address, options(nostack, preserves_flags));
    }
    true
}

/// The page-table entry of the 4 KiB page at `address`, if the tables map
/// its 2 MiB with a table of small pages (walks CR3's tables; identity-mapped
/// frames built by `init`).
fn small_page_entry(address: u64) -> Option<*mut u64> {
    let root: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) root, options(nomem, nostack, preserves_flags)) };
    let mut table = (root & FRAME_MASK) as *mut u64;
    for shift in [39u32, 30, 21] {
        // SAFETY: `table` is a present page table (checked at each level):
        // an identity-mapped frame of 512 entries.
        let entry = unsafe { table.add((address >> shift) as usize & 511).read_volatile() };
        if entry & PRESENT == 0 || entry & HUGE != 0 {
            return None;
        }
        table = (entry & FRAME_MASK) as *mut u64;
    }
    // SAFETY: a present table of 4 KiB pages; the index is below 512.
    Some(unsafe { table.add((address >> 12) as usize & 511) })
}

/// Maps the guard page `page` of a stack zone slot (read, write, no
/// execute), so that a run of slots becomes one longer stack whose only
/// guard is its first slot's. Returns false if `page` is not a guard of
/// `zone`.
///
/// No TLB shoot-down is needed: the page was not present, and x86 CPUs
/// cache no translation for a non-present page (Intel SDM vol. 3, 4.10.2.3),
/// so every CPU sees the new entry on its next access.
pub fn map_zone_guard(zone: &StackZone, page: u64) -> bool {
    if !zone.is_guard(page) {
        return false;
    }
    let Some(entry) = small_page_entry(page) else { return false };
    // SAFETY: zones are mapped with 4 KiB pages by `init`; the page is a
    // guard, which no code uses, and becomes ordinary stack memory.
    unsafe { entry.write_volatile(page | DATA) };
    true
}

/// Device pages: read, write, never execute, uncached (PCD and PWT: PAT
/// entry 3, UC, with the power-on PAT; Intel SDM vol. 3, 12.12.3).
const DEVICE: u64 = PRESENT | WRITABLE | NO_EXECUTE | CACHE_DISABLE | WRITE_THROUGH;
/// The paging structures cover 48-bit physical addresses (4 levels).
pub const MAX_DEVICE_ADDRESS: u64 = 1 << 48;
const FRAME_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Why a device range was not mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The range is empty or wraps around.
    Empty,
    /// The range reaches past [`MAX_DEVICE_ADDRESS`].
    TooHigh { start: u64, size: u64 },
    /// The range overlaps RAM, firmware memory, low memory or the kernel
    /// image (`region` is the overlapping range).
    OverlapsMemory { start: u64, size: u64, region: (u64, u64) },
    /// No memory for a page table.
    OutOfMemory,
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Empty => write!(f, "empty device range"),
            Self::TooHigh { start, size } => {
                write!(f, "device range {start:#x}+{size:#x} is beyond the 48-bit physical address space")
            }
            Self::OverlapsMemory { start, size, region } => write!(
                f,
                "device range {start:#x}+{size:#x} overlaps memory {:#x}..{:#x} (RAM, firmware or the kernel image)",
                region.0, region.1
            ),
            Self::OutOfMemory => write!(f, "no memory for a page table"),
        }
    }
}

/// A zeroed, page-aligned frame for a page table (from this CPU's heap,
/// which is identity-mapped RAM; never freed: tables stay).
fn table_frame() -> Result<*mut u64, MapError> {
    let layout = core::alloc::Layout::from_size_align(PAGE_SIZE, PAGE_SIZE).map_err(|_| MapError::OutOfMemory)?;
    // SAFETY: a non-zero size.
    let frame = unsafe { alloc::alloc::alloc_zeroed(layout) } as *mut u64;
    if frame.is_null() {
        return Err(MapError::OutOfMemory);
    }
    Ok(frame)
}

/// The table under `entry` (making or splitting one): `level_size` is the
/// bytes one entry of `entry`'s table maps; a huge page is split into 512
/// entries of the same flags.
///
/// # Safety
/// `entry` points at a live page-table entry; the caller holds
/// the caller's page-table serialisation.
unsafe fn table_under(entry: *mut u64, level_size: u64) -> Result<*mut u64, MapError> {
    // SAFETY: the caller's promise.
    let value = unsafe { entry.read_volatile() };
    if value & PRESENT != 0 && value & HUGE == 0 {
        return Ok((value & FRAME_MASK) as *mut u64);
    }
    let table = table_frame()?;
    if value & PRESENT != 0 {
        // Split: the same translation, one level down.
        let base = value & FRAME_MASK & !(level_size - 1);
        let child_size = level_size / 512;
        let flags = value & !FRAME_MASK & !(HUGE) & !(1 << 12);
        let huge = if child_size == PAGE_SIZE as u64 { 0 } else { HUGE };
        for index in 0..512u64 {
            // SAFETY: a fresh frame of 512 entries.
            unsafe { table.add(index as usize).write((base + index * child_size) | flags | huge) };
        }
    }
    // SAFETY: as above; the new table maps what the entry mapped.
    unsafe { entry.write_volatile(table as u64 | TABLE) };
    Ok(table)
}

/// The 4 KiB page-table entry for `address`, made (and huge pages above it
/// split) as needed.
///
/// # Safety
/// The caller serialises page-table changes.
unsafe fn leaf_entry(address: u64) -> Result<*mut u64, MapError> {
    let root: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) root, options(nomem, nostack, preserves_flags)) };
    let pml4 = (root & FRAME_MASK) as *mut u64;
    // SAFETY: page tables are identity-mapped frames; each step follows or
    // makes a present table entry.
    unsafe {
        let pdpt = table_under(pml4.add((address >> 39) as usize & 511), 512 * SIZE_1G)?;
        let directory = table_under(pdpt.add((address >> 30) as usize & 511), SIZE_1G)?;
        let table = table_under(directory.add((address >> 21) as usize & 511), SIZE_2M)?;
        Ok(table.add((address >> 12) as usize & 511))
    }
}

/// Flushes this CPU's whole TLB, global translations included (toggling
/// CR4.PGE; Intel SDM vol. 3, 4.10.4.1): the huge pages split above were
/// global.
pub fn flush_tlb() {
    // SAFETY: clearing and setting CR4.PGE (bit 7) only flushes the TLB.
    unsafe {
        core::arch::asm!(
            "mov {t}, cr4", "and {t}, ~0x80", "mov cr4, {t}", "or {t}, 0x80", "mov cr4, {t}",
            t = out(reg) _, options(nostack, preserves_flags)
        );
    }
}

/// Maps `pages` pages from `first` uncached, no-execute, identity; returns
/// what the entries held before, for `restore_pages`. Flushes only this
/// CPU's TLB.
///
/// # Safety
/// The caller serialises page-table changes and has checked that the pages
/// hold no RAM, firmware memory or kernel image (nothing else uses them).
pub unsafe fn map_device_pages(first: u64, pages: u64) -> Result<alloc::vec::Vec<u64>, MapError> {
    let mut previous = alloc::vec::Vec::new();
    previous.try_reserve_exact(pages as usize).map_err(|_| MapError::OutOfMemory)?;
    for page in 0..pages {
        let address = first + page * PAGE_SIZE as u64;
        // SAFETY: the caller's promise; the entry maps only this page.
        unsafe {
            let entry = leaf_entry(address)?;
            previous.push(entry.read_volatile());
            entry.write_volatile(address | DEVICE);
        }
    }
    flush_tlb();
    Ok(previous)
}

/// Gives the pages from `first` back what `map_device_pages` found.
/// Flushes only this CPU's TLB.
///
/// # Safety
/// As for `map_device_pages`; `previous` came from it for `first`.
pub unsafe fn restore_pages(first: u64, previous: &[u64]) {
    for (page, value) in previous.iter().enumerate() {
        let address = first + (page * PAGE_SIZE) as u64;
        // SAFETY: `map_device_pages` made these entries, so the walk finds
        // present tables and allocates nothing.
        unsafe {
            if let Ok(entry) = leaf_entry(address) {
                entry.write_volatile(*value);
            }
        }
    }
    flush_tlb();
}
