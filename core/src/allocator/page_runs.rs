//! Page runs: runs of contiguous 4 KiB pages, for large blocks and for carving spans.
//!
//! # The page table
//!
//! One 64-bit word per page, in the heap's metadata area, says what the page
//! is part of ([`PageWord`]). The words are boundary tags:
//!
//! - a **free run** has `FreeRun { pages }` on its first and its last page
//!   (its inner pages' words are stale and never read);
//! - a **large run** (one block handed out) has `LargeRun { pages }` on its
//!   first page and `Unused` on every other page, so only its first page can
//!   be freed;
//! - a **span** has `Span { descriptor }` on every page, so a block address
//!   anywhere in it finds its span in one load.
//!
//! A used run's first and last words are never `FreeRun`: that is all that
//! coalescing needs to read from a neighbour.
//!
//! # Free runs
//!
//! Free runs sit in 32 doubly linked lists by `floor(log2(pages))` (bucket
//! `k` holds runs of `2^k .. 2^(k+1)` pages), with a bitmap of the non-empty
//! buckets. The links are one word in the run's own first page (`next` in
//! the low half, `prev` in the high half, as page numbers): free memory
//! carries its own bookkeeping, the page table stays one word per page.
//!
//! - **Allocate** (good fit, TLSF-style): the first run of the smallest
//!   non-empty bucket whose runs are all long enough, found with one
//!   `trailing_zeros` on the bitmap: O(1). If none, a first-fit walk of the
//!   one bucket whose runs may or may not be long enough (and, for aligned
//!   requests, of the buckets a misaligned start could push out), so a
//!   request fails only when no free run can hold it. The block is cut from
//!   the start of the run (the lowest aligned start in it), so blocks taken
//!   one after another sit side by side just past the heap's metadata: a
//!   heap touches as few 2 MiB pages of host memory as it can. Under a
//!   hypervisor that backs guest RAM with transparent huge pages (QEMU's
//!   default), each 2 MiB page first touched costs a host fault that zeroes
//!   it, sometimes after the host compacts memory to find one: cut from the
//!   end, a CPU's first blocks lay 40-60 MiB away from its metadata, and a
//!   2-CPU boot of the web server touched 10 such pages (20 MiB of host
//!   memory) where it now touches 7. The part left keeps its last page's
//!   tag; its first page, and so its list links, move up.
//! - **Free** coalesces with both neighbours in O(1): the word before the
//!   run is the last page of the run to the left, the word after it the
//!   first page of the run to the right; a free neighbour is unlinked from
//!   its list and merged. Two free runs are never adjacent, so when every
//!   page is free there is exactly one run. (The original TORO never merged
//!   freed memory back.)

use super::size_class::PAGE_SIZE;
use super::WordMemory;

/// Marks "no page" in list links and list heads.
pub(crate) const NO_PAGE: u32 = u32::MAX;

/// One list per possible `floor(log2(pages))` of a run of fewer than 2^32 pages.
const BUCKETS: usize = 32;

/// `log2(PAGE_SIZE)`.
const PAGE_SHIFT: u32 = PAGE_SIZE.trailing_zeros();

/// What one page-table word says about its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PageWord {
    /// Inside a large run, past its first page (or a stale word nobody reads).
    Unused,
    /// The first or last page of a free run of `pages` pages.
    FreeRun { pages: u32 },
    /// The first page of a large block of `pages` pages.
    LargeRun { pages: u32 },
    /// A page of the span described by descriptor `descriptor`.
    Span { descriptor: u32 },
}

impl PageWord {
    const KIND_MASK: u64 = 0b11;
    const KIND_UNUSED: u64 = 0;
    const KIND_FREE: u64 = 1;
    const KIND_LARGE: u64 = 2;
    const KIND_SPAN: u64 = 3;
    const VALUE_SHIFT: u32 = 8;

    fn encode(self) -> u64 {
        let (kind, value) = match self {
            Self::Unused => (Self::KIND_UNUSED, 0),
            Self::FreeRun { pages } => (Self::KIND_FREE, pages),
            Self::LargeRun { pages } => (Self::KIND_LARGE, pages),
            Self::Span { descriptor } => (Self::KIND_SPAN, descriptor),
        };
        kind | (u64::from(value) << Self::VALUE_SHIFT)
    }

    /// Decodes any word, including garbage: the callers check the values
    /// against the heap's bounds before trusting them.
    fn decode(word: u64) -> Self {
        let value = (word >> Self::VALUE_SHIFT) as u32;
        match word & Self::KIND_MASK {
            Self::KIND_FREE => Self::FreeRun { pages: value },
            Self::KIND_LARGE => Self::LargeRun { pages: value },
            Self::KIND_SPAN => Self::Span { descriptor: value },
            _ => Self::Unused,
        }
    }
}

/// What a run is allocated for: decides the page-table words written over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunUse {
    /// One large block.
    Large,
    /// A span with this descriptor.
    Span { descriptor: u32 },
}

/// `floor(log2(pages))`, `pages >= 1`.
fn bucket_of(pages: u32) -> usize {
    (u32::BITS - 1 - pages.max(1).leading_zeros()) as usize
}

/// `ceil(log2(pages))` for `pages >= 1`: every run in this bucket or above
/// has at least `pages` pages.
fn first_bucket_holding(pages: u64) -> usize {
    (u64::BITS - pages.max(1).saturating_sub(1).leading_zeros()) as usize
}

/// The free page runs of one heap and its page table.
///
/// Owned by its [`CpuHeap`](super::CpuHeap), so by one CPU; no other CPU
/// reads these fields or the words they describe.
/// Not `Clone`: two copies would hand out the same pages.
#[derive(Debug)]
pub(crate) struct PageRuns {
    /// Address of page 0.
    pages_base: u64,
    /// Address of page 0's word in the page table.
    table_base: u64,
    /// Pages managed; page numbers are `0..page_count`, below `NO_PAGE`.
    page_count: u32,
    /// First run of each bucket, `NO_PAGE` if empty.
    heads: [u32; BUCKETS],
    /// Bit `k` set when bucket `k` is not empty.
    non_empty: u32,
    free_pages: u32,
    free_runs: u32,
    /// Pages handed out so far (every `carve`; never decreases, wraps).
    taken: u64,
}

impl PageRuns {
    /// Page runs over `page_count` pages at `pages_base`, with their table at
    /// `table_base` (`8 * page_count` bytes), all free as one run.
    ///
    /// Precondition (checked by the heap): `1 <= page_count < NO_PAGE`, both
    /// areas inside the region and disjoint, both bases 8-aligned and
    /// `pages_base` page-aligned.
    pub(crate) fn new(memory: &mut impl WordMemory, pages_base: u64, table_base: u64, page_count: u32) -> Self {
        let mut runs = Self {
            pages_base,
            table_base,
            page_count,
            heads: [NO_PAGE; BUCKETS],
            non_empty: 0,
            free_pages: 0,
            free_runs: 0,
            taken: 0,
        };
        runs.insert(memory, 0, page_count);
        runs
    }

    /// The address of page `page`.
    pub(crate) fn page_address(&self, page: u32) -> u64 {
        self.pages_base + (u64::from(page) << PAGE_SHIFT)
    }

    /// The page holding `address`, if it is one of ours.
    pub(crate) fn page_of(&self, address: u64) -> Option<u32> {
        let page = address.checked_sub(self.pages_base)? >> PAGE_SHIFT;
        if page < u64::from(self.page_count) {
            Some(page as u32)
        } else {
            None
        }
    }

    /// Pages managed.
    pub(crate) fn page_count(&self) -> u32 {
        self.page_count
    }

    /// Pages handed out since the start (large runs and spans), wrapping:
    /// it grows with the memory this heap has put to use, which is what the
    /// TLB sizing in the scheduler watches.
    pub(crate) fn pages_taken(&self) -> u64 {
        self.taken
    }

    /// Pages in free runs.
    pub(crate) fn free_pages(&self) -> u32 {
        self.free_pages
    }

    /// Number of free runs (1 when everything is free).
    pub(crate) fn free_runs(&self) -> u32 {
        self.free_runs
    }

    /// Pages in the longest free run: walks one bucket, for reports only.
    pub(crate) fn longest_free_run(&self, memory: &impl WordMemory) -> u32 {
        if self.non_empty == 0 {
            return 0;
        }
        let bucket = (u32::BITS - 1 - self.non_empty.leading_zeros()) as usize;
        let mut longest = 0;
        let mut run = self.heads[bucket];
        let mut steps = 0;
        while run != NO_PAGE && steps < self.free_runs {
            if let PageWord::FreeRun { pages } = self.word(memory, run) {
                longest = longest.max(pages);
            }
            run = self.next_link(memory, run);
            steps += 1;
        }
        longest
    }

    /// The page-table word of `page` (`page < page_count`).
    pub(crate) fn word(&self, memory: &impl WordMemory, page: u32) -> PageWord {
        PageWord::decode(memory.load(self.table_base + 8 * u64::from(page)))
    }

    fn set_word(&self, memory: &mut impl WordMemory, page: u32, word: PageWord) {
        memory.store(self.table_base + 8 * u64::from(page), word.encode());
    }

    /// Takes `pages` pages whose first page's address is a multiple of
    /// `align` (a power of two; a page or less means any page), and writes
    /// their page-table words for `use_`. `None` if no free run can hold them.
    pub(crate) fn allocate(
        &mut self,
        memory: &mut impl WordMemory,
        pages: u32,
        align: u64,
        use_: RunUse,
    ) -> Option<u32> {
        if pages == 0 || pages > self.free_pages || !align.is_power_of_two() {
            return None;
        }
        let align = align.max(PAGE_SIZE);
        // Any run this long holds an aligned piece of `pages` pages, whatever
        // its start.
        let sure_fit = u64::from(pages) + (align >> PAGE_SHIFT) - 1;
        let sure_bucket = first_bucket_holding(sure_fit);
        // Fast path: the smallest bucket all of whose runs fit.
        if sure_bucket < BUCKETS {
            let candidates = self.non_empty & (u32::MAX << sure_bucket);
            if candidates != 0 {
                let run = self.heads[candidates.trailing_zeros() as usize];
                if let PageWord::FreeRun { pages: run_pages } = self.word(memory, run) {
                    if let Some(start) = self.fit(run, run_pages, pages, align) {
                        return Some(self.carve(memory, run, run_pages, start, pages, use_));
                    }
                }
            }
        }
        // Slow path, first fit: runs of at least `pages` pages may also sit in
        // the buckets below `sure_bucket`.
        for bucket in bucket_of(pages)..sure_bucket.min(BUCKETS) {
            let mut run = self.heads[bucket];
            let mut steps = 0;
            // `steps` bounds the walk even if a link were corrupted.
            while run != NO_PAGE && steps < self.free_runs {
                if let PageWord::FreeRun { pages: run_pages } = self.word(memory, run) {
                    if let Some(start) = self.fit(run, run_pages, pages, align) {
                        return Some(self.carve(memory, run, run_pages, start, pages, use_));
                    }
                }
                run = self.next_link(memory, run);
                steps += 1;
            }
        }
        None
    }

    /// Returns a used run to the free runs, merged with free neighbours.
    ///
    /// Precondition (checked by the heap): `first..first + pages` is exactly
    /// one used run.
    pub(crate) fn free(&mut self, memory: &mut impl WordMemory, first: u32, pages: u32) {
        let mut start = first;
        let mut end = first + pages;
        // The neighbours' tags are our own metadata; the bounds checks only
        // keep a tag overwritten by a stray write from sending a merge
        // outside the table.
        if let Some(before) = start.checked_sub(1) {
            if let PageWord::FreeRun { pages: left_pages } = self.word(memory, before) {
                if let Some(left) = start.checked_sub(left_pages) {
                    self.unlink(memory, left, left_pages);
                    start = left;
                }
            }
        }
        if end < self.page_count {
            if let PageWord::FreeRun { pages: right_pages } = self.word(memory, end) {
                if right_pages <= self.page_count - end {
                    self.unlink(memory, end, right_pages);
                    end += right_pages;
                }
            }
        }
        if start != first {
            // The run's first word said `LargeRun`: now inside a free run, it
            // must not let a second free of the same address through.
            self.set_word(memory, first, PageWord::Unused);
        }
        self.insert(memory, start, end - start);
    }

    /// The first page of a piece of `pages` pages aligned to `align` inside
    /// free run `run..run + run_pages`, as close to its start as possible.
    fn fit(&self, run: u32, run_pages: u32, pages: u32, align: u64) -> Option<u32> {
        let run_end = u64::from(run.checked_add(run_pages)?);
        let aligned_address = self.page_address(run).checked_next_multiple_of(align)?;
        let start = aligned_address.checked_sub(self.pages_base)? >> PAGE_SHIFT;
        if start.checked_add(u64::from(pages))? > run_end {
            return None;
        }
        Some(start as u32)
    }

    /// Cuts `start..start + pages` out of free run `run..run + run_pages`,
    /// puts the pieces left on either side back, and marks the cut.
    fn carve(
        &mut self,
        memory: &mut impl WordMemory,
        run: u32,
        run_pages: u32,
        start: u32,
        pages: u32,
        use_: RunUse,
    ) -> u32 {
        let left = start - run;
        let end = start + pages;
        let right = run + run_pages - end;
        self.taken = self.taken.wrapping_add(u64::from(pages));
        if left > 0 && bucket_of(left) == bucket_of(run_pages) {
            // Same first page, same bucket: the run stays where it is in its
            // list; only its tags change.
            self.set_free_tags(memory, run, left);
            self.free_pages -= run_pages - left;
        } else {
            self.unlink(memory, run, run_pages);
            if left > 0 {
                self.insert(memory, run, left);
            }
        }
        if right > 0 {
            self.insert(memory, end, right);
        }
        match use_ {
            RunUse::Large => {
                self.set_word(memory, start, PageWord::LargeRun { pages });
                for page in start + 1..end {
                    self.set_word(memory, page, PageWord::Unused);
                }
            }
            RunUse::Span { descriptor } => {
                for page in start..end {
                    self.set_word(memory, page, PageWord::Span { descriptor });
                }
            }
        }
        start
    }

    fn set_free_tags(&self, memory: &mut impl WordMemory, first: u32, pages: u32) {
        let tag = PageWord::FreeRun { pages };
        self.set_word(memory, first, tag);
        self.set_word(memory, first + pages - 1, tag);
    }

    // The list links: one word at the start of the run's first page.

    fn links(&self, memory: &impl WordMemory, run: u32) -> (u32, u32) {
        let word = memory.load(self.page_address(run));
        (word as u32, (word >> 32) as u32)
    }

    fn next_link(&self, memory: &impl WordMemory, run: u32) -> u32 {
        self.links(memory, run).0
    }

    fn set_links(&self, memory: &mut impl WordMemory, run: u32, next: u32, previous: u32) {
        memory.store(self.page_address(run), u64::from(next) | (u64::from(previous) << 32));
    }

    /// Adds free run `first..first + pages` to the front of its bucket.
    fn insert(&mut self, memory: &mut impl WordMemory, first: u32, pages: u32) {
        let bucket = bucket_of(pages);
        let next = self.heads[bucket];
        self.set_free_tags(memory, first, pages);
        self.set_links(memory, first, next, NO_PAGE);
        if next != NO_PAGE {
            let (after, _) = self.links(memory, next);
            self.set_links(memory, next, after, first);
        }
        self.heads[bucket] = first;
        self.non_empty |= 1 << bucket;
        self.free_pages += pages;
        self.free_runs += 1;
    }

    /// Takes free run `first..first + pages` out of its bucket.
    fn unlink(&mut self, memory: &mut impl WordMemory, first: u32, pages: u32) {
        let bucket = bucket_of(pages);
        let (next, previous) = self.links(memory, first);
        if previous == NO_PAGE {
            self.heads[bucket] = next;
        } else {
            let (_, before) = self.links(memory, previous);
            self.set_links(memory, previous, next, before);
        }
        if next != NO_PAGE {
            let (after, _) = self.links(memory, next);
            self.set_links(memory, next, after, previous);
        }
        if self.heads[bucket] == NO_PAGE {
            self.non_empty &= !(1 << bucket);
        }
        self.free_pages -= pages;
        self.free_runs -= 1;
    }

    /// Test support: every free run, by walking the lists; checks that each
    /// run's tags, bucket and back links agree.
    #[cfg(test)]
    pub(crate) fn free_run_list(&self, memory: &impl WordMemory) -> Vec<(u32, u32)> {
        let mut runs = Vec::new();
        for (bucket, head) in self.heads.iter().enumerate() {
            assert_eq!(*head != NO_PAGE, self.non_empty & (1 << bucket) != 0, "bitmap of bucket {bucket}");
            let mut previous = NO_PAGE;
            let mut run = *head;
            while run != NO_PAGE {
                let PageWord::FreeRun { pages } = self.word(memory, run) else {
                    panic!("run at page {run} in bucket {bucket} has no free tag");
                };
                assert_eq!(self.word(memory, run + pages - 1), PageWord::FreeRun { pages });
                assert_eq!(bucket_of(pages), bucket, "run at {run} of {pages} pages");
                let (next, back) = self.links(memory, run);
                assert_eq!(back, previous, "back link of run {run}");
                runs.push((run, pages));
                previous = run;
                run = next;
                assert!(runs.len() <= self.page_count as usize, "cycle in bucket {bucket}");
            }
        }
        runs.sort_unstable();
        assert_eq!(runs.len(), self.free_runs as usize);
        assert_eq!(runs.iter().map(|run| run.1).sum::<u32>(), self.free_pages);
        for pair in runs.windows(2) {
            assert!(pair[0].0 + pair[0].1 < pair[1].0, "free runs {pair:?} overlap or touch");
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::super::shadow::ShadowMemory;
    use super::*;

    const BASE: u64 = 0x40_0000;

    /// 64 pages of data after a one-page table.
    fn setup(pages: u32) -> (ShadowMemory, PageRuns) {
        let mut memory = ShadowMemory::new(BASE, (u64::from(pages) + 1) * PAGE_SIZE);
        let runs = PageRuns::new(&mut memory, BASE + PAGE_SIZE, BASE, pages);
        (memory, runs)
    }

    #[test]
    fn words_round_trip() {
        for word in [
            PageWord::Unused,
            PageWord::FreeRun { pages: 1 },
            PageWord::FreeRun { pages: u32::MAX },
            PageWord::LargeRun { pages: 77 },
            PageWord::Span { descriptor: 0 },
            PageWord::Span { descriptor: 123_456 },
        ] {
            assert_eq!(PageWord::decode(word.encode()), word);
        }
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(3), 1);
        assert_eq!(bucket_of(u32::MAX), 31);
        assert_eq!(first_bucket_holding(1), 0);
        assert_eq!(first_bucket_holding(3), 2);
        assert_eq!(first_bucket_holding(4), 2);
        assert_eq!(first_bucket_holding(5), 3);
    }

    #[test]
    fn cuts_from_the_start_and_merges_both_neighbours() {
        let (mut memory, mut runs) = setup(64);
        let a = runs.allocate(&mut memory, 4, 1, RunUse::Large).unwrap();
        let b = runs.allocate(&mut memory, 4, 1, RunUse::Large).unwrap();
        let c = runs.allocate(&mut memory, 4, 1, RunUse::Large).unwrap();
        assert_eq!((a, b, c), (0, 4, 8), "side by side from the run's start");
        assert_eq!(runs.free_run_list(&memory), vec![(12, 52)]);
        runs.free(&mut memory, a, 4);
        runs.free(&mut memory, c, 4);
        assert_eq!(runs.free_run_list(&memory), vec![(0, 4), (8, 56)]);
        // b has free runs on both sides: one run again.
        runs.free(&mut memory, b, 4);
        assert_eq!(runs.free_run_list(&memory), vec![(0, 64)]);
        // b merged into the run on its left: its first word must not say
        // `LargeRun` any more (a second free of b is refused). c's first
        // word is a stale `FreeRun` tag inside the run: refused too.
        assert_eq!(runs.word(&memory, 4), PageWord::Unused);
        assert_eq!(runs.word(&memory, 8), PageWord::FreeRun { pages: 56 });
        assert_eq!(runs.free_pages(), 64);
        // Freed memory is reused from the low end first.
        assert_eq!(runs.allocate(&mut memory, 2, 1, RunUse::Large), Some(0));
    }

    #[test]
    fn takes_every_page_and_gives_it_back() {
        let (mut memory, mut runs) = setup(64);
        let pages: Vec<u32> = (0..64).map(|_| runs.allocate(&mut memory, 1, 1, RunUse::Large).unwrap()).collect();
        assert_eq!(runs.allocate(&mut memory, 1, 1, RunUse::Large), None);
        assert_eq!(runs.free_runs(), 0);
        // Free every other page, then the rest: the second half merges both ways.
        for page in pages.iter().step_by(2) {
            runs.free(&mut memory, *page, 1);
        }
        assert_eq!(runs.free_runs(), 32);
        assert_eq!(runs.allocate(&mut memory, 2, 1, RunUse::Large), None, "no two free pages touch");
        for page in pages.iter().skip(1).step_by(2) {
            runs.free(&mut memory, *page, 1);
        }
        assert_eq!(runs.free_run_list(&memory), vec![(0, 64)]);
    }

    #[test]
    fn first_fit_finds_a_run_the_fast_path_skips() {
        let (mut memory, mut runs) = setup(64);
        // Leave free runs of 5 pages at 0 and at 8: a 5-page request is in
        // bucket 2 with them, below the sure-fit bucket 3.
        let first = runs.allocate(&mut memory, 5, 1, RunUse::Large).unwrap();
        let three = runs.allocate(&mut memory, 3, 1, RunUse::Large).unwrap();
        let second = runs.allocate(&mut memory, 5, 1, RunUse::Large).unwrap();
        let keep = runs.allocate(&mut memory, 51, 1, RunUse::Large).unwrap();
        assert_eq!((first, three, second, keep), (0, 5, 8, 13));
        runs.free(&mut memory, first, 5);
        runs.free(&mut memory, second, 5);
        assert_eq!(runs.free_run_list(&memory), vec![(0, 5), (8, 5)]);
        assert_eq!(runs.allocate(&mut memory, 5, 1, RunUse::Large), Some(8));
        assert_eq!(runs.allocate(&mut memory, 5, 1, RunUse::Large), Some(0));
        assert_eq!(runs.allocate(&mut memory, 1, 1, RunUse::Large), None);
        assert_eq!(runs.longest_free_run(&memory), 0);
    }

    #[test]
    fn aligned_runs_start_on_the_alignment_and_leave_both_sides_free() {
        let (mut memory, mut runs) = setup(64);
        let align = 8 * PAGE_SIZE;
        let first = runs.allocate(&mut memory, 3, align, RunUse::Large).unwrap();
        assert_eq!(runs.page_address(first) % align, 0);
        let second = runs.allocate(&mut memory, 1, align, RunUse::Large).unwrap();
        assert_eq!(runs.page_address(second) % align, 0);
        assert_ne!(first, second);
        let list = runs.free_run_list(&memory);
        assert_eq!(list.iter().map(|run| run.1).sum::<u32>(), 60);
        runs.free(&mut memory, first, 3);
        runs.free(&mut memory, second, 1);
        assert_eq!(runs.free_run_list(&memory), vec![(0, 64)]);
        // Alignment bigger than the whole area: fails cleanly unless page 0 is aligned.
        let huge = 1 << 40;
        assert_eq!(runs.allocate(&mut memory, 1, huge, RunUse::Large), None);
        assert_eq!(runs.allocate(&mut memory, 1, 3 * PAGE_SIZE, RunUse::Large), None, "not a power of two");
        assert_eq!(runs.allocate(&mut memory, 0, 1, RunUse::Large), None);
        assert_eq!(runs.allocate(&mut memory, 65, 1, RunUse::Large), None);
    }

    #[test]
    fn spans_mark_every_page() {
        let (mut memory, mut runs) = setup(64);
        let first = runs.allocate(&mut memory, 16, 1, RunUse::Span { descriptor: 7 }).unwrap();
        for page in first..first + 16 {
            assert_eq!(runs.word(&memory, page), PageWord::Span { descriptor: 7 });
        }
        assert_eq!(runs.page_of(runs.page_address(first) + 4095), Some(first));
        assert_eq!(runs.page_of(BASE), None);
        assert_eq!(runs.page_of(runs.page_address(63) + PAGE_SIZE), None);
        assert_eq!(runs.longest_free_run(&memory), 48);
    }
}
