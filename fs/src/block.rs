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
pub struct BlockCache<D> {
    device: D,
    block_size: usize,
    capacity: usize,
    entries: BTreeMap<u64, Entry>,
    clock: u64,
    /// Transfers to and from the device, for tests and statistics.
    pub device_reads: u64,
    /// Blocks written to the device.
    pub device_writes: u64,
}

/// How many blocks a [`BlockCache`] keeps by default (4 MiB of 4 KiB blocks).
pub const DEFAULT_CACHE_BLOCKS: usize = 1024;

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
            let Some((&victim, _)) = self.entries.iter().min_by_key(|(_, e)| e.last_use) else { break };
            let entry = self.entries.remove(&victim).expect("victim was just found");
            if entry.dirty {
                let sector = self.sector_of(victim)?;
                if let Err(e) = self.device.write(sector, &entry.data) {
                    self.entries.insert(victim, entry);
                    return Err(e);
                }
                self.device_writes += 1;
            }
        }
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
        }
        let entry = self.entries.get_mut(&block).expect("entry was just ensured");
        entry.last_use = clock;
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

    /// Drops a cached block without writing it (it was freed).
    pub fn forget(&mut self, block: u64) {
        self.entries.remove(&block);
    }

    /// How many cached blocks are dirty.
    pub fn dirty_count(&self) -> usize {
        self.entries.values().filter(|e| e.dirty).count()
    }

    /// Writes every dirty block, in ascending order, then flushes the device.
    pub fn flush(&mut self) -> Result<()> {
        let ratio = (self.block_size / self.device.sector_size()) as u64;
        for (&block, entry) in self.entries.iter_mut().filter(|(_, e)| e.dirty) {
            self.device.write(block * ratio, &entry.data)?;
            self.device_writes += 1;
            entry.dirty = false;
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
