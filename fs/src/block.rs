//! The block-device seam and the write-back block cache above it.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use toro_io::{Error, ErrorKind, Result};

/// A disk of fixed-size sectors: what a filesystem needs from a driver.
///
/// `read` and `write` move whole sectors, starting at `sector`, as many as
/// `buf.len() / sector_size()` (the buffer is a multiple of the sector
/// size; a driver may split the transfer into several requests in flight).
pub trait BlockDevice {
    /// The sector size in bytes (a power of two, usually 512).
    fn sector_size(&self) -> usize;
    /// The number of sectors.
    fn sector_count(&self) -> u64;
    /// Whether writes are refused (a read-only image or device).
    fn read_only(&self) -> bool;
    /// Reads sectors `sector..` into `buf`.
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<()>;
    /// Writes `buf` to sectors `sector..`; [`ErrorKind::ReadOnlyFilesystem`]
    /// on a read-only device.
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<()>;
    /// Makes every completed write durable (a cache flush on the device).
    fn flush(&mut self) -> Result<()>;
}

impl<D: BlockDevice + ?Sized> BlockDevice for Box<D> {
    fn sector_size(&self) -> usize {
        (**self).sector_size()
    }
    fn sector_count(&self) -> u64 {
        (**self).sector_count()
    }
    fn read_only(&self) -> bool {
        (**self).read_only()
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<()> {
        (**self).read(sector, buf)
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<()> {
        (**self).write(sector, buf)
    }
    fn flush(&mut self) -> Result<()> {
        (**self).flush()
    }
}

/// The error of a transfer outside the device.
pub const OUT_OF_RANGE: Error = Error::from_static(ErrorKind::InvalidInput, "block device access past its end");
/// The error of a write to a read-only device.
pub const READ_ONLY: Error = Error::from_static(ErrorKind::ReadOnlyFilesystem, "the block device is read-only");

/// Checks that `len` bytes at `sector` are whole sectors inside a device.
pub fn check_range(sector: u64, len: usize, sector_size: usize, sector_count: u64) -> Result<()> {
    if sector_size == 0 || !len.is_multiple_of(sector_size) {
        return Err(Error::from_static(ErrorKind::InvalidInput, "transfer is not a whole number of sectors"));
    }
    let sectors = (len / sector_size) as u64;
    match sector.checked_add(sectors) {
        Some(end) if end <= sector_count => Ok(()),
        _ => Err(OUT_OF_RANGE),
    }
}

/// A disk in memory: a RAM disk in the kernel, an image in host tests.
#[derive(Clone, Debug)]
pub struct MemoryDevice {
    data: Vec<u8>,
    sector_size: usize,
    read_only: bool,
}

/// The sector size of [`MemoryDevice`] (and of virtio-blk's requests).
pub const SECTOR_SIZE: usize = 512;

impl MemoryDevice {
    /// A device holding `data` (its length rounded down to whole sectors).
    pub fn new(mut data: Vec<u8>) -> MemoryDevice {
        data.truncate(data.len() / SECTOR_SIZE * SECTOR_SIZE);
        MemoryDevice { data, sector_size: SECTOR_SIZE, read_only: false }
    }

    /// A device holding `data` in sectors of `sector_size` bytes (a power
    /// of two of at least 512: a disk with 4 KiB logical blocks), its
    /// length rounded down to whole sectors.
    pub fn with_sector_size(mut data: Vec<u8>, sector_size: usize) -> MemoryDevice {
        assert!(sector_size >= SECTOR_SIZE && sector_size.is_power_of_two(), "sector size {sector_size}");
        data.truncate(data.len() / sector_size * sector_size);
        MemoryDevice { data, sector_size, read_only: false }
    }

    /// The same device, refusing writes.
    pub fn into_read_only(mut self) -> MemoryDevice {
        self.read_only = true;
        self
    }

    /// The contents.
    pub fn into_inner(self) -> Vec<u8> {
        self.data
    }

    /// The contents, borrowed.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The contents, mutably (for tests that corrupt an image).
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

impl BlockDevice for MemoryDevice {
    fn sector_size(&self) -> usize {
        self.sector_size
    }

    fn sector_count(&self) -> u64 {
        (self.data.len() / self.sector_size) as u64
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<()> {
        check_range(sector, buf.len(), self.sector_size, self.sector_count())?;
        let start = sector as usize * self.sector_size;
        buf.copy_from_slice(&self.data[start..start + buf.len()]);
        Ok(())
    }

    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<()> {
        if self.read_only {
            return Err(READ_ONLY);
        }
        check_range(sector, buf.len(), self.sector_size, self.sector_count())?;
        let start = sector as usize * self.sector_size;
        self.data[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

struct Entry {
    data: Box<[u8]>,
    dirty: bool,
    last_use: u64,
}

/// A write-back cache of `block_size`-byte blocks over a [`BlockDevice`].
///
/// Reads fill it; writes stay in it (dirty) until [`BlockCache::flush`], or
/// until the block is evicted to make room (least recently used first).
/// `flush` writes the dirty blocks in ascending order, then flushes the
/// device, so after it returns everything written is durable.
///
/// Dirty blocks reach the device in runs: `flush`, and the eviction of a
/// dirty block, write each run of consecutive dirty blocks (up to
/// [`WRITE_RUN_BYTES`]) in one transfer, leaving them cached and clean.
/// (One 4 KiB request per block made a 32 MiB file write about 4x slower
/// than the raw disk under emulation: every request is a round trip.)
pub struct BlockCache<D> {
    device: D,
    block_size: usize,
    capacity: usize,
    entries: BTreeMap<u64, Entry>,
    /// `last_use` -> block, for every entry: the least recently used is
    /// the first (each use takes a new clock value, so keys are unique).
    by_use: BTreeMap<u64, u64>,
    clock: u64,
    /// Transfers to and from the device, for tests and statistics.
    pub device_reads: u64,
    /// Blocks written to the device.
    pub device_writes: u64,
}

/// How many blocks a [`BlockCache`] keeps by default (4 MiB of 4 KiB blocks).
pub const DEFAULT_CACHE_BLOCKS: usize = 1024;
/// The most one write-back transfer carries.
pub const WRITE_RUN_BYTES: usize = 1 << 20;

impl<D: BlockDevice> BlockCache<D> {
    /// A cache of at most `capacity` blocks (at least 8) of `block_size`
    /// bytes (a multiple of the device's sector size).
    pub fn new(device: D, block_size: usize, capacity: usize) -> Result<BlockCache<D>> {
        let sector = device.sector_size();
        if sector == 0 || block_size == 0 || !block_size.is_multiple_of(sector) {
            return Err(Error::from_static(
                ErrorKind::InvalidInput,
                "block size is not a multiple of the device's sector size",
            ));
        }
        Ok(BlockCache {
            device,
            block_size,
            capacity: capacity.max(8),
            entries: BTreeMap::new(),
            by_use: BTreeMap::new(),
            clock: 0,
            device_reads: 0,
            device_writes: 0,
        })
    }

    /// The block size.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The number of whole blocks on the device.
    pub fn block_count(&self) -> u64 {
        self.device.sector_count() / (self.block_size / self.device.sector_size()) as u64
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// Whether the device refuses writes.
    pub fn read_only(&self) -> bool {
        self.device.read_only()
    }

    fn sector_of(&self, block: u64) -> Result<u64> {
        block.checked_mul((self.block_size / self.device.sector_size()) as u64).ok_or(OUT_OF_RANGE)
    }

    fn make_room(&mut self) -> Result<()> {
        while self.entries.len() >= self.capacity {
            let Some((_, &victim)) = self.by_use.first_key_value() else { break };
            if self.entries[&victim].dirty {
                self.write_back_run(victim)?;
            }
            let entry = self.entries.remove(&victim).expect("every indexed block is cached");
            self.by_use.remove(&entry.last_use);
        }
        Ok(())
    }

    /// Writes the run of consecutive dirty blocks that holds `block` (at
    /// most [`WRITE_RUN_BYTES`], starting at or before `block`) in one
    /// transfer; they stay cached, clean. On failure nothing is marked.
    fn write_back_run(&mut self, block: u64) -> Result<()> {
        let limit = (WRITE_RUN_BYTES / self.block_size).max(1) as u64;
        let dirty = |cache: &Self, b: u64| cache.entries.get(&b).is_some_and(|e| e.dirty);
        let mut first = block;
        while first > 0 && block - first + 1 < limit && dirty(self, first - 1) {
            first -= 1;
        }
        let mut end = block + 1;
        while end - first < limit && dirty(self, end) {
            end += 1;
        }
        self.write_blocks(first, end)
    }

    /// Writes the dirty blocks `first..end` (all cached, all dirty) in one
    /// transfer and marks them clean.
    fn write_blocks(&mut self, first: u64, end: u64) -> Result<()> {
        let sector = self.sector_of(first)?;
        if end - first == 1 {
            self.device.write(sector, &self.entries[&first].data)?;
        } else {
            let mut run = Vec::with_capacity((end - first) as usize * self.block_size);
            for (_, entry) in self.entries.range(first..end) {
                run.extend_from_slice(&entry.data);
            }
            self.device.write(sector, &run)?;
        }
        for (_, entry) in self.entries.range_mut(first..end) {
            entry.dirty = false;
        }
        self.device_writes += end - first;
        Ok(())
    }

    /// The block's entry, read from the device if not cached.
    fn entry(&mut self, block: u64, fill: bool) -> Result<&mut Entry> {
        self.clock += 1;
        let clock = self.clock;
        if !self.entries.contains_key(&block) {
            if block >= self.block_count() {
                return Err(OUT_OF_RANGE);
            }
            self.make_room()?;
            let mut data = vec![0u8; self.block_size].into_boxed_slice();
            if fill {
                let sector = self.sector_of(block)?;
                self.device.read(sector, &mut data)?;
                self.device_reads += 1;
            }
            self.entries.insert(block, Entry { data, dirty: false, last_use: clock });
            self.by_use.insert(clock, block);
        }
        let entry = self.entries.get_mut(&block).expect("entry was just ensured");
        if entry.last_use != clock {
            self.by_use.remove(&entry.last_use);
            self.by_use.insert(clock, block);
            entry.last_use = clock;
        }
        Ok(entry)
    }

    /// Reads block `block` (through the cache).
    pub fn read(&mut self, block: u64) -> Result<&[u8]> {
        Ok(&self.entry(block, true)?.data)
    }

    /// Reads the consecutive blocks `first..` into `buf` (whole blocks):
    /// cached ones (dirty included) from the cache, each run of uncached
    /// ones straight from the device in one transfer, without filling the
    /// cache (a large sequential read neither evicts the metadata nor
    /// costs a copy).
    pub fn read_run(&mut self, first: u64, buf: &mut [u8]) -> Result<()> {
        let bs = self.block_size;
        if !buf.len().is_multiple_of(bs) {
            return Err(Error::from_static(ErrorKind::InvalidInput, "read_run needs whole blocks"));
        }
        let count = (buf.len() / bs) as u64;
        if first.checked_add(count).is_none_or(|end| end > self.block_count()) {
            return Err(OUT_OF_RANGE);
        }
        let mut i = 0u64;
        while i < count {
            if let Some(entry) = self.entries.get(&(first + i)) {
                buf[i as usize * bs..(i as usize + 1) * bs].copy_from_slice(&entry.data);
                i += 1;
                continue;
            }
            let start = i;
            while i < count && !self.entries.contains_key(&(first + i)) {
                i += 1;
            }
            let sector = self.sector_of(first + start)?;
            self.device.read(sector, &mut buf[start as usize * bs..i as usize * bs])?;
            self.device_reads += 1;
        }
        Ok(())
    }

    /// The block for modification: read if needed, marked dirty.
    pub fn modify(&mut self, block: u64) -> Result<&mut [u8]> {
        if self.device.read_only() {
            return Err(READ_ONLY);
        }
        let entry = self.entry(block, true)?;
        entry.dirty = true;
        Ok(&mut entry.data)
    }

    /// The block for overwriting in full: not read from the device, zeroed
    /// if not cached, marked dirty.
    pub fn overwrite(&mut self, block: u64) -> Result<&mut [u8]> {
        if self.device.read_only() {
            return Err(READ_ONLY);
        }
        let entry = self.entry(block, false)?;
        entry.dirty = true;
        Ok(&mut entry.data)
    }

    /// Writes the consecutive blocks `first..` from `data` (whole blocks)
    /// straight to the device in one transfer, as `O_DIRECT` does: no copy
    /// into the cache, nothing left dirty. Cached copies of those blocks
    /// (clean or dirty) are superseded and dropped once the write is done;
    /// if it fails they stay as they were.
    pub fn write_run(&mut self, first: u64, data: &[u8]) -> Result<()> {
        if self.device.read_only() {
            return Err(READ_ONLY);
        }
        let bs = self.block_size;
        if !data.len().is_multiple_of(bs) {
            return Err(Error::from_static(ErrorKind::InvalidInput, "write_run needs whole blocks"));
        }
        let count = (data.len() / bs) as u64;
        let end = first.checked_add(count).filter(|&end| end <= self.block_count()).ok_or(OUT_OF_RANGE)?;
        if count == 0 {
            return Ok(());
        }
        self.device.write(self.sector_of(first)?, data)?;
        self.device_writes += count;
        let stale: Vec<u64> = self.entries.range(first..end).map(|(&block, _)| block).collect();
        for block in stale {
            self.forget(block);
        }
        Ok(())
    }

    /// Drops a cached block without writing it (it was freed).
    pub fn forget(&mut self, block: u64) {
        if let Some(entry) = self.entries.remove(&block) {
            self.by_use.remove(&entry.last_use);
        }
    }

    /// How many cached blocks are dirty.
    pub fn dirty_count(&self) -> usize {
        self.entries.values().filter(|e| e.dirty).count()
    }

    /// Writes every dirty block, in ascending order, then flushes the device.
    pub fn flush(&mut self) -> Result<()> {
        let limit = (WRITE_RUN_BYTES / self.block_size).max(1) as u64;
        let mut next = 0;
        while let Some(first) = self.entries.range(next..).find(|(_, e)| e.dirty).map(|(&b, _)| b) {
            let mut end = first + 1;
            while end - first < limit && self.entries.get(&end).is_some_and(|e| e.dirty) {
                end += 1;
            }
            self.write_blocks(first, end)?;
            next = end;
        }
        self.device.flush()
    }

    /// Flushes and returns the device.
    pub fn into_device(mut self) -> Result<D> {
        self.flush()?;
        Ok(self.device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_run_goes_straight_out_and_supersedes_cached_copies() {
        let device = MemoryDevice::new(vec![0u8; 64 * 1024]);
        let mut cache = BlockCache::new(device, 1024, 8).unwrap();
        cache.modify(4).unwrap().fill(0x11); // dirty, older than the run
        cache.read(5).unwrap(); // clean copy
        cache.write_run(3, &[0x22; 3 * 1024]).unwrap();
        assert!(cache.device().data()[3 * 1024..6 * 1024].iter().all(|&b| b == 0x22), "written at once");
        assert_eq!(cache.dirty_count(), 0);
        assert!(cache.read(4).unwrap().iter().all(|&b| b == 0x22), "no stale copy left");
        cache.flush().unwrap();
        assert!(cache.device().data()[4 * 1024..5 * 1024].iter().all(|&b| b == 0x22), "flush kept the run");
        assert!(cache.write_run(0, &[0; 100]).is_err(), "whole blocks only");
        assert!(cache.write_run(62, &[0; 4096]).is_err(), "inside the device");
        let mut read_only = BlockCache::new(MemoryDevice::new(vec![0u8; 8192]).into_read_only(), 1024, 8).unwrap();
        assert_eq!(read_only.write_run(0, &[0; 1024]).unwrap_err().kind(), ErrorKind::ReadOnlyFilesystem);
    }

    #[test]
    fn write_back_happens_on_flush_and_eviction() {
        let device = MemoryDevice::new(vec![0u8; 64 * 1024]);
        let mut cache = BlockCache::new(device, 1024, 8).unwrap();
        cache.modify(3).unwrap()[0] = 7;
        assert_eq!(cache.device().data()[3 * 1024], 0, "write-back: nothing written yet");
        cache.flush().unwrap();
        assert_eq!(cache.device().data()[3 * 1024], 7);
        for block in 10..30 {
            cache.overwrite(block).unwrap()[1] = block as u8;
        }
        // Evicted dirty blocks reached the device.
        assert_eq!(cache.device().data()[10 * 1024 + 1], 10);
        assert!(cache.dirty_count() <= 8);
        let device = cache.into_device().unwrap();
        for block in 10..30 {
            assert_eq!(device.data()[block * 1024 + 1], block as u8);
        }
    }

    /// A device that records each write transfer (sector, bytes).
    struct Recording(MemoryDevice, Vec<(u64, usize)>);

    impl BlockDevice for Recording {
        fn sector_size(&self) -> usize {
            self.0.sector_size()
        }
        fn sector_count(&self) -> u64 {
            self.0.sector_count()
        }
        fn read_only(&self) -> bool {
            false
        }
        fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<()> {
            self.0.read(sector, buf)
        }
        fn write(&mut self, sector: u64, buf: &[u8]) -> Result<()> {
            self.1.push((sector, buf.len()));
            self.0.write(sector, buf)
        }
        fn flush(&mut self) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn dirty_blocks_go_out_in_runs_and_the_least_recently_used_leaves_first() {
        let device = Recording(MemoryDevice::new(vec![0u8; 256 * 1024]), Vec::new());
        let mut cache = BlockCache::new(device, 1024, 8).unwrap();
        // Block 100 stays in use all along: it is never evicted.
        cache.modify(100).unwrap()[0] = 0xaa;
        for block in 0..40u64 {
            cache.overwrite(block).unwrap().fill(block as u8);
            cache.read(100).unwrap();
        }
        assert!(cache.entries.contains_key(&100));
        let transfers = cache.device().1.len();
        assert!(transfers <= 6, "40 sequential blocks through an 8-block cache took {transfers} transfers");
        assert!(cache.device().1.iter().all(|&(_, len)| len % 1024 == 0 && len <= WRITE_RUN_BYTES));
        cache.flush().unwrap();
        // The flush wrote the cached run of the last blocks in one go, and 100.
        assert_eq!(cache.device().1.len(), transfers + 2, "{:?}", cache.device().1);
        assert_eq!(cache.dirty_count(), 0);
        let device = cache.into_device().unwrap();
        for block in 0..40usize {
            assert!(device.0.data()[block * 1024..(block + 1) * 1024].iter().all(|&b| b == block as u8), "{block}");
        }
        assert_eq!(device.0.data()[100 * 1024], 0xaa);
    }

    #[test]
    fn a_write_run_is_at_most_a_mebibyte() {
        let device = Recording(MemoryDevice::new(vec![0u8; 4 << 20]), Vec::new());
        let mut cache = BlockCache::new(device, 4096, 1024).unwrap();
        for block in 0..600u64 {
            cache.overwrite(block).unwrap()[0] = 1;
        }
        cache.flush().unwrap();
        let writes = &cache.device().1;
        assert_eq!(writes, &[(0, WRITE_RUN_BYTES), (2048, WRITE_RUN_BYTES), (4096, 600 * 4096 - 2 * WRITE_RUN_BYTES)]);
    }

    #[test]
    fn read_run_mixes_cached_and_device_blocks() {
        let data: Vec<u8> = (0..16 * 1024).map(|i| (i / 1024) as u8).collect();
        let mut cache = BlockCache::new(MemoryDevice::new(data), 1024, 8).unwrap();
        cache.modify(5).unwrap().fill(0xee); // dirty, not on the device yet
        let mut buf = vec![0u8; 8 * 1024];
        cache.read_run(2, &mut buf).unwrap();
        for (i, block) in buf.chunks(1024).enumerate() {
            let expected = if i + 2 == 5 { 0xee } else { (i + 2) as u8 };
            assert!(block.iter().all(|&b| b == expected), "block {}", i + 2);
        }
        assert_eq!(cache.dirty_count(), 1);
        assert!(cache.read_run(12, &mut buf).is_err());
    }

    #[test]
    fn bounds_and_read_only() {
        let device = MemoryDevice::new(vec![0u8; 8 * 1024]).into_read_only();
        let mut cache = BlockCache::new(device, 1024, 8).unwrap();
        assert_eq!(cache.read(8).unwrap_err().kind(), ErrorKind::InvalidInput);
        assert!(cache.read(7).is_ok());
        assert_eq!(cache.modify(0).unwrap_err().kind(), ErrorKind::ReadOnlyFilesystem);
        assert!(BlockCache::new(MemoryDevice::new(vec![0; 4096]), 100, 8).is_err());
    }
}
