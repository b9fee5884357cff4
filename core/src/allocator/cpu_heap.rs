//! One CPU's heap: size-class spans and page runs over the region that CPU owns.
//!
//! # Layout of a region
//!
//! ```text
//! base                                                      base + length
//! | page table | span descriptors | pad | data pages ...                 |
//! |<------------ metadata pages ------->|<-- page runs and spans ------->|
//! ```
//!
//! - **Page table**: one word per data page (`PageWord`): the boundary tags
//!   of page runs, and for every page of a span the number of its span
//!   descriptor. 8 bytes per 4 KiB page.
//! - **Span descriptors**: 4 words per span, and at most one span per
//!   [`MIN_SPAN_PAGES`] data pages, so 2 bytes per page:
//!   - word 0: first page (low 32 bits), class (bits 32-39), bit 63 set
//!     while the descriptor is in use;
//!   - word 1: address of the first block of the span's free list (0: none);
//!     each free block's first word holds the next one's address;
//!   - word 2: blocks handed out now (low half), blocks ever carved from the
//!     span's untouched tail (high half): a new span is not threaded into a
//!     list up front, blocks are carved in address order as needed;
//!   - word 3: next and previous span of the class's list (low and high
//!     half), or the next free descriptor.
//!
//! All metadata together is 10 bytes per 4 KiB page: 2.5 MiB per GiB
//! (0.24%), and small blocks carry no header at all. The [`CpuHeap`] value
//! itself (list heads and counters, 376 bytes) lives in the kernel's
//! per-CPU block, not in the region.
//!
//! # Small blocks
//!
//! Each class has a list of its spans that have a free block; the first is
//! where blocks come from (free list first, then the untouched tail). A span
//! that fills up leaves the list, and joins it again at the front when one
//! of its blocks is freed. A span whose last block is freed goes back to the
//! page runs (the memory is returned and can coalesce), except when it is
//! its class's only span with room: that one is kept, reset to carve from its
//! start, so a program that allocates and frees one block at a span boundary
//! does not cut and return a span each time (mimalloc's "retire" rule).
//! [`CpuHeap::trim`] returns kept spans too, and page-run exhaustion calls it
//! before giving up, so a kept span never causes a failure.
//!
//! # Large blocks
//!
//! Above [`MAX_SMALL_SIZE`](super::MAX_SMALL_SIZE) (or aligned beyond a page),
//! a block is a page run of its own.
//!
//! # What is not checked
//!
//! A free is checked against the metadata (see [`FreeError`]), but a write
//! into a block after it was freed (a use after free in the caller) can
//! corrupt that span's free list, as in mimalloc outside its "secure" mode.
//! Safe Rust does not do that; checking every pop would cost a load and a
//! compare on every allocation. Nor is the region zeroed at start (that
//! would cost a pass over 2.5 MiB of table per GiB at boot): a free of an
//! address the heap never handed out can land on a page-table word it never
//! wrote, and only the checks against the span descriptor stand between
//! such a word and the heap. Valid calls never read a word before writing it.
//!
//! # Owner
//!
//! A `CpuHeap` and its region belong to one CPU, which alone calls its
//! methods. Blocks freed on other CPUs come back through
//! [`RemoteInbox`](super::RemoteInbox), drained by the owner.

use core::fmt;

use super::page_runs::{PageRuns, PageWord, RunUse, NO_PAGE};
use super::size_class::{SizeClass, CLASS_COUNT, MAX_SPAN_PAGES, MIN_SPAN_PAGES, PAGE_SIZE};
use super::WordMemory;

/// Bytes of one span descriptor.
const DESCRIPTOR_BYTES: u64 = 32;
/// Offsets of the descriptor words (see the module docs).
const SPAN_WORD: u64 = 0;
const FREE_WORD: u64 = 8;
const COUNT_WORD: u64 = 16;
const LINK_WORD: u64 = 24;
/// Word 0's bit marking a descriptor in use.
const DESCRIPTOR_ACTIVE: u64 = 1 << 63;
/// Marks "no span" in list links and list heads.
const NO_SPAN: u32 = u32::MAX;
/// Page-table bytes per data page.
const PAGE_WORD_BYTES: u64 = 8;
/// Page numbers are `u32`, with `NO_PAGE` reserved.
const MAX_PAGES: u64 = NO_PAGE as u64 - 1;

/// Why a region cannot become a heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeapError {
    /// The base or the length is not a multiple of 4 KiB.
    Misaligned {
        /// The region's first byte.
        base: u64,
        /// The region's length in bytes.
        length: u64,
    },
    /// The region runs past the end of the address space.
    AddressOverflow {
        /// The region's first byte.
        base: u64,
        /// The region's length in bytes.
        length: u64,
    },
    /// After its metadata, the region cannot hold the largest span.
    RegionTooSmall {
        /// The region's length in bytes.
        length: u64,
        /// The smallest length that works.
        minimum: u64,
    },
    /// The region has more pages than a 32-bit page number can name (16 TiB).
    RegionTooLarge {
        /// The region's length in bytes.
        length: u64,
        /// The largest length that works.
        maximum: u64,
    },
}

impl fmt::Display for HeapError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Misaligned { base, length } => {
                write!(formatter, "heap region {base:#x}+{length:#x} is not page-aligned")
            }
            Self::AddressOverflow { base, length } => {
                write!(formatter, "heap region {base:#x}+{length:#x} wraps around the address space")
            }
            Self::RegionTooSmall { length, minimum } => {
                write!(formatter, "heap region of {length} bytes is smaller than the minimum of {minimum}")
            }
            Self::RegionTooLarge { length, maximum } => {
                write!(formatter, "heap region of {length} bytes is larger than the maximum of {maximum}")
            }
        }
    }
}

/// Why a free was refused. The heap is unchanged when it says so.
///
/// These are caller bugs (a double free, a pointer the heap never handed
/// out); the heap catches them where that costs no more than the free
/// itself. Not caught: a second free of a small block while its span is
/// still in use, which would need a bit per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeError {
    /// The address is not in this heap's data pages.
    NotInHeap {
        /// The address given.
        address: u64,
    },
    /// Nothing is allocated there: a free page, a free span, or a block
    /// never handed out.
    NotAllocated {
        /// The address given.
        address: u64,
    },
    /// The address is inside a block, not at its start.
    NotBlockStart {
        /// The address given.
        address: u64,
    },
}

impl fmt::Display for FreeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotInHeap { address } => {
                write!(formatter, "free of {address:#x}: not in this heap")
            }
            Self::NotAllocated { address } => {
                write!(formatter, "free of {address:#x}: not allocated")
            }
            Self::NotBlockStart { address } => {
                write!(formatter, "free of {address:#x}: not the start of a block")
            }
        }
    }
}

/// A heap's figures, in bytes and counts. All fields are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeapUsage {
    /// The whole region.
    pub region_bytes: u64,
    /// The page table and descriptors at the region's start.
    pub metadata_bytes: u64,
    /// The data pages: `region_bytes - metadata_bytes`.
    pub capacity_bytes: u64,
    /// Bytes of blocks handed out (whole class blocks and whole page runs).
    pub bytes_in_use: u64,
    /// `capacity_bytes - bytes_in_use`: free blocks in spans, span tails and
    /// free page runs.
    pub bytes_free: u64,
    /// Bytes in free page runs (what a large request can draw on).
    pub free_run_bytes: u64,
    /// Free page runs (1 when nothing is allocated and no span is kept).
    pub free_runs: u64,
    /// Small blocks handed out.
    pub small_blocks: u64,
    /// Large blocks (page runs) handed out.
    pub large_blocks: u64,
    /// Spans carved from page runs and not yet returned.
    pub spans: u64,
}

/// One CPU's heap over the region `base .. base + length`.
///
/// Owned by its CPU: only that CPU calls its methods (other CPUs hand blocks
/// back through the remote-free rings). It holds plain integers, so it is
/// `Send` and can be built on the boot CPU and moved into a per-CPU block.
/// It is not `Clone`: a copy would hand out the same memory a second time.
#[derive(Debug)]
pub struct CpuHeap {
    region_base: u64,
    region_length: u64,
    runs: PageRuns,
    descriptors_base: u64,
    /// At most this many spans exist at once (one per `MIN_SPAN_PAGES` pages).
    descriptor_capacity: u32,
    /// Descriptors `0..descriptors_made` have been used at least once.
    descriptors_made: u32,
    /// Released descriptors, linked through their `LINK_WORD`.
    free_descriptors: u32,
    /// Per class, the first span with a free block (`NO_SPAN`: none).
    spans_with_room: [u32; CLASS_COUNT],
    bytes_in_use: u64,
    small_blocks: u64,
    large_blocks: u64,
    spans: u64,
}

/// Where the metadata ends and how many data pages follow, for a region of
/// `total_pages` pages.
const fn split_region(total_pages: u64) -> (u64, u64) {
    // Sized for `total_pages` data pages, a slight overestimate (at most one
    // page) that keeps the arithmetic simple.
    let metadata_bytes = total_pages * PAGE_WORD_BYTES + (total_pages / MIN_SPAN_PAGES as u64) * DESCRIPTOR_BYTES;
    let metadata_pages = metadata_bytes.div_ceil(PAGE_SIZE);
    (metadata_pages, total_pages.saturating_sub(metadata_pages))
}

impl CpuHeap {
    /// The smallest region a heap accepts: metadata plus one largest span.
    pub const MIN_REGION_BYTES: u64 = {
        let mut total = MAX_SPAN_PAGES as u64;
        while split_region(total).1 < MAX_SPAN_PAGES as u64 {
            total += 1;
        }
        total * PAGE_SIZE
    };

    /// The largest region a heap accepts (page numbers are 32-bit): 16 TiB.
    pub const MAX_REGION_BYTES: u64 = MAX_PAGES * PAGE_SIZE;

    /// A heap over `base .. base + length`, all free.
    ///
    /// Writes only a few words (the region's memory need not be zeroed):
    /// O(1), whatever the length.
    pub fn new(memory: &mut impl WordMemory, base: u64, length: u64) -> Result<Self, HeapError> {
        if !base.is_multiple_of(PAGE_SIZE) || !length.is_multiple_of(PAGE_SIZE) {
            return Err(HeapError::Misaligned { base, length });
        }
        if base.checked_add(length).is_none() {
            return Err(HeapError::AddressOverflow { base, length });
        }
        if length > Self::MAX_REGION_BYTES {
            return Err(HeapError::RegionTooLarge { length, maximum: Self::MAX_REGION_BYTES });
        }
        let (metadata_pages, data_pages) = split_region(length / PAGE_SIZE);
        if data_pages < u64::from(MAX_SPAN_PAGES) {
            return Err(HeapError::RegionTooSmall { length, minimum: Self::MIN_REGION_BYTES });
        }
        // `data_pages <= MAX_PAGES` by the length check above.
        let page_count = data_pages as u32;
        let table_base = base;
        let descriptors_base = table_base + data_pages * PAGE_WORD_BYTES;
        let pages_base = base + metadata_pages * PAGE_SIZE;
        Ok(Self {
            region_base: base,
            region_length: length,
            runs: PageRuns::new(memory, pages_base, table_base, page_count),
            descriptors_base,
            descriptor_capacity: page_count / MIN_SPAN_PAGES,
            descriptors_made: 0,
            free_descriptors: NO_SPAN,
            spans_with_room: [NO_SPAN; CLASS_COUNT],
            bytes_in_use: 0,
            small_blocks: 0,
            large_blocks: 0,
            spans: 0,
        })
    }

    /// Whether `address` is inside this heap's region (metadata included):
    /// the test for "this CPU owns the block".
    #[inline]
    pub fn contains(&self, address: u64) -> bool {
        address.checked_sub(self.region_base).is_some_and(|offset| offset < self.region_length)
    }

    /// A block of at least `size` bytes aligned to `align` (a power of two),
    /// or `None` when the region has no room (or `align` is not a power of
    /// two). A `size` of 0 gets the smallest block.
    pub fn allocate(&mut self, memory: &mut impl WordMemory, size: usize, align: usize) -> Option<u64> {
        match SizeClass::of_layout(size, align) {
            Some(class) => self.allocate_small(memory, class),
            None => self.allocate_large(memory, size, align),
        }
    }

    /// A block of `class`, carving a new span if no span of the class has room.
    pub fn allocate_small(&mut self, memory: &mut impl WordMemory, class: SizeClass) -> Option<u64> {
        if let Some(address) = self.allocate_from_spans(memory, class) {
            return Some(address);
        }
        self.new_span(memory, class)?;
        self.allocate_from_spans(memory, class)
    }

    /// A block of `class` from the spans the class already has; `None` when
    /// they are all full ("the class ran dry"), without carving a new span.
    ///
    /// The allocator front end uses this to drain remote frees before it
    /// takes more pages.
    pub fn allocate_from_spans(&mut self, memory: &mut impl WordMemory, class: SizeClass) -> Option<u64> {
        loop {
            let span = *self.spans_with_room.get(class.index())?;
            if span == NO_SPAN {
                return None;
            }
            let descriptor = self.descriptor_address(span);
            let free = memory.load(descriptor + FREE_WORD);
            let (live, carved) = split_halves(memory.load(descriptor + COUNT_WORD));
            let blocks = class.blocks_per_span();
            let (address, carved) = if free != 0 {
                // Pop: the block's first word is the next free block.
                memory.store(descriptor + FREE_WORD, memory.load(free));
                (free, carved)
            } else if carved < blocks {
                let (first_page, _) = self.span_header(memory, span)?;
                let start = self.runs.page_address(first_page);
                (start + u64::from(carved) * class.block_size(), carved + 1)
            } else {
                // Full but still listed: only if the metadata was overwritten.
                // Unlisting it keeps this loop finite.
                self.unlink_span(memory, class, span);
                continue;
            };
            let live = live + 1;
            memory.store(descriptor + COUNT_WORD, join_halves(live, carved));
            if live >= blocks {
                self.unlink_span(memory, class, span);
            }
            self.bytes_in_use += class.block_size();
            self.small_blocks += 1;
            return Some(address);
        }
    }

    /// A page run of its own for a block of `size` bytes aligned to `align`.
    fn allocate_large(&mut self, memory: &mut impl WordMemory, size: usize, align: usize) -> Option<u64> {
        let pages = u32::try_from((size.max(1) as u64).div_ceil(PAGE_SIZE)).ok()?;
        let align = align as u64;
        let first = match self.runs.allocate(memory, pages, align, RunUse::Large) {
            Some(first) => first,
            None => {
                if self.trim(memory) == 0 {
                    return None;
                }
                self.runs.allocate(memory, pages, align, RunUse::Large)?
            }
        };
        self.bytes_in_use += u64::from(pages) * PAGE_SIZE;
        self.large_blocks += 1;
        Some(self.runs.page_address(first))
    }

    /// Returns the block at `address` (handed out by this heap) and gives its
    /// size in bytes; refuses, changing nothing, an address that is not a
    /// block in use.
    pub fn free(&mut self, memory: &mut impl WordMemory, address: u64) -> Result<u64, FreeError> {
        let page = self.runs.page_of(address).ok_or(FreeError::NotInHeap { address })?;
        match self.runs.word(memory, page) {
            PageWord::Span { descriptor } => self.free_small(memory, address, page, descriptor),
            PageWord::LargeRun { pages } => {
                if address != self.runs.page_address(page) {
                    return Err(FreeError::NotBlockStart { address });
                }
                let fits = page.checked_add(pages).is_some_and(|end| pages > 0 && end <= self.runs.page_count());
                if !fits {
                    return Err(FreeError::NotAllocated { address });
                }
                self.runs.free(memory, page, pages);
                let bytes = u64::from(pages) * PAGE_SIZE;
                self.bytes_in_use -= bytes;
                self.large_blocks -= 1;
                Ok(bytes)
            }
            PageWord::FreeRun { .. } | PageWord::Unused => Err(FreeError::NotAllocated { address }),
        }
    }

    fn free_small(
        &mut self,
        memory: &mut impl WordMemory,
        address: u64,
        page: u32,
        span: u32,
    ) -> Result<u64, FreeError> {
        let not_allocated = FreeError::NotAllocated { address };
        if span >= self.descriptors_made {
            return Err(not_allocated);
        }
        // A stale page word can name a released descriptor, or one reused
        // for a span elsewhere: the header must agree.
        let (first_page, class) = self.span_header(memory, span).ok_or(not_allocated)?;
        if page < first_page || page - first_page >= class.span_pages() {
            return Err(not_allocated);
        }
        let offset = address - self.runs.page_address(first_page);
        if !class.is_block_start(offset) {
            return Err(FreeError::NotBlockStart { address });
        }
        let descriptor = self.descriptor_address(span);
        let (live, carved) = split_halves(memory.load(descriptor + COUNT_WORD));
        if live == 0 || offset >= u64::from(carved) * class.block_size() {
            return Err(not_allocated);
        }
        memory.store(address, memory.load(descriptor + FREE_WORD));
        memory.store(descriptor + FREE_WORD, address);
        let live = live - 1;
        memory.store(descriptor + COUNT_WORD, join_halves(live, carved));
        self.bytes_in_use -= class.block_size();
        self.small_blocks -= 1;
        if live + 1 == class.blocks_per_span() {
            // It was full, so off the list: it has room again.
            self.link_span(memory, class, span);
        }
        if live == 0 {
            self.span_emptied(memory, class, span);
        }
        Ok(class.block_size())
    }

    /// Returns every span with no block in use to the page runs, and gives
    /// the bytes returned. Called when page runs run out, and by a kernel
    /// that wants every free page back in one run (tests, reports).
    pub fn trim(&mut self, memory: &mut impl WordMemory) -> u64 {
        let mut released = 0;
        for class in SizeClass::all() {
            let mut span = self.spans_with_room[class.index()];
            let mut steps = 0;
            while span != NO_SPAN && steps < self.descriptors_made {
                let (next, _) = split_halves(memory.load(self.descriptor_address(span) + LINK_WORD));
                let (live, _) = split_halves(memory.load(self.descriptor_address(span) + COUNT_WORD));
                if live == 0 {
                    released += u64::from(class.span_pages()) * PAGE_SIZE;
                    self.release_span(memory, class, span);
                }
                span = next;
                steps += 1;
            }
        }
        released
    }

    /// This heap's figures, in O(1).
    pub fn usage(&self) -> HeapUsage {
        let capacity_bytes = u64::from(self.runs.page_count()) * PAGE_SIZE;
        HeapUsage {
            region_bytes: self.region_length,
            metadata_bytes: self.region_length - capacity_bytes,
            capacity_bytes,
            bytes_in_use: self.bytes_in_use,
            bytes_free: capacity_bytes - self.bytes_in_use,
            free_run_bytes: u64::from(self.runs.free_pages()) * PAGE_SIZE,
            free_runs: u64::from(self.runs.free_runs()),
            small_blocks: self.small_blocks,
            large_blocks: self.large_blocks,
            spans: self.spans,
        }
    }

    /// Pages handed out as large runs or spans since the start (never goes
    /// down; wraps): how much new memory this heap has put to use. Not in
    /// `usage`, which describes the heap as it is now.
    pub fn pages_taken(&self) -> u64 {
        self.runs.pages_taken()
    }

    /// Bytes in the longest free page run: the largest block a request could
    /// get without trimming. Walks one list; for failure reports.
    pub fn longest_free_run(&self, memory: &impl WordMemory) -> u64 {
        u64::from(self.runs.longest_free_run(memory)) * PAGE_SIZE
    }

    /// The first byte and length of the region.
    pub fn region(&self) -> (u64, u64) {
        (self.region_base, self.region_length)
    }

    // Spans.

    fn descriptor_address(&self, span: u32) -> u64 {
        self.descriptors_base + u64::from(span) * DESCRIPTOR_BYTES
    }

    /// The first page and class of a span in use, `None` if its descriptor
    /// is not in use, names no class, or a span past the last page (the
    /// last two only if metadata was overwritten).
    fn span_header(&self, memory: &impl WordMemory, span: u32) -> Option<(u32, SizeClass)> {
        let word = memory.load(self.descriptor_address(span) + SPAN_WORD);
        if word & DESCRIPTOR_ACTIVE == 0 {
            return None;
        }
        let class = SizeClass::from_index(((word >> 32) & 0xFF) as usize)?;
        let first_page = word as u32;
        let end = u64::from(first_page) + u64::from(class.span_pages());
        (end <= u64::from(self.runs.page_count())).then_some((first_page, class))
    }

    /// Carves a span for `class` from page runs and puts it first in the
    /// class's list.
    fn new_span(&mut self, memory: &mut impl WordMemory, class: SizeClass) -> Option<()> {
        let span = self.take_descriptor(memory)?;
        let use_ = RunUse::Span { descriptor: span };
        let mut first = self.runs.allocate(memory, class.span_pages(), PAGE_SIZE, use_);
        if first.is_none() && self.trim(memory) > 0 {
            first = self.runs.allocate(memory, class.span_pages(), PAGE_SIZE, use_);
        }
        let Some(first) = first else {
            self.put_descriptor(memory, span);
            return None;
        };
        let descriptor = self.descriptor_address(span);
        let class_bits = (class.index() as u64) << 32;
        memory.store(descriptor + SPAN_WORD, u64::from(first) | class_bits | DESCRIPTOR_ACTIVE);
        memory.store(descriptor + FREE_WORD, 0);
        memory.store(descriptor + COUNT_WORD, 0);
        self.link_span(memory, class, span);
        self.spans += 1;
        Some(())
    }

    /// The last block of `span` was just freed: keep or return the span.
    fn span_emptied(&mut self, memory: &mut impl WordMemory, class: SizeClass, span: u32) {
        let descriptor = self.descriptor_address(span);
        let (next, _) = split_halves(memory.load(descriptor + LINK_WORD));
        if self.spans_with_room[class.index()] == span && next == NO_SPAN {
            // The class's only span with room: keep it, so the next
            // allocation does not carve a new one. Carving restarts from the
            // first block, in address order, with no free list to follow.
            memory.store(descriptor + FREE_WORD, 0);
            memory.store(descriptor + COUNT_WORD, 0);
        } else {
            self.release_span(memory, class, span);
        }
    }

    /// Takes an empty span off its list and returns its pages and descriptor.
    fn release_span(&mut self, memory: &mut impl WordMemory, class: SizeClass, span: u32) {
        let Some((first_page, _)) = self.span_header(memory, span) else {
            return;
        };
        self.unlink_span(memory, class, span);
        self.runs.free(memory, first_page, class.span_pages());
        self.put_descriptor(memory, span);
        self.spans -= 1;
    }

    fn take_descriptor(&mut self, memory: &impl WordMemory) -> Option<u32> {
        if self.free_descriptors != NO_SPAN {
            let span = self.free_descriptors;
            self.free_descriptors = split_halves(memory.load(self.descriptor_address(span) + LINK_WORD)).0;
            return Some(span);
        }
        if self.descriptors_made < self.descriptor_capacity {
            self.descriptors_made += 1;
            return Some(self.descriptors_made - 1);
        }
        None
    }

    fn put_descriptor(&mut self, memory: &mut impl WordMemory, span: u32) {
        let descriptor = self.descriptor_address(span);
        memory.store(descriptor + SPAN_WORD, 0);
        memory.store(descriptor + LINK_WORD, join_halves(self.free_descriptors, NO_SPAN));
        self.free_descriptors = span;
    }

    /// Puts `span` first in its class's list of spans with room.
    fn link_span(&mut self, memory: &mut impl WordMemory, class: SizeClass, span: u32) {
        let next = self.spans_with_room[class.index()];
        memory.store(self.descriptor_address(span) + LINK_WORD, join_halves(next, NO_SPAN));
        if next != NO_SPAN {
            let link = self.descriptor_address(next) + LINK_WORD;
            let (after, _) = split_halves(memory.load(link));
            memory.store(link, join_halves(after, span));
        }
        self.spans_with_room[class.index()] = span;
    }

    /// Takes `span` out of its class's list of spans with room.
    fn unlink_span(&mut self, memory: &mut impl WordMemory, class: SizeClass, span: u32) {
        let (next, previous) = split_halves(memory.load(self.descriptor_address(span) + LINK_WORD));
        if previous == NO_SPAN {
            self.spans_with_room[class.index()] = next;
        } else {
            let link = self.descriptor_address(previous) + LINK_WORD;
            let (_, before) = split_halves(memory.load(link));
            memory.store(link, join_halves(next, before));
        }
        if next != NO_SPAN {
            let link = self.descriptor_address(next) + LINK_WORD;
            let (after, _) = split_halves(memory.load(link));
            memory.store(link, join_halves(after, previous));
        }
        // Off every list: a later unlink of it (only after corruption) finds
        // itself at the head of nothing.
        memory.store(self.descriptor_address(span) + LINK_WORD, join_halves(NO_SPAN, NO_SPAN));
    }
}

/// The low and high 32 bits of a word.
fn split_halves(word: u64) -> (u32, u32) {
    (word as u32, (word >> 32) as u32)
}

fn join_halves(low: u32, high: u32) -> u64 {
    u64::from(low) | (u64::from(high) << 32)
}

/// Test support: a full consistency check of the heap's metadata.
#[cfg(test)]
impl CpuHeap {
    /// Walks every page and span and checks every invariant the module docs
    /// state, and that the counters agree with what is found.
    pub(crate) fn check(&self, memory: &impl WordMemory) {
        let free_runs = self.runs.free_run_list(memory);
        let mut free_runs = free_runs.into_iter().peekable();
        let mut page = 0;
        let mut bytes_in_use = 0;
        let (mut small_blocks, mut large_blocks, mut spans) = (0, 0, 0);
        let mut listed = std::collections::HashSet::new();
        for class in SizeClass::all() {
            let mut span = self.spans_with_room[class.index()];
            let mut previous = NO_SPAN;
            while span != NO_SPAN {
                let (next, back) = split_halves(memory.load(self.descriptor_address(span) + LINK_WORD));
                assert_eq!(back, previous, "back link of span {span}");
                assert_eq!(self.span_header(memory, span).map(|header| header.1), Some(class));
                assert!(listed.insert(span), "span {span} listed twice");
                previous = span;
                span = next;
            }
        }
        while page < self.runs.page_count() {
            match self.runs.word(memory, page) {
                PageWord::FreeRun { pages } => {
                    assert_eq!(free_runs.next(), Some((page, pages)), "free run at page {page} not listed");
                    page += pages;
                }
                PageWord::LargeRun { pages } => {
                    for inner in page + 1..page + pages {
                        assert_eq!(self.runs.word(memory, inner), PageWord::Unused);
                    }
                    bytes_in_use += u64::from(pages) * PAGE_SIZE;
                    large_blocks += 1;
                    page += pages;
                }
                PageWord::Span { descriptor: span } => {
                    let (first_page, class) = self.span_header(memory, span).expect("live span");
                    assert_eq!(first_page, page);
                    for inner in page..page + class.span_pages() {
                        assert_eq!(self.runs.word(memory, inner), PageWord::Span { descriptor: span });
                    }
                    let descriptor = self.descriptor_address(span);
                    let (live, carved) = split_halves(memory.load(descriptor + COUNT_WORD));
                    assert!(live <= carved && carved <= class.blocks_per_span());
                    let start = self.runs.page_address(page);
                    let mut free = memory.load(descriptor + FREE_WORD);
                    let mut free_count = 0;
                    while free != 0 {
                        let offset = free - start;
                        assert!(class.is_block_start(offset) && offset < u64::from(carved) * class.block_size());
                        free_count += 1;
                        assert!(free_count <= carved, "cycle in the free list of span {span}");
                        free = memory.load(free);
                    }
                    assert_eq!(free_count + live, carved, "span {span}: free + live = carved");
                    assert_eq!(
                        listed.contains(&span),
                        live < class.blocks_per_span(),
                        "span {span} listed iff it has room"
                    );
                    bytes_in_use += u64::from(live) * class.block_size();
                    small_blocks += u64::from(live);
                    spans += 1;
                    page += class.span_pages();
                }
                PageWord::Unused => panic!("page {page} starts no run"),
            }
        }
        assert_eq!(free_runs.next(), None);
        assert_eq!(bytes_in_use, self.bytes_in_use);
        assert_eq!((small_blocks, large_blocks, spans), (self.small_blocks, self.large_blocks, self.spans));
        assert!(listed.len() as u64 <= spans);
    }
}

#[cfg(test)]
mod tests {
    use super::super::shadow::ShadowMemory;
    use super::super::MAX_SMALL_SIZE;
    use super::*;

    const BASE: u64 = 0x1000_0000;
    const MIB: u64 = 1024 * 1024;

    fn heap(length: u64) -> (ShadowMemory, CpuHeap) {
        let mut memory = ShadowMemory::new(BASE, length);
        let heap = CpuHeap::new(&mut memory, BASE, length).unwrap();
        heap.check(&memory);
        (memory, heap)
    }

    #[test]
    fn rejects_regions_it_cannot_manage() {
        let mut memory = ShadowMemory::new(BASE, PAGE_SIZE);
        assert_eq!(
            CpuHeap::new(&mut memory, BASE + 8, MIB).unwrap_err(),
            HeapError::Misaligned { base: BASE + 8, length: MIB }
        );
        assert!(matches!(CpuHeap::new(&mut memory, BASE, MIB + 1), Err(HeapError::Misaligned { .. })));
        assert!(matches!(CpuHeap::new(&mut memory, u64::MAX - 4095, 8192), Err(HeapError::AddressOverflow { .. })));
        assert!(matches!(
            CpuHeap::new(&mut memory, BASE, CpuHeap::MIN_REGION_BYTES - PAGE_SIZE),
            Err(HeapError::RegionTooSmall { .. })
        ));
        assert!(matches!(CpuHeap::new(&mut memory, BASE, 0), Err(HeapError::RegionTooSmall { .. })));
        assert!(matches!(
            CpuHeap::new(&mut memory, 0, CpuHeap::MAX_REGION_BYTES + PAGE_SIZE),
            Err(HeapError::RegionTooLarge { .. })
        ));
        assert_eq!(CpuHeap::MIN_REGION_BYTES, 33 * PAGE_SIZE);
        let error = HeapError::RegionTooSmall { length: 1, minimum: 2 };
        assert!(error.to_string().contains("smaller"));
    }

    #[test]
    fn the_smallest_region_works() {
        let (mut memory, mut heap) = heap(CpuHeap::MIN_REGION_BYTES);
        let block = heap.allocate(&mut memory, MAX_SMALL_SIZE, 8).unwrap();
        heap.check(&memory);
        heap.free(&mut memory, block).unwrap();
        heap.trim(&mut memory);
        assert_eq!(heap.usage().free_runs, 1);
    }

    #[test]
    fn metadata_costs_two_and_a_half_mib_per_gib() {
        println!("CpuHeap: {} bytes", core::mem::size_of::<CpuHeap>());
        assert!(core::mem::size_of::<CpuHeap>() <= 400);
        let (metadata_pages, data_pages) = split_region(1 << 18);
        assert_eq!(metadata_pages, 640);
        assert_eq!(metadata_pages * PAGE_SIZE, 2_621_440);
        assert_eq!(data_pages, (1 << 18) - 640);
        let (memory, heap) = heap(16 * MIB);
        let usage = heap.usage();
        assert_eq!(usage.metadata_bytes, 40 * 1024);
        assert_eq!(usage.capacity_bytes + usage.metadata_bytes, usage.region_bytes);
        assert_eq!(usage.bytes_free, usage.capacity_bytes);
        assert_eq!(usage.free_run_bytes, usage.capacity_bytes);
        assert_eq!(heap.longest_free_run(&memory), usage.capacity_bytes);
        assert!(heap.contains(BASE) && heap.contains(BASE + 16 * MIB - 1));
        assert!(!heap.contains(BASE - 1) && !heap.contains(BASE + 16 * MIB));
        assert_eq!(heap.region(), (BASE, 16 * MIB));
    }

    #[test]
    fn small_blocks_come_from_one_span_in_address_order() {
        let (mut memory, mut heap) = heap(4 * MIB);
        let blocks: Vec<u64> = (0..10).map(|_| heap.allocate(&mut memory, 24, 8).unwrap()).collect();
        for pair in blocks.windows(2) {
            assert_eq!(pair[1] - pair[0], 32);
        }
        assert_eq!(blocks[0] % PAGE_SIZE, 0, "first block at the span's start");
        let usage = heap.usage();
        assert_eq!((usage.small_blocks, usage.spans, usage.bytes_in_use), (10, 1, 320));
        heap.check(&memory);
        // Freed blocks are reused first, last freed first.
        assert_eq!(heap.free(&mut memory, blocks[3]), Ok(32));
        assert_eq!(heap.free(&mut memory, blocks[7]), Ok(32));
        assert_eq!(heap.allocate(&mut memory, 32, 1), Some(blocks[7]));
        assert_eq!(heap.allocate(&mut memory, 17, 16), Some(blocks[3]));
        heap.check(&memory);
    }

    #[test]
    fn full_spans_leave_the_list_and_come_back() {
        let (mut memory, mut heap) = heap(4 * MIB);
        let class = SizeClass::of_size(4096).unwrap();
        let per_span = class.blocks_per_span() as usize;
        let blocks: Vec<u64> = (0..per_span + 1).map(|_| heap.allocate(&mut memory, 4096, 4096).unwrap()).collect();
        assert_eq!(heap.usage().spans, 2);
        heap.check(&memory);
        // A block of the full first span: that span has room again.
        heap.free(&mut memory, blocks[0]).unwrap();
        heap.check(&memory);
        assert_eq!(heap.allocate_from_spans(&mut memory, class), Some(blocks[0]));
        heap.check(&memory);
        for block in &blocks {
            heap.free(&mut memory, *block).unwrap();
            heap.check(&memory);
        }
        // One span is kept for the class, the other went back.
        assert_eq!(heap.usage().spans, 1);
        assert_eq!(heap.usage().bytes_in_use, 0);
        assert_eq!(heap.trim(&mut memory), u64::from(class.span_pages()) * PAGE_SIZE);
        let usage = heap.usage();
        assert_eq!((usage.spans, usage.free_runs, usage.free_run_bytes), (0, 1, usage.capacity_bytes));
        heap.check(&memory);
    }

    #[test]
    fn a_kept_span_restarts_carving_from_its_first_block() {
        let (mut memory, mut heap) = heap(4 * MIB);
        let first = heap.allocate(&mut memory, 64, 64).unwrap();
        let second = heap.allocate(&mut memory, 64, 64).unwrap();
        heap.free(&mut memory, first).unwrap();
        heap.free(&mut memory, second).unwrap();
        assert_eq!(heap.usage().spans, 1, "the class's only span is kept");
        assert_eq!(heap.allocate(&mut memory, 64, 64), Some(first));
        assert_eq!(heap.allocate(&mut memory, 64, 64), Some(second));
        heap.check(&memory);
    }

    #[test]
    fn large_blocks_are_page_runs() {
        let (mut memory, mut heap) = heap(4 * MIB);
        let large = heap.allocate(&mut memory, MAX_SMALL_SIZE + 1, 8).unwrap();
        assert_eq!(large % PAGE_SIZE, 0);
        assert_eq!(heap.usage().bytes_in_use, 5 * PAGE_SIZE);
        assert_eq!(heap.usage().large_blocks, 1);
        let aligned = heap.allocate(&mut memory, 100, 64 * 1024).unwrap();
        assert_eq!(aligned % (64 * 1024), 0);
        assert_eq!(heap.usage().large_blocks, 2, "aligned beyond a page: a page run");
        heap.check(&memory);
        assert_eq!(
            heap.free(&mut memory, large + PAGE_SIZE),
            Err(FreeError::NotAllocated { address: large + PAGE_SIZE })
        );
        assert_eq!(heap.free(&mut memory, large + 8), Err(FreeError::NotBlockStart { address: large + 8 }));
        assert_eq!(heap.free(&mut memory, large), Ok(5 * PAGE_SIZE));
        assert_eq!(heap.free(&mut memory, large), Err(FreeError::NotAllocated { address: large }), "double free");
        assert_eq!(heap.free(&mut memory, aligned), Ok(PAGE_SIZE));
        let usage = heap.usage();
        assert_eq!((usage.bytes_in_use, usage.free_runs), (0, 1));
        heap.check(&memory);
    }

    #[test]
    fn pages_taken_counts_every_run_and_span_and_never_goes_down() {
        let (mut memory, mut heap) = heap(4 * MIB);
        assert_eq!(heap.pages_taken(), 0);
        let large = heap.allocate(&mut memory, MAX_SMALL_SIZE + 1, 8).unwrap();
        assert_eq!(heap.pages_taken(), 5);
        heap.free(&mut memory, large).unwrap();
        assert_eq!(heap.pages_taken(), 5, "a free does not lower it");
        let again = heap.allocate(&mut memory, MAX_SMALL_SIZE + 1, 8).unwrap();
        assert_eq!(heap.pages_taken(), 10, "the same pages handed out again count again");
        let small = heap.allocate(&mut memory, 16, 8).unwrap();
        let with_span = heap.pages_taken();
        assert!(with_span > 10, "a new span takes pages: {with_span}");
        let second = heap.allocate(&mut memory, 16, 8).unwrap();
        assert_eq!(heap.pages_taken(), with_span, "a block from the same span takes none");
        for block in [second, small, again] {
            heap.free(&mut memory, block).unwrap();
        }
        heap.check(&memory);
    }

    #[test]
    fn refuses_frees_of_what_it_did_not_hand_out() {
        let (mut memory, mut heap) = heap(4 * MIB);
        let block = heap.allocate(&mut memory, 48, 16).unwrap();
        let before = heap.usage();
        for (address, error) in [
            (BASE, FreeError::NotInHeap { address: BASE }),
            (BASE + 4 * MIB, FreeError::NotInHeap { address: BASE + 4 * MIB }),
            (0, FreeError::NotInHeap { address: 0 }),
            (block + 16, FreeError::NotBlockStart { address: block + 16 }),
            (block + 48, FreeError::NotAllocated { address: block + 48 }),
            (block + 4800, FreeError::NotAllocated { address: block + 4800 }),
        ] {
            assert_eq!(heap.free(&mut memory, address), Err(error));
        }
        let free_page = BASE + 2 * MIB;
        assert!(matches!(heap.free(&mut memory, free_page), Err(FreeError::NotAllocated { .. })));
        assert_eq!(heap.usage(), before, "refused frees change nothing");
        heap.check(&memory);
        heap.free(&mut memory, block).unwrap();
        heap.trim(&mut memory);
        // The span is gone: its page words are stale and its descriptor free.
        assert_eq!(heap.free(&mut memory, block), Err(FreeError::NotAllocated { address: block }));
        heap.check(&memory);
        assert!(FreeError::NotAllocated { address: 1 }.to_string().contains("not allocated"));
    }

    #[test]
    fn bad_requests_get_none() {
        let (mut memory, mut heap) = heap(4 * MIB);
        assert_eq!(heap.allocate(&mut memory, 8, 3), None);
        assert_eq!(heap.allocate(&mut memory, 8, 0), None);
        assert_eq!(heap.allocate(&mut memory, usize::MAX, 8), None);
        assert_eq!(heap.allocate(&mut memory, 8 * MIB as usize, 8), None);
        assert_eq!(heap.allocate(&mut memory, 8, 1 << 40), None);
        assert!(heap.allocate(&mut memory, 0, 1).is_some());
        heap.check(&memory);
    }

    #[test]
    fn runs_dry_cleanly_and_recovers() {
        let (mut memory, mut heap) = heap(CpuHeap::MIN_REGION_BYTES + 4 * PAGE_SIZE);
        let mut blocks = Vec::new();
        while let Some(block) = heap.allocate(&mut memory, 1000, 8) {
            memory.mark_live(block, 1000);
            blocks.push(block);
        }
        heap.check(&memory);
        assert!(heap.usage().bytes_free < heap.usage().capacity_bytes / 4);
        // Too few pages left for a span of another class.
        assert_eq!(heap.allocate(&mut memory, 16, 1), None);
        for block in blocks {
            memory.mark_free(block);
            heap.free(&mut memory, block).unwrap();
        }
        assert_eq!(heap.usage().spans, 1, "the class keeps one empty span");
        // A request for every data page: the kept span is trimmed for it.
        let everything = heap.usage().capacity_bytes as usize;
        let large = heap.allocate(&mut memory, everything, 8).expect("kept spans give way");
        assert_eq!(heap.usage().spans, 0);
        heap.free(&mut memory, large).unwrap();
        assert_eq!(heap.usage().free_runs, 1);
        heap.check(&memory);
    }
}
