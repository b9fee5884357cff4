//! Test support: a fake region of word memory that watches the allocator.
//!
//! Besides holding the words, [`ShadowMemory`] knows which blocks are handed
//! out ("live") and fails the test if the allocator reads or writes a word
//! inside one, or if two live blocks overlap. Live blocks are filled with a
//! pattern derived from each word's address, checked when they are freed,
//! so a write that slipped past the access check (or a block handed out
//! twice) shows up too.

use std::collections::BTreeMap;

use super::WordMemory;

#[derive(Debug, Clone)]
pub(crate) struct ShadowMemory {
    base: u64,
    words: Vec<u64>,
    /// Live blocks: first byte → one past the last byte.
    live: BTreeMap<u64, u64>,
}

impl ShadowMemory {
    pub(crate) fn new(base: u64, length: u64) -> Self {
        assert_eq!(base % 8, 0);
        Self {
            base,
            // Not zero: the allocator must not rely on memory it never wrote.
            words: vec![0xDEAD_BEEF_DEAD_BEEF; usize::try_from(length / 8).unwrap()],
            live: BTreeMap::new(),
        }
    }

    fn index(&self, address: u64) -> usize {
        assert_eq!(address % 8, 0, "unaligned word access at {address:#x}");
        let index = address.checked_sub(self.base).map(|offset| offset / 8);
        match index.and_then(|index| usize::try_from(index).ok()) {
            Some(index) if index < self.words.len() => index,
            _ => panic!("access at {address:#x} outside the region"),
        }
    }

    /// The live block holding `address`, if any.
    fn live_block_at(&self, address: u64) -> Option<(u64, u64)> {
        let (start, end) = self.live.range(..=address).next_back()?;
        (address < *end).then_some((*start, *end))
    }

    fn pattern(address: u64) -> u64 {
        address.rotate_left(17) ^ 0x5A5A_0F0F_C3C3_9696
    }

    /// Records a block just handed out and fills it with the pattern.
    pub(crate) fn mark_live(&mut self, address: u64, size: u64) {
        let end = address + size.max(1);
        if let Some((start, other_end)) = self.live.range(..end).next_back() {
            assert!(*other_end <= address, "block {address:#x}+{size} overlaps live block {start:#x}..{other_end:#x}");
        }
        self.live.insert(address, end);
        let mut word = address & !7;
        while word < end {
            let index = self.index(word);
            self.words[index] = Self::pattern(word);
            word += 8;
        }
    }

    /// Checks the pattern of a block about to be freed and forgets it.
    pub(crate) fn mark_free(&mut self, address: u64) {
        let end = self.live.remove(&address).expect("freeing a block that is not live");
        let mut word = address & !7;
        while word < end {
            assert_eq!(
                self.words[self.index(word)],
                Self::pattern(word),
                "live data of block {address:#x} changed at {word:#x}"
            );
            word += 8;
        }
    }

    pub(crate) fn live_count(&self) -> usize {
        self.live.len()
    }
}

impl WordMemory for ShadowMemory {
    fn load(&self, address: u64) -> u64 {
        if let Some((start, end)) = self.live_block_at(address) {
            panic!("allocator read {address:#x} inside live block {start:#x}..{end:#x}");
        }
        self.words[self.index(address)]
    }

    fn store(&mut self, address: u64, value: u64) {
        if let Some((start, end)) = self.live_block_at(address) {
            panic!("allocator wrote {address:#x} inside live block {start:#x}..{end:#x}");
        }
        let index = self.index(address);
        self.words[index] = value;
    }
}
