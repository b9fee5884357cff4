//! The physical memory map: a fixed-capacity list of regions, normalised into a clean, sorted map.
//!
//! The VMM's map (e820 style, carried by PVH) may come unsorted, with
//! zero-length entries, overlapping entries of different kinds, and sizes
//! that run past the end of the address space. [`MemoryMap::normalize`]
//! turns that into a map the kernel can hand to its frame allocator without
//! second thoughts:
//!
//! - sorted by address, no two regions overlapping;
//! - covering exactly the bytes the entries covered (then see page trimming);
//! - where entries of different kinds overlap, the more restrictive kind
//!   wins (see [`RegionKind::precedence`]), so no byte any entry called
//!   non-usable ever comes out usable;
//! - neighbouring regions of the same kind merged into one;
//! - usable regions trimmed inward to [`PAGE_SIZE`] boundaries, because the
//!   kernel hands out whole pages: the sub-page bytes at either end of a
//!   usable region are dropped from the map (they are not relabelled), and a
//!   usable region holding no whole page disappears.
//!
//! Nothing here allocates: the map is an array of [`MAX_REGIONS`] slots.

use core::fmt;

/// How many regions a [`MemoryMap`] holds. VMMs pass fewer than a dozen.
pub const MAX_REGIONS: usize = 128;

/// The page size usable regions are trimmed to, in bytes.
pub const PAGE_SIZE: u64 = 4096;

/// What a range of physical memory is, in the terms of the ACPI address map
/// (ACPI 6.5, section 15.1, table 15.1: `AddressRangeMemory` and friends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegionKind {
    /// RAM the kernel may use (e820 type 1).
    Usable,
    /// In use by firmware or devices, or a kind this code does not know (e820 type 2 and others).
    Reserved,
    /// Holds ACPI tables; may become RAM once they have been read (e820 type 3).
    AcpiReclaimable,
    /// ACPI non-volatile storage, which firmware needs kept across sleep (e820 type 4).
    AcpiNvs,
    /// RAM in which errors were detected (e820 type 5).
    Unusable,
}

impl RegionKind {
    /// The kind of an e820 / PVH `hvm_memmap_table_entry` type; unknown types are [`RegionKind::Reserved`].
    pub const fn from_e820(kind: u32) -> Self {
        match kind {
            1 => Self::Usable,
            3 => Self::AcpiReclaimable,
            4 => Self::AcpiNvs,
            5 => Self::Unusable,
            _ => Self::Reserved,
        }
    }

    /// Whether the kernel may allocate from memory of this kind.
    pub const fn is_usable(self) -> bool {
        matches!(self, Self::Usable)
    }

    /// Which kind wins where ranges overlap: the higher number, the more restrictive.
    ///
    /// `Usable` (0) < `AcpiReclaimable` (1) < `AcpiNvs` (2) < `Reserved` (3)
    /// < `Unusable` (4): ordered by how firmly the kernel must keep away.
    /// Reclaimable memory turns into RAM once ACPI has been read; NVS is RAM
    /// firmware needs preserved; reserved ranges may be MMIO or firmware code
    /// whose contents the kernel cannot judge; unusable RAM is known bad.
    /// (Linux's e820 code instead lets the higher type number win, which
    /// would let "ACPI reclaimable" override "reserved"; this order never
    /// makes a range easier to reuse than any entry describing it.)
    pub const fn precedence(self) -> u8 {
        match self {
            Self::Usable => 0,
            Self::AcpiReclaimable => 1,
            Self::AcpiNvs => 2,
            Self::Reserved => 3,
            Self::Unusable => 4,
        }
    }

    /// The more restrictive of two kinds (see [`RegionKind::precedence`]).
    pub const fn more_restrictive(self, other: Self) -> Self {
        if other.precedence() > self.precedence() {
            other
        } else {
            self
        }
    }
}

impl fmt::Display for RegionKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Usable => "usable",
            Self::Reserved => "reserved",
            Self::AcpiReclaimable => "ACPI reclaimable",
            Self::AcpiNvs => "ACPI NVS",
            Self::Unusable => "unusable",
        })
    }
}

/// A range of physical memory, `start..end`.
///
/// `end` is exclusive, so the last byte of the address space
/// (`0xffff_ffff_ffff_ffff`) cannot be described; entries reaching it are
/// clamped to end at `u64::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// The first byte of the region.
    pub start: u64,
    /// One past the last byte of the region.
    pub end: u64,
    /// What the memory is.
    pub kind: RegionKind,
}

impl Region {
    /// The filler for unused slots.
    const EMPTY: Self = Self { start: 0, end: 0, kind: RegionKind::Reserved };

    /// The size of the region in bytes (0 if `end <= start`).
    pub const fn size(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the region holds no byte.
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether `address` lies inside the region.
    pub const fn contains(&self, address: u64) -> bool {
        self.start <= address && address < self.end
    }
}

impl fmt::Display for Region {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:#014x}..{:#014x} {}", self.start, self.end, self.kind)
    }
}

/// What went wrong changing a [`MemoryMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryMapError {
    /// All [`MAX_REGIONS`] slots are taken (for `reserve`: the split it needs would not fit; the map is unchanged).
    Full,
    /// The range ends before it starts.
    InvalidRange {
        /// The first byte of the range given.
        start: u64,
        /// The (exclusive) end of the range given.
        end: u64,
    },
}

impl fmt::Display for MemoryMapError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full => write!(formatter, "the memory map is full ({MAX_REGIONS} regions)"),
            Self::InvalidRange { start, end } => {
                write!(formatter, "invalid memory range {start:#x}..{end:#x}: it ends before it starts")
            }
        }
    }
}

/// What [`MemoryMap::normalize`] changed, for the kernel to log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NormalizeReport {
    /// Non-empty entries that went in.
    pub entries: usize,
    /// Regions that came out of merging, before page trimming dropped any.
    pub regions: usize,
    /// Zero-length entries, dropped.
    pub empty_dropped: usize,
    /// Entries whose `start + size` overflowed `u64`, clamped to end at `u64::MAX`.
    pub clamped: usize,
    /// Entries that overlapped or touched another entry of the same kind, and were merged with it.
    pub merged: usize,
    /// Entries that overlapped an entry of a different kind; the overlap went to the more restrictive kind.
    pub conflicting: usize,
    /// Bytes some entry called usable that another entry's more restrictive kind overrode.
    pub usable_bytes_overridden: u64,
    /// Usable bytes dropped by trimming usable regions inward to page boundaries.
    pub usable_bytes_trimmed: u64,
    /// Usable regions dropped because they held no whole page.
    pub usable_regions_dropped: usize,
    /// Regions that did not fit in [`MAX_REGIONS`] slots and were dropped,
    /// highest addresses first. Only a map of more than about 64 interleaved
    /// entries gets here, since every entry adds at most two boundaries.
    pub regions_lost: usize,
}

/// A map of physical memory in [`MAX_REGIONS`] fixed slots.
///
/// Filled raw with [`MemoryMap::push`], then cleaned with
/// [`MemoryMap::normalize`]; the queries below assume a normalised map.
#[derive(Clone)]
pub struct MemoryMap {
    /// `regions[..len]` are in use; the rest are [`Region::EMPTY`].
    regions: [Region; MAX_REGIONS],
    /// Invariant: `len <= MAX_REGIONS`.
    len: usize,
    /// Entries clamped by `push` since the last `normalize`, which reports them.
    clamped_since_normalize: usize,
}

impl MemoryMap {
    /// An empty map.
    pub const fn new() -> Self {
        Self { regions: [Region::EMPTY; MAX_REGIONS], len: 0, clamped_since_normalize: 0 }
    }

    /// Adds the raw entry `start .. start + size` of `kind`, as the VMM gave it.
    ///
    /// Zero sizes are kept until [`MemoryMap::normalize`] drops them; a size
    /// running past the end of the address space is clamped to end at
    /// `u64::MAX` (and counted in the next normalise report).
    pub fn push(&mut self, start: u64, size: u64, kind: RegionKind) -> Result<(), MemoryMapError> {
        let slot = self.regions.get_mut(self.len).ok_or(MemoryMapError::Full)?;
        let end = match start.checked_add(size) {
            Some(end) => end,
            None => {
                self.clamped_since_normalize = self.clamped_since_normalize.saturating_add(1);
                u64::MAX
            }
        };
        *slot = Region { start, end, kind };
        self.len = self.len.saturating_add(1);
        Ok(())
    }

    /// The regions, in address order once normalised.
    pub fn regions(&self) -> &[Region] {
        self.regions.get(..self.len).unwrap_or(&[])
    }

    /// How many regions the map holds.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the map holds no region.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every region.
    pub fn clear(&mut self) {
        *self = Self::new();
    }

    /// The usable regions.
    pub fn usable(&self) -> impl Iterator<Item = &Region> {
        self.regions().iter().filter(|region| region.kind.is_usable())
    }

    /// The total size of the usable regions, in bytes.
    pub fn usable_bytes(&self) -> u64 {
        self.usable().fold(0, |total, region| total.saturating_add(region.size()))
    }

    /// One past the highest byte any region describes, of any kind (0 for an empty map).
    ///
    /// Reserved regions count, since the kernel maps firmware ranges (APIC,
    /// ACPI tables) too; see [`MemoryMap::highest_usable_address`] for RAM only.
    pub fn highest_address(&self) -> u64 {
        self.regions().iter().map(|region| region.end).max().unwrap_or(0)
    }

    /// One past the highest usable byte (0 if there is no usable region).
    pub fn highest_usable_address(&self) -> u64 {
        self.usable().map(|region| region.end).max().unwrap_or(0)
    }

    /// Carves `start..end` out of usable memory, e.g. for the kernel image.
    ///
    /// The range is widened outward to page boundaries, so usable regions
    /// stay page-aligned. The carved bytes simply stop being described as
    /// usable (they are not added as a region of their own: the map keeps
    /// what the firmware said, and the kernel knows what it took). Cutting a
    /// hole in the middle of a usable region needs one more slot; if that
    /// does not fit, the call fails with [`MemoryMapError::Full`] and changes
    /// nothing. An empty range (`start == end`) is a no-op.
    pub fn reserve(&mut self, start: u64, end: u64) -> Result<(), MemoryMapError> {
        if end < start {
            return Err(MemoryMapError::InvalidRange { start, end });
        }
        if start == end {
            return Ok(());
        }
        let start = align_down(start);
        let end = align_up(end).unwrap_or(u64::MAX);
        let holes = self.usable().filter(|region| region.start < start && end < region.end).count();
        if self.len.saturating_add(holes) > MAX_REGIONS {
            return Err(MemoryMapError::Full);
        }
        let mut index = 0;
        while let Some(region) = self.regions().get(index).copied() {
            if !region.kind.is_usable() || region.end <= start || end <= region.start {
                index += 1;
                continue;
            }
            let below = Region { start: region.start, end: start, kind: region.kind };
            let above = Region { start: end, end: region.end, kind: region.kind };
            match (!below.is_empty(), !above.is_empty()) {
                (true, true) => {
                    self.replace(index, below);
                    self.insert(index + 1, above)?;
                    index += 2;
                }
                (true, false) => {
                    self.replace(index, below);
                    index += 1;
                }
                (false, true) => {
                    self.replace(index, above);
                    index += 1;
                }
                (false, false) => self.remove(index),
            }
        }
        Ok(())
    }

    /// Sorts, merges and cleans the raw entries; see the module documentation for the rules.
    ///
    /// Needs a scratch array of [`MAX_REGIONS`] regions (3 KiB) on the stack.
    pub fn normalize(&mut self) -> NormalizeReport {
        let mut report = self.resolve_overlaps();
        self.trim_usable_to_pages(&mut report);
        report
    }

    /// Normalises without page trimming: drops empty entries, then rebuilds
    /// the map as the sorted, merged union of the entries.
    fn resolve_overlaps(&mut self) -> NormalizeReport {
        let mut report = NormalizeReport {
            clamped: core::mem::take(&mut self.clamped_since_normalize),
            ..NormalizeReport::default()
        };
        self.retain(|region| {
            if region.is_empty() {
                report.empty_dropped += 1;
            }
            !region.is_empty()
        });
        let entries = self.regions();
        report.entries = entries.len();
        count_overlaps(entries, &mut report);

        // The sweep reads `entries` while the result grows, and the result
        // can have more regions than there were entries (a reserved entry
        // inside a usable one makes three), so it is built in a scratch array.
        let mut result = [Region::EMPTY; MAX_REGIONS];
        let mut result_len = 0;
        let mut store = |region: Region, report: &mut NormalizeReport| match result.get_mut(result_len) {
            Some(slot) => {
                *slot = region;
                result_len += 1;
                report.regions += 1;
            }
            None => report.regions_lost += 1,
        };
        let mut current: Option<Region> = None;
        for piece in Sweep::new(entries) {
            if piece.usable_overridden {
                report.usable_bytes_overridden = report.usable_bytes_overridden.saturating_add(piece.region.size());
            }
            match current.as_mut() {
                Some(region) if region.end == piece.region.start && region.kind == piece.region.kind => {
                    region.end = piece.region.end;
                }
                _ => {
                    if let Some(finished) = current.replace(piece.region) {
                        store(finished, &mut report);
                    }
                }
            }
        }
        if let Some(finished) = current {
            store(finished, &mut report);
        }
        self.regions = result;
        self.len = result_len;
        report
    }

    /// Trims usable regions inward to page boundaries, dropping those left empty.
    fn trim_usable_to_pages(&mut self, report: &mut NormalizeReport) {
        let mut trimmed: u64 = 0;
        let mut dropped = 0;
        for region in self.regions.iter_mut().take(self.len) {
            if !region.kind.is_usable() {
                continue;
            }
            let before = region.size();
            match align_up(region.start) {
                Some(start) if start < align_down(region.end) => {
                    region.start = start;
                    region.end = align_down(region.end);
                }
                _ => {
                    region.end = region.start;
                    dropped += 1;
                }
            }
            trimmed = trimmed.saturating_add(before.saturating_sub(region.size()));
        }
        self.retain(|region| !region.is_empty());
        report.usable_bytes_trimmed = report.usable_bytes_trimmed.saturating_add(trimmed);
        report.usable_regions_dropped += dropped;
    }

    /// Keeps the regions `keep` accepts, in order.
    fn retain(&mut self, mut keep: impl FnMut(&Region) -> bool) {
        let mut kept = 0;
        for index in 0..self.len {
            let Some(region) = self.regions.get(index).copied() else {
                break;
            };
            if keep(&region) {
                if let Some(slot) = self.regions.get_mut(kept) {
                    *slot = region;
                }
                kept += 1;
            }
        }
        for slot in self.regions.iter_mut().skip(kept) {
            *slot = Region::EMPTY;
        }
        self.len = kept;
    }

    fn replace(&mut self, index: usize, region: Region) {
        if let Some(slot) = self.regions.get_mut(index) {
            *slot = region;
        }
    }

    /// Inserts `region` at `index`, shifting the later regions up.
    fn insert(&mut self, index: usize, region: Region) -> Result<(), MemoryMapError> {
        if self.len >= MAX_REGIONS {
            return Err(MemoryMapError::Full);
        }
        // `index..=len` is non-empty and in bounds (len < MAX_REGIONS), so
        // rotating it by one moves the free slot at `len` down to `index`.
        let tail = self.regions.get_mut(index..=self.len).ok_or(MemoryMapError::Full)?;
        tail.rotate_right(1);
        if let Some(slot) = tail.first_mut() {
            *slot = region;
        }
        self.len += 1;
        Ok(())
    }

    /// Removes the region at `index`, shifting the later regions down.
    fn remove(&mut self, index: usize) {
        if let Some(tail) = self.regions.get_mut(index..self.len) {
            if !tail.is_empty() {
                tail.rotate_left(1);
                if let Some(last) = tail.last_mut() {
                    *last = Region::EMPTY;
                }
                self.len -= 1;
            }
        }
    }
}

impl Default for MemoryMap {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryMap {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_list().entries(self.regions()).finish()
    }
}

/// Rounds down to a page boundary.
const fn align_down(address: u64) -> u64 {
    address & !(PAGE_SIZE - 1)
}

/// Rounds up to a page boundary; `None` past the last page of the address space.
const fn align_up(address: u64) -> Option<u64> {
    match address.checked_add(PAGE_SIZE - 1) {
        Some(bumped) => Some(align_down(bumped)),
        None => None,
    }
}

/// Counts the entries merged with a same-kind neighbour and those in conflict with another kind.
fn count_overlaps(entries: &[Region], report: &mut NormalizeReport) {
    for (index, entry) in entries.iter().enumerate() {
        let others =
            entries.iter().enumerate().filter(|(other_index, _)| *other_index != index).map(|(_, other)| other);
        let mut merged = false;
        let mut conflicting = false;
        for other in others {
            if other.kind == entry.kind {
                merged |= entry.start <= other.end && other.start <= entry.end;
            } else {
                conflicting |= entry.start < other.end && other.start < entry.end;
            }
        }
        report.merged += usize::from(merged);
        report.conflicting += usize::from(conflicting);
    }
}

/// One stretch between consecutive entry boundaries, with the kind that wins there.
#[derive(Debug, Clone, Copy)]
struct Piece {
    region: Region,
    /// Some entry called the stretch usable, but a more restrictive kind won.
    usable_overridden: bool,
}

/// Walks the address space from boundary to boundary (every entry's start
/// and end), yielding the covered stretches in address order.
///
/// Each step scans every entry, so a walk costs O(n²) for n entries: at
/// most 256 steps over 128 entries, with no allocation and no sorting.
/// It ends because the position strictly increases through a finite set of
/// boundaries.
struct Sweep<'a> {
    entries: &'a [Region],
    /// Where the next stretch starts; `None` once past the last boundary.
    position: Option<u64>,
}

impl<'a> Sweep<'a> {
    fn new(entries: &'a [Region]) -> Self {
        Self { entries, position: entries.iter().map(|entry| entry.start).min() }
    }
}

impl Iterator for Sweep<'_> {
    type Item = Piece;

    fn next(&mut self) -> Option<Piece> {
        loop {
            let position = self.position?;
            let next = self
                .entries
                .iter()
                .flat_map(|entry| [entry.start, entry.end])
                .filter(|&boundary| boundary > position)
                .min();
            self.position = next;
            let next = next?;
            // No boundary lies inside position..next, so the entries covering
            // `position` cover the whole stretch.
            let mut winner: Option<RegionKind> = None;
            let mut usable_seen = false;
            for entry in self.entries.iter().filter(|entry| entry.contains(position)) {
                usable_seen |= entry.kind.is_usable();
                winner = Some(winner.map_or(entry.kind, |kind| kind.more_restrictive(entry.kind)));
            }
            if let Some(kind) = winner {
                return Some(Piece {
                    region: Region { start: position, end: next, kind },
                    usable_overridden: usable_seen && !kind.is_usable(),
                });
            }
            // A gap between entries: move on to the next boundary.
        }
    }
}

/// Memory a device range must not cover: low memory (`0..low_end`), the
/// kernel image, every region of the memory map that is not `Reserved`
/// (RAM, ACPI, firmware), and everything from `limit` up.
#[derive(Clone, Copy)]
pub struct DeviceMemoryRules<'a> {
    /// The end of low memory (real-mode area, firmware tables, trampoline).
    pub low_end: u64,
    /// The kernel image, `start..end`.
    pub image: (u64, u64),
    /// The memory map (none yet: only low memory and the image are refused).
    pub map: Option<&'a MemoryMap>,
    /// One past the highest address a device may use (the physical address width).
    pub limit: u64,
}

/// Why a range may not be device-mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceRangeError {
    /// Size 0, or the range wraps around the address space.
    Empty,
    /// It reaches past `limit`.
    TooHigh,
    /// It overlaps this forbidden range, `start..end`.
    Overlaps((u64, u64)),
}

impl DeviceMemoryRules<'_> {
    /// Whether `start..start + size` may be device-mapped.
    pub fn check(&self, start: u64, size: u64) -> Result<(), DeviceRangeError> {
        let end = start.checked_add(size).filter(|_| size > 0).ok_or(DeviceRangeError::Empty)?;
        if end > self.limit {
            return Err(DeviceRangeError::TooHigh);
        }
        let overlaps = |a: u64, b: u64| a < end && start < b;
        if overlaps(0, self.low_end) {
            return Err(DeviceRangeError::Overlaps((0, self.low_end)));
        }
        if overlaps(self.image.0, self.image.1) {
            return Err(DeviceRangeError::Overlaps(self.image));
        }
        match self.map.and_then(|map| {
            map.regions().iter().filter(|r| r.kind != RegionKind::Reserved).find(|r| overlaps(r.start, r.end))
        }) {
            Some(region) => Err(DeviceRangeError::Overlaps((region.start, region.end))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RegionKind::{AcpiNvs, AcpiReclaimable, Reserved, Unusable, Usable};
    use super::*;
    use proptest::prelude::*;

    fn map_of(entries: &[(u64, u64, RegionKind)]) -> MemoryMap {
        let mut map = MemoryMap::new();
        for &(start, size, kind) in entries {
            map.push(start, size, kind).unwrap();
        }
        map
    }

    fn region(start: u64, end: u64, kind: RegionKind) -> Region {
        Region { start, end, kind }
    }

    #[test]
    fn e820_types_map_to_kinds() {
        assert_eq!(RegionKind::from_e820(1), Usable);
        assert_eq!(RegionKind::from_e820(2), Reserved);
        assert_eq!(RegionKind::from_e820(3), AcpiReclaimable);
        assert_eq!(RegionKind::from_e820(4), AcpiNvs);
        assert_eq!(RegionKind::from_e820(5), Unusable);
        assert_eq!(RegionKind::from_e820(0), Reserved);
        assert_eq!(RegionKind::from_e820(7), Reserved);
        assert_eq!(RegionKind::from_e820(u32::MAX), Reserved);
    }

    #[test]
    fn push_fails_when_full_and_keeps_what_it_has() {
        let mut map = MemoryMap::new();
        for index in 0..MAX_REGIONS as u64 {
            map.push(index * PAGE_SIZE, PAGE_SIZE, Usable).unwrap();
        }
        assert_eq!(map.push(0, 1, Usable), Err(MemoryMapError::Full));
        assert_eq!(map.len(), MAX_REGIONS);
        let report = map.normalize();
        assert_eq!(report.entries, MAX_REGIONS);
        assert_eq!(report.merged, MAX_REGIONS);
        assert_eq!(map.regions(), &[region(0, MAX_REGIONS as u64 * PAGE_SIZE, Usable)]);
    }

    #[test]
    fn normalize_sorts_and_drops_empty_entries() {
        let mut map = map_of(&[
            (0x10_0000, 0x10_0000, Usable),
            (0, 0, Usable),
            (0, 0x9_f000, Usable),
            (0x5000_0000, 0, Reserved),
            (0xf_0000, 0x1_0000, Reserved),
        ]);
        let report = map.normalize();
        assert_eq!(
            map.regions(),
            &[region(0, 0x9_f000, Usable), region(0xf_0000, 0x10_0000, Reserved), region(0x10_0000, 0x20_0000, Usable),]
        );
        assert_eq!(report.empty_dropped, 2);
        assert_eq!(report.entries, 3);
        assert_eq!(report.regions, 3);
        assert_eq!(report.merged, 0);
        assert_eq!(report.conflicting, 0);
    }

    #[test]
    fn reserved_inside_usable_splits_it() {
        let mut map = map_of(&[(0, 0x10_0000, Usable), (0x4_0000, 0x1000, Reserved)]);
        let report = map.normalize();
        assert_eq!(
            map.regions(),
            &[region(0, 0x4_0000, Usable), region(0x4_0000, 0x4_1000, Reserved), region(0x4_1000, 0x10_0000, Usable),]
        );
        assert_eq!(report.conflicting, 2);
        assert_eq!(report.usable_bytes_overridden, 0x1000);
        assert_eq!(map.usable_bytes(), 0x10_0000 - 0x1000);
    }

    #[test]
    fn more_restrictive_kind_wins_in_documented_order() {
        let order = [Usable, AcpiReclaimable, AcpiNvs, Reserved, Unusable];
        for (low_index, &low) in order.iter().enumerate() {
            for &high in &order[low_index + 1..] {
                for entries in [[(0, 0x2000, low), (0x1000, 0x2000, high)], [(0x1000, 0x2000, high), (0, 0x2000, low)]]
                {
                    let mut map = map_of(&entries);
                    map.normalize();
                    let expected = [region(0, 0x1000, low), region(0x1000, 0x3000, high)];
                    assert_eq!(map.regions(), &expected, "{low:?} against {high:?}");
                }
            }
        }
    }

    #[test]
    fn same_kind_overlapping_and_adjacent_entries_merge() {
        let mut map = map_of(&[
            (0x3000, 0x2000, Reserved),
            (0x1000, 0x2000, Reserved),
            (0x2000, 0x800, Reserved),
            (0x10_0000, 0x1000, Usable),
            (0x10_1000, 0x1000, Usable),
        ]);
        let report = map.normalize();
        assert_eq!(map.regions(), &[region(0x1000, 0x5000, Reserved), region(0x10_0000, 0x10_2000, Usable)]);
        assert_eq!(report.merged, 5);
        assert_eq!(report.regions, 2);
    }

    #[test]
    fn overflowing_entries_are_clamped() {
        let mut map = map_of(&[(u64::MAX - 0xfff, 0x10_0000, Reserved), (0x1_0000_0000, u64::MAX, Usable)]);
        let report = map.normalize();
        assert_eq!(report.clamped, 2);
        assert_eq!(
            map.regions(),
            &[
                region(0x1_0000_0000, align_down(u64::MAX - 0xfff), Usable),
                region(u64::MAX - 0xfff, u64::MAX, Reserved)
            ]
        );
        assert_eq!(map.highest_address(), u64::MAX);
        // The count is reported once.
        assert_eq!(map.normalize().clamped, 0);
    }

    #[test]
    fn usable_regions_are_trimmed_inward_to_pages() {
        let mut map = map_of(&[
            (0, 0x9_fc00, Usable),
            (0x9_fc00, 0x400, Reserved),
            (0x10_0800, 0x800, Usable),
            (0x20_0001, 0x2fff, Usable),
        ]);
        let report = map.normalize();
        assert_eq!(
            map.regions(),
            &[region(0, 0x9_f000, Usable), region(0x9_fc00, 0xa_0000, Reserved), region(0x20_1000, 0x20_3000, Usable)]
        );
        assert_eq!(report.usable_regions_dropped, 1);
        assert_eq!(report.usable_bytes_trimmed, 0xc00 + 0x800 + 0xfff);
        assert!(map.usable().all(|r| r.start % PAGE_SIZE == 0 && r.end % PAGE_SIZE == 0));
    }

    #[test]
    fn normalize_drops_the_highest_regions_when_the_result_does_not_fit() {
        // One usable range riddled with 100 reserved holes: 201 regions.
        let mut map = MemoryMap::new();
        map.push(0, 1 << 40, Usable).unwrap();
        for hole in 1..=100u64 {
            map.push(hole * 0x10_0000, PAGE_SIZE, Reserved).unwrap();
        }
        let report = map.normalize();
        assert_eq!(report.regions, MAX_REGIONS);
        assert_eq!(report.regions_lost, 201 - MAX_REGIONS);
        assert_eq!(map.len(), MAX_REGIONS);
        let regions = map.regions();
        assert!(regions.windows(2).all(|pair| pair[0].end <= pair[1].start));
        assert!(regions
            .iter()
            .filter(|r| r.kind == Usable)
            .all(|r| (1..=100u64).all(|hole| r.end <= hole * 0x10_0000 || hole * 0x10_0000 + PAGE_SIZE <= r.start)));
    }

    #[test]
    fn reserve_carves_the_middle_edges_and_whole_regions() {
        let mut map =
            map_of(&[(0, 0x9_f000, Usable), (0xf_0000, 0x1_0000, Reserved), (0x10_0000, 0x3f00_0000, Usable)]);
        map.normalize();
        // Kernel image in the middle of high RAM, not page aligned.
        map.reserve(0x20_0123, 0x40_0456).unwrap();
        // Low memory, covering the whole first usable region.
        map.reserve(0, 0x10_0000).unwrap();
        // The top edge of RAM.
        map.reserve(0x3f00_0000, 0x4010_0000).unwrap();
        assert_eq!(
            map.regions(),
            &[
                region(0xf_0000, 0x10_0000, Reserved),
                region(0x10_0000, 0x20_0000, Usable),
                region(0x40_1000, 0x3f00_0000, Usable),
            ]
        );
        // Empty and reversed ranges.
        assert_eq!(map.reserve(0x5000, 0x5000), Ok(()));
        assert_eq!(map.reserve(0x6000, 0x5000), Err(MemoryMapError::InvalidRange { start: 0x6000, end: 0x5000 }));
        // Reserving up to the very end does not overflow.
        map.reserve(0x3000_0000, u64::MAX).unwrap();
        assert_eq!(map.highest_usable_address(), 0x3000_0000);
    }

    #[test]
    fn reserve_fails_cleanly_when_a_split_does_not_fit() {
        let mut map = MemoryMap::new();
        for index in 0..MAX_REGIONS as u64 {
            map.push(index * 0x10_0000, 0x8_0000, Usable).unwrap();
        }
        let before = map.clone();
        assert_eq!(map.reserve(0x1000, 0x2000), Err(MemoryMapError::Full));
        assert_eq!(map.regions(), before.regions());
        // Taking a region's edge needs no slot and works.
        map.reserve(0, 0x1000).unwrap();
        assert_eq!(map.regions()[0], region(0x1000, 0x8_0000, Usable));
    }

    #[test]
    fn queries_on_an_empty_map() {
        let mut map = MemoryMap::default();
        assert!(map.is_empty());
        assert_eq!(map.normalize(), NormalizeReport::default());
        assert_eq!(map.usable_bytes(), 0);
        assert_eq!(map.highest_address(), 0);
        assert_eq!(map.highest_usable_address(), 0);
        assert_eq!(map.reserve(0, 0x1000), Ok(()));
    }

    #[test]
    fn errors_and_regions_display_clearly() {
        assert_eq!(MemoryMapError::Full.to_string(), "the memory map is full (128 regions)");
        assert_eq!(region(0x10_0000, 0x20_0000, AcpiNvs).to_string(), "0x000000100000..0x000000200000 ACPI NVS");
    }

    /// The kind the entries give `address`, by precedence, or `None` where no entry covers it.
    fn expected_kind(entries: &[Region], address: u64) -> Option<RegionKind> {
        entries
            .iter()
            .filter(|entry| entry.contains(address))
            .map(|entry| entry.kind)
            .reduce(RegionKind::more_restrictive)
    }

    fn kind_at(regions: &[Region], address: u64) -> Option<RegionKind> {
        regions.iter().find(|region| region.contains(address)).map(|region| region.kind)
    }

    fn kind() -> impl Strategy<Value = RegionKind> {
        prop_oneof![
            3 => Just(Usable),
            1 => Just(Reserved),
            1 => Just(AcpiReclaimable),
            1 => Just(AcpiNvs),
            1 => Just(Unusable),
        ]
    }

    fn address() -> impl Strategy<Value = u64> {
        prop_oneof![
            // Small, page-ish values so entries overlap often.
            8 => (0u64..64).prop_map(|n| n * 0x800),
            1 => 0u64..0x10_0000,
            1 => any::<u64>(),
            1 => (0u64..0x1000).prop_map(|n| u64::MAX - n),
        ]
    }

    fn entries() -> impl Strategy<Value = Vec<(u64, u64, RegionKind)>> {
        prop::collection::vec((address(), address(), kind()), 0..24)
    }

    proptest! {
        #[test]
        fn normalize_keeps_every_byte_and_every_restriction(raw in entries()) {
            let mut map = MemoryMap::new();
            for &(start, size, kind) in &raw {
                map.push(start, size, kind).unwrap();
            }
            let inputs: Vec<Region> = raw
                .iter()
                .map(|&(start, size, kind)| region(start, start.saturating_add(size), kind))
                .filter(|entry| !entry.is_empty())
                .collect();

            // Before trimming: exactly the union, with the winning kind everywhere.
            let mut merged = map.clone();
            let report = merged.resolve_overlaps();
            let regions = merged.regions();
            prop_assert_eq!(report.regions_lost, 0);
            prop_assert!(regions.iter().all(|r| !r.is_empty()));
            prop_assert!(regions.windows(2).all(|pair| pair[0].end <= pair[1].start));
            prop_assert!(regions.windows(2).all(|pair| pair[0].end < pair[1].start || pair[0].kind != pair[1].kind));
            // Kinds are constant between boundaries, so checking at every
            // boundary (and just before it) checks every byte.
            let boundaries = inputs
                .iter()
                .chain(regions)
                .flat_map(|r| [r.start, r.end, r.start.saturating_sub(1), r.end.saturating_sub(1)]);
            for address in boundaries {
                prop_assert_eq!(kind_at(regions, address), expected_kind(&inputs, address), "at {:#x}", address);
            }

            // After trimming: still sorted, page-aligned usable memory, and a
            // subset of what was usable before.
            let report = map.normalize();
            let trimmed = map.regions();
            prop_assert!(trimmed.windows(2).all(|pair| pair[0].end <= pair[1].start));
            for usable in map.usable() {
                prop_assert!(usable.start % PAGE_SIZE == 0 && usable.end % PAGE_SIZE == 0 && !usable.is_empty());
                prop_assert!(regions.iter().any(|r| r.kind == Usable && r.start <= usable.start && usable.end <= r.end));
                for entry in inputs.iter().filter(|entry| !entry.kind.is_usable()) {
                    prop_assert!(usable.end <= entry.start || entry.end <= usable.start);
                }
            }
            for other in trimmed.iter().filter(|r| !r.kind.is_usable()) {
                prop_assert!(regions.contains(other));
            }
            let usable_before: u64 = regions.iter().filter(|r| r.kind == Usable).map(Region::size).sum();
            prop_assert_eq!(map.usable_bytes() + report.usable_bytes_trimmed, usable_before);
        }

        #[test]
        fn reserve_never_leaves_usable_bytes_in_the_range(raw in entries(), start in address(), length in address()) {
            let mut map = MemoryMap::new();
            for &(entry_start, size, kind) in &raw {
                map.push(entry_start, size, kind).unwrap();
            }
            map.normalize();
            let usable_before = map.usable_bytes();
            let end = start.saturating_add(length);
            prop_assert!(map.reserve(start, end).is_ok());
            prop_assert!(map.usable_bytes() <= usable_before);
            if start != end {
                let (carved_start, carved_end) = (align_down(start), align_up(end).unwrap_or(u64::MAX));
                for usable in map.usable() {
                    prop_assert!(usable.end <= carved_start || carved_end <= usable.start);
                }
            }
            prop_assert!(map.regions().windows(2).all(|pair| pair[0].end <= pair[1].start));
        }
    }
}
