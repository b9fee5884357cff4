//! The boot-time plan dividing usable RAM among the CPUs: one contiguous share each, from its own NUMA node where the SRAT says.
//!
//! The per-CPU allocator manages one contiguous range per CPU, so [`plan`]
//! gives every CPU exactly one `start..end` that lies inside a single usable
//! region of the memory map. RAM is rarely one block (QEMU's map is
//! `[1 MiB, 3 GiB)` plus `[4 GiB, end)` around the PCI hole, less whatever the
//! kernel reserved), so the plan has to choose which region each CPU's share
//! comes from, and some fragments may go to nobody: those bytes are reported
//! as [`SplitPlan::unassigned_bytes`].
//!
//! # The split rule, for one pool of memory and the CPUs that share it
//!
//! A *pool* is a set of page-aligned pieces of usable memory (without NUMA:
//! the usable regions of the map). Each CPU gets its share from one piece;
//! a piece given to `k` CPUs is cut into `k` nearly equal shares and all of
//! it is handed out.
//!
//! 1. **Fairest split.** Find the split that makes the smallest share as
//!    large as possible (each CPU in turn goes to the piece where its share
//!    would be largest, the D'Hondt rule); call that smallest share `best`.
//!    If `best` is below [`MIN_SHARE`], the pool is too small.
//! 2. **Use as much memory as fairness allows.** Pieces of at least
//!    `threshold = max(best / 2, MIN_SHARE)` are *eligible*. The largest
//!    eligible pieces, as many as there are CPUs, get one CPU each; the CPUs
//!    left over go, one at a time, to the piece (among those) where the share
//!    would be largest. So no share is smaller than half the fairest split's
//!    smallest share, and within that bound as much RAM as possible is
//!    handed out. On `[1 MiB, 3 GiB) + [4 GiB, 5 GiB)` with two CPUs, the
//!    shares are the two regions (3 GiB and 1 GiB) rather than two halves of
//!    the low region with 1 GiB left idle; a 1 MiB fragment next to 4 GiB is
//!    left unassigned rather than made some CPU's whole share.
//! 3. **Cutting a piece.** The `k` shares of a piece of `P` pages start at
//!    the piece's start plus `floor(P * i / k)` pages. When the even share is
//!    at least 4 MiB (twice [`LARGE_PAGE_SIZE`]), the boundaries between
//!    shares are rounded down to 2 MiB so that each share's interior can be
//!    mapped with large pages; every share then stays within 2 MiB of the
//!    even share and is at least 2 MiB. Otherwise boundaries fall on pages
//!    and shares are within a page of the even share. The piece's outer
//!    edges stay where the map puts them, so no byte is lost to alignment.
//! 4. CPUs take the shares in boot order, in address order of the pieces.
//!
//! # With NUMA (an SRAT)
//!
//! Usable memory is cut at the SRAT's memory-range boundaries into pieces
//! that each belong to one domain or to none (ragged ends left by ranges
//! that are not page-aligned are unassigned). Then:
//!
//! - **Home CPUs.** For each domain, the CPUs the SRAT places there split
//!   that domain's pieces by the rule above. A domain whose memory cannot
//!   give each of its CPUs [`MIN_SHARE`] (a memoryless node, say) is treated
//!   as having no memory: its CPUs become guests.
//! - **Guests.** CPUs the SRAT does not list, and CPUs of domains without
//!   memory, split what the home CPUs left (memory outside any SRAT range,
//!   domains without CPUs, the unused pieces of other domains) by the same
//!   rule, ignoring domains.
//! - If no CPU has a home, or the guests do not fit in what is left, the
//!   SRAT is set aside and the whole machine is split by the non-NUMA rule
//!   ([`SplitPlan::used_numa`] is then `false`).
//!
//! # Invariants of a plan
//!
//! Shares are non-empty, page-aligned, at least [`MIN_SHARE`], each inside
//! one usable region, pairwise disjoint; `shares()[i]` belongs to CPU `i`;
//! and the shares plus [`SplitPlan::unassigned_bytes`] add up to
//! [`MemoryMap::usable_bytes`].
//!
//! # Size
//!
//! A [`SplitPlan`] is about 12 KiB, built in place and returned once;
//! [`plan`] needs up to about 13 KiB of scratch stack besides (the pieces of
//! memory and their counts). Both fit the kernel's 64 KiB boot stack; pass
//! the plan by reference rather than copying it.

#![forbid(unsafe_code)]

use core::fmt;

use crate::memory_map::{MemoryMap, MAX_REGIONS, PAGE_SIZE};
use crate::numa::{NumaTopology, MAX_MEMORY_RANGES};

/// The most CPUs a plan holds: as many as the MADT summary lists.
pub const MAX_SHARES: usize = crate::acpi::MAX_CPUS;

/// The smallest share a CPU is given, in bytes.
pub const MIN_SHARE: u64 = 1 << 20;

/// The large page size share boundaries are rounded to when shares are big enough, in bytes.
pub const LARGE_PAGE_SIZE: u64 = 2 << 20;

/// The most pieces usable memory is cut into: twice the memory map's
/// capacity, so a dozen regions each cut by a dozen SRAT ranges fit. Pieces
/// beyond it are left unassigned.
pub const MAX_PIECES: usize = 2 * MAX_REGIONS;

/// [`MIN_SHARE`] in pages.
const MIN_SHARE_PAGES: u64 = MIN_SHARE / PAGE_SIZE;

/// The even share, in pages, from which boundaries are rounded to [`LARGE_PAGE_SIZE`].
const LARGE_ALIGNMENT_FROM_PAGES: u64 = 2 * LARGE_PAGE_SIZE / PAGE_SIZE;

/// Why no plan could be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitError {
    /// The list of CPUs is empty.
    NoCpus,
    /// More CPUs than [`MAX_SHARES`].
    TooManyCpus {
        /// How many were given.
        cpus: usize,
    },
    /// A usable region is empty, not page-aligned, or not after the one
    /// before it: the map was not normalised ([`MemoryMap::normalize`]).
    MapNotNormalized {
        /// The offending region's first byte.
        start: u64,
        /// The offending region's end.
        end: u64,
    },
    /// Usable memory cannot give every CPU a share of [`MIN_SHARE`].
    TooLittleMemory {
        /// How many CPUs need a share.
        cpus: usize,
        /// The least usable memory they need: `cpus` × [`MIN_SHARE`], in pieces of at least [`MIN_SHARE`].
        needed: u64,
        /// The usable memory there is, in bytes.
        available: u64,
        /// How many shares of [`MIN_SHARE`] the usable regions can hold (fewer than `cpus`).
        shares_that_fit: u64,
    },
}

impl fmt::Display for SplitError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoCpus => formatter.write_str("no CPU to split memory among"),
            Self::TooManyCpus { cpus } => write!(
                formatter,
                "{cpus} CPUs to split memory among, more than the {MAX_SHARES} supported"
            ),
            Self::MapNotNormalized { start, end } => write!(
                formatter,
                "usable region {start:#x}..{end:#x} is empty, unaligned or out of order: the memory map is not normalised"
            ),
            Self::TooLittleMemory {
                cpus,
                needed,
                available,
                shares_that_fit,
            } => write!(
                formatter,
                "{cpus} CPUs need at least {} of usable memory in pieces of {} or more; there is {}, room for {shares_that_fit} such pieces",
                Bytes(needed),
                Bytes(MIN_SHARE),
                Bytes(available)
            ),
        }
    }
}

/// One CPU's share of memory: `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuShare {
    /// The CPU's index in the list given to [`plan`] (0 is the boot CPU).
    pub cpu_index: usize,
    /// The CPU's APIC ID.
    pub apic_id: u32,
    /// The proximity domain (NUMA node) of the share's memory, when all of
    /// it lies in SRAT ranges of that one domain.
    pub domain: Option<u32>,
    /// The CPU's own proximity domain, when the SRAT lists it.
    pub cpu_domain: Option<u32>,
    /// The first byte of the share (page-aligned).
    pub start: u64,
    /// One past the last byte of the share (page-aligned).
    pub end: u64,
}

impl CpuShare {
    /// The filler for unused slots.
    const EMPTY: Self = Self { cpu_index: 0, apic_id: 0, domain: None, cpu_domain: None, start: 0, end: 0 };

    /// The size of the share in bytes.
    pub const fn size(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the share's memory is in the CPU's own domain.
    pub fn is_local(&self) -> bool {
        self.domain.is_some() && self.domain == self.cpu_domain
    }
}

impl fmt::Display for CpuShare {
    /// `CPU 1 (APIC 1, node 0): 0x...-0x..., 31 MiB from node 0`, for the boot log.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "CPU {} (APIC {}", self.cpu_index, self.apic_id)?;
        if let Some(domain) = self.cpu_domain {
            write!(formatter, ", node {domain}")?;
        }
        write!(formatter, "): {:#014x}..{:#014x}, {}", self.start, self.end, Bytes(self.size()))?;
        match self.domain {
            Some(domain) => write!(formatter, " from node {domain}"),
            None => Ok(()),
        }
    }
}

/// A byte count shown in the largest of GiB, MiB or KiB that divides it, else in bytes.
struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        match UNITS.iter().find(|(unit, _)| self.0 != 0 && self.0.is_multiple_of(*unit)) {
            Some((unit, name)) => write!(formatter, "{} {name}", self.0 / unit),
            None => write!(formatter, "{} bytes", self.0),
        }
    }
}

/// The division of usable memory among the CPUs. About 12 KiB: keep one, pass references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPlan {
    /// `shares[i]` is CPU `i`'s, for `i < len`.
    shares: [CpuShare; MAX_SHARES],
    /// Invariant: `len <= MAX_SHARES`.
    len: usize,
    /// Usable bytes in no share.
    unassigned_bytes: u64,
    /// Shares were placed by the NUMA rule.
    used_numa: bool,
}

impl SplitPlan {
    const EMPTY: Self = Self { shares: [CpuShare::EMPTY; MAX_SHARES], len: 0, unassigned_bytes: 0, used_numa: false };

    /// The shares, one per CPU: `shares()[i]` is CPU `i`'s.
    pub fn shares(&self) -> &[CpuShare] {
        self.shares.get(..self.len).unwrap_or(&[])
    }

    /// Usable bytes given to no CPU: fragments too small to be a share,
    /// pieces beyond the CPU count, ragged ends of SRAT ranges.
    pub const fn unassigned_bytes(&self) -> u64 {
        self.unassigned_bytes
    }

    /// Bytes given to CPUs.
    pub fn assigned_bytes(&self) -> u64 {
        self.shares().iter().fold(0, |total, share| total.saturating_add(share.size()))
    }

    /// Whether shares were placed by the SRAT's domains (else by the non-NUMA rule).
    pub const fn used_numa(&self) -> bool {
        self.used_numa
    }

    /// Clears every share, to start over.
    fn clear(&mut self) {
        self.shares.iter_mut().for_each(|share| *share = CpuShare::EMPTY);
        self.len = 0;
        self.used_numa = false;
    }
}

/// Plans one contiguous share of usable memory per CPU; see the module documentation for the rule.
///
/// `map` is normalised, with what the kernel keeps for itself already
/// reserved; `cpus` are the APIC IDs in boot order (index 0 is the boot
/// CPU); `numa` is the SRAT's topology, if the machine has one.
pub fn plan(map: &MemoryMap, cpus: &[u32], numa: Option<&NumaTopology>) -> Result<SplitPlan, SplitError> {
    if cpus.is_empty() {
        return Err(SplitError::NoCpus);
    }
    if cpus.len() > MAX_SHARES {
        return Err(SplitError::TooManyCpus { cpus: cpus.len() });
    }
    check_normalized(map)?;
    let mut cpu_domains = [None; MAX_SHARES];
    if let Some(numa) = numa {
        for (slot, &apic_id) in cpu_domains.iter_mut().zip(cpus) {
            *slot = numa.domain_of_cpu(apic_id);
        }
    }
    let context = Context { cpus, cpu_domains: &cpu_domains, numa };

    let mut plan = SplitPlan::EMPTY;
    let numa_placed = numa.is_some_and(|numa| plan_by_domain(&mut plan, map, &context, numa));
    if numa_placed {
        plan.used_numa = true;
    } else {
        plan.clear();
        plan_without_domains(&mut plan, map, &context)?;
    }
    plan.len = cpus.len();
    // Every CPU was placed exactly once (the apportioning hands out exactly
    // as many shares as the pool has CPUs). An empty slot would mean a bug
    // here; it is reported as a shortage rather than handed to the allocator.
    if plan.shares().iter().any(|share| share.end <= share.start) {
        return Err(too_little_memory(map, cpus.len()));
    }
    plan.unassigned_bytes = map.usable_bytes().saturating_sub(plan.assigned_bytes());
    Ok(plan)
}

/// What every stage of the planning reads.
struct Context<'a> {
    /// The CPUs' APIC IDs, in boot order.
    cpus: &'a [u32],
    /// `cpu_domains[i]`: the SRAT domain of CPU `i`.
    cpu_domains: &'a [Option<u32>; MAX_SHARES],
    numa: Option<&'a NumaTopology>,
}

/// A page-aligned, non-empty range of usable memory, in at most one domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    start: u64,
    end: u64,
    /// Its SRAT domain (always `None` without NUMA).
    domain: Option<u32>,
}

impl Piece {
    const EMPTY: Self = Self { start: 0, end: 0, domain: None };

    const fn pages(&self) -> u64 {
        self.end.saturating_sub(self.start) / PAGE_SIZE
    }
}

/// Usable memory as [`MAX_PIECES`] pieces, in address order.
struct Pieces {
    items: [Piece; MAX_PIECES],
    /// Invariant: `len <= MAX_PIECES`.
    len: usize,
}

impl Pieces {
    const fn new() -> Self {
        Self { items: [Piece::EMPTY; MAX_PIECES], len: 0 }
    }

    /// Adds `start..end` trimmed inward to pages, if a page is left and a slot is free.
    fn push(&mut self, start: u64, end: u64, domain: Option<u32>) {
        let Some(start) = start.checked_next_multiple_of(PAGE_SIZE) else {
            return;
        };
        let end = end - end % PAGE_SIZE;
        if start < end {
            if let Some(slot) = self.items.get_mut(self.len) {
                *slot = Piece { start, end, domain };
                self.len += 1;
            }
        }
    }

    fn as_slice(&self) -> &[Piece] {
        self.items.get(..self.len).unwrap_or(&[])
    }
}

/// How many shares each piece is cut into, parallel to the pieces.
type Counts = [u32; MAX_PIECES];

/// A pool whose memory cannot give each of its CPUs [`MIN_SHARE`].
struct Shortage;

/// Checks that usable regions are non-empty, page-aligned and in increasing, disjoint order.
fn check_normalized(map: &MemoryMap) -> Result<(), SplitError> {
    let mut previous_end = 0;
    for region in map.usable() {
        let aligned = region.start.is_multiple_of(PAGE_SIZE) && region.end.is_multiple_of(PAGE_SIZE);
        if region.is_empty() || !aligned || region.start < previous_end {
            return Err(SplitError::MapNotNormalized { start: region.start, end: region.end });
        }
        previous_end = region.end;
    }
    Ok(())
}

/// The error for a machine whose whole usable memory cannot hold `cpus` shares.
fn too_little_memory(map: &MemoryMap, cpus: usize) -> SplitError {
    SplitError::TooLittleMemory {
        cpus,
        needed: (cpus as u64).saturating_mul(MIN_SHARE),
        available: map.usable_bytes(),
        shares_that_fit: map.usable().fold(0, |total: u64, region| total.saturating_add(region.size() / MIN_SHARE)),
    }
}

/// The non-NUMA rule over all usable memory.
fn plan_without_domains(plan: &mut SplitPlan, map: &MemoryMap, context: &Context<'_>) -> Result<(), SplitError> {
    let mut pieces = Pieces::new();
    // A normalised map has at most MAX_REGIONS <= MAX_PIECES usable regions.
    for region in map.usable() {
        pieces.push(region.start, region.end, None);
    }
    let pieces = pieces.as_slice();
    let mut counts = [0; MAX_PIECES];
    let everything = |_: usize| true;
    let cpu_count = context.cpus.len();
    apportion(pieces, everything, cpu_count, &mut counts).map_err(|Shortage| too_little_memory(map, cpu_count))?;
    cut(pieces, everything, &counts, 0..cpu_count, context, plan);
    Ok(())
}

/// The NUMA rule; `false` if it cannot place every CPU (the caller then
/// plans without domains, over a cleared plan).
fn plan_by_domain(plan: &mut SplitPlan, map: &MemoryMap, context: &Context<'_>, numa: &NumaTopology) -> bool {
    let mut pieces = Pieces::new();
    cut_at_domains(map, numa, &mut pieces);
    let pieces = pieces.as_slice();
    let mut counts = [0; MAX_PIECES];
    let cpu_count = context.cpus.len();
    let cpu_domains = context.cpu_domains.get(..cpu_count).unwrap_or(&[]);
    let mut home = [false; MAX_SHARES];

    for domain in numa.domains() {
        let in_domain = |cpu: &usize| cpu_domains.get(*cpu) == Some(&Some(domain));
        let domain_cpus = (0..cpu_count).filter(in_domain).count();
        if domain_cpus == 0 {
            continue;
        }
        let pieces_in_domain = |index: usize| pieces.get(index).is_some_and(|piece| piece.domain == Some(domain));
        match apportion(pieces, pieces_in_domain, domain_cpus, &mut counts) {
            Ok(()) => {
                for cpu in (0..cpu_count).filter(in_domain) {
                    if let Some(flag) = home.get_mut(cpu) {
                        *flag = true;
                    }
                }
                cut(pieces, pieces_in_domain, &counts, (0..cpu_count).filter(in_domain), context, plan);
            }
            // Treated as a domain without memory: its CPUs become guests,
            // and its pieces stay free for them.
            Err(Shortage) => counts
                .iter_mut()
                .enumerate()
                .filter(|&(index, _)| pieces_in_domain(index))
                .for_each(|(_, count)| *count = 0),
        }
    }
    if !home.iter().any(|&is_home| is_home) {
        return false;
    }

    let is_guest = |cpu: &usize| home.get(*cpu) == Some(&false);
    let guests = (0..cpu_count).filter(is_guest).count();
    if guests > 0 {
        let mut taken = [false; MAX_PIECES];
        for (flag, &count) in taken.iter_mut().zip(counts.iter()) {
            *flag = count > 0;
        }
        let left_over = |index: usize| taken.get(index) == Some(&false);
        if apportion(pieces, left_over, guests, &mut counts).is_err() {
            return false;
        }
        cut(pieces, left_over, &counts, (0..cpu_count).filter(is_guest), context, plan);
    }
    true
}

/// Cuts each usable region at the SRAT's range boundaries into pieces of one domain (or none).
fn cut_at_domains(map: &MemoryMap, numa: &NumaTopology, pieces: &mut Pieces) {
    for region in map.usable() {
        // The region's edges and every range edge inside it: between two
        // neighbouring boundaries, the same ranges hold every byte.
        let mut boundaries = [0u64; 2 * MAX_MEMORY_RANGES + 2];
        let mut count = 0;
        let inside = |address: u64| region.start < address && address < region.end;
        let edges =
            numa.memory_ranges().iter().flat_map(|range| [range.base, range.end]).filter(|&address| inside(address));
        for address in [region.start, region.end].into_iter().chain(edges) {
            if let Some(slot) = boundaries.get_mut(count) {
                *slot = address;
                count += 1;
            }
        }
        let boundaries = boundaries.get_mut(..count).unwrap_or(&mut []);
        boundaries.sort_unstable();

        let mut current: Option<Piece> = None;
        for pair in boundaries.windows(2) {
            let &[start, end] = pair else { continue };
            if start == end {
                continue;
            }
            let domain = numa.domain_of_address(start);
            current = match current {
                Some(piece) if piece.domain == domain && piece.end == start => Some(Piece { end, ..piece }),
                _ => {
                    if let Some(piece) = current {
                        pieces.push(piece.start, piece.end, piece.domain);
                    }
                    Some(Piece { start, end, domain })
                }
            };
        }
        if let Some(piece) = current {
            pieces.push(piece.start, piece.end, piece.domain);
        }
    }
}

/// Decides how many of `cpu_count` shares each selected piece holds (steps 1 and 2 of the rule).
///
/// Writes `counts` of selected pieces only. Postcondition on success: the
/// selected counts add up to `cpu_count`, and for every piece with a count
/// `k > 0`, `pages / k >= MIN_SHARE_PAGES`.
fn apportion(
    pieces: &[Piece],
    selected: impl Fn(usize) -> bool,
    cpu_count: usize,
    counts: &mut Counts,
) -> Result<(), Shortage> {
    let clear = |counts: &mut Counts| {
        for (index, count) in counts.iter_mut().enumerate() {
            if selected(index) {
                *count = 0;
            }
        }
    };

    // Step 1: the fairest split, and its smallest share.
    clear(counts);
    for _ in 0..cpu_count {
        let index = most_room(pieces, &selected, counts, |_| true).ok_or(Shortage)?;
        increment(counts, index);
    }
    let best = pieces
        .iter()
        .zip(counts.iter())
        .enumerate()
        .filter(|&(index, (_, &count))| selected(index) && count > 0)
        .map(|(_, (piece, &count))| piece.pages() / u64::from(count))
        .min()
        .ok_or(Shortage)?;
    if best < MIN_SHARE_PAGES {
        return Err(Shortage);
    }

    // Step 2: one CPU for each of the largest eligible pieces, the rest
    // where the share is largest.
    let threshold = (best / 2).max(MIN_SHARE_PAGES);
    clear(counts);
    let mut placed = 0;
    while placed < cpu_count {
        let largest = pieces
            .iter()
            .zip(counts.iter())
            .enumerate()
            .filter(|&(index, (piece, &count))| selected(index) && count == 0 && piece.pages() >= threshold)
            // max_by_key keeps the last of equals; reversed, so the lowest address wins.
            .rev()
            .max_by_key(|&(_, (piece, _))| piece.pages())
            .map(|(index, _)| index);
        match largest {
            Some(index) => increment(counts, index),
            None => break,
        }
        placed += 1;
    }
    while placed < cpu_count {
        let index = most_room(pieces, &selected, counts, |count| count > 0).ok_or(Shortage)?;
        increment(counts, index);
        placed += 1;
    }
    // The fairest split's pieces are all eligible, so a split with every
    // share at least `threshold` exists and the greedy step finds one;
    // checked anyway rather than trusted.
    let smallest = pieces
        .iter()
        .zip(counts.iter())
        .enumerate()
        .filter(|&(index, (_, &count))| selected(index) && count > 0)
        .map(|(_, (piece, &count))| piece.pages() / u64::from(count))
        .min();
    match smallest {
        Some(smallest) if smallest >= MIN_SHARE_PAGES => Ok(()),
        _ => Err(Shortage),
    }
}

/// The selected piece (among those whose count passes `allowed`) where one
/// more share would be largest: the greatest `pages / (count + 1)`, lowest address on ties.
fn most_room(
    pieces: &[Piece],
    selected: &impl Fn(usize) -> bool,
    counts: &Counts,
    allowed: impl Fn(u32) -> bool,
) -> Option<usize> {
    let mut best: Option<(usize, u64, u32)> = None;
    for (index, (piece, &count)) in pieces.iter().zip(counts.iter()).enumerate() {
        if !selected(index) || !allowed(count) {
            continue;
        }
        let pages = piece.pages();
        let better = match best {
            None => true,
            // pages / (count + 1) > best_pages / (best_count + 1), without division.
            Some((_, best_pages, best_count)) => {
                u128::from(pages) * (u128::from(best_count) + 1) > u128::from(best_pages) * (u128::from(count) + 1)
            }
        };
        if better {
            best = Some((index, pages, count));
        }
    }
    best.map(|(index, _, _)| index)
}

fn increment(counts: &mut Counts, index: usize) {
    if let Some(count) = counts.get_mut(index) {
        *count = count.saturating_add(1);
    }
}

/// Cuts the selected pieces into their counted shares (step 3) and hands
/// them, in address order, to `pool_cpus` in order.
fn cut(
    pieces: &[Piece],
    selected: impl Fn(usize) -> bool,
    counts: &Counts,
    mut pool_cpus: impl Iterator<Item = usize>,
    context: &Context<'_>,
    plan: &mut SplitPlan,
) {
    for (index, (piece, &count)) in pieces.iter().zip(counts.iter()).enumerate() {
        if !selected(index) || count == 0 {
            continue;
        }
        let pages = piece.pages();
        let shares = u64::from(count);
        let large = pages / shares >= LARGE_ALIGNMENT_FROM_PAGES;
        let mut start = piece.start;
        for share in 1..=shares {
            let end = if share == shares {
                piece.end
            } else {
                // pages * share / shares <= pages: no overflow, and inside the piece.
                let offset = u128::from(pages) * u128::from(share) / u128::from(shares);
                let boundary = piece.start.saturating_add(u64::try_from(offset).unwrap_or(0).saturating_mul(PAGE_SIZE));
                if large {
                    boundary - boundary % LARGE_PAGE_SIZE
                } else {
                    boundary
                }
            };
            if let Some(cpu_index) = pool_cpus.next() {
                let apic_id = context.cpus.get(cpu_index).copied().unwrap_or(0);
                let slot = plan.shares.get_mut(cpu_index);
                if let Some(slot) = slot {
                    *slot = CpuShare {
                        cpu_index,
                        apic_id,
                        domain: context.numa.and_then(|numa| numa.domain_of_range(start, end)),
                        cpu_domain: context.cpu_domains.get(cpu_index).copied().flatten(),
                        start,
                        end,
                    };
                }
            }
            start = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_map::RegionKind;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    /// A normalised map of these usable ranges, with reserved gaps between.
    fn map_of(usable: &[(u64, u64)]) -> MemoryMap {
        let mut map = MemoryMap::new();
        for &(start, end) in usable {
            map.push(start, end - start, RegionKind::Usable).unwrap();
        }
        map.normalize();
        map
    }

    fn apic_ids(count: u32) -> Vec<u32> {
        (0..count).collect()
    }

    /// Checks the invariants every plan keeps (see the module documentation).
    fn check_invariants(map: &MemoryMap, cpus: &[u32], split: &SplitPlan) {
        let shares = split.shares();
        assert_eq!(shares.len(), cpus.len());
        for (index, share) in shares.iter().enumerate() {
            assert_eq!(share.cpu_index, index);
            assert_eq!(share.apic_id, cpus[index]);
            assert!(share.size() >= MIN_SHARE, "{share}");
            assert!(share.start % PAGE_SIZE == 0 && share.end % PAGE_SIZE == 0, "{share}");
            assert!(
                map.usable().any(|r| r.start <= share.start && share.end <= r.end),
                "{share} is not inside one usable region"
            );
        }
        let mut sorted: Vec<_> = shares.iter().map(|s| (s.start, s.end)).collect();
        sorted.sort_unstable();
        assert!(sorted.windows(2).all(|pair| pair[0].1 <= pair[1].0), "overlapping shares");
        assert_eq!(split.assigned_bytes() + split.unassigned_bytes(), map.usable_bytes());
    }

    #[test]
    fn one_region_splits_evenly() {
        // Starts at 3 MiB + 12 KiB: page-aligned, not 2 MiB-aligned.
        let (start, end) = (3 * MIB + 0x3000, 3 * MIB + 0x3000 + GIB);
        let map = map_of(&[(start, end)]);
        for count in [1u32, 2, 3, 4, 8, 64] {
            let cpus = apic_ids(count);
            let split = plan(&map, &cpus, None).unwrap();
            check_invariants(&map, &cpus, &split);
            assert_eq!(split.unassigned_bytes(), 0);
            assert!(!split.used_numa());
            let even = GIB / u64::from(count);
            for share in split.shares() {
                assert!(share.size().abs_diff(even) < LARGE_PAGE_SIZE, "{count} CPUs: {share}");
                if share.cpu_index > 0 {
                    assert_eq!(share.start % LARGE_PAGE_SIZE, 0, "{count} CPUs: {share}");
                }
            }
            // Boot order is address order.
            assert_eq!(split.shares()[0].start, start);
            assert!(split.shares().windows(2).all(|pair| pair[0].end == pair[1].start));
        }
    }

    #[test]
    fn small_shares_are_cut_at_pages() {
        // 64 CPUs over 200 MiB: about 3.1 MiB each, below the 4 MiB from
        // which boundaries go to 2 MiB.
        let map = map_of(&[(MIB, 201 * MIB)]);
        let cpus = apic_ids(64);
        let split = plan(&map, &cpus, None).unwrap();
        check_invariants(&map, &cpus, &split);
        let even = 200 * MIB / 64;
        for share in split.shares() {
            assert!(share.size().abs_diff(even) < PAGE_SIZE, "{share}");
        }
        // 256 CPUs in 256 MiB: exactly 1 MiB each.
        let map = map_of(&[(MIB, 257 * MIB)]);
        let cpus = apic_ids(256);
        let split = plan(&map, &cpus, None).unwrap();
        check_invariants(&map, &cpus, &split);
        assert!(split.shares().iter().all(|share| share.size() == MIB));
    }

    #[test]
    fn pci_hole_gives_each_cpu_a_side() {
        let map = map_of(&[(MIB, 3 * GIB), (4 * GIB, 6 * GIB)]);
        let cpus = apic_ids(2);
        let split = plan(&map, &cpus, None).unwrap();
        check_invariants(&map, &cpus, &split);
        assert_eq!(
            split.shares().iter().map(|s| (s.start, s.end)).collect::<Vec<_>>(),
            [(MIB, 3 * GIB), (4 * GIB, 6 * GIB)]
        );
        assert_eq!(split.unassigned_bytes(), 0);

        // One CPU takes the larger side.
        let split = plan(&map, &[0], None).unwrap();
        assert_eq!((split.shares()[0].start, split.shares()[0].end), (MIB, 3 * GIB));
        assert_eq!(split.unassigned_bytes(), 2 * GIB);

        // Four: the low side's 3 GiB takes two, the high side's 2 GiB two.
        let cpus = apic_ids(4);
        let split = plan(&map, &cpus, None).unwrap();
        check_invariants(&map, &cpus, &split);
        let low = split.shares().iter().filter(|s| s.end <= 3 * GIB).count();
        assert_eq!(low, 2);
        assert_eq!(split.unassigned_bytes(), 0);
    }

    #[test]
    fn uneven_sides_are_both_used_within_the_fairness_bound() {
        // 3 GiB and 1 GiB: the fairest split halves the low side (1.5 GiB
        // each) and leaves 1 GiB idle; 1 GiB is at least half of 1.5 GiB,
        // so both sides are used.
        let map = map_of(&[(MIB, 3 * GIB + MIB), (4 * GIB, 5 * GIB)]);
        let cpus = apic_ids(2);
        let split = plan(&map, &cpus, None).unwrap();
        check_invariants(&map, &cpus, &split);
        assert_eq!(split.unassigned_bytes(), 0);
        // 3 GiB and 256 MiB: 256 MiB is well under half of 1.5 GiB, so it
        // stays unassigned and the CPUs halve the low side.
        let map = map_of(&[(MIB, 3 * GIB + MIB), (4 * GIB, 4 * GIB + 256 * MIB)]);
        let split = plan(&map, &cpus, None).unwrap();
        check_invariants(&map, &cpus, &split);
        assert_eq!(split.unassigned_bytes(), 256 * MIB);
        assert!(split.shares().iter().all(|share| share.size() >= 3 * GIB / 2 - LARGE_PAGE_SIZE));
    }

    #[test]
    fn small_fragments_go_to_nobody() {
        // What is left below the kernel image is no one's share.
        let map = map_of(&[(MIB, 2 * MIB), (4 * MIB, 4 * GIB)]);
        let cpus = apic_ids(2);
        let split = plan(&map, &cpus, None).unwrap();
        check_invariants(&map, &cpus, &split);
        assert_eq!(split.unassigned_bytes(), MIB);
        assert!(split.shares().iter().all(|share| share.start >= 4 * MIB));
        // A fragment smaller than a share, even with one CPU.
        let map = map_of(&[(0x1000, 0x9_f000), (MIB, 64 * MIB)]);
        let split = plan(&map, &[7], None).unwrap();
        assert_eq!((split.shares()[0].start, split.shares()[0].end), (MIB, 64 * MIB));
        assert_eq!(split.shares()[0].apic_id, 7);
        assert_eq!(split.unassigned_bytes(), 0x9_e000);
    }

    /// The topology QEMU describes for
    /// `-numa node,nodeid=0,cpus=0-1 -numa node,nodeid=1,cpus=2-3`, 128 MiB.
    fn two_nodes(cpus_in_srat: &[(u32, u32)]) -> NumaTopology {
        let mut topology = NumaTopology::new();
        for &(apic_id, domain) in cpus_in_srat {
            topology.add_cpu(apic_id, domain).unwrap();
        }
        topology.add_memory(0, 640 << 10, 0, false, false).unwrap();
        topology.add_memory(MIB, 63 * MIB, 0, false, false).unwrap();
        topology.add_memory(64 * MIB, 64 * MIB, 1, false, false).unwrap();
        topology
    }

    /// QEMU's map for 128 MiB once the kernel kept low memory and 1..3 MiB:
    /// usable up to where the ACPI tables start.
    fn qemu_128_mib() -> MemoryMap {
        map_of(&[(3 * MIB, 0x7fe_0000)])
    }

    #[test]
    fn numa_gives_each_cpu_memory_of_its_node() {
        let map = qemu_128_mib();
        let topology = two_nodes(&[(0, 0), (1, 0), (2, 1), (3, 1)]);
        let cpus = apic_ids(4);
        let split = plan(&map, &cpus, Some(&topology)).unwrap();
        check_invariants(&map, &cpus, &split);
        assert!(split.used_numa());
        for share in split.shares() {
            let node = if share.apic_id < 2 { 0 } else { 1 };
            assert_eq!(share.cpu_domain, Some(node));
            assert_eq!(share.domain, Some(node), "{share}");
            assert!(share.is_local());
            let (node_start, node_end) = if node == 0 { (MIB, 64 * MIB) } else { (64 * MIB, 128 * MIB) };
            assert!(node_start <= share.start && share.end <= node_end, "{share}");
        }
        assert_eq!(split.unassigned_bytes(), 0);
        assert_eq!(
            split.shares()[2].to_string(),
            "CPU 2 (APIC 2, node 1): 0x000004000000..0x000005e00000, 30 MiB from node 1"
        );
        // Without the SRAT, the same CPUs split the memory regardless of nodes.
        let flat = plan(&map, &cpus, None).unwrap();
        assert!(!flat.used_numa());
        assert_eq!(flat.shares()[2].domain, None);
    }

    #[test]
    fn numa_cpus_missing_from_the_srat_take_what_is_left() {
        let map = qemu_128_mib();
        // CPUs 2 and 3 are not listed: node 1 has memory but no CPU, so
        // they split it as guests.
        let topology = two_nodes(&[(0, 0), (1, 0)]);
        let cpus = apic_ids(4);
        let split = plan(&map, &cpus, Some(&topology)).unwrap();
        check_invariants(&map, &cpus, &split);
        assert!(split.used_numa());
        assert!(split.shares()[..2].iter().all(|share| share.domain == Some(0) && share.is_local()));
        for share in &split.shares()[2..] {
            assert_eq!(share.cpu_domain, None);
            assert_eq!(share.domain, Some(1));
            assert!(!share.is_local());
        }
        assert_eq!(
            split.shares()[3].to_string(),
            "CPU 3 (APIC 3): 0x000005e00000..0x000007fe0000, 34688 KiB from node 1"
        );

        // Only CPU 3 missing, and every node's memory taken by its own CPUs:
        // the guest has nowhere to go, so the plan sets the SRAT aside.
        let topology = two_nodes(&[(0, 0), (1, 0), (2, 1)]);
        let split = plan(&map, &cpus, Some(&topology)).unwrap();
        check_invariants(&map, &cpus, &split);
        assert!(!split.used_numa());
        assert_eq!(split.shares()[0].cpu_domain, Some(0));
        assert_eq!(split.shares()[3].cpu_domain, None);
    }

    #[test]
    fn numa_memoryless_node_cpus_become_guests() {
        // Node 2 has CPUs but no memory; memory past the SRAT's ranges is
        // in no node and goes to them.
        let map = map_of(&[(3 * MIB, 0x7fe_0000), (4 * GIB, 4 * GIB + 64 * MIB)]);
        let topology = two_nodes(&[(0, 0), (1, 1), (2, 2), (3, 2)]);
        let cpus = apic_ids(4);
        let split = plan(&map, &cpus, Some(&topology)).unwrap();
        check_invariants(&map, &cpus, &split);
        assert!(split.used_numa());
        assert!(split.shares()[0].is_local() && split.shares()[1].is_local());
        for share in &split.shares()[2..] {
            assert_eq!(share.cpu_domain, Some(2));
            assert_eq!(share.domain, None);
            assert!(share.start >= 4 * GIB);
        }
        assert_eq!(split.unassigned_bytes(), 0);
    }

    #[test]
    fn numa_ranges_that_are_not_page_aligned_lose_their_ragged_ends() {
        let map = map_of(&[(MIB, 65 * MIB)]);
        let mut topology = NumaTopology::new();
        topology.add_cpu(0, 0).unwrap();
        topology.add_cpu(1, 1).unwrap();
        topology.add_memory(0, 33 * MIB + 0x800, 0, false, false).unwrap();
        topology.add_memory(33 * MIB + 0x800, 32 * MIB, 1, false, false).unwrap();
        let cpus = apic_ids(2);
        let split = plan(&map, &cpus, Some(&topology)).unwrap();
        check_invariants(&map, &cpus, &split);
        assert!(split.used_numa());
        assert_eq!(split.unassigned_bytes(), PAGE_SIZE);
        assert_eq!(split.shares()[0].end, 33 * MIB);
        assert_eq!(split.shares()[1].start, 33 * MIB + PAGE_SIZE);
    }

    #[test]
    fn numa_srat_without_our_cpus_is_set_aside() {
        let map = qemu_128_mib();
        let topology = two_nodes(&[(10, 0), (11, 1)]);
        let split = plan(&map, &[0, 1], Some(&topology)).unwrap();
        assert!(!split.used_numa());
        check_invariants(&map, &[0, 1], &split);
    }

    #[test]
    fn too_little_memory_says_how_much_is_needed() {
        let map = map_of(&[(MIB, 3 * MIB)]);
        let error = plan(&map, &apic_ids(4), None).unwrap_err();
        assert_eq!(
            error,
            SplitError::TooLittleMemory { cpus: 4, needed: 4 * MIB, available: 2 * MIB, shares_that_fit: 2 }
        );
        assert_eq!(
            error.to_string(),
            "4 CPUs need at least 4 MiB of usable memory in pieces of 1 MiB or more; there is 2 MiB, room for 2 such pieces"
        );
        // Enough bytes, but in fragments too small for a share.
        let map = map_of(&[(MIB, MIB + 0x8_0000), (2 * MIB, 2 * MIB + 0x8_0000), (3 * MIB, 3 * MIB + 0x8_0000)]);
        assert!(matches!(plan(&map, &[0], None), Err(SplitError::TooLittleMemory { shares_that_fit: 0, .. })));
        // Nothing usable at all; and the same with NUMA.
        let topology = two_nodes(&[(0, 0)]);
        assert!(matches!(
            plan(&MemoryMap::new(), &[0], Some(&topology)),
            Err(SplitError::TooLittleMemory { available: 0, .. })
        ));
    }

    #[test]
    fn bad_arguments_are_errors() {
        let map = qemu_128_mib();
        assert_eq!(plan(&map, &[], None), Err(SplitError::NoCpus));
        let cpus = apic_ids(MAX_SHARES as u32 + 1);
        assert_eq!(plan(&map, &cpus, None), Err(SplitError::TooManyCpus { cpus: MAX_SHARES + 1 }));
        let mut raw = MemoryMap::new();
        raw.push(8 * MIB, 8 * MIB, RegionKind::Usable).unwrap();
        raw.push(MIB, 8 * MIB, RegionKind::Usable).unwrap();
        assert_eq!(plan(&raw, &[0], None), Err(SplitError::MapNotNormalized { start: MIB, end: 9 * MIB }));
        let mut unaligned = MemoryMap::new();
        unaligned.push(MIB + 1, 8 * MIB, RegionKind::Usable).unwrap();
        assert!(matches!(plan(&unaligned, &[0], None), Err(SplitError::MapNotNormalized { .. })));
        assert_eq!(
            SplitError::TooManyCpus { cpus: 300 }.to_string(),
            "300 CPUs to split memory among, more than the 256 supported"
        );
        assert_eq!(SplitError::NoCpus.to_string(), "no CPU to split memory among");
    }

    #[test]
    fn memory_at_the_top_of_the_address_space() {
        let top = u64::MAX - (PAGE_SIZE - 1);
        let map = map_of(&[(top - 64 * GIB, top)]);
        let mut topology = NumaTopology::new();
        topology.add_memory(top - 64 * GIB, 64 * GIB + PAGE_SIZE - 1, 5, false, false).unwrap();
        let cpus = apic_ids(MAX_SHARES as u32);
        for apic_id in &cpus {
            topology.add_cpu(*apic_id, 5).unwrap();
        }
        let split = plan(&map, &cpus, Some(&topology)).unwrap();
        check_invariants(&map, &cpus, &split);
        assert!(split.used_numa());
        assert_eq!(split.shares().last().unwrap().end, top);
        assert_eq!(split.unassigned_bytes(), 0);
    }

    #[test]
    fn sizes_stay_as_documented() {
        assert!(core::mem::size_of::<SplitPlan>() <= 12 * 1024 + 64);
        assert!(core::mem::size_of::<Pieces>() + core::mem::size_of::<Counts>() * 2 + MAX_SHARES * 9 <= 13 * 1024);
    }

    /// Usable regions: up to 8, at random page-aligned places below 64 GiB,
    /// with sizes from a page to 8 GiB, normalised (they may merge).
    fn random_map() -> impl Strategy<Value = MemoryMap> {
        prop::collection::vec((0u64..(64 << 18), 1u64..(8 << 18)), 0..8).prop_map(|raw| {
            let mut map = MemoryMap::new();
            for (start_page, pages) in raw {
                // Sizes skewed small, so fragments and tiny maps show up.
                let pages = if pages % 3 == 0 { pages % 1024 + 1 } else { pages };
                map.push(start_page * PAGE_SIZE, pages * PAGE_SIZE, RegionKind::Usable).unwrap();
            }
            map.normalize();
            map
        })
    }

    /// A topology over the first 64 GiB: up to 6 ranges in up to 4 domains, some CPUs listed.
    fn random_topology() -> impl Strategy<Value = NumaTopology> {
        (
            prop::collection::vec((0u64..(64 << 20), 1u64..(16 << 20), 0u32..4), 0..6),
            prop::collection::vec((0u32..80, 0u32..5), 0..80),
        )
            .prop_map(|(ranges, cpus)| {
                let mut topology = NumaTopology::new();
                for (start_kib, length_kib, domain) in ranges {
                    topology.add_memory(start_kib << 10, length_kib << 10, domain, false, false).unwrap();
                }
                for (apic_id, domain) in cpus {
                    let _duplicate_is_fine = topology.add_cpu(apic_id, domain);
                }
                topology
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn plans_keep_their_invariants(
            map in random_map(),
            cpu_count in 1u32..=80,
            topology in prop::option::of(random_topology()),
        ) {
            let cpus = apic_ids(cpu_count);
            match plan(&map, &cpus, topology.as_ref()) {
                Ok(split) => {
                    check_invariants(&map, &cpus, &split);
                    if let Some(topology) = &topology {
                        for share in split.shares() {
                            prop_assert_eq!(share.domain, topology.domain_of_range(share.start, share.end));
                            prop_assert_eq!(share.cpu_domain, topology.domain_of_cpu(share.apic_id));
                        }
                        if split.used_numa() {
                            prop_assert!(split.shares().iter().any(CpuShare::is_local));
                        }
                    } else {
                        prop_assert!(!split.used_numa());
                        // Step 2's promise: a region holding no share is no larger than the largest share.
                        let largest = split.shares().iter().map(CpuShare::size).max().unwrap_or(0);
                        for region in map.usable() {
                            let used = split.shares().iter().any(|s| region.start <= s.start && s.end <= region.end);
                            prop_assert!(used || region.size() <= largest);
                        }
                    }
                }
                Err(SplitError::TooLittleMemory { cpus: count, shares_that_fit, available, .. }) => {
                    // Only when the memory truly cannot hold a share per CPU.
                    prop_assert_eq!(count, cpus.len());
                    prop_assert!(shares_that_fit < u64::from(cpu_count));
                    prop_assert_eq!(available, map.usable_bytes());
                }
                Err(other) => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}
