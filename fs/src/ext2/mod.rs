//! ext2 revision 1, read and write, as `mkfs.ext2` (e2fsprogs) makes it:
//! 1-64 KiB blocks, sparse superblocks, large files (`i_size_high`), file
//! types in directory entries, htree directories read as linear ones.
//!
//! [`Ext2`] owns a [`BlockCache`] over a [`BlockDevice`]; it is single-owner
//! (the kernel runs it on the filesystem's owner CPU) and needs no locks.
//! Changes stay in the cache, and the superblock and group descriptors in
//! memory, until [`Ext2::sync`] writes them all and flushes the device: after
//! `sync` returns, the image is consistent (`e2fsck -fn` clean). Blocks and
//! inodes freed since the last sync are not handed out before the next one
//! has reached the disk (`Pending`), so what a crash leaves of the last
//! synced image keeps its files' data; an allocation that finds nothing else
//! syncs and gets them.
//!
//! What it refuses: images with incompatible features other than `filetype`
//! (extents, 64bit, journal recovery, meta_bg, ...) are
//! [`ErrorKind::Unsupported`]; images with read-only-compatible features
//! other than `sparse_super` and `large_file` (checksums, huge files) mount
//! read-only. Every structure read from the disk is checked before use: a
//! corrupt image gives [`ErrorKind::InvalidData`], never a panic or a write
//! outside the filesystem.

pub(crate) mod layout;

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use toro_io::{Error, ErrorKind, Result};

use crate::block::{BlockCache, BlockDevice, DEFAULT_CACHE_BLOCKS};
use layout::{
    dirent_size, dirent_type, dirents, feature, flags, mode, put_dirent, put_u16, put_u32, u32_at, GroupDesc, Inode,
    Superblock, DIRECT_BLOCKS, DIRENT_HEADER, DOUBLE_INDIRECT, INDIRECT, NAME_MAX, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE,
    TRIPLE_INDIRECT,
};
pub use layout::{NAME_MAX as MAX_NAME_LEN, ROOT_INODE};

const fn corrupt(message: &'static str) -> Error {
    Error::from_static(ErrorKind::InvalidData, message)
}

/// The largest device sector the superblock read handles (ext2 blocks are at most 64 KiB).
const MAX_SECTOR_SIZE: usize = 64 * 1024;
const NOT_FOUND: Error = Error::from_static(ErrorKind::NotFound, "no such file or directory");
const NOT_DIR: Error = Error::from_static(ErrorKind::NotADirectory, "not a directory");
const IS_DIR: Error = Error::from_static(ErrorKind::IsADirectory, "is a directory");
const EXISTS: Error = Error::from_static(ErrorKind::AlreadyExists, "file exists");
const READ_ONLY: Error = Error::from_static(ErrorKind::ReadOnlyFilesystem, "the filesystem is mounted read-only");
const NO_SPACE: Error = Error::from_static(ErrorKind::StorageFull, "no space left on the filesystem");
const NO_INODES: Error = Error::from_static(ErrorKind::StorageFull, "no free inode left on the filesystem");
const BAD_POINTER: Error = corrupt("block pointer outside the filesystem");
const BAD_INODE: Error = corrupt("inode number out of range");
const LOOP: Error = Error::from_static(ErrorKind::Other, "too many levels of symbolic links");

/// Most bytes one device transfer of file data covers, read or written
/// (what `dd bs=1M` asks; the driver splits it into requests in flight).
/// It was 64 blocks (256 KiB of 4 KiB blocks): a 1 MiB read became four
/// transfers one after the other, and the file rows trailed the raw disk.
pub const MAX_RUN_BYTES: usize = 1 << 20;
/// Longest chain of symbolic links a path may follow (Linux's `MAXSYMLINKS`).
pub const MAX_SYMLINKS: usize = 40;
/// Largest `i_links_count` (ext2's `EXT2_LINK_MAX`).
pub const LINK_MAX: u16 = 32000;
/// Permission bits of files and directories created without a mode.
pub const DEFAULT_FILE_MODE: u16 = 0o644;
/// Permission bits of new directories.
pub const DEFAULT_DIR_MODE: u16 = 0o755;

/// What kind of file an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A device, FIFO or socket (listed, but not opened by this code).
    Special,
}

impl FileKind {
    fn from_mode(m: u16) -> FileKind {
        match m & mode::TYPE_MASK {
            mode::REGULAR => FileKind::File,
            mode::DIRECTORY => FileKind::Dir,
            mode::SYMLINK => FileKind::Symlink,
            _ => FileKind::Special,
        }
    }

    fn from_dirent(t: u8) -> Option<FileKind> {
        match t {
            dirent_type::REGULAR => Some(FileKind::File),
            dirent_type::DIRECTORY => Some(FileKind::Dir),
            dirent_type::SYMLINK => Some(FileKind::Symlink),
            dirent_type::UNKNOWN => None,
            _ => Some(FileKind::Special),
        }
    }
}

/// An inode's attributes (what `stat` returns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// The inode number.
    pub ino: u32,
    /// The file's kind.
    pub kind: FileKind,
    /// The permission bits (`i_mode & 0o7777`).
    pub permissions: u16,
    /// The size in bytes.
    pub size: u64,
    /// Hard links.
    pub links: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Last access, seconds since the Unix epoch.
    pub atime: u32,
    /// Last modification.
    pub mtime: u32,
    /// Last status change.
    pub ctime: u32,
    /// Bytes of disk the file holds (data and indirect blocks).
    pub allocated: u64,
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The name's bytes as on disk (ext2 names need not be UTF-8).
    pub name: Vec<u8>,
    /// The inode.
    pub ino: u32,
    /// The kind, from the entry's type byte or, without one, the inode.
    pub kind: FileKind,
}

impl DirEntry {
    /// The name as text, with invalid UTF-8 replaced.
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// How to mount.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Blocks the cache keeps.
    pub cache_blocks: usize,
    /// Refuse every change even if the device and features allow them.
    pub read_only: bool,
    /// The time stamped on changes, seconds since the Unix epoch.
    pub clock: fn() -> u32,
}

fn zero_clock() -> u32 {
    0
}

impl Default for Options {
    fn default() -> Options {
        Options { cache_blocks: DEFAULT_CACHE_BLOCKS, read_only: false, clock: zero_clock }
    }
}

/// Which `i_block` slot, and the indexes inside each level of indirect
/// blocks, lead to a logical block.
struct BlockPath {
    slot: usize,
    indexes: [usize; 3],
    depth: usize,
}

/// Blocks (or inodes) freed since the last completed sync, by group: free
/// in the bitmaps and in the free counts, but not handed out again until a
/// sync has recorded their freeing on the disk.
///
/// Why: the disk still holds the last synced metadata, which says the old
/// owner has them. A new owner's data goes to the disk before the next sync
/// (whole-block writes go straight out, dirty blocks are evicted under
/// memory pressure), so reusing them at once would overwrite data the
/// synced image still points at: a VM dying before the next sync would
/// find the old file holding the new file's bytes (or the old name naming
/// a new inode).
struct Pending {
    /// One bit per block (or inode) of the group, allocated on first use.
    bits: Vec<Option<Vec<u8>>>,
    /// How many bits of each group are set.
    counts: Vec<u32>,
    total: u64,
}

impl Pending {
    fn new(groups: usize) -> Pending {
        Pending { bits: (0..groups).map(|_| None).collect(), counts: vec![0; groups], total: 0 }
    }

    /// Marks `bit` of `group` (a group of `per_group` bits).
    fn mark(&mut self, group: usize, bit: usize, per_group: usize) {
        let bits = self.bits[group].get_or_insert_with(|| vec![0u8; per_group.div_ceil(8)]);
        if bits[bit / 8] & (1 << (bit % 8)) == 0 {
            bits[bit / 8] |= 1 << (bit % 8);
            self.counts[group] += 1;
            self.total += 1;
        }
    }

    fn group(&self, group: usize) -> Option<&[u8]> {
        self.bits[group].as_deref()
    }

    fn contains(&self, group: usize, bit: usize) -> bool {
        self.group(group).is_some_and(|bits| bits[bit / 8] & (1 << (bit % 8)) != 0)
    }

    /// A sync recorded the frees: all of them may be handed out now.
    fn release(&mut self) {
        if self.total > 0 {
            self.bits.iter_mut().for_each(|b| *b = None);
            self.counts.iter_mut().for_each(|c| *c = 0);
            self.total = 0;
        }
    }
}

/// A mounted ext2 filesystem.
pub struct Ext2<D> {
    cache: BlockCache<D>,
    sb: Superblock,
    groups: Vec<GroupDesc>,
    writable: bool,
    /// The superblock or group descriptors changed since the last sync.
    meta_dirty: bool,
    clock: fn() -> u32,
    /// The superblock's last mount or write time.
    time_floor: u32,
    block_size: usize,
    pointers_per_block: u64,
    /// Blocks freed since the last completed sync (not allocated before it).
    pending_blocks: Pending,
    /// Inodes freed since the last completed sync (not allocated before it).
    pending_inodes: Pending,
}

impl<D: BlockDevice> Ext2<D> {
    /// Mounts the filesystem on `device` with default options.
    pub fn mount(device: D) -> Result<Ext2<D>> {
        Ext2::mount_with(device, Options::default())
    }

    /// Mounts the filesystem on `device`.
    pub fn mount_with(mut device: D, options: Options) -> Result<Ext2<D>> {
        let sector = device.sector_size();
        if sector == 0 || !sector.is_power_of_two() || sector > MAX_SECTOR_SIZE {
            return Err(Error::from_static(
                ErrorKind::Unsupported,
                "device sector size is not a power of two up to 64 KiB",
            ));
        }
        let device_bytes = device.sector_count().saturating_mul(sector as u64);
        if device_bytes < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64 {
            return Err(corrupt("device too small to hold an ext2 superblock"));
        }
        // The superblock is bytes 1024..2048: the sectors that hold them
        // (one 4 KiB sector holds it whole, at offset 1024).
        let first = SUPERBLOCK_OFFSET / sector as u64;
        let skip = (SUPERBLOCK_OFFSET % sector as u64) as usize;
        let mut sectors = vec![0u8; (skip + SUPERBLOCK_SIZE).next_multiple_of(sector)];
        device.read(first, &mut sectors)?;
        let mut raw = [0u8; SUPERBLOCK_SIZE];
        raw.copy_from_slice(&sectors[skip..skip + SUPERBLOCK_SIZE]);
        let sb = Superblock::parse(&raw, device_bytes)?;
        if sb.block_size < sector {
            return Err(Error::from_static(
                ErrorKind::Unsupported,
                "ext2 block size is smaller than the device's sector size (make the image with mkfs.ext2 -b 4096)",
            ));
        }
        if sb.feature_incompat & !feature::INCOMPAT_SUPPORTED != 0 {
            return Err(Error::from_static(
                ErrorKind::Unsupported,
                "ext2 image uses incompatible features (extents, 64bit, journal, meta_bg?) this code does not implement",
            ));
        }
        let writable =
            !options.read_only && !device.read_only() && sb.feature_ro_compat & !feature::RO_COMPAT_WRITABLE == 0;
        let block_size = sb.block_size;
        let mut cache = BlockCache::new(device, block_size, options.cache_blocks)?;
        // The group descriptor table starts in the block after the superblock's.
        let gdt_start = u64::from(sb.first_data_block) + 1;
        let mut groups = Vec::with_capacity(sb.group_count as usize);
        let per_block = block_size / layout::GROUP_DESC_SIZE;
        let inode_table_blocks = (sb.inodes_per_group as usize * sb.inode_size).div_ceil(block_size) as u64;
        for g in 0..sb.group_count as usize {
            let block = cache.read(gdt_start + (g / per_block) as u64)?;
            let off = (g % per_block) * layout::GROUP_DESC_SIZE;
            let desc = GroupDesc::parse(&block[off..off + layout::GROUP_DESC_SIZE]);
            let inside = |b: u32, len: u64| b > sb.first_data_block && u64::from(b) + len <= u64::from(sb.blocks_count);
            if !inside(desc.block_bitmap, 1)
                || !inside(desc.inode_bitmap, 1)
                || !inside(desc.inode_table, inode_table_blocks)
            {
                return Err(corrupt("group descriptor: bitmap or inode table outside the filesystem"));
            }
            if u32::from(desc.free_inodes_count) > sb.inodes_per_group
                || u32::from(desc.free_blocks_count) > sb.blocks_per_group
            {
                return Err(corrupt("group descriptor: more free blocks or inodes than the group has"));
            }
            groups.push(desc);
        }
        let group_count = groups.len();
        let mut fs = Ext2 {
            pending_blocks: Pending::new(group_count),
            pending_inodes: Pending::new(group_count),
            cache,
            pointers_per_block: (block_size / 4) as u64,
            block_size,
            sb,
            groups,
            writable,
            meta_dirty: false,
            clock: options.clock,
            time_floor: u32_at(&raw, 44).max(u32_at(&raw, 48)),
        };
        let root = fs.inode(ROOT_INODE)?;
        if !root.is_dir() {
            return Err(corrupt("the root inode is not a directory"));
        }
        Ok(fs)
    }

    /// Whether changes are allowed.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The block size in bytes.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Free blocks and free inodes. They include those freed since the last
    /// sync ([`Ext2::pending_free`]): an allocation that finds nothing else
    /// syncs first and then gets them, so they are as good as free.
    pub fn free_counts(&self) -> (u32, u32) {
        (self.sb.free_blocks_count, self.sb.free_inodes_count)
    }

    /// The filesystem's size and free space, as `statfs(2)` gives them:
    /// free blocks include those freed since the last sync (see
    /// [`Ext2::free_counts`]); `available` leaves out the blocks reserved
    /// for root (`s_r_blocks_count`).
    pub fn statfs(&self) -> crate::fuse::StatFs {
        let reserved = u64::from(layout::u32_at(&self.sb.raw, 8));
        let free = u64::from(self.sb.free_blocks_count);
        crate::fuse::StatFs {
            blocks: u64::from(self.sb.blocks_count),
            free,
            available: free.saturating_sub(reserved),
            files: u64::from(self.sb.inodes_count),
            free_files: u64::from(self.sb.free_inodes_count),
            block_size: self.block_size as u32,
            name_max: 255,
        }
    }

    /// Blocks and inodes freed since the last completed sync: counted free,
    /// but handed out only after a sync has recorded their freeing.
    pub fn pending_free(&self) -> (u64, u64) {
        (self.pending_blocks.total, self.pending_inodes.total)
    }

    fn has_pending(&self) -> bool {
        self.pending_blocks.total + self.pending_inodes.total > 0
    }

    /// Runs `op`; when it fails for want of space (blocks or inodes) while
    /// frees are pending, syncs (which releases them) and runs it once more,
    /// so a nearly full disk does not report a spurious "disk full". `op`
    /// must leave the filesystem consistent (and unchanged) when it fails:
    /// the sync writes the state it left.
    fn retry_after_sync<T>(&mut self, mut op: impl FnMut(&mut Self) -> Result<T>) -> Result<T> {
        match op(self) {
            Err(e) if e.kind() == ErrorKind::StorageFull && self.has_pending() => {
                self.sync()?;
                op(self)
            }
            result => result,
        }
    }

    /// The device below the cache.
    pub fn device(&self) -> &D {
        self.cache.device()
    }

    /// The block cache (for statistics).
    pub fn cache(&self) -> &BlockCache<D> {
        &self.cache
    }

    fn check_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(READ_ONLY)
        }
    }

    /// The clock, but never before the filesystem's last mount or write
    /// (a guest without a real-time clock still stamps plausible times, and
    /// `i_dtime` must not look like an orphan-list link to e2fsck).
    fn now(&self) -> u32 {
        (self.clock)().max(self.time_floor)
    }

    // ---- inodes ----

    fn inode_location(&self, ino: u32) -> Result<(u64, usize)> {
        if ino == 0 || ino > self.sb.inodes_count {
            return Err(BAD_INODE);
        }
        let group = ((ino - 1) / self.sb.inodes_per_group) as usize;
        let index = ((ino - 1) % self.sb.inodes_per_group) as usize;
        let byte = index * self.sb.inode_size;
        let block = u64::from(self.groups[group].inode_table) + (byte / self.block_size) as u64;
        Ok((block, byte % self.block_size))
    }

    fn inode(&mut self, ino: u32) -> Result<Inode> {
        let (block, off) = self.inode_location(ino)?;
        let size = self.sb.inode_size;
        let data = self.cache.read(block)?;
        let inode = Inode::parse(&data[off..off + size]);
        if inode.flags & (flags::EXTENTS | flags::INLINE_DATA) != 0 {
            return Err(Error::from_static(ErrorKind::Unsupported, "inode uses extents or inline data (ext4)"));
        }
        Ok(inode)
    }

    fn write_inode(&mut self, ino: u32, inode: &mut Inode) -> Result<()> {
        let (block, off) = self.inode_location(ino)?;
        let size = self.sb.inode_size;
        let raw = inode.serialize();
        self.cache.modify(block)?[off..off + size].copy_from_slice(raw);
        Ok(())
    }

    /// The attributes of inode `ino`.
    pub fn stat(&mut self, ino: u32) -> Result<Stat> {
        let inode = self.inode(ino)?;
        // Links 0 and no deletion time: an open file whose name is gone.
        if inode.links_count == 0 && inode.dtime != 0 {
            return Err(corrupt("reference to a deleted inode"));
        }
        Ok(Stat {
            ino,
            kind: FileKind::from_mode(inode.mode),
            permissions: inode.mode & 0o7777,
            size: inode.size,
            links: inode.links_count,
            uid: inode.uid,
            gid: inode.gid,
            atime: inode.atime,
            mtime: inode.mtime,
            ctime: inode.ctime,
            allocated: inode.sectors * 512,
        })
    }

    // ---- block and inode allocation ----

    fn group_of_inode(&self, ino: u32) -> u32 {
        (ino - 1) / self.sb.inodes_per_group
    }

    fn blocks_in_group(&self, group: u32) -> u32 {
        let start = self.sb.first_data_block + group * self.sb.blocks_per_group;
        (self.sb.blocks_count - start).min(self.sb.blocks_per_group)
    }

    fn alloc_block(&mut self, goal_group: u32) -> Result<u32> {
        let count = self.sb.group_count;
        for g in (goal_group..count).chain(0..goal_group.min(count)) {
            // Blocks freed since the last sync are not handed out (Pending).
            if u32::from(self.groups[g as usize].free_blocks_count) <= self.pending_blocks.counts[g as usize] {
                continue;
            }
            let bitmap = u64::from(self.groups[g as usize].block_bitmap);
            let limit = self.blocks_in_group(g) as usize;
            let bits = self.cache.read(bitmap)?;
            let Some(bit) = first_free_bit(bits, self.pending_blocks.group(g as usize), limit) else {
                return Err(corrupt("group descriptor counts free blocks its bitmap does not have"));
            };
            self.cache.modify(bitmap)?[bit / 8] |= 1 << (bit % 8);
            self.groups[g as usize].free_blocks_count -= 1;
            self.sb.free_blocks_count = self.sb.free_blocks_count.saturating_sub(1);
            self.meta_dirty = true;
            return Ok(self.sb.first_data_block + g * self.sb.blocks_per_group + bit as u32);
        }
        Err(NO_SPACE)
    }

    fn free_block(&mut self, block: u32) -> Result<()> {
        self.check_pointer(block)?;
        let rel = block - self.sb.first_data_block;
        let g = rel / self.sb.blocks_per_group;
        let bit = (rel % self.sb.blocks_per_group) as usize;
        let bitmap = u64::from(self.groups[g as usize].block_bitmap);
        let byte = &mut self.cache.modify(bitmap)?[bit / 8];
        if *byte & (1 << (bit % 8)) == 0 {
            return Err(corrupt("freeing a block that is already free (blocks shared between files?)"));
        }
        *byte &= !(1 << (bit % 8));
        self.groups[g as usize].free_blocks_count += 1;
        self.sb.free_blocks_count += 1;
        self.meta_dirty = true;
        self.cache.forget(u64::from(block));
        let per_group = self.sb.blocks_per_group as usize;
        self.pending_blocks.mark(g as usize, bit, per_group);
        Ok(())
    }

    fn alloc_inode(&mut self, goal_group: u32, is_dir: bool) -> Result<u32> {
        let count = self.sb.group_count;
        for g in (goal_group..count).chain(0..goal_group.min(count)) {
            // Inodes freed since the last sync are not handed out (Pending).
            if u32::from(self.groups[g as usize].free_inodes_count) <= self.pending_inodes.counts[g as usize] {
                continue;
            }
            let bitmap = u64::from(self.groups[g as usize].inode_bitmap);
            let ipg = self.sb.inodes_per_group as usize;
            // Inodes below s_first_ino are reserved even when their bits are clear.
            let first = (self.sb.first_ino as usize).saturating_sub(1 + g as usize * ipg).min(ipg);
            let bits = self.cache.read(bitmap)?;
            let pending = &self.pending_inodes;
            let Some(bit) =
                (first..ipg).find(|&i| bits[i / 8] & (1 << (i % 8)) == 0 && !pending.contains(g as usize, i))
            else {
                return Err(corrupt("group descriptor counts free inodes its bitmap does not have"));
            };
            self.cache.modify(bitmap)?[bit / 8] |= 1 << (bit % 8);
            let desc = &mut self.groups[g as usize];
            desc.free_inodes_count -= 1;
            if is_dir {
                desc.used_dirs_count += 1;
            }
            self.sb.free_inodes_count = self.sb.free_inodes_count.saturating_sub(1);
            self.meta_dirty = true;
            return Ok(g * self.sb.inodes_per_group + bit as u32 + 1);
        }
        Err(NO_INODES)
    }

    fn free_inode(&mut self, ino: u32, is_dir: bool) -> Result<()> {
        let g = self.group_of_inode(ino) as usize;
        let bit = ((ino - 1) % self.sb.inodes_per_group) as usize;
        let bitmap = u64::from(self.groups[g].inode_bitmap);
        let byte = &mut self.cache.modify(bitmap)?[bit / 8];
        if *byte & (1 << (bit % 8)) == 0 {
            return Err(corrupt("freeing an inode that is already free"));
        }
        *byte &= !(1 << (bit % 8));
        let desc = &mut self.groups[g];
        desc.free_inodes_count += 1;
        if is_dir {
            desc.used_dirs_count = desc.used_dirs_count.saturating_sub(1);
        }
        self.sb.free_inodes_count += 1;
        self.meta_dirty = true;
        let per_group = self.sb.inodes_per_group as usize;
        self.pending_inodes.mark(g, bit, per_group);
        Ok(())
    }

    // ---- block maps ----

    fn check_pointer(&self, block: u32) -> Result<()> {
        if block <= self.sb.first_data_block || block >= self.sb.blocks_count {
            Err(BAD_POINTER)
        } else {
            Ok(())
        }
    }

    fn block_path(&self, lblock: u64) -> Result<BlockPath> {
        let ppb = self.pointers_per_block;
        let ppb_usize = ppb as usize;
        let mut lb = lblock;
        if lb < DIRECT_BLOCKS as u64 {
            return Ok(BlockPath { slot: lb as usize, indexes: [0; 3], depth: 0 });
        }
        lb -= DIRECT_BLOCKS as u64;
        if lb < ppb {
            return Ok(BlockPath { slot: INDIRECT, indexes: [lb as usize, 0, 0], depth: 1 });
        }
        lb -= ppb;
        if lb < ppb * ppb {
            let i = lb as usize;
            return Ok(BlockPath { slot: DOUBLE_INDIRECT, indexes: [i / ppb_usize, i % ppb_usize, 0], depth: 2 });
        }
        lb -= ppb * ppb;
        if lb < ppb * ppb * ppb {
            let i = lb as usize;
            return Ok(BlockPath {
                slot: TRIPLE_INDIRECT,
                indexes: [i / (ppb_usize * ppb_usize), (i / ppb_usize) % ppb_usize, i % ppb_usize],
                depth: 3,
            });
        }
        Err(Error::from_static(ErrorKind::FileTooLarge, "file offset beyond ext2's triple-indirect map"))
    }

    /// The largest file size the block map (and `i_blocks`) can describe.
    pub fn max_file_size(&self) -> u64 {
        let ppb = self.pointers_per_block;
        let blocks = DIRECT_BLOCKS as u64 + ppb + ppb * ppb + ppb * ppb * ppb;
        // i_blocks counts 512-byte sectors in 32 bits (no huge_file).
        let by_sectors = (u64::from(u32::MAX) * 512) / self.block_size as u64 * self.block_size as u64;
        (blocks * self.block_size as u64).min(by_sectors).min(i64::MAX as u64)
    }

    /// The physical block of logical block `lblock`, or `None` for a hole.
    fn map(&mut self, inode: &Inode, lblock: u64) -> Result<Option<u32>> {
        Ok(self.map_run(inode, lblock, 1)?.map(|(block, _)| block))
    }

    /// The run of file data at `lblock`: its first physical block and how
    /// many consecutive logical blocks (at most `most`) sit on consecutive
    /// physical ones, or `None` for a hole. One look at the pointer block
    /// covers the run (a block-by-block [`map`](Self::map) read the
    /// indirect block through the cache once per data block).
    fn map_run(&mut self, inode: &Inode, lblock: u64, most: u32) -> Result<Option<(u32, u32)>> {
        let path = self.block_path(lblock)?;
        let consecutive = |pointers: &mut dyn Iterator<Item = u32>, first: u32| {
            let mut count = 1u32;
            for pointer in pointers {
                if count >= most || pointer != first.wrapping_add(count) {
                    break;
                }
                count += 1;
            }
            count
        };
        if path.depth == 0 {
            let first = inode.block[path.slot];
            if first == 0 {
                return Ok(None);
            }
            let count = consecutive(&mut inode.block[path.slot + 1..DIRECT_BLOCKS].iter().copied(), first);
            return self.checked_run(first, count);
        }
        let mut block = inode.block[path.slot];
        let (walk, leaf_index) = (&path.indexes[..path.depth - 1], path.indexes[path.depth - 1]);
        for &index in walk {
            if block == 0 {
                return Ok(None);
            }
            self.check_pointer(block)?;
            block = u32_at(self.cache.read(u64::from(block))?, index * 4);
        }
        if block == 0 {
            return Ok(None);
        }
        self.check_pointer(block)?;
        let leaf = self.cache.read(u64::from(block))?;
        let first = u32_at(leaf, leaf_index * 4);
        if first == 0 {
            return Ok(None);
        }
        let count = consecutive(&mut leaf[(leaf_index + 1) * 4..].chunks_exact(4).map(|b| u32_at(b, 0)), first);
        self.checked_run(first, count)
    }

    /// A run whose every block is inside the filesystem (consecutive
    /// blocks: checking both ends checks all).
    fn checked_run(&self, first: u32, count: u32) -> Result<Option<(u32, u32)>> {
        self.check_pointer(first)?;
        self.check_pointer(first.checked_add(count - 1).ok_or(BAD_POINTER)?)?;
        Ok(Some((first, count)))
    }

    /// The physical block of `lblock`, allocating it (and any indirect block
    /// on the way) if missing; `true` with a block allocated just now.
    fn map_alloc(&mut self, ino: u32, inode: &mut Inode, lblock: u64) -> Result<(u32, bool)> {
        let path = self.block_path(lblock)?;
        let goal = self.group_of_inode(ino);
        let sectors_per_block = (self.block_size / 512) as u64;
        let mut fresh = false;
        if inode.block[path.slot] == 0 {
            let new = self.alloc_block(goal)?;
            if path.depth > 0 {
                self.cache.overwrite(u64::from(new))?.fill(0);
            }
            inode.block[path.slot] = new;
            inode.sectors += sectors_per_block;
            fresh = path.depth == 0;
        }
        let mut block = inode.block[path.slot];
        for (level, &index) in path.indexes[..path.depth].iter().enumerate() {
            self.check_pointer(block)?;
            let next = u32_at(self.cache.read(u64::from(block))?, index * 4);
            if next != 0 {
                block = next;
                continue;
            }
            let new = self.alloc_block(goal)?;
            let last = level + 1 == path.depth;
            if !last {
                self.cache.overwrite(u64::from(new))?.fill(0);
            }
            put_u32(self.cache.modify(u64::from(block))?, index * 4, new);
            inode.sectors += sectors_per_block;
            fresh = last;
            block = new;
        }
        self.check_pointer(block)?;
        Ok((block, fresh))
    }

    /// Frees every block of `inode` from logical block `from` on, and the
    /// indirect blocks left empty.
    fn free_from(&mut self, inode: &mut Inode, from: u64) -> Result<()> {
        let sectors_per_block = (self.block_size / 512) as u64;
        for slot in (from.min(DIRECT_BLOCKS as u64) as usize)..DIRECT_BLOCKS {
            if inode.block[slot] != 0 {
                self.free_block(inode.block[slot])?;
                inode.block[slot] = 0;
                inode.sectors = inode.sectors.saturating_sub(sectors_per_block);
            }
        }
        let ppb = self.pointers_per_block;
        let mut base = DIRECT_BLOCKS as u64;
        for (slot, depth) in [(INDIRECT, 1u32), (DOUBLE_INDIRECT, 2), (TRIPLE_INDIRECT, 3)] {
            let span = ppb.pow(depth);
            if from < base + span && inode.block[slot] != 0 {
                let start = from.saturating_sub(base);
                if self.free_tree(inode, inode.block[slot], depth, start)? {
                    self.free_block(inode.block[slot])?;
                    inode.block[slot] = 0;
                    inode.sectors = inode.sectors.saturating_sub(sectors_per_block);
                }
            }
            base += span;
        }
        Ok(())
    }

    /// Frees the blocks under indirect block `block` (of `depth` levels)
    /// from index `start` on; `true` if none is left under it.
    fn free_tree(&mut self, inode: &mut Inode, block: u32, depth: u32, start: u64) -> Result<bool> {
        self.check_pointer(block)?;
        let sectors_per_block = (self.block_size / 512) as u64;
        let per_entry = self.pointers_per_block.pow(depth - 1);
        let first = (start / per_entry) as usize;
        let mut pointers: Vec<u32> = self.cache.read(u64::from(block))?.chunks_exact(4).map(|c| u32_at(c, 0)).collect();
        let mut changed = false;
        for (i, pointer) in pointers.iter_mut().enumerate().skip(first) {
            let child = *pointer;
            if child == 0 {
                continue;
            }
            let emptied = if depth == 1 {
                true
            } else {
                let sub_start = if i == first { start % per_entry } else { 0 };
                self.free_tree(inode, child, depth - 1, sub_start)?
            };
            if emptied {
                self.free_block(child)?;
                inode.sectors = inode.sectors.saturating_sub(sectors_per_block);
                *pointer = 0;
                changed = true;
            }
        }
        if pointers.iter().all(|&p| p == 0) {
            return Ok(true);
        }
        if changed {
            let data = self.cache.modify(u64::from(block))?;
            for (i, p) in pointers.iter().enumerate() {
                put_u32(data, i * 4, *p);
            }
        }
        Ok(false)
    }

    // ---- file data ----

    /// Reads from inode `ino` at `offset`; returns the bytes read (0 at or
    /// past the end). Holes read as zeros.
    pub fn read_at(&mut self, ino: u32, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let inode = self.inode(ino)?;
        if inode.is_dir() {
            return Err(IS_DIR);
        }
        self.read_inode_data(&inode, offset, buf)
    }

    /// Most blocks in one transfer of file data.
    fn run_blocks(&self) -> usize {
        (MAX_RUN_BYTES / self.block_size).max(1)
    }

    fn read_inode_data(&mut self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= inode.size {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(inode.size - offset) as usize;
        let bs = self.block_size as u64;
        let mut done = 0;
        while done < len {
            let pos = offset + done as u64;
            let within = (pos % bs) as usize;
            // Whole blocks: consecutive physical blocks in one transfer.
            if within == 0 && len - done >= self.block_size {
                let most = ((len - done) / self.block_size).min(self.run_blocks()) as u32;
                if let Some((first, count)) = self.map_run(inode, pos / bs, most)? {
                    let bytes = count as usize * self.block_size;
                    self.cache.read_run(u64::from(first), &mut buf[done..done + bytes])?;
                    done += bytes;
                    continue;
                }
            }
            let n = (self.block_size - within).min(len - done);
            let out = &mut buf[done..done + n];
            match self.map(inode, pos / bs)? {
                Some(block) => out.copy_from_slice(&self.cache.read(u64::from(block))?[within..within + n]),
                None => out.fill(0),
            }
            done += n;
        }
        Ok(len)
    }

    /// Inode `ino` for a change of its data: it must be a regular file on a
    /// writable filesystem.
    fn regular_for_change(&mut self, ino: u32) -> Result<Inode> {
        self.check_writable()?;
        let inode = self.inode(ino)?;
        if inode.file_type() != mode::REGULAR {
            return Err(if inode.is_dir() {
                IS_DIR
            } else {
                Error::from_static(ErrorKind::InvalidInput, "not a regular file")
            });
        }
        Ok(inode)
    }

    /// Stamps a changed file and writes its inode; a file past 2 GiB turns
    /// on `large_file`.
    fn finish_file_change(&mut self, ino: u32, inode: &mut Inode) -> Result<()> {
        if inode.size > i32::MAX as u64 && self.sb.feature_ro_compat & feature::RO_COMPAT_LARGE_FILE == 0 {
            self.sb.feature_ro_compat |= feature::RO_COMPAT_LARGE_FILE;
            self.meta_dirty = true;
        }
        let now = self.now();
        inode.mtime = now;
        inode.ctime = now;
        self.write_inode(ino, inode)
    }

    /// Writes `data` into regular file `ino` at `offset`, growing it (a gap
    /// becomes a hole). Returns the bytes written: fewer than `data.len()`
    /// only when the disk filled up part-way.
    ///
    /// When the disk fills while blocks freed since the last sync are
    /// pending, the part written so far is recorded, the filesystem synced
    /// (releasing them) and the write goes on.
    pub fn write_at(&mut self, ino: u32, offset: u64, data: &[u8]) -> Result<usize> {
        let mut done = 0;
        loop {
            let (n, failure) = self.write_some(ino, offset + done as u64, &data[done..])?;
            done += n;
            match failure {
                // The inode is written: a consistent point to sync at.
                Some(e) if e.kind() == ErrorKind::StorageFull && self.has_pending() => self.sync()?,
                Some(e) if done == 0 => return Err(e),
                _ => return Ok(done),
            }
        }
    }

    /// [`Ext2::write_at`] up to the first failure to allocate: the bytes
    /// written and that failure (the inode is written either way).
    fn write_some(&mut self, ino: u32, offset: u64, data: &[u8]) -> Result<(usize, Option<Error>)> {
        let mut inode = self.regular_for_change(ino)?;
        offset
            .checked_add(data.len() as u64)
            .filter(|&end| end <= self.max_file_size())
            .ok_or(Error::from_static(ErrorKind::FileTooLarge, "write past ext2's largest file size"))?;
        if data.is_empty() {
            // POSIX: a write of nothing changes nothing (not the size at an
            // offset past the end, not the times).
            return Ok((0, None));
        }
        let bs = self.block_size as u64;
        let mut done = 0usize;
        let mut failure = None;
        while done < data.len() {
            let pos = offset + done as u64;
            let within = (pos % bs) as usize;
            // Whole blocks: map (allocating) consecutive logical blocks while
            // they land on consecutive physical ones, then write them straight
            // from `data` in one transfer. The data reaches the disk before
            // the metadata that points at it (which stays in the cache).
            if within == 0 && data.len() - done >= self.block_size {
                let most = ((data.len() - done) / self.block_size).min(self.run_blocks()) as u32;
                let (mut first, mut count) = (0u32, 0u32);
                while count < most {
                    match self.map_alloc(ino, &mut inode, pos / bs + u64::from(count)) {
                        Ok((block, _)) if count == 0 => (first, count) = (block, 1),
                        Ok((block, _)) if block == first + count => count += 1,
                        // Mapped elsewhere: the next run starts there.
                        Ok(_) => break,
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                if count > 0 {
                    let bytes = count as usize * self.block_size;
                    self.cache.write_run(u64::from(first), &data[done..done + bytes])?;
                    done += bytes;
                }
                if failure.is_some() {
                    break;
                }
                continue;
            }
            let n = (self.block_size - within).min(data.len() - done);
            let (block, fresh) = match self.map_alloc(ino, &mut inode, pos / bs) {
                Ok(mapped) => mapped,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            let target = if fresh || n == self.block_size {
                self.cache.overwrite(u64::from(block))?
            } else {
                self.cache.modify(u64::from(block))?
            };
            target[within..within + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        let new_end = offset + done as u64;
        if new_end > inode.size {
            inode.size = new_end;
        }
        self.finish_file_change(ino, &mut inode)?;
        Ok((done, failure))
    }

    /// Sets the size of regular file `ino`: shrinking frees the blocks past
    /// the end (and zeroes the tail of the last one), growing leaves a hole.
    pub fn set_len(&mut self, ino: u32, len: u64) -> Result<()> {
        let mut inode = self.regular_for_change(ino)?;
        if len > self.max_file_size() {
            return Err(Error::from_static(ErrorKind::FileTooLarge, "length past ext2's largest file size"));
        }
        let bs = self.block_size as u64;
        if len < inode.size {
            // Zero the rest of the new last block so a later growth reads zeros.
            if !len.is_multiple_of(bs) {
                if let Some(block) = self.map(&inode, len / bs)? {
                    self.cache.modify(u64::from(block))?[(len % bs) as usize..].fill(0);
                }
            }
            self.free_from(&mut inode, len.div_ceil(bs))?;
        }
        inode.size = len;
        self.finish_file_change(ino, &mut inode)
    }

    /// The target of symbolic link `ino`.
    pub fn read_link(&mut self, ino: u32) -> Result<Vec<u8>> {
        let inode = self.inode(ino)?;
        if inode.file_type() != mode::SYMLINK {
            return Err(Error::from_static(ErrorKind::InvalidInput, "not a symbolic link"));
        }
        if inode.size > self.block_size as u64 {
            return Err(corrupt("symbolic link longer than a block"));
        }
        if inode.is_fast_symlink(self.block_size) {
            return Ok(inode.raw[40..40 + inode.size as usize].to_vec());
        }
        let mut target = vec![0u8; inode.size as usize];
        let n = self.read_inode_data(&inode, 0, &mut target)?;
        target.truncate(n);
        Ok(target)
    }

    // ---- directories ----

    fn dir_block_count(&self, dir: &Inode) -> u64 {
        dir.size / self.block_size as u64
    }

    /// The directory's block `lb`, copied out of the cache.
    fn dir_block(&mut self, dir: &Inode, lb: u64) -> Result<(u32, Vec<u8>)> {
        let block = self.map(dir, lb)?.ok_or(corrupt("directory with a hole"))?;
        Ok((block, self.cache.read(u64::from(block))?.to_vec()))
    }

    /// Every entry of directory `ino`, `.` and `..` included.
    pub fn read_dir_ino(&mut self, ino: u32) -> Result<Vec<DirEntry>> {
        let dir = self.inode(ino)?;
        if !dir.is_dir() {
            return Err(NOT_DIR);
        }
        let mut out = Vec::new();
        for lb in 0..self.dir_block_count(&dir) {
            let (_, data) = self.dir_block(&dir, lb)?;
            for entry in dirents(&data, self.sb.inodes_count) {
                let e = entry?;
                if e.inode == 0 {
                    continue;
                }
                let name = data[e.offset + DIRENT_HEADER..e.offset + DIRENT_HEADER + e.name_len].to_vec();
                let kind = match self.has_filetype().then(|| FileKind::from_dirent(e.file_type)).flatten() {
                    Some(kind) => kind,
                    None => FileKind::from_mode(self.inode(e.inode)?.mode),
                };
                out.push(DirEntry { name, ino: e.inode, kind });
            }
        }
        Ok(out)
    }

    fn has_filetype(&self) -> bool {
        self.sb.feature_incompat & feature::INCOMPAT_FILETYPE != 0
    }

    /// The inode `name` names in directory `dir`.
    pub fn lookup(&mut self, dir: u32, name: &[u8]) -> Result<Option<u32>> {
        let inode = self.inode(dir)?;
        if !inode.is_dir() {
            return Err(NOT_DIR);
        }
        for lb in 0..self.dir_block_count(&inode) {
            let (_, data) = self.dir_block(&inode, lb)?;
            for entry in dirents(&data, self.sb.inodes_count) {
                let e = entry?;
                if e.inode != 0 && &data[e.offset + DIRENT_HEADER..e.offset + DIRENT_HEADER + e.name_len] == name {
                    return Ok(Some(e.inode));
                }
            }
        }
        Ok(None)
    }

    fn add_entry(&mut self, dir_ino: u32, name: &[u8], ino: u32, kind_mode: u16) -> Result<()> {
        let mut dir = self.inode(dir_ino)?;
        let file_type = if self.has_filetype() { dirent_type::from_mode(kind_mode) } else { 0 };
        let need = dirent_size(name.len());
        let mut placed = false;
        'blocks: for lb in 0..self.dir_block_count(&dir) {
            let (block, data) = self.dir_block(&dir, lb)?;
            for entry in dirents(&data, self.sb.inodes_count) {
                let e = entry?;
                let used = if e.inode == 0 { 0 } else { dirent_size(e.name_len) };
                if e.rec_len >= used + need {
                    let target = self.cache.modify(u64::from(block))?;
                    if used == 0 {
                        put_dirent(target, e.offset, ino, e.rec_len, name, file_type);
                    } else {
                        put_u16(target, e.offset + 4, used as u16);
                        put_dirent(target, e.offset + used, ino, e.rec_len - used, name, file_type);
                    }
                    placed = true;
                    break 'blocks;
                }
            }
        }
        if !placed {
            let lb = self.dir_block_count(&dir);
            let block = match self.map_alloc(dir_ino, &mut dir, lb) {
                Ok((block, _)) => block,
                Err(e) => {
                    // An indirect block allocated on the way stays recorded.
                    self.write_inode(dir_ino, &mut dir)?;
                    return Err(e);
                }
            };
            let target = self.cache.overwrite(u64::from(block))?;
            target.fill(0);
            put_dirent(target, 0, ino, self.block_size, name, file_type);
            dir.size += self.block_size as u64;
        }
        // The htree index (if any) no longer describes the directory.
        dir.flags &= !flags::INDEX;
        let now = self.now();
        dir.mtime = now;
        dir.ctime = now;
        self.write_inode(dir_ino, &mut dir)
    }

    /// Removes the entry `name` from directory `dir_ino`; returns its inode.
    fn remove_entry(&mut self, dir_ino: u32, name: &[u8]) -> Result<u32> {
        let mut dir = self.inode(dir_ino)?;
        for lb in 0..self.dir_block_count(&dir) {
            let (block, data) = self.dir_block(&dir, lb)?;
            let mut previous: Option<layout::RawDirent> = None;
            for entry in dirents(&data, self.sb.inodes_count) {
                let e = entry?;
                let matches =
                    e.inode != 0 && &data[e.offset + DIRENT_HEADER..e.offset + DIRENT_HEADER + e.name_len] == name;
                if matches {
                    let target = self.cache.modify(u64::from(block))?;
                    match previous {
                        Some(p) => put_u16(target, p.offset + 4, (p.rec_len + e.rec_len) as u16),
                        None => put_u32(target, e.offset, 0),
                    }
                    dir.flags &= !flags::INDEX;
                    let now = self.now();
                    dir.mtime = now;
                    dir.ctime = now;
                    self.write_inode(dir_ino, &mut dir)?;
                    return Ok(e.inode);
                }
                previous = Some(e);
            }
        }
        Err(NOT_FOUND)
    }

    /// Points entry `name` of `dir_ino` at `ino` (a rename over an existing name).
    fn retarget_entry(&mut self, dir_ino: u32, name: &[u8], ino: u32, kind_mode: u16) -> Result<()> {
        let dir = self.inode(dir_ino)?;
        let file_type = if self.has_filetype() { dirent_type::from_mode(kind_mode) } else { 0 };
        for lb in 0..self.dir_block_count(&dir) {
            let (block, data) = self.dir_block(&dir, lb)?;
            for entry in dirents(&data, self.sb.inodes_count) {
                let e = entry?;
                if e.inode != 0 && &data[e.offset + DIRENT_HEADER..e.offset + DIRENT_HEADER + e.name_len] == name {
                    let target = self.cache.modify(u64::from(block))?;
                    put_u32(target, e.offset, ino);
                    target[e.offset + 7] = file_type;
                    return Ok(());
                }
            }
        }
        Err(NOT_FOUND)
    }

    fn is_empty_dir(&mut self, ino: u32) -> Result<bool> {
        Ok(self.read_dir_ino(ino)?.iter().all(|e| e.name == b"." || e.name == b".."))
    }

    // ---- paths ----

    /// Resolves `path` (absolute or relative to the root; `.`/`..` and
    /// symbolic links followed) to an inode.
    pub fn resolve(&mut self, path: &str) -> Result<u32> {
        let mut hops = 0;
        self.walk(ROOT_INODE, path.as_bytes(), true, &mut hops)
    }

    /// Like [`Ext2::resolve`], but a symbolic link in the last component is
    /// not followed.
    pub fn resolve_no_follow(&mut self, path: &str) -> Result<u32> {
        let mut hops = 0;
        self.walk(ROOT_INODE, path.as_bytes(), false, &mut hops)
    }

    fn walk(&mut self, start: u32, path: &[u8], follow_last: bool, hops: &mut usize) -> Result<u32> {
        let mut current = if path.first() == Some(&b'/') { ROOT_INODE } else { start };
        let components: Vec<&[u8]> = path.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".").collect();
        for (i, component) in components.iter().enumerate() {
            if component.len() > NAME_MAX {
                return Err(Error::from_static(ErrorKind::InvalidFilename, "file name longer than 255 bytes"));
            }
            let next = self.lookup(current, component)?.ok_or(NOT_FOUND)?;
            let last = i + 1 == components.len();
            let inode = self.inode(next)?;
            if inode.file_type() == mode::SYMLINK && (!last || follow_last) {
                *hops += 1;
                if *hops > MAX_SYMLINKS {
                    return Err(LOOP);
                }
                let target = self.read_link(next)?;
                current = self.walk(current, &target, true, hops)?;
            } else {
                current = next;
            }
        }
        Ok(current)
    }

    /// The parent directory of `path` and its last component.
    fn parent_of<'p>(&mut self, path: &'p str) -> Result<(u32, &'p [u8])> {
        let trimmed = path.trim_end_matches('/');
        let (dir, name) = match trimmed.rfind('/') {
            Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
            None => ("", trimmed),
        };
        check_name(name.as_bytes())?;
        let parent = self.resolve(dir)?;
        if !self.inode(parent)?.is_dir() {
            return Err(NOT_DIR);
        }
        Ok((parent, name.as_bytes()))
    }

    /// The attributes of the file at `path` (links followed).
    pub fn metadata(&mut self, path: &str) -> Result<Stat> {
        let ino = self.resolve(path)?;
        self.stat(ino)
    }

    /// The entries of the directory at `path`, without `.` and `..`.
    pub fn read_dir(&mut self, path: &str) -> Result<Vec<DirEntry>> {
        let ino = self.resolve(path)?;
        let mut entries = self.read_dir_ino(ino)?;
        entries.retain(|e| e.name != b"." && e.name != b"..");
        Ok(entries)
    }

    /// Creates an empty regular file at `path` with permission bits `perm`;
    /// [`ErrorKind::AlreadyExists`] if the name is taken.
    pub fn create(&mut self, path: &str, perm: u16) -> Result<u32> {
        self.check_writable()?;
        let (parent, name) = self.parent_of(path)?;
        self.retry_after_sync(|fs| fs.make_node(parent, name, mode::REGULAR | (perm & 0o7777)))
    }

    fn make_node(&mut self, parent: u32, name: &[u8], node_mode: u16) -> Result<u32> {
        if self.lookup(parent, name)?.is_some() {
            return Err(EXISTS);
        }
        let is_dir = node_mode & mode::TYPE_MASK == mode::DIRECTORY;
        let goal = self.group_of_inode(parent);
        let ino = self.alloc_inode(goal, is_dir)?;
        let now = self.now();
        let mut inode = Inode::new(self.sb.inode_size, node_mode, now);
        inode.links_count = 1;
        if is_dir {
            inode.links_count = 2;
            let (block, _) = match self.map_alloc(ino, &mut inode, 0) {
                Ok(mapped) => mapped,
                Err(e) => {
                    self.free_inode(ino, true)?;
                    return Err(e);
                }
            };
            let data = self.cache.overwrite(u64::from(block))?;
            data.fill(0);
            let dir_type =
                if self.sb.feature_incompat & feature::INCOMPAT_FILETYPE != 0 { dirent_type::DIRECTORY } else { 0 };
            put_dirent(data, 0, ino, 12, b".", dir_type);
            put_dirent(data, 12, parent, self.block_size - 12, b"..", dir_type);
            inode.size = self.block_size as u64;
        }
        self.write_inode(ino, &mut inode)?;
        if let Err(e) = self.add_entry(parent, name, ino, node_mode) {
            // Undo: the inode (and a directory's block) back to free.
            self.free_from(&mut inode, 0)?;
            inode.links_count = 0;
            inode.dtime = now;
            self.write_inode(ino, &mut inode)?;
            self.free_inode(ino, is_dir)?;
            return Err(e);
        }
        if is_dir {
            let mut dir = self.inode(parent)?;
            dir.links_count = dir.links_count.saturating_add(1);
            self.write_inode(parent, &mut dir)?;
        }
        Ok(ino)
    }

    /// Creates a directory at `path`.
    pub fn create_dir(&mut self, path: &str) -> Result<u32> {
        self.check_writable()?;
        let (parent, name) = self.parent_of(path)?;
        if self.inode(parent)?.links_count >= LINK_MAX {
            return Err(Error::from_static(ErrorKind::TooManyLinks, "too many subdirectories"));
        }
        self.retry_after_sync(|fs| fs.make_node(parent, name, mode::DIRECTORY | DEFAULT_DIR_MODE))
    }

    /// Creates a symbolic link at `path` pointing at `target`.
    pub fn symlink(&mut self, target: &str, path: &str) -> Result<u32> {
        self.check_writable()?;
        if target.is_empty() || target.len() >= self.block_size {
            return Err(Error::from_static(
                ErrorKind::InvalidInput,
                "symbolic link target empty or longer than a block",
            ));
        }
        let (parent, name) = self.parent_of(path)?;
        self.retry_after_sync(|fs| fs.make_symlink(parent, name, target.as_bytes()))
    }

    fn make_symlink(&mut self, parent: u32, name: &[u8], target: &[u8]) -> Result<u32> {
        let ino = self.make_node(parent, name, mode::SYMLINK | 0o777)?;
        let mut inode = self.inode(ino)?;
        if target.len() < layout::FAST_SYMLINK_MAX {
            inode.raw[40..40 + target.len()].copy_from_slice(target);
            for (i, b) in inode.block.iter_mut().enumerate() {
                *b = u32_at(&inode.raw, 40 + 4 * i);
            }
        } else {
            let block = match self.map_alloc(ino, &mut inode, 0) {
                Ok((block, _)) => block,
                Err(e) => {
                    // Undo: no name left pointing at a link without a target.
                    self.remove_entry(parent, name)?;
                    self.unlink_inode(ino)?;
                    return Err(e);
                }
            };
            let data = self.cache.overwrite(u64::from(block))?;
            data.fill(0);
            data[..target.len()].copy_from_slice(target);
        }
        inode.size = target.len() as u64;
        self.write_inode(ino, &mut inode)?;
        Ok(ino)
    }

    /// Drops one link to `ino`; frees it with the last one.
    fn unlink_inode(&mut self, ino: u32) -> Result<()> {
        let mut inode = self.inode(ino)?;
        inode.links_count = inode.links_count.saturating_sub(1);
        let now = self.now();
        inode.ctime = now;
        if inode.links_count == 0 {
            if !inode.is_fast_symlink(self.block_size) {
                self.free_from(&mut inode, 0)?;
            }
            inode.size = 0;
            inode.dtime = now;
            self.write_inode(ino, &mut inode)?;
            self.free_inode(ino, false)?;
        } else {
            self.write_inode(ino, &mut inode)?;
        }
        Ok(())
    }

    /// Removes the file (or symbolic link) at `path`.
    pub fn remove_file(&mut self, path: &str) -> Result<()> {
        self.unlink(path, |_| false).map(|_| ())
    }

    /// Removes the name `path` (not a directory). When that was the inode's
    /// last link and `in_use(ino)` says it is still open, the inode stays
    /// allocated and is returned: free it with [`Ext2::release_orphan`]
    /// when the last user is done.
    pub fn unlink(&mut self, path: &str, in_use: impl Fn(u32) -> bool) -> Result<Option<u32>> {
        self.check_writable()?;
        let (parent, name) = self.parent_of(path)?;
        let ino = self.lookup(parent, name)?.ok_or(NOT_FOUND)?;
        let inode = self.inode(ino)?;
        if inode.is_dir() {
            return Err(IS_DIR);
        }
        self.remove_entry(parent, name)?;
        if inode.links_count <= 1 && in_use(ino) {
            let mut inode = inode;
            inode.links_count = 0;
            inode.ctime = self.now();
            self.write_inode(ino, &mut inode)?;
            return Ok(Some(ino));
        }
        self.unlink_inode(ino)?;
        Ok(None)
    }

    /// Frees an inode [`Ext2::unlink`] left allocated for an open file.
    pub fn release_orphan(&mut self, ino: u32) -> Result<()> {
        self.check_writable()?;
        let mut inode = self.inode(ino)?;
        if inode.links_count != 0 || inode.dtime != 0 {
            return Err(Error::from_static(ErrorKind::InvalidInput, "inode is not an orphan"));
        }
        inode.links_count = 1;
        self.write_inode(ino, &mut inode)?;
        self.unlink_inode(ino)
    }

    /// Removes the empty directory at `path`.
    pub fn remove_dir(&mut self, path: &str) -> Result<()> {
        self.check_writable()?;
        let (parent, name) = self.parent_of(path)?;
        let ino = self.lookup(parent, name)?.ok_or(NOT_FOUND)?;
        if !self.inode(ino)?.is_dir() {
            return Err(NOT_DIR);
        }
        if !self.is_empty_dir(ino)? {
            return Err(Error::from_static(ErrorKind::DirectoryNotEmpty, "directory not empty"));
        }
        self.remove_entry(parent, name)?;
        self.free_dir(ino)?;
        let mut dir = self.inode(parent)?;
        dir.links_count = dir.links_count.saturating_sub(1);
        self.write_inode(parent, &mut dir)
    }

    fn free_dir(&mut self, ino: u32) -> Result<()> {
        let mut inode = self.inode(ino)?;
        self.free_from(&mut inode, 0)?;
        inode.links_count = 0;
        inode.size = 0;
        inode.dtime = self.now();
        self.write_inode(ino, &mut inode)?;
        self.free_inode(ino, true)
    }

    /// Whether directory `ancestor` is `dir` or above it (walking `..`).
    fn is_ancestor(&mut self, ancestor: u32, mut dir: u32) -> Result<bool> {
        for _ in 0..=self.sb.inodes_count.min(65536) {
            if dir == ancestor {
                return Ok(true);
            }
            if dir == ROOT_INODE {
                return Ok(false);
            }
            dir = self.lookup(dir, b"..")?.ok_or(corrupt("directory without a '..' entry"))?;
        }
        Err(corrupt("directory loop: '..' never reaches the root"))
    }

    /// Renames `from` to `to`, replacing `to` if it is a file (or, for a
    /// directory, an empty directory), as POSIX `rename`.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        self.check_writable()?;
        let (old_parent, old_name) = self.parent_of(from)?;
        let (new_parent, new_name) = self.parent_of(to)?;
        let ino = self.lookup(old_parent, old_name)?.ok_or(NOT_FOUND)?;
        let inode = self.inode(ino)?;
        let is_dir = inode.is_dir();
        if is_dir && self.is_ancestor(ino, new_parent)? {
            return Err(Error::from_static(ErrorKind::InvalidInput, "cannot move a directory into itself"));
        }
        match self.lookup(new_parent, new_name)? {
            Some(existing) if existing == ino => return Ok(()),
            Some(existing) => {
                let target_is_dir = self.inode(existing)?.is_dir();
                match (is_dir, target_is_dir) {
                    (false, true) => return Err(IS_DIR),
                    (true, false) => return Err(NOT_DIR),
                    (true, true) if !self.is_empty_dir(existing)? => {
                        return Err(Error::from_static(ErrorKind::DirectoryNotEmpty, "directory not empty"))
                    }
                    _ => {}
                }
                self.retarget_entry(new_parent, new_name, ino, inode.mode)?;
                if target_is_dir {
                    self.free_dir(existing)?;
                    let mut dir = self.inode(new_parent)?;
                    dir.links_count = dir.links_count.saturating_sub(1);
                    self.write_inode(new_parent, &mut dir)?;
                } else {
                    self.unlink_inode(existing)?;
                }
            }
            None => self.retry_after_sync(|fs| fs.add_entry(new_parent, new_name, ino, inode.mode))?,
        }
        self.remove_entry(old_parent, old_name)?;
        if is_dir && old_parent != new_parent {
            self.retarget_entry(ino, b"..", new_parent, mode::DIRECTORY)?;
            let mut old = self.inode(old_parent)?;
            old.links_count = old.links_count.saturating_sub(1);
            self.write_inode(old_parent, &mut old)?;
            let mut new = self.inode(new_parent)?;
            new.links_count = new.links_count.saturating_add(1);
            self.write_inode(new_parent, &mut new)?;
        }
        let mut moved = self.inode(ino)?;
        moved.ctime = self.now();
        self.write_inode(ino, &mut moved)
    }

    // ---- durability ----

    /// Writes the superblock, the group descriptors and every dirty block,
    /// then flushes the device: afterwards the image on the device is
    /// complete and consistent, and what was freed before it may be handed
    /// out again.
    pub fn sync(&mut self) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        if self.meta_dirty {
            let per_block = self.block_size / layout::GROUP_DESC_SIZE;
            let gdt_start = u64::from(self.sb.first_data_block) + 1;
            for (g, desc) in self.groups.iter().enumerate() {
                let block = self.cache.modify(gdt_start + (g / per_block) as u64)?;
                let off = (g % per_block) * layout::GROUP_DESC_SIZE;
                desc.serialize(&mut block[off..off + layout::GROUP_DESC_SIZE]);
            }
            let now = self.now();
            let raw = *self.sb.serialize(now);
            let (block, off) =
                (SUPERBLOCK_OFFSET / self.block_size as u64, (SUPERBLOCK_OFFSET as usize) % self.block_size);
            self.cache.modify(block)?[off..off + SUPERBLOCK_SIZE].copy_from_slice(&raw);
            self.meta_dirty = false;
        }
        self.cache.flush()?;
        // The frees are on the disk now: their blocks and inodes may go to
        // new owners (not before: see `Pending`).
        self.pending_blocks.release();
        self.pending_inodes.release();
        Ok(())
    }

    /// Syncs and returns the device.
    pub fn unmount(mut self) -> Result<D> {
        self.sync()?;
        self.cache.into_device()
    }
}

/// Checks a name for a new directory entry.
fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name == b"." || name == b".." {
        return Err(Error::from_static(ErrorKind::InvalidInput, "empty name, '.' or '..' where a file name is needed"));
    }
    if name.len() > NAME_MAX {
        return Err(Error::from_static(ErrorKind::InvalidFilename, "file name longer than 255 bytes"));
    }
    if name.contains(&0) {
        return Err(Error::from_static(ErrorKind::InvalidFilename, "file name contains a NUL byte"));
    }
    Ok(())
}

/// The first bit below `limit` clear in `bits` and in `pending` (if any).
fn first_free_bit(bits: &[u8], pending: Option<&[u8]>, limit: usize) -> Option<usize> {
    let limit = limit.min(bits.len() * 8);
    let mut byte = 0;
    while byte * 8 < limit {
        let used = bits[byte] | pending.map_or(0, |p| p[byte]);
        if used != 0xff {
            let bit = byte * 8 + used.trailing_ones() as usize;
            return (bit < limit).then_some(bit);
        }
        byte += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_free_bit_respects_the_limit_and_pending_bits() {
        assert_eq!(first_free_bit(&[0xff, 0x07], None, 16), Some(11));
        assert_eq!(first_free_bit(&[0xff, 0x07], None, 11), None);
        assert_eq!(first_free_bit(&[0xff, 0xff], None, 16), None);
        assert_eq!(first_free_bit(&[0x00], None, 8), Some(0));
        assert_eq!(first_free_bit(&[0x00, 0x00], Some(&[0xff, 0x01]), 16), Some(9));
        assert_eq!(first_free_bit(&[0x0f, 0x00], Some(&[0xf0, 0xff]), 16), None);
    }
}
