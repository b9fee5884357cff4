//! Size classes for small blocks: which block size serves a request, and how big its span is.
//!
//! # The table
//!
//! - 16 to 128 bytes in steps of 16 (8 classes): every block is 16-aligned,
//!   which is what `x86_64` code expects of `malloc`, and tiny objects waste
//!   at most 15 bytes.
//! - Above 128 bytes, four classes per power of two (`2^k + j·2^(k-2)`,
//!   `j = 1..=4`): 160, 192, 224, 256, 320, ... 14336, 16384 (28 classes).
//!   The round-up is at most a quarter of the band's base, so internal
//!   fragmentation stays under 20% (mimalloc and snmalloc make the same
//!   choice: finer bands cost more partially filled spans for little gain).
//!
//! 36 classes in all. The largest, [`MAX_SMALL_SIZE`] = 16 KiB, is where
//! page runs do as well: past 16 KiB, rounding up to whole 4 KiB pages
//! wastes at most 4 KiB in 20 KiB (the same 20% bound), with no span kept
//! half-full for a few big blocks, so larger requests go to page runs.
//!
//! # Lookup in O(1), no table in memory
//!
//! Up to 128 bytes the class is `(size - 1) / 16`. Above, the highest set
//! bit of `size - 1` names the band and the next two bits the class inside
//! it: two shifts and a leading-zero count.
//!
//! # Alignment
//!
//! A span starts on a page boundary and holds blocks back to back, so every
//! block of a class is aligned to the largest power of two dividing its size
//! (at most 4096). A request aligned to more than that moves up to the first
//! class at least as big whose size is a multiple of the alignment (a
//! precomputed 36 × 13 table); past 4096 bytes of alignment it goes to page
//! runs, which align to any power of two.
//!
//! # Spans
//!
//! Each class's span is between 16 and 32 pages (64-128 KiB), picked to
//! waste the smallest fraction at the tail: 14336-byte blocks get 28 pages
//! (8 blocks, nothing left over) where 16 pages would leave 8 KiB unused.

/// Bytes in a page: the unit of page runs and spans.
pub const PAGE_SIZE: u64 = 4096;

/// The largest request served from a size class; larger ones get page runs.
pub const MAX_SMALL_SIZE: usize = 16 * 1024;

/// The number of size classes.
pub const CLASS_COUNT: usize = LINEAR_CLASSES + BANDS * CLASSES_PER_BAND;

/// The largest alignment a small block can have (a span starts on a page boundary).
pub const MAX_SMALL_ALIGN: usize = PAGE_SIZE as usize;

/// The fewest pages in a span (the kernel sizes descriptor tables with it).
pub const MIN_SPAN_PAGES: u32 = 16;

/// The most pages in a span.
pub const MAX_SPAN_PAGES: u32 = 32;

/// Every block size is a multiple of this, and every block is aligned to it.
const GRANULE: usize = 16;
/// Classes 16, 32, ..., 128.
const LINEAR_CLASSES: usize = 8;
/// `log2` of the largest linear class (128).
const LINEAR_LIMIT_LOG2: u32 = 7;
/// Classes in each power-of-two band above 128 bytes.
const CLASSES_PER_BAND: usize = 4;
/// Bands `[2^7, 2^8)` up to `[2^13, 2^14]`.
const BANDS: usize = 7;
/// Alignments 1, 2, 4, ... 4096 (`log2` 0 to 12) have an entry in the aligned-class table.
const ALIGN_STEPS: usize = 13;

/// One size class: an index into the class table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SizeClass(u8);

/// What the allocator needs to know about a class, computed at compile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClassInfo {
    /// Bytes in each block.
    block_size: u32,
    /// Pages in each span of this class.
    span_pages: u32,
    /// Blocks in each span (`span_pages * PAGE_SIZE / block_size`).
    blocks_per_span: u32,
    /// `ceil(2^64 / block_size)`: `offset` is a multiple of `block_size`
    /// exactly when `offset * magic mod 2^64 < magic`, for any 32-bit offset
    /// (Lemire, Kaser and Kurz, "Faster remainder by direct computation",
    /// 2019). Checks a freed address without a division.
    divisibility_magic: u64,
}

/// The block size of class `index`, in `const` context.
const fn block_size_of(index: usize) -> usize {
    if index < LINEAR_CLASSES {
        (index + 1) * GRANULE
    } else {
        let band = (index - LINEAR_CLASSES) / CLASSES_PER_BAND;
        let step_in_band = (index - LINEAR_CLASSES) % CLASSES_PER_BAND + 1;
        let band_base = 1_usize << (LINEAR_LIMIT_LOG2 as usize + band);
        band_base + step_in_band * (band_base / CLASSES_PER_BAND)
    }
}

/// The span length (pages) wasting the smallest fraction for `block_size`.
const fn best_span_pages(block_size: usize) -> u32 {
    let mut best_pages = MIN_SPAN_PAGES;
    let mut best_waste = (MIN_SPAN_PAGES as usize * PAGE_SIZE as usize) % block_size;
    let mut pages = MIN_SPAN_PAGES + 1;
    while pages <= MAX_SPAN_PAGES {
        let waste = (pages as usize * PAGE_SIZE as usize) % block_size;
        // waste / pages < best_waste / best_pages, without division.
        if waste * (best_pages as usize) < best_waste * (pages as usize) {
            best_pages = pages;
            best_waste = waste;
        }
        pages += 1;
    }
    best_pages
}

const fn build_classes() -> [ClassInfo; CLASS_COUNT] {
    let mut table =
        [ClassInfo { block_size: 0, span_pages: 0, blocks_per_span: 0, divisibility_magic: 0 }; CLASS_COUNT];
    let mut index = 0;
    while index < CLASS_COUNT {
        let block_size = block_size_of(index);
        let span_pages = best_span_pages(block_size);
        table[index] = ClassInfo {
            block_size: block_size as u32,
            span_pages,
            blocks_per_span: (span_pages as usize * PAGE_SIZE as usize / block_size) as u32,
            divisibility_magic: u64::MAX / block_size as u64 + 1,
        };
        index += 1;
    }
    table
}

/// The class table (36 entries, built at compile time).
const CLASSES: [ClassInfo; CLASS_COUNT] = build_classes();

/// `ALIGNED[class][log2(align)]`: the first class at or above `class` whose
/// blocks are all aligned to `align` (its size is a multiple of `align`).
/// Every entry exists: the 4096-byte class is aligned to anything up to 4096.
const ALIGNED: [[u8; ALIGN_STEPS]; CLASS_COUNT] = build_aligned();

const fn build_aligned() -> [[u8; ALIGN_STEPS]; CLASS_COUNT] {
    let mut table = [[0_u8; ALIGN_STEPS]; CLASS_COUNT];
    let mut class = 0;
    while class < CLASS_COUNT {
        let mut align_log2 = 0;
        while align_log2 < ALIGN_STEPS {
            let mut candidate = class;
            while candidate < CLASS_COUNT && !block_size_of(candidate).is_multiple_of(1 << align_log2) {
                candidate += 1;
            }
            // The class of 4096 bytes is a multiple of every alignment up to
            // 4096 and sits above every class smaller than it; the build
            // fails here if a table change breaks that.
            assert!(candidate < CLASS_COUNT, "some class must satisfy each small alignment");
            table[class][align_log2] = candidate as u8;
            align_log2 += 1;
        }
        class += 1;
    }
    table
}

// Checks on the table, at compile time.
const _: () = {
    assert!(block_size_of(CLASS_COUNT - 1) == MAX_SMALL_SIZE);
    assert!(CLASS_COUNT <= u8::MAX as usize);
    let mut index = 1;
    while index < CLASS_COUNT {
        assert!(block_size_of(index) > block_size_of(index - 1));
        assert!(block_size_of(index).is_multiple_of(GRANULE));
        index += 1;
    }
};

impl SizeClass {
    /// The class for a request of `size` bytes with no alignment beyond 16,
    /// or `None` above [`MAX_SMALL_SIZE`]. A size of 0 gets the smallest class.
    #[inline]
    pub const fn of_size(size: usize) -> Option<Self> {
        if size <= GRANULE * LINEAR_CLASSES {
            // (size - 1) / 16, with 0 treated as 1.
            return Some(Self((size.saturating_sub(1) / GRANULE) as u8));
        }
        if size > MAX_SMALL_SIZE {
            return None;
        }
        let rounded_down = size - 1;
        // 2^band_log2 <= size - 1 < 2^(band_log2 + 1), band_log2 >= 7.
        let band_log2 = usize::BITS - 1 - rounded_down.leading_zeros();
        let step_in_band = (rounded_down >> (band_log2 - 2)) & (CLASSES_PER_BAND - 1);
        let band = (band_log2 - LINEAR_LIMIT_LOG2) as usize;
        Some(Self((LINEAR_CLASSES + band * CLASSES_PER_BAND + step_in_band) as u8))
    }

    /// The class for `size` bytes aligned to `align`, or `None` if the
    /// request belongs to page runs (too big, aligned beyond a page) or
    /// `align` is not a power of two.
    #[inline]
    pub const fn of_layout(size: usize, align: usize) -> Option<Self> {
        if !align.is_power_of_two() || align > MAX_SMALL_ALIGN {
            return None;
        }
        let Some(class) = Self::of_size(size) else {
            return None;
        };
        if align <= GRANULE {
            return Some(class);
        }
        Some(Self(ALIGNED[class.0 as usize][align.trailing_zeros() as usize]))
    }

    /// The class with this index, if it exists.
    pub const fn from_index(index: usize) -> Option<Self> {
        if index < CLASS_COUNT {
            Some(Self(index as u8))
        } else {
            None
        }
    }

    /// This class's index, `0..CLASS_COUNT`.
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// Bytes in each block of this class.
    #[inline]
    pub const fn block_size(self) -> u64 {
        CLASSES[self.0 as usize].block_size as u64
    }

    /// Pages in each span of this class.
    pub const fn span_pages(self) -> u32 {
        CLASSES[self.0 as usize].span_pages
    }

    /// Blocks in each span of this class.
    pub const fn blocks_per_span(self) -> u32 {
        CLASSES[self.0 as usize].blocks_per_span
    }

    /// The largest power of two every block of this class is aligned to.
    pub const fn alignment(self) -> u64 {
        let natural = 1_u64 << self.block_size().trailing_zeros();
        if natural < PAGE_SIZE {
            natural
        } else {
            PAGE_SIZE
        }
    }

    /// Whether `offset` (bytes from the start of a span) is the start of a block.
    ///
    /// Exact for offsets below 2^32; span offsets are below 2^17.
    pub const fn is_block_start(self, offset: u64) -> bool {
        let magic = CLASSES[self.0 as usize].divisibility_magic;
        offset < (1 << 32) && offset.wrapping_mul(magic) < magic
    }

    /// Every class, smallest first.
    pub fn all() -> impl Iterator<Item = Self> {
        (0..CLASS_COUNT as u8).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_what_the_docs_say() {
        let sizes: Vec<u64> = SizeClass::all().map(SizeClass::block_size).collect();
        assert_eq!(sizes.len(), 36);
        assert_eq!(&sizes[..8], &[16, 32, 48, 64, 80, 96, 112, 128]);
        assert_eq!(&sizes[8..16], &[160, 192, 224, 256, 320, 384, 448, 512]);
        assert_eq!(sizes[35], 16384);
        assert_eq!(SizeClass::of_size(MAX_SMALL_SIZE + 1), None);
        assert_eq!(SizeClass::from_index(CLASS_COUNT), None);
    }

    #[test]
    fn every_size_gets_the_smallest_class_that_holds_it() {
        let mut previous = SizeClass::of_size(0).unwrap();
        assert_eq!(previous.block_size(), 16);
        let mut worst = (0.0_f64, 0);
        for size in 1..=MAX_SMALL_SIZE {
            let class = SizeClass::of_size(size).unwrap();
            assert!(class.block_size() >= size as u64, "size {size} got {class:?}");
            if let Some(smaller) = class.index().checked_sub(1) {
                let smaller = SizeClass::from_index(smaller).unwrap();
                assert!(smaller.block_size() < size as u64, "size {size} could use a smaller class");
            }
            assert!(class >= previous, "monotone at {size}");
            previous = class;
            if size > 128 {
                let waste = (class.block_size() - size as u64) as f64 / class.block_size() as f64;
                if waste > worst.0 {
                    worst = (waste, size);
                }
            }
        }
        println!(
            "worst internal fragmentation above 128 B: {:.1}% (size {} in a {}-byte block)",
            worst.0 * 100.0,
            worst.1,
            SizeClass::of_size(worst.1).unwrap().block_size()
        );
        assert!(worst.0 < 0.20);
    }

    #[test]
    fn aligned_requests_get_aligned_blocks() {
        for size in (1..=MAX_SMALL_SIZE).step_by(7).chain([1, 64, 4096, MAX_SMALL_SIZE]) {
            for align_log2 in 0..=12 {
                let align = 1_usize << align_log2;
                let class = SizeClass::of_layout(size, align).unwrap();
                assert!(class.block_size() >= size as u64);
                assert_eq!(class.block_size() % align as u64, 0, "size {size} align {align}");
                assert!(class.alignment() >= align as u64);
                // No smaller class would do.
                for smaller in SizeClass::all().take_while(|other| *other < class) {
                    assert!(smaller.block_size() < size as u64 || smaller.block_size() % align as u64 != 0);
                }
            }
        }
        assert_eq!(SizeClass::of_layout(16, 8192), None, "beyond a page: page runs");
        assert_eq!(SizeClass::of_layout(16, 3), None, "not a power of two");
        assert_eq!(SizeClass::of_layout(16, 0), None, "not a power of two");
    }

    #[test]
    fn spans_hold_whole_blocks_with_little_waste() {
        println!("class  block  pages  blocks  tail waste");
        for class in SizeClass::all() {
            let span_bytes = u64::from(class.span_pages()) * PAGE_SIZE;
            let used = u64::from(class.blocks_per_span()) * class.block_size();
            assert!((MIN_SPAN_PAGES..=MAX_SPAN_PAGES).contains(&class.span_pages()));
            assert!(used <= span_bytes && span_bytes - used < class.block_size());
            assert!(class.blocks_per_span() >= 4);
            let waste = (span_bytes - used) as f64 / span_bytes as f64;
            assert!(waste < 0.07, "{class:?} wastes {waste}");
            println!(
                "{:>5}  {:>5}  {:>5}  {:>6}  {:>5.2}%",
                class.index(),
                class.block_size(),
                class.span_pages(),
                class.blocks_per_span(),
                waste * 100.0
            );
        }
    }

    #[test]
    fn block_starts_are_recognised_without_division() {
        for class in SizeClass::all() {
            let span_bytes = u64::from(MAX_SPAN_PAGES) * PAGE_SIZE;
            for offset in 0..span_bytes + 100 {
                assert_eq!(class.is_block_start(offset), offset % class.block_size() == 0);
            }
            assert!(!class.is_block_start(1 << 32));
        }
    }
}
